"""The time window of a catalog query: what was asked for, else where the data is.

A bound given in :class:`~playpulse.query.catalog.QueryParams` (``start``, ``end``) is
used as given. A bound left out covers the data (:func:`data_extent`): ``start`` is
midnight, in the query's ``tz``, of the day of the earliest play or shop event, ``end``
the midnight after the day of the newest one. So ``playpulse query overview`` on a
history that ended months ago shows that history, not the last weeks of wall-clock time.

Without data (an empty or missing data dir) a left-out ``end`` is one day after now and
a left-out ``start`` 31 days before ``end``: the query answers, with nothing in it. When a
left-out bound would not lie on its side of a given one (``start`` after all the data),
it is one day from the given bound. A default ``start`` is never before
:data:`EARLIEST_DEFAULT`.

A bound given as text (``playpulse query --from/--to``, the API's ``from``/``to``) is
read in the query's zone (:func:`read_bound`): ``--from 2024-01-01 --tz Europe/Berlin``
is Berlin's midnight; an explicit offset or ``Z`` in the value wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from playpulse.config import Settings
from playpulse.query.catalog import QueryError, QueryParams

#: Where a bound of a :class:`QueryWindow` comes from: ``request`` (given), ``data``
#: (the data's first or last day), ``default`` (no data, or the data on the wrong side
#: of the given bound).
BoundSource = Literal["request", "data", "default"]

#: Length of the window without data, ending one day after now (the former default).
EMPTY_DEFAULT_DAYS = 31
#: A default ``start`` is never earlier (UTC).
EARLIEST_DEFAULT = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DataExtent:
    """The instants (UTC) of the earliest and the newest play or shop event that the
    metrics count (late events are left out, as the metrics leave them out): ``first``
    is the earliest play start or shop event, ``last`` the latest end of playing time,
    play start or shop event."""

    first: datetime
    last: datetime


@dataclass(frozen=True)
class QueryWindow:
    """A resolved window ``[start, end)`` (UTC-aware), where each bound came from, and
    the data's extent (``None`` when there is no data)."""

    start: datetime
    end: datetime
    start_source: BoundSource
    end_source: BoundSource
    data: DataExtent | None

    @property
    def bounds(self) -> tuple[datetime, datetime]:
        """``(start, end)``."""
        return self.start, self.end

    def params(self, params: QueryParams) -> QueryParams:
        """``params`` with this window's bounds filled in."""
        return params.model_copy(update={"start": self.start, "end": self.end})

    def as_json(self) -> dict[str, Any]:
        """``{"from", "to", "from_source", "to_source", "data_first", "data_last"}``:
        times as ISO 8601 in UTC ending in ``Z`` (``data_*`` null without data)."""
        return {
            "from": iso(self.start),
            "to": iso(self.end),
            "from_source": self.start_source,
            "to_source": self.end_source,
            "data_first": None if self.data is None else iso(self.data.first),
            "data_last": None if self.data is None else iso(self.data.last),
        }

    def describe(self, tz: str = "UTC") -> str:
        """One line for people, the bounds in the IANA zone ``tz`` (the query's):
        ``2014-05-25 UTC to 2021-09-23 UTC (covering the data; end exclusive)``; a bound
        at a midnight of ``tz`` is its date and the zone's name (``2024-01-01
        Europe/Berlin``), another its local ISO time with offset. Raises
        :class:`QueryError` for an unknown zone."""
        zone = _zone(tz)
        how = {
            ("data", "data"): "covering the data",
            ("request", "request"): "as requested",
            ("default", "default"): f"no data: the {EMPTY_DEFAULT_DAYS} days to a day from now",
        }.get((self.start_source, self.end_source))
        if how is None:
            parts = {"request": "as requested", "data": "the data's", "default": "default"}
            how = f"from {parts[self.start_source]}, to {parts[self.end_source]}"
        start, end = _short(self.start, zone), _short(self.end, zone)
        return f"{start} to {end} ({how}; end exclusive)"


