"""Tests for the importers (playpulse.sources.importers) on small hand-written files.

Every sample file is written into ``tmp_path`` by the test that uses it; none is copied
from a real export. The files follow the shapes documented in
``shared/data/real/*/SOURCE.md`` (one sample per Spotify extended key generation).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from playpulse.cli import app
from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.events.codec import decode_stored, validate_event
from playpulse.events.model import EventBase, PlaybackEvent
from playpulse.lake.schema import payloads
from playpulse.processor.plays import summarize_play
from playpulse.quarantine.store import QuarantineStore
from playpulse.query.engine import connect, events_connection
from playpulse.service import ProcessorThread, open_processor, processor_lock
from playpulse.sources.importers import (
    ImportFormatError,
    OtherExportError,
    UnknownFormatError,
    detect_format,
    import_paths,
    plan_import,
)
from playpulse.sources.importers.base import HEARTBEAT_EVERY_S, RowIdentity, play_events
from playpulse.sources.importers.exports import export_root
from playpulse.sources.importers.spotify_extended import end_reason, normalize_platform
from playpulse.sources.importers.timezones import zone_of_country
from playpulse.stream.factory import open_stream
from playpulse.testing import play_totals

IP1, IP2 = "198.51.100.7", "2001:db8::42"
USER_AGENT = "Mozilla%2F5.0%20(SecretDevice)"

# -- sample rows -----------------------------------------------------------------------

_NO_TRACK = {
    "master_metadata_track_name": None,
    "master_metadata_album_artist_name": None,
    "master_metadata_album_album_name": None,
    "spotify_track_uri": None,
}
_NO_EPISODE = {"episode_name": None, "episode_show_name": None, "spotify_episode_uri": None}
_NO_AUDIOBOOK = {
    "audiobook_title": None,
    "audiobook_uri": None,
    "audiobook_chapter_uri": None,
    "audiobook_chapter_title": None,
}


def gen1_row(**overrides: Any) -> dict[str, Any]:
    """A 2021 ``endsong`` row: username, decrypted IP and user agent, ms offline time."""
    row: dict[str, Any] = {
        "ts": "2021-03-01T10:30:00Z",
        "username": "alice-spotify",
        "platform": "iOS 14.4.2 (iPhone10,3)",
        "ms_played": 1_500_000,
        "conn_country": "DE",
        "ip_addr_decrypted": IP1,
        "user_agent_decrypted": USER_AGENT,
        **_NO_TRACK,
        "episode_name": "Episode One",
        "episode_show_name": "The Show",
        "spotify_episode_uri": "spotify:episode:ep1",
        "reason_start": "clickrow",
        "reason_end": "trackdone",
        "shuffle": False,
        "skipped": None,
        "offline": False,
        "offline_timestamp": 1_614_594_600_123,
        "incognito_mode": False,
    }
    row.update(overrides)
    return row


def gen2_row(**overrides: Any) -> dict[str, Any]:
    """A 2023 ``Streaming_History_Audio`` row: the same keys, offline time in seconds."""
    row: dict[str, Any] = {
        "ts": "2023-05-13T15:35:46Z",
        "username": "bob-spotify",
        "platform": "windows",
        "ms_played": 12_345,
        "conn_country": "GB",
        "ip_addr_decrypted": IP1,
        "user_agent_decrypted": "unknown",
        "master_metadata_track_name": "why wait",
        "master_metadata_album_artist_name": "eaup",
        "master_metadata_album_album_name": "why wait (single)",
        "spotify_track_uri": "spotify:track:t1",
        **_NO_EPISODE,
        "reason_start": "trackdone",
        "reason_end": "fwdbtn",
        "shuffle": True,
        "skipped": True,
        "offline": False,
        "offline_timestamp": 1_683_991_786,
        "incognito_mode": False,
    }
    row.update(overrides)
    return row


def gen3_row(**overrides: Any) -> dict[str, Any]:
    """A 2024+ row: ``ip_addr``, no username or user agent, audiobook keys."""
    row: dict[str, Any] = {
        "ts": "2024-08-07T10:03:30Z",
        "platform": "ios",
        "ms_played": 36_030,
        "conn_country": "US",
        "ip_addr": IP2,
        **_NO_TRACK,
        **_NO_EPISODE,
        "audiobook_title": "The Fellowship of the Ring",
        "audiobook_uri": "spotify:show:book1",
        "audiobook_chapter_uri": "spotify:episode:chapter1",
        "audiobook_chapter_title": "A Long-expected Party",
        "reason_start": "unknown",
        "reason_end": "endplay",
        "shuffle": False,
        "skipped": True,
        "offline": None,
        "offline_timestamp": None,
        "incognito_mode": False,
    }
    row.update(overrides)
    return row


def track3(
    ts: str, ms: int, *, artist: str = "Artist", track: str = "Song", **kw: Any
) -> dict[str, Any]:
    """A generation-3 track row ending at ``ts`` after ``ms`` milliseconds."""
    return gen3_row(
        ts=ts,
        ms_played=ms,
        **{
            **_NO_AUDIOBOOK,
            "master_metadata_track_name": track,
            "master_metadata_album_artist_name": artist,
            "master_metadata_album_album_name": "Album",
            "spotify_track_uri": f"spotify:track:{artist}-{track}",
            "reason_end": "trackdone",
            **kw,
        },
    )


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def write_json(path: Path, rows: Any, *, indent: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=indent, ensure_ascii=False), encoding="utf-8")
    return path


def write_text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def utc(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def planned(path: Path, **kw: Any) -> list[EventBase]:
    return [p.event for p in plan_import([path], **kw).events]


def as_dict(event: EventBase) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out


def stream_payloads(settings: Settings) -> list[bytes]:
    """The events the data dir keeps (its lake's ``events`` table) as stored JSON, in
    time order: what an import wrote."""
    if not settings.lake_path.exists():
        return []
    con = events_connection(settings)
    try:
        table = con.sql("SELECT * FROM events ORDER BY occurred_at, event_id").to_arrow_table()
    finally:
        con.close()
    return list(payloads(table))


def stream_events(settings: Settings) -> list[EventBase]:
    return [decode_stored(p) for p in stream_payloads(settings)]


def totals(settings: Settings, pk: str = "TOTAL") -> dict[str, float]:
    """The play measures of every play (``TOTAL``), one user's (``USER#<id>``) or one
    creator's (``CREATOR#<name>``), from the lake: imported history is not in the
    real-time store's live counters."""
    kind, _, name = pk.partition("#")
    return play_totals(
        settings,
        user_id=name if kind == "USER" else None,
        creator=name if kind == "CREATOR" else None,
    )


def lake_event_count(settings: Settings) -> int:
    """Rows of the lake's events table."""
    con = events_connection(settings)
    try:
        row = con.execute("SELECT count(*) FROM events").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def shop_totals(settings: Settings) -> dict[str, float]:
    with sqlite3.connect(settings.store_path) as db:
        rows = db.execute(
            "SELECT attr, sum(value) FROM items WHERE pk = 'SHOP' GROUP BY attr"
        ).fetchall()
    return {a: float(v) for a, v in rows}


# -- Spotify extended ------------------------------------------------------------------


def test_spotify_extended_generation1_episode_with_heartbeats(tmp_path: Path) -> None:
    path = write_json(tmp_path / "endsong_0.json", [gen1_row()])
    events = planned(path)
    assert [e.event_type for e in events] == ["play_start", "heartbeat", "heartbeat", "play_end"]
    start = utc("2021-03-01T10:05:00Z")
    assert [e.occurred_at for e in events] == [
        start,
        start + timedelta(minutes=10),
        start + timedelta(minutes=20),
        utc("2021-03-01T10:30:00Z"),
    ]
    assert [e.position_s for e in events if isinstance(e, PlaybackEvent)] == [0, 600, 1200, 1500]
    first, last = as_dict(events[0]), as_dict(events[-1])
    assert first["user_id"] == "alice-spotify"
    assert first["content"] == {
        "content_id": "spotify:episode:ep1",
        "content_type": "episode",
        "title": "Episode One",
        "creator": "The Show",
    }
    assert first["context"] == {
        "platform": "ios",
        "device_type": "mobile",
        "country": "DE",
        "timezone": "Europe/Berlin",  # from conn_country: Germany keeps one time
    }
    assert first["properties"] == {
        "reason_start": "clickrow",
        "shuffle": False,
        "offline": False,
        "incognito_mode": False,
    }
    assert last["reason"] == "completed"
    assert last["properties"] == {"reason_end": "trackdone"}
    assert len({e.playback_id for e in events if isinstance(e, PlaybackEvent)}) == 1
    assert len({e.event_id for e in events}) == 4
    for event in events:
        assert event.occurred_at.tzinfo is not None
        assert event.received_at is not None
        assert event.received_at.tzinfo is not None


def test_spotify_extended_generation2_track(tmp_path: Path) -> None:
    path = write_json(tmp_path / "Streaming_History_Audio_2023_1.json", [gen2_row()])
    events = planned(path)
    assert [e.event_type for e in events] == ["play_start", "play_end"]
    assert events[0].occurred_at == utc("2023-05-13T15:35:46Z") - timedelta(milliseconds=12_345)
    assert events[1].occurred_at == utc("2023-05-13T15:35:46Z")
    first, last = as_dict(events[0]), as_dict(events[1])
    assert first["user_id"] == "bob-spotify"
    assert first["content"] == {
        "content_id": "spotify:track:t1",
        "content_type": "track",
        "title": "why wait",
        "creator": "eaup",
    }
    assert first["properties"]["album"] == "why wait (single)"
    assert first["context"] == {
        "platform": "windows",
        "device_type": "desktop",
        "country": "GB",
        "timezone": "Europe/London",
    }
    assert last["reason"] == "next"
    assert last["position_s"] == 12.345
    assert last["properties"] == {"skipped": True, "reason_end": "fwdbtn"}


def test_spotify_extended_generation3_audiobook_and_unknown_content(tmp_path: Path) -> None:
    empty = gen3_row(**_NO_AUDIOBOOK, ts="2024-08-07T11:00:00Z", conn_country="ZZ")
    no_country = gen3_row(ts="2024-08-07T12:00:00Z", conn_country=None, platform="android")
    path = write_json(
        tmp_path / "Streaming_History_Video_2024.json", [gen3_row(), empty, no_country]
    )
    events = planned(path)
    starts = [as_dict(e) for e in events if e.event_type == "play_start"]
    assert len(starts) == 3
    book, unknown, android = starts
    assert book["user_id"] == "spotify-user"
    assert book["content"] == {
        "content_id": "spotify:show:book1",
        "content_type": "audiobook",
        "title": "The Fellowship of the Ring",
        "creator": "The Fellowship of the Ring",
        "chapter_title": "A Long-expected Party",
    }
    assert book["properties"]["chapter_uri"] == "spotify:episode:chapter1"
    assert book["context"] == {"platform": "ios", "device_type": "mobile", "country": "US"}
    assert unknown["content"] == {"content_id": "spotify:unknown", "content_type": "track"}
    assert "country" not in unknown["context"]  # ZZ is Spotify's "unknown"
    assert android["context"] == {"platform": "android", "device_type": "mobile"}


def test_spotify_extended_keeps_no_personal_fields(tmp_path: Path, cfg: Settings) -> None:
    rows = [gen1_row(), gen2_row(), gen3_row()]
    path = write_json(tmp_path / "history.json", rows)
    result = import_paths([path], cfg, progress=False)
    assert result.rows_rejected == 0
    payloads = b"\n".join(stream_payloads(cfg))
    assert payloads
    for secret in (IP1, IP2, USER_AGENT, "iPhone10,3", "ip_addr", "user_agent"):
        assert secret.encode() not in payloads
    lake = b"".join(p.read_bytes() for p in cfg.lake_path.rglob("*.parquet"))
    for secret in (IP1, IP2, USER_AGENT):
        assert secret.encode() not in lake


def test_event_ids_are_pinned(tmp_path: Path) -> None:
    """Ids must never change between versions: a re-import after an upgrade would
    otherwise count everything twice."""
    path = write_json(tmp_path / "a.json", [gen2_row()])
    ids = [e.event_id for e in planned(path)]
    identity = RowIdentity.of(
        "spotify_extended",
        {
            **{k: v for k, v in gen2_row().items() if k not in ("ip_addr_decrypted", "username")},
            "user_agent_decrypted": None,
            "user": "bob-spotify",
        },
    )
    assert ids == [identity.event_id("start"), identity.event_id("end")]
    assert ids[0] == PINNED_START_ID


PINNED_START_ID = "spotify_extended-bed7d69df9f243f01910c27494484e4f"


def test_ids_are_deterministic_and_ignore_personal_fields(tmp_path: Path) -> None:
    a = write_json(tmp_path / "a.json", [gen1_row()])
    b = write_json(tmp_path / "b.json", [gen1_row(ip_addr_decrypted="203.0.113.9")], indent=2)
    c = write_json(tmp_path / "c.json", [gen1_row(ms_played=1_500_001)])
    ids_a = [e.event_id for e in planned(a)]
    assert ids_a == [e.event_id for e in planned(a)]
    assert ids_a == [e.event_id for e in planned(b)]
    assert set(ids_a).isdisjoint(e.event_id for e in planned(c))


def test_offline_timestamp_units_are_normalized(tmp_path: Path) -> None:
    ms = write_json(tmp_path / "ms.json", [gen1_row(offline_timestamp=1_614_594_600_123)])
    s = write_json(tmp_path / "s.json", [gen1_row(offline_timestamp=1_614_594_600)])
    other = write_json(tmp_path / "o.json", [gen1_row(offline_timestamp=1_614_000_000_000)])
    assert [e.event_id for e in planned(ms)] == [e.event_id for e in planned(s)]
    assert [e.event_id for e in planned(ms)] != [e.event_id for e in planned(other)]


def test_user_id_argument_wins_over_username(tmp_path: Path) -> None:
    path = write_json(tmp_path / "a.json", [gen1_row(), gen3_row()])
    assert {e.user_id for e in planned(path)} == {"alice-spotify", "spotify-user"}
    assert {e.user_id for e in planned(path, user_id="me")} == {"me"}


@pytest.mark.parametrize(
    ("reason_end", "reason"),
    [
        ("trackdone", "completed"),
        ("fwdbtn", "next"),
        ("backbtn", "next"),
        ("trackerror", "error"),
        ("endplay", "stopped"),
        ("logout", "stopped"),
        ("unexpected-exit-while-paused", "stopped"),
        ("", "stopped"),
        (None, "stopped"),
    ],
)
def test_reason_end_mapping(reason_end: str | None, reason: str) -> None:
    assert end_reason(reason_end) == reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ios", ("ios", "mobile")),
        ("iOS 14.4.2 (iPhone10,3)", ("ios", "mobile")),
        ("iOS 14.3 (iPad11,3)", ("ios", "tablet")),
        ("android", ("android", "mobile")),
        ("Android OS 10 API 29 (samsung, SM-M405F)", ("android", "mobile")),
        ("android_tv", ("android", "tv")),
        ("windows", ("windows", "desktop")),
        ("Windows 10 (10.0.18363; x64; AppX)", ("windows", "desktop")),
        ("OS X 10.15.7 [x86 8]", ("macos", "desktop")),
        ("osx", ("macos", "desktop")),
        ("linux", ("linux", "desktop")),
        ("web_player windows 10;chrome 76.0.3809.132;desktop", ("web", "web")),
        ("Partner google cast_tv;Chromecast;;", ("other", "tv")),
        ("Partner sonos_one Sonos;One;;", ("other", "speaker")),
        ("not_applicable", ("other", None)),
        ("unknown", (None, None)),
        ("", (None, None)),
        (None, (None, None)),
        ("toaster 3000", ("other", "other")),
    ],
)
def test_platform_normalization(raw: str | None, expected: tuple[str | None, str | None]) -> None:
    assert normalize_platform(raw) == expected


