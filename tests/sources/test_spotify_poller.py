"""The Spotify poller (#16 item 3) against a local fake of the Spotify Web API on
127.0.0.1 answering with the documented response shapes (currently-playing playing,
paused, track change, 204, 401 then a token refresh at the accounts service, 429 with
Retry-After, a dropped connection; recently-played), its events sent by the Python SDK
to a real collector over HTTP, processed, and the plays, skips and playing times asserted
from the data dir.

The poller's clock is the test's: each poll is made at the time the previous one said to
wait for (no sleeping), so the times are exact.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from playpulse.client import Client
from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.query.catalog import QueryParams, run_query
from playpulse.service import ensure_processed
from playpulse.sources.spotify_poll import LiveWindows, SpotifyPoller, client_sender, spotify_client
from playpulse.sources.spotify_poll.auth import SCOPES, auth_manager, save_app, spotify_dir
from playpulse.testing import play_totals, serve_app

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
KEY = "poller-write-key"


def track(name: str, seconds: float) -> dict[str, Any]:
    """A track object as the Web API documents it (the fields the poller reads, and some)."""
    return {
        "type": "track",
        "id": name.lower(),
        "uri": f"spotify:track:{name.lower()}",
        "name": f"Song {name}",
        "duration_ms": int(seconds * 1000),
        "artists": [{"name": "The Band", "type": "artist"}, {"name": "Guest"}],
        "album": {"name": "The Album", "album_type": "album"},
        "explicit": False,
    }


A, B, C = track("A", 200), track("B", 180), track("C", 20)


def playing(item: dict[str, Any], progress_s: float, is_playing: bool = True) -> dict[str, Any]:
    """A 200 answer of GET /v1/me/player/currently-playing."""
    return {
        "status": 200,
        "body": {
            "timestamp": 1700000000000,
            "context": {"type": "album", "uri": "spotify:album:x"},
            "progress_ms": int(progress_s * 1000),
            "item": item,
            "currently_playing_type": "track",
            "actions": {"disallows": {"resuming": True}},
            "is_playing": is_playing,
        },
    }


NOTHING = {"status": 204}
EXPIRED = {"status": 401, "body": {"error": {"status": 401, "message": "The access token expired"}}}
SLOW_DOWN = {"status": 429, "headers": {"Retry-After": "7"}, "body": {"error": {"status": 429}}}
DROP = {"status": "drop"}


class FakeSpotify:
    """The Web API (``/v1/...``) and the accounts service (``/api/token``) on one port.

    ``script`` answers the currently-playing calls in order (then 204s). The access token
    is ``token-1`` until a refresh gives ``token-2``; a request with another token is
    answered 401.
    """

    def __init__(self, script: list[dict[str, Any]]) -> None:
        self.script = list(script)
        self.token = "token-1"
        self.refreshes: list[dict[str, list[str]]] = []
        self.seen_tokens: list[str] = []
        self.recent: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(
                self, status: int, body: Any = None, headers: dict[str, str] | None = None
            ) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                assert self.path == "/api/token"
                fake.refreshes.append(form)
                if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [
                    "refresh-1"
                ]:
                    self.answer(400, {"error": "invalid_grant"})
                    return
                fake.token = "token-2"
                self.answer(
                    200,
                    {
                        "access_token": "token-2",
                        "token_type": "Bearer",
                        "scope": SCOPES,
                        "expires_in": 3600,
                    },
                )

            def do_GET(self) -> None:
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                fake.seen_tokens.append(token)
                path = self.path.split("?")[0].rstrip("/")
                if path == "/v1/me/player/currently-playing":
                    step = fake.script.pop(0) if fake.script else NOTHING
                    if step["status"] == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if step["status"] != 401 and token != fake.token:
                        self.answer(401, EXPIRED["body"])
                        return
                    self.answer(step["status"], step.get("body"), step.get("headers"))
                elif token != fake.token:
                    self.answer(401, EXPIRED["body"])
                elif path == "/v1/me":
                    self.answer(200, {"id": "listener-9", "type": "user"})
                elif path == "/v1/me/player/recently-played":
                    self.answer(200, {"items": fake.recent, "limit": 50, "href": self.path})
                else:
                    self.answer(404, {"error": {"status": 404, "message": "Not found"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@contextlib.contextmanager
def collector(settings: Settings) -> Iterator[str]:
    with serve_app(create_app(settings), lifespan="auto") as url:
        yield url


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", write_keys=[KEY])
    save_app(settings, "test-client-id", "http://127.0.0.1:8888/callback")
    token = {
        "access_token": "token-1",
        "token_type": "Bearer",
        "scope": SCOPES,
        "expires_in": 3600,
        "expires_at": int(time.time()) + 3600,
        "refresh_token": "refresh-1",
    }
    (spotify_dir(settings) / "token.json").write_text(json.dumps(token))
    return settings


@contextlib.contextmanager
def poller_on(
    settings: Settings, fake: FakeSpotify, clock: Clock, url: str, **options: Any
) -> Iterator[SpotifyPoller]:
    manager = auth_manager(settings, accounts_url=fake.url, open_browser=False)
    api = spotify_client(manager, f"{fake.url}/v1/")
    windows = LiveWindows(spotify_dir(settings) / "live.json")
    with Client(url, KEY) as client:
        poller = SpotifyPoller(
            api,
            manager,
            client_sender(client),
            "listener-9",
            clock=clock,
            windows=windows,
            **options,
        )
        yield poller
        assert client.flush(30)
        assert client.stats.rejected == 0


def titles(settings: Settings) -> dict[str, dict[str, Any]]:
    window = QueryParams(start=T0 - timedelta(days=1), end=T0 + timedelta(days=1))
    return {r["title"]: r for r in run_query("top_content", window, settings).to_pylist()}


def test_polls_become_plays_with_pauses_seeks_skips_and_exact_playing_time(
    settings: Settings,
) -> None:
    script = [
        NOTHING,  # t=0
        playing(A, 0),  # t=5: A starts
        playing(A, 5),  # t=10
        playing(A, 8, is_playing=False),  # t=15: paused at 13 s (position 8)
        playing(A, 8, is_playing=False),  # t=20
        playing(A, 10),  # t=25: resumed at 23 s
        EXPIRED,  # t=30: 401, the token is refreshed and the call made again
        playing(A, 15),  # t=30
        SLOW_DOWN,  # t=35: 429, Retry-After 7
        playing(A, 27),  # t=42
        playing(A, 100),  # t=47: sought from 32 to 100
        playing(B, 3),  # t=52: B started at 49 s (A skipped to next)
        playing(C, 2),  # t=57: C started at 55 s
        DROP,  # t=62: the connection drops; back off one interval
        playing(C, 12),  # t=67
        playing(C, 17),  # t=72
        NOTHING,  # t=77: C ended at its end, 75 s
        NOTHING,  # t=82
    ]
    fake = FakeSpotify(script)
    clock = Clock()
    sent: list[dict[str, Any]] = []
    waits = []
    try:
        with (
            collector(settings) as url,
            poller_on(settings, fake, clock, url, heartbeat_s=10) as poller,
        ):
            forward = poller.send
            poller.send = lambda events: (sent.extend(events), forward(events))  # type: ignore[method-assign]
            while fake.script:
                wait = poller.poll_once()
                waits.append(wait)
                clock.now += timedelta(seconds=wait)
            poller.stop()
    finally:
        fake.close()

    assert waits == [5, 5, 5, 5, 5, 5, 5, 7, 5, 5, 5, 5, 5, 5, 5, 5, 5]
    assert poller.stats.refreshes == 1
    assert poller.stats.rate_limited == 1
    assert poller.stats.failures == 1
    assert fake.refreshes[0]["client_id"] == ["test-client-id"]
    assert fake.seen_tokens[-1] == "token-2"  # the refreshed token is used from then on
    stored = json.loads((settings.data_dir / "spotify" / "token.json").read_text())
    assert stored["access_token"] == "token-2"
    assert stored["refresh_token"] == "refresh-1"  # kept: the refresh gave no new one
    mode = os.stat(settings.data_dir / "spotify" / "token.json").st_mode
    assert stat.S_IMODE(mode) == 0o600

    def at(event: dict[str, Any]) -> float:
        return float((event["occurred_at"] - T0).total_seconds())

    assert [(e["event_type"], at(e), e["position_s"]) for e in sent] == [
        ("play_start", 5, 0),
        ("pause", 13, 8),
        ("resume", 23, 8),
        ("heartbeat", 42, 27),
        ("seek", 47, 100),
        ("play_end", 49, 102),
        ("play_start", 49, 0),
        ("play_end", 55, 6),
        ("play_start", 55, 0),
        ("heartbeat", 67, 12),
        ("play_end", 75, 20),
    ]
    ends = [e["reason"] for e in sent if e["event_type"] == "play_end"]
    assert ends == ["next", "next", "completed"]
    start = sent[0]
    assert start["content"] == {
        "content_id": "spotify:track:a",
        "title": "Song A",
        "content_type": "track",
        "creator": "The Band, Guest",
        "duration_s": 200,
    }
    assert start["properties"]["album"] == "The Album"

    ensure_processed(settings)
    rows = titles(settings)
    assert {t: (r["plays"], r["listening_s"]) for t, r in rows.items()} == {
        "Song A": (1, pytest.approx(8 + 26)),
        "Song B": (1, pytest.approx(6)),
        "Song C": (1, pytest.approx(20)),
    }
    totals = play_totals(settings)
    assert totals["plays"] == 3
    assert totals["playing_time_s"] == pytest.approx(60)
    assert totals["streams"] == 1  # A: 34 s
    assert totals["skipped"] == 2  # B and C ended before 30 s of playing (the 30-second rule)
    assert totals["completed"] == 1  # C reached its end


def test_recently_played_backfill_leaves_out_what_was_seen_live(settings: Settings) -> None:
    fake = FakeSpotify([playing(A, 0), playing(A, 5)])
    live_at = T0 + timedelta(seconds=5)
    fake.recent = [
        {
            "track": A,
            "played_at": (live_at + timedelta(seconds=10)).isoformat().replace("+00:00", "Z"),
        },
        {"track": B, "played_at": (T0 - timedelta(minutes=30)).isoformat().replace("+00:00", "Z")},
        {"track": C, "played_at": (T0 - timedelta(minutes=20)).isoformat().replace("+00:00", "Z")},
    ]
    clock = Clock()
    try:
        with collector(settings) as url:
            with poller_on(settings, fake, clock, url) as poller:
                for _ in range(2):
                    clock.now += timedelta(seconds=poller.poll_once())
                poller.stop()
                assert poller.backfill_recent() == 2  # B and C; A was polled live
            with poller_on(settings, fake, clock, url) as again:
                assert again.backfill_recent() == 2  # sent again: the same event ids
    finally:
        fake.close()
    ensure_processed(settings)
    rows = titles(settings)
    assert {t: r["plays"] for t, r in rows.items()} == {"Song A": 1, "Song B": 1, "Song C": 1}
    # A recently played track has no observed playing time: unknown, not 0.
    assert rows["Song B"]["listening_s"] is None


def test_a_refused_refresh_asks_to_sign_in_again(settings: Settings) -> None:
    fake = FakeSpotify([EXPIRED])
    token = json.loads((spotify_dir(settings) / "token.json").read_text())
    token["refresh_token"] = "revoked"
    (spotify_dir(settings) / "token.json").write_text(json.dumps(token))
    try:
        manager = auth_manager(settings, accounts_url=fake.url, open_browser=False)
        poller = SpotifyPoller(
            spotify_client(manager, f"{fake.url}/v1/"), manager, lambda events: None, "u"
        )
        with pytest.raises(ConfigError, match="playpulse spotify login"):
            poller.poll_once()
    finally:
        fake.close()


def test_the_poll_command_runs_until_interrupted(settings: Settings, tmp_path: Path) -> None:
    """``poll --recent`` as a process: signed in from the data dir, user from /v1/me, the
    write key from a file, events through the SDK to the collector; SIGINT ends the play
    and the process."""
    import signal
    import subprocess
    import sys

    fake = FakeSpotify([playing(A, 1.0 + n / 5) for n in range(5)])
    fake.recent = [{"track": B, "played_at": "2026-12-01T10:00:00Z"}]
    key_file = tmp_path / "write.key"
    key_file.write_text(KEY + "\n")
    code = (
        "import sys; from playpulse.sources.spotify_poll.cli import spotify_app; "
        "spotify_app(args=sys.argv[1:], prog_name='playpulse spotify')"
    )
    try:
        with collector(settings) as url:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    code,
                    "poll",
                    "--data-dir",
                    str(settings.data_dir),
                    "--host",
                    url,
                    "--write-key-file",
                    str(key_file),
                    "--interval",
                    "0.2",
                    "--recent",
                    "--api-url",
                    f"{fake.url}/v1/",
                    "--accounts-url",
                    fake.url,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                deadline = time.monotonic() + 60
                while fake.script or len(fake.seen_tokens) < 9:  # the script, then 204s
                    assert process.poll() is None, process.communicate()
                    assert time.monotonic() < deadline, "the poller did not poll"
                    time.sleep(0.05)
                process.send_signal(signal.SIGINT)
                out, err = process.communicate(timeout=30)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    finally:
        fake.close()
    assert process.returncode == 0, err
    assert "backfilled 1 recently played tracks" in out
    assert "polling Spotify for listener-9" in out
    assert "stopped:" in out
    ensure_processed(settings)
    rows = titles(settings) | {
        r["title"]: r
        for r in run_query(
            "top_content",
            QueryParams(
                start=datetime(2026, 11, 30, tzinfo=UTC), end=datetime(2026, 12, 2, tzinfo=UTC)
            ),
            settings,
        ).to_pylist()
    }
    assert rows["Song A"]["plays"] == 1
    assert rows["Song A"]["listening_s"] > 0
    assert rows["Song B"]["plays"] == 1


# -- the tracker on its own (pure) --------------------------------------------------------


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    return [
        (e["event_type"], (e["occurred_at"] - T0).total_seconds(), e["position_s"]) for e in events
    ]


def observe(tracker: Any, answer: dict[str, Any], seconds: float) -> list[tuple[str, float, float]]:
    from playpulse.sources.spotify_poll import snapshot_of

    body = answer.get("body") if answer.get("status") == 200 else None
    return kinds(tracker.observe(snapshot_of(body), T0 + timedelta(seconds=seconds)))


def test_tracker_repeat_of_the_same_track_is_a_new_play() -> None:
    from playpulse.sources.spotify_poll import PlaybackTracker

    tracker = PlaybackTracker("u", heartbeat_s=1000)
    short = track("R", 10)
    assert observe(tracker, playing(short, 6), 0) == [("play_start", 0, 6)]
    # 6 s later it would be at its end (10 s); it shows 2 s: it started over at 8 s.
    assert observe(tracker, playing(short, 2), 6) == [("play_end", 4, 10), ("play_start", 4, 0)]
    events = tracker.stop(T0 + timedelta(seconds=7))
    assert [(e["event_type"], e["reason"]) for e in events] == [("play_end", "stopped")]


def test_tracker_first_seen_paused_and_sought_while_paused() -> None:
    from playpulse.sources.spotify_poll import PlaybackTracker

    tracker = PlaybackTracker("u")
    assert observe(tracker, playing(A, 50, is_playing=False), 0) == [
        ("play_start", 0, 50),
        ("pause", 0, 50),
    ]
    assert observe(tracker, playing(A, 90, is_playing=False), 5) == [("seek", 5, 90)]
    assert observe(tracker, playing(A, 92), 10) == [("resume", 8, 90)]
    # An ad (no item) or 204 ends the play where the clock says it is.
    assert observe(tracker, {"status": 200, "body": {"item": None}}, 15) == [("play_end", 15, 97)]
    assert observe(tracker, NOTHING, 20) == []


def test_tracker_episodes_and_a_clock_that_goes_back() -> None:
    from playpulse.sources.spotify_poll import PlaybackTracker, snapshot_of

    episode = {
        "type": "episode",
        "uri": "spotify:episode:e1",
        "name": "Episode 1",
        "duration_ms": 3_600_000,
        "show": {"name": "The Show"},
    }
    answer = {"progress_ms": 0, "is_playing": True, "item": episode}
    snap = snapshot_of({**answer, "currently_playing_type": "episode"})
    assert snap is not None
    assert dict(snap.content) == {
        "content_id": "spotify:episode:e1",
        "title": "Episode 1",
        "content_type": "episode",
        "creator": "The Show",
        "duration_s": 3600.0,
    }
    tracker = PlaybackTracker("u", heartbeat_s=30)
    tracker.observe(snap, T0 + timedelta(seconds=100))
    # A clock stepped back 50 s: taken as no time passed, nothing sent backwards.
    later = snapshot_of({**answer, "progress_ms": 0, "currently_playing_type": "episode"})
    assert tracker.observe(later, T0 + timedelta(seconds=50)) == []
