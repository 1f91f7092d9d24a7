"""DuckDB over the lake, completed by the real-time store.

:func:`connect` returns a DuckDB connection with these views:

- ``events``: every processed, deduplicated event (the lake's ``events`` table; ``late``
  marks events past the allowed lateness, which no metric counts);
- ``plays``: every play: the newest version of each finished play from the lake, plus
  the plays the processor still holds open (from the real-time store), so answers are
  complete; ``segments`` lists each play's playing time by hour;
- ``segments``: the same plays' segments, one row each (``play_key``, the play's
  dimensions, ``foreground``, ``chapter``, ``start``, ``end``, ``playing_s``);
- ``sessions``: listening sessions per user (a new session after more than 30 minutes
  without playback events; cut at 24 h): the lake's closed sessions (newest version of
  each) plus the sessions still open in the real-time store;
- ``shop_events``: the commerce events (``events`` rows of the six commerce types);
- for the catalog: ``plays_all`` (every play, whatever ``since``/``until``) and
  ``play_rows`` (``plays``), both without ``segments``, and ``segment_rows``
  (``segments``); each with ``user_num`` (a small integer per user) and the times as
  microseconds since the epoch (``started_us``, ``start_us``, ``end_us``).

Plays, segments, sessions and shop events are served from DuckDB tables in memory that a
:class:`LakeCache` keeps in step with the lake file by file: each query first lists the
lake's live files (cheap) and loads only the files that appeared, dropping the rows of
files that went away (compaction, a discarded batch). ``events`` is read from Parquet.

On an S3 lake (``lake_url = s3://BUCKET/PREFIX``), DuckDB cannot read the files itself
(its httpfs extension cannot be loaded here): the new files are read through pyarrow's S3
filesystem and handed to DuckDB as Arrow tables; listing S3 gives each file's size and
modification time, so only new or changed files are read, as on a local lake. The
``events`` view (no catalog query reads it: ad hoc SQL) is a pyarrow dataset over the
files, which DuckDB reads as a query needs (columns and row groups); it is registered on
each connection :meth:`LakeCache.connection` hands out.

A lake file that cannot be read (truncated, not Parquet) does not fail queries: it is
moved aside (:meth:`playpulse.lake.writer.LakeWriter.set_aside`, listed by
:func:`playpulse.lake.writer.corrupt_files`) and the other files answer.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from playpulse.config import Settings
from playpulse.errors import LakeError
from playpulse.events.model import COMMERCE_EVENT_TYPES
from playpulse.lake.factory import open_existing_lake
from playpulse.lake.schema import (
    EVENTS_SCHEMA,
    PLAYS_SCHEMA,
    SCHEMAS,
    SESSIONS_SCHEMA,
    play_row,
    session_row,
)
from playpulse.lake.writer import LakeWriter, is_corruption, partition_days
from playpulse.processor.state import open_plays, open_sessions
from playpulse.store.factory import open_store, store_exists

SESSION_COLUMNS = ("user_id", "started_at", "ended_at", "events", "duration_s")
_PLAY_COLUMNS = [n for n in PLAYS_SCHEMA.names if n != "segments"]
_SEGMENT_DIMENSIONS = (
    "play_key",
    "version",
    "user_id",
    "content_id",
    "title",
    "creator",
    "content_type",
    "platform",
    "device_type",
)
_SEGMENT_COLUMNS = (
    *_SEGMENT_DIMENSIONS,
    "foreground",
    "chapter",
    "start",
    "end",
    "playing_s",
    "rate",
)
_SHOP_TYPES = ", ".join(f"'{t}'" for t in COMMERCE_EVENT_TYPES)
_TS = "TIMESTAMP WITH TIME ZONE"

_TABLES_SQL = f"""
CREATE TABLE c_users (user_id VARCHAR PRIMARY KEY, user_num INTEGER);
CREATE TABLE c_plays AS
    SELECT * EXCLUDE (segments), 0 AS user_num, 0::BIGINT AS started_us,
           ''::VARCHAR AS _file, false AS current
    FROM plays_empty;
