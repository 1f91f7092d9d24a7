"""The catalog on Apache Spark (``playpulse.query.spark``) answers what DuckDB answers.

One Spark session (local mode, one JVM start) for the module. The lake is made the way
production makes it: a simulated workload validated as the collector does, appended to the
stream in four parts, each processed into the real-time store and the Parquet lake, the
lake compacted halfway, and the last events held back so plays and sessions stay open in
the store. A few shop events declare their source's steps (``properties.source_steps``),
as imported views-only feeds do, so the queries' JSON paths answer null counts too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import pytest

from playpulse.config import Settings
from playpulse.query import CATALOG, QueryError, QueryParams, run_query
from playpulse.query.engine import _open_from_store
from playpulse.query.spark import (
    lake_session,
    run_query_spark,
    spark_session,
    stop_spark,
    to_spark_sql,
)
from playpulse.service import compact_lake
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.testing import assert_same_answers

pytest.importorskip("pyspark")
# One JVM start and some 45 Spark queries: about 3 minutes on a busy 2-core machine.
pytestmark = pytest.mark.slow

#: The clock of ``live`` and of default windows: after the workload's last event.
NOW = datetime(2026, 3, 12, tzinfo=UTC)
SIMULATION = SimulationConfig(seed=3, users=60, duration=timedelta(days=2))


def _declared_shop_events() -> list[tuple[dict[str, Any], datetime]]:
    """Shop events from feeds that declare what they record: ``feed`` only views (its
    cart and order counts are unknown, null), ``odd`` a declaration that is not an array
    (ignored: it tells every step)."""
    rows = []
    for n, (vendor, steps, kind) in enumerate(
        [
            ("feed", ["product_view"], "product_view"),
            ("feed", ["product_view"], "product_view"),
            ("feed", ["product_view", "cart_add"], "cart_add"),
            ("odd", "product_view", "product_view"),
            ("odd", "product_view", "cart_add"),
        ]
    ):
        occurred = datetime(2026, 3, 7, 10, n, tzinfo=UTC)
        event = {
            "event_id": f"declared-{n}",
            "event_type": kind,
            "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
            "user_id": f"feed-user-{n % 2}",
            "product_id": f"{vendor}-p{n % 2}",
            "vendor_id": vendor,
            "properties": {"source_steps": steps},
        }
        rows.append((event, occurred + timedelta(seconds=2)))
    return rows


def _versioned_events(dataset: ModuleType) -> tuple[list[Any], list[Any]]:
    """Events that make the lake hold several versions of a play and of a session:
    ``late-user``'s play vp1 closes idle in the first part, and its play_end arrives in
    the third (a new version, ended ``stopped``); a late play bridging vp1's and vp2's
    sessions merges them (the first session gets a tombstone)."""
    ev, track, ctx = dataset.ev, dataset.T1, dataset.U1_CTX
    user, late = "late-user", "2026-03-07T06:00:00"
    first = [
        ev("lv-1", "play_start", "2026-03-06T00:30:00", user, playback_id="vp1",
           content=track, position_s=0, context=ctx),
        ev("lv-2", "heartbeat", "2026-03-06T00:31:00", user, playback_id="vp1", position_s=60),
        ev("lv-3", "play_start", "2026-03-06T01:20:00", user, playback_id="vp2",
           content=track, position_s=0, context=ctx),
        ev("lv-4", "play_end", "2026-03-06T01:21:00", user, playback_id="vp2", position_s=60,
           reason="stopped"),
    ]  # fmt: skip
    third = [
        ev("lv-5", "play_end", "2026-03-06T00:31:30", user, playback_id="vp1", position_s=90,
           reason="stopped", received=late),
        ev("lv-6", "play_start", "2026-03-06T00:55:00", user, playback_id="vp3",
           content=track, position_s=0, context=ctx, received=late),
        ev("lv-7", "play_end", "2026-03-06T00:56:00", user, playback_id="vp3", position_s=60,
           reason="stopped", received=late),
    ]  # fmt: skip
    return first, third


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """The process's Spark session, stopped when the module is done."""
    session = spark_session()
    yield session
    stop_spark()


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory, dataset: ModuleType) -> Settings:
    """A data dir with the simulated workload processed (module docstring)."""
    settings: Settings = dataset.settings_for(tmp_path_factory.mktemp("spark-workload"))
    rows = [(s.payload, s.received_at) for s in simulate(SIMULATION)]
    sent = rows[: len(rows) * 97 // 100]  # the rest never arrives: open plays stay open
    quarter = len(sent) // 4 + 1
    versioned = _versioned_events(dataset)
    for part in range(4):
        chunk = sent[part * quarter : (part + 1) * quarter]
        if part == 0:
            chunk = versioned[0] + chunk
        if part == 2:
            chunk += versioned[1]
        if part == 3:
            chunk += _declared_shop_events()
        dataset.ingest(settings, chunk)
        if part == 1:
            assert sum(compact_lake(settings).values()) > 0
    return settings


def _answers(
    run: Any, settings: Settings, params: QueryParams, names: tuple[str, ...]
) -> dict[str, list[dict[str, Any]]]:
    return {name: run(name, params, settings, now=NOW).to_pylist() for name in names}


#: Every query Spark can run: those over the lake alone (not the real-time store's or the
#: enrichment catalog's own tables).
EVERY = tuple(name for name, spec in CATALOG.items() if not spec.needs_store)
#: The queries whose answers depend on the time zone (days, hours, weeks).
ZONED = ("hourly_engagement", "daily", "watch_time_visibility", "vendor_daily", "cohorts")
VARIANTS = {
    # Everything: every row of every query.
    "all-utc": (
        QueryParams(
            start=datetime(2000, 1, 1, tzinfo=UTC),
            end=datetime(2030, 1, 1, tzinfo=UTC),
            limit=10_000,
        ),
        EVERY,
    ),
    # A zone +05:30 (segments cut at quarter hours), a window cutting plays at both ends,
    # a content filter and a short limit: the zoned queries and the ranked ones (every
    # query ran above; this is about zones, windows, filters and limits).
    "kolkata-tracks": (
        QueryParams(
            start=datetime(2026, 3, 6, 17, 10, tzinfo=UTC),
            end=datetime(2026, 3, 8, 3, tzinfo=UTC),
            tz="Asia/Kolkata",
            content_type="track",
            limit=5,
        ),
        (*ZONED, "overview", "top_content", "top_creators", "qoe_titles", "listening_clock"),
    ),
    # The window of the data (no bounds given), across the US switch to daylight saving
    # time on 2026-03-08.
    "new-york-data-window": (QueryParams(tz="America/New_York", limit=10_000), ZONED),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_catalog_query_on_spark_equals_duckdb(
    spark: Any, workload: Settings, variant: str
) -> None:
    params, names = VARIANTS[variant]
    want = _answers(run_query, workload, params, names)
    # The comparison means something: the queries have rows.
    assert all(want[name] for name in names if name != "chapters")
    got = _answers(run_query_spark, workload, params, names)
    assert_same_answers(got, want)


def test_the_workload_has_what_the_comparison_needs(spark: Any, workload: Settings) -> None:
    # Open plays and sessions only the store holds; late and declared shop sources.
    plays, sessions = _open_from_store(workload)
    assert plays.num_rows > 0
    assert sessions.num_rows > 0
    every = VARIANTS["all-utc"][0]
    answer = run_query_spark("funnel", every, workload, now=NOW).to_pylist()
    funnel = {r["vendor_id"]: r for r in answer}
    assert funnel["feed"]["views"] == 2
    assert funnel["feed"]["orders"] is None
    assert funnel["odd"]["cart_adds"] == 1
    assert any(r["completed_orders"] for r in funnel.values())
    # A play and a session with several versions in the lake (the newest one counts).
    lake = workload.lake_path
    plays_versions = duckdb.sql(
        f"SELECT list(end_reason ORDER BY version) FROM read_parquet('{lake}/plays/*/*.parquet')"
        " WHERE playback_id = 'vp1'"
    ).fetchall()
    assert plays_versions == [(["idle", "stopped"],)]
    deleted = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{lake}/sessions/*/*.parquet')"
        " WHERE user_id = 'late-user' AND deleted"
    ).fetchall()
    assert deleted == [(1,)]
    # The Spark session of the data dir is kept while the data does not change.
    assert lake_session(workload)[0] is lake_session(workload)[0]


def test_spark_follows_new_files_new_versions_and_compaction(
    spark: Any, tmp_path: Path, dataset: ModuleType
) -> None:
    # The hand-written data set in two halves: the second brings new lake files and new
    # versions of plays and sessions (as tests/query/test_cache.py relies on).
    week = QueryParams(
        start=dataset.at("2026-11-16T00:00:00"),
        end=dataset.at("2026-11-26T00:00:00"),
        tz="Europe/Berlin",
    )
    now = dataset.NOW
    rows = list(dataset.DATASET)
    settings: Settings = dataset.settings_for(tmp_path)
    # The queries over plays, their segments and sessions (what new versions change).
    names = ("overview", "top_content", "user_sessions", "daily")

    def both() -> tuple[dict[str, Any], dict[str, Any]]:
        got = {n: run_query_spark(n, week, settings, now=now).to_pylist() for n in names}
        want = {n: run_query(n, week, settings, now=now).to_pylist() for n in names}
        return got, want

    dataset.ingest(settings, rows[: len(rows) // 2])
    first, want = both()
    assert_same_answers(first, want)
    dataset.ingest(settings, rows[len(rows) // 2 :])
    second, want = both()
    assert_same_answers(second, want)
    assert second != first
    assert sum(compact_lake(settings).values()) > 0
    third, want = both()
    assert_same_answers(third, want)
    assert third == second


# DuckDB SQL with each construct the transforms of ``to_spark_sql`` fix; Spark must
# answer what DuckDB answers.
CONSTRUCTS = {
    "date difference": "SELECT (DATE '2026-03-30' - DATE '2026-03-02') // 7 AS weeks, "
    "DATE '2026-03-30' - 6 AS before",
    "range table": "SELECT d, h FROM range(2) t(d), range(1, 7, 3) s(h) ORDER BY d, h",
    "epoch and zone": "SELECT epoch_us(timezone('Asia/Kolkata', "
    "make_timestamp(1772755200000000)::TIMESTAMPTZ)) - 1772755200000000 AS off, "
    "timezone('America/New_York', TIMESTAMPTZ '2026-03-08 07:30:00+00')::DATE AS day",
    "json": """SELECT json_type(p, '$.s') = 'ARRAY' AS is_array,
                      json_extract_string(p, '$.s[*]') AS steps
               FROM (VALUES ('{"s": ["a"]}'), ('{"s": ["a", {"x": 1}, null, 2]}'),
                            ('{"s": "a"}'), ('{"s": {"a": 1}}'), ('{"t": 1}'), (NULL)) v(p)
               ORDER BY p NULLS LAST""",
    "list_has_any": "SELECT list_has_any(['a', NULL], ['b', NULL]) AS none_shared, "
    "list_has_any(['a', 'b'], ['b']) AS shared, list_has_any(NULL::VARCHAR[], ['a']) AS unknown",
    "arg_min by row": "SELECT arg_min(x, (a, b)) AS lo, arg_max(x, (a, b)) AS hi, "
    "arg_min({'v': x}, (a, b)) FILTER (x > 1) AS s "
    "FROM (VALUES (1, 1, 'b'), (2, 1, 'a'), (3, 0, 'z')) t(x, a, b)",
    "average": "SELECT avg(x::DECIMAL(18, 6)) AS a, avg(x) FILTER (x > 1) AS f "
    "FROM (VALUES (1), (2), (2)) t(x)",
}


@pytest.mark.parametrize("construct", list(CONSTRUCTS))
def test_each_transpile_fix_answers_as_duckdb(spark: Any, construct: str) -> None:
    sql = CONSTRUCTS[construct]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    want = con.sql(sql).fetchall()
    got = [tuple(row) for row in spark.sql(to_spark_sql(sql)).collect()]
    assert [_plain(r) for r in got] == [_plain(r) for r in want]


def _plain(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Spark rows and structs as DuckDB's Python values (structs as dicts)."""
    out = []
    for value in row:
        if hasattr(value, "asDict"):
            value = value.asDict()
        out.append(value)
    return tuple(out)


def test_unknown_queries_and_spark_failures_are_query_errors(
    spark: Any, workload: Settings
) -> None:
    with pytest.raises(QueryError, match="unknown query 'nope'"):
        run_query_spark("nope", QueryParams(), workload)
    with pytest.raises(QueryError, match="cannot transpile"):
        to_spark_sql("SELECT FROM WHERE (")
    on_s3 = workload.model_copy(update={"lake_url": "s3://bucket/lake"})
    with pytest.raises(QueryError, match="reads a local lake"):
        run_query_spark("overview", VARIANTS["all-utc"][0], on_s3)
    # A window long before the data: nothing, not an error.
    empty = QueryParams(
        start=datetime(2001, 1, 1, tzinfo=UTC), end=datetime(2001, 1, 2, tzinfo=UTC)
    )
    assert run_query_spark("top_content", empty, workload).num_rows == 0
    assert run_query_spark("daily", empty, workload).to_pylist() == []


def test_the_cli_runs_a_catalog_query_on_spark(spark: Any, workload: Settings) -> None:
    # In this process (typer's runner), so it reuses the module's Spark session.
    from typer.testing import CliRunner

    from playpulse.cli import app

    args = ["query", "top_content", "--format", "json", "--data-dir", str(workload.data_dir)]
    duck = CliRunner().invoke(app, args)
    on_spark = CliRunner().invoke(app, [*args, "--engine", "spark"])
    assert duck.exit_code == 0, duck.output
    assert on_spark.exit_code == 0, on_spark.output
    assert json.loads(on_spark.output) == json.loads(duck.output)
    assert json.loads(duck.output)  # not empty
    wrong = CliRunner().invoke(app, [*args, "--engine", "presto"])
    assert wrong.exit_code != 0
