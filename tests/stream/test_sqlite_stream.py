"""SQLiteStream beyond the shared contract: the file, several connections, crashes."""

from __future__ import annotations

import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from playpulse.errors import BackpressureError, ConfigError, OffsetOutOfRangeError
from playpulse.stream import Appended, PartitionInfo, Record, SQLiteStream

WRITER = Path(__file__).with_name("crash_writer.py")
FAR_FUTURE = timedelta(days=365 * 100)


def read_all(stream: SQLiteStream, partition: int) -> list[Record]:
    offset = stream.partitions()[partition].start_offset
    out: list[Record] = []
    while records := stream.read(partition, offset, 1000):
        out.extend(records)
        offset = records[-1].offset + 1
    return out


def snapshot(stream: SQLiteStream) -> list[list[Record]]:
    return [read_all(stream, p) for p in range(stream.num_partitions)]


# --- the file --------------------------------------------------------------------------


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_reopening_keeps_records_offsets_and_committed_offsets(tmp_path, synchronous):
    path = tmp_path / "nested" / "dir" / "s.db"  # missing parents are created
    with SQLiteStream(path, num_partitions=3, synchronous=synchronous) as stream:
        stream.append([(f"user-{i}", f"old-{i}".encode()) for i in range(12)])
        stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE)  # start offsets move
        stream.append([(f"user-{i}", f"new-{i}".encode()) for i in range(30)])
        stream.commit("a", 0, stream.partitions()[0].end_offset)
        stream.commit("b", 1, stream.partitions()[1].start_offset + 1)
        partitions = stream.partitions()
        records = snapshot(stream)
        committed = {(g, p): stream.committed(g, p) for g in "ab" for p in range(3)}
        lag = {g: stream.lag(g) for g in "ab"}
    assert any(info.start_offset > 0 for info in partitions)

    with SQLiteStream(path, num_partitions=3, synchronous=synchronous) as reopened:
        assert reopened.partitions() == partitions
        assert snapshot(reopened) == records  # keys, values, offsets and append times
        assert {(g, p): reopened.committed(g, p) for g in "ab" for p in range(3)} == committed
        assert reopened.groups() == ["a", "b"]
        assert {g: reopened.lag(g) for g in "ab"} == lag
        # New appends continue after the old end offsets.
        appended = reopened.append([("user-0", b"after")])
        p = reopened.partition_for("user-0")
        assert appended == [Appended(p, partitions[p].end_offset)]


def test_opening_with_another_number_of_partitions_raises_config_error(tmp_path):
    path = tmp_path / "s.db"
    with SQLiteStream(path, num_partitions=3) as stream:
        stream.append([("k", b"v")])

    for wrong in (1, 2, 4, 8):
        with pytest.raises(ConfigError, match="3 partitions"):
            SQLiteStream(path, num_partitions=wrong)

    # The failed opens changed nothing.
    with SQLiteStream(path, num_partitions=3) as stream:
        assert stream.num_partitions == 3
        assert len(stream.partitions()) == 3
        assert [(r.key, r.value) for r in read_all(stream, stream.partition_for("k"))] == [
            ("k", b"v")
        ]


@pytest.mark.parametrize("num_partitions", [0, -1])
def test_fewer_than_one_partition_raises_config_error(tmp_path, num_partitions):
    with pytest.raises(ConfigError, match="num_partitions"):
        SQLiteStream(tmp_path / "s.db", num_partitions=num_partitions)


def test_append_raises_backpressure_while_another_writer_holds_the_file(tmp_path):
    path = tmp_path / "s.db"
    with SQLiteStream(path, num_partitions=2, busy_timeout_s=0.05) as stream:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process in a write transaction
            with pytest.raises(BackpressureError, match="busy"):
                stream.append([("k", b"v")])
            other.execute("ROLLBACK")
        finally:
            other.close()

        assert stream.partitions() == [PartitionInfo(0, 0, 0), PartitionInfo(1, 0, 0)]
        # Nothing of the refused append was stored; the next one starts at offset 0.
        assert stream.append([("k", b"v")]) == [Appended(stream.partition_for("k"), 0)]


# --- several connections on one file (several processes) ---------------------------------


