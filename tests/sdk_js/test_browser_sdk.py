"""playpulse.js in Debian's Chromium against a real ``playpulse up``.

A page with an ``<audio>`` element plays a WAV made by the test; the test plays, pauses,
seeks, changes the rate and switches tabs (the page goes to the background and back),
then leaves the page. The play that ``playpulse up`` processed from the SDK's events must
match what the test did, within 0.5 s; the events pending when the page was left must
have come by ``navigator.sendBeacon`` (Chromium's "Ping" requests).

The page is written into ``{up}/healthz`` (``document.write``), so it runs at the
collector's origin (the single-project collector has no CORS; the projects gateway's
browser keys are tested in test_gateway_browser_key.py), and loads the SDK from
``{up}/sdk/playpulse.js``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from playpulse.config import Settings
from playpulse.query.engine import connect
from playpulse.sdk_js import SDK_PATH

TOLERANCE_S = 0.5

PAGE = """<!doctype html><html><head><title>player</title></head><body>
<audio id="player" preload="auto"></audio>
<script>
window.visibility = [];
document.addEventListener("visibilitychange", () => visibility.push(document.visibilityState));
// Every beacon, kept in sessionStorage: the tab reads it after the page is gone.
const sendBeacon = navigator.sendBeacon.bind(navigator);
navigator.sendBeacon = (url, data) => {
  const sent = sendBeacon(url, data);
  const beacons = JSON.parse(sessionStorage.getItem("beacons") || "[]");
  beacons.push({url: String(url), data: String(data), sent});
  sessionStorage.setItem("beacons", JSON.stringify(beacons));
  return sent;
};
</script></body></html>"""


@pytest.fixture
def browser(cdp: ModuleType) -> Iterator[Any]:
    with cdp.chromium(["--disable-background-timer-throttling"]) as browser:
        yield browser


def open_player(browser: Any, base: str, wav_data_url: str, init: dict[str, Any]) -> Any:
    """The first tab at the collector's origin with the player page, the SDK and a
    tracker (``window.tracker``) on the audio element; Network events recorded."""
    tab = next(t for t in browser.targets() if t["type"] == "page")
    page = browser.page(tab["targetId"])
    page.call("Network.enable")
    page.navigate(f"{base}/healthz")
    page.evaluate(f"document.open(); document.write({json.dumps(PAGE)}); document.close();")
    # The SDK as `playpulse up` serves it.
    page.evaluate(
        """new Promise((resolve, reject) => {
            const script = document.createElement("script");
            script.src = "/sdk/playpulse.js";
            script.onload = () => resolve(true);
            script.onerror = () => reject(new Error("/sdk/playpulse.js did not load"));
            document.head.appendChild(script);
        })""",
        await_promise=True,
    )
    page.evaluate(
        f"""
        playpulse.init({json.dumps(init)});
        const audio = document.getElementById("player");
        audio.src = {json.dumps(wav_data_url)};
        window.tracker = playpulse.trackMedia(audio, {{
            contentId: "wav-tone", contentType: "track", title: "A Tone",
            creator: "The Test", chapter: 1}});
        true"""
    )
    page.wait_until("document.getElementById('player').readyState >= 3")
    return page


def fetches(page: Any, base: str) -> int:
    """How many fetch requests to ``/v1/events`` the page made so far."""
    return sum(
        1
        for r in page.events("Network.requestWillBeSent")
        if r["type"] == "Fetch" and r["request"]["url"].startswith(f"{base}/v1/events")
    )


def wait_for_play(data_dir: Path, playback_id: str) -> dict[str, Any]:
    """The processed play (plays view) once it has ended and the lake holds its
    ``play_end``; fails after 60 s."""
    settings = Settings(data_dir=data_dir)
    deadline = time.monotonic() + 60
    while True:
        con = connect(settings)
        try:
            cursor = con.execute("SELECT * FROM plays WHERE playback_id = ?", [playback_id])
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            stored = con.execute(
                "SELECT count(*) FROM events WHERE playback_id = ? AND event_type = 'play_end'",
                [playback_id],
            ).fetchone()
        finally:
            con.close()
        if rows and rows[0]["end_reason"] and stored and stored[0]:
            return rows[0]
        assert time.monotonic() < deadline, f"play {playback_id} not processed: {rows}"
        time.sleep(0.2)


def play_events(data_dir: Path, playback_id: str) -> list[dict[str, Any]]:
    """The play's events in the lake, in time order."""
    con = connect(Settings(data_dir=data_dir))
    try:
        cursor = con.execute(
            "SELECT event_id, event_type, position_s, from_position_s, playback_rate, foreground, "
            "reason, content_id, title, creator, chapter, duration_s, content_type, "
            "device_type, anonymous_id FROM events WHERE playback_id = ? "
            "ORDER BY occurred_at",
            [playback_id],
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def test_a_play_in_chromium_matches_what_the_listener_did(
    browser: Any, up: tuple[str, Path], wav_data_url: str
) -> None:
    base, data_dir = up
    assert httpx.get(f"{base}/sdk/playpulse.js").content == SDK_PATH.read_bytes()
    # Heartbeats every second (10 s by default) so this short play has some; batches
    # every 300 ms by fetch.
    page = open_player(
        browser,
        base,
        wav_data_url,
        {"host": base, "heartbeatIntervalMs": 1000, "flushIntervalMs": 300},
    )
    js = "document.getElementById('player')"

    page.evaluate(f"{js}.play()", await_promise=True)
    t_play = time.monotonic()
    browser.pump(2.0)
    page.evaluate(f"{js}.pause()")
    t_pause = time.monotonic()
    position_at_pause = page.evaluate(f"{js}.currentTime")
    browser.pump(1.0)
    page.evaluate(f"{js}.currentTime = 10")  # a seek while paused
    page.wait_until(f"!{js}.seeking")
    page.evaluate(f"{js}.play()", await_promise=True)
    t_resume = time.monotonic()
    browser.pump(1.5)
    page.evaluate(f"{js}.playbackRate = 2")
    t_rate = time.monotonic()
    browser.pump(1.0)
    other = browser.new_tab()  # the player's tab goes to the background
    t_hide = time.monotonic()
    browser.pump(1.5)
    browser.activate(page.target_id)  # and comes back
    t_show = time.monotonic()
    browser.call("Target.closeTarget", {"targetId": other})
    assert page.evaluate("visibility") == ["hidden", "visible"]
    browser.pump(0.5)
    position_before_seek = page.evaluate(f"{js}.currentTime")
    page.evaluate(f"{js}.currentTime = 40")  # a seek while playing
    t_seek = time.monotonic()
    page.wait_until(f"!{js}.seeking")
    browser.pump(0.7)
    playback_id = page.evaluate("tracker.playbackId()")
    assert playback_id
    # Nothing waits in the queue (sent by fetch) before the listener generates more.
    page.wait_until("playpulse.pending() === 0")
    page.evaluate(f"{js}.pause(); {js}.play()")  # a pause and resume, queued, then...
    assert page.evaluate("playpulse.pending()") >= 2
    fetches_before = fetches(page, base)
    page.navigate(f"{base}/healthz")  # ... the page is left: play_end + beacon
    t_leave = time.monotonic()

    # Batches went by fetch; what was pending at pagehide by sendBeacon, with no fetch.
    browser.pump(0.5)
    assert fetches_before > 0
    assert fetches(page, base) == fetches_before
    beacons = page.evaluate("JSON.parse(sessionStorage.getItem('beacons'))")
    assert all(b["sent"] and b["url"] == f"{base}/v1/events" for b in beacons), beacons
    # The tab switch sent the visibility_change (background) by beacon, the page's end
    # the two queued events and the play_end (a heartbeat or a stall's events may have
    # been pending too).
    sent = [
        [
            e["event_type"]
            for e in json.loads(b["data"])
            if e["event_type"] not in ("heartbeat", "buffer_start", "buffer_end")
        ]
        for b in beacons
    ]
    assert sent == [["visibility_change"], ["pause", "resume", "play_end"]]
    sent_at_pagehide = {e["event_id"] for e in json.loads(beacons[-1]["data"])}

    play = wait_for_play(data_dir, playback_id)
    events = play_events(data_dir, playback_id)
    assert sent_at_pagehide <= {e["event_id"] for e in events}
    types = [e["event_type"] for e in events]
    # Everything the page sent arrived, the beacon's events included.
    assert types[0] == "play_start"
    assert types[-1] == "play_end"
    assert types.count("pause") == 2
    assert types.count("resume") == 2
    assert types.count("seek") == 2
    assert types.count("speed_change") == 1
    assert types.count("visibility_change") == 2
    assert types.count("heartbeat") >= 3
    assert events[-1]["reason"] == "stopped"
    first = events[0]
    assert first["content_id"] == "wav-tone"
    assert (first["title"], first["creator"], first["chapter"]) == ("A Tone", "The Test", 1)
    assert first["content_type"] == "track"
    assert first["duration_s"] == pytest.approx(60.0, abs=0.01)
    assert first["device_type"] == "web"
    assert first["anonymous_id"]

    seeks = [e for e in events if e["event_type"] == "seek"]
    assert seeks[0]["from_position_s"] == pytest.approx(position_at_pause, abs=TOLERANCE_S)
    assert seeks[0]["position_s"] == pytest.approx(10.0, abs=0.01)
    assert seeks[1]["from_position_s"] == pytest.approx(position_before_seek, abs=TOLERANCE_S)
    assert seeks[1]["position_s"] == pytest.approx(40.0, abs=0.01)
    assert {e["playback_rate"] for e in events if e["event_type"] == "speed_change"} == {2.0}
    hidden = [e for e in events if e["event_type"] == "visibility_change"]
    assert [e["foreground"] for e in hidden] == [False, True]

    playing = (t_pause - t_play) + (t_leave - t_resume)
    content = (t_pause - t_play) + (t_rate - t_resume) + 2 * (t_leave - t_rate)
    background = t_show - t_hide
    paused = t_resume - t_pause
    assert play["end_reason"] == "stopped"
    assert play["playing_time_s"] == pytest.approx(playing, abs=TOLERANCE_S)
    # Stalls Chromium reported (after a seek, on a busy machine) are watch time but not
    # playing time.
    stalled = play["startup_time_s"] + play["rebuffer_time_s"]
    assert play["watch_time_s"] == pytest.approx(play["playing_time_s"] + stalled, abs=1e-6)
    assert stalled < TOLERANCE_S
    assert play["content_time_s"] == pytest.approx(content, abs=TOLERANCE_S)
    assert play["playing_time_background_s"] == pytest.approx(background, abs=TOLERANCE_S)
    assert play["playing_time_foreground_s"] == pytest.approx(playing - background, abs=TOLERANCE_S)
    span = (play["ended_at"] - play["started_at"]).total_seconds()
    assert span - play["watch_time_s"] == pytest.approx(paused, abs=TOLERANCE_S)
    assert t_seek < t_leave
