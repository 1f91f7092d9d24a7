"""The YouTube watch-time extension: ``playpulse extension pack``, and the packed
extension loaded unpacked in Debian's Chromium (``--headless=new``) on a local page with
the structure of a YouTube watch page (``www.youtube.com`` mapped to 127.0.0.1), sending
to a real ``playpulse up`` that requires a write key. A play with a tab switch must give
foreground and background playing time, and YouTube's move to the next video (no page
load) a second play; the extension's worker must send nothing but to the collector."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.extension import pack_extension
from playpulse.extension.cli import extension_app
from playpulse.query.engine import connect
from playpulse.sdk_js import SDK_PATH

TOLERANCE_S = 0.5
WRITE_KEY = "extension-test-write-key"
EXTENSION_NAME = "playpulse YouTube watch time"

#: The parts of a YouTube watch page the content script reads (2024-2025 Polymer markup).
WATCH_PAGE = """<!doctype html><html><head><title>{title} - YouTube</title></head><body>
<ytd-app><div id="content"><ytd-watch-flexy>
  <div id="player"><div id="movie_player" class="html5-video-player">
    <div class="html5-video-container">
      <video class="video-stream html5-main-video" src="/media/{video_id}.wav"
             preload="auto"></video>
    </div>
  </div></div>
  <ytd-watch-metadata>
    <div id="title"><h1><yt-formatted-string>{title}</yt-formatted-string></h1></div>
    <div id="owner"><ytd-video-owner-renderer>
      <ytd-channel-name id="channel-name"><div id="text-container">
        <yt-formatted-string id="text"><a href="/@tester">{channel}</a></yt-formatted-string>
      </div></ytd-channel-name>
    </ytd-video-owner-renderer></div>
  </ytd-watch-metadata>