def test_two_streams_on_one_file_appending_alternately(tmp_path):
    path = tmp_path / "s.db"
    with (
        SQLiteStream(path, num_partitions=3) as one,
        SQLiteStream(path, num_partitions=3) as two,
    ):
        rng = random.Random(7)
        placed: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        for i in range(60):
            writer = one if i % 2 == 0 else two
            batch = [(f"user-{rng.randrange(20)}", f"{i}:{j}".encode()) for j in range(i % 4)]
            for (_, value), a in zip(batch, writer.append(batch), strict=True):
                placed[a.partition].append((a.offset, value))

        for p in range(3):
            offsets = [offset for offset, _ in placed[p]]
            assert offsets == list(range(len(offsets)))  # unique, strictly increasing by 1
            # Both connections see every record, whoever appended it.
            assert [(r.offset, r.value) for r in read_all(one, p)] == placed[p]
            assert read_all(two, p) == read_all(one, p)
        assert one.partitions() == two.partitions()

        # Commits and retention made through one connection are seen by the other.
        ends = [len(placed[p]) for p in range(3)]
        for p in range(3):
            one.commit("g", p, ends[p])
        assert two.committed("g", 0) == ends[0]
        assert two.groups() == ["g"]
        two.enforce_retention(datetime.now(UTC) + FAR_FUTURE)
        assert one.partitions() == [PartitionInfo(p, ends[p], ends[p]) for p in range(3)]
        with pytest.raises(OffsetOutOfRangeError):
            one.read(0, 0, 10)


