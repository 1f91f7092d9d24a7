"""The metric catalog on Apache Spark: the same queries, transpiled, over the same lake.

:func:`run_query_spark` answers a catalog query like
:func:`~playpulse.query.catalog.run_query` (same parameters, same columns, same rows),
with Spark (pyspark, local mode) doing the work, for history too large for one DuckDB
process. ``playpulse query NAME --engine spark`` calls it.

How the answer stays the same as DuckDB's:

- **Same SQL.** Each query is the catalog's DuckDB SQL
  (:func:`~playpulse.query.catalog.query_sql`) transpiled by sqlglot (``read="duckdb"``,
  ``write="spark"``), then fixed where sqlglot's Spark output is wrong or missing
  (:func:`to_spark_sql`, transforms listed there). Parameters are the same values
  (:func:`~playpulse.query.catalog.bind_values`), bound as Spark's named parameters.
- **Same tables.** Spark reads the lake's Parquet files itself: the live, readable files
  the lake lists (:meth:`~playpulse.lake.writer.LakeWriter.live_files`,
  :meth:`~playpulse.lake.writer.LakeWriter.readable`), with the lake's schema (a file
  written before a column existed answers null there). The loaded tables carry the same
  columns as DuckDB's cache (``c_plays``, ``c_segments``, ``c_sessions``, ``c_shop``) and
  the same newest-version rule (a play's rows of its highest ``version``; a session's of
  its highest ``version`` unless deleted). The plays and sessions only the real-time store
  holds (still open) come from the same Arrow tables as DuckDB's. The views over them
  (``plays_all``, ``play_rows``, ``segment_rows``, ``sessions``, ``shop_events``...) are
  the engine's own view SQL (:mod:`playpulse.query.engine`), transpiled the same way;
  Spark SQL has no ``UNION ALL BY NAME``, so such a union is built with
  :meth:`pyspark.sql.DataFrame.unionByName` of its transpiled sides.
- **Same numbers.** Playing time is an exact decimal on both engines and every answer
  goes through :func:`~playpulse.query.rounding.round_seconds`; averages are doubles as
  DuckDB's are; rates may differ in the last bits of a double (summing order).

``live`` reads only the real-time store (no SQL): it is answered as on DuckDB
(:func:`~playpulse.query.live.live_table`). A range bound left out covers the data
(:func:`~playpulse.query.window.resolve_window`, whose extent DuckDB's cache reads).

One Spark session per process (:func:`spark_session`: ``local[2]``, 1 GB driver, UI
off, session time zone UTC, quiet logs), made on first use and stopped at exit; each
query runs in a child session (:meth:`pyspark.sql.SparkSession.newSession`: the same
JVM, views of its own), so queries on different data dirs do not see each other's views.
Spark here reads a local lake only (``s3://`` needs the hadoop-aws jars).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from playpulse.config import Settings
from playpulse.events.model import COMMERCE_EVENT_TYPES
from playpulse.lake.schema import EVENTS_SCHEMA, PLAYS_SCHEMA, SCHEMAS, SESSIONS_SCHEMA
from playpulse.lake.writer import LakeWriter
from playpulse.query.catalog import (
    CATALOG,
    QueryError,
    QueryParams,
    bind_values,
    query_sql,
)
from playpulse.query.rounding import round_seconds

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: Spark settings of the process's session (:func:`spark_session`). The SQL relies on
#: the session time zone UTC (set again on every session the queries run in).
SPARK_CONFIG: Mapping[str, str] = {
    "spark.master": "local[2]",
    "spark.app.name": "playpulse",
    "spark.driver.memory": "1g",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.ansi.enabled": "true",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
}

_SESSION: SparkSession | None = None
_SESSION_LOCK = threading.Lock()


def spark_session() -> SparkSession:
    """The process's Spark session (made on first use, stopped at exit by
    :func:`stop_spark`): :data:`SPARK_CONFIG`. Starting it starts a JVM (seconds).
    Raises :class:`QueryError` when pyspark is not installed or Spark does not start."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is not None:
            return _SESSION
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise QueryError(
                "the Spark engine needs pyspark: pip install 'playpulse[spark]'"
            ) from None
        builder = SparkSession.builder
        for key, value in SPARK_CONFIG.items():
            builder = builder.config(key, value)
        try:
            session = builder.getOrCreate()
        except Exception as exc:  # the JVM's errors come as several Py4J/pyspark types
            raise QueryError(
                f"Spark did not start ({SPARK_CONFIG['spark.master']}): {exc}"
            ) from exc
        session.sparkContext.setLogLevel("FATAL")
        # pyspark logs each failed statement's context as JSON with the JVM's stack; the
        # failure reaches the caller as a one-line QueryError instead.
        logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
        _SESSION = session
        atexit.register(stop_spark)
        return session