</ytd-watch-flexy></div></ytd-app>
</body></html>"""


def test_pack_builds_a_zip_and_a_directory_with_the_sdk(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ext.zip"
    result = runner.invoke(
        extension_app, ["pack", "--out", str(out), "--unpacked", str(tmp_path / "dir")]
    )
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert archive.read("playpulse.js") == SDK_PATH.read_bytes()
        manifest = archive.read("manifest.json")
    assert sorted(names) == names
    assert set(names) == {
        "background.js",
        "content.js",
        "manifest.json",
        "options.html",
        "options.js",
        "playpulse.js",
    }
    assert (tmp_path / "dir" / "manifest.json").read_bytes() == manifest
    assert (tmp_path / "dir" / "playpulse.js").read_bytes() == SDK_PATH.read_bytes()
    # Reproducible: the same sources give the same bytes.
    again = tmp_path / "again.zip"
    assert runner.invoke(extension_app, ["pack", "--out", str(again)]).exit_code == 0
    assert again.read_bytes() == out.read_bytes()
    # An earlier build is replaced; a directory that is not one is refused.
    assert (
        runner.invoke(extension_app, ["pack", "--unpacked", str(tmp_path / "dir")]).exit_code == 0
    )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an earlier build"):
        pack_extension(unpacked=tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_pack_refuses_a_source_without_a_manifest_v3(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no manifest\.json"):
        pack_extension(tmp_path / "x.zip", source=tmp_path)
    (tmp_path / "manifest.json").write_text('{"manifest_version": 2}')
    with pytest.raises(ConfigError, match="not a Manifest V3"):
        pack_extension(tmp_path / "x.zip", source=tmp_path)
    (tmp_path / "manifest.json").write_text(
        '{"manifest_version": 3, "background": {"service_worker": "gone.js"}}'
    )
    with pytest.raises(ConfigError, match=r"gone\.js"):
        pack_extension(tmp_path / "x.zip", source=tmp_path)
    assert not (tmp_path / "x.zip").exists()


@contextlib.contextmanager
def youtube_like_site(wav: bytes) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 answering ``/watch?v=ID`` with :data:`WATCH_PAGE` and
    ``/media/ID.wav`` with ``wav``; yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/watch?v="):
                video_id = self.path.split("=", 1)[1]
                body = WATCH_PAGE.format(
                    video_id=video_id, title=f"Video {video_id}", channel="Test Channel"
                ).encode()
                kind = "text/html; charset=utf-8"
            elif self.path.startswith("/media/"):
                body, kind = wav, "audio/wav"
            else:
                body, kind = b"<!doctype html><title>home</title>", "text/html"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def isolated_evaluate(page: Any, expression: str) -> Any:
    """Evaluate in the extension's content-script world of the page's newest document."""
    contexts = [
        c["context"]
        for c in page.events("Runtime.executionContextCreated")
        if c["context"].get("name") == EXTENSION_NAME
    ]
    assert contexts, "the content script did not run"
    result = page.call(
        "Runtime.evaluate",
        {"expression": expression, "returnByValue": True, "contextId": contexts[-1]["id"]},
    )
    assert "exceptionDetails" not in result, result
    return result["result"].get("value")


def wait_for_play(data_dir: Path, content_id: str) -> dict[str, Any]:
    """The processed play of ``content_id`` once it has ended; fails after 60 s."""
    settings = Settings(data_dir=data_dir)
    deadline = time.monotonic() + 60
    while True:
        con = connect(settings)
        try:
            cursor = con.execute("SELECT * FROM plays WHERE content_id = ?", [content_id])
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            con.close()
        if rows and rows[0]["end_reason"]:
            assert len(rows) == 1, rows
            return rows[0]
        assert time.monotonic() < deadline, f"no ended play of {content_id}: {rows}"
        time.sleep(0.2)


def test_a_youtube_play_with_a_tab_switch_in_chromium(
    cdp: ModuleType,
    livedata: ModuleType,
    sdk_conftest: ModuleType,
    tmp_path: Path,
) -> None:
    build = tmp_path / "extension"
    pack_extension(unpacked=build)
    env = {"PLAYPULSE_WRITE_KEYS": WRITE_KEY}
    with (
        livedata.running_up(tmp_path / "data", env=env, log_path=tmp_path / "up.log") as base,
        youtube_like_site(sdk_conftest.wav_bytes(30.0)) as port,
        cdp.chromium(
            [
                f"--load-extension={build}",
                f"--disable-extensions-except={build}",
                f"--host-resolver-rules=MAP www.youtube.com 127.0.0.1:{port}",
            ],
            headless="--headless=new",
        ) as browser,
    ):
        deadline = time.monotonic() + 20
        while not (workers := [t for t in browser.targets() if t["type"] == "service_worker"]):
            assert time.monotonic() < deadline, "the extension's service worker never started"
            browser.pump(0.1)
        extension_id = workers[0]["url"].split("/")[2]
        # What the worker (the only part that sends) requests, recorded from now on.
        worker = browser.attach(workers[0]["targetId"], ("Runtime", "Network"))
        tab = next(t for t in browser.targets() if t["type"] == "page")
        page = browser.page(tab["targetId"])

        # The options page: collector URL and write key.
        page.navigate(f"chrome-extension://{extension_id}/options.html")
        page.evaluate(
            f"""document.getElementById("collectorUrl").value = {base!r};
            document.getElementById("writeKey").value = {WRITE_KEY!r};
            document.getElementById("userId").value = "yt-viewer";
            document.getElementById("save").click(); true"""
        )
        page.wait_until("document.getElementById('status').textContent.startsWith('Saved')")

        page.navigate("http://www.youtube.com/watch?v=abc123")
        deadline = time.monotonic() + 20
        while not isolated_evaluate(page, "!!(playpulseYouTube.tracker)"):
            assert time.monotonic() < deadline, "the content script never attached"
            browser.pump(0.1)
        page.wait_until("document.querySelector('video').readyState >= 3")

        page.evaluate("document.querySelector('video').play()", await_promise=True)
        t_play = time.monotonic()
        browser.pump(1.5)
        other = browser.new_tab()  # YouTube's tab goes to the background
        t_hide = time.monotonic()
        browser.pump(1.5)
        browser.activate(page.target_id)
        t_show = time.monotonic()
        browser.call("Target.closeTarget", {"targetId": other})
        browser.pump(1.0)
        # YouTube goes to the next video without loading a page: a new URL, new title,
        # the same <video>, and its yt-navigate-finish event.
        page.evaluate(
            """history.pushState({}, "", "/watch?v=def456");
            document.querySelector("ytd-watch-metadata h1 yt-formatted-string")
                .textContent = "Video def456";
            document.dispatchEvent(new Event("yt-navigate-finish")); true"""
        )
        t_next = time.monotonic()
        browser.pump(1.0)
        page.evaluate("document.querySelector('video').pause()")
        t_pause = time.monotonic()
        browser.pump(0.3)
        page.navigate("http://www.youtube.com/")  # leaving ends the second play

        play = wait_for_play(tmp_path / "data", "youtube:abc123")
        second = wait_for_play(tmp_path / "data", "youtube:def456")
        sent_to = {r["request"]["url"] for r in worker.events("Network.requestWillBeSent")}
    assert sent_to == {f"{base}/v1/events"}

    assert play["title"] == "Video abc123"
    assert play["creator"] == "Test Channel"
    assert play["content_type"] == "video"
    assert play["user_id"] == "yt-viewer"
    assert play["end_reason"] == "next"
    background = t_show - t_hide
    assert play["playing_time_s"] == pytest.approx(t_next - t_play, abs=TOLERANCE_S)
    assert play["playing_time_background_s"] == pytest.approx(background, abs=TOLERANCE_S)
    assert play["playing_time_foreground_s"] == pytest.approx(
        t_next - t_play - background, abs=TOLERANCE_S
    )
    assert play["playing_time_background_s"] > 1.0
    assert play["playing_time_foreground_s"] > 1.5

    assert second["title"] == "Video def456"
    assert second["creator"] == "Test Channel"
    assert second["end_reason"] == "stopped"
    assert second["playing_time_s"] == pytest.approx(t_pause - t_next, abs=TOLERANCE_S)
    assert second["playing_time_background_s"] == 0