# -- play shape (property) ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(played_ms=st.integers(min_value=0, max_value=10 * 3600 * 1000))
def test_play_events_count_exactly_the_time_played(played_ms: int) -> None:
    start = datetime(2022, 1, 1, 23, 50, tzinfo=UTC)
    ident = RowIdentity.of("test", {"ms": played_ms})
    dicts = play_events(
        ident,
        actor={"user_id": "u"},
        content={"content_id": "c"},
        start=start,
        played_ms=played_ms,
        reason="completed",
    )
    events = [
        validate_event(msgspec.json.encode(d), datetime(2026, 1, 1, tzinfo=UTC)).event
        for d in dicts
    ]
    playback = [e for e in events if isinstance(e, PlaybackEvent)]
    times = [e.occurred_at for e in playback]
    assert times == sorted(times)
    assert all(b - a <= timedelta(seconds=HEARTBEAT_EVERY_S) for a, b in itertools.pairwise(times))
    assert times[-1] - times[0] == timedelta(milliseconds=played_ms)
    assert len({e.event_id for e in events}) == len(events)
    summary = summarize_play(playback)
    assert summary.playing_time_s == pytest.approx(played_ms / 1000, abs=1e-9)
    assert summary.skipped is (played_ms < 30_000)
    assert summary.end_reason == "completed"


