"""Catalog queries over the content catalog (:mod:`playpulse.enrich`), and the catalog's
SQL in BigQuery's dialect.

Importing this module registers, in :data:`playpulse.query.catalog.CATALOG`:

- ``content_catalog``: per content id, what the events say (latest title, creator,
  album, duration, chapters), what was imported (genres, release date, ISRC,
  MusicBrainz ids), its genre and mood (imported genre first, else the tag with the
  highest confidence) and its plays, listeners and listening time in the range;
- ``similar_content``: "listeners also played" of ``content_id`` (all titles when
  unset): each neighbour's score, shared sessions and shared listeners, by rank;
- ``genre_metrics`` and ``mood_metrics``: plays, listeners and listening time in the
  range per genre (mood), titles without one as ``unknown``.

They read the tables ``enrich_seen``, ``enrich_meta``, ``enrich_similar`` and
``enrich_tags``: copies of the catalog's SQLite tables that :func:`load_tables` keeps in
every query engine cache (registered with
:func:`playpulse.query.engine.register_tables`; reloaded when the catalog file changed,
empty when there is none).

:func:`bigquery_sql` gives any catalog query's SQL in BigQuery's dialect (sqlglot), with
the engine's views (``play_rows``, ``segment_rows``, ``plays_all``) written out over the
lake's ``plays`` table (every version of each play, as the Parquet lake holds it) and
``$name`` parameters as ``@name`` query parameters.
"""

from __future__ import annotations

import os
import sqlite3

import duckdb
import pyarrow as pa

from playpulse.config import Settings
from playpulse.enrich.catalog import catalog_path
from playpulse.query.catalog import CATALOG, QueryError, QuerySpec, query_sql, register
from playpulse.query.engine import register_tables

#: The queries this module registers: they read the ``enrich_*`` tables, which only the
#: DuckDB engine holds (Spark and Athena have no such tables: leave these out there).
QUERIES = frozenset({"content_catalog", "similar_content", "genre_metrics", "mood_metrics"})

#: The catalog's tables as the engine holds them: DuckDB name -> (SQLite table, schema).
TABLES: dict[str, tuple[str, pa.Schema]] = {
    "enrich_seen": (
        "seen",
        pa.schema(
            [
                ("content_id", pa.string()),
                ("content_type", pa.string()),
                ("title", pa.string()),
                ("creator", pa.string()),
                ("album", pa.string()),
                ("duration_s", pa.float64()),
                ("chapters", pa.int64()),
                ("plays", pa.int64()),
                ("last_event_at", pa.string()),
            ]
        ),
    ),
    "enrich_meta": (
        "meta",
        pa.schema(
            [
                ("content_id", pa.string()),
                ("genres", pa.string()),
                ("release_date", pa.string()),
                ("isrc", pa.string()),
                ("musicbrainz_recording_id", pa.string()),
                ("musicbrainz_release_id", pa.string()),
                ("imported_at", pa.string()),
            ]
        ),
    ),
    "enrich_similar": (
        "similar",
        pa.schema(
            [
                ("content_id", pa.string()),
                ("other_id", pa.string()),
                ("score", pa.float64()),
                ("shared_sessions", pa.int64()),
                ("shared_listeners", pa.int64()),
                ("rank", pa.int64()),
            ]
        ),
    ),
    "enrich_tags": (
        "tags",
        pa.schema(
            [
                ("content_id", pa.string()),
                ("kind", pa.string()),
                ("label", pa.string()),
                ("confidence", pa.float64()),
                ("provider", pa.string()),
                ("model", pa.string()),
                ("prompt_version", pa.string()),
                ("tagged_at", pa.string()),
                ("text_hash", pa.string()),
            ]
        ),
    ),
}


def _stamp(settings: Settings) -> str:
    path = catalog_path(settings)
    parts = []
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            st = os.stat(p)
        except OSError:
            parts.append("-")
        else:
            parts.append(f"{st.st_mtime_ns}:{st.st_size}")
    return f"{path}|{'|'.join(parts)}"


def _read(path: str, table: str, schema: pa.Schema) -> pa.Table:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        cols = ", ".join(schema.names)
        rows = db.execute(f"SELECT {cols} FROM {table}").fetchall()
    finally:
        db.close()
    return pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows], schema)


def load_tables(settings: Settings, db: duckdb.DuckDBPyConnection) -> None:
    """Create or refresh the ``enrich_*`` tables in engine database ``db`` from the
    catalog of ``settings``' data dir (empty tables when there is none), only when the
    catalog file changed since the last load. Never raises: an unreadable catalog
    leaves the tables empty (and the next refresh tries again)."""
    stamp = _stamp(settings)
    try:
        rows = db.execute("SELECT stamp FROM enrich_stamp").fetchall()
    except duckdb.Error:
        rows = []
    if rows and rows[0][0] == stamp:
        return
    path = catalog_path(settings)
    for name, (table, schema) in TABLES.items():
        data = schema.empty_table()
        if path.is_file():
            try:
                data = _read(str(path), table, schema)
            except (sqlite3.Error, pa.ArrowException):
                stamp = "unreadable"
        db.register("enrich_new", data)
        try:
            db.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM enrich_new")
        finally:
            db.unregister("enrich_new")
    db.execute("CREATE OR REPLACE TABLE enrich_stamp AS SELECT ? AS stamp", [stamp])


