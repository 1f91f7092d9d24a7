"""The processor end to end: on real files (SQLite stream and store, Parquet lake), and
on the memory stream and store (same lake) for every case that does not read the files
behind the processor's back."""

from __future__ import annotations

import gc
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from playpulse.config import Settings
from playpulse.errors import StoreError
from playpulse.events.codec import validate_event
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor import state as pstate
from playpulse.processor.pipeline import (
    GC_THRESHOLDS,
    Processor,
    ProcessorOptions,
    processing_gc,
)
from playpulse.quarantine.store import QuarantineStore
from playpulse.query.live import live_table
from playpulse.store.base import RealtimeStore, StoreBatch
from playpulse.store.memory import MemoryStore
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.base import EventStream
from playpulse.stream.memory import MemoryStream
from playpulse.stream.sqlite import SQLiteStream

T0 = datetime(2026, 11, 20, 23, 59, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CONTENT = {
    "content_id": "book-1",
    "content_type": "audiobook",
    "creator": "A. Author",
    "duration_s": 3600,
    "chapter": 1,
}


def ev(kind: str, at_s: float, n: int, **extra: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": f"e{n}",
        "event_type": kind,
        "occurred_at": (T0 + timedelta(seconds=at_s)).isoformat(),
        "user_id": "u1",
        "playback_id": "p1",
        "content": CONTENT,
        "context": {"device_type": "mobile", "platform": "ios", "timezone": "Europe/Berlin"},
    }
    e.update(extra)
    return e


PLAY = [
    ev("play_start", 0, 1, position_s=0),
    ev("heartbeat", 30, 2, position_s=30),
    ev("pause", 50, 3, position_s=50),
    ev("resume", 110, 4, position_s=50),
    ev("heartbeat", 140, 5, position_s=80),
    ev("play_end", 150, 6, position_s=90, reason="stopped"),
]


BACKENDS = ["sqlite", "memory"]


class Pipeline:
    def __init__(self, root: Path, backend: str = "sqlite") -> None:
        self.root = root
        self.stream: EventStream
        self.store: RealtimeStore
        if backend == "sqlite":
            self.stream = SQLiteStream(root / "stream.db", num_partitions=2)
            self.store = SQLiteStore(root / "store.db")
        else:
            self.stream = MemoryStream(num_partitions=2)
            self.store = MemoryStore()
        self.quarantine = QuarantineStore(root / "quarantine.db")
        self.lake = LakeWriter(root / "lake", SCHEMAS)

    def append(self, events: list[dict[str, Any]], received_at: datetime = RECEIVED) -> None:
        accepted = [validate_event(json.dumps(e), received_at) for e in events]
        self.stream.append([(a.event.actor_id, a.payload) for a in accepted])

    def processor(self, **options: Any) -> Processor:
        return Processor(
            self.stream, self.store, self.lake, self.quarantine, ProcessorOptions(**options)
        )

    def lake_rows(self, table: str) -> list[dict[str, Any]]:
        files = [str(p) for p in self.lake.live_files(table)]
        if not files:
            return []
        rel = duckdb.sql(f"SELECT * FROM read_parquet({files}, hive_partitioning = false)")
        return list(rel.to_arrow_table().to_pylist())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The stream and store the processor runs on: SQLite files, or memory."""
    return str(request.param)


@pytest.fixture
def pipe(tmp_path: Path, backend: str) -> Pipeline:
    return Pipeline(tmp_path, backend)


@pytest.fixture
def sqlite_pipe(tmp_path: Path) -> Pipeline:
    """For queries that read the data dir's SQLite store (as the API does)."""
    return Pipeline(tmp_path)


def dedup_key_count(store: RealtimeStore) -> int:
    if isinstance(store, SQLiteStore):
        return int(store._db.execute("SELECT count(*) FROM dedup_ids").fetchone()[0])
    assert isinstance(store, MemoryStore)
    return len(store._dedup)


def test_a_play_becomes_exact_aggregates_and_lake_rows(pipe):
    pipe.append(PLAY)
    stats = pipe.processor().process_available()
    assert stats.processed == 6
    # Playing: 0-50 and 110-150 -> 90 s, split across midnight UTC (23:59:00 + 60 s).
    day1 = pipe.store.item("CONTENT#book-1", "DAY#2026-11-20")
    day2 = pipe.store.item("CONTENT#book-1", "DAY#2026-11-21")
    assert day1["plays"] == 1
    assert "plays" not in day2
    assert day1["playing_time_s"] == pytest.approx(50.0, abs=1e-6)
    assert day2["playing_time_s"] == pytest.approx(40.0, abs=1e-6)
    assert day1["streams"] == 1
    assert day1.get("skipped", 0) == 0
    # Berlin is UTC+1: the whole play is on the local 21st.
    local = pipe.store.item("CONTENT#book-1", "LOCALDAY#2026-11-21")
    assert local["playing_time_s"] == pytest.approx(90.0, abs=1e-6)
    assert pipe.store.count_members("LISTENERS#CONTENT#book-1#2026-11-20") == 1
    events = pipe.lake_rows("events")
    assert sorted(r["event_id"] for r in events) == [f"e{i}" for i in range(1, 7)]
    plays = pipe.lake_rows("plays")
    assert len(plays) == 1
    assert plays[0]["playing_time_s"] == pytest.approx(90.0, abs=1e-6)
    assert plays[0]["end_reason"] == "stopped"


def test_duplicates_are_dropped_and_counted_but_a_reused_id_with_new_content_is_kept(pipe):
    pipe.append(PLAY)
    pipe.append(PLAY[:2], received_at=RECEIVED + timedelta(minutes=5))  # a retried send
    reused = ev("bookmark", 60, 2, position_s=50)  # same id as a heartbeat, other content
    pipe.append([reused])
    stats = pipe.processor().process_available()
    assert stats.duplicates == 2
    assert stats.processed == 7
    assert pipe.store.item("PIPELINE", "TOTAL")["duplicates"] == 2
    assert pipe.store.item("CONTENT#book-1", "DAY#2026-11-20")["plays"] == 1


def test_the_dedup_window_is_7_days_of_receipt_at_the_exact_edge(pipe):
    """A copy received exactly 7 days after the kept event is a duplicate; one received
    a microsecond later is kept again (docs/metrics.md: deduplication)."""
    window = timedelta(days=7)
    pipe.append(PLAY[:1])
    pipe.append(PLAY[:1], received_at=RECEIVED + window)  # duplicate
    pipe.append(PLAY[:1], received_at=RECEIVED + window + timedelta(microseconds=1))  # kept
    # ... and it renews the window: a copy 7 days after that one is a duplicate again.
    pipe.append(PLAY[:1], received_at=RECEIVED + 2 * window + timedelta(microseconds=1))
    stats = pipe.processor().process_available()
    assert (stats.processed, stats.duplicates) == (2, 2)
    assert pipe.store.item("PIPELINE", "TOTAL")["duplicates"] == 2


def test_dedup_keys_are_removed_a_day_after_they_expire(pipe):
    pipe.append(PLAY)  # received RECEIVED: keys expire RECEIVED + 7 days
    later = [ev("heartbeat", 200, 10, position_s=90)]
    pipe.append(later, received_at=RECEIVED + timedelta(days=8, seconds=1))
    processor = pipe.processor(batch_size=6)  # the old keys first, then the later event
    processor.process_available()
    assert dedup_key_count(pipe.store) == 1  # only the newest event's key is left


def test_out_of_order_batches_give_the_same_numbers_as_in_order(tmp_path, backend):
    ordered = Pipeline(tmp_path / "a", backend)
    ordered.append(PLAY)
    ordered.processor().process_available()
    shuffled = Pipeline(tmp_path / "b", backend)
    events = PLAY[:]
    random.Random(7).shuffle(events)
    processor = shuffled.processor(batch_size=2)
    for e in events:
        shuffled.append([e])
        processor.process_available()
    for sk in ("DAY#2026-11-20", "DAY#2026-11-21", "LOCALDAY#2026-11-21"):
        a = ordered.store.item("CONTENT#book-1", sk)
        b = shuffled.store.item("CONTENT#book-1", sk)
        # A retracted contribution leaves an attribute at 0: the same as absent.
        for name in a.keys() | b.keys():
            assert b.get(name, 0) == pytest.approx(a.get(name, 0), abs=1e-6), (sk, name)


def test_late_events_reach_the_lake_but_not_the_aggregates(pipe):
    pipe.append(PLAY)
    week_later = ev("heartbeat", 8 * 86400, 20, playback_id="p2", position_s=0)
    old = ev("play_start", 0.5 * 86400, 21, playback_id="p3", position_s=0)
    pipe.append([week_later, old], received_at=RECEIVED + timedelta(days=9))
    stats = pipe.processor().process_available()
    assert stats.late == 1
    late_rows = [r for r in pipe.lake_rows("events") if r["late"]]
    assert [r["event_id"] for r in late_rows] == ["e21"]
    assert pipe.store.item("PIPELINE", "TOTAL")["late"] == 1
    assert pipe.store.item("CONTENT#book-1", "DAY#2026-11-21").get("plays", 0) == 0


def test_idle_play_is_closed_at_its_last_event_once_the_watermark_passes(pipe):
    unfinished = [ev("play_start", 0, 1, position_s=0), ev("heartbeat", 20, 2, position_s=20)]
    pipe.append(unfinished)
    processor = pipe.processor()
    processor.process_available()
    item = pipe.store.item("CONTENT#book-1", "DAY#2026-11-20")
    assert item.get("skipped", 0) == 0  # still open: maybe the listener comes back
    later = ev("play_start", 31 * 60, 3, playback_id="p2", position_s=0)
    pipe.append([later])
    processor.process_available()
    item = pipe.store.item("CONTENT#book-1", "DAY#2026-11-20")
    assert item["skipped"] == 1  # 20 s of playing, then idle: a skip
    assert item["playing_time_s"] == pytest.approx(20.0, abs=1e-6)
    assert [r["end_reason"] for r in pipe.lake_rows("plays")] == ["idle"]


class FailingStore(SQLiteStore):
    """A real SQLite store whose Nth apply fails, as a crash between lake and store."""

    def __init__(self, path: Path, fail_at: int) -> None:
        super().__init__(path)
        self.calls = 0
        self.fail_at = fail_at

    def apply(self, batch: StoreBatch) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise StoreError("simulated crash before the commit")
        super().apply(batch)


def test_a_crash_between_lake_write_and_store_commit_counts_nothing_twice(tmp_path):
    reference = Pipeline(tmp_path / "ref")
    reference.append(PLAY)
    reference.processor().process_available()

    pipe = Pipeline(tmp_path / "crash")
    pipe.append(PLAY)
    pipe.store = FailingStore(tmp_path / "crash" / "store.db", fail_at=2)
    with pytest.raises(StoreError):
        pipe.processor(batch_size=2).process_available()
    pipe.store = SQLiteStore(tmp_path / "crash" / "store.db")
    pipe.processor(batch_size=4).process_available()  # other boundaries after restart
    for sk in ("DAY#2026-11-20", "DAY#2026-11-21"):
        a = reference.store.item("CONTENT#book-1", sk)
        b = pipe.store.item("CONTENT#book-1", sk)
        for name in a.keys() | b.keys():
            assert b.get(name, 0) == pytest.approx(a.get(name, 0), abs=1e-6), (sk, name)
    assert sorted(r["event_id"] for r in pipe.lake_rows("events")) == sorted(
        r["event_id"] for r in reference.lake_rows("events")
    )


def test_live_counts_users_playing_in_the_last_minute(sqlite_pipe):
    pipe = sqlite_pipe
    """The ``live`` query over what the processor keeps (playpulse.processor.state)."""
    now = T0 + timedelta(seconds=200)
    pipe.append(
        [
            ev("play_start", 190, 1, user_id="a", playback_id="pa"),
            ev("play_start", 100, 2, user_id="b", playback_id="pb"),  # too long ago
            ev("play_start", 180, 3, user_id="c", playback_id="pc"),
            ev("pause", 195, 4, user_id="c", playback_id="pc"),  # paused now
        ]
    )
    pipe.processor().process_available()
    (live,) = live_table(Settings(data_dir=pipe.root), now).to_pylist()
    assert live["concurrent_listeners"] == 1  # a; b's play started too long ago, c paused
    assert live["top_content"] == [{"content_id": CONTENT["content_id"], "listeners": 1}]
    assert live["freshness_s"] == 0.0  # received after "now": never negative


def test_an_undecodable_record_is_quarantined_once_even_when_its_batch_is_redone(tmp_path):
    pipe = Pipeline(tmp_path)
    pipe.append(PLAY[:2])
    pipe.stream.append([("u1", b"not json")])
    pipe.store = FailingStore(tmp_path / "store.db", fail_at=1)
    with pytest.raises(StoreError):
        pipe.processor().process_available()
    pipe.store = SQLiteStore(tmp_path / "store.db")
    stats = pipe.processor().process_available()
    assert stats.quarantined == 1
    entries = pipe.quarantine.list(status=None)
    assert len(entries) == 1
    assert entries[0].source == "processor"
    assert entries[0].raw == b"not json"


def test_freshness_is_the_newest_receipt_across_partitions(sqlite_pipe):
    pipe = sqlite_pipe
    from playpulse.config import Settings
    from playpulse.query.live import live_table

    # Partition 1 is processed last but holds the older receipt.
    pipe.append([ev("play_start", 0, 1, user_id="a", playback_id="pa")], RECEIVED)
    later = RECEIVED + timedelta(minutes=9)
    pipe.append([ev("play_start", 0, 2, user_id="d", playback_id="pd")], later)
    assert (pipe.stream.partition_for("d"), pipe.stream.partition_for("a")) == (0, 1)
    pipe.processor().process_available()
    settings = Settings(data_dir=pipe.root)
    row = live_table(settings, later + timedelta(seconds=5)).to_pylist()[0]
    assert row["freshness_s"] == pytest.approx(5.0, abs=1e-3)


class RecordingStore(SQLiteStore):
    """A real SQLite store that notes how many state bytes each apply writes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.state_bytes: list[int] = []

    def apply(self, batch: StoreBatch) -> None:
        self.state_bytes.append(sum(len(v) for v in batch.states.values() if v is not None))
        super().apply(batch)


def long_play(heartbeats: int) -> list[dict[str, Any]]:
    start = [ev("play_start", 0, 1, position_s=0)]
    beats = [ev("heartbeat", 10 * i, 1 + i, position_s=10 * i) for i in range(1, heartbeats + 1)]
    return start + beats


def test_a_long_open_play_costs_each_batch_only_its_new_events(tmp_path):
    # One event per batch, as under a steady trickle: the play's stored state must not
    # be written whole again at every batch (that made long plays quadratic).
    pipe = Pipeline(tmp_path)
    pipe.store = RecordingStore(tmp_path / "store.db")
    processor = pipe.processor(batch_size=1)
    for event in long_play(120):
        pipe.append([event])
        processor.process_available()
    written = pipe.store.state_bytes
    assert len(written) == 121
    assert written[-1] < 2 * written[10]


def test_an_open_play_resumed_after_a_restart_gives_the_same_numbers(tmp_path, backend):
    events = [*long_play(60), ev("play_end", 605, 99, position_s=605, reason="stopped")]
    whole = Pipeline(tmp_path / "whole", backend)
    whole.append(events)
    whole.processor().process_available()

    pipe = Pipeline(tmp_path / "restarted", backend)
    for start in range(0, len(events), 20):
        pipe.append(events[start : start + 20])
        # A new processor each time: the open play's events come back from the store.
        pipe.processor(batch_size=7).process_available()
    for sk in ("DAY#2026-11-20", "DAY#2026-11-21"):
        a = whole.store.item("CONTENT#book-1", sk)
        b = pipe.store.item("CONTENT#book-1", sk)
        assert a, sk
        for name in a.keys() | b.keys():
            assert b.get(name, 0) == pytest.approx(a.get(name, 0), abs=1e-6), (sk, name)
    assert pipe.lake_rows("plays")[0]["playing_time_s"] == pytest.approx(605.0, abs=1e-6)
    # Closed, but its events are kept for late events: folded into the play's state.
    assert pipe.store.state_keys("PEV#") == []
    [key] = pipe.store.state_keys("PLAY#")
    blob = pipe.store.states([key])[key]
    state = pstate.decode_play(pstate.unpack(blob))
    assert (state.closed, state.count, len(state.events), state.chunks) == (True, 62, 62, [])
    assert len(blob) < sum(len(raw) for raw in state.events) / 4  # compressed


def test_a_play_changed_by_the_batch_that_finalizes_old_plays_keeps_its_state(pipe):
    # p1 ends; 9 days later (past the allowed lateness + a day) one batch brings both
    # a new play and another event of p1. Finalizing forgets closed plays that can no
    # longer change, but not p1: this batch just changed it.
    nine_days = 9 * 86_400
    pipe.append([ev("play_start", 0, 1), ev("play_end", 60, 2, reason="stopped")])
    processor = pipe.processor()
    processor.process_available()
    pipe.append(
        [
            ev("play_start", nine_days, 3, playback_id="p2"),
            ev("pause", nine_days + 10, 4),  # does not reopen p1: it stays closed
        ],
        received_at=T0 + timedelta(seconds=nine_days + 60),
    )
    processor.process_available()
    [p1] = [k for k in pipe.store.state_keys("PLAY#") if k.endswith("#p1")]
    state = pstate.decode_play(pstate.unpack(pipe.store.states([p1])[p1]))
    assert len(state.events) == 3  # its events, the pause included, folded into the state


def session_items(pipe: Pipeline) -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for pk, sk in (("SESSIONS", "DAY#2026-11-20"), ("USER#u1", "SESSIONS#2026-11-20")):
        out[(pk, sk)] = pipe.store.item(pk, sk)
    return out


def test_sessions_are_the_same_whatever_the_batches_and_the_arrival_order(tmp_path, backend):
    # Two sessions (a 40-minute gap), then an event that arrives last but falls in the
    # gap and joins them into one: the in-order and the out-of-order paths must agree
    # with one batch of everything.
    minutes = [0, 5, 10, 50, 55, 60, 70]
    late = ev("heartbeat", 30 * 60, 100, position_s=30)
    events = [ev("heartbeat", m * 60, i + 1, position_s=m) for i, m in enumerate(minutes)]
    events.append(ev("heartbeat", 200 * 60, 50, position_s=200))  # a later session
    whole = Pipeline(tmp_path / "whole", backend)
    whole.append([*events, late])
    whole.processor().process_available()

    pipe = Pipeline(tmp_path / "pieces", backend)
    processor = pipe.processor()
    for event in [*events, late]:
        pipe.append([event])
        processor.process_available()
    assert session_items(pipe) == session_items(whole)
    assert session_items(whole)[("SESSIONS", "DAY#2026-11-20")]["sessions"] == 1
    assert pipe.store.item("SESSIONS", "DAY#2026-11-21")["sessions"] == 1

    def current(p: Pipeline) -> set[tuple[Any, ...]]:
        rows = p.lake_rows("sessions")
        newest: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in rows:
            key = (r["user_id"], r["started_at"])
            if key not in newest or r["version"] > newest[key]["version"]:
                newest[key] = r
        return {
            (r["started_at"], r["ended_at"], r["events"])
            for r in newest.values()
            if not r["deleted"]
        }

    assert current(pipe) == current(whole)


class ThresholdStore(SQLiteStore):
    """A real SQLite store that notes the garbage collector's thresholds at each apply."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.thresholds: list[tuple[int, int, int]] = []

    def apply(self, batch: StoreBatch) -> None:
        self.thresholds.append(gc.get_threshold())
        super().apply(batch)


def test_polls_run_with_the_processing_gc_thresholds_and_restore_them(tmp_path):
    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    pipe = Pipeline(tmp_path)
    pipe.store = ThresholdStore(tmp_path / "store.db")
    pipe.append(PLAY)
    pipe.processor(batch_size=2).process_available()
    assert pipe.store.thresholds
    assert set(pipe.store.thresholds) == {GC_THRESHOLDS}
    assert gc.get_threshold() == before


def test_processing_gc_nests_and_restores_after_an_error():
    before = gc.get_threshold()
    inside = []

    def nested_then_fail() -> None:
        with processing_gc():
            with processing_gc():
                inside.append(gc.get_threshold())
            inside.append(gc.get_threshold())  # the outer block still runs
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        nested_then_fail()
    assert inside == [GC_THRESHOLDS, GC_THRESHOLDS]
    assert gc.get_threshold() == before