def iso(moment: datetime) -> str:
    """``moment`` in UTC as ISO 8601 ending in ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise QueryError(f"'{tz}' is not an IANA time zone such as 'Europe/Berlin'") from None


def _short(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    if local.time() == time():
        return f"{local.date().isoformat()} {zone.key}"
    return local.isoformat().replace("+00:00", "Z")


def read_bound(text: str, tz: str) -> datetime:
    """A range bound given as text, as an aware datetime: a date (``2024-01-01``) is
    midnight in the IANA zone ``tz``; an ISO 8601 time without offset
    (``2024-01-01T08:00``) is that wall-clock time in ``tz``; a time with an offset or
    ``Z`` is that instant whatever ``tz`` is (``tz`` then only buckets days and hours).
    ``t`` and ``z`` may be lower case, as RFC 3339 allows. The result carries the
    value's own offset, or ``tz``; at a wall-clock time that a daylight-saving change
    skips or repeats, the offset in force before the change. Used by ``playpulse query``
    and the read API alike.

    Raises :class:`QueryError` naming ``text`` when it is not a date or an ISO time, and
    for an unknown ``tz``.
    """
    zone = _zone(tz)
    try:
        # Python's ISO parser wants "T" and "Z"; RFC 3339 allows "t" and "z".
        moment = datetime.fromisoformat(text.strip().upper())
    except ValueError:
        raise QueryError(
            f"'{text}' is not a date (2026-11-01) or an ISO time (2026-11-01T08:00:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def data_extent(settings: Settings) -> DataExtent | None:
    """The extent of the data in ``settings.data_dir`` (the lake and the plays still
    open in the real-time store), or ``None`` when it holds no play or shop event. A
    min/max over the process's in-memory tables (:func:`~playpulse.query.engine.
    shared_cache`), which the next query of the process reuses."""
    from playpulse.query.engine import shared_cache

    bounds = shared_cache(settings).extent_us()
    if bounds is None:
        return None
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first, last = (epoch + timedelta(microseconds=us) for us in bounds)
    return DataExtent(first, last)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), zone).astimezone(UTC)


def resolve_window(
    params: QueryParams, settings: Settings, now: datetime | None = None
) -> QueryWindow:
    """The window of ``params`` on ``settings``' data (rules in the module docstring).

    Reads the data's extent only when a bound is left out. ``now`` (UTC-aware) replaces
    the clock of the no-data default. Raises :class:`QueryError` when both bounds are
    given and ``start`` is not before ``end``.
    """
    start, end = params.start, params.end
    if start is not None and end is not None:
        if start >= end:
            raise QueryError(f"start {start.isoformat()} is not before end {end.isoformat()}")
        return QueryWindow(start, end, "request", "request", None)
    zone = ZoneInfo(params.tz)
    extent = data_extent(settings)
    start_source: BoundSource = "request"
    end_source: BoundSource = "request"
    if end is None:
        if extent is not None:
            end = _midnight(extent.last.astimezone(zone).date() + timedelta(days=1), zone)
            end_source = "data"
        else:
            end = (now or datetime.now(UTC)) + timedelta(days=1)
            end_source = "default"
        if start is not None and end <= start:
            end, end_source = start + timedelta(days=1), "default"
    if start is None:
        if extent is not None:
            start = _midnight(extent.first.astimezone(zone).date(), zone)
            start_source = "data"
        else:
            start = end - timedelta(days=EMPTY_DEFAULT_DAYS)
            start_source = "default"
        if start >= end:
            start, start_source = end - timedelta(days=1), "default"
        if start < EARLIEST_DEFAULT:
            start, start_source = EARLIEST_DEFAULT, "default"
        if start >= end:
            raise QueryError(
                f"end {end.isoformat()} leaves no room for a default start: give a start"
            )
    return QueryWindow(start, end, start_source, end_source, extent)
