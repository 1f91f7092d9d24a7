"""The metric catalog: named, parameterized queries over the ``events``, ``plays`` and
``sessions`` views (see :mod:`playpulse.query.engine`).

Names and columns are public interface (CLI, Python, REST, dashboard). ``listening_s``
is playing time (docs/metrics.md): the playing segments that fall in the time range,
so a play across the range's edge counts only its part inside. ``plays`` count the
plays that *started* in the range. Rates are shares of those plays (0 to 1) that can tell
(``*_rate_plays`` says how many); what no play of a row can tell is null, never 0
(docs/metrics.md, "What each source can tell").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from playpulse.config import Settings
from playpulse.errors import ConfigError, PlaypulseError
from playpulse.events.model import iana_zones
from playpulse.query.rounding import round_seconds


class QueryError(PlaypulseError):
    """A query name or parameter is wrong (the message says which and why)."""


class QueryParams(BaseModel):
    """Parameters every catalog query accepts (unused ones are ignored).

    ``start``/``end``: UTC-aware time range ``[start, end)``; a bound left out covers the
    data (:func:`playpulse.query.window.resolve_window`).
    ``tz``: IANA time zone for day and hour buckets (default UTC). Filters:
    ``content_id``, ``creator``, ``content_type``, ``vendor_id``; and the listener
    (``user_id``), ``device_type`` and ``platform`` (``unknown`` selects the plays whose
    events do not say) and ``country`` of the plays (docs/metrics.md, "Filters").
    ``limit``: rows for ranked queries.
    """

    model_config = ConfigDict(extra="forbid")

    start: datetime | None = None
    end: datetime | None = None
    tz: str = "UTC"
    content_id: str | None = None
    creator: str | None = None
    content_type: str | None = None
    vendor_id: str | None = None
    user_id: str | None = None
    device_type: str | None = None
    platform: str | None = None
    country: str | None = None
    limit: int = Field(10, ge=1, le=10_000)

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone, such as 2026-11-01T00:00:00Z")
        return value.astimezone(UTC) if value else None

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value not in iana_zones():
            raise ValueError(f"'{value}' is not an IANA time zone such as 'Europe/Berlin'")
        return value

    def window(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """``[start, end)`` in UTC with the no-data defaults (end one day after ``now``,
        start 31 days before end); queries use
        :func:`playpulse.query.window.resolve_window`, which covers the data."""
        end = self.end or (now or datetime.now(UTC)) + timedelta(days=1)
        start = self.start or end - timedelta(days=31)
        if start >= end:
            raise QueryError(f"start {start.isoformat()} is not before end {end.isoformat()}")
        return start, end


@dataclass(frozen=True)
class QuerySpec:
    """One catalog entry: its name, what it answers, its SQL and output columns.

    ``needs_store``: it reads more than the lake (the real-time store, the enrichment
    catalog), so only the embedded DuckDB engine runs it (not Spark, not Athena)."""

    name: str
    description: str
    sql: str
    columns: tuple[str, ...]
    needs_store: bool = False


_FILTERS = """
    ($content_id IS NULL OR content_id = $content_id)
    AND ($creator IS NULL OR creator = $creator)
    AND ($content_type IS NULL OR content_type = $content_type)
    AND ($user_id IS NULL OR user_id = $user_id)
    AND ($device_type IS NULL OR coalesce(device_type, 'unknown') = $device_type)
    AND ($platform IS NULL OR coalesce(platform, 'unknown') = $platform)"""
_PLAY_FILTER = f"""{_FILTERS}
    AND ($country IS NULL OR coalesce(country, 'unknown') = $country)
"""
#: The country filter of segments (their rows carry no country: their play's), replaced
#: by TRUE when no country is asked (:func:`run_query`), so DuckDB plans no join for it.
SEGMENT_COUNTRY_FILTER = (
    "($country IS NULL OR play_key IN (SELECT play_key FROM plays_all"
    " WHERE coalesce(country, 'unknown') = $country))"
)
_SEGMENT_FILTER = f"""{_FILTERS}
    AND {SEGMENT_COUNTRY_FILTER}
