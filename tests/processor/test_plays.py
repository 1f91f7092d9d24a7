"""Tests for rebuilding a play: the state machine, exact edges, hour segments, properties.

Events are real model structs, built from JSON-like dicts with ``msgspec.convert`` (so
every model rule applies). Times are given in seconds after ``T0`` unless a test needs
a specific wall-clock instant.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playpulse.events.model import Event, PlaybackEvent, PlayEnd, ProductView
from playpulse.processor.buckets import local_date, local_hour, utc_date, utc_hour_start
from playpulse.processor.plays import (
    EVENT_ORDER,
    IDLE_TIMEOUT,
    PlayBuilder,
    PlaySummary,
    is_closed,
    order_play_events,
    play_key,
    source_skip_signal,
    summarize_play,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
_ids = itertools.count()

#: Fields each event type needs beyond the envelope, used when a test does not give them.
REQUIRED: dict[str, dict[str, Any]] = {
    "play_start": {"content": {"content_id": "c1", "duration_s": 1000.0}},
    "seek": {"from_position_s": 0.0, "position_s": 0.0},
    "play_end": {"reason": "stopped"},
    "chapter_change": {"content": {"content_id": "c1", "chapter": 1}},
    "bookmark": {"position_s": 0.0},
    "speed_change": {"playback_rate": 1.0},
    "visibility_change": {"context": {"foreground": True}},
}


def ev(kind: str, at: float | datetime, **fields: Any) -> PlaybackEvent:
    """A playback event of type ``kind`` at ``T0 + at`` seconds (or at a datetime)."""
    when = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    data: dict[str, Any] = {
        "event_type": kind,
        "event_id": f"e{next(_ids):06d}",
        "occurred_at": when.isoformat(),
        "user_id": "u1",
        "playback_id": "p1",
    }
    data.update(REQUIRED.get(kind, {}))
    data.update(fields)
    event = msgspec.convert(data, type=Event)
    assert isinstance(event, PlaybackEvent)
    return event


def play(*events: PlaybackEvent, **kwargs: Any) -> PlaySummary:
    return summarize_play(list(events), **kwargs)


def by_date(summary: PlaySummary, tz: str | None) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    for seg in summary.segments:
        sums[local_date(seg.start, tz) if tz else utc_date(seg.start)] += seg.playing_s
    return dict(sums)


# --- basics -----------------------------------------------------------------------------


def test_simple_play() -> None:
    s = play(
        ev("play_start", 0, position_s=0.0, context={"device_type": "mobile", "country": "DE"}),
        ev("heartbeat", 10, position_s=10.0),
        ev("heartbeat", 20, position_s=20.0),
        ev("play_end", 45, reason="stopped"),
    )
    assert s.play_key == "p1"
    assert s.playback_id == "p1"
    assert s.user_id == "u1"
    assert s.content_id == "c1"
    assert s.duration_s == 1000.0
    assert (s.device_type, s.country, s.platform, s.timezone) == ("mobile", "DE", None, None)
    assert s.started_at == T0
    assert s.ended_at == T0 + timedelta(seconds=45)
    assert s.end_reason == "stopped"
    assert s.playing_time_s == 45.0
    assert s.watch_time_s == 45.0
    assert s.content_time_s == 45.0
    assert s.playing_time_foreground_s == 45.0
    assert s.playing_time_background_s == 0.0
    assert s.startup_time_s == 0.0
    assert s.rebuffer_count == 0
    assert s.furthest_position_s == 45.0  # extrapolated from 20 s over the last 25 s
    assert s.is_stream
    assert not s.skipped
    assert not s.completed
    assert s.event_count == 4
    assert len(s.segments) == 1
    seg = s.segments[0]
    assert (seg.start, seg.end, seg.playing_s) == (T0, T0 + timedelta(seconds=45), 45.0)
    assert (seg.foreground, seg.chapter, seg.rate) == (True, None, 1.0)


def test_no_time_after_the_last_event() -> None:
    s = play(ev("play_start", 0))
    assert s.playing_time_s == 0.0
    assert s.watch_time_s == 0.0
    assert s.segments == ()
    assert s.end_reason is None
    assert not s.skipped
    assert not s.is_stream


def test_metadata_from_first_event_carrying_it() -> None:
    s = play(
        ev("heartbeat", 5, context={"timezone": "Europe/Berlin"}),
        ev(
            "play_start",
            0,
            content={"content_id": "c1", "content_type": "audiobook", "title": "T"},
            context={"platform": "ios"},
        ),
        ev("chapter_change", 7, content={"content_id": "c1", "creator": "A", "chapter": 2}),
    )
    assert (s.content_type, s.title, s.creator) == ("audiobook", "T", "A")
    assert (s.platform, s.timezone, s.device_type) == ("ios", "Europe/Berlin", None)
    assert s.chapters_reached == (2,)


# --- stream / skip: 30 s ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("end_at", "is_stream", "skipped"),
    [(29.999, False, True), (30 - 1e-6, False, True), (30.0, True, False), (30.001, True, False)],
)
def test_stream_threshold_edge(end_at: float, is_stream: bool, skipped: bool) -> None:
    s = play(ev("play_start", 0), ev("play_end", end_at, reason="next"))
    assert s.is_stream is is_stream
    assert s.skipped is skipped


def test_a_lone_play_start_has_an_unknown_length_and_is_not_a_skip() -> None:
    # How importers write a YouTube view or a Last.fm scrobble: no evidence of length.
    view = play(ev("play_start", 0), now_event_time=T0 + IDLE_TIMEOUT + US)
    assert view.end_reason == "idle"
    assert (view.playing_time_s, view.is_stream, view.skipped) == (0.0, False, False)
    # Two events are evidence: a play stopped at once is a skip.
    stopped = play(ev("play_start", 0), ev("play_end", 0, reason="next"))
    assert (stopped.playing_time_s, stopped.skipped) == (0.0, True)
    # So is a start that went idle after a heartbeat 5 s in.
    brief = play(ev("play_start", 0), ev("heartbeat", 5), now_event_time=T0 + IDLE_TIMEOUT * 2)
    assert (brief.end_reason, brief.skipped) == ("idle", True)


def test_open_play_is_not_skipped_until_idle() -> None:
    events = [ev("play_start", 0), ev("heartbeat", 10)]
    last = T0 + timedelta(seconds=10)
    assert play(*events).end_reason is None
    assert not play(*events).skipped
    at_edge = play(*events, now_event_time=last + IDLE_TIMEOUT)
    assert at_edge.end_reason is None
    assert not at_edge.skipped
    idle = play(*events, now_event_time=last + IDLE_TIMEOUT + US)
    assert idle.end_reason == "idle"
    assert idle.skipped
    assert idle.playing_time_s == 10.0


# --- idle timeout -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap", "playing"),
    [(IDLE_TIMEOUT - US, 1800 - 1e-6), (IDLE_TIMEOUT, 1800.0), (IDLE_TIMEOUT + US, 0.0)],
)
def test_idle_timeout_edge(gap: timedelta, playing: float) -> None:
    s = play(ev("play_start", 0), ev("heartbeat", T0 + gap))
    assert s.playing_time_s == playing
    assert s.watch_time_s == playing


def test_idle_gap_closes_the_play_until_new_evidence() -> None:
    s = play(
        ev("play_start", 0),
        ev("heartbeat", 60),
        # 2 hours of silence: nothing counted; the play was idle-closed at 60 s.
        ev("seek", 7260, from_position_s=60.0, position_s=30.0),
        ev("pause", 7270),  # no evidence of playing between the seek and the pause
        ev("resume", 7300),
        ev("play_end", 7320),
    )
    assert s.playing_time_s == 80.0
    assert s.end_reason == "stopped"


def test_custom_idle_timeout() -> None:
    events = [ev("play_start", 0), ev("heartbeat", 90)]
    assert play(*events, idle_timeout=timedelta(seconds=90)).playing_time_s == 90.0
    assert play(*events, idle_timeout=timedelta(seconds=89)).playing_time_s == 0.0


# --- completion: 95 % -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("position", "duration", "completed"),
    [
        (950.0, 1000.0, True),
        (math.nextafter(950.0, 0.0), 1000.0, False),
        (949.999, 1000.0, False),
        (1000.0, 1000.0, True),
        (2.85, 3.0, True),  # 0.95 * 3.0 is 2.8499999999999996 in floats; compared exactly
        (2.849, 3.0, False),
    ],
)
def test_completion_edge(position: float, duration: float, completed: bool) -> None:
    s = play(
        ev("play_start", 0, content={"content_id": "c1", "duration_s": duration}),
        ev("pause", 1, position_s=position),
    )
    assert s.furthest_position_s == position
    assert s.completed is completed


def test_completion_by_play_end_reason() -> None:
    s = play(ev("play_start", 0, position_s=0.0), ev("play_end", 10, reason="completed"))
    assert s.completed
    assert s.end_reason == "completed"
    assert s.skipped  # Spotify's rule: under 30 s of playing is a skip, whatever the reason


def test_completion_without_duration_or_position() -> None:
    s = play(ev("play_start", 0, content={"content_id": "c1"}), ev("play_end", 10))
    assert s.furthest_position_s is None
    assert s.duration_s is None
    assert not s.completed


def test_extrapolation_is_capped_at_duration() -> None:
    s = play(
        ev("play_start", 0, position_s=90.0, content={"content_id": "c1", "duration_s": 100.0}),
        ev("play_end", 60),
    )
    assert s.furthest_position_s == 100.0
    assert s.completed
    assert s.playing_time_s == 60.0


# --- midnight splits --------------------------------------------------------------------


def heartbeats(start: datetime, end: datetime, every: int = 60, **ctx: Any) -> list[PlaybackEvent]:
    events = [ev("play_start", start, context=ctx)] if ctx else [ev("play_start", start)]
    t = start + timedelta(seconds=every)
    while t < end:
        events.append(ev("heartbeat", t))
        t += timedelta(seconds=every)
    events.append(ev("play_end", end))
    return events


def test_play_across_utc_midnight() -> None:
    start = datetime(2026, 3, 1, 23, 50, tzinfo=UTC)
    s = summarize_play(heartbeats(start, start + timedelta(minutes=20), every=45))
    assert s.playing_time_s == 1200.0
    assert [(seg.start, seg.end) for seg in s.segments] == [
        (start, datetime(2026, 3, 2, tzinfo=UTC)),
        (datetime(2026, 3, 2, tzinfo=UTC), start + timedelta(minutes=20)),
    ]
    assert by_date(s, None) == {"2026-03-01": 600.0, "2026-03-02": 600.0}


def test_play_across_local_midnight_berlin() -> None:
    # Berlin is UTC+1 in January: local midnight is 23:00 UTC; the UTC date is constant.
    start = datetime(2026, 1, 15, 22, 50, tzinfo=UTC)
    s = summarize_play(heartbeats(start, start + timedelta(minutes=20), timezone="Europe/Berlin"))
    assert s.timezone == "Europe/Berlin"
    assert by_date(s, None) == {"2026-01-15": 1200.0}
    assert by_date(s, "Europe/Berlin") == {"2026-01-15": 600.0, "2026-01-16": 600.0}
    assert [local_hour(seg.start, "Europe/Berlin") for seg in s.segments] == [23, 0]


def test_play_across_local_midnight_kolkata() -> None:
    # Kolkata is UTC+05:30: local midnight is 18:30 UTC, a half hour in UTC.
    start = datetime(2026, 1, 15, 18, 10, tzinfo=UTC)
    end = datetime(2026, 1, 15, 19, 10, tzinfo=UTC)
    s = summarize_play(heartbeats(start, end, timezone="Asia/Kolkata"))
    assert [seg.start for seg in s.segments] == [
        start,
        datetime(2026, 1, 15, 18, 30, tzinfo=UTC),
        datetime(2026, 1, 15, 19, 0, tzinfo=UTC),
    ]
    assert [seg.playing_s for seg in s.segments] == [1200.0, 1800.0, 600.0]
    assert by_date(s, "Asia/Kolkata") == {"2026-01-15": 1200.0, "2026-01-16": 2400.0}
    assert by_date(s, None) == {"2026-01-15": 3600.0}


def test_play_across_dst_fall_back_berlin() -> None:
    # 2026-10-25 00:30-01:30 UTC is 02:30 CEST -> 02:30 CET: local hour 2 twice.
    start = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    s = summarize_play(heartbeats(start, start + timedelta(hours=1), timezone="Europe/Berlin"))
    assert [seg.playing_s for seg in s.segments] == [1800.0, 1800.0]
    assert {local_hour(seg.start, "Europe/Berlin") for seg in s.segments} == {2}


# --- rate, pause, buffering, seeking, background --------------------------------------------


def test_playback_rate_two() -> None:
    s = play(
        ev("play_start", 0, position_s=0.0, playback_rate=2.0),
        ev("heartbeat", 30),
        ev("play_end", 60),
    )
    assert s.playing_time_s == 60.0
    assert s.content_time_s == 2 * s.playing_time_s
    assert s.furthest_position_s == 120.0
    assert all(seg.rate == 2.0 for seg in s.segments)


def test_speed_change_mid_play() -> None:
    s = play(
        ev("play_start", 0, position_s=0.0),
        ev("speed_change", 60, playback_rate=1.5),
        ev("play_end", 120),
    )
    assert s.playing_time_s == 120.0
    assert s.content_time_s == 150.0
    assert s.furthest_position_s == 150.0
    assert [(seg.playing_s, seg.rate) for seg in s.segments] == [(60.0, 1.0), (60.0, 1.5)]
    assert sum(seg.content_s for seg in s.segments) == s.content_time_s


def test_pause_resume() -> None:
    s = play(
        ev("play_start", 0),
        ev("pause", 60),
        ev("resume", 120),
        ev("play_end", 180),
    )
    assert s.playing_time_s == 120.0
    assert s.watch_time_s == 120.0  # paused time is excluded from watch time too
    assert (s.ended_at - s.started_at).total_seconds() == 180.0
    assert [seg.playing_s for seg in s.segments] == [60.0, 60.0]


def test_heartbeat_while_paused_means_resumed() -> None:
    s = play(ev("play_start", 0), ev("pause", 10), ev("heartbeat", 40), ev("play_end", 50))
    assert s.playing_time_s == 20.0


def test_same_instant_pause_then_resume_keeps_playing() -> None:
    # EVENT_ORDER puts pause before resume: a zero-length pause, whatever the input order.
    assert EVENT_ORDER.index("pause") < EVENT_ORDER.index("resume")
    resume, pause = ev("resume", 10), ev("pause", 10)
    s = play(ev("play_start", 0), resume, pause, ev("play_end", 20))
    assert s.playing_time_s == 20.0


def test_same_instant_heartbeat_then_pause_pauses() -> None:
    s = play(ev("play_start", 0), ev("pause", 10), ev("heartbeat", 10), ev("play_end", 20))
    assert s.playing_time_s == 10.0


def test_startup_buffering_and_rebuffering() -> None:
    s = play(
        ev("play_start", 0),
        ev("buffer_start", 0),
        ev("buffer_end", 2),  # the first playing evidence: stall before it is startup
        ev("heartbeat", 10),
        ev("buffer_start", 20),
        ev("buffer_end", 25),
        ev("buffer_start", 30),
        ev("heartbeat", 31),  # a heartbeat ends a stall too (playing again)
        ev("play_end", 40),
    )
    assert s.startup_time_s == 2.0
    assert s.rebuffer_count == 2
    assert s.rebuffer_time_s == 6.0
    assert s.playing_time_s == 32.0
    assert s.watch_time_s == 40.0
    assert s.watch_time_s == s.playing_time_s + s.startup_time_s + s.rebuffer_time_s


def test_startup_stall_starting_at_the_first_heartbeat_instant() -> None:
    s = play(
        ev("play_start", 0),
        ev("heartbeat", 5),
        ev("buffer_start", 5),  # at (not before) the first evidence: still startup
        ev("buffer_end", 8),
        ev("buffer_start", 8.000001),
        ev("buffer_end", 9),
        ev("play_end", 10),
    )
    assert s.startup_time_s == 3.0
    assert s.rebuffer_count == 1
    assert s.rebuffer_time_s == 0.999999
    assert s.playing_time_s == 6.000001


def test_no_startup_buffering_is_zero() -> None:
    s = play(ev("play_start", 0), ev("heartbeat", 10), ev("play_end", 20))
    assert s.startup_time_s == 0.0
    assert s.rebuffer_count == 0


def test_buffering_while_paused_is_not_counted() -> None:
    s = play(
        ev("play_start", 0),
        ev("heartbeat", 10),
        ev("pause", 20),
        ev("buffer_start", 25),
        ev("buffer_end", 40),
        ev("resume", 60),
        ev("play_end", 70),
    )
    assert s.rebuffer_count == 0
    assert s.rebuffer_time_s == 0.0
    assert s.playing_time_s == 30.0
    assert s.watch_time_s == 30.0


def test_stall_continues_through_pause_and_resume() -> None:
    s = play(
        ev("play_start", 0),
        ev("heartbeat", 10),
        ev("buffer_start", 20),
        ev("pause", 22),
        ev("resume", 30),
        ev("buffer_end", 33),
        ev("play_end", 40),
    )
    assert s.rebuffer_count == 1
    assert s.rebuffer_time_s == 5.0
    assert s.playing_time_s == 27.0


def test_seek_forward_and_back() -> None:
    s = play(
        ev("play_start", 0, position_s=0.0),
        ev("heartbeat", 100, position_s=100.0),
        ev("seek", 100, from_position_s=100.0, position_s=500.0),
        ev("heartbeat", 110),
        ev("seek", 110, from_position_s=510.0, position_s=50.0),
        ev("play_end", 130),
    )
    assert s.playing_time_s == 130.0  # the jumps are not time played
    assert s.content_time_s == 130.0
    assert s.furthest_position_s == 510.0  # back-seek does not lower it; 50 + 20 < 510


def test_seek_back_then_play_past_previous_furthest() -> None:
    s = play(
        ev("play_start", 0, position_s=0.0),
        ev("seek", 60, from_position_s=60.0, position_s=10.0),
        ev("play_end", 120),
    )
    assert s.furthest_position_s == 70.0
    assert s.playing_time_s == 120.0


def test_background_playback() -> None:
    s = play(
        ev("play_start", 0),
        ev("visibility_change", 60, context={"foreground": False}),
        ev("heartbeat", 90, context={"foreground": True}),
        ev("play_end", 100),
    )
    assert s.playing_time_foreground_s == 70.0
    assert s.playing_time_background_s == 30.0
    assert [(seg.playing_s, seg.foreground) for seg in s.segments] == [
        (60.0, True),
        (30.0, False),
        (10.0, True),
    ]


def test_background_from_the_start() -> None:
    s = play(ev("play_start", 0, context={"foreground": False}), ev("play_end", 40))
    assert s.playing_time_background_s == 40.0
    assert s.playing_time_foreground_s == 0.0


def test_chapters() -> None:
    s = play(
        ev("play_start", 0, content={"content_id": "c1", "chapter": 3}),
        ev("chapter_change", 60, content={"content_id": "c1", "chapter": 4}),
        ev("chapter_change", 90, content={"content_id": "c1", "chapter": 0}),
        ev("play_end", 100),
    )
    assert s.chapters_reached == (0, 3, 4)
    assert [(seg.chapter, seg.playing_s) for seg in s.segments] == [
        (3, 60.0),
        (4, 30.0),
        (0, 10.0),
    ]


def test_error_ends_and_resume_reopens() -> None:
    events = [ev("play_start", 0), ev("error", 40, error_code="E1")]
    s = play(*events)
    assert s.end_reason == "error"
    assert s.playing_time_s == 40.0
    s2 = play(*events, ev("resume", 50), ev("pause", 60))
    assert s2.end_reason is None
    assert s2.playing_time_s == 50.0


def test_events_before_play_start_and_lost_play_start() -> None:
    # No play_start: nothing counts until evidence (heartbeat) arrives.
    s = play(ev("buffer_start", 0), ev("buffer_end", 3), ev("heartbeat", 5), ev("pause", 15))
    assert s.playing_time_s == 10.0
    assert s.watch_time_s == 10.0
    assert s.startup_time_s == 0.0


# --- order, duplicates, keys, errors ------------------------------------------------------


def sample_play() -> list[PlaybackEvent]:
    return [
        ev("play_start", 0, position_s=0.0, context={"timezone": "Asia/Kolkata"}),
        ev("buffer_start", 0),
        ev("buffer_end", 1.5),
        ev("heartbeat", 30, position_s=28.5),
        ev("pause", 45),
        ev("resume", 45),
        ev("speed_change", 50, playback_rate=1.25),
        ev("visibility_change", 80, context={"foreground": False}),
        ev("buffer_start", 90),
        ev("buffer_end", 95),
        ev("seek", 100, from_position_s=110.0, position_s=20.0),
        ev("play_end", 130, reason="stopped"),
    ]


def test_out_of_order_gives_the_same_summary() -> None:
    events = sample_play()
    expected = summarize_play(events)
    assert summarize_play(list(reversed(events))) == expected
    rng = random.Random(7)
    for _ in range(20):
        shuffled = list(events)
        rng.shuffle(shuffled)
        assert summarize_play(shuffled) == expected


def test_duplicates_are_ignored() -> None:
    events = sample_play()
    expected = summarize_play(events)
    doubled = events + events[::2]
    assert summarize_play(doubled) == expected
    assert summarize_play(doubled).event_count == len(events)


def test_same_event_id_different_payload_is_resolved_independently_of_order() -> None:
    a = ev("pause", 20, event_id="dup")
    b = ev("pause", 25, event_id="dup")
    start, end = ev("play_start", 0), ev("play_end", 60)
    s1 = play(start, a, b, end)
    s2 = play(end, b, start, a)
    assert s1 == s2
    assert s1.playing_time_s == 20.0  # the earliest copy is kept
    assert [e.event_id for e in order_play_events([b, a])] == ["dup"]


def test_order_play_events_sorts_by_time_rank_and_id() -> None:
    e1, e2 = ev("heartbeat", 5, event_id="b"), ev("heartbeat", 5, event_id="a")
    end, start = ev("play_end", 5), ev("play_start", 5)
    assert order_play_events([end, e1, start, e2]) == [start, e2, e1, end]


def test_play_key() -> None:
    assert play_key(ev("heartbeat", 0)) == "p1"
    no_id = {"playback_id": None, "content": {"content_id": "c9"}}
    assert play_key(ev("heartbeat", 0, **no_id, context={"device_type": "tv"})) == "u1|c9|tv"
    assert play_key(ev("heartbeat", 0, **no_id, context={"platform": "ios"})) == "u1|c9|ios"
    assert play_key(ev("heartbeat", 0, **no_id)) == "u1|c9|"
    anon = ev("heartbeat", 0, **no_id, user_id=None, anonymous_id="anon7")
    assert play_key(anon) == "anon7|c9|"
    s = play(ev("play_start", 0, **no_id, context={"device_type": "car"}), ev("pause", 5, **no_id))
    assert s.play_key == "u1|c9|car"
    assert s.playback_id is None


def test_invalid_input() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        summarize_play([])
    with pytest.raises(ValueError, match="timezone-aware"):
        play(ev("play_start", 0), now_event_time=datetime(2026, 3, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="idle_timeout"):
        play(ev("play_start", 0), idle_timeout=timedelta(0))
    view = msgspec.convert(
        {
            "event_type": "product_view",
            "event_id": "v1",
            "occurred_at": T0.isoformat(),
            "user_id": "u1",
            "product_id": "x",
        },
        type=Event,
    )
    assert isinstance(view, ProductView)
    with pytest.raises(TypeError, match="playback event"):
        summarize_play([view])  # type: ignore[list-item]


def test_is_closed() -> None:
    open_play = play(ev("play_start", 0), ev("heartbeat", 10))
    last = open_play.ended_at
    assert not is_closed(open_play, last)
    assert not is_closed(open_play, last + IDLE_TIMEOUT)
    assert is_closed(open_play, last + IDLE_TIMEOUT + US)
    assert is_closed(open_play, last + timedelta(seconds=61), timedelta(minutes=1))
    ended = play(ev("play_start", 0), ev("play_end", 10))
    assert is_closed(ended, ended.ended_at)
    errored = play(ev("play_start", 0), ev("error", 10))
    assert is_closed(errored, errored.ended_at)
    with pytest.raises(ValueError, match="timezone-aware"):
        is_closed(ended, datetime(2026, 3, 1))  # noqa: DTZ001


# --- properties ---------------------------------------------------------------------------

ZONES = [None, "Europe/Berlin", "Asia/Kolkata", "America/St_Johns", "Australia/Lord_Howe"]
#: Gaps in microseconds, biased to exact edges: 0 (same instant), idle timeout +-1 us.
_IDLE_US = IDLE_TIMEOUT // US
GAPS_US = st.one_of(
    st.sampled_from([0, 1, 29_999_999, 30_000_000, _IDLE_US, _IDLE_US + 1]),
    st.integers(0, 20 * 60 * 10**6),
)
# Starts near interesting instants: UTC midnight, Berlin DST switches, Lord Howe DST.
STARTS = st.sampled_from(
    [
        datetime(2026, 3, 1, 23, 40, tzinfo=UTC),
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 0, 10, tzinfo=UTC),
        datetime(2026, 4, 4, 14, 30, tzinfo=UTC),
        datetime(2026, 1, 15, 18, 5, tzinfo=UTC),
    ]
)


#: A play_end's skip signal as importers carry it (properties), or none.
SIGNALS = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "skipped": st.booleans(),
            "reason_end": st.sampled_from(["fwdbtn", "backbtn", "trackdone", "endplay", ""]),
        },
    ).map(lambda props: {"properties": props} if props else {}),
)


@st.composite
def random_play(draw: st.DrawFn) -> list[PlaybackEvent]:
    """A random but valid play: any event types, gaps often at exact edges."""
    start = draw(STARTS)
    tz = draw(st.sampled_from(ZONES))
    n = draw(st.integers(1, 25))
    events: list[PlaybackEvent] = []
    t = start
    for i in range(n):
        if i:
            t += timedelta(microseconds=draw(GAPS_US))
        kind = (
            "play_start" if i == 0 and draw(st.booleans()) else draw(st.sampled_from(EVENT_ORDER))
        )
        fields: dict[str, Any] = {}
        if i == 0 and tz is not None:
            fields["context"] = {"timezone": tz}
        if kind == "seek":
            fields["from_position_s"] = draw(st.floats(0, 1200))
            fields["position_s"] = draw(st.floats(0, 1200))
        elif kind in ("bookmark",) or draw(st.integers(0, 3)) == 0:
            fields["position_s"] = draw(st.floats(0, 1200))
        if kind == "speed_change" or draw(st.integers(0, 9)) == 0:
            fields["playback_rate"] = draw(st.sampled_from([0.5, 1.0, 1.25, 2.0, 3.0]))
        if kind == "visibility_change" or draw(st.integers(0, 9)) == 0:
            ctx = dict(fields.get("context", {}))
            ctx["foreground"] = draw(st.booleans())
            fields["context"] = ctx
        if kind == "play_end":
            fields["reason"] = draw(st.sampled_from(["completed", "stopped", "next", "error"]))
            fields.update(draw(SIGNALS))
        if kind == "play_start" and draw(st.integers(0, 5)) == 0:
            fields["properties"] = {"scrobbled": draw(st.sampled_from([True, False, "yes"]))}
        if kind in ("play_start", "chapter_change"):
            fields["content"] = {
                "content_id": "c1",
                "duration_s": draw(st.sampled_from([30.0, 200.0, 600.0, 1000.0, 3600.0])),
                "chapter": draw(st.integers(0, 5)),
            }
        events.append(ev(kind, t, **fields))
    return events


def _exact_us(seconds: float) -> int:
    return round(seconds * 1_000_000)


@settings(max_examples=200, deadline=None)
@given(events=random_play())
def test_state_machine_invariants(events: list[PlaybackEvent]) -> None:
    s = summarize_play(events)
    elapsed = (s.ended_at - s.started_at).total_seconds()
    assert s.playing_time_s <= s.watch_time_s <= elapsed
    assert math.isclose(
        s.watch_time_s, s.playing_time_s + s.startup_time_s + s.rebuffer_time_s, abs_tol=1e-6
    )
    assert math.isclose(
        s.playing_time_foreground_s + s.playing_time_background_s, s.playing_time_s, abs_tol=1e-6
    )
    # Segments: exact cover of the playing time, in order, within the play, one hour each.
    seg_us = sum((seg.end - seg.start) // US for seg in s.segments)
    assert seg_us == _exact_us(s.playing_time_s)
    assert math.isclose(sum(seg.playing_s for seg in s.segments), s.playing_time_s, abs_tol=1e-6)
    assert math.isclose(
        sum(seg.content_s for seg in s.segments), s.content_time_s, rel_tol=1e-9, abs_tol=1e-6
    )
    previous_end = s.started_at
    for seg in s.segments:
        assert previous_end <= seg.start < seg.end <= s.ended_at
        previous_end = seg.end
        last = seg.end - US
        assert utc_hour_start(seg.start) == utc_hour_start(last)
        assert local_date(seg.start, s.timezone) == local_date(last, s.timezone)
        assert local_hour(seg.start, s.timezone) == local_hour(last, s.timezone)
    numbers = [
        s.playing_time_s,
        s.watch_time_s,
        s.content_time_s,
        s.playing_time_foreground_s,
        s.playing_time_background_s,
        s.startup_time_s,
        s.rebuffer_time_s,
        s.rebuffer_count,
        *([s.furthest_position_s] if s.furthest_position_s is not None else []),
    ]
    assert all(math.isfinite(x) and x >= 0 for x in numbers)
    assert s.is_stream == (s.playing_time_s >= 30)
    assert not (s.skipped and s.is_stream)
    assert list(s.chapters_reached) == sorted(set(s.chapters_reached))
    # The source's skip signal is the one of the play_end that ended the play.
    ordered = order_play_events(events)
    enders = [e for e in ordered if e.event_type in ("play_end", "error")]
    ended_by = enders[-1] if s.end_reason is not None else None
    if ended_by is None or not isinstance(ended_by, PlayEnd):
        assert s.skipped_by_source is None
    else:
        assert s.skipped_by_source == source_skip_signal(ended_by.properties)
    # Qualified listen: Last.fm's rule on the summary's own fields.
    scrobbled = any(
        e.event_type == "play_start" and (e.properties or {}).get("scrobbled") is True
        for e in ordered
    )
    d, played = s.duration_s, Fraction(_exact_us(s.playing_time_s), 10**6)
    if scrobbled:
        assert s.qualified_listen is True
    elif s.event_count == 1 or d is None:
        assert s.qualified_listen is None
    elif d <= 30:
        assert s.qualified_listen is False
    elif played >= min(Fraction(d) / 2, Fraction(240)):
        assert s.qualified_listen is True
    else:
        assert s.qualified_listen is (False if s.end_reason is not None else None)


@settings(max_examples=200, deadline=None)
@given(events=random_play(), data=st.data())
def test_order_and_duplicates_do_not_matter(
    events: list[PlaybackEvent], data: st.DataObject
) -> None:
    expected = summarize_play(events)
    permuted = data.draw(st.permutations(events))
    assert summarize_play(permuted) == expected
    extra = data.draw(st.lists(st.sampled_from(events), max_size=5))
    assert summarize_play(permuted + extra) == expected


@settings(max_examples=100, deadline=None)
@given(events=random_play(), rate=st.sampled_from([0.5, 2.0, 4.0]))
def test_constant_rate_scales_content_time(events: list[PlaybackEvent], rate: float) -> None:
    fixed = [msgspec.structs.replace(e, playback_rate=rate) for e in events]
    s = summarize_play(fixed)
    assert math.isclose(s.content_time_s, rate * s.playing_time_s, rel_tol=1e-12, abs_tol=1e-9)


# --- PlayBuilder: growing a play by later events ---------------------------------------


@settings(max_examples=300, deadline=None)
@given(events=random_play(), data=st.data())
def test_extending_a_builder_gives_what_building_from_all_events_gives(
    events: list[PlaybackEvent], data: st.DataObject
) -> None:
    # Events arrive in random pieces (as in micro-batches); a piece the builder cannot
    # take exactly is handled by building again from everything, as the processor does.
    arrival = data.draw(st.permutations(events)) if data.draw(st.booleans()) else events
    cuts = sorted(data.draw(st.lists(st.integers(1, len(events)), max_size=4)))
    pieces = [arrival[a:b] for a, b in itertools.pairwise([0, *cuts, len(events)]) if b > a]
    seen: list[PlaybackEvent] = []
    builder: PlayBuilder | None = None
    for piece in pieces:
        seen += piece
        if builder is not None and builder.can_extend(piece):
            builder.extend(piece)
        else:
            builder = PlayBuilder.of(seen)
        now = seen[-1].occurred_at + timedelta(minutes=data.draw(st.sampled_from([0, 31])))
        assert builder.summary(now) == summarize_play(seen, now_event_time=now)
        assert builder.event_count == len({e.event_id for e in seen})


def test_a_builder_extends_by_later_events_and_refuses_what_it_cannot_take_exactly() -> None:
    start = ev("play_start", 0, content={"content_id": "c1"})
    builder = PlayBuilder.of([start, ev("heartbeat", 10)])
    later = [ev("heartbeat", 30), ev("heartbeat", 20)]  # later than all, any order
    assert builder.can_extend(later)
    builder.extend(later)
    assert builder.summary().playing_time_s == 30.0
    assert not builder.can_extend([ev("heartbeat", 25)])  # earlier than the last event
    assert not builder.can_extend([later[0]])  # an event_id it has
    # The first duration_s, after playing time was counted without it, would change how
    # the playhead was capped: build again instead.
    assert not builder.can_extend(
        [ev("heartbeat", 40, content={"content_id": "c1", "duration_s": 5.0})]
    )
    with pytest.raises(ValueError, match="cannot extend"):
        builder.extend([ev("heartbeat", 25)])
    fresh = PlayBuilder.of([ev("play_start", 0, content={"content_id": "c1"})])
    assert fresh.can_extend([ev("heartbeat", 5, content={"content_id": "c1", "duration_s": 5.0})])


_seconds_floats = st.one_of(
    st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_subnormal=False),
    st.sampled_from([30.0, 30.000001, 60.0, 240.0, 480.0, 0.1, 0.95, 1e9]),
)


@given(_seconds_floats, _seconds_floats, st.integers(0, 10**15), st.booleans())
def test_completion_and_qualified_listen_are_exact_rational_comparisons(
    furthest: float, duration: float, playing_us: int, ended: bool
) -> None:
    """The integer comparisons equal the definitions in exact rationals (Fractions)."""
    from playpulse.processor import plays as p

    assert p._is_completed(furthest, duration) == (
        Fraction(furthest) >= p.COMPLETION_RATIO * Fraction(duration)
    )
    if duration <= 0:
        return
    expected: bool | None
    if Fraction(duration) * 1_000_000 <= p._QUALIFIED_MIN_US:
        expected = False
    elif playing_us >= min(
        Fraction(duration) * 1_000_000 * p.QUALIFIED_LISTEN_SHARE, p._QUALIFIED_PLAYED_US
    ):
        expected = True
    else:
        expected = False if ended else None
    assert p._qualified_listen(False, True, playing_us, duration, ended) == expected
    # Edge: exactly half the duration played (in us) qualifies when that is the minimum.
    half_us = Fraction(duration) * 1_000_000 / 2
    if half_us.denominator == 1 and half_us < p._QUALIFIED_PLAYED_US and expected is not False:
        assert p._qualified_listen(False, True, int(half_us), duration, ended) is True


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["play_start", "heartbeat", "pause", "resume", "seek", "play_end"]),
            st.integers(0, 6),  # seconds: few values, so instants repeat
            st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"]),  # ids repeat too
        ),
        min_size=1,
        max_size=12,
    )
)
def test_order_play_events_equals_its_definition(specs: list[tuple[str, int, str]]) -> None:
    """Whatever the ties and repeated ids: keep the smallest (occurred_at, rank, JSON)
    per id, sorted by (occurred_at, rank, event_id) (the slow definition, spelled out)."""
    from playpulse.events.codec import encode_event
    from playpulse.processor.plays import EVENT_ORDER

    events = [ev(kind, at, event_id=eid) for kind, at, eid in specs]
    rank = {kind: i for i, kind in enumerate(EVENT_ORDER)}

    def key(e: PlaybackEvent) -> tuple[datetime, int, str]:
        return (e.occurred_at, rank.get(e.event_type, len(EVENT_ORDER)), e.event_id)

    kept: dict[str, PlaybackEvent] = {}
    for e in events:
        old = kept.get(e.event_id)
        if old is None or (*key(e)[:2], encode_event(e)) < (*key(old)[:2], encode_event(old)):
            kept[e.event_id] = e
    assert order_play_events(events) == sorted(kept.values(), key=key)
    assert order_play_events(reversed(events)) == sorted(kept.values(), key=key)