CREATE TABLE c_segments AS
    SELECT {", ".join(_SEGMENT_DIMENSIONS)}, NULL::BOOLEAN AS foreground,
           NULL::BIGINT AS chapter, NULL::{_TS} AS start, NULL::{_TS} AS "end",
           NULL::DOUBLE AS playing_s, NULL::DOUBLE AS rate, 0 AS user_num,
           0::BIGINT AS start_us, 0::BIGINT AS end_us, ''::VARCHAR AS _file,
           false AS current
    FROM plays_empty;
CREATE TABLE c_sessions AS
    SELECT *, ''::VARCHAR AS _file, false AS current FROM sessions_empty;
CREATE TABLE c_shop AS SELECT *, ''::VARCHAR AS _file FROM events_empty;
"""

# Every file holds its rows' event_date: never take it from the folder name (month
# partitions hold many days).
_READ = "read_parquet($files, filename = true, union_by_name = true, hive_partitioning = false)"
#: Where an S3 lake's new files are: one Arrow table registered under this name, the
#: table's schema plus ``filename``.
_ARROW = "lake_new"


def _load_sql(read: str) -> dict[str, list[str]]:
    """The statements that load new files read by ``read`` (a relation with the table's
    columns and ``filename``) into the cache tables."""
    # Files written before a column existed lack it: reading them BY NAME after an empty
    # relation of the current schema gives null there instead of failing.
    read_plays = f"(SELECT * FROM e_plays UNION ALL BY NAME SELECT * FROM {read})"
    return {
        "plays": [
            # Users get a small integer once (exact distinct counts go faster on integers).
            f"""INSERT INTO c_users
                SELECT user_id, (SELECT coalesce(max(user_num), 0) FROM c_users)
                                + row_number() OVER (ORDER BY user_id)
                FROM (SELECT DISTINCT user_id FROM {read} WHERE user_id IS NOT NULL
                      AND user_id NOT IN (SELECT user_id FROM c_users))""",
            f"""INSERT INTO c_plays
                SELECT {", ".join("p." + c for c in _PLAY_COLUMNS)}, u.user_num,
                       epoch_us(p.started_at), p.filename, false
                FROM {read_plays} p LEFT JOIN c_users u USING (user_id)""",
            f"""INSERT INTO c_segments
                SELECT {", ".join("p." + c for c in _SEGMENT_DIMENSIONS)}, s.foreground,
                       s.chapter, s.start, s."end", s.playing_s, s.rate, u.user_num,
                       epoch_us(s.start), epoch_us(s."end"), p.filename, false
                FROM (SELECT *, unnest(segments) AS s FROM {read_plays}) p
                LEFT JOIN c_users u USING (user_id)""",
        ],
        "sessions": [
            f"INSERT INTO c_sessions BY NAME SELECT * RENAME (filename AS _file), false AS current "
            f"FROM {read}"
        ],
        "events": [
            f"""INSERT INTO c_shop BY NAME SELECT * RENAME (filename AS _file) FROM {read}
                WHERE event_type IN ({_SHOP_TYPES})"""
        ],
    }


_LOAD_SQL = _load_sql(_READ)
_LOAD_SQL_ARROW = _load_sql(_ARROW)
#: The name the events dataset of an S3 lake is registered under on each connection.
_EVENTS_DATASET = "lake_events"

# After rows of some keys came or went: which row of each key is current.
_CURRENT_SQL = {
    "plays": [
        """UPDATE c_plays SET current = (c_plays.version = m.v)
           FROM (SELECT play_key, max(version) AS v FROM c_plays
                 WHERE play_key IN (SELECT k FROM touched) GROUP BY play_key) m
           WHERE c_plays.play_key = m.play_key""",
        """UPDATE c_segments SET current = (c_segments.version = m.v)
           FROM (SELECT play_key, max(version) AS v FROM c_plays
                 WHERE play_key IN (SELECT k FROM touched) GROUP BY play_key) m
           WHERE c_segments.play_key = m.play_key""",
    ],
    "sessions": [
        """UPDATE c_sessions SET current = (c_sessions.version = m.v AND NOT c_sessions.deleted)
           FROM (SELECT user_id, started_at, max(version) AS v FROM c_sessions
                 WHERE user_id IN (SELECT k FROM touched) GROUP BY ALL) m
           WHERE c_sessions.user_id = m.user_id AND c_sessions.started_at = m.started_at"""
    ],
    "events": [],
}
_KEY = {"plays": "play_key", "sessions": "user_id", "events": None}
_CACHE_TABLES = {
    "plays": ("c_plays", "c_segments"),
    "sessions": ("c_sessions",),
    "events": ("c_shop",),
}


class LakeCache:
    """An in-memory DuckDB database holding the lake's plays (``c_plays``), their
    segments (``c_segments``), sessions (``c_sessions``) and commerce events
    (``c_shop``), each row tagged with its file and whether it is the current version,
    plus the plays and sessions still open in the real-time store (``o_plays``,
    ``o_sessions``), with the views of the module docstring over them.

    :meth:`refresh` brings the tables in step with the lake's live files (loading new
    files, dropping the rows of files that are gone) and with the store (when its files
    changed); :meth:`connection` refreshes and returns a connection. ``since`` /
    ``until`` (UTC dates, inclusive) limit the ``plays`` view to plays that started from
    one day before ``since`` (a play that started the evening before still contributes
    segments) and the ``events`` view to files from two days before (a session lasts at
    most 24 h). Thread-safe.
    """

    def __init__(
        self, settings: Settings, *, since: date | None = None, until: date | None = None
    ) -> None:
        self.settings = settings
        self.since, self.until = since, until
        self.db = duckdb.connect()
        self.db.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()
        self._loaded: dict[str, dict[str, tuple[int, int]]] = {t: {} for t in SCHEMAS}
        # Files found unreadable that could not be moved aside: (mtime, size) skipped.
        self._unreadable: dict[str, tuple[int, int]] = {}
        self._store_stamp: tuple[tuple[int, int], ...] | None = None
        self._lake: LakeWriter | None = None
        # S3: the events view's files as a pyarrow dataset (None: none, or a local lake).
        self._events: pads.Dataset | None = None
        # The events view's local files (what a sandbox reads through pyarrow instead).
        self._event_files: list[str] = []
        self._sandboxed = False
        for name, schema in (
            ("plays", PLAYS_SCHEMA),
            ("sessions", SESSIONS_SCHEMA),
            ("events", EVENTS_SCHEMA),
        ):
            self.db.register(f"{name}_empty", schema.empty_table())
        self.db.execute(_TABLES_SQL)
        self.db.execute("CREATE TABLE e_plays AS SELECT * FROM plays_empty")
        self.db.execute("CREATE TABLE o_plays AS SELECT * FROM plays_empty")
        self.db.execute("CREATE TABLE o_sessions AS SELECT * FROM sessions_empty")
        self.db.execute("CREATE TABLE no_events AS SELECT * FROM events_empty")
        for name in ("plays", "sessions", "events"):
            self.db.unregister(f"{name}_empty")
        self.db.execute("CREATE VIEW events AS SELECT * FROM no_events")
        plays_since = (since - timedelta(days=1)).isoformat() if since else "0000-01-01"
        plays_until = until.isoformat() if until else "9999-12-31"
        self.db.execute(
            _VIEWS_SQL.format(
                dates=f"event_date >= '{plays_since}' AND event_date <= '{plays_until}'",
                seg_cols=", ".join(f'"{c}"' for c in _SEGMENT_COLUMNS),
                seg_dims=", ".join(_SEGMENT_DIMENSIONS),
                sess_cols=", ".join(SESSION_COLUMNS),
            )
        )

    def refresh(self) -> None:
        """Load the lake files that are new or changed; drop rows of files now gone;
        reload the open plays and sessions when the store changed. Does nothing once
        :meth:`sandbox` was called (the tables stay as they were then)."""
        with self._lock:
            if self._sandboxed:
                return
            if self._lake is None:
                self._lake = open_existing_lake(self.settings)
            if self._lake is not None:
                for table in ("plays", "sessions", "events"):
                    self._refresh_table(self._lake, table)
            self._refresh_open()
            for loader in list(_TABLE_LOADERS.values()):
                loader(self.settings, self.db)

    def _refresh_table(self, lake: LakeWriter, table: str) -> None:
        # Files compacted away since listed are left out: the next refresh sees it.
        live = {str(path): (mtime, size) for path, mtime, size in lake.live_stats(table)}
        for f, stamp in list(live.items()):
            if self._unreadable.get(f) == stamp:
                del live[f]
        loaded = self._loaded[table]
        gone = [f for f, stamp in loaded.items() if live.get(f) != stamp]
        new = [f for f, stamp in live.items() if loaded.get(f) != stamp]
        if not gone and not new:
            return
        for f in self._apply_readable(lake, table, gone, new):
            del live[f]
            new.remove(f)
        for f in gone:
            loaded.pop(f, None)
        loaded.update({f: live[f] for f in new})
        if table == "events":
            self._events_view(lake, sorted(live))

    def _apply_readable(
        self, lake: LakeWriter, table: str, gone: list[str], new: list[str]
    ) -> list[str]:
        """:meth:`_apply`; when DuckDB cannot read the new files, move the unreadable
        ones aside and apply the rest. Returns the files left out (unreadable or gone
        since listed); re-raises an error no file explains."""
        if not lake.is_local:
            arrow, skipped = self._read_objects(lake, table, new)
            self._apply(table, gone, [f for f in new if f not in skipped], arrow)
            return skipped
        left_out: list[str] = []
        while True:
            try:
                self._apply(table, gone, [f for f in new if f not in left_out])
                return left_out
            except duckdb.Error:
                bad = self._unreadable_files(lake, [f for f in new if f not in left_out])
                if not bad:
                    raise
                left_out.extend(bad)

    def _read_objects(
        self, lake: LakeWriter, table: str, files: list[str]
    ) -> tuple[pa.Table, list[str]]:
        """The rows of the object-store ``files`` of ``table`` as one Arrow table with a
        ``filename`` column, and the files left out: gone since listed, or unreadable
        (moved aside, or remembered when that fails). Raises :class:`LakeError` for an
        error that does not say a file is damaged."""
        schema = SCHEMAS[table]
        parts, left_out = [], []
        for f in files:
            try:
                rows = lake.read_table(Path(f), schema).replace_schema_metadata()
            except FileNotFoundError:
                left_out.append(f)
                continue
            except (pa.ArrowException, OSError) as exc:
                if not is_corruption(exc):
                    raise LakeError(f"cannot read {lake.uri(Path(f))}: {exc}") from exc
                left_out.append(f)
                stamp = lake.stat(Path(f))
                if stamp is not None and lake.set_aside(f, str(exc)) is None:
                    self._unreadable[f] = stamp
                continue
            parts.append(rows.append_column("filename", pa.array([f] * rows.num_rows, pa.string())))
        if not parts:
            empty = schema.empty_table().replace_schema_metadata()
            return empty.append_column("filename", pa.array([], pa.string())), left_out
        return pa.concat_tables(parts), left_out

    def _unreadable_files(self, lake: LakeWriter, files: list[str]) -> list[str]:
        """The ``files`` that are gone or cannot be read, the latter moved aside (or, when
        that fails, remembered so they are not read again until they change)."""
        found = []
        for full in (False, True):  # footers first (cheap), whole files only if need be
            for f in files:
                if lake.stat(Path(f)) is None:
                    found.append(f)
                    continue
                reason = lake.unreadable_reason(f, full=full)
                if reason is None:
                    continue
                found.append(f)
                stamp = lake.stat(Path(f))
                if stamp is None:
                    continue
                if lake.set_aside(f, reason) is None:
                    self._unreadable[f] = stamp
            if found:
                return found
        return found

    def _events_view(self, lake: LakeWriter, files: list[str]) -> None:
        low = self.since - timedelta(days=2) if self.since else None
        kept = []
        for f in files:
            first, last = partition_days(Path(f).parent.name)
            if (low is None or last >= low) and (self.until is None or first <= self.until):
                kept.append(f)
        source = "no_events"
        self._events = None
        self._event_files = kept if lake.is_local else []
        if kept and not lake.is_local:
            self._events = _events_dataset(lake, [Path(f) for f in kept])
            self.db.register(_EVENTS_DATASET, self._events)
            source = _EVENTS_DATASET
        elif kept:
            source = f"read_parquet({_listing(kept)}, hive_partitioning = false)"
        self.db.execute(f"CREATE OR REPLACE VIEW events AS SELECT * FROM {source}")

    def _refresh_open(self) -> None:
        stamp: list[tuple[int, int]] | None = None
        if self.settings.store_is_file:
            # A SQLite store tells whether it changed by its files' stamps; another
            # store (DynamoDB) is read again at every refresh.
            path = Path(self.settings.store_path)
            stamp = []
            for f in (path, path.with_name(path.name + "-wal")):
                try:
                    st = f.stat()
                    stamp.append((st.st_mtime_ns, st.st_size))
                except FileNotFoundError:
                    stamp.append((0, 0))
        if stamp is not None and tuple(stamp) == self._store_stamp:
            return
        plays, sessions = _open_from_store(self.settings)
        con = self.db.cursor()
        try:
            con.register("new_plays", plays)
            con.register("new_sessions", sessions)
            con.execute(
                "BEGIN; DELETE FROM o_plays; INSERT INTO o_plays SELECT * FROM new_plays; "
                "DELETE FROM o_sessions; INSERT INTO o_sessions SELECT * FROM new_sessions; "
                "COMMIT"
            )
        finally:
            con.close()
        self._store_stamp = None if stamp is None else tuple(stamp)

    def _apply(
        self, table: str, gone: list[str], new: list[str], arrow: pa.Table | None = None
    ) -> None:
        """Drop the rows of the ``gone`` files, load the ``new`` ones (read by DuckDB from
        local files, or, when given, from ``arrow``: their rows with ``filename``) and
        mark the current versions of the keys touched; one transaction."""
        con = self.db.cursor()
        try:
            if arrow is not None:
                con.register(_ARROW, arrow)
            con.execute("BEGIN")
            key = _KEY[table]
            main = _CACHE_TABLES[table][0]
            touch = (
                f"INSERT INTO touched SELECT DISTINCT {key} FROM {main} "
                "WHERE _file IN (SELECT unnest($files))"
            )
            if key:
                con.execute("CREATE OR REPLACE TEMP TABLE touched (k VARCHAR)")
            if gone:
                if key:
                    con.execute(touch, {"files": gone})
                for name in _CACHE_TABLES[table]:
                    con.execute(
                        f"DELETE FROM {name} WHERE _file IN (SELECT unnest($files))",
                        {"files": gone},
                    )
            if new:
                if arrow is not None:
                    for sql in _LOAD_SQL_ARROW[table]:
                        con.execute(sql)
                else:
                    for sql in _LOAD_SQL[table]:
                        con.execute(sql, {"files": new})
                if key:
                    con.execute(touch, {"files": new})
            for sql in _CURRENT_SQL[table]:
                con.execute(sql)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def sandbox(self) -> None:
        """Take away the database's file and network access, for ad hoc SQL
        (``playpulse sql``): DuckDB's ``enable_external_access = false``, then
        ``lock_configuration = true`` so no statement can ``SET`` it back (nor set
        anything else). From then on ``read_csv``/``read_parquet`` of a path,
        ``COPY ... TO``/``FROM``, ``ATTACH`` of a file, ``INSTALL``/``LOAD`` and
        ``EXPORT DATABASE`` raise :class:`duckdb.PermissionException`, and ``SET``
        raises :class:`duckdb.InvalidInputException`.

        Every view keeps answering: plays, segments, sessions and shop events are
        in-memory tables; ``events``, which DuckDB read from the lake's Parquet files,
        becomes a pyarrow dataset over the same files (read by pyarrow, the only files
        it reaches). The data is a snapshot: :meth:`refresh` does nothing afterwards.
        Idempotent; refreshes first if the cache was never refreshed."""
        if self._lake is None:
            self.refresh()
        with self._lock:
            if self._sandboxed:
                return
            if self._events is None and self._event_files:
                self._events = _events_dataset_local([Path(f) for f in self._event_files])
                self.db.register(_EVENTS_DATASET, self._events)
                self.db.execute(f"CREATE OR REPLACE VIEW events AS SELECT * FROM {_EVENTS_DATASET}")
            self.db.execute("SET enable_external_access = false")
            self.db.execute("SET lock_configuration = true")
            self._sandboxed = True

    def connection(self) -> duckdb.DuckDBPyConnection:
        """Refresh, then a new connection (cursor) to the database; close it when done."""
        self.refresh()
        with self._lock:
            cursor = self.db.cursor()
            if self._events is not None:
                cursor.register(_EVENTS_DATASET, self._events)
        return cursor

    def extent_us(self) -> tuple[int, int] | None:
        """Refresh, then the earliest and the newest instant of the data the metrics
        count, in microseconds since the epoch (UTC): play starts and ends of playing
        time (the lake's current versions and the open plays) and shop events that are
        not late. ``None`` when there are none. A min/max over the in-memory tables."""
        con = self.connection()
        try:
            row = con.execute(_EXTENT_SQL).fetchone()
        finally:
            con.close()
        if row is None or row[0] is None or row[1] is None:
            return None
        return int(row[0]), int(row[1])


def _listing(files: list[str]) -> str:
    # Views cannot take prepared parameters: quote the paths as SQL literals.
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


_VIEWS_SQL = """
CREATE VIEW open_rows AS
SELECT o.*, coalesce(u.user_num, -dense_rank() OVER (ORDER BY o.user_id)) AS user_num,
       epoch_us(o.started_at) AS started_us
FROM o_plays o LEFT JOIN c_users u USING (user_id);
CREATE VIEW plays_all AS
SELECT * EXCLUDE (segments) FROM open_rows
UNION ALL BY NAME
SELECT * EXCLUDE (_file, current) FROM c_plays
WHERE current AND play_key NOT IN (SELECT play_key FROM o_plays);
CREATE VIEW play_rows AS SELECT * FROM plays_all WHERE {dates};
CREATE VIEW plays AS
SELECT * FROM o_plays
UNION ALL BY NAME
SELECT p.* EXCLUDE (_file, current, user_num, started_us), s.segments
FROM c_plays p
LEFT JOIN (SELECT play_key, list({{'start': start, 'end': "end", 'playing_s': playing_s,
                                  'foreground': foreground, 'chapter': chapter,
                                  'rate': rate}} ORDER BY start) AS segments
           FROM c_segments WHERE current GROUP BY play_key) s USING (play_key)
WHERE current AND {dates} AND play_key NOT IN (SELECT play_key FROM o_plays);
CREATE VIEW segment_rows AS
SELECT * EXCLUDE (_file, current) FROM c_segments
WHERE current AND play_key NOT IN (SELECT play_key FROM o_plays)
UNION ALL BY NAME
SELECT {seg_dims}, user_num, s.foreground, s.chapter, s.start, s."end", s.playing_s,
       s.rate, epoch_us(s.start) AS start_us, epoch_us(s."end") AS end_us
FROM (SELECT *, unnest(segments) AS s FROM open_rows);
CREATE VIEW segments AS SELECT {seg_cols} FROM segment_rows;
CREATE VIEW sessions AS
SELECT {sess_cols} FROM c_sessions WHERE current
UNION ALL SELECT {sess_cols} FROM o_sessions;
CREATE VIEW shop_events AS SELECT * EXCLUDE (_file) FROM c_shop;
"""


_EXTENT_SQL = """
SELECT min(lo), max(hi) FROM (
    SELECT min(started_us) AS lo, max(started_us) AS hi FROM c_plays WHERE current
    UNION ALL SELECT min(start_us), max(end_us) FROM c_segments WHERE current
    UNION ALL SELECT min(started_us), max(started_us) FROM open_rows
    UNION ALL SELECT min(epoch_us(s.start)), max(epoch_us(s."end"))
              FROM (SELECT unnest(segments) AS s FROM o_plays)
    UNION ALL SELECT min(epoch_us(occurred_at)), max(epoch_us(occurred_at))
              FROM c_shop WHERE NOT late
)
"""


def events_connection(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with only the ``events`` view (every live events file; on
    S3, a pyarrow dataset over them, read as a query needs)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    files = []
    lake = open_existing_lake(settings)
    if lake is not None:
        paths = lake.readable(lake.live_files("events"))
        if not lake.is_local and paths:
            con.register(_EVENTS_DATASET, _events_dataset(lake, paths))
            con.execute(f"CREATE VIEW events AS SELECT * FROM {_EVENTS_DATASET}")
            return con
        files = [str(p) for p in paths]
    if files:
        con.execute(
            f"CREATE VIEW events AS SELECT * FROM read_parquet({_listing(files)}, "
            "hive_partitioning = false)"
        )
    else:
        con.register("no_events", EVENTS_SCHEMA.empty_table())
        con.execute("CREATE VIEW events AS SELECT * FROM no_events")
    return con


def _events_dataset(lake: LakeWriter, paths: list[Path]) -> pads.Dataset:
    """The ``events`` files ``paths`` of an object-store lake as one pyarrow dataset with
    :data:`EVENTS_SCHEMA` (columns a file lacks are null). DuckDB pushes columns and
    filters down to it, so a query fetches the footers and the row groups it can match."""
    return pads.dataset(
        [str(p) for p in paths], schema=EVENTS_SCHEMA, format="parquet", filesystem=lake.filesystem
    )


def _events_dataset_local(paths: list[Path]) -> pads.Dataset:
    """The local ``events`` files ``paths`` as one pyarrow dataset with
    :data:`EVENTS_SCHEMA` (what :meth:`LakeCache.sandbox` hands DuckDB instead of
    ``read_parquet``)."""
    return pads.dataset([str(p) for p in paths], schema=EVENTS_SCHEMA, format="parquet")


def _open_from_store(settings: Settings) -> tuple[pa.Table, pa.Table]:
    """The plays and sessions the real-time store holds open, as lake-shaped tables."""
    plays: list[dict[str, object]] = []
    sessions: list[dict[str, object]] = []
    if store_exists(settings):
        store = open_store(settings)
        try:
            plays = [play_row(p, -1) for p in open_plays(store)]
            sessions = [session_row(*s, version=-1) for s in open_sessions(store)]
        finally:
            store.close()
    return (
        pa.Table.from_pylist(plays, schema=PLAYS_SCHEMA),
        pa.Table.from_pylist(sessions, schema=SESSIONS_SCHEMA),
    )


#: Tables other modules keep in every cache's database (see :func:`register_tables`).
_TABLE_LOADERS: dict[str, Callable[[Settings, duckdb.DuckDBPyConnection], None]] = {}


def register_tables(
    name: str, loader: Callable[[Settings, duckdb.DuckDBPyConnection], None]
) -> None:
    """Have every :class:`LakeCache` call ``loader(settings, db)`` at each refresh (under
    its lock, after the lake's tables): it creates or updates tables of its own in the
    cache's database, which catalog queries can then join (the enrichment's content
    catalog: :mod:`playpulse.query.catalog_enrich`). It must create its tables even when
    it has no data, be cheap when nothing changed (compare a file's stamp), and not
    raise. ``name`` identifies the loader: registering it again replaces it."""
    _TABLE_LOADERS[name] = loader


_CACHES: dict[str, LakeCache] = {}
_CACHES_LOCK = threading.Lock()


def shared_cache(settings: Settings) -> LakeCache:
    """The process-wide :class:`LakeCache` of ``settings``' data dir (made on first use)."""
    key = os.path.realpath(settings.data_dir)
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None or cache.settings != settings:
            cache = _CACHES[key] = LakeCache(settings)
        return cache


def connect(
    settings: Settings | None = None,
    *,
    since: date | None = None,
    until: date | None = None,
    shared: bool = False,
    sandbox: bool = False,
    views_only: bool = False,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views of the module docstring.

    ``since`` / ``until``: see :class:`LakeCache` (ignored when ``shared``). ``shared``: use the
    process-wide cache (what the catalog and the API do: later calls load only what
    changed; close the connection when done), else a cache of its own that lives as long
    as the connection (for notebooks and ``playpulse sql``). Works on an empty or
    missing data dir (the views are then empty) and writes nothing, except that it
    moves an unreadable lake file aside (see the module docstring).

    ``sandbox`` (not with ``shared``): without file or network access and with its
    configuration locked, for SQL a user types (:meth:`LakeCache.sandbox`; what
    ``playpulse sql`` uses unless ``--allow-files``).

    ``views_only`` (not with ``shared``): the connection sees only :data:`USER_VIEWS`, in
    a database of their own, ``playpulse`` (``SHOW TABLES`` lists just those, a name
    such as ``c_plays`` is unknown); the engine's tables stay in the database ``memory``
    (``memory.c_plays``), out of sight rather than out of reach (what ``playpulse sql``
    uses).
    """
    settings = settings or Settings()
    if shared:
        if sandbox:
            raise ValueError("connect: a shared connection cannot be sandboxed")
        return shared_cache(settings).connection()
    if shared and views_only:
        raise ValueError("connect: a shared connection cannot be views_only")
    cache = LakeCache(settings, since=since, until=until)
    cache.refresh()
    if sandbox:
        cache.sandbox()
    if views_only:
        _views_only(cache)
    return cache.db


#: The views ad hoc SQL sees (``connect(views_only=True)``; docs/lake.md).
USER_VIEWS = ("events", "plays", "segments", "sessions", "shop_events")


def _views_only(cache: LakeCache) -> None:
    """Attach the in-memory database ``playpulse`` holding a view over the engine's for
    each of :data:`USER_VIEWS`, and make it the current one. When ``events`` reads a
    pyarrow dataset registered on the connection (an S3 lake, a sandbox), the dataset is
    registered as ``events`` itself instead, rather than under the engine's name."""
    db = cache.db
    db.execute("ATTACH ':memory:' AS playpulse")
    for view in USER_VIEWS:
        if view != "events" or cache._events is None:
            db.execute(f"CREATE VIEW playpulse.main.{view} AS SELECT * FROM memory.main.{view}")
    db.execute("USE playpulse")
    if cache._events is not None:
        db.register("events", cache._events)
        db.unregister(_EVENTS_DATASET)