def stop_spark() -> None:
    """Stop the process's Spark session, if one was started, with the data dirs'
    sessions (:func:`lake_session`); the next :func:`spark_session` starts a new one."""
    global _SESSION
    with _LAKES_LOCK:  # taken before the session's lock, as lake_session does
        _LAKES.clear()
        with _SESSION_LOCK:
            if _SESSION is not None:
                _SESSION.stop()
                _SESSION = None


# --- transpiling ---------------------------------------------------------------------------


def _range_table(node: exp.Expression) -> exp.Expression:
    """DuckDB's ``range(a, b, s) t(x)`` as a table: sqlglot makes it an EXPLODE that loses
    the column alias; Spark has the same table function (end exclusive), so keep it."""
    if isinstance(node, exp.Table) and isinstance(node.this, exp.GenerateSeries):
        series = node.this
        if series.args.get("is_end_exclusive"):
            args = [series.args["start"], series.args["end"]]
            if series.args.get("step") is not None:
                args.append(series.args["step"])
            node.set("this", exp.Anonymous(this="RANGE", expressions=args))
    return node


def _functions(node: exp.Expression) -> exp.Expression:
    """Functions sqlglot passes through unchanged but Spark names otherwise."""
    # Changed in place: sqlglot's transform does not visit the children of a new node.
    if isinstance(node, exp.Anonymous):
        name = str(node.this).upper()
        if name == "EPOCH_US" and len(node.expressions) == 1:
            # microseconds since the epoch of a timestamp
            node.set("this", "UNIX_MICROS")
        elif name == "TIMEZONE" and len(node.expressions) == 2:
            # timezone(zone, instant) = the local wall-clock time of the instant in the
            # zone; Spark: from_utc_timestamp(instant, zone) (session zone UTC)
            zone, instant = node.expressions
            node.set("this", "FROM_UTC_TIMESTAMP")
            node.set("expressions", [instant, zone])
    return node


def _json_path(node: exp.Expression) -> str:
    text = node.sql("spark")
    return text[1:-1] if text.startswith("'") and text.endswith("'") else text


def _get_json(document: exp.Expression, path: str) -> exp.Expression:
    return exp.Anonymous(
        this="GET_JSON_OBJECT", expressions=[document.copy(), exp.Literal.string(path)]
    )


def _is_not_null(value: exp.Expression) -> exp.Expression:
    return exp.Not(this=exp.Is(this=value, expression=exp.Null()))


def _json(node: exp.Expression) -> exp.Expression:
    """``json_type(j, path)``: ``'ARRAY'``, ``'OBJECT'``, ``'SCALAR'`` for any other
    value (DuckDB names the scalar's type) and null for a missing path or a JSON null
    (DuckDB: ``'NULL'``); so a comparison with ``'ARRAY'`` or ``'OBJECT'`` decides as on
    DuckDB. ``json_extract_string(j, 'path[*]')``: the array's elements as strings, an
    empty list when the path holds no array, null for a null document (Spark's
    get_json_object unwraps a one-element ``[*]`` match, so the array is read whole)."""
    if isinstance(node, exp.JSONType):
        value = _get_json(node.this, _json_path(node.expression))
        kinds = (("JSON_ARRAY_LENGTH", "ARRAY"), ("JSON_OBJECT_KEYS", "OBJECT"))
        return exp.Case(
            ifs=[
                exp.If(
                    this=_is_not_null(exp.Anonymous(this=test, expressions=[value.copy()])),
                    true=exp.Literal.string(kind),
                )
                for test, kind in kinds
            ]
            + [exp.If(this=_is_not_null(value.copy()), true=exp.Literal.string("SCALAR"))]
        )
    if isinstance(node, exp.JSONExtractScalar):
        path = _json_path(node.expression)
        if path.endswith("[*]"):
            elements = exp.Anonymous(
                this="FROM_JSON",
                expressions=[
                    _get_json(node.this, path[:-3]),
                    exp.Literal.string("array<string>"),
                ],
            )
            empty = exp.Cast(this=exp.Array(expressions=[]), to=exp.DataType.build("ARRAY<STRING>"))
            return exp.Case(
                ifs=[
                    exp.If(
                        this=exp.Is(this=node.this.copy(), expression=exp.Null()), true=exp.Null()
                    )
                ],
                default=exp.Coalesce(this=elements, expressions=[empty]),
            )
    return node


