"""Bucket keys for an instant: UTC and local date, hour and day of week.

Every aggregate by event time (per day, per hour, hour-of-day x day-of-week) needs the
same few keys, computed the same way everywhere. The helpers here are pure: they take a
UTC-aware ``datetime`` (naive input raises ``ValueError``) and, for local keys, an IANA
time zone name (``"Europe/Berlin"``) or a :class:`~zoneinfo.ZoneInfo`.

Conventions:

- Dates are ISO 8601 strings ``YYYY-MM-DD``; hours are integers 0-23; ``day_of_week`` is
  0 for Monday through 6 for Sunday (``datetime.weekday``).
- ``tz=None`` means "no local zone is known" and falls back to UTC, so a listener without
  ``context.timezone`` still lands in a (UTC) local bucket.
- Local keys are DST-safe: they are computed by converting the instant with
  :mod:`zoneinfo`, never by adding a fixed offset. During the repeated hour when clocks
  go back, both real hours map to the same local hour key (e.g. 02:00-02:59 occurs twice
  in Europe/Berlin on the last Sunday of October); during the skipped hour in spring no
  instant maps to it.
- An *hour boundary* is an instant where the UTC hour or the local hour (in ``tz``)
  changes; local boundaries include the instants of UTC-offset changes. Zones with
  offsets that are not whole hours (Asia/Kolkata +05:30, Asia/Kathmandu +05:45,
  America/St_Johns -03:30) therefore have two boundaries per UTC hour.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "TzLike",
    "day_of_week",
    "local_date",
    "local_hour",
    "next_hour_boundary",
    "split_at_hour_boundaries",
    "utc_date",
    "utc_hour",
    "utc_hour_start",
    "zone",
]

#: A time zone argument: an IANA name, a ZoneInfo, or None for "unknown, use UTC".
TzLike = str | ZoneInfo | None

_HOUR = timedelta(hours=1)
_TICK = timedelta(microseconds=1)
_UTC_ZONE = ZoneInfo("UTC")


def _require_aware(t: datetime, name: str = "t") -> datetime:
    """Return ``t`` in UTC; raise ``ValueError`` if it is naive."""
    if t.tzinfo is UTC:  # the common case (decoded events are UTC): nothing to convert
        return t
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (UTC), got naive {t!r}")
    return t.astimezone(UTC)


@lru_cache(maxsize=1024)
def _zone_by_name(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"'{name}' is not an IANA time zone name such as 'Europe/Berlin'") from exc


def zone(tz: TzLike) -> ZoneInfo:
    """The :class:`ZoneInfo` for ``tz``: an IANA name, a ZoneInfo, or None (UTC).

    Raises ``ValueError`` for a name the machine's tz database does not know.
    """
    if tz is None:
        return _UTC_ZONE
    if isinstance(tz, ZoneInfo):
        return tz
    return _zone_by_name(tz)


def utc_date(t: datetime) -> str:
    """The UTC calendar date of instant ``t`` as ``YYYY-MM-DD``."""
    return _require_aware(t).date().isoformat()


def utc_hour(t: datetime) -> int:
    """The UTC hour of day of instant ``t``, 0-23."""
    return _require_aware(t).hour


def utc_hour_start(t: datetime) -> datetime:
    """The start of the UTC hour containing ``t`` (a UTC-aware datetime).

    This is the key of an hourly time series: ``utc_hour_start(t) <= t <
    utc_hour_start(t) + 1 h``.
    """
    return _require_aware(t).replace(minute=0, second=0, microsecond=0)


def local_date(t: datetime, tz: TzLike) -> str:
    """The calendar date of instant ``t`` on a wall clock in ``tz``, as ``YYYY-MM-DD``."""
    return _require_aware(t).astimezone(zone(tz)).date().isoformat()


def local_hour(t: datetime, tz: TzLike) -> int:
    """The hour of day (0-23) of instant ``t`` on a wall clock in ``tz``."""
    return _require_aware(t).astimezone(zone(tz)).hour


def day_of_week(t: datetime, tz: TzLike) -> int:
    """The local day of week of instant ``t`` in ``tz``: 0 = Monday ... 6 = Sunday."""
    return _require_aware(t).astimezone(zone(tz)).weekday()


def _offset(t: datetime, z: ZoneInfo) -> timedelta:
    off = t.astimezone(z).utcoffset()
    assert off is not None  # ZoneInfo always has an offset for an aware instant
    return off


def next_hour_boundary(t: datetime, tz: TzLike) -> datetime:
    """The first instant strictly after ``t`` where the UTC hour or the local hour changes.

    The local hour (in ``tz``; None means UTC only) changes where the local wall clock
    reaches a whole hour or where the zone's UTC offset changes (a DST switch, which may
    happen at a half hour, e.g. Australia/Lord_Howe). The result is UTC-aware and at most
    one hour after ``t``; the half-open interval ``[t, result)`` lies within one UTC hour
    and one local hour.
    """
    t = _require_aware(t)
    z = zone(tz)
    boundary = utc_hour_start(t) + _HOUR
    off = _offset(t, z)
    # With the offset constant, the local wall clock reads ``t + off``; its next whole
    # hour, mapped back to UTC.
    wall = (t + off).replace(tzinfo=None)
    next_wall = wall.replace(minute=0, second=0, microsecond=0) + _HOUR
    local_boundary = next_wall.replace(tzinfo=UTC) - off
    boundary = min(boundary, local_boundary)
    # An offset change before ``boundary`` is a boundary too: find its instant (to the
    # microsecond) by bisection. Offsets change at most once per hour in practice.
    if _offset(boundary - _TICK, z) != off:
        lo, hi = t, boundary - _TICK  # offset(lo) == off, offset(hi) != off
        while hi - lo > _TICK:
            mid = lo + (hi - lo) / 2  # timedelta division rounds to whole microseconds
            if _offset(mid, z) == off:
                lo = mid
            else:
                hi = mid
        boundary = hi
    return boundary


def split_at_hour_boundaries(
    start: datetime, end: datetime, tz: TzLike
) -> list[tuple[datetime, datetime]]:
    """Split ``[start, end)`` into pieces that each lie within one UTC and one local hour.

    Returns consecutive half-open ``(piece_start, piece_end)`` pairs (UTC-aware) that
    cover ``[start, end)`` exactly, split at every :func:`next_hour_boundary`. An empty
    interval (``start == end``) gives ``[]``; ``end < start`` raises ``ValueError``.
    """
    start = _require_aware(start, "start")
    end = _require_aware(end, "end")
    if end < start:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    pieces: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        boundary = min(next_hour_boundary(cursor, tz), end)
        pieces.append((cursor, boundary))
        cursor = boundary
    return pieces