# -- Spotify basic -------------------------------------------------------------------------


def test_spotify_basic_music_and_podcast_files(tmp_path: Path) -> None:
    music = write_json(
        tmp_path / "StreamingHistory_music_0.json",
        [
            {
                "endTime": "2025-01-24 00:23",
                "artistName": "Gorillaz",
                "trackName": "Kansas",
                "msPlayed": 160954,
            },
            {
                "endTime": "2025-01-24 01:00",
                "artistName": "A Show",
                "trackName": "Ep 9",
                "msPlayed": 0,
            },
        ],
        indent=2,
    )
    podcast = write_json(
        tmp_path / "StreamingHistory_podcast_0.json",
        [
            {
                "endTime": "2025-03-16 19:25",
                "podcastName": "A Show",
                "episodeName": "Ep 9",
                "msPlayed": 900_518,
            }
        ],
    )
    old = write_json(
        tmp_path / "StreamingHistory0.json",
        [
            {
                "endTime": "2019-03-02 13:50",
                "artistName": "A Show",
                "trackName": "Ep 9",
                "msPlayed": 1,
            }
        ],
    )
    assert detect_format(music) == detect_format(podcast) == detect_format(old) == "spotify_basic"
    events = planned(music)
    first = as_dict(events[0])
    assert first["occurred_at"] == "2025-01-24T00:20:19.046000Z"
    assert events[1].occurred_at == utc("2025-01-24T00:23:00Z")
    assert first["content"]["content_type"] == "track"
    assert first["content"]["creator"] == "Gorillaz"
    assert first["user_id"] == "spotify-user"
    assert as_dict(events[1])["reason"] == "stopped"
    pod = [as_dict(e) for e in planned(podcast)]
    assert [e["event_type"] for e in pod] == ["play_start", "heartbeat", "play_end"]
    assert pod[0]["content"]["content_type"] == "episode"
    assert pod[0]["content"]["creator"] == "A Show"
    old_start = as_dict(planned(old)[0])
    assert "content_type" not in old_start["content"]  # old files mix podcasts into music
    # The same episode gets one content id whichever file shape it came in.
    ids = {pod[0]["content"]["content_id"], old_start["content"]["content_id"]}
    ids.add(as_dict(planned(music)[2])["content"]["content_id"])
    assert len(ids) == 1


def test_spotify_basic_repeated_boundary_minute_counts_once(tmp_path: Path, cfg: Settings) -> None:
    row = {
        "endTime": "2020-01-16 17:00",
        "artistName": "Kid Cudi",
        "trackName": "GHOST!",
        "msPlayed": 289066,
    }
    a = write_json(
        tmp_path / "hist" / "StreamingHistory0.json", [{**row, "endTime": "2020-01-16 16:55"}, row]
    )
    write_json(tmp_path / "hist" / "StreamingHistory1.json", [row])
    result = import_paths([tmp_path / "hist"], cfg, progress=False)
    assert result.rows_read == 3
    assert result.duplicate_rows == 1
    assert totals(cfg)["plays"] == 2
    assert a in [f.path for f in result.files]


# -- YouTube -----------------------------------------------------------------------------