def _arrays(node: exp.Expression) -> exp.Expression:
    """``list_has_any(a, b)``: Spark's ``&&`` is not an operator; arrays_overlap of the
    arrays without nulls (DuckDB's list_has_any ignores null elements)."""
    if isinstance(node, exp.ArrayOverlaps):
        sides = [
            exp.Anonymous(this="ARRAY_COMPACT", expressions=[side.copy()])
            for side in (node.this, node.expression)
        ]
        return exp.Anonymous(this="ARRAYS_OVERLAP", expressions=sides)
    return node


def _aggregates(node: exp.Expression) -> exp.Expression:
    """``arg_min``/``arg_max`` by a row ``(a, b)``: a struct in Spark (ordered field by
    field, as DuckDB orders rows). ``avg`` is a double in DuckDB (Spark keeps decimals
    decimal): cast."""
    if isinstance(node, exp.ArgMax | exp.ArgMin) and isinstance(node.expression, exp.Tuple):
        fields = [e.copy() for e in node.expression.expressions]
        node.set("expression", exp.Struct(expressions=fields))
    return node


def _double_averages(tree: exp.Expr) -> exp.Expr:
    """``avg(x) [FILTER (...)]`` as DuckDB computes it: the exact sum as a double over
    the count (Spark's avg of a decimal is a decimal rounded to its scale + 4 digits);
    under OVER, Spark's avg cast to a double."""
    double = exp.DataType.build("DOUBLE")
    for avg in list(tree.find_all(exp.Avg)):
        target: exp.Expr = avg
        where = None
        if isinstance(avg.parent, exp.Filter) and avg.arg_key == "this":
            target, where = avg.parent, avg.parent.expression
        if isinstance(target.parent, exp.Window) and target.arg_key == "this":
            target = target.parent
            new: exp.Expr = exp.Cast(this=target.copy(), to=double)
        else:
            parts: list[exp.Expr] = [exp.Sum(this=avg.this.copy()), exp.Count(this=avg.this.copy())]
            if where is not None:
                parts = [exp.Filter(this=part, expression=where.copy()) for part in parts]
            new = exp.Div(this=exp.Cast(this=parts[0], to=double), expression=parts[1])
            new = exp.Paren(this=new)
        if target is tree:
            return new
        target.replace(new)
    return tree


def _date_difference(node: exp.Expression) -> exp.Expression:
    """``date - date``: days (an integer) in DuckDB, an interval in Spark: datediff.
    Needs the operands' types (:func:`annotate_types` on a qualified tree)."""
    if isinstance(node, exp.Sub):
        left, right = node.this, node.expression
        if (
            left.type is not None
            and right.type is not None
            and left.type.is_type(exp.DataType.Type.DATE)
            and right.type.is_type(exp.DataType.Type.DATE)
        ):
            return exp.Anonymous(this="DATEDIFF", expressions=[left.copy(), right.copy()])
    return node


_TRANSFORMS: tuple[Callable[[exp.Expression], exp.Expression], ...] = (
    _range_table,
    _functions,
    _json,
    _arrays,
    _aggregates,
)


