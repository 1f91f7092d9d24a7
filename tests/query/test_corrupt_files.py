"""A damaged lake file (truncated, garbage) is moved aside and reported; the processor,
compaction and every query go on with the other files, whose rows are still answered."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq

from playpulse.config import Settings
from playpulse.lake import LakeWriter, corrupt_files
from playpulse.lake.schema import SCHEMAS
from playpulse.query import QueryParams, connect, run_query
from playpulse.query.catalog import CATALOG
from playpulse.query.engine import _open_from_store, shared_cache
from playpulse.service import compact_lake, ensure_processed
from playpulse.testing import playpulse_server

QUERIES = [name for name in CATALOG if name != "live"]


def answers(settings: Settings, dataset: ModuleType) -> dict[str, list[dict[str, object]]]:
    """Every catalog query over the data set's weeks (through the shared cache)."""
    params = QueryParams(start=dataset.at("2026-11-16T00:00:00"), end=dataset.NOW)
    return {name: run_query(name, params, settings).to_pylist() for name in QUERIES}


def lake_file(settings: Settings, table: str, day: str) -> Path:
    (path,) = LakeWriter(settings.lake_path, SCHEMAS).live_files(
        table, settings.lake_path / table / f"event_date={day}"
    )
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def count(settings: Settings, sql: str) -> int:
    con = connect(settings)
    try:
        ((n,),) = con.execute(sql).fetchall()
        return int(n)
    finally:
        con.close()


def play_keys(settings: Settings) -> set[str]:
    con = connect(settings)
    try:
        return {k for (k,) in con.execute("SELECT play_key FROM plays").fetchall()}
    finally:
        con.close()


def half_ingested(dataset: ModuleType, data_dir: Path) -> tuple[Settings, list[Any]]:
    """Settings of ``data_dir`` with the first half of the data set processed into it, and
    the second half (to ingest later)."""
    rows = list(dataset.DATASET)
    half = len(rows) // 2
    settings = dataset.settings_for(data_dir)
    dataset.ingest(settings, rows[:half])
    return settings, rows[half:]


def test_damaged_files_are_set_aside_and_processing_and_queries_go_on(
    tmp_path: Path, dataset: ModuleType
) -> None:
    settings, rest = half_ingested(dataset, tmp_path)
    answers(settings, dataset)  # the shared cache has loaded every file
    events_before = count(settings, "SELECT count(*) FROM events")
    keys_before = play_keys(settings)

    bad_events = lake_file(settings, "events", "2026-11-19")
    bad_plays = lake_file(settings, "plays", "2026-11-18")
    bad_event_rows = pq.read_metadata(bad_events).num_rows
    lake_keys = {
        str(p): set(pq.read_table(p, columns=["play_key"])["play_key"].to_pylist())
        for p in LakeWriter(settings.lake_path, SCHEMAS).live_files("plays")
    }
    others = set().union(*(k for f, k in lake_keys.items() if f != str(bad_plays)))
    open_keys = set(_open_from_store(settings)[0]["play_key"].to_pylist())
    lost = lake_keys[str(bad_plays)] - others - open_keys
    assert lost  # the file holds plays no other file has
    assert bad_event_rows > 0
    truncate(bad_plays)
    bad_events.write_bytes(os.urandom(2000))

    # Every catalog query answers, from the other files.
    answers(settings, dataset)
    assert play_keys(settings) == keys_before - lost
    assert count(settings, "SELECT count(*) FROM events") == events_before - bad_event_rows
    aside = corrupt_files(settings.lake_path)
    assert sorted(f.original for f in aside) == [
        "events/event_date=2026-11-19/" + bad_events.name,
        "plays/event_date=2026-11-18/" + bad_plays.name,
    ]
    assert all("magic bytes" in f.reason for f in aside)
    assert not bad_events.exists()
    assert not bad_plays.exists()
    # read_parquet over the tables' folders no longer meets them.
    glob = f"{settings.lake_path}/events/*/*.parquet"
    ((n,),) = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()
    assert n == events_before - bad_event_rows

    # The processor goes on with more events; compaction too; nothing new is set aside.
    stats = dataset.ingest(settings, rest)
    assert stats is not None
    assert stats.processed > 0
    events_after = count(settings, "SELECT count(*) FROM events")
    assert events_after == events_before - bad_event_rows + stats.processed
    result = answers(settings, dataset)
    assert sum(compact_lake(settings).values()) > 0
    assert answers(settings, dataset) == result
    assert count(settings, "SELECT count(*) FROM events") == events_after
    live = run_query("live", settings=settings, now=dataset.NOW).to_pylist()
    assert live[0]["concurrent_listeners"] == 1
    assert len(corrupt_files(settings.lake_path)) == 2


