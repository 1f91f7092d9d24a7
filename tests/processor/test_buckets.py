"""Tests for the bucket-key helpers: UTC/local date, hour, weekday and hour boundaries.

Each example pins one convention at an exact edge (midnight, DST switch, half-hour
zones); the property test checks that splitting at hour boundaries covers an interval
exactly with pieces that each lie in one UTC hour and one local hour.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playpulse.processor.buckets import (
    day_of_week,
    local_date,
    local_hour,
    next_hour_boundary,
    split_at_hour_boundaries,
    utc_date,
    utc_hour,
    utc_hour_start,
    zone,
)

US = timedelta(microseconds=1)
ZONES = [
    None,
    "UTC",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
]


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def local_key(t: datetime, tz: str | None) -> tuple[str, int]:
    return (local_date(t, tz), local_hour(t, tz))


def test_utc_keys() -> None:
    t = at(2026, 3, 1, 23, 59, 59)
    assert utc_date(t) == "2026-03-01"
    assert utc_hour(t) == 23
    assert utc_hour_start(t) == at(2026, 3, 1, 23)
    assert utc_date(t + timedelta(seconds=1)) == "2026-03-02"
    assert utc_hour(t + timedelta(seconds=1)) == 0


def test_non_utc_aware_input_is_converted_to_utc() -> None:
    t = datetime(2026, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert utc_date(t) == "2026-03-01"
    assert utc_hour(t) == 22
    assert utc_hour_start(t) == at(2026, 3, 1, 22)


def test_local_date_differs_from_utc_date_near_midnight() -> None:
    # 23:30 UTC on 2026-01-15 is 00:30 on 2026-01-16 in Berlin (UTC+1 in winter).
    t = at(2026, 1, 15, 23, 30)
    assert utc_date(t) == "2026-01-15"
    assert local_date(t, "Europe/Berlin") == "2026-01-16"
    assert local_hour(t, "Europe/Berlin") == 0
    # 18:29:59.999999 UTC is 23:59:59.999999 in Kolkata (+05:30); 18:30 is midnight.
    assert local_key(at(2026, 1, 15, 18, 30) - US, "Asia/Kolkata") == ("2026-01-15", 23)
    assert local_key(at(2026, 1, 15, 18, 30), "Asia/Kolkata") == ("2026-01-16", 0)


def test_day_of_week_is_local_and_monday_is_zero() -> None:
    # 2026-01-01 is a Thursday; 2026-01-05 a Monday.
    assert day_of_week(at(2026, 1, 1, 12), "UTC") == 3
    assert day_of_week(at(2026, 1, 5, 0), None) == 0
    # Sunday 23:30 UTC is already Monday 00:30 in Berlin.
    assert day_of_week(at(2026, 1, 4, 23, 30), None) == 6
    assert day_of_week(at(2026, 1, 4, 23, 30), "Europe/Berlin") == 0


def test_none_zone_means_utc() -> None:
    t = at(2026, 7, 1, 22, 15)
    assert local_date(t, None) == utc_date(t)
    assert local_hour(t, None) == utc_hour(t)
    assert zone(None) == ZoneInfo("UTC")
    assert zone(ZoneInfo("Asia/Kolkata")) == ZoneInfo("Asia/Kolkata")


def test_dst_spring_forward_berlin() -> None:
    # 2026-03-29: 01:00 UTC is 02:00 CET -> 03:00 CEST; local hour 2 never happens.
    assert local_key(at(2026, 3, 29, 1) - US, "Europe/Berlin") == ("2026-03-29", 1)
    assert local_key(at(2026, 3, 29, 1), "Europe/Berlin") == ("2026-03-29", 3)


def test_dst_fall_back_berlin_repeats_the_local_hour() -> None:
    # 2026-10-25: local 02:00-02:59 happens twice (CEST, then CET).
    assert local_key(at(2026, 10, 25, 0, 30), "Europe/Berlin") == ("2026-10-25", 2)
    assert local_key(at(2026, 10, 25, 1, 30), "Europe/Berlin") == ("2026-10-25", 2)


def test_naive_input_raises() -> None:
    naive = datetime(2026, 1, 1, 12)  # noqa: DTZ001 - deliberately naive
    for fn in (utc_date, utc_hour, utc_hour_start):
        with pytest.raises(ValueError, match="timezone-aware"):
            fn(naive)
    for fn2 in (local_date, local_hour, day_of_week, next_hour_boundary):
        with pytest.raises(ValueError, match="timezone-aware"):
            fn2(naive, "UTC")
    with pytest.raises(ValueError, match="timezone-aware"):
        split_at_hour_boundaries(naive, at(2026, 1, 1, 13), None)


def test_unknown_zone_raises_value_error() -> None:
    with pytest.raises(ValueError, match="IANA"):
        local_date(at(2026, 1, 1), "Mars/Olympus_Mons")


@pytest.mark.parametrize(
    ("tz", "t", "expected"),
    [
        (None, at(2026, 1, 1, 10, 0), at(2026, 1, 1, 11, 0)),
        (None, at(2026, 1, 1, 10, 59, 59, 999999), at(2026, 1, 1, 11, 0)),
        ("Europe/Berlin", at(2026, 1, 1, 10, 20), at(2026, 1, 1, 11, 0)),
        ("Asia/Kolkata", at(2026, 1, 15, 18, 10), at(2026, 1, 15, 18, 30)),
        ("Asia/Kolkata", at(2026, 1, 15, 18, 30), at(2026, 1, 15, 19, 0)),
        ("Asia/Kathmandu", at(2026, 1, 15, 18, 0), at(2026, 1, 15, 18, 15)),
        ("America/St_Johns", at(2026, 1, 15, 3, 0), at(2026, 1, 15, 3, 30)),
        # Lord Howe's DST ends at 02:00 +11 (15:00 UTC) -> 01:30 +10:30: a UTC boundary;
        # then the local 02:00 +10:30 is 15:30 UTC.
        ("Australia/Lord_Howe", at(2026, 4, 4, 14, 40), at(2026, 4, 4, 15, 0)),
        ("Australia/Lord_Howe", at(2026, 4, 4, 15, 0), at(2026, 4, 4, 15, 30)),
        # Its DST starts at 02:00 +10:30 (15:30 UTC) -> 02:30 +11: the offset change is
        # itself a local boundary (hour 1 -> hour 2).
        ("Australia/Lord_Howe", at(2025, 10, 4, 15, 10), at(2025, 10, 4, 15, 30)),
        ("Australia/Lord_Howe", at(2025, 10, 4, 15, 30), at(2025, 10, 4, 16, 0)),
    ],
)
def test_next_hour_boundary(tz: str | None, t: datetime, expected: datetime) -> None:
    assert next_hour_boundary(t, tz) == expected


def test_split_kolkata_every_half_hour() -> None:
    pieces = split_at_hour_boundaries(at(2026, 1, 15, 18), at(2026, 1, 15, 20), "Asia/Kolkata")
    starts = [p[0] for p in pieces]
    assert starts == [
        at(2026, 1, 15, 18),
        at(2026, 1, 15, 18, 30),
        at(2026, 1, 15, 19),
        at(2026, 1, 15, 19, 30),
    ]
    assert pieces[-1][1] == at(2026, 1, 15, 20)


def test_split_empty_and_reversed() -> None:
    t = at(2026, 1, 1, 10, 30)
    assert split_at_hour_boundaries(t, t, "Europe/Berlin") == []
    with pytest.raises(ValueError, match="before start"):
        split_at_hour_boundaries(t, t - US, None)


instants = st.datetimes(
    min_value=datetime(2020, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2035, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@settings(max_examples=200, deadline=None)
@given(
    start=instants,
    length=st.integers(min_value=0, max_value=6 * 3600 * 10**6),
    tz=st.sampled_from(ZONES),
)
def test_split_covers_exactly_within_single_hours(
    start: datetime, length: int, tz: str | None
) -> None:
    end = start + timedelta(microseconds=length)
    pieces = split_at_hour_boundaries(start, end, tz)
    if length == 0:
        assert pieces == []
        return
    assert pieces[0][0] == start
    assert pieces[-1][1] == end
    for (_, a_end), (b_start, _) in itertools.pairwise(pieces):
        assert a_end == b_start
    for piece_start, piece_end in pieces:
        assert piece_start < piece_end <= piece_start + timedelta(hours=1)
        last = piece_end - US
        assert utc_hour_start(piece_start) == utc_hour_start(last)
        assert local_key(piece_start, tz) == local_key(last, tz)
    # Every inner split point is a real boundary: the UTC or the local hour changes there.
    for _, piece_end in pieces[:-1]:
        before = piece_end - US
        utc_changes = utc_hour_start(before) != utc_hour_start(piece_end)
        local_changes = local_key(before, tz) != local_key(piece_end, tz)
        z = zone(tz)
        offset_changes = before.astimezone(z).utcoffset() != piece_end.astimezone(z).utcoffset()
        assert utc_changes or local_changes or offset_changes
