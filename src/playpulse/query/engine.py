"""DuckDB over the lake, completed by the real-time store.

:func:`connect` returns a DuckDB connection with three views:

- ``events``: every processed, deduplicated event (the lake's ``events`` table; ``late``
  marks events past the allowed lateness, which no metric counts);
- ``plays``: every play: the newest version of each finished play from the lake, plus
  the plays the processor still holds open (from the real-time store), so answers are
  complete; ``segments`` lists each play's playing time by hour;
- ``sessions``: listening sessions per user, from the non-late playback events (a new
  session after more than 30 minutes without events; sessions are cut every 24 h from
  their start).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa

from playpulse.config import Settings
from playpulse.events.model import PLAYBACK_EVENT_TYPES
from playpulse.lake.schema import EVENTS_SCHEMA, PLAYS_SCHEMA, SCHEMAS, play_row
from playpulse.lake.writer import LakeWriter
from playpulse.processor.pipeline import open_plays
from playpulse.store.sqlite import SQLiteStore

_PLAYBACK = ", ".join(f"'{t}'" for t in PLAYBACK_EVENT_TYPES)

SESSIONS_SQL = f"""
CREATE OR REPLACE VIEW sessions AS
WITH e AS (
    SELECT actor_id AS user_id, occurred_at
    FROM events WHERE NOT late AND event_type IN ({_PLAYBACK})
), gaps AS (
    SELECT *, CASE WHEN occurred_at - lag(occurred_at) OVER w > INTERVAL 30 MINUTE
                   OR lag(occurred_at) OVER w IS NULL THEN 1 ELSE 0 END AS starts
    FROM e WINDOW w AS (PARTITION BY user_id ORDER BY occurred_at)
), numbered AS (
    SELECT *, sum(starts) OVER (PARTITION BY user_id ORDER BY occurred_at
                                ROWS UNBOUNDED PRECEDING) AS gap_session
    FROM gaps
), capped AS (
    SELECT *, floor(epoch(occurred_at - min(occurred_at) OVER (PARTITION BY user_id,
        gap_session)) / 86400) AS day_piece
    FROM numbered
)
SELECT user_id, min(occurred_at) AS started_at, max(occurred_at) AS ended_at,
       count(*) AS events, epoch(max(occurred_at) - min(occurred_at)) AS duration_s
FROM capped GROUP BY user_id, gap_session, day_piece
"""


def _files(lake: LakeWriter, table: str, since: date | None, until: date | None) -> list[str]:
    out = []
    for path in lake.live_files(table):
        day = date.fromisoformat(path.parent.name.removeprefix("event_date="))
        if (since is None or day >= since) and (until is None or day <= until):
            out.append(str(path))
    return out


def _register(
    con: duckdb.DuckDBPyConnection, name: str, files: list[str], schema: pa.Schema
) -> None:
    if files:
        # Views cannot take prepared parameters: quote the paths as SQL literals.
        listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(
            f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet([{listing}], "
            "hive_partitioning = false, union_by_name = true)"
        )
    else:
        con.register(f"{name}_empty", schema.empty_table())
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {name}_empty")


def connect(
    settings: Settings | None = None,
    *,
    since: date | None = None,
    until: date | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the ``events``, ``plays`` and ``sessions`` views.

    ``since`` / ``until`` (UTC dates, inclusive) limit which lake files are read, for
    speed: plays from one day before ``since`` (a play that started the evening before
    still contributes its segments), events from two days before (sessions are at most
    24 h long, so every session that starts in the range is rebuilt whole). The view
    ``plays_all`` reads every play regardless (first plays, cohorts). Works on an empty
    or missing data dir (the views are then empty).
    """
    settings = settings or Settings()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    lake = LakeWriter(settings.lake_path, SCHEMAS) if settings.lake_path.exists() else None
    plays_since = since - timedelta(days=1) if since else None
    events_since = since - timedelta(days=2) if since else None
    event_files = _files(lake, "events", events_since, until) if lake else []
    play_files = _files(lake, "plays", plays_since, until) if lake else []
    all_play_files = _files(lake, "plays", None, None) if lake else []
    _register(con, "events", event_files, EVENTS_SCHEMA)
    _register(con, "lake_plays", play_files, PLAYS_SCHEMA)
    _register(con, "lake_plays_all", all_play_files, PLAYS_SCHEMA)
    open_rows = []
    if Path(settings.store_path).exists():
        store = SQLiteStore(settings.store_path)
        try:
            open_rows = [play_row(p, -1) for p in open_plays(store)]
        finally:
            store.close()
    con.register("open_plays", pa.Table.from_pylist(open_rows, schema=PLAYS_SCHEMA))
    for view, source in (("plays", "lake_plays"), ("plays_all", "lake_plays_all")):
        con.execute(
            f"""
            CREATE OR REPLACE VIEW {view} AS
            SELECT * EXCLUDE (rn) FROM (
                SELECT *, row_number() OVER (PARTITION BY play_key ORDER BY version DESC) AS rn
                FROM {source}
                WHERE play_key NOT IN (SELECT play_key FROM open_plays)
            ) WHERE rn = 1
            UNION ALL BY NAME
            SELECT * FROM open_plays
            """
        )
    con.execute(SESSIONS_SQL)
    return con
