"""bench/aws.py's write floor (``write_floor``): the processor's store batches replayed on
a small workload, and the invariants its tables rest on."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from playpulse.testing import load_module

BENCH = Path(__file__).resolve().parents[2] / "bench"
WINDOWS = (1, 2, 3, 5, 10, 1000)  # 1000 covers every batch of a shard
EVENTS = 3000
BATCH = 100


@pytest.fixture(scope="module")
def aws() -> ModuleType:
    if str(BENCH) not in sys.path:  # bench/aws.py imports its neighbours by name
        sys.path.insert(0, str(BENCH))
    return load_module(BENCH / "aws.py", "playpulse_bench_aws")


@pytest.fixture(scope="module")
def records(aws: ModuleType) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = aws.build_workload(EVENTS, 3).records
    return out


@pytest.fixture(scope="module", params=[1, 2], ids=["1-shard", "2-shards"])
def floor(request: pytest.FixtureRequest, aws: ModuleType, records: list[Any]) -> Any:
    return aws.write_floor(records, request.param, BATCH, WINDOWS)


def test_every_record_is_replayed_in_lambda_sized_batches(
    floor: Any, records: list[tuple[str, bytes]]
) -> None:
    assert floor.events == len(records) == EVENTS
    # Each shard's records in batches of at most BATCH: at least this many batches.
    assert floor.batches >= EVENTS // BATCH
    # Every distinct event got its dedup key (the copies did not).
    ids = {json.loads(value)["event_id"] for _, value in records}
    assert floor.dedup_distinct == len(ids) < len(records)
    assert floor.counters_distinct > 0
    assert floor.members_distinct > 0
    assert floor.states_distinct > 0
    assert floor.state_packed_bytes > 0
    assert sum(floor.counter_kinds.values()) == floor.counters_distinct


def test_windowed_writes_lie_between_distinct_items_and_one_write_per_batch(
    floor: Any,
) -> None:
    writes = floor.counter_writes
    assert writes[1] == floor.counters_touched
    for k in WINDOWS:
        assert floor.counters_distinct <= floor.counter_once_per_shard <= writes[k] <= writes[1]
    # Windows that nest (each window of the bigger K is a union of the smaller's) write
    # no more.
    assert writes[1000] <= writes[10] <= writes[5] <= writes[1]
    assert writes[10] <= writes[2]
    assert writes[3] <= writes[1]
    # Holding deltas pays on this workload: items are touched again in later batches.
    assert writes[10] < writes[1]


def test_a_window_covering_every_batch_writes_each_item_once_per_shard(
    floor: Any, request: pytest.FixtureRequest
) -> None:
    assert floor.counter_writes[1000] == floor.counter_once_per_shard
    if "1-shard" in request.node.callspec.id:
        assert floor.counter_once_per_shard == floor.counters_distinct
    else:  # the shards' processors hold their own deltas: shared items are written twice
        assert floor.counter_once_per_shard > floor.counters_distinct


def test_windows_never_span_shards(aws: ModuleType) -> None:
    a, b, c, d = ("P", "a"), ("P", "b"), ("P", "c"), ("P", "d")
    per_shard = [[{a}, {b}, {c}], [{c}, {d}]]
    assert aws.windowed_writes(per_shard, 1) == 3 + 2
    # Shard 0's last window holds only its own {c}: 2 + 1, then shard 1's: 2 (one window
    # over both shards' batches would merge the two {c}: 2 + 1 + 1).
    assert aws.windowed_writes(per_shard, 2) == 2 + 1 + 2
    assert aws.windowed_writes(per_shard, 3) == 3 + 2
    assert aws.windowed_writes([[{a}, {a}, {a}]], 2) == 1 + 1


def test_bad_batch_size_or_window_is_refused(aws: ModuleType, records: list[Any]) -> None:
    with pytest.raises(ValueError, match="batch size and windows"):
        aws.write_floor(records[:10], 1, 0)
    with pytest.raises(ValueError, match="batch size and windows"):
        aws.write_floor(records[:10], 1, 10, (1, 0))
