"""Tests for listening sessions: the 30-minute gap edge, the 24 h cap, and the streaming
form agreeing with the batch form.

Edge convention under test: a gap of at most 30 minutes (29:59.999 and exactly 30:00)
continues a session; 30:00.001 (or even one microsecond more than 30:00) starts a new
one. An event exactly 24 h after a session's first event starts a new session.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playpulse.processor.sessions import (
    SESSION_GAP,
    SESSION_MAX_LENGTH,
    Session,
    SessionState,
    extend_sessions_us,
    sessionize,
    sessionize_us,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
MS = timedelta(milliseconds=1)


def test_defaults_are_30_minutes_and_24_hours() -> None:
    assert timedelta(minutes=30) == SESSION_GAP
    assert timedelta(hours=24) == SESSION_MAX_LENGTH


@pytest.mark.parametrize(
    ("gap", "sessions"),
    [
        (timedelta(minutes=29, seconds=59, milliseconds=999), 1),
        (timedelta(minutes=30), 1),
        (timedelta(minutes=30) + US, 2),
        (timedelta(minutes=30, milliseconds=1), 2),
    ],
)
def test_gap_edge(gap: timedelta, sessions: int) -> None:
    result = sessionize([T0, T0 + gap])
    assert len(result) == sessions
    if sessions == 1:
        assert result == [Session(T0, T0 + gap, 2)]
    else:
        assert result == [Session(T0, T0, 1), Session(T0 + gap, T0 + gap, 1)]


def test_gap_is_measured_from_the_last_event_not_the_first() -> None:
    times = [T0 + timedelta(minutes=25 * i) for i in range(10)]
    assert sessionize(times) == [Session(times[0], times[-1], 10)]


def test_empty_and_single() -> None:
    assert sessionize([]) == []
    only = sessionize([T0])
    assert only == [Session(T0, T0, 1)]
    assert only[0].duration == timedelta(0)


def test_out_of_order_and_repeated_times() -> None:
    times = [T0 + timedelta(minutes=m) for m in (50, 0, 10, 10, 100, 35)]
    assert sessionize(times) == [
        Session(T0, T0 + timedelta(minutes=50), 5),
        Session(T0 + timedelta(minutes=100), T0 + timedelta(minutes=100), 1),
    ]


def test_non_utc_aware_times_are_normalized() -> None:
    from datetime import timezone

    plus2 = timezone(timedelta(hours=2))
    t = datetime(2026, 3, 1, 14, 0, tzinfo=plus2)  # == T0
    result = sessionize([t, T0 + timedelta(minutes=1)])
    assert result == [Session(T0, T0 + timedelta(minutes=1), 2)]
    assert result[0].start.utcoffset() == timedelta(0)


def test_cap_at_max_length() -> None:
    # An event every 20 minutes for 26 hours: continuous activity.
    times = [T0 + timedelta(minutes=20 * i) for i in range(26 * 3 + 1)]
    result = sessionize(times)
    # The event at exactly T0 + 24 h starts the second session.
    assert result[0] == Session(T0, T0 + timedelta(hours=24) - timedelta(minutes=20), 72)
    assert result[1].start == T0 + timedelta(hours=24)
    assert sum(s.event_count for s in result) == len(times)


@pytest.mark.parametrize(
    ("offset", "sessions"),
    [(timedelta(hours=24) - US, 1), (timedelta(hours=24), 2)],
)
def test_cap_edge(offset: timedelta, sessions: int) -> None:
    # Events every 29 minutes so the gap never splits; the last one at T0 + offset.
    times = [T0 + timedelta(minutes=29 * i) for i in range(50)]
    times = [t for t in times if t < T0 + offset] + [T0 + offset]
    assert len(sessionize(times)) == sessions


def test_shorter_cap_and_gap_parameters() -> None:
    times = [T0 + timedelta(minutes=m) for m in (0, 4, 8, 12, 30)]
    result = sessionize(times, gap=timedelta(minutes=5), max_length=timedelta(minutes=10))
    assert result == [
        Session(T0, T0 + timedelta(minutes=8), 3),
        Session(T0 + timedelta(minutes=12), T0 + timedelta(minutes=12), 1),
        Session(T0 + timedelta(minutes=30), T0 + timedelta(minutes=30), 1),
    ]


def test_invalid_input() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sessionize([datetime(2026, 1, 1)])  # noqa: DTZ001 - deliberately naive
    with pytest.raises(ValueError, match="gap"):
        sessionize([T0], gap=timedelta(0))
    with pytest.raises(ValueError, match="max_length"):
        SessionState(max_length=timedelta(seconds=-1))
    state = SessionState()
    with pytest.raises(ValueError, match="timezone-aware"):
        state.add(datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        state.close_before(datetime(2026, 1, 1))  # noqa: DTZ001


def test_state_add_returns_the_session_it_closes() -> None:
    state = SessionState()
    assert state.add(T0) == []
    assert state.add(T0 + timedelta(minutes=30)) == []
    assert state.open_session == Session(T0, T0 + timedelta(minutes=30), 2)
    closed = state.add(T0 + timedelta(minutes=60) + MS)
    assert closed == [Session(T0, T0 + timedelta(minutes=30), 2)]
    assert state.flush() == [
        Session(T0 + timedelta(minutes=60) + MS, T0 + timedelta(minutes=60) + MS, 1)
    ]
    assert state.flush() == []
    assert state.open_session is None


def test_close_before_gap_edge() -> None:
    state = SessionState()
    state.add(T0)
    # A future event at exactly T0 + 30 min could still join: stays open.
    assert state.close_before(T0 + timedelta(minutes=30)) == []
    assert state.open_session is not None
    assert state.close_before(T0 + timedelta(minutes=30) + US) == [Session(T0, T0, 1)]
    assert state.open_session is None
    assert state.close_before(T0 + timedelta(hours=5)) == []


def test_close_before_cap_edge() -> None:
    state = SessionState()
    for i in range(50):  # every 29 minutes: the gap never closes it; last at 23:41
        assert state.add(T0 + timedelta(minutes=29 * i)) == []
    # Within the gap of the last event, but the cap forbids any later event joining.
    assert state.close_before(T0 + timedelta(hours=24) - US) == []
    closed = state.close_before(T0 + timedelta(hours=24))
    assert len(closed) == 1
    assert closed[0].start == T0


def test_state_absorbs_late_event_inside_open_session_and_rejects_earlier() -> None:
    state = SessionState()
    state.add(T0)
    state.add(T0 + timedelta(minutes=20))
    assert state.add(T0 + timedelta(minutes=5)) == []
    assert state.open_session == Session(T0, T0 + timedelta(minutes=20), 3)
    with pytest.raises(ValueError, match="before the open session"):
        state.add(T0 - US)


# --- properties -------------------------------------------------------------------------

offsets_ms = st.lists(st.integers(min_value=0, max_value=3 * 3600 * 1000), max_size=40)
special_gaps = st.sampled_from(
    [0, 1, 29 * 60_000 + 59_999, 30 * 60_000, 30 * 60_000 + 1, 31 * 60_000, 4 * 3600_000]
)


@st.composite
def increasing_times(draw: st.DrawFn) -> list[datetime]:
    """In-order times whose gaps often hit the exact 30-minute edge."""
    deltas = draw(st.lists(st.one_of(special_gaps, st.integers(0, 3600_000)), max_size=60))
    times, t = [], T0
    for d in deltas:
        t = t + timedelta(milliseconds=d)
        times.append(t)
    return times


@settings(max_examples=200, deadline=None)
@given(
    times=increasing_times(),
    watermark_fracs=st.lists(st.floats(0, 1), max_size=60),
    max_hours=st.sampled_from([1, 2, 24]),
)
def test_incremental_equals_batch_for_in_order_input(
    times: list[datetime], watermark_fracs: list[float], max_hours: int
) -> None:
    max_length = timedelta(hours=max_hours)
    state = SessionState(max_length=max_length)
    emitted: list[Session] = []
    for i, t in enumerate(times):
        # A watermark may be advanced before each event, up to that event's time.
        if i < len(watermark_fracs) and i > 0:
            prev = times[i - 1]
            w = prev + (t - prev) * watermark_fracs[i]
            emitted += state.close_before(min(w, t))
        emitted += state.add(t)
    emitted += state.flush()
    assert emitted == sessionize(times, max_length=max_length)


@settings(max_examples=200, deadline=None)
@given(offsets=offsets_ms, seed=st.integers(0, 2**32 - 1))
def test_batch_is_order_independent_and_well_formed(offsets: list[int], seed: int) -> None:
    times = [T0 + timedelta(milliseconds=o) for o in offsets]
    shuffled = list(times)
    random.Random(seed).shuffle(shuffled)
    result = sessionize(times)
    assert result == sessionize(shuffled)
    assert sum(s.event_count for s in result) == len(times)
    for s in result:
        assert s.start <= s.end < s.start + SESSION_MAX_LENGTH
        assert s.event_count >= 1
    for a, b in itertools.pairwise(result):
        assert b.start - a.end > SESSION_GAP or b.start - a.start >= SESSION_MAX_LENGTH


@settings(max_examples=300, deadline=None)
@given(
    times=increasing_times(),
    cuts=st.lists(st.integers(0, 60), max_size=4),
    max_hours=st.sampled_from([1, 2, 24]),
)
def test_extending_sessions_by_later_times_equals_sessionizing_all(
    times: list[datetime], cuts: list[int], max_hours: int
) -> None:
    us = [(t - T0) // US for t in times]
    gap_us, max_us = SESSION_GAP // US, timedelta(hours=max_hours) // US
    sessions: list[tuple[int, int, int]] = []
    bounds = [0, *sorted(c for c in cuts if c <= len(us)), len(us)]
    for a, b in itertools.pairwise(bounds):
        sessions = extend_sessions_us(sessions, us[a:b], gap_us, max_us)
        assert sessions == sessionize_us(us[:b], gap_us, max_us)


def test_extending_sessions_refuses_a_time_before_the_last_end() -> None:
    sessions = sessionize_us([0, 10, 20], 30, 1_000)
    assert extend_sessions_us(sessions, [20, 60], 30, 1_000) == [(0, 20, 4), (60, 60, 1)]
    with pytest.raises(ValueError, match="before the last session's end"):
        extend_sessions_us(sessions, [19], 30, 1_000)