def test_two_streams_on_one_file_appending_concurrently(tmp_path):
    path = tmp_path / "s.db"
    appends_n = 40
    streams = [SQLiteStream(path, num_partitions=2) for _ in range(2)]
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            for i in range(appends_n):
                streams[w].append([(f"writer-{w}-key-{j}", f"{w}:{i}".encode()) for j in range(5)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        total = 0
        for p in range(2):
            records = read_all(streams[0], p)
            total += len(records)
            assert [r.offset for r in records] == list(range(len(records)))
            by_key: dict[str, list[int]] = defaultdict(list)
            for r in records:
                by_key[r.key].append(int(r.value.decode().split(":")[1]))
            assert all(seq == list(range(appends_n)) for seq in by_key.values())
        assert total == 2 * appends_n * 5
    finally:
        for stream in streams:
            stream.close()


# --- crash durability ------------------------------------------------------------------


@dataclass
class WriterRun:
    """One crash_writer.py process and what it acknowledged."""

    proc: subprocess.Popen[bytes]
    buffer: bytes = b""
    acks: list[tuple[int, int, bytes]] = field(default_factory=list)

    def take_lines(self) -> None:
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            tag, partition, offset, value = line.split(b" ", 3)
            assert tag == b"ack", line
            self.acks.append((int(partition), int(offset), value))


def start_writer(path: Path, num_partitions: int, run: str, seed: int) -> WriterRun:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(num_partitions), run, str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return WriterRun(proc)


def read_until(
    runs: list[WriterRun], targets: list[int], deadline: float, linger: float = 0.0
) -> None:
    """Read the writers' output until each acknowledged its target number of records,
    then for ``linger`` seconds more (the writers keep writing: the pipe never fills)."""
    with selectors.DefaultSelector() as selector:
        for run in runs:
            selector.register(run.proc.stdout, selectors.EVENT_READ, run)
        pending = set(range(len(runs)))
        stop_at = deadline
        while time.monotonic() < stop_at:
            for key, _ in selector.select(timeout=max(0.0, stop_at - time.monotonic())):
                run: WriterRun = key.data
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    run.proc.wait(timeout=5)
                    pytest.fail(
                        f"writer exited with {run.proc.returncode} before it was killed: "
                        f"{run.proc.stderr.read().decode()}"
                    )
                run.buffer += chunk
                run.take_lines()
            if pending:
                pending = {i for i in pending if len(runs[i].acks) < targets[i]}
                if not pending:
                    stop_at = min(deadline, time.monotonic() + linger)
        if pending:
            pytest.fail(f"writers did not acknowledge {targets} records before the deadline")


def kill_and_drain(run: WriterRun) -> None:
    """SIGKILL the writer and collect the acknowledgements still in the pipe."""
    os.kill(run.proc.pid, signal.SIGKILL)
    rest, stderr = run.proc.communicate(timeout=10)
    assert run.proc.returncode == -signal.SIGKILL, stderr.decode()
    run.buffer += rest
    run.take_lines()  # a torn last line (none expected) stays in the buffer, unchecked


def check_file(path: Path, num_partitions: int, acks: dict[tuple[int, int], bytes]) -> None:
    """Every acknowledged record is stored as acknowledged; every batch is whole."""
    with SQLiteStream(path, num_partitions=num_partitions) as stream:
        stored: dict[tuple[int, int], bytes] = {}
        for p in range(num_partitions):
            records = read_all(stream, p)
            assert [r.offset for r in records] == list(range(stream.partitions()[p].end_offset))
            stored.update({(p, r.offset): r.value for r in records})

    missing = sorted(pos for pos, v in acks.items() if stored.get(pos) != v)
    assert not missing, f"{len(missing)} acknowledged records lost or changed: {missing[:5]}"

    batches: dict[tuple[bytes, bytes], list[int]] = defaultdict(list)
    sizes: dict[tuple[bytes, bytes], int] = {}
    for value in stored.values():
        run, batch, index, size, _ = value.split(b":", 4)
        batches[(run, batch)].append(int(index))
        sizes[(run, batch)] = int(size)
    for batch_id, indexes in batches.items():
        assert sorted(indexes) == list(range(sizes[batch_id])), f"torn batch {batch_id}"

    # A writer acknowledges batch after batch, so what is stored but not acknowledged is
    # at most the one batch it was acknowledging (or had just committed) when killed.
    acked_batches: dict[bytes, set[int]] = defaultdict(set)
    for value in acks.values():
        run, batch, _ = value.split(b":", 2)
        acked_batches[run].add(int(batch))
    unacked_batches: dict[bytes, set[int]] = defaultdict(set)
    for pos, value in stored.items():
        if pos not in acks:
            run, batch, _ = value.split(b":", 2)
            unacked_batches[run].add(int(batch))
    for run, unacked in unacked_batches.items():
        assert len(unacked) == 1, f"run {run}: unacknowledged batches {sorted(unacked)}"
        assert min(unacked) >= max(acked_batches[run], default=0), run


def test_acknowledged_appends_survive_sigkill(tmp_path):
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    num_partitions = 4
    deadline = time.monotonic() + 15
    acks: dict[tuple[int, int], bytes] = {}

    for n in range(5):
        run = start_writer(path, num_partitions, f"r{n}", rng.randrange(2**32))
        try:
            # Keep reading for a random moment, so the kill lands anywhere in the loop.
            read_until([run], [rng.randrange(1, 500)], deadline, linger=rng.uniform(0, 0.05))
            kill_and_drain(run)
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.communicate()
        for p, o, value in run.acks:
            assert (p, o) not in acks, f"offset {p}/{o} acknowledged twice (seed {seed})"
            acks[(p, o)] = value
        check_file(path, num_partitions, acks)

    assert len(acks) >= 5


def test_two_writer_processes_never_acknowledge_the_same_offset(tmp_path):
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "shared.db"
    SQLiteStream(path, num_partitions=2).close()  # create the file before both start
    deadline = time.monotonic() + 15

    runs = [start_writer(path, 2, f"w{i}", rng.randrange(2**32)) for i in range(2)]
    try:
        read_until(runs, [300, 300], deadline, linger=rng.uniform(0, 0.05))
        for run in runs:
            kill_and_drain(run)
    finally:
        for run in runs:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.communicate()

    acks: dict[tuple[int, int], bytes] = {}
    for run in runs:
        for p, o, value in run.acks:
            assert (p, o) not in acks, f"offset {p}/{o} acknowledged twice (seed {seed})"
            acks[(p, o)] = value
        # Each writer's own offsets in a partition strictly increase.
        for p in range(2):
            own = [o for q, o, _ in run.acks if q == p]
            assert own == sorted(own)
    check_file(path, 2, acks)


def test_checkpoints_run_in_the_background_and_keep_the_wal_bounded(tmp_path, monkeypatch):
    import playpulse.stream.sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "CHECKPOINT_BYTES", 64 * 1024)
    path = tmp_path / "stream.db"
    stream = SQLiteStream(path, num_partitions=2)
    value = os.urandom(1000)
    try:
        for i in range(200):  # about 200 KiB per round of 200 records
            stream.append([(f"k{j}", value) for j in range(200)])
            if i % 50 == 49:
                time.sleep(0.2)  # let the checkpoint thread catch up
        deadline = time.monotonic() + 10
        with sqlite3.connect(path) as probe:
            while True:
                # The database file holds checkpointed pages: it grows while the WAL is
                # copied into it (without a checkpoint it would stay at a few pages).
                if path.stat().st_size > 20 * 1024 * 1024:
                    break
                assert time.monotonic() < deadline, "no checkpoint ran"
                time.sleep(0.05)
            assert probe.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # SQLite reuses the WAL from its start once a checkpoint caught up, so it stays
        # far smaller than the 40 MB appended.
        assert Path(f"{path}-wal").stat().st_size < sqlite_module.WAL_LIMIT_BYTES
        assert sum(p.end_offset for p in stream.partitions()) == 200 * 200
    finally:
        stream.close()
    # close() stopped the thread; the file reopens with every record.
    with SQLiteStream(path, num_partitions=2) as reopened:
        assert sum(p.count for p in reopened.partitions()) == 200 * 200
    thread = stream._checkpointer._thread
    assert thread is not None
    assert not thread.is_alive()