# A title's genre: its first imported genre, else its best genre tag; the same for mood
# (moods are never imported). ``*_source``: 'imported' or the tagging provider.
_LABELS = """
best_tags AS (
    SELECT content_id, kind, arg_max(label, confidence) AS label, max(confidence) AS confidence,
           arg_max(provider, confidence) AS provider
    FROM enrich_tags GROUP BY content_id, kind
),
labels AS (
    SELECT ids.content_id,
           coalesce(json_extract_string(m.genres, '$[0]'), g.label) AS genre,
           CASE WHEN json_extract_string(m.genres, '$[0]') IS NOT NULL THEN 1.0
                ELSE g.confidence END AS genre_confidence,
           CASE WHEN json_extract_string(m.genres, '$[0]') IS NOT NULL THEN 'imported'
                ELSE g.provider END AS genre_source,
           md.label AS mood, md.confidence AS mood_confidence
    FROM (SELECT content_id FROM enrich_seen UNION SELECT content_id FROM enrich_meta) ids
    LEFT JOIN enrich_meta m USING (content_id)
    LEFT JOIN best_tags g ON g.content_id = ids.content_id AND g.kind = 'genre'
    LEFT JOIN best_tags md ON md.content_id = ids.content_id AND md.kind = 'mood'
)"""
_FILTER = """($content_id IS NULL OR content_id = $content_id)
    AND ($creator IS NULL OR creator = $creator)
    AND ($content_type IS NULL OR content_type = $content_type)"""
# Plays that started in the range and playing time inside it, per content id.
_ACTIVITY = f"""
started AS (
    SELECT content_id, count(*) AS plays, count(DISTINCT user_id) AS listeners
    FROM play_rows
    WHERE started_at >= $start AND started_at < $end AND {_FILTER}
    GROUP BY content_id
),
listened AS (
    SELECT content_id,
           sum(epoch_us(least("end", $end)) - epoch_us(greatest(start, $start))) / 1e6
               AS listening_s
    FROM segment_rows
    WHERE "end" > $start AND start < $end AND {_FILTER}
    GROUP BY content_id
)"""

SPECS: list[QuerySpec] = []

SPECS.append(
    QuerySpec(
        "content_catalog",
        "The content catalog: per title the latest title, creator, album, duration and "
        "chapters seen in events, imported genres, release date, ISRC and MusicBrainz ids, "
        "its genre and mood with their confidence and source, and its plays, listeners and "
        "listening time in the range (titles played in the range or imported).",
        f"""
        WITH {_LABELS}, {_ACTIVITY},
        ids AS (SELECT content_id FROM enrich_seen UNION SELECT content_id FROM enrich_meta
                UNION SELECT content_id FROM started)
        SELECT ids.content_id, s.content_type, s.title, s.creator, s.album, s.duration_s,
               s.chapters, m.genres, m.release_date, m.isrc, m.musicbrainz_recording_id,
               m.musicbrainz_release_id, l.genre, l.genre_confidence, l.genre_source, l.mood,
               l.mood_confidence, coalesce(a.plays, 0) AS plays,
               coalesce(a.listeners, 0) AS listeners,
               coalesce(t.listening_s, 0) AS listening_s
        FROM ids
        LEFT JOIN enrich_seen s USING (content_id)
        LEFT JOIN enrich_meta m USING (content_id)
        LEFT JOIN labels l USING (content_id)
        LEFT JOIN started a USING (content_id)
        LEFT JOIN listened t USING (content_id)
        WHERE ($content_id IS NULL OR ids.content_id = $content_id)
          AND ($creator IS NULL OR s.creator = $creator)
          AND ($content_type IS NULL OR s.content_type = $content_type)
        ORDER BY plays DESC, listening_s DESC, ids.content_id
        LIMIT $limit
        """,
        (
            "content_id",
            "content_type",
            "title",
            "creator",
            "album",
            "duration_s",
            "chapters",
            "genres",
            "release_date",
            "isrc",
            "musicbrainz_recording_id",
            "musicbrainz_release_id",
            "genre",
            "genre_confidence",
            "genre_source",
            "mood",
            "mood_confidence",
            "plays",
            "listeners",
            "listening_s",
        ),
        needs_store=True,
    )
)

SPECS.append(
    QuerySpec(
        "similar_content",
        "Listeners also played: for content_id (every title when unset) the titles most "
        "often played in the same listener sessions (cosine over session co-occurrence, at "
        "least 2 shared sessions), with the shared sessions and shared listeners; computed "
        "by the enrichment job (playpulse enrich run), not for the time range.",
        """
        SELECT s.content_id, s.rank, s.other_id AS similar_content_id, n.title, n.creator,
               s.score, s.shared_sessions, s.shared_listeners
        FROM enrich_similar s LEFT JOIN enrich_seen n ON n.content_id = s.other_id
        WHERE ($content_id IS NULL OR s.content_id = $content_id)
        ORDER BY s.content_id, s.rank
        LIMIT $limit
        """,
        (
            "content_id",
            "rank",
            "similar_content_id",
            "title",
            "creator",
            "score",
            "shared_sessions",
            "shared_listeners",
        ),
        needs_store=True,
    )
)