def yt(
    title: str, time: str, url: str | None = None, channel: str | None = None, **kw: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {"header": "YouTube", "title": title}
    if url:
        entry["titleUrl"] = url
    if channel:
        entry["subtitles"] = [{"name": channel, "url": "https://www.youtube.com/channel/UC1"}]
    entry.update(time=time, products=["YouTube"], activityControls=["YouTube watch history"], **kw)
    return entry


def test_youtube_watch_history(tmp_path: Path, cfg: Settings) -> None:
    entries = [
        yt(
            "Watched XI",
            "2021-12-30T17:18:01.492Z",
            "https://www.youtube.com/watch?v=oe01JMWrbH8",
            "Sawano - Topic",
        ),
        yt(
            "Watched https://www.youtube.com/watch?v=abc123",
            "2021-12-30T17:00:00Z",
            "https://www.youtube.com/watch?v=abc123",
        ),
        yt("Watched a video that has been removed", "2021-10-05T16:20:52.424Z"),
        yt("Visited YouTube Music", "2021-02-12T15:13:23.177Z"),
        yt(
            "Watched Buy now",
            "2021-02-12T15:00:00Z",
            "https://www.youtube.com/watch?v=ad1",
            details=[{"name": "From Google Ads"}],
        ),
        yt("Watched Short", "2021-02-11T15:00:00Z", "https://youtu.be/short1", "Chan"),
    ]
    path = write_json(tmp_path / "Takeout" / "watch-history.json", entries, indent=2)
    assert detect_format(path) == "youtube_watch_history"
    result = import_paths([path], cfg, progress=False)
    assert result.skipped_by_reason == {"not a video view": 1, "ad": 1}
    events = sorted((as_dict(e) for e in stream_events(cfg)), key=lambda e: e["occurred_at"])
    assert [e["event_type"] for e in events] == ["play_start"] * 4
    assert [e["content"] for e in events] == [
        {
            "content_id": "youtube:short1",
            "content_type": "video",
            "title": "Short",
            "creator": "Chan",
        },
        {"content_id": "youtube:removed", "content_type": "video"},
        {"content_id": "youtube:abc123", "content_type": "video"},
        {
            "content_id": "youtube:oe01JMWrbH8",
            "content_type": "video",
            "title": "XI",
            "creator": "Sawano - Topic",
        },
    ]
    assert events[-1]["occurred_at"] == "2021-12-30T17:18:01.492000Z"
    assert all("position_s" not in e for e in events)
    assert {e["user_id"] for e in events} == {"youtube-user"}
    total = totals(cfg)
    assert total["plays"] == 4
    assert total.get("playing_time_s", 0.0) == 0.0


# -- Last.fm -----------------------------------------------------------------------------

LASTFM = (
    "uts,utc_time,artist,artist_mbid,album,album_mbid,track,track_mbid\n"
    '"1720688852","11 Jul 2024, 09:07","The Cure","69ee","Faith","0b4a","Primary","5890"\n'
    '"1720688656","11 Jul 2024, 09:04","Go\u2010Go\u2019s","","","","This Town",""\n'
)


def test_lastfm_scrobbles(tmp_path: Path) -> None:
    path = write_text(tmp_path / "scrobbles.csv", LASTFM)
    assert detect_format(path) == "lastfm_scrobbles"
    events = [as_dict(e) for e in planned(path, user_id="sacha")]
    assert [e["event_type"] for e in events] == ["play_start", "play_start"]
    assert events[0]["occurred_at"] == "2024-07-11T09:04:16Z"
    assert events[0]["content"]["creator"] == "Go\u2010Go\u2019s"
    assert events[0]["content"]["title"] == "This Town"
    # A scrobble is a qualified listen by Last.fm's rule (docs/metrics.md).
    assert events[0]["properties"] == {"scrobbled": True}
    assert events[1]["properties"] == {"scrobbled": True, "album": "Faith"}
    assert events[1]["occurred_at"] == datetime.fromtimestamp(1720688852, UTC).isoformat().replace(
        "+00:00", "Z"
    )
    assert {e["user_id"] for e in events} == {"sacha"}


def test_lastfm_other_header_with_text_dates(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "export.csv",
        "artist,album,track,date\nThe Cure,Faith,Primary,31 Jan 2021 12:34\n",
    )
    (event,) = planned(path)
    assert event.occurred_at == utc("2021-01-31T12:34:00Z")
    assert event.user_id == "lastfm-user"


def lastfmr_export(scrobbles: list[tuple[str, str, str]], index_name: str = "") -> str:
    """A lastfmR-style CSV (R ``write.csv``: a quoted row-number column named ``""``),
    newest first, rows numbered from 1 in file order."""
    lines = [f'"{index_name}","date","artist","track"']
    lines += [f'"{n}","{d}","{a}","{t}"' for n, (d, a, t) in enumerate(scrobbles, start=1)]
    return "\n".join(lines) + "\n"


SCROBBLES = [
    ("2021-02-03 10:00:00", "The Cure", "Primary"),
    ("2021-02-02 10:00:00", "Go-Go's", "This Town"),
    ("2021-02-01 10:00:00", "The Cure", "Faith"),
]


@pytest.mark.parametrize("index_name", ["", "X", "index", "Unnamed: 0"])
def test_lastfm_index_column_is_not_part_of_a_rows_identity(
    tmp_path: Path, index_name: str
) -> None:
    old = write_text(tmp_path / "old.csv", lastfmr_export(SCROBBLES[1:], index_name))
    new = write_text(tmp_path / "new.csv", lastfmr_export(SCROBBLES, index_name))
    plain = write_text(
        tmp_path / "plain.csv",
        "date,artist,track\n" + "".join(f"{d},{a},{t}\n" for d, a, t in SCROBBLES),
    )
    old_ids = {e.event_id for e in planned(old)}
    new_ids = {e.event_id for e in planned(new)}
    assert len(old_ids) == 2
    assert len(new_ids) == 3
    assert old_ids < new_ids  # renumbered rows keep their ids; only the newest is new
    assert {e.event_id for e in planned(plain)} == new_ids  # same as without the index


@settings(max_examples=40, deadline=None)
@given(
    scrobbles=st.lists(
        st.tuples(
            st.integers(min_value=1_000_000_000, max_value=1_700_000_000),  # 2001-2023
            st.text(alphabet="abc xyz,\"'", min_size=1, max_size=8).filter(str.strip),
            st.text(alphabet="abc xyz,\"'", min_size=1, max_size=8).filter(str.strip),
        ),
        min_size=1,
        max_size=8,
        unique=True,
    ),
    first_number=st.integers(min_value=0, max_value=10_000),
)
def test_lastfm_ids_do_not_depend_on_row_numbers(
    scrobbles: list[tuple[int, str, str]], first_number: int
) -> None:
    def export(start: int) -> str:
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(["", "uts", "artist", "track"])
        for n, (uts, artist, track) in enumerate(scrobbles, start=start):
            writer.writerow([n, uts, artist, track])
        return out.getvalue()

    with tempfile.TemporaryDirectory() as tmp:
        a = write_text(Path(tmp) / "a.csv", export(1))
        b = write_text(Path(tmp) / "b.csv", export(first_number))
        ids_a = [e.event_id for e in planned(a)]
        assert len(set(ids_a)) == len(scrobbles)
        assert sorted(ids_a) == sorted(e.event_id for e in planned(b))


def test_lastfm_a_leading_column_that_is_not_a_row_number_stays_in_the_identity(
    tmp_path: Path,
) -> None:
    a = write_text(tmp_path / "a.csv", "index,date,artist,track\nx1,2021-02-01,A,T\n")
    b = write_text(tmp_path / "b.csv", "index,date,artist,track\nx2,2021-02-01,A,T\n")
    assert {e.event_id for e in planned(a)} != {e.event_id for e in planned(b)}


def test_reimporting_a_renumbered_export_adds_only_the_new_rows(
    tmp_path: Path, cfg: Settings
) -> None:
    old = write_text(tmp_path / "v1" / "scrobbles.csv", lastfmr_export(SCROBBLES[1:]))
    new = write_text(tmp_path / "v2" / "scrobbles.csv", lastfmr_export(SCROBBLES))
    import_paths([old], cfg, user_id="ann", progress=False)
    assert totals(cfg, "USER#ann")["plays"] == 2
    again = import_paths([new], cfg, user_id="ann", progress=False)
    assert (again.events_new, again.events_known) == (1, 2)
    assert totals(cfg, "USER#ann")["plays"] == 3


# -- Taobao ------------------------------------------------------------------------------

TAOBAO = (
    "1,2268318,2520377,pv,1511544070\n"
    "1,2268318,2520377,fav,1511544080\n"
    "1,2268318,2520377,cart,1511544090\n"
    "1,2268318,2520377,buy,1511544100\n"
    "2,1000,42,buy,1511544100\n"
)


def test_taobao_user_behavior(tmp_path: Path, cfg: Settings) -> None:
    path = write_text(tmp_path / "UserBehavior.csv", TAOBAO)
    assert detect_format(path) == "taobao_user_behavior"
    events = [as_dict(e) for e in planned(path)]
    assert [e["event_type"] for e in events] == [
        "product_view",
        "product_favorite",
        "cart_add",
        "order_completed",
        "order_completed",
    ]
    view, _, cart, *orders = events
    (order,) = [o for o in orders if o["user_id"] == "taobao:1"]
    (other,) = [o for o in orders if o["user_id"] == "taobao:2"]
    assert view["user_id"] == "taobao:1"
    assert view["product_id"] == "taobao:2268318"
    assert view["properties"] == {"category_id": "2520377"}
    assert view["occurred_at"] == "2017-11-24T17:21:10Z"
    assert "quantity" not in cart  # 1 is the default of cart_add, left out of the JSON
    assert order["order_id"].startswith("taobao-order:")
    assert order["order_id"] != other["order_id"]
    assert order["product_id"] == "taobao:2268318"
    assert "amount_minor" not in order
    assert "currency" not in order
    assert order["items"] == [{"product_id": "taobao:2268318"}]  # quantity 1 by default
    import_paths([path], cfg, progress=False)
    shop = shop_totals(cfg)
    assert shop["views"] == 1
    assert shop["favorites"] == 1
    assert shop["cart_adds"] == 1
    assert shop["completed_orders"] == 2
    assert not any(k.startswith("revenue_minor") for k in shop)


def test_taobao_with_header(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "ub.csv", "user_id,item_id,category_id,behavior_type,timestamp\n" + TAOBAO
    )
    assert len(planned(path)) == 5


# -- DIGINETICA ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "session_id;user_id;item_id;timeframe;eventdate",
        "sessionId;userId;itemId;timeframe;eventdate",
    ],
)
def test_diginetica_item_views(tmp_path: Path, header: str) -> None:
    path = write_text(
        tmp_path / "train-item-views.csv",
        f"{header}\n1;NA;81766;526309;2016-05-09\n2;194;31331;0;2016-01-03\n",
    )
    assert detect_format(path) == "diginetica_item_views"
    known, anon = (as_dict(e) for e in planned(path, user_id="ignored"))  # time order
    assert anon == {
        **anon,
        "event_type": "product_view",
        "occurred_at": "2016-05-09T00:08:46.309000Z",
        "anonymous_id": "diginetica-session:1",
        "session_id": "diginetica-session:1",
        "product_id": "diginetica:81766",
    }
    assert "user_id" not in anon
    assert known["user_id"] == "diginetica:194"
    assert known["occurred_at"] == "2016-01-03T00:00:00Z"