"""
#: Sessions carry a listener only: they follow the listener filter, no other.
_SESSION_FILTER = "($user_id IS NULL OR user_id = $user_id)"
_STARTED = f"""
started AS (
    SELECT * FROM play_rows
    WHERE started_us >= $start_us AND started_us < $end_us AND {_PLAY_FILTER}
)"""
_CLIPPED = f"""
clipped AS (
    SELECT * EXCLUDE (start, "end", start_us, end_us, playing_s, rate, version),
           greatest(start_us, $start_us) AS a, least(end_us, $end_us) AS b
    FROM segment_rows
    WHERE end_us > $start_us AND start_us < $end_us AND {_SEGMENT_FILTER}
)"""
# Playing time inside [start, end), cut at the requested zone's hour boundaries. Segments
# never cross a UTC hour, so for zones a whole number of hours from UTC they need no
# cut; zones such as +05:30 are cut at UTC quarter hours. Times in microseconds;
# playing_s is an exact decimal (whole microseconds), so its sums do not depend on the
# order rows are added in (durations are then rounded to ms: playpulse.query.rounding).
_US_TO_S = "(({})::DECIMAL(18, 0) * 0.000001::DECIMAL(7, 6))"
_SEGS_WHOLE_HOURS = f"""
segs AS (SELECT * EXCLUDE (a, b), a AS seg_us, {_US_TO_S.format("b - a")} AS playing_s
      FROM clipped)"""
_SEGS_QUARTER_HOURS = f"""
segs AS (
    SELECT * EXCLUDE (a, b, g), greatest(a, g) AS seg_us,
           {_US_TO_S.format("least(b, g + 900000000) - greatest(a, g)")} AS playing_s
    FROM (SELECT c.*, unnest(generate_series(a // 900000000 * 900000000, b - 1, 900000000))
                 AS g FROM clipped c)
)"""
_SEGS_MARKER = "segs AS (__SEGS__)"
# The requested zone's UTC offset (microseconds) for each UTC hour (quarter hour for
# zones such as +05:30) of the range: zones change offset at those boundaries, so local
# time = UTC + offset by a join on this small table, without converting each row. (A
# few zones switched at hh:01 local time before 2011, such as America/St_Johns and
# America/Goose_Bay: there, up to a minute of playing time a year lands in the hour
# on the other side of the switch.)
_TZMAP = """
tzmap AS (
    SELECT h // $step AS k, epoch_us(timezone($tz, make_timestamp(h)::TIMESTAMPTZ)) - h AS off
    FROM range($start_us // $step * $step, $end_us + $step, $step) t(h)
)"""
_DAY_US = 86_400_000_000
_HOUR_US = 3_600_000_000


def _local(us: str, alias: str = "m") -> str:
    """SQL: local microseconds of UTC microseconds ``us`` (joined to ``tzmap`` as ``alias``)."""
    return f"({us} + {alias}.off)"


def _local_date(local: str) -> str:
    return f"(DATE '1970-01-01' + ({local} // {_DAY_US})::INTEGER)"


_SEGMENTS = f"{_CLIPPED},\n{_SEGS_MARKER}"
# The shop queries' facts (docs/metrics.md, "Shop funnel"): one row per product view,
# favorite and cart add in the range, per order placed in the range and per order
# completed in the range. An order (vendor, order_id) is placed at its first
# order_created, or at its first order_completed when it has none (an imported purchase
# is an order); it completes at its first order_completed, with the amount and currency
# of its first completion that carries an amount. Orders are looked up over the whole
# history, so an order placed before the range and completed in it is not placed again.
# ``vendor_key`` is the vendor, '' for events without one (never a valid id): all of them
# are one shop, reported with vendor_id null.
# What a fact's source can tell (docs/metrics.md, "What a shop source can tell"): the
# commerce event types its events declare in ``properties.source_steps`` (a JSON array;
# DIGINETICA's views say ["product_view"]), null when they declare nothing (live events,
# Taobao): such a source tells every step. An order's source is its first event's. Each
# count column of the shop queries: the fact kind it counts, the fact kinds that prove
# their source tells it, and the declared event types that say it can; ``facts`` carries
# ``tells_<column>`` for each.
_DECLARED_STEPS = """(CASE WHEN contains(properties, '"source_steps"')
          AND json_type(properties, '$.source_steps') = 'ARRAY'
     THEN json_extract_string(properties, '$.source_steps[*]') END)"""
_SHOP_STEPS = {
    "views": ("product_view", ("product_view",), ("product_view",)),
    "favorites": ("product_favorite", ("product_favorite",), ("product_favorite",)),
    "cart_adds": ("cart_add", ("cart_add",), ("cart_add",)),
    "orders": (
        "order_placed",
        ("order_placed", "order_completed"),
        ("order_created", "order_completed"),
    ),
    "completed_orders": ("order_completed", ("order_completed",), ("order_completed",)),
}


def _quoted(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{n}'" for n in names)


_TELLS = ",\n".join(
    f"(steps IS NULL OR kind IN ({_quoted(kinds)}) OR list_has_any(steps, [{_quoted(declared)}]))"
    f" AS tells_{column}"
    for column, (_, kinds, declared) in _SHOP_STEPS.items()
)
_COMMERCE = f"""
shop AS (
    SELECT coalesce(vendor_id, '') AS vendor_key, product_id, occurred_at, event_type,
           {_DECLARED_STEPS} AS steps
    FROM shop_events
    WHERE occurred_at >= $start AND occurred_at < $end AND NOT late
      AND event_type IN ('product_view', 'product_favorite', 'cart_add')
      AND ($vendor_id IS NULL OR vendor_id = $vendor_id)
),
order_rows AS (
    SELECT coalesce(vendor_id, '') AS vendor_key, order_id,
           coalesce(min(occurred_at) FILTER (event_type = 'order_created'), min(occurred_at))
               AS placed_at,
           min(occurred_at) FILTER (event_type = 'order_completed') AS completed_at,
           arg_min(product_id, (occurred_at, event_id)) AS product_id,
           arg_min({{'amount_minor': amount_minor, 'currency': currency}}, (occurred_at, event_id))
               FILTER (event_type = 'order_completed' AND amount_minor IS NOT NULL) AS paid,
           arg_min({_DECLARED_STEPS}, (occurred_at, event_id)) AS steps
    FROM shop_events
    WHERE NOT late AND order_id IS NOT NULL
      AND event_type IN ('order_created', 'order_completed')
      AND ($vendor_id IS NULL OR vendor_id = $vendor_id)
    GROUP BY ALL
),
fact_rows AS (
    SELECT vendor_key, product_id, occurred_at, event_type AS kind,
           NULL::BIGINT AS amount_minor, NULL::VARCHAR AS currency, steps
    FROM shop
    UNION ALL
    SELECT vendor_key, product_id, placed_at, 'order_placed', NULL, NULL, steps
    FROM order_rows WHERE placed_at >= $start AND placed_at < $end
    UNION ALL
    SELECT vendor_key, product_id, completed_at, 'order_completed', paid.amount_minor,
           paid.currency, steps
    FROM order_rows WHERE completed_at >= $start AND completed_at < $end
),
facts AS (SELECT * EXCLUDE (steps), {_TELLS} FROM fact_rows)"""
# A row's (vendor; product; vendor and day) count of each step, null (unknown, not 0)
# when none of its facts comes from a source that can tell that step.
_SHOP_COUNTS = ",\n".join(
    f"CASE WHEN bool_or(tells_{c}) THEN count(*) FILTER (kind = '{kind}') END AS {c}"
    for c, (kind, _, _) in _SHOP_STEPS.items()
)
# The funnel's rates: each over the facts of sources that tell both of its steps (all of
# a row's facts when they all tell both; live shops: the plain ratio of the counts), null
# when there are none.
_SHOP_RATE_STEPS = (
    ("view_to_cart", "cart_adds", "views"),
    ("cart_to_order", "orders", "cart_adds"),
    ("view_to_order", "orders", "views"),
)
_SHOP_RATE_FACTS = ",\n".join(
    f"count(*) FILTER (kind = '{_SHOP_STEPS[num][0]}' AND tells_{den}) AS {rate}_num,\n"
    f"count(*) FILTER (kind = '{_SHOP_STEPS[den][0]}' AND tells_{num}) AS {rate}_den"
    for rate, num, den in _SHOP_RATE_STEPS
)
_SHOP_RATES = ",\n".join(
    f"CASE WHEN {rate}_den > 0 THEN {rate}_num / {rate}_den END AS {rate}"
    for rate, _, _ in _SHOP_RATE_STEPS
)
# Revenue per currency: completed orders with an amount, never summed across currencies.
_SHOP_PAID = """
count(*) AS priced_orders, sum(amount_minor) AS revenue_minor"""
# A row's revenue: its currency's sum; with no currency, 0 when nothing completed and
# unknown (null) when the completed orders carry no amount or are unknown themselves.
_SHOP_REVENUE = """
CASE WHEN c.completed_orders IS NOT NULL THEN coalesce(r.priced_orders, 0) END AS priced_orders,
(CASE WHEN r.currency IS NOT NULL THEN r.revenue_minor WHEN c.completed_orders = 0 THEN 0 END)
    ::BIGINT AS revenue_minor,
r.currency"""


# What a play can tell (docs/metrics.md, "What each source can tell"), from the plays'
# own columns. Its playing time (and so stream, >= 30 s) is known when it has more than
# one event: a lone play_start (an imported YouTube view or Last.fm scrobble) says a play
# began, not how long it lasted. Whether it is a skip is known once its time is and it
# has ended or already is a stream (an open play under 30 s may still become one).
# Whether it is completed (95 % of the duration) is known when it has a duration and a
# position (Spotify exports carry no track duration).
# The other skip policies (docs/metrics.md, "Skip by the source's signal" and "Qualified
# listen") are per-play columns that are null where the play cannot tell.
_TIMED = "event_count > 1"
_SKIP_KNOWN = f"({_TIMED} AND (end_reason IS NOT NULL OR is_stream))"
_COMPLETION_KNOWN = "(duration_s > 0 AND furthest_position_s IS NOT NULL)"

#: The rate columns of ``overview``, ``top_content`` and ``top_creators``: each rate over
#: the plays that can tell, then the number of those plays.
RATE_COLUMNS = (
    "completion_rate",
    "completion_rate_plays",
    "skip_rate",
    "skip_rate_plays",
    "source_skip_rate",
    "source_skip_rate_plays",
    "qualified_listen_rate",
    "qualified_listen_rate_plays",
)


def _rates() -> str:
    """SQL select items over plays: the completion rate, the skip rates (30-second rule
    and the source's own signal) and the qualified-listen rate, each over the plays that
    can tell (null when none can) and followed by the number of those plays; then
    ``timed_plays`` and ``qualified_listens``."""
    return (
        f"avg(completed::INT) FILTER ({_COMPLETION_KNOWN}) AS completion_rate, "
        f"count(*) FILTER ({_COMPLETION_KNOWN}) AS completion_rate_plays, "
        f"avg(skipped::INT) FILTER ({_SKIP_KNOWN}) AS skip_rate, "
        f"count(*) FILTER ({_SKIP_KNOWN}) AS skip_rate_plays, "
        "avg(skipped_by_source::INT) AS source_skip_rate, "
        "count(skipped_by_source) AS source_skip_rate_plays, "
        "avg(qualified_listen::INT) AS qualified_listen_rate, "
        "count(qualified_listen) AS qualified_listen_rate_plays, "
        f"count(*) FILTER ({_TIMED}) AS timed_plays, "
        "count(*) FILTER (qualified_listen) AS qualified_listens"
    )


def _rate_items(alias: str) -> str:
    """SQL select items: :data:`RATE_COLUMNS` from ``alias`` (a :func:`_rates` row that
    may be missing: its ``*_plays`` are then 0)."""
    return ", ".join(
        f"coalesce({alias}.{c}, 0) AS {c}" if c.endswith("_plays") else f"{alias}.{c}"
        for c in RATE_COLUMNS
    )


def _known_time(listening: str, timed_plays: str) -> str:
    """SQL: a row's listening time ``listening`` (a sum, null without segments), 0 when
    its plays have known time but none in the range, null when none of them can tell."""
    return f"(CASE WHEN {listening} IS NOT NULL THEN {listening} WHEN {timed_plays} > 0 THEN 0 END)"


def _newest(column: str, time_us: str) -> str:
    """SQL aggregate: the newest non-null ``column`` of the group (by ``time_us``, then
    ``play_key``), named ``column``: a renamed title shows its latest name, the same on
    every run."""
    return f"arg_max({column}, ({time_us}, play_key)) FILTER ({column} IS NOT NULL) AS {column}"


CATALOG: dict[str, QuerySpec] = {}


def register(spec: QuerySpec) -> None:
    """Add ``spec`` to :data:`CATALOG` (the CLI, the API, the dashboard and the Spark and
    Athena transpilers list it from there). Modules that define queries of their own
    (enrichment, quality of experience) call it at import. Raises
    :class:`~playpulse.errors.ConfigError` when a query of that name exists."""
    if spec.name in CATALOG:
        raise ConfigError(f"catalog query {spec.name!r} is already registered")
    CATALOG[spec.name] = spec


_add = register


_add(
    QuerySpec(
        "overview",
        "Plays, streams (>= 30 s), listeners, listening time, sessions, completion rate, "
        "skip rates (30-second rule; the source's own signal) and qualified listens "
        "(Last.fm's rule) in the range.",
        f"""
        WITH {_STARTED}, {_SEGMENTS},
        sess AS (SELECT * FROM sessions WHERE started_at >= $start AND started_at < $end
                 AND {_SESSION_FILTER}),
        r AS (SELECT count(*) AS plays, count(*) FILTER (is_stream) AS streams, {_rates()}
              FROM started),
        t AS (SELECT sum(playing_s) AS listening_s FROM segs)
        SELECT
            r.plays,
            CASE WHEN r.timed_plays > 0 OR r.plays = 0 THEN r.streams END AS streams,
            (SELECT count(DISTINCT user_num) FROM (
                SELECT user_num FROM started UNION ALL SELECT user_num FROM segs)) AS listeners,
            CASE WHEN r.plays = 0 THEN coalesce(t.listening_s, 0)
                 ELSE {_known_time("t.listening_s", "r.timed_plays")} END AS listening_s,
            (SELECT count(*) FROM sess) AS sessions,
            (SELECT coalesce(avg(duration_s::DECIMAL(18, 6)), 0) FROM sess) AS avg_session_s,
            {_rate_items("r")},
            CASE WHEN r.qualified_listen_rate_plays > 0 OR r.plays = 0
                 THEN r.qualified_listens END AS qualified_listens
        FROM r, t
        """,
        (
            "plays",
            "streams",
            "listeners",
            "listening_s",
            "sessions",
            "avg_session_s",
            *RATE_COLUMNS,
            "qualified_listens",
        ),
    )
)

_add(
    QuerySpec(
        "top_content",
        "Titles by listening time, with plays, listeners, completion rate, skip rates "
        "(30-second rule; the source's own signal) and qualified-listen rate.",
        f"""
        WITH {_STARTED}, {_SEGMENTS},
        p AS (SELECT content_id, count(*) AS plays, {_rates()},
                     {_newest("title", "started_us")}, {_newest("creator", "started_us")},
                     {_newest("content_type", "started_us")}
              FROM started GROUP BY content_id),
        l AS (SELECT content_id, sum(playing_s) AS listening_s,
                     {_newest("title", "seg_us")}, {_newest("creator", "seg_us")},
                     {_newest("content_type", "seg_us")}
              FROM segs GROUP BY content_id),
        u AS (SELECT content_id, count(DISTINCT user_num) AS listeners FROM (
                SELECT content_id, user_num FROM started
                UNION ALL SELECT content_id, user_num FROM segs) GROUP BY content_id)
        SELECT u.content_id, coalesce(p.title, l.title) AS title,
               coalesce(p.creator, l.creator) AS creator,
               coalesce(p.content_type, l.content_type) AS content_type,
               coalesce(p.plays, 0) AS plays, u.listeners,
               {_known_time("l.listening_s", "p.timed_plays")} AS listening_s,
               {_rate_items("p")}
        FROM u LEFT JOIN p USING (content_id) LEFT JOIN l USING (content_id)
        WHERE u.content_id IS NOT NULL
        ORDER BY listening_s DESC NULLS LAST, plays DESC, content_id LIMIT $limit
        """,
        (
            "content_id",
            "title",
            "creator",
            "content_type",
            "plays",
            "listeners",
            "listening_s",
            *RATE_COLUMNS,
        ),
    )
)

_add(
    QuerySpec(
        "top_creators",
        "Authors, artists, shows and channels by listening time, with plays, listeners, "
        "completion rate, skip rates (30-second rule; the source's own signal) and "
        "qualified-listen rate.",
        f"""
        WITH {_STARTED}, {_SEGMENTS},
        p AS (SELECT creator, count(*) AS plays, {_rates()} FROM started GROUP BY creator),
        l AS (SELECT creator, sum(playing_s) AS listening_s FROM segs GROUP BY creator),
        u AS (SELECT creator, count(DISTINCT user_num) AS listeners FROM (
                SELECT creator, user_num FROM started UNION ALL SELECT creator, user_num FROM segs)
              GROUP BY creator)
        SELECT u.creator, coalesce(p.plays, 0) AS plays, u.listeners,
               {_known_time("l.listening_s", "p.timed_plays")} AS listening_s,
               {_rate_items("p")}
        FROM u LEFT JOIN p USING (creator) LEFT JOIN l USING (creator)
        WHERE u.creator IS NOT NULL
        ORDER BY listening_s DESC NULLS LAST, plays DESC, creator LIMIT $limit
        """,
        ("creator", "plays", "listeners", "listening_s", *RATE_COLUMNS),
    )
)

_add(
    QuerySpec(
        "hourly_engagement",
        "Plays, listeners and listening time by day of week (0 = Monday) and hour of day, "
        "in the requested time zone; all 168 cells.",
        f"""
        WITH {_STARTED}, {_SEGMENTS}, {_TZMAP},
        grid AS (SELECT d AS day_of_week, h AS hour_of_day
                 FROM range(7) t(d), range(24) s(h)),
        p AS (SELECT (l // {_DAY_US} + 3) % 7 AS day_of_week, (l // {_HOUR_US}) % 24 AS hour_of_day,
                     count(*) AS plays, count(*) FILTER (timed) AS timed_plays
              FROM (SELECT {_local("started_us")} AS l, {_TIMED} AS timed FROM started
                    JOIN tzmap m ON m.k = started_us // $step) GROUP BY ALL),
        l AS (SELECT (l // {_DAY_US} + 3) % 7 AS day_of_week, (l // {_HOUR_US}) % 24 AS hour_of_day,
                     sum(playing_s) AS listening_s, count(DISTINCT user_num) AS listeners
              FROM (SELECT {_local("seg_us")} AS l, playing_s, user_num FROM segs
                    JOIN tzmap m ON m.k = seg_us // $step) GROUP BY ALL)
        SELECT g.day_of_week, g.hour_of_day, coalesce(p.plays, 0) AS plays,
               coalesce(l.listeners, 0) AS listeners,
               CASE WHEN p.plays IS NULL THEN coalesce(l.listening_s, 0)
                    ELSE {_known_time("l.listening_s", "p.timed_plays")} END AS listening_s
        FROM grid g LEFT JOIN p USING (day_of_week, hour_of_day)
                    LEFT JOIN l USING (day_of_week, hour_of_day)
        ORDER BY g.day_of_week, g.hour_of_day
        """,
        ("day_of_week", "hour_of_day", "plays", "listeners", "listening_s"),
    )
)

_add(
    QuerySpec(
        "daily",
        "Per day (in the requested time zone): plays, listeners, new listeners (first play "
        "ever that day) and listening time.",
        f"""
        WITH {_STARTED}, {_SEGMENTS}, {_TZMAP},
        first_seen AS (SELECT user_num, timezone($tz, min(started_at))::DATE AS first_day
                       FROM plays_all GROUP BY user_num),
        sd AS (SELECT {_local_date(_local("started_us"))} AS date, user_num, {_TIMED} AS timed
               FROM started
               JOIN tzmap m ON m.k = started_us // $step),
        gd AS (SELECT {_local_date(_local("seg_us"))} AS date, user_num, playing_s FROM segs
               JOIN tzmap m ON m.k = seg_us // $step),
        p AS (SELECT date, count(*) AS plays, count(*) FILTER (timed) AS timed_plays
              FROM sd GROUP BY ALL),
        l AS (SELECT date, sum(playing_s) AS listening_s FROM gd GROUP BY ALL),
        u AS (SELECT date, count(DISTINCT user_num) AS listeners FROM (
                SELECT date, user_num FROM sd UNION ALL SELECT date, user_num FROM gd)
              GROUP BY date),
        n AS (SELECT first_day AS date, count(*) AS new_listeners FROM first_seen
              GROUP BY first_day)
        SELECT u.date, coalesce(p.plays, 0) AS plays, u.listeners,
               coalesce(n.new_listeners, 0) AS new_listeners,
               {_known_time("l.listening_s", "p.timed_plays")} AS listening_s
        FROM u LEFT JOIN p USING (date) LEFT JOIN l USING (date) LEFT JOIN n USING (date)
        ORDER BY u.date
        """,
        ("date", "plays", "listeners", "new_listeners", "listening_s"),
    )
)

_add(
    QuerySpec(
        "user_sessions",
        "Listeners by listening time, with their sessions and average session length.",
        f"""
        WITH {_STARTED}, {_SEGMENTS},
        s AS (SELECT user_id, count(*) AS sessions, avg(duration_s::DECIMAL(18, 6))
                     AS avg_session_s
              FROM sessions WHERE started_at >= $start AND started_at < $end
                AND {_SESSION_FILTER} GROUP BY user_id),
        l AS (SELECT user_id, sum(playing_s) AS listening_s FROM segs GROUP BY user_id),
        t AS (SELECT user_id, count(*) FILTER ({_TIMED}) AS timed_plays FROM started
              GROUP BY user_id)
        SELECT coalesce(s.user_id, l.user_id) AS user_id, coalesce(s.sessions, 0) AS sessions,
               coalesce(s.avg_session_s, 0) AS avg_session_s,
               CASE WHEN t.user_id IS NULL THEN coalesce(l.listening_s, 0)
                    ELSE {_known_time("l.listening_s", "t.timed_plays")} END AS listening_s
        FROM s FULL OUTER JOIN l USING (user_id) LEFT JOIN t USING (user_id)
        ORDER BY listening_s DESC NULLS LAST, sessions DESC, user_id LIMIT $limit
        """,
        ("user_id", "sessions", "avg_session_s", "listening_s"),
    )
)

_add(
    QuerySpec(
        "devices",
        "Platform and device mix: plays, listeners and listening time.",
        f"""
        WITH {_STARTED}, {_SEGMENTS},
        p AS (SELECT coalesce(platform, 'unknown') AS platform,
                     coalesce(device_type, 'unknown') AS device_type, count(*) AS plays,
                     count(*) FILTER ({_TIMED}) AS timed_plays
              FROM started GROUP BY ALL),
        l AS (SELECT coalesce(platform, 'unknown') AS platform,
                     coalesce(device_type, 'unknown') AS device_type,
                     sum(playing_s) AS listening_s FROM segs GROUP BY ALL),
        u AS (SELECT platform, device_type, count(DISTINCT user_num) AS listeners FROM (
                SELECT coalesce(platform, 'unknown') AS platform,
                       coalesce(device_type, 'unknown') AS device_type, user_num FROM started
                UNION ALL SELECT coalesce(platform, 'unknown'), coalesce(device_type, 'unknown'),
                       user_num FROM segs) GROUP BY ALL)
        SELECT u.platform, u.device_type, coalesce(p.plays, 0) AS plays, u.listeners,
               {_known_time("l.listening_s", "p.timed_plays")} AS listening_s
        FROM u LEFT JOIN p USING (platform, device_type) LEFT JOIN l USING (platform, device_type)
        ORDER BY listening_s DESC NULLS LAST, plays DESC, platform, device_type
        """,
        ("platform", "device_type", "plays", "listeners", "listening_s"),
    )
)

_add(
    QuerySpec(
        "countries",
        "Countries of the plays ('unknown' when the events do not say): plays, listeners "
        "and listening time.",
        f"""
        WITH {_STARTED}, {_SEGMENTS},
        pc AS (SELECT play_key, coalesce(country, 'unknown') AS country FROM plays_all),
        p AS (SELECT coalesce(country, 'unknown') AS country, count(*) AS plays,
                     count(*) FILTER ({_TIMED}) AS timed_plays
              FROM started GROUP BY ALL),
        sc AS (SELECT pc.country, s.user_num, s.playing_s FROM segs s JOIN pc USING (play_key)),
        l AS (SELECT country, sum(playing_s) AS listening_s FROM sc GROUP BY ALL),
        u AS (SELECT country, count(DISTINCT user_num) AS listeners FROM (
                SELECT coalesce(country, 'unknown') AS country, user_num FROM started
                UNION ALL SELECT country, user_num FROM sc) GROUP BY ALL)
        SELECT u.country, coalesce(p.plays, 0) AS plays, u.listeners,
               {_known_time("l.listening_s", "p.timed_plays")} AS listening_s
        FROM u LEFT JOIN p USING (country) LEFT JOIN l USING (country)
        ORDER BY listening_s DESC NULLS LAST, plays DESC, country LIMIT $limit
        """,
        ("country", "plays", "listeners", "listening_s"),
    )
)

_add(
    QuerySpec(
        "chapters",
        "Audiobook drop-off: per title and chapter, listeners, listening time and reach rate "
        "(share of the title's starters who reached the chapter).",
        f"""
        WITH {_STARTED}, {_SEGMENTS},
        starters AS (SELECT content_id, count(DISTINCT user_num) AS n FROM started
                     GROUP BY content_id),
        reached AS (SELECT content_id, unnest(chapters_reached) AS chapter, user_num
                    FROM started),
        r AS (SELECT content_id, chapter, count(DISTINCT user_num) AS listeners
              FROM reached GROUP BY ALL),
        l AS (SELECT content_id, chapter, sum(playing_s) AS listening_s
              FROM segs WHERE chapter IS NOT NULL GROUP BY ALL)
        SELECT r.content_id, r.chapter, r.listeners, coalesce(l.listening_s, 0) AS listening_s,
               r.listeners / s.n AS reach_rate
        FROM r JOIN starters s USING (content_id) LEFT JOIN l USING (content_id, chapter)
        ORDER BY r.content_id, r.chapter
        """,
        ("content_id", "chapter", "listeners", "listening_s", "reach_rate"),
    )
)

_add(
    QuerySpec(
        "retention_curve",
        "Audience retention: for each title with a known duration, the share of plays still "
        "playing at each whole percent of the duration (furthest position reached).",
        f"""
        WITH {_STARTED},
        titles AS (SELECT content_id FROM started WHERE duration_s > 0
                   GROUP BY content_id ORDER BY count(*) DESC, content_id LIMIT $limit),
        p AS (SELECT content_id, least(floor(coalesce(furthest_position_s, 0) / duration_s
                                             * 100), 100)::INTEGER AS bucket
              FROM started WHERE content_id IN (SELECT content_id FROM titles)),
        h AS (SELECT content_id, bucket, count(*) AS n FROM p GROUP BY ALL),
        grid AS (SELECT content_id, pct::INTEGER AS position_pct FROM titles, range(101) t(pct))
        -- A play reached whole percent k when floor(its furthest percent) >= k: count the
        -- plays per floor, then sum from 100 down.
        SELECT g.content_id, g.position_pct,
               sum(coalesce(h.n, 0)) OVER (PARTITION BY g.content_id ORDER BY g.position_pct DESC
                                           ROWS UNBOUNDED PRECEDING)
               / sum(coalesce(h.n, 0)) OVER (PARTITION BY g.content_id) AS share
        FROM grid g LEFT JOIN h ON h.content_id = g.content_id AND h.bucket = g.position_pct
        ORDER BY g.content_id, g.position_pct
        """,
        ("content_id", "position_pct", "share"),
    )
)

_add(
    QuerySpec(
        "watch_time_visibility",
        "Playing time in the foreground and in the background, per creator and day.",
        f"""
        WITH {_SEGMENTS}, {_TZMAP}
        SELECT creator, {_local_date(_local("seg_us"))} AS date,
               coalesce(sum(playing_s) FILTER (foreground), 0) AS foreground_s,
               coalesce(sum(playing_s) FILTER (NOT foreground), 0) AS background_s
        FROM segs JOIN tzmap m ON m.k = seg_us // $step
        WHERE creator IS NOT NULL GROUP BY ALL
        ORDER BY date, background_s DESC, creator
        """,
        ("creator", "date", "foreground_s", "background_s"),
    )
)

_add(
    QuerySpec(
        "funnel",
        "Shop funnel per vendor (events without a vendor are one shop, vendor_id null): "
        "product views, favorites, cart adds, orders (placed, an imported purchase included), "
        "completed orders and conversion rates; revenue (minor units) per currency, one row "
        "per vendor and currency (the counts repeat on each of a vendor's currency rows). "
        "A step no source of the row records (a views-only import) is null, not 0.",
        f"""
        WITH {_COMMERCE},
        c AS (SELECT vendor_key, {_SHOP_COUNTS}, {_SHOP_RATE_FACTS}
              FROM facts GROUP BY vendor_key),
        r AS (SELECT vendor_key, currency, {_SHOP_PAID} FROM facts
              WHERE kind = 'order_completed' AND amount_minor IS NOT NULL GROUP BY ALL)
        SELECT nullif(c.vendor_key, '') AS vendor_id, views, favorites, cart_adds, orders,
               completed_orders, {_SHOP_RATES},
               {_SHOP_REVENUE},
               (r.revenue_minor / r.priced_orders)::DOUBLE AS average_order_minor
        FROM c LEFT JOIN r USING (vendor_key)
        ORDER BY completed_orders DESC, views DESC, vendor_id NULLS LAST, currency NULLS LAST
        LIMIT $limit
        """,
        (
            "vendor_id",
            "views",
            "favorites",
            "cart_adds",
            "orders",
            "completed_orders",
            "view_to_cart",
            "cart_to_order",
            "view_to_order",
            "priced_orders",
            "revenue_minor",
            "currency",
            "average_order_minor",
        ),
    )
)

_add(
    QuerySpec(
        "top_products",
        "Products by completed orders, then views: views, favorites, cart adds, completed "
        "orders and revenue (minor units) per currency, one row per product and currency.",
        f"""
        WITH {_COMMERCE},
        c AS (SELECT product_id, min(nullif(vendor_key, '')) AS vendor_id, {_SHOP_COUNTS}
              FROM facts WHERE product_id IS NOT NULL GROUP BY product_id),
        r AS (SELECT product_id, currency, {_SHOP_PAID} FROM facts
              WHERE kind = 'order_completed' AND amount_minor IS NOT NULL
                AND product_id IS NOT NULL GROUP BY ALL)
        SELECT c.product_id, vendor_id, views, favorites, cart_adds, completed_orders,
               {_SHOP_REVENUE}
        FROM c LEFT JOIN r USING (product_id)
        ORDER BY completed_orders DESC, views DESC, c.product_id, currency NULLS LAST
        LIMIT $limit
        """,
        (
            "product_id",
            "vendor_id",
            "views",
            "favorites",
            "cart_adds",
            "completed_orders",
            "priced_orders",
            "revenue_minor",
            "currency",
        ),
    )
)

_add(
    QuerySpec(
        "vendor_daily",
        "Per vendor (events without a vendor are one shop, vendor_id null) and day (requested "
        "time zone): views, favorites, cart adds, orders, completed orders and revenue (minor "
        "units) per currency, one row per vendor, day and currency.",
        f"""
        WITH {_COMMERCE}, {_TZMAP},
        d AS (SELECT f.*, {_local_date(_local("epoch_us(occurred_at)"))} AS date
              FROM facts f JOIN tzmap m ON m.k = epoch_us(occurred_at) // $step),
        c AS (SELECT vendor_key, date, {_SHOP_COUNTS} FROM d GROUP BY ALL),
        r AS (SELECT vendor_key, date, currency, {_SHOP_PAID} FROM d
              WHERE kind = 'order_completed' AND amount_minor IS NOT NULL GROUP BY ALL)
        SELECT nullif(c.vendor_key, '') AS vendor_id, c.date, views, favorites, cart_adds,
               orders, completed_orders, {_SHOP_REVENUE}
        FROM c LEFT JOIN r USING (vendor_key, date)
        ORDER BY vendor_id NULLS LAST, c.date, currency NULLS LAST
        """,
        (
            "vendor_id",
            "date",
            "views",
            "favorites",
            "cart_adds",
            "orders",
            "completed_orders",
            "priced_orders",
            "revenue_minor",
            "currency",
        ),
    )
)

_add(
    QuerySpec(
        "cohorts",
        "Weekly retention of new listeners: for each cohort (week of first play, Monday "
        "start, requested time zone) the share still playing N weeks later.",
        """
        WITH p AS (SELECT user_num, date_trunc('week', timezone($tz, started_at))::DATE AS week
                   FROM plays_all),
        firsts AS (SELECT user_num, min(week) AS cohort_week FROM p GROUP BY user_num),
        cohort AS (SELECT * FROM firsts
                   WHERE cohort_week >= timezone($tz, $start)::DATE - 6
                     AND cohort_week < timezone($tz, $end)::DATE),
        sizes AS (SELECT cohort_week, count(*) AS users FROM cohort GROUP BY cohort_week),
        active AS (SELECT DISTINCT c.cohort_week, c.user_num,
                          (p.week - c.cohort_week) // 7 AS week_number
                   FROM cohort c JOIN p USING (user_num))
        SELECT a.cohort_week, a.week_number, s.users AS cohort_users,
               count(*) AS active_users, count(*) / s.users AS retention
        FROM active a JOIN sizes s USING (cohort_week)
        GROUP BY a.cohort_week, a.week_number, s.users ORDER BY a.cohort_week, a.week_number
        """,
        ("cohort_week", "week_number", "cohort_users", "active_users", "retention"),
    )
)


# -- Quality of experience (docs/metrics.md, "Quality of experience") ---------------------
#: Importer formats (playpulse.sources.importers): their plays' ids are ``<format>:<key>``
#: (importers.base.play_events). An export records no player state, so its plays tell
#: nothing of startup, rebuffering or failures: QoE is over the other (player) plays.
IMPORTED_PLAY_FORMATS = (
    "spotify_extended",
    "spotify_basic",
    "youtube_watch_history",
    "lastfm_scrobbles",
)
_IMPORTED = " OR ".join(
    f"coalesce(playback_id, '') LIKE '{fmt}:%'" for fmt in IMPORTED_PLAY_FORMATS
)
#: SQL: whether a play tells its quality of experience: it has known time (more than one
#: event) and comes from a player, not an import.
_PLAYER_PLAY = f"({_TIMED} AND NOT ({_IMPORTED}))"
#: The QoE columns every QoE query ends with (docs/metrics.md).
QOE_COLUMNS = (
    "plays",
    "startup_p50_s",
    "startup_p95_s",
    "rebuffer_ratio",
    "rebuffers_per_hour",
    "failure_rate",
    "failed_plays",
    "watch_time_s",
)
_WATCH = "sum(watch_time_s::DECIMAL(18, 6))"


def _qoe(source: str, dims: tuple[str, ...], extra: str = "") -> str:
    """SQL: the CTEs ``q`` (the player plays of ``source``, each with its rank by startup
    time ``rn`` and its group's size ``n`` per ``dims``) and ``g`` (per ``dims``: the
    :data:`QOE_COLUMNS`, after the ``extra`` select items over ``q``). Percentiles are
    nearest rank: the smallest startup time with at least p % of the group's plays at or
    below it, compared in integers (``rn * 100 >= n * p``), so a percentile always is
    one play's startup time."""
    part = f"PARTITION BY {', '.join(dims)}" if dims else ""
    keys = "".join(f"{k}, " for k in (*dims, *([extra] if extra else [])))
    return f"""
        q AS (SELECT *, row_number() OVER ({part} ORDER BY startup_time_s, play_key) AS rn,
                     count(*) OVER ({part}) AS n
              FROM {source} WHERE {_PLAYER_PLAY}),
        g AS (SELECT {keys}count(*) AS plays,
                     min(startup_time_s) FILTER (rn * 100 >= n * 50) AS startup_p50_s,
                     min(startup_time_s) FILTER (rn * 100 >= n * 95) AS startup_p95_s,
                     sum(rebuffer_time_s::DECIMAL(18, 6))::DOUBLE
                         / nullif({_WATCH}::DOUBLE, 0) AS rebuffer_ratio,
                     (sum(rebuffer_count) * 3600)::DOUBLE / nullif({_WATCH}::DOUBLE, 0)
                         AS rebuffers_per_hour,
                     avg((coalesce(end_reason, '') = 'error')::INT) AS failure_rate,
                     count(*) FILTER (end_reason = 'error') AS failed_plays,
                     coalesce({_WATCH}, 0) AS watch_time_s
              FROM q {"GROUP BY ALL" if dims else ""})"""


_add(
    QuerySpec(
        "qoe",
        "Quality of experience of the player plays that started in the range (imports "
        "cannot tell): startup time p50/p95, rebuffer ratio (rebuffering / watch time), "
        "rebuffers per hour of watch time, playback failure rate (plays ended by an error).",
        f"""
        WITH {_STARTED}, {_qoe("started", ())}
        SELECT {", ".join(QOE_COLUMNS)} FROM g
        """,
        QOE_COLUMNS,
    )
)

_add(
    QuerySpec(
        "qoe_titles",
        "Quality of experience per title (player plays started in the range): startup "
        "p50/p95, rebuffer ratio, rebuffers per hour, failure rate; most played first.",
        f"""
        WITH {_STARTED},
        {_qoe("started", ("content_id",), _newest("title", "started_us"))},
        c AS (SELECT content_id, {_newest("creator", "started_us")} FROM q GROUP BY content_id)
        SELECT content_id, title, creator, {", ".join(QOE_COLUMNS)}
        FROM g JOIN c USING (content_id)
        WHERE content_id IS NOT NULL
        ORDER BY plays DESC, content_id LIMIT $limit
        """,
        ("content_id", "title", "creator", *QOE_COLUMNS),
    )
)

_add(
    QuerySpec(
        "qoe_devices",
        "Quality of experience per platform and device type (player plays started in the "
        "range; 'unknown' when the events do not say): startup p50/p95, rebuffer ratio, "
        "rebuffers per hour, failure rate; most played first.",
        f"""
        WITH {_STARTED},
        d AS (SELECT * EXCLUDE (platform, device_type),
                     coalesce(platform, 'unknown') AS platform,
                     coalesce(device_type, 'unknown') AS device_type
              FROM started),
        {_qoe("d", ("platform", "device_type"))}
        SELECT platform, device_type, {", ".join(QOE_COLUMNS)} FROM g
        ORDER BY plays DESC, platform, device_type LIMIT $limit
        """,
        ("platform", "device_type", *QOE_COLUMNS),
    )
)


# -- Yearly stats per listener (docs/metrics.md, "Yearly stats") --------------------------
# Years, days and hours are the requested zone's (``tz``); plays count in the year they
# started, listening time in the year it was played. ``dn`` is a local day number (days
# since 1970-01-01, local), ``lt`` local microseconds.
_YEAR_FACTS = f"""
sd AS (SELECT user_id, creator, content_id, title, play_key, started_us, {_TIMED} AS timed,
              l // {_DAY_US} AS dn, (l // {_HOUR_US}) % 24 AS hour_of_day,
              year({_local_date("l")}) AS year
       FROM (SELECT s.*, {_local("started_us")} AS l FROM started s
             JOIN tzmap m ON m.k = started_us // $step)),
gd AS (SELECT user_id, creator, content_id, title, play_key, playing_s, seg_us,
              l // {_DAY_US} AS dn, (l // {_HOUR_US}) % 24 AS hour_of_day,
              year({_local_date("l")}) AS year
       FROM (SELECT s.*, {_local("seg_us")} AS l FROM segs s
             JOIN tzmap m ON m.k = seg_us // $step)),
years AS (SELECT DISTINCT user_id, year FROM (
            SELECT user_id, year FROM sd UNION ALL SELECT user_id, year FROM gd)
          WHERE user_id IS NOT NULL)"""

_add(
    QuerySpec(
        "yearly_listeners",
        "Per listener and year (requested time zone): plays, listening time, days with "
        "listening, artists, new artists (first played ever that year), longest streak of "
        "consecutive listening days (its first and last day).",
        f"""
        WITH {_STARTED}, {_SEGMENTS}, {_TZMAP}, {_YEAR_FACTS},
        days AS (SELECT DISTINCT user_id, year, dn FROM (
                    SELECT user_id, year, dn FROM sd UNION ALL SELECT user_id, year, dn FROM gd)),
        isl AS (SELECT user_id, year, dn,
                       dn - row_number() OVER (PARTITION BY user_id, year ORDER BY dn) AS island
                FROM days),
        runs AS (SELECT user_id, year, count(*) AS len, min(dn) AS first_dn, max(dn) AS last_dn
                 FROM isl GROUP BY user_id, year, island),
        best AS (SELECT * FROM (
                    SELECT *, row_number() OVER (PARTITION BY user_id, year
                                                 ORDER BY len DESC, first_dn) AS r
                    FROM runs) WHERE r = 1),
        nd AS (SELECT user_id, year, count(*) AS listening_days FROM days GROUP BY ALL),
        p AS (SELECT user_id, year, count(*) AS plays, count(*) FILTER (timed) AS timed_plays
              FROM sd GROUP BY ALL),
        l AS (SELECT user_id, year, sum(playing_s) AS listening_s FROM gd GROUP BY ALL),
        a AS (SELECT user_id, year, count(DISTINCT creator) AS artists FROM (
                SELECT user_id, year, creator FROM sd
                UNION ALL SELECT user_id, year, creator FROM gd) GROUP BY ALL),
        firsts AS (SELECT user_id, creator, min(started_us) AS first_us FROM plays_all
                   WHERE creator IS NOT NULL GROUP BY ALL),
        na AS (SELECT sd.user_id, sd.year, count(DISTINCT sd.creator) AS new_artists
               FROM sd JOIN firsts f ON f.user_id = sd.user_id AND f.creator = sd.creator
                                    AND f.first_us = sd.started_us
               GROUP BY ALL)
        SELECT y.user_id, y.year, coalesce(p.plays, 0) AS plays,
               CASE WHEN p.plays IS NULL THEN coalesce(l.listening_s, 0)
                    ELSE {_known_time("l.listening_s", "p.timed_plays")} END AS listening_s,
               nd.listening_days, coalesce(a.artists, 0) AS artists,
               coalesce(na.new_artists, 0) AS new_artists, b.len AS longest_streak_days,
               DATE '1970-01-01' + b.first_dn::INTEGER AS streak_start,
               DATE '1970-01-01' + b.last_dn::INTEGER AS streak_end
        FROM years y JOIN nd USING (user_id, year) JOIN best b USING (user_id, year)
        LEFT JOIN p USING (user_id, year) LEFT JOIN l USING (user_id, year)
        LEFT JOIN a USING (user_id, year) LEFT JOIN na USING (user_id, year)
        ORDER BY y.year, listening_s DESC NULLS LAST, plays DESC, y.user_id LIMIT $limit
        """,
        (
            "user_id",
            "year",
            "plays",
            "listening_s",
            "listening_days",
            "artists",
            "new_artists",
            "longest_streak_days",
            "streak_start",
            "streak_end",
        ),
    )
)

_add(
    QuerySpec(
        "yearly_top",
        "Per listener and year (requested time zone): top artists and titles, ranked by "
        "listening time and by plays (rows where either rank is within the limit).",
        f"""
        WITH {_STARTED}, {_SEGMENTS}, {_TZMAP}, {_YEAR_FACTS},
        pa AS (SELECT user_id, year, creator AS k, count(*) AS plays,
                      count(*) FILTER (timed) AS timed_plays
               FROM sd WHERE creator IS NOT NULL GROUP BY ALL),
        la AS (SELECT user_id, year, creator AS k, sum(playing_s) AS listening_s
               FROM gd WHERE creator IS NOT NULL GROUP BY ALL),
        pt AS (SELECT user_id, year, content_id AS k, count(*) AS plays,
                      count(*) FILTER (timed) AS timed_plays, {_newest("title", "started_us")}
               FROM sd WHERE content_id IS NOT NULL GROUP BY ALL),
        lt AS (SELECT user_id, year, content_id AS k, sum(playing_s) AS listening_s,
                      {_newest("title", "seg_us")}
               FROM gd WHERE content_id IS NOT NULL GROUP BY ALL),
        rows_ AS (
            SELECT user_id, year, 'artist' AS kind, NULL::VARCHAR AS content_id, k AS name,
                   coalesce(pa.plays, 0) AS plays,
                   {_known_time("la.listening_s", "pa.timed_plays")} AS listening_s
            FROM pa FULL OUTER JOIN la USING (user_id, year, k)
            UNION ALL
            SELECT user_id, year, 'title', k, coalesce(pt.title, lt.title, k),
                   coalesce(pt.plays, 0),
                   {_known_time("lt.listening_s", "pt.timed_plays")}
            FROM pt FULL OUTER JOIN lt USING (user_id, year, k)),
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY user_id, year, kind
                                         ORDER BY listening_s DESC NULLS LAST, plays DESC,
                                                  name, content_id) AS rank_by_time,
                      row_number() OVER (PARTITION BY user_id, year, kind
                                         ORDER BY plays DESC, listening_s DESC NULLS LAST,
                                                  name, content_id) AS rank_by_plays
            FROM rows_ WHERE user_id IS NOT NULL)
        SELECT user_id, year, kind, content_id, name, plays, listening_s, rank_by_time,
               rank_by_plays
        FROM ranked WHERE rank_by_time <= $limit OR rank_by_plays <= $limit
        ORDER BY user_id, year, kind, rank_by_time
        """,
        (
            "user_id",
            "year",
            "kind",
            "content_id",
            "name",
            "plays",
            "listening_s",
            "rank_by_time",
            "rank_by_plays",
        ),
    )
)

_add(
    QuerySpec(
        "listening_clock",
        "Per listener and year (requested time zone): plays and listening time by hour of "
        "day, all 24 hours.",
        f"""
        WITH {_STARTED}, {_SEGMENTS}, {_TZMAP}, {_YEAR_FACTS},
        grid AS (SELECT user_id, year, h AS hour_of_day FROM years, range(24) t(h)),
        p AS (SELECT user_id, year, hour_of_day, count(*) AS plays,
                     count(*) FILTER (timed) AS timed_plays FROM sd GROUP BY ALL),
        l AS (SELECT user_id, year, hour_of_day, sum(playing_s) AS listening_s
              FROM gd GROUP BY ALL)
        SELECT g.user_id, g.year, g.hour_of_day, coalesce(p.plays, 0) AS plays,
               CASE WHEN p.plays IS NULL THEN coalesce(l.listening_s, 0)
                    ELSE {_known_time("l.listening_s", "p.timed_plays")} END AS listening_s
        FROM grid g LEFT JOIN p USING (user_id, year, hour_of_day)
                    LEFT JOIN l USING (user_id, year, hour_of_day)
        ORDER BY g.user_id, g.year, g.hour_of_day
        """,
        ("user_id", "year", "hour_of_day", "plays", "listening_s"),
    )
)


_add(
    QuerySpec(
        "live",
        "Now: concurrent listeners (playing, with an event in the last 60 s), events "
        "processed in the last minute, data freshness and the top content now.",
        "",
        ("concurrent_listeners", "events_last_minute", "freshness_s", "top_content"),
        needs_store=True,
    )
)

_PARAM = re.compile(r"\$([a-z_]+)")


@lru_cache(maxsize=256)
def _whole_hours(tz: str) -> bool:
    """Whether ``tz`` has been a whole number of hours from UTC since 1970 (then its
    hour boundaries are UTC hour boundaries)."""
    zone = ZoneInfo(tz)
    instant = datetime(1970, 1, 1, tzinfo=UTC)
    while instant.year < 2040:
        offset = instant.astimezone(zone).utcoffset() or timedelta(0)
        if offset % timedelta(hours=1):
            return False
        instant += timedelta(days=30)
    return True


def _epoch_us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def query_sql(spec: QuerySpec, tz: str) -> str:
    """The DuckDB SQL of catalog query ``spec`` for IANA zone ``tz`` (its segments cut
    at the zone's hour boundaries), with ``$name`` parameters (:func:`bind_values`).
    Shared by DuckDB (:func:`run_query`) and Spark (:mod:`playpulse.query.spark`)."""
    return spec.sql.replace(
        _SEGS_MARKER, _SEGS_WHOLE_HOURS if _whole_hours(tz) else _SEGS_QUARTER_HOURS
    )


def bind_values(sql: str, params: QueryParams, start: datetime, end: datetime) -> dict[str, Any]:
    """The values of the ``$name`` parameters ``sql`` uses (:func:`query_sql`), for
    ``params`` over the resolved UTC-aware window ``[start, end)``: the parameters'
    own fields, ``start``/``end``, their microseconds since the epoch (``start_us``,
    ``end_us``) and ``step``, the UTC offset grid in microseconds (an hour; a quarter
    hour for zones such as +05:30)."""
    values: dict[str, Any] = params.model_dump()
    values.update(
        start=start,
        end=end,
        start_us=_epoch_us(start),
        end_us=_epoch_us(end),
        step=_HOUR_US if _whole_hours(params.tz) else _HOUR_US // 4,
    )
    return {k: values[k] for k in set(_PARAM.findall(sql))}


def run_query(
    name: str,
    params: QueryParams | None = None,
    settings: Settings | None = None,
    *,
    now: datetime | None = None,
) -> pa.Table:
    """Run catalog query ``name`` and return an Arrow table with its columns.

    ``now`` (UTC-aware) replaces the clock for ``live`` and default ranges. Raises
    :class:`QueryError` for an unknown name or bad parameters.
    """
    from playpulse.query.engine import connect

    spec = CATALOG.get(name)
    if spec is None:
        raise QueryError(f"unknown query '{name}'; known: {', '.join(sorted(CATALOG))}")
    params = params or QueryParams()
    settings = settings or Settings()
    now = now or datetime.now(UTC)
    if spec.name == "live":
        from playpulse.query.live import live_table

        return round_seconds(live_table(settings, now))
    from playpulse.query.window import resolve_window

    start, end = resolve_window(params, settings, now).bounds
    sql = query_sql(spec, params.tz)
    if params.country is None:
        sql = sql.replace(SEGMENT_COUNTRY_FILTER, "TRUE")
    con = connect(settings, since=start.date(), until=end.date(), shared=True)
    try:
        used = bind_values(sql, params, start, end)
        try:
            table: pa.Table = con.sql(sql, params=used).to_arrow_table()
        except duckdb.Error as exc:
            raise QueryError(f"query '{name}' failed: {exc}") from exc
    finally:
        con.close()
    return round_seconds(table.select(list(spec.columns)))
