"""What the processor keeps, in memory and in the store, stays small and changes nothing.

The open-play cache is capped (``ProcessorOptions.play_cache_size``), closed plays keep
their events folded and compressed in their state, and states written before (plain
msgpack, events in chunks) are still read: each gives the same numbers as a plain run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from playpulse.errors import ConfigError
from playpulse.events.codec import validate_event
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor import state as pstate
from playpulse.processor.pipeline import Processor, ProcessorOptions
from playpulse.quarantine.store import QuarantineStore
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.store.base import StoreBatch
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.sqlite import SQLiteStream


def _records() -> list[tuple[str, bytes]]:
    config = SimulationConfig(
        seed=7, start=datetime(2026, 3, 6, tzinfo=UTC), duration=timedelta(hours=6)
    ).with_target_events(3_000)
    out = []
    for sim in simulate(config):
        accepted = validate_event(json.dumps(sim.payload), sim.received_at)
        out.append((accepted.event.actor_id, accepted.payload))
    return out


RECORDS = _records()


class Run:
    """Stream, store, lake and quarantine in ``root``, fed the simulated records."""

    def __init__(self, root: Path) -> None:
        self.stream = SQLiteStream(root / "stream.db", num_partitions=2)
        self.store = SQLiteStore(root / "store.db")
        self.lake = LakeWriter(root / "lake", SCHEMAS)
        self.quarantine = QuarantineStore(root / "quarantine.db")

    def processor(self, **options: Any) -> Processor:
        return Processor(
            self.stream, self.store, self.lake, self.quarantine, ProcessorOptions(**options)
        )

    def items(self) -> dict[tuple[str, str, str], float]:
        rows = self.store._db.execute("SELECT pk, sk, attr, value FROM items").fetchall()
        return {(pk, sk, attr): value for pk, sk, attr, value in rows if abs(value) > 1e-9}

    def members(self) -> set[tuple[str, str]]:
        return set(self.store._db.execute("SELECT set_key, member FROM members").fetchall())

    def plays(self) -> dict[str, float]:
        files = [str(p) for p in self.lake.live_files("plays")]
        rel = duckdb.sql(
            "SELECT playback_id, arg_max(playing_time_s, version) FROM "
            f"read_parquet({files}, hive_partitioning = false) GROUP BY 1"
        )
        return dict(rel.fetchall())


def _same_numbers(a: Run, b: Run, *, lake: bool = True) -> None:
    items_a, items_b = a.items(), b.items()
    assert items_a.keys() == items_b.keys()
    for key, value in items_a.items():
        assert items_b[key] == pytest.approx(value, abs=1e-6), key
    assert a.members() == b.members()
    if lake:  # lake rows of plays closed and reopened depend on the batches: same ones
        plays_a, plays_b = a.plays(), b.plays()
        assert plays_a.keys() == plays_b.keys()
        assert plays_b == pytest.approx(plays_a, abs=1e-6)


def _trickle(run: Run, **options: Any) -> int:
    """Feed the records 40 at a time, processing after each; the most plays cached."""
    processor = run.processor(batch_size=15, **options)
    biggest = 0
    for start in range(0, len(RECORDS), 40):
        run.stream.append(RECORDS[start : start + 40])
        processor.process_available()
        biggest = max(biggest, len(processor._play_events))
    return biggest


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Run:
    run = Run(tmp_path_factory.mktemp("whole"))
    assert _trickle(run) > 3  # the default cap keeps every open play
    return run


def test_a_capped_play_cache_gives_the_same_numbers_and_stays_within_its_cap(whole, tmp_path):
    run = Run(tmp_path)
    assert _trickle(run, play_cache_size=3) == 3  # plays evicted, rebuilt from the store
    _same_numbers(whole, run)


def test_a_play_cache_of_zero_keeps_nothing_in_memory(whole, tmp_path):
    run = Run(tmp_path)
    assert _trickle(run, play_cache_size=0) == 0
    _same_numbers(whole, run)


def test_option_values_out_of_range_are_refused():
    with pytest.raises(ConfigError, match="play_cache_size"):
        ProcessorOptions(play_cache_size=-1)
    with pytest.raises(ConfigError, match="max_poll_records"):
        ProcessorOptions(max_poll_records=0)


def test_a_poll_reads_at_most_max_poll_records_over_all_partitions(whole, tmp_path):
    run = Run(tmp_path)  # 2 partitions: at most 25 records each per poll
    run.stream.append(RECORDS)
    processor = run.processor(batch_size=5_000, max_poll_records=50)
    reads = []
    while (stats := processor.process_available(max_batches=1)).read:
        reads.append(stats.read)
    assert sum(reads) == len(RECORDS)
    assert max(reads) == 50
    _same_numbers(whole, run, lake=False)


def test_closed_plays_keep_their_events_compressed_in_their_state(whole):
    keys = whole.store.state_keys("PLAY#")
    assert keys
    states = whole.store.states(keys)
    folded = 0
    open_plays = set()
    raw = 0
    for key, blob in states.items():
        assert blob[:1] == b"s"  # compressed (zstd)
        state = pstate.decode_play(pstate.unpack(blob))
        raw += sum(len(r) for r in state.events)
        if state.closed:
            assert state.chunks == []
            assert len(state.events) == state.count > 0
            folded += 1
        else:
            open_plays.add(key.split("#", 2)[2])
    assert folded > len(keys) // 2
    # Only open plays still have chunks.
    chunks = whole.store.state_keys("PEV#")
    assert {c.split("#")[2] for c in chunks} <= open_plays
    # Closed plays' events take a fraction of their JSON.
    assert sum(len(b) for b in states.values()) < raw / 3


def test_states_written_before_compression_are_read_and_give_the_same_numbers(whole, tmp_path):
    run = Run(tmp_path)
    half = len(RECORDS) // 2
    run.stream.append(RECORDS[:half])
    run.processor(batch_size=100).process_available()
    # Rewrite every play and session state as an older processor wrote it: plain msgpack,
    # a closed play's events in a chunk of their own rather than inline.
    batch = StoreBatch("rewrite")
    for key, blob in run.store.states(run.store.state_keys("PLAY#")).items():
        state = pstate.decode_play(pstate.unpack(blob))
        if state.events:
            _, p, play = key.split("#", 2)
            batch.states[pstate.chunk_key(int(p), play, 0)] = pstate.encoder.encode(state.events)
            state.chunks = [0, *state.chunks]
            state.events = []
        batch.states[key] = pstate.encoder.encode(state)
    for key, blob in run.store.states(run.store.state_keys("SESS#")).items():
        batch.states[key] = pstate.unpack(blob)
    run.store.apply(batch)
    assert all(
        b[:1] not in (b"s", b"z") for b in run.store.states(run.store.state_keys("PLAY#")).values()
    )

    run.stream.append(RECORDS[half:])
    run.processor(batch_size=100).process_available()  # a new processor: reads them back
    _same_numbers(whole, run, lake=False)
