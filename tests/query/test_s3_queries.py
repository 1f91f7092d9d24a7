"""Queries over a lake on S3 (moto in server mode) answer exactly what they answer over a
local lake: the same events, through the same processor, once into each lake.

Two workloads: the hand-written data set of ``dataset.py`` (duplicates, a late event,
open plays, shop events) and a small simulated one (``playpulse.sources.simulator``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from playpulse.api import mount_read_api
from playpulse.aws.clients import client
from playpulse.config import Settings
from playpulse.lake import corrupt_files, open_lake
from playpulse.query import CATALOG, QueryParams, run_query
from playpulse.query.engine import connect, events_connection, shared_cache
from playpulse.service import compact_lake, lake_problem
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.status import lake_event_count
from playpulse.testing import load_module, run_cli

SIM_START = datetime(2026, 3, 6, tzinfo=UTC)
SIM_NOW = SIM_START + timedelta(days=4)
PARAM_SETS = {
    "default": {},
    "berlin-week": {
        "start": datetime(2026, 11, 16, tzinfo=UTC),
        "end": datetime(2026, 11, 23, tzinfo=UTC),
        "tz": "Europe/Berlin",
    },
    "filtered": {"content_type": "audiobook", "vendor_id": "v1", "limit": 3},
}


def _dataset() -> ModuleType:
    return load_module(Path(__file__).with_name("dataset.py"), "playpulse_tests_query_dataset")


def _simulated() -> list[tuple[dict[str, Any], datetime]]:
    config = SimulationConfig(seed=7, start=SIM_START, users=12, max_events=1200)
    return [(s.payload, s.received_at) for s in simulate(config) if s.valid]


class Lakes:
    """One workload processed into a local lake and into an S3 lake."""

    def __init__(self, local: Settings, s3: Settings, now: datetime) -> None:
        self.local, self.s3, self.now = local, s3, now


@pytest.fixture(scope="module")
def s3_env(moto_server: Any) -> Iterator[Any]:
    """The moto server's AWS variables for this module's tests, and a bucket of its own."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in moto_server.env.items():
            mp.setenv(name, value)
        bucket = moto_server.unique("queries")
        client("s3").create_bucket(Bucket=bucket)
        yield bucket


def _build(
    root: Path, bucket: str, name: str, rows: list[tuple[dict[str, Any], datetime]]
) -> tuple[Settings, Settings]:
    dataset = _dataset()
    local = Settings(data_dir=root / f"{name}-local", num_partitions=8)
    s3 = Settings(
        data_dir=root / f"{name}-s3", num_partitions=8, lake_url=f"s3://{bucket}/{name}/lake"
    )
    for settings in (local, s3):
        dataset.ingest(settings, rows)
    return local, s3


@pytest.fixture(scope="module")
def lakes(s3_env: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Lakes]:
    root = tmp_path_factory.mktemp("s3q")
    dataset = _dataset()
    return {
        "dataset": Lakes(*_build(root, s3_env, "dataset", list(dataset.DATASET)), dataset.NOW),
        "simulated": Lakes(*_build(root, s3_env, "simulated", _simulated()), SIM_NOW),
    }


def answers(settings: Settings, name: str, params: dict[str, Any], now: datetime) -> Any:
    return run_query(name, QueryParams(**params), settings, now=now).to_pylist()


def test_the_s3_lake_holds_the_same_files_in_the_same_layout(lakes: dict[str, Lakes]) -> None:
    for case in lakes.values():
        local, s3 = open_lake(case.local), open_lake(case.s3)
        assert not s3.is_local
        for table in ("events", "plays", "sessions"):
            names = [str(p.relative_to(s3.root)) for p in s3.live_files(table)]
            assert names == [str(p.relative_to(local.root)) for p in local.live_files(table)]
            assert names, table
        counted = lake_event_count(case.s3)
        assert counted == lake_event_count(case.local)
        assert counted[0] > 0


@pytest.mark.parametrize("params", sorted(PARAM_SETS))
@pytest.mark.parametrize("name", sorted(CATALOG))
@pytest.mark.parametrize("workload", ["dataset", "simulated"])
def test_every_catalog_query_answers_the_same_on_s3(
    lakes: dict[str, Lakes], workload: str, name: str, params: str
) -> None:
    case = lakes[workload]
    on_local = answers(case.local, name, PARAM_SETS[params], case.now)
    assert answers(case.s3, name, PARAM_SETS[params], case.now) == on_local


def test_the_events_view_and_ad_hoc_sql_read_the_s3_lake(lakes: dict[str, Lakes]) -> None:
    sql = (
        "SELECT event_date, event_type, count(*), count(DISTINCT actor_id), sum(stream_offset)"
        " FROM events GROUP BY ALL ORDER BY ALL"
    )
    for case in lakes.values():
        expected = events_connection(case.local).execute(sql).fetchall()
        assert expected
        assert events_connection(case.s3).execute(sql).fetchall() == expected
        # The shared cache's connections (what the API hands out) see the view too.
        shared = shared_cache(case.s3).connection()
        try:
            assert shared.execute(sql).fetchall() == expected
        finally:
            shared.close()
        since = case.now.date() - timedelta(days=3)
        on_local = connect(case.local, since=since).execute(sql).fetchall()
        assert connect(case.s3, since=since).execute(sql).fetchall() == on_local


