"""The process-wide query cache (``LakeCache``) follows the lake file by file: new files,
compaction and new versions give the same answers as a cache built from scratch."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pyarrow as pa

from playpulse.config import Settings
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor.pipeline import ProcessorOptions
from playpulse.query import QueryParams, run_query
from playpulse.query.catalog import CATALOG
from playpulse.query.engine import LakeCache, shared_cache
from playpulse.store.sqlite import SQLiteStore


def _dataset() -> ModuleType:
    name = "playpulse_tests_query_dataset"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("dataset.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


DS = _dataset()
WEEK = QueryParams(start=DS.at("2026-11-16T00:00:00"), end=DS.at("2026-11-26T00:00:00"))
QUERIES = [name for name in CATALOG if name != "live"]


def answers(settings: Settings) -> dict[str, list[dict[str, object]]]:
    out = {}
    for name in QUERIES:
        table: pa.Table = run_query(name, WEEK.model_copy(update={"tz": "Asia/Kolkata"}), settings)
        out[name] = table.to_pylist()
    return out


def fresh_answers(settings: Settings) -> dict[str, list[dict[str, object]]]:
    # A new cache instead of the shared one: built from scratch from the lake as it is.
    from playpulse.query import engine

    key = next(k for k, c in engine._CACHES.items() if c.settings == settings)
    shared = engine._CACHES[key]
    engine._CACHES[key] = LakeCache(settings)
    try:
        return answers(settings)
    finally:
        engine._CACHES[key].db.close()
        engine._CACHES[key] = shared


def compact(settings: Settings) -> int:
    store = SQLiteStore(settings.store_path)
    try:
        committed = store.offsets(ProcessorOptions().consumer)
    finally:
        store.close()
    lake = LakeWriter(settings.lake_path, SCHEMAS)
    return sum(lake.compact(table, committed) for table in SCHEMAS)


def test_the_shared_cache_follows_new_files_and_compaction(tmp_path: Path) -> None:
    rows = list(DS.DATASET)
    half = len(rows) // 2
    settings = DS.settings_for(tmp_path)
    DS.ingest(settings, rows[:half])
    first = answers(settings)  # loads the shared cache
    assert first == fresh_answers(settings)
    cache = shared_cache(settings)
    loaded_before = {t: set(files) for t, files in cache._loaded.items()}

    DS.ingest(settings, rows[half:])  # new lake files, new play versions, closed sessions
    second = answers(settings)
    assert second == fresh_answers(settings)
    assert second != first
    loaded_after = {t: set(files) for t, files in cache._loaded.items()}
    assert loaded_before["events"] < loaded_after["events"]  # loaded only what came

    assert compact(settings) > 0  # small files replaced by compacted ones
    assert answers(settings) == second
    assert answers(settings) == fresh_answers(settings)
    assert any("compacted-" in f for files in cache._loaded.values() for f in files)