# -- detection and errors ------------------------------------------------------------------


def _indexed(header: str, lines: list[str], delimiter: str, name: str, start: int) -> str:
    numbered = [f"{n}{delimiter}{line}" for n, line in enumerate(lines, start=start)]
    return "\n".join([f"{name}{delimiter}{header}", *numbered]) + "\n"


@pytest.mark.parametrize(
    ("fmt", "header", "lines", "delimiter"),
    [
        (
            "taobao_user_behavior",
            "user_id,item_id,category_id,behavior_type,timestamp",
            TAOBAO.splitlines(),
            ",",
        ),
        (
            "diginetica_item_views",
            "sessionId;userId;itemId;timeframe;eventdate",
            ["1;NA;81766;526309;2016-05-09", "2;194;31331;0;2016-01-03"],
            ";",
        ),
    ],
)
def test_an_index_column_before_a_fixed_header_is_read_and_left_out(
    tmp_path: Path, fmt: str, header: str, lines: list[str], delimiter: str
) -> None:
    plain = write_text(tmp_path / "plain.csv", "\n".join([header, *lines]) + "\n")
    pandas = write_text(tmp_path / "pandas.csv", _indexed(header, lines, delimiter, "", 0))
    r_file = write_text(tmp_path / "r.csv", _indexed(header, lines, delimiter, '""', 7))
    assert detect_format(pandas) == detect_format(r_file) == fmt
    ids = sorted(e.event_id for e in planned(plain))
    assert len(ids) == len(lines)
    assert sorted(e.event_id for e in planned(pandas)) == ids
    assert sorted(e.event_id for e in planned(r_file)) == ids


