"""Session length distribution: a histogram over the ``sessions`` view.

A listening session is defined in docs/metrics.md (a new session after more than 30
minutes without playback events; cut every 24 h). Sessions count in the range by their
start. Buckets are fixed so that ranges compare; the last one is open-ended.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from playpulse.config import Settings
from playpulse.query.catalog import QueryError, QueryParams
from playpulse.query.engine import connect
from playpulse.query.window import QueryWindow, resolve_window

#: (label, lower bound in seconds inclusive, upper bound exclusive or None).
BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("< 1 min", 0, 60),
    ("1-5 min", 60, 300),
    ("5-15 min", 300, 900),
    ("15-30 min", 900, 1800),
    ("30-60 min", 1800, 3600),
    ("1-2 h", 3600, 7200),
    ("2-4 h", 7200, 14400),
    ("4 h +", 14400, None),
)

COLUMNS = ("bucket", "min_s", "max_s", "sessions", "share")

DESCRIPTION = (
    "Listening sessions that started in the range, by length (fixed buckets; max_s is "
    "exclusive, null for the last); share is of all those sessions."
)

_SQL = """
WITH b AS (
    SELECT * FROM (VALUES {values}) t(i, bucket, min_s, max_s)
),
s AS (
    SELECT duration_s FROM sessions WHERE started_at >= $start AND started_at < $end
),
c AS (
    SELECT b.i, b.bucket, b.min_s, b.max_s, count(s.duration_s) AS sessions
    FROM b LEFT JOIN s
      ON s.duration_s >= b.min_s AND (b.max_s IS NULL OR s.duration_s < b.max_s)
    GROUP BY b.i, b.bucket, b.min_s, b.max_s
)
SELECT bucket, min_s, max_s, sessions,
       coalesce(sessions / nullif(sum(sessions) OVER (), 0), 0) AS share
FROM c ORDER BY i
"""


def _values() -> str:
    rows = []
    for i, (label, low, high) in enumerate(BUCKETS):
        upper = "NULL::INTEGER" if high is None else str(high)
        rows.append(f"({i}, '{label}', {low}, {upper})")
    return ", ".join(rows)


def session_histogram(params: QueryParams, settings: Settings) -> pa.Table:
    """The histogram of session lengths in ``params``' window (other filters unused; a
    bound left out covers the data, as in :func:`run_query`).

    Raises :class:`QueryError` when DuckDB fails (as :func:`run_query` does)."""
    return session_histogram_in(params, settings)[1]


def session_histogram_in(params: QueryParams, settings: Settings) -> tuple[QueryWindow, pa.Table]:
    """:func:`session_histogram` and the window it covered."""
    window = resolve_window(params, settings)
    start, end = window.bounds
    con = connect(settings, since=start.date(), until=end.date(), shared=True)
    try:
        table: pa.Table = con.sql(
            _SQL.format(values=_values()), params={"start": start, "end": end}
        ).to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(f"the session histogram failed: {exc}") from exc
    finally:
        con.close()
    return window, table.select(list(COLUMNS))
