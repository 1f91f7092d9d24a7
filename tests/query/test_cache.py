"""The process-wide query cache (``LakeCache``) follows the lake file by file: new files,
compaction and new versions give the same answers as a cache built from scratch."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pyarrow as pa

from playpulse.config import Settings
from playpulse.query import QueryParams, run_query
from playpulse.query.catalog import CATALOG
from playpulse.query.engine import LakeCache, shared_cache
from playpulse.service import compact_lake

QUERIES = [name for name in CATALOG if name != "live"]


def answers(settings: Settings, params: QueryParams) -> dict[str, list[dict[str, object]]]:
    out = {}
    for name in QUERIES:
        table: pa.Table = run_query(name, params, settings)
        out[name] = table.to_pylist()
    return out


def fresh_answers(settings: Settings, params: QueryParams) -> dict[str, list[dict[str, object]]]:
    # A new cache instead of the shared one: built from scratch from the lake as it is.
    from playpulse.query import engine

    key = next(k for k, c in engine._CACHES.items() if c.settings == settings)
    shared = engine._CACHES[key]
    engine._CACHES[key] = LakeCache(settings)
    try:
        return answers(settings, params)
    finally:
        engine._CACHES[key].db.close()
        engine._CACHES[key] = shared


def test_the_shared_cache_follows_new_files_and_compaction(
    tmp_path: Path, dataset: ModuleType
) -> None:
    # Asia/Kolkata: the quarter-hour path of the catalog too.
    week = QueryParams(
        start=dataset.at("2026-11-16T00:00:00"),
        end=dataset.at("2026-11-26T00:00:00"),
        tz="Asia/Kolkata",
    )
    rows = list(dataset.DATASET)
    half = len(rows) // 2
    settings = dataset.settings_for(tmp_path)
    dataset.ingest(settings, rows[:half])
    first = answers(settings, week)  # loads the shared cache
    assert first == fresh_answers(settings, week)
    cache = shared_cache(settings)
    loaded_before = {t: set(files) for t, files in cache._loaded.items()}

    dataset.ingest(settings, rows[half:])  # new lake files, new play versions, sessions
    second = answers(settings, week)
    assert second == fresh_answers(settings, week)
    assert second != first
    loaded_after = {t: set(files) for t, files in cache._loaded.items()}
    assert loaded_before["events"] < loaded_after["events"]  # loaded only what came

    assert sum(compact_lake(settings).values()) > 0  # small files replaced
    assert answers(settings, week) == second
    assert answers(settings, week) == fresh_answers(settings, week)
    assert any("compacted-" in f for files in cache._loaded.values() for f in files)