def test_the_processor_sets_aside_a_file_whose_offset_ranges_it_cannot_read(
    tmp_path: Path, dataset: ModuleType
) -> None:
    settings, rest = half_ingested(dataset, tmp_path)
    events_before = count(settings, "SELECT count(*) FROM events")
    bad = lake_file(settings, "events", "2026-11-17")
    assert bad.name.startswith("m-")  # one poll over several partitions
    bad_rows = pq.read_metadata(bad).num_rows
    truncate(bad)

    # Before: a crash loop (the processor reads the ranges of such files at start).
    stats = dataset.ingest(settings, rest)
    assert stats is not None
    (aside,) = corrupt_files(settings.lake_path)
    assert aside.original == "events/event_date=2026-11-17/" + bad.name
    total = count(settings, "SELECT count(*) FROM events")
    assert total == events_before - bad_rows + stats.processed


def test_a_new_file_damaged_before_the_warm_cache_loads_it(
    tmp_path: Path, dataset: ModuleType
) -> None:
    settings, rest = half_ingested(dataset, tmp_path)
    answers(settings, dataset)
    loaded = set(shared_cache(settings)._loaded["sessions"])
    dataset.ingest(settings, rest)
    lake = LakeWriter(settings.lake_path, SCHEMAS)
    new = [p for p in lake.live_files("sessions") if str(p) not in loaded]
    assert new
    new[0].write_bytes(b"")

    result = answers(settings, dataset)
    (aside,) = corrupt_files(settings.lake_path)
    assert aside.original.endswith(new[0].name)
    assert "too small" in aside.reason or "0 bytes" in aside.reason
    # The warm cache answers as one built from scratch on what is left.
    con = connect(settings)
    try:
        fresh = con.execute("SELECT count(*) FROM sessions").fetchall()
    finally:
        con.close()
    shared = shared_cache(settings).connection()
    try:
        assert shared.execute("SELECT count(*) FROM sessions").fetchall() == fresh
    finally:
        shared.close()
    assert answers(settings, dataset) == result


def test_playpulse_up_runs_on_a_lake_with_a_truncated_file(
    tmp_path: Path, dataset: ModuleType
) -> None:
    # The issue's fault: a truncated lake file put `up`'s processor into a crash loop
    # (nothing processed, the collector still acknowledging) and failed every query.
    data_dir = tmp_path / "data"
    settings, rest = half_ingested(dataset, data_dir)
    bad = lake_file(settings, "plays", "2026-11-17")
    truncate(bad)
    env = {"PLAYPULSE_NUM_PARTITIONS": "8"}
    with playpulse_server("up", data_dir, tmp_path / "up.log", env=env) as (url, _):
        posted = httpx.post(f"{url}/v1/events", json=[e for e, _ in rest], timeout=30)
        assert posted.status_code == 200
        accepted = posted.json()["accepted"]
        assert accepted > 0
        # Waits for the running processor to commit everything in the stream.
        assert ensure_processed(settings, timeout_s=60) is None
        for name in ("overview", "top_content", "daily", "user_sessions"):
            answer = httpx.get(
                f"{url}/v1/metrics/{name}",
                params={"from": "2026-11-01", "to": "2026-12-31"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
        # Reported, but still ready: the lake works without the file's rows.
        ready = httpx.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "degraded"
        lake = ready.json()["checks"]["lake"]
        assert lake["ok"] is True
        assert bad.name in lake["degraded"]
    (aside,) = corrupt_files(settings.lake_path)
    assert aside.original == "plays/event_date=2026-11-17/" + bad.name
    assert "moved aside" in (tmp_path / "up.log").read_text()