def test_format_is_detected_from_content_not_name(tmp_path: Path) -> None:
    path = write_json(tmp_path / "notes.txt", [gen2_row()])
    assert detect_format(path) == "spotify_extended"
    csv_named_json = write_text(tmp_path / "data.json.csv", TAOBAO)
    assert detect_format(csv_named_json) == "taobao_user_behavior"


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("Userdata.json", '{"username": "x", "country": "DE"}', 1),
        ("Playlist1.json", '[\n  {"name": "My list", "items": []}\n]', 2),
        ("numbers.json", "[1, 2, 3]", 1),
        ("table.csv", "a,b,c\n1,2,3\n", 1),
        ("blank.csv", "\n\n", 1),
    ],
)
def test_unknown_format_names_file_and_line(
    tmp_path: Path, name: str, content: str, line: int
) -> None:
    path = write_text(tmp_path / name, content)
    with pytest.raises(UnknownFormatError) as info:
        detect_format(path)
    assert str(path) in str(info.value)
    assert f"line {line}" in str(info.value)
    assert info.value.line == line


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        (
            '[\n  {"ts": "2021-01-01T00:00:00Z", "ms_played": 1},\n'
            '  {"ts": "2021-01-01T00:00:01Z" "ms_played": 2}\n]\n',
            3,
            "Expecting ',' delimiter",
        ),
        ('[\n  {"ts": "2021-01-01T00:00:00Z", "ms_played": 1},\n', 3, "is truncated"),
        ('[\n  {"ts": "2021-01-01T00:00:00Z", "ms_played": 1},\n]\n', 3, "Expecting value"),
        ('[{"ts": "2021-01-01T00:00:00Z", "ms_played": 1}]\n[]', 2, "extra data"),
        ('{"a": 1,\n "b": }', 2, "Expecting value"),
    ],
)
def test_corrupt_json_names_file_and_line(
    tmp_path: Path, content: str, line: int, words: str
) -> None:
    path = write_text(tmp_path / "broken.json", content)
    with pytest.raises(ImportFormatError) as info:
        detect_format(path)
    assert not isinstance(info.value, UnknownFormatError)
    message = str(info.value)
    assert message.startswith(f"{path}, line {line}:")
    assert words in message


def test_corrupt_csv_names_file_and_line(tmp_path: Path, cfg: Settings) -> None:
    bad_bytes = tmp_path / "UserBehavior.csv"
    bad_bytes.write_bytes(TAOBAO.encode()[:40] + b"\n1,2,3,pv,15115\xff44070\n")
    with pytest.raises(ImportFormatError, match=re.escape(f"{bad_bytes}, line 3: is not UTF-8")):
        import_paths([bad_bytes], cfg, progress=False)
    bad_quote = write_text(
        tmp_path / "scrobbles.csv", LASTFM + '"1720688000","x"y,"a","","b","","c",""\n'
    )
    with pytest.raises(
        ImportFormatError, match=re.escape(f"{bad_quote}, line 4: is not valid CSV")
    ):
        import_paths([bad_quote], cfg, progress=False)
    assert stream_payloads(cfg) == []  # nothing appended before the error


def test_missing_path_is_an_error(tmp_path: Path, cfg: Settings) -> None:
    with pytest.raises(ImportFormatError, match="does not exist"):
        import_paths([tmp_path / "nope.json"], cfg, progress=False)


def test_directory_walk_skips_unknown_files_but_not_corrupt_ones(
    tmp_path: Path, cfg: Settings
) -> None:
    export = tmp_path / "my_spotify_data"
    write_json(
        export / "Spotify Extended Streaming History" / "Streaming_History_Audio_2023.json",
        [gen2_row()],
    )
    write_json(export / "Spotify Account Data" / "Userdata.json", {"username": "bob"})
    write_text(export / "ReadMeFirst.pdf", "%PDF-1.4")
    write_json(export / ".hidden" / "x.json", [gen1_row()])
    result = import_paths([export], cfg, progress=False)
    assert [f.format for f in result.files] == ["spotify_extended"]
    assert [p.name for p, _ in result.skipped_files] == ["Userdata.json"]
    assert "unknown format" in result.skipped_files[0][1]
    assert result.events_appended == 2
    # A named file of unknown format is an error, not a skip.
    with pytest.raises(UnknownFormatError):
        import_paths([export / "Spotify Account Data" / "Userdata.json"], cfg, progress=False)
    # A corrupt file is reported, not skipped; the other files are imported all the same
    # (#17: one corrupt file no longer aborts the directory).
    write_text(export / "Spotify Account Data" / "StreamingHistory_music_9.json", '[{"endTime": ')
    again = import_paths([export], cfg, progress=False)
    assert [f.format for f in again.files] == ["spotify_extended"]
    ((failed, why),) = again.failed_files
    assert failed.name == "StreamingHistory_music_9.json"
    assert why.startswith(f"{failed}, line 1: is truncated")
    assert "1 corrupt file(s) NOT imported" in again.summary()


def test_empty_array_imports_nothing(tmp_path: Path, cfg: Settings) -> None:
    path = write_text(tmp_path / "StreamingHistory_podcast_0.json", "[]\n")
    result = import_paths([path], cfg, progress=False)
    assert result.rows_by_format == {"empty": 0}
    assert result.events_appended == 0


# -- quarantine ----------------------------------------------------------------------------


def test_invalid_rows_are_quarantined_with_file_and_line(tmp_path: Path, cfg: Settings) -> None:
    rows = [
        gen1_row(),
        {k: v for k, v in gen1_row(ts="2021-03-02T00:00:00Z").items() if k != "ms_played"},
        gen1_row(ts="1999-12-31T23:59:59Z", ms_played=1000),
        gen1_row(ts="2021-03-03T00:00:00Z", ms_played="abc"),
        gen1_row(ts="2021-03-04", ms_played=1),
    ]
    path = write_json(tmp_path / "endsong.json", rows, indent=2)
    result = import_paths([path], cfg, progress=False)
    assert result.rows_read == 5
    assert result.rows_rejected == 4
    assert result.events_appended == 4  # the one valid row
    starts = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if line == "  {"]
    assert [(r.line, r.index) for r in result.rejected] == [(starts[i], i) for i in (1, 2, 3, 4)]
    assert [r.reason for r in result.rejected] == [
        "invalid_row",
        "occurred_at_out_of_range",
        "invalid_row",
        "invalid_row",
    ]
    assert "ms_played: is required" in result.rejected[0].message
    assert "before 2000-01-01" in result.rejected[1].message
    assert "no time zone" in result.rejected[3].message
    store = QuarantineStore(cfg.quarantine_path)
    try:
        entries = store.list(limit=10)
    finally:
        store.close()
    assert [e.id for e in entries] == [r.quarantine_id for r in result.rejected]
    for entry, rejected in zip(entries, result.rejected, strict=True):
        assert entry.source == "import"
        assert entry.errors[-1] == {
            "loc": "source",
            "msg": f"{path}, line {rejected.line} (row {rejected.index + 1}, spotify_extended)",
        }
        raw = json.loads(entry.raw)
        assert raw["username"] == "alice-spotify"
        assert "ip_addr_decrypted" not in raw
        assert "user_agent_decrypted" not in raw
    assert entries[1].event_id is not None
    assert entries[1].errors[0]["loc"] == "play_start.occurred_at"
    assert totals(cfg)["plays"] == 1


def test_invalid_csv_rows_are_quarantined(tmp_path: Path, cfg: Settings) -> None:
    path = write_text(tmp_path / "ub.csv", TAOBAO + "3,4,5,steal,1511544100\n3,4,5,pv\n")
    result = import_paths([path], cfg, progress=False)
    assert [(r.line, r.reason) for r in result.rejected] == [(6, "invalid_row"), (7, "invalid_row")]
    assert "behavior_type" in result.rejected[0].message
    assert "expected 5 fields, found 4" in result.rejected[1].message
    assert result.events_appended == 5