def _by_label(kind: str) -> str:
    return f"""
        WITH {_LABELS}, {_ACTIVITY},
        ids AS (SELECT content_id FROM started UNION SELECT content_id FROM listened)
        SELECT coalesce(l.{kind}, 'unknown') AS {kind}, count(DISTINCT ids.content_id) AS titles,
               coalesce(sum(a.plays), 0)::BIGINT AS plays,
               coalesce(sum(t.listening_s), 0) AS listening_s
        FROM ids
        LEFT JOIN labels l USING (content_id)
        LEFT JOIN started a USING (content_id)
        LEFT JOIN listened t USING (content_id)
        GROUP BY ALL
        ORDER BY listening_s DESC, plays DESC, {kind}
        LIMIT $limit
        """


for _kind in ("genre", "mood"):
    SPECS.append(
        QuerySpec(
            f"{_kind}_metrics",
            f"Per {_kind} (imported genre first, else the tag; 'unknown' without one): the "
            f"titles played, plays started and listening time in the range.",
            _by_label(_kind),
            (_kind, "titles", "plays", "listening_s"),
            needs_store=True,
        )
    )


def register_queries() -> None:
    """Add :data:`SPECS` to the catalog (those not there yet) and :func:`load_tables` to
    every engine cache. Called when this module is imported; idempotent."""
    for spec in SPECS:
        if spec.name not in CATALOG:
            register(spec)
    register_tables("enrich", load_tables)


def unregister_queries() -> None:
    """Take :data:`SPECS` out of the catalog again (for tests that need the catalog
    without them; the engine caches keep their ``enrich_*`` tables, which nothing else
    reads)."""
    for spec in SPECS:
        if CATALOG.get(spec.name) is spec:
            del CATALOG[spec.name]


register_queries()


# The engine's views (playpulse.query.engine) over the lake's plays table, for
# warehouses that hold the lake's Parquet tables (BigQuery external or loaded tables).
_VIEWS_FOR_WAREHOUSE = {
    "plays_current": """SELECT * FROM plays WHERE true
        QUALIFY row_number() OVER (PARTITION BY play_key ORDER BY version DESC) = 1""",
    "plays_all": """SELECT * EXCLUDE (segments), epoch_us(started_at) AS started_us,
        dense_rank() OVER (ORDER BY user_id) AS user_num FROM plays_current""",
    "play_rows": "SELECT * FROM plays_all",
    "segment_rows": """SELECT p.play_key, p.version, p.user_id, p.content_id, p.title,
        p.creator, p.content_type, p.platform, p.device_type, s.foreground, s.chapter,
        s.start, s."end", s.playing_s, s.rate, p.user_num,
        epoch_us(s.start) AS start_us, epoch_us(s."end") AS end_us
        FROM (SELECT *, dense_rank() OVER (ORDER BY user_id) AS user_num
              FROM plays_current) p, unnest(p.segments) AS u(s)""",
}


def bigquery_sql(name: str, tz: str = "UTC") -> str:
    """The SQL of catalog query ``name`` in BigQuery's dialect (see the module
    docstring): the DuckDB SQL (:func:`playpulse.query.catalog.query_sql` for zone
    ``tz``) with the engine views it uses prepended as common table expressions,
    transpiled by sqlglot; ``epoch_us`` becomes ``UNIX_MICROS``. Parameters stay named
    (``@start``, ``@end``, ``@start_us``, ``@content_id``, ...: the values of
    :func:`playpulse.query.catalog.bind_values`). Raises :class:`QueryError` for an
    unknown name or a query with no SQL (``live``)."""
    import sqlglot
    from sqlglot import exp

    spec = CATALOG.get(name)
    if spec is None:
        raise QueryError(f"unknown query '{name}'; known: {', '.join(sorted(CATALOG))}")
    if not spec.sql.strip():
        raise QueryError(f"query '{name}' is computed in Python: it has no SQL")
    tree = sqlglot.parse_one(query_sql(spec, tz), read="duckdb")
    used = {t.name for t in tree.find_all(exp.Table)}
    needed = [v for v in ("play_rows", "segment_rows", "plays_all") if v in used]
    if needed:
        names = ["plays_current", *dict.fromkeys(["plays_all", *needed])]
        ctes = [
            exp.CTE(
                this=sqlglot.parse_one(_VIEWS_FOR_WAREHOUSE[n], read="duckdb"),
                alias=exp.TableAlias(this=exp.to_identifier(n)),
            )
            for n in names
        ]
        with_ = tree.args.get("with_")
        if with_ is None:
            tree.set("with_", exp.With(expressions=ctes))
        else:
            with_.set("expressions", ctes + list(with_.expressions))
    for fn in list(tree.find_all(exp.Anonymous)):
        if fn.name.lower() == "epoch_us":
            fn.set("this", "UNIX_MICROS")
    return tree.sql(dialect="bigquery", pretty=True)