def test_after_compaction_on_both_lakes_queries_still_agree(lakes: dict[str, Lakes]) -> None:
    case = lakes["simulated"]
    before = {n: answers(case.s3, n, {}, case.now) for n in sorted(CATALOG)}
    merged = compact_lake(case.s3)
    assert merged == compact_lake(case.local)
    assert sum(merged.values()) > 0
    for name in sorted(CATALOG):
        on_s3 = answers(case.s3, name, {}, case.now)
        assert on_s3 == before[name], name
        assert on_s3 == answers(case.local, name, {}, case.now), name


def test_a_corrupt_object_on_s3_is_set_aside_and_queries_go_on(s3_env: str, tmp_path: Path) -> None:
    dataset = _dataset()
    settings = Settings(
        data_dir=tmp_path / "data", num_partitions=8, lake_url=f"s3://{s3_env}/corrupt/lake"
    )
    dataset.ingest(settings, list(dataset.DATASET))
    overview = answers(settings, "overview", {}, dataset.NOW)
    count = "SELECT count(*), sum(playing_time_s) FROM plays"
    plays_before = connect(settings).execute(count).fetchone()
    lake = open_lake(settings)
    plays = lake.live_files("plays")
    bad = plays[0].parent / "p0000-o000000009990-000000009999.parquet"
    client("s3").put_object(Bucket=s3_env, Key=str(bad.relative_to(s3_env)), Body=b"PAR1 truncated")
    assert lake_problem(settings) is None
    # A connection of its own (a fresh cache) meets the bad object, moves it aside and
    # answers from the rest.
    assert connect(settings).execute(count).fetchone() == plays_before
    (aside,) = corrupt_files(lake)
    assert aside.original == f"plays/{bad.parent.name}/{bad.name}"
    assert bad not in lake.live_files("plays")
    assert answers(settings, "overview", {}, dataset.NOW) == overview
    problem = lake_problem(settings)
    assert problem is not None
    assert f"s3://{s3_env}/corrupt/lake/_corrupt" in str(problem)


def test_playpulse_status_and_query_read_the_s3_lake(lakes: dict[str, Lakes]) -> None:
    case = lakes["dataset"]

    def cli(settings: Settings, *args: str) -> Any:
        env = {"PLAYPULSE_DATA_DIR": str(settings.data_dir), "PLAYPULSE_NUM_PARTITIONS": "8"}
        if settings.lake_url:
            env["PLAYPULSE_LAKE_URL"] = settings.lake_url
        done = run_cli(*args, "--format", "json", env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    on_s3, on_local = cli(case.s3, "status"), cli(case.local, "status")
    assert on_s3["events_in_lake"] == on_local["events_in_lake"] == 43
    assert on_s3["lake_files_unreadable"] == 0
    assert on_s3["lake_files_set_aside"] == []
    assert cli(case.s3, "query", "overview") == cli(case.local, "query", "overview")


def test_the_shared_cache_follows_an_s3_lake_file_by_file(s3_env: str, tmp_path: Path) -> None:
    dataset = _dataset()
    rows = list(dataset.DATASET)
    half = len(rows) // 2
    local = Settings(data_dir=tmp_path / "local", num_partitions=8)
    s3 = Settings(data_dir=tmp_path / "s3", num_partitions=8, lake_url=f"s3://{s3_env}/follow/lake")
    week = {"start": dataset.at("2026-11-16T00:00:00"), "end": dataset.at("2026-11-26T00:00:00")}
    names = [n for n in sorted(CATALOG) if n != "live"]

    def agree() -> dict[str, Any]:
        out = {n: answers(s3, n, week, dataset.NOW) for n in names}
        assert out == {n: answers(local, n, week, dataset.NOW) for n in names}
        return out

    for settings in (local, s3):
        dataset.ingest(settings, rows[:half])
    first = agree()
    cache = shared_cache(s3)
    before = {t: dict(files) for t, files in cache._loaded.items()}
    assert before["events"]
    for settings in (local, s3):
        dataset.ingest(settings, rows[half:])
    assert agree() != first
    after = cache._loaded
    for table, files in before.items():
        # Files loaded before are kept as they were (not read again); new ones came.
        assert {f: after[table][f] for f in files} == files
    assert set(before["events"]) < set(after["events"])
    assert compact_lake(s3) == compact_lake(local)
    agree()
    assert any("compacted-" in f for files in cache._loaded.values() for f in files)


def test_the_read_api_answers_the_same_from_an_s3_lake(lakes: dict[str, Lakes]) -> None:
    case = lakes["dataset"]
    window = {"from": "2026-11-16T00:00:00Z", "to": "2026-11-26T00:00:00Z", "tz": "UTC"}
    paths = [f"/v1/metrics/{n}" for n in sorted(CATALOG) if n != "live"]
    paths.append("/v1/sessions/histogram")

    def bodies(settings: Settings) -> dict[str, Any]:
        app = FastAPI()
        mount_read_api(app, settings)
        out = {}
        with TestClient(app) as api:
            for path in paths:
                response = api.get(path, params=window)
                assert response.status_code == 200, (path, response.text)
                out[path] = response.json()
        return out

    on_s3 = bodies(case.s3)
    assert on_s3 == bodies(case.local)
    assert on_s3["/v1/metrics/overview"]["rows"][0]["plays"] > 0