def test_reimported_bad_rows_are_quarantined_once(tmp_path: Path, cfg: Settings) -> None:
    bad = gen1_row(ts="2021-03-04", ms_played=1)  # no time zone
    path = write_json(tmp_path / "a" / "endsong.json", [gen1_row(), bad])
    moved = write_json(
        tmp_path / "b" / "endsong_0.json", [bad, gen1_row(ts="2021-03-05T00:00:00Z")]
    )
    csv_path = write_text(
        tmp_path / "s.csv", lastfmr_export([("not a time", "A", "T"), *SCROBBLES[:1]])
    )
    renumbered = write_text(
        tmp_path / "s2.csv", lastfmr_export([*SCROBBLES[1:2], ("not a time", "A", "T")])
    )
    first = import_paths([path, csv_path], cfg, progress=False)
    again = import_paths([path, moved, csv_path, renumbered], cfg, progress=False)
    assert first.rows_rejected == 2
    assert again.rows_rejected == 4  # reported each time they are met ...
    ids = {r.quarantine_id for r in first.rejected}
    assert {r.quarantine_id for r in again.rejected} == ids  # ... and kept once
    store = QuarantineStore(cfg.quarantine_path)
    try:
        assert len(store.list(limit=100)) == 2
    finally:
        store.close()
    other = import_paths([path], cfg, user_id="someone-else", progress=False)
    assert {r.quarantine_id for r in other.rejected}.isdisjoint(ids)


# -- idempotence and processing --------------------------------------------------------------


def test_identical_rows_give_identical_events_and_count_once(tmp_path: Path, cfg: Settings) -> None:
    row = track3("2024-01-01T12:00:00Z", 40_000)
    path = write_json(tmp_path / "a.json", [row, row, track3("2024-01-01T12:05:00Z", 10_000)])
    plan = plan_import([path])
    assert plan.result.duplicate_rows == 1
    assert len(plan.events) == 4
    result = import_paths([path], cfg, progress=False)
    assert (result.events_new, result.events_known) == (4, 0)
    first = totals(cfg)
    assert first["plays"] == 2
    assert first["skipped"] == 1
    assert first["playing_time_s"] == pytest.approx(50.0)

    again = import_paths([path, path], cfg, progress=False)  # named twice: read once
    assert again.events_appended == 4
    assert (again.events_new, again.events_known) == (0, 4)
    assert totals(cfg) == first
    assert lake_event_count(cfg) == 4


def test_long_plays_count_fully_and_skips_follow_30_seconds(tmp_path: Path, cfg: Settings) -> None:
    rows = [
        track3("2024-02-01T00:05:00Z", 65 * 60 * 1000, track="long"),  # across midnight
        track3("2024-02-01T03:00:00Z", 29_999, track="short"),
        track3("2024-02-01T04:00:00Z", 30_000, track="stream", reason_end="fwdbtn"),
        track3("2024-02-01T05:00:00Z", 0, track="zero", reason_end="trackerror"),
    ]
    path = write_json(tmp_path / "Streaming_History_Audio_2024.json", rows)
    import_paths([path], cfg, progress=False)
    total = totals(cfg)
    assert total["plays"] == 4
    assert total["playing_time_s"] == pytest.approx(3900 + 29.999 + 30)
    assert total["skipped"] == 2
    assert total["streams"] == 2
    assert total["completed"] == 2  # trackdone -> completed, whatever the time played
    con = connect(cfg)
    try:
        by_day = dict(
            con.execute(
                "SELECT s.start::DATE::VARCHAR, sum(s.playing_s) "
                "FROM (SELECT unnest(segments) AS s FROM plays) GROUP BY 1"
            ).fetchall()
        )
    finally:
        con.close()
    assert by_day["2024-01-31"] == pytest.approx(3600)
    assert by_day["2024-02-01"] == pytest.approx(300 + 29.999 + 30)
    assert totals(cfg, "CREATOR#Artist")["plays"] == 4


def test_history_goes_to_the_lake_not_the_stream(tmp_path: Path, cfg: Settings) -> None:
    rows = [
        track3("2024-03-03T00:00:00Z", 1000, track="c"),
        track3("2024-03-01T00:00:00Z", 1000, track="a"),
        track3("2024-03-02T00:00:00Z", 1000, track="b"),
    ]
    result = import_paths([write_json(tmp_path / "a.json", rows)], cfg, progress=False)
    assert result.events_new == 6
    assert len(stream_events(cfg)) == 6
    stream = open_stream(cfg)
    try:
        assert sum(p.count for p in stream.partitions()) == 0
    finally:
        stream.close()


def test_import_waits_for_a_running_processor(tmp_path: Path, cfg: Settings) -> None:
    path = write_json(tmp_path / "a.json", [track3("2024-01-01T12:00:00Z", 40_000)])
    with processor_lock(cfg) as mine:
        assert mine
        worker = ProcessorThread(open_processor(cfg), cfg)
        worker.start()
        try:
            result = import_paths([path], cfg, progress=False)
            assert result.processing is None  # the running processor did it
            assert totals(cfg)["plays"] == 1
        finally:
            worker.stop()
    assert worker.error is None