def to_spark_sql(sql: str, schema: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """DuckDB SQL ``sql`` (one statement) as Spark SQL: sqlglot's transpile
    (``read="duckdb"``, ``write="spark"``) with these fixes, each a sqlglot transform:

    - ``range(a, b[, s]) AS t(x)`` in FROM stays Spark's ``range`` table function;
    - ``epoch_us(ts)`` -> ``unix_micros(ts)``; ``timezone(zone, ts)`` ->
      ``from_utc_timestamp(ts, zone)`` (the session zone is UTC);
    - ``json_type(j, path)`` and ``json_extract_string(j, 'path[*]')`` via
      get_json_object / json_array_length / from_json (:func:`_json`);
    - ``list_has_any(a, b)`` -> ``arrays_overlap`` of the arrays without null elements;
    - ``arg_min``/``arg_max`` by a row -> by a struct; ``avg(x)`` -> the sum as a double
      over the count, as DuckDB computes it;
    - with ``schema`` (``{table: {column: Spark type}}`` of the tables ``sql`` reads):
      stars are expanded and the columns' types known; ``date - date`` (of literals,
      casts and, with ``schema``, columns) becomes ``datediff`` (days, as in DuckDB).

    ``$name`` parameters become Spark's ``:name`` markers. Integer ``//`` becomes Spark's
    ``DIV``, which truncates where DuckDB floors: the catalog divides only non-negative
    numbers (microseconds since 1970, day counts). Raises :class:`QueryError` when sqlglot
    cannot read ``sql``.
    """
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
        mapping = None
        if schema is not None:
            mapping = MappingSchema(
                {t: dict(cols) for t, cols in schema.items()}, dialect="spark", normalize=False
            )
            tree = qualify(
                tree, schema=mapping, dialect="duckdb", quote_identifiers=False, identify=False
            )
        # Types of literals and casts are known without a schema, of columns with one.
        tree = annotate_types(tree, schema=mapping, dialect="duckdb")
        tree = tree.transform(_date_difference)
        for transform in _TRANSFORMS:
            tree = tree.transform(transform)
        tree = _double_averages(tree)
        return tree.sql(dialect="spark", unsupported_level=sqlglot.ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise QueryError(f"cannot transpile to Spark SQL: {exc}") from exc


def catalog_spark_sql(
    name: str, tz: str = "UTC", schema: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    """The Spark SQL of catalog query ``name`` for IANA zone ``tz`` (:func:`to_spark_sql`
    of :func:`~playpulse.query.catalog.query_sql`), ``:name`` parameters as
    :func:`~playpulse.query.catalog.bind_values` names them. Raises :class:`QueryError`
    for an unknown name or ``live`` (no SQL: it reads the real-time store)."""
    spec = CATALOG.get(name)
    if spec is None:
        raise QueryError(f"unknown query '{name}'; known: {', '.join(sorted(CATALOG))}")
    if not spec.sql:
        raise QueryError(f"query '{name}' has no SQL: it reads the real-time store")
    frozen = None
    if schema is not None:
        frozen = tuple((t, tuple(cols.items())) for t, cols in sorted(schema.items()))
    return _cached_spark_sql(query_sql(spec, tz), frozen)


@lru_cache(maxsize=128)
def _cached_spark_sql(
    sql: str, schema: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] | None
) -> str:
    """:func:`to_spark_sql`, kept per SQL and schema (qualifying a query takes sqlglot
    a good part of a second)."""
    return to_spark_sql(sql, None if schema is None else {t: dict(c) for t, c in schema})


# --- the tables ----------------------------------------------------------------------------

_SHOP_TYPES = ", ".join(f"'{t}'" for t in COMMERCE_EVENT_TYPES)

# The engine's cache tables, as Spark builds them from the lake's rows (``lake_*``: every
# live file's rows with ``_file``): the same columns and newest-version rule as
# playpulse.query.engine's _LOAD_SQL and _CURRENT_SQL. User numbers: any one-to-one
# numbering does (they are counted distinct and joined on, never shown).
_TABLES_SQL = {
    "c_users": """
        SELECT user_id, CAST(row_number() OVER (ORDER BY user_id) AS INT) AS user_num
        FROM (SELECT DISTINCT user_id FROM lake_plays WHERE user_id IS NOT NULL)""",
    "c_plays": """
        SELECT p.* EXCEPT (segments, _file, top_version), u.user_num,
               unix_micros(p.started_at) AS started_us, p._file,
               p.version = p.top_version AS current
        FROM (SELECT *, max(version) OVER (PARTITION BY play_key) AS top_version
              FROM lake_plays) p
        LEFT JOIN c_users u ON u.user_id = p.user_id""",
    "c_segments": """
        SELECT {dims}, s.foreground, s.chapter, s.start, s.`end`, s.playing_s, s.rate,
               u.user_num, unix_micros(s.start) AS start_us, unix_micros(s.`end`) AS end_us,
               p._file, p.version = p.top_version AS current
        FROM (SELECT *, explode(segments) AS s,
                     max(version) OVER (PARTITION BY play_key) AS top_version
              FROM lake_plays) p
        LEFT JOIN c_users u ON u.user_id = p.user_id""",
    "c_sessions": """
        SELECT * EXCEPT (top_version), version = top_version AND NOT deleted AS current
        FROM (SELECT *, max(version) OVER (PARTITION BY user_id, started_at) AS top_version
              FROM lake_sessions)""",
    "c_shop": f"SELECT * FROM lake_events WHERE event_type IN ({_SHOP_TYPES})",
}


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _lake_frame(spark: SparkSession, files: list[str], schema: pa.Schema) -> DataFrame:
    """The rows of the Parquet ``files`` with ``schema`` (a column a file lacks is
    null) and the column ``_file``; an empty frame without files."""
    from pyspark.sql import functions as f

    spark_schema = _spark_schema(schema)
    if not files:
        return spark.createDataFrame([], spark_schema).withColumn("_file", f.lit(""))
    frame = spark.read.schema(spark_schema).parquet(*files)
    return frame.withColumn("_file", f.input_file_name())


def _arrow_frame(spark: SparkSession, table: pa.Table) -> DataFrame:
    if table.num_rows == 0:
        return spark.createDataFrame([], _spark_schema(table.schema))
    return spark.createDataFrame(table)


def _views_sql() -> list[tuple[str, exp.Expression]]:
    """The engine's views (name, DuckDB query), as the shared cache defines them (every
    play, whatever the dates)."""
    from playpulse.query import engine

    sql = engine._VIEWS_SQL.format(
        dates="event_date >= '0000-01-01' AND event_date <= '9999-12-31'",
        seg_cols=", ".join(f'"{c}"' for c in engine._SEGMENT_COLUMNS),
        seg_dims=", ".join(engine._SEGMENT_DIMENSIONS),
        sess_cols=", ".join(engine.SESSION_COLUMNS),
    )
    views = []
    for statement in sqlglot.parse(sql, read="duckdb"):
        if isinstance(statement, exp.Create) and statement.expression is not None:
            views.append((statement.this.name, statement.expression))
    return views


def _frame(spark: SparkSession, query: exp.Expression) -> DataFrame:
    """A DuckDB query as a Spark frame: a ``UNION ALL BY NAME`` is the unionByName of its
    sides' frames (Spark SQL has no BY NAME), anything else transpiled SQL."""
    if isinstance(query, exp.Union) and query.args.get("by_name"):
        if query.args.get("distinct"):
            raise QueryError("UNION BY NAME without ALL is not supported on Spark")
        left = _frame(spark, query.this)
        right = _frame(spark, query.expression)
        return left.unionByName(right, allowMissingColumns=True)
    return spark.sql(to_spark_sql(query.sql("duckdb")))


#: The views the catalog reads, computed once per load (a short plan for every query).
_MATERIALIZED = frozenset({"plays_all", "segment_rows", "sessions", "shop_events"})


@dataclass(frozen=True)
class _Loaded:
    """What a session's views were made from: the lake files (path, mtime, size) and the
    open plays and sessions."""

    files: tuple[tuple[str, int, int], ...]
    plays: pa.Table
    sessions: pa.Table

    def same(self, other: _Loaded) -> bool:
        return (
            self.files == other.files
            and self.plays.equals(other.plays)
            and self.sessions.equals(other.sessions)
        )


def _load_state(settings: Settings) -> tuple[dict[str, list[str]], _Loaded]:
    """The live, readable lake files of each table and the open plays and sessions.
    Raises :class:`QueryError` for a lake on S3."""
    from playpulse.query.engine import _open_from_store

    if settings.lake_url and urlsplit(settings.lake_url).scheme == "s3":
        raise QueryError(
            f"the Spark engine reads a local lake, not {settings.lake_url}: Spark needs its "
            "S3 connector (hadoop-aws) for that; use the DuckDB engine"
        )
    files: dict[str, list[str]] = {t: [] for t in SCHEMAS}
    stamps = []
    if settings.lake_path.exists():
        lake = LakeWriter(settings.lake_path, SCHEMAS)
        for table in files:
            for path in lake.readable(lake.live_files(table)):
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # compacted away since listed
                files[table].append(str(path))
                stamps.append((str(path), st.st_mtime_ns, st.st_size))
    plays, sessions = _open_from_store(settings)
    return files, _Loaded(tuple(stamps), plays, sessions)


def register_views(spark: SparkSession, settings: Settings) -> dict[str, dict[str, str]]:
    """Create, in ``spark``, the temporary views the catalog reads over ``settings``'
    lake and real-time store (module docstring): the engine's views (``plays_all``,
    ``play_rows``, ``plays``, ``segment_rows``, ``segments``, ``sessions``,
    ``shop_events``, ``open_rows``) over ``c_*`` / ``o_*`` tables; the ones the catalog
    reads are computed here (:data:`_MATERIALIZED`), the others when queried. Returns
    ``{view: {column: Spark type}}``. Moves an unreadable lake file aside, as DuckDB's
    engine does. Raises :class:`~playpulse.errors.LakeError` when the lake cannot be
    listed, :class:`QueryError` for a lake on S3."""
    files, loaded = _load_state(settings)
    return _register(spark, files, loaded)


def _register(
    spark: SparkSession, files: Mapping[str, list[str]], loaded: _Loaded
) -> dict[str, dict[str, str]]:
    for table, schema in (
        ("plays", PLAYS_SCHEMA),
        ("sessions", SESSIONS_SCHEMA),
        ("events", EVENTS_SCHEMA),
    ):
        _lake_frame(spark, files[table], schema).createOrReplaceTempView(f"lake_{table}")
    _arrow_frame(spark, loaded.plays).createOrReplaceTempView("o_plays")
    _arrow_frame(spark, loaded.sessions).createOrReplaceTempView("o_sessions")
    from playpulse.query import engine

    dims = ", ".join(f"p.{c}" for c in engine._SEGMENT_DIMENSIONS)
    for name, sql in _TABLES_SQL.items():
        spark.sql(sql.format(dims=dims)).createOrReplaceTempView(name)
    schemas: dict[str, dict[str, str]] = {}
    for name, query in _views_sql():
        frame = _frame(spark, query)
        if name in _MATERIALIZED:
            frame = frame.localCheckpoint(eager=True)
        frame.createOrReplaceTempView(name)
        schemas[name] = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    return schemas


_LAKES: dict[str, tuple[_Loaded, SparkSession, dict[str, dict[str, str]]]] = {}
_LAKES_LOCK = threading.Lock()


def lake_session(settings: Settings) -> tuple[SparkSession, dict[str, dict[str, str]]]:
    """The child session of :func:`spark_session` holding the views of ``settings``'
    data dir (:func:`register_views`) and their schemas, made again only when the
    lake's live files or the open plays and sessions changed since (as DuckDB's cache
    is kept in step)."""
    key = os.path.realpath(settings.data_dir)
    with _LAKES_LOCK:
        files, loaded = _load_state(settings)
        cached = _LAKES.get(key)
        if cached is not None and cached[0].same(loaded):
            return cached[1], cached[2]
        if cached is not None:  # its computed views can go (Spark cleans them up)
            for view in cached[2]:
                cached[1].catalog.dropTempView(view)
        session = spark_session().newSession()
        session.conf.set("spark.sql.session.timeZone", "UTC")
        schemas = _register(session, files, loaded)
        _LAKES[key] = (loaded, session, schemas)
        return session, schemas


# --- queries -------------------------------------------------------------------------------


def run_query_spark(
    name: str,
    params: QueryParams | None = None,
    settings: Settings | None = None,
    *,
    now: datetime | None = None,
    spark: SparkSession | None = None,
) -> pa.Table:
    """Run catalog query ``name`` on Spark and return an Arrow table with its columns:
    the same answer as :func:`~playpulse.query.catalog.run_query` (same arguments).

    ``spark``: a session to make the views in, its time zone set to UTC (default: the
    data dir's session of :func:`lake_session`, which keeps them while the data is
    unchanged). ``now`` (UTC-aware) replaces the clock for ``live`` and default ranges.
    Raises :class:`QueryError` for an unknown name, bad parameters, SQL Spark refuses, a
    Spark failure (the message names the query) or a lake on S3.
    """
    spec = CATALOG.get(name)
    if spec is None:
        raise QueryError(f"unknown query '{name}'; known: {', '.join(sorted(CATALOG))}")
    params = params or QueryParams()
    settings = settings or Settings()
    now = now or datetime.now(UTC)
    if not spec.sql:
        from playpulse.query.live import live_table

        return round_seconds(live_table(settings, now))
    if spec.needs_store:
        raise QueryError(
            f"query '{name}' reads tables only the embedded engine has (the enrichment "
            "catalog): run it with --engine duckdb"
        )
    from playpulse.query.window import resolve_window

    start, end = resolve_window(params, settings, now).bounds
    try:
        if spark is None:
            session, schemas = lake_session(settings)
        else:
            spark.conf.set("spark.sql.session.timeZone", "UTC")
            session, schemas = spark, register_views(spark, settings)
        sql = catalog_spark_sql(name, params.tz, schemas)
        values = bind_values(query_sql(spec, params.tz), params, start, end)
        table = session.sql(sql, args=values).toArrow()
    except QueryError:
        raise
    except Exception as exc:  # Spark's analysis and execution errors (several types)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"query '{name}' failed on Spark: {first}") from exc
    return round_seconds(table.select(list(spec.columns)))