def test_progress_display_goes_to_stderr(
    tmp_path: Path, cfg: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_json(tmp_path / "a.json", [track3("2024-01-01T12:00:00Z", 40_000)])
    result = import_paths([path], cfg, progress=True)
    out = capsys.readouterr()
    assert out.out == ""
    assert "mapping rows" in out.err
    assert result.summary().startswith("imported 1 file(s), 1 rows (1 spotify_extended)")
    assert json.loads(json.dumps(result.to_dict()))["events_appended"] == 2


# -- time zones -----------------------------------------------------------------------------


def test_tz_sets_every_imported_rows_listener_zone(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "a.json",
        [gen1_row(), track3("2024-01-01T12:00:00Z", 40_000)],  # DE, then US
    )
    lastfm = write_text(tmp_path / "s.csv", LASTFM)
    plan = plan_import([path, lastfm], timezone="Asia/Tokyo")
    firsts = [p.event for p in plan.events if p.event.event_type == "play_start"]
    assert len(firsts) == 4
    assert {e.context.timezone if e.context else None for e in firsts} == {"Asia/Tokyo"}
    others = [p.event for p in plan.events if p.event.event_type != "play_start"]
    assert len(others) == 4  # gen1: 2 heartbeats and an end; track3: an end
    assert all(e.context is None for e in others)  # the zone goes on each row's first event
    assert plan.result.timezone == "Asia/Tokyo"
    assert plan.result.timezone_note() == (
        "Listener time zone: Asia/Tokyo (--tz), for every imported row"
    )


def test_without_tz_a_single_zone_conn_country_gives_the_zone_and_says_so(
    tmp_path: Path,
) -> None:
    rows = [
        gen1_row(),  # DE: Europe/Berlin (Europe/Busingen keeps the same time)
        gen2_row(),  # GB: Europe/London
        track3("2024-01-01T12:00:00Z", 40_000),  # US: several zones
        track3("2024-01-02T12:00:00Z", 40_000, conn_country="ZZ"),  # unknown
    ]
    plan = plan_import([write_json(tmp_path / "a.json", rows)])
    zones = [
        e.context.timezone if e.context else None
        for e in (p.event for p in plan.events)
        if e.event_type == "play_start"
    ]
    assert sorted(zones, key=str) == ["Europe/Berlin", "Europe/London", None, None]
    assert plan.result.timezones_by_hint == {"Europe/Berlin": 1, "Europe/London": 1}
    assert plan.result.rows_without_timezone == 2
    note = plan.result.summary()
    assert "time zone from the export's country (conn_country)" in note
    assert "Europe/Berlin for 1 rows" in note
    assert "2 rows have no listener time zone" in note
    assert "--tz ZONE" in note


def test_unknown_tz_is_a_clear_error(tmp_path: Path) -> None:
    path = write_json(tmp_path / "a.json", [gen1_row()])
    with pytest.raises(ConfigError, match="'Mars/Olympus' is not an IANA time zone name"):
        plan_import([path], timezone="Mars/Olympus")


@pytest.mark.parametrize(
    ("code", "zone"),
    [("DE", "Europe/Berlin"), ("GB", "Europe/London"), ("IN", "Asia/Kolkata"), ("US", None)],
)
def test_zone_of_country(code: str, zone: str | None) -> None:
    assert zone_of_country(code) == zone


def test_cli_import_tz(tmp_path: Path, cfg: Settings) -> None:
    path = write_json(tmp_path / "a.json", [track3("2024-01-01T12:00:00Z", 40_000)])
    args = ["import", str(path), "--tz", "Europe/Paris", "--data-dir", str(cfg.data_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Listener time zone: Europe/Paris (--tz)" in result.output
    (first, _) = stream_events(cfg)
    assert first.context is not None
    assert first.context.timezone == "Europe/Paris"


# -- people stay apart ----------------------------------------------------------------------


def test_two_peoples_exports_without_user_never_become_one_user(
    tmp_path: Path, cfg: Settings
) -> None:
    alice = write_json(
        tmp_path / "alice" / "Streaming_History_Audio_2024.json",
        [track3("2024-01-01T12:00:00Z", 40_000, artist="A")],
    )
    bob = write_json(
        tmp_path / "bob" / "Streaming_History_Audio_2024.json",
        [track3("2024-01-02T12:00:00Z", 50_000, artist="B")],
    )
    import_paths([alice.parent], cfg, progress=False)
    records = len(stream_payloads(cfg))
    with pytest.raises(OtherExportError) as caught:
        import_paths([bob.parent], cfg, progress=False)
    message = str(caught.value)
    assert "'spotify-user'" in message
    assert str(alice.parent) in message
    assert str(bob.parent) in message
    assert "--user" in message
    assert len(stream_payloads(cfg)) == records  # nothing of bob's was written
    import_paths([bob.parent], cfg, user_id="bob", progress=False)
    assert totals(cfg, "USER#spotify-user")["plays"] == 1
    assert totals(cfg, "USER#bob")["plays"] == 1


def test_one_exports_files_one_at_a_time_stay_one_user(tmp_path: Path, cfg: Settings) -> None:
    export = tmp_path / "my_spotify_data"
    extended = write_json(
        export / "Spotify Extended Streaming History" / "Streaming_History_Audio_2024.json",
        [track3("2024-01-01T12:00:00Z", 40_000)],
    )
    video = write_json(
        export / "Spotify Extended Streaming History" / "Streaming_History_Video_2024.json",
        [track3("2024-01-03T12:00:00Z", 40_000, track="clip")],
    )
    basic = write_json(
        export / "Spotify Account Data" / "StreamingHistory_music_0.json",
        [{"endTime": "2024-01-02 12:00", "artistName": "A", "trackName": "T", "msPlayed": 1}],
    )
    for path in (video, basic, extended):
        import_paths([path], cfg, progress=False)
    import_paths([export], cfg, progress=False)
    assert totals(cfg, "USER#spotify-user")["plays"] == 3


def test_an_updated_export_in_another_folder_is_recognized_by_its_rows(
    tmp_path: Path, cfg: Settings
) -> None:
    old = [track3("2024-01-01T12:00:00Z", 40_000)]
    first = write_json(tmp_path / "download-2024" / "a.json", old)
    newer = write_json(
        tmp_path / "download-2025" / "a.json", [*old, track3("2025-01-01T12:00:00Z", 40_000)]
    )
    import_paths([first], cfg, progress=False)
    import_paths([newer], cfg, progress=False)
    assert totals(cfg, "USER#spotify-user")["plays"] == 2


def test_explicit_user_is_never_checked_against_other_exports(
    tmp_path: Path, cfg: Settings
) -> None:
    a = write_json(tmp_path / "a" / "x.json", [track3("2024-01-01T12:00:00Z", 40_000)])
    b = write_json(tmp_path / "b" / "x.json", [track3("2024-01-02T12:00:00Z", 40_000)])
    import_paths([a], cfg, progress=False)
    import_paths([b], cfg, user_id="spotify-user", progress=False)  # "the same person"
    assert totals(cfg, "USER#spotify-user")["plays"] == 2


def test_lastfm_user_column_names_the_user(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "s.csv", "username,artist,track,uts\nann,The Cure,Primary,1720688852\n"
    )
    (event,) = planned(path)
    assert event.user_id == "ann"
    (event,) = planned(path, user_id="me")
    assert event.user_id == "me"


@pytest.mark.parametrize(
    ("folder", "root"),
    [
        ("/dl/my_spotify_data/Spotify Account Data", "/dl/my_spotify_data"),
        ("/dl/my_spotify_data/Spotify Extended Streaming History", "/dl/my_spotify_data"),
        ("/dl/Takeout/YouTube and YouTube Music/history", "/dl/Takeout"),
        ("/dl/alice", "/dl/alice"),
    ],
)
def test_export_root_lifts_known_export_subfolders(folder: str, root: str) -> None:
    assert export_root(Path(folder)) == Path(root)


def test_a_renamed_title_shows_its_newest_name_every_time(tmp_path: Path, cfg: Settings) -> None:
    uri = {"spotify_track_uri": "spotify:track:same"}
    rows = [
        track3("2024-01-01T12:00:00Z", 40_000, track="Say It", **uri),
        track3("2024-02-01T12:00:00Z", 40_000, track="Say It - Original Mix", **uri),
        track3("2024-01-15T12:00:00Z", 40_000, track="Say It", **uri),
    ]
    import_paths([write_json(tmp_path / "a.json", rows)], cfg, progress=False)
    from playpulse.query.catalog import QueryParams, run_query

    params = QueryParams(start=utc("2024-01-01T00:00:00Z"), end=utc("2024-03-01T00:00:00Z"))
    for _ in range(5):
        (row,) = run_query("top_content", params, cfg).to_pylist()
        assert (row["title"], row["plays"]) == ("Say It - Original Mix", 3)
