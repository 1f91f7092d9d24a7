"""SQLiteStore beyond the shared contract: the file, several connections, crashes."""

from __future__ import annotations

import hashlib
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import playpulse
from playpulse.errors import StoreError
from playpulse.store import SQLiteStore, StoreBatch

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FAR_FUTURE = T0 + timedelta(days=365 * 100)


def full_batch(n: int, consumer: str = "proc") -> StoreBatch:
    """A batch that writes every kind of data, different for each ``n``."""
    batch = StoreBatch(consumer, offsets={0: 10 * n, n % 3: 10 * n + 1})
    batch.add("CONTENT#a", "DAY#2026-11-21", plays=1, playing_time_s=1.5 * n)
    batch.add(f"CONTENT#{n}", "TOTAL", plays=n)
    batch.members |= {("U#a", f"u{n}"), ("U#a", "u0")}
    batch.dedup.append((f"e{n}", T0 + timedelta(minutes=n)))
    batch.states[f"PLAY#{n}"] = f"state {n}".encode()
    if n > 1:
        batch.states[f"PLAY#{n - 2}"] = None
    return batch


def dump(store: SQLiteStore, n: int) -> dict[str, Any]:
    """What ``store`` holds under the keys ``full_batch(0..n-1)`` touch."""
    return {
        "items": store.items("CONTENT#a"),
        "totals": store.scan("CONTENT#", "TOTAL"),
        "members": store.count_members("U#a"),
        "seen": store.seen([f"e{i}" for i in range(n + 1)]),
        "states": store.states(f"PLAY#{i}" for i in range(n + 1)),
        "state_keys": store.state_keys(""),
        "offsets": {c: store.offsets(c) for c in ("proc", "other")},
    }


# --- the file --------------------------------------------------------------------------


def test_reopening_the_file_keeps_everything(tmp_path):
    path = tmp_path / "nested" / "dir" / "store.db"  # missing parents are created
    store = SQLiteStore(path)
    for n in range(6):
        store.apply(full_batch(n))
    store.apply(full_batch(6, consumer="other"))
    assert store.expire_dedup(T0 + timedelta(minutes=2)) == 2
    before = dump(store, 7)
    store.close()

    reopened = SQLiteStore(path)
    try:
        assert dump(reopened, 7) == before
        assert before["items"] == [("DAY#2026-11-21", {"plays": 7.0, "playing_time_s": 31.5})]
        assert before["totals"] == [(f"CONTENT#{n}", {"plays": float(n)}) for n in range(1, 7)]
        assert before["members"] == 7
        assert before["seen"] == {f"e{i}" for i in range(2, 7)}
        assert before["states"] == {"PLAY#5": b"state 5", "PLAY#6": b"state 6"}
        assert before["state_keys"] == ["PLAY#5", "PLAY#6"]
        assert before["offsets"] == {"proc": {0: 50, 1: 41, 2: 51}, "other": {0: 61}}

        # Writing on after reopening continues from the stored values.
        reopened.apply(full_batch(7))
        assert reopened.item("CONTENT#a", "DAY#2026-11-21") == {
            "plays": 8.0,
            "playing_time_s": 42.0,
        }
    finally:
        reopened.close()


def assert_dedup_keys_migrated(path: Path, keys: list[str], old_tables: set[str]) -> None:
    """Opening ``path`` moved its old dedup keys (``keys[i]`` expiring at T0 + i us) into
    the store's ids and dropped ``old_tables``; migrated keys expire like new ones, and
    new keys are added beside them."""
    store = SQLiteStore(path)
    try:
        expiries = store.dedup_expiries([*keys, "never-applied"])
        assert expiries == {k: T0 + i * timedelta(microseconds=1) for i, k in enumerate(keys)}
        tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_schema")}
        assert tables.isdisjoint(old_tables)
        store.apply(StoreBatch("proc", dedup=[("new", T0 + timedelta(days=1))]))
        assert store.expire_dedup(T0 + 10 * timedelta(microseconds=1)) == 10
        assert store.seen([keys[9], keys[10], "new"]) == {keys[10], "new"}
    finally:
        store.close()


def test_text_dedup_keys_of_an_older_file_are_migrated_to_ids(tmp_path):
    # A file as written before dedup keys became digests: table ``dedup`` with text keys.
    path = tmp_path / "store.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE dedup (event_id TEXT PRIMARY KEY, expires_at_us INTEGER NOT NULL) "
        "WITHOUT ROWID; CREATE INDEX dedup_by_expiry ON dedup (expires_at_us);"
    )
    t0_us = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    keys = [f"evt-{i}:{i:016x}" for i in range(25_000)] + ["ünïcode-id:0"]
    old.executemany("INSERT INTO dedup VALUES (?, ?)", [(k, t0_us + i) for i, k in enumerate(keys)])
    old.commit()
    old.close()

    assert_dedup_keys_migrated(path, keys, {"dedup", "dedup_by_expiry"})
    # Opening it again finds nothing left to migrate and keeps everything.
    again = SQLiteStore(path)
    try:
        assert again.seen([keys[10], keys[-1]]) == {keys[10], keys[-1]}
    finally:
        again.close()


def test_states_of_an_older_file_are_migrated_to_the_rowid_table(tmp_path):
    # A file as written before: state blobs in a WITHOUT ROWID table ``states``.
    path = tmp_path / "store.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE states (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
    blobs = {f"PLAY#0#{i}": bytes([i % 256]) * (i * 7) + b"!" for i in range(600)}
    old.executemany("INSERT INTO states VALUES (?, ?)", blobs.items())
    old.commit()
    old.close()

    store = SQLiteStore(path)
    try:
        assert store.states(blobs) == blobs
        assert store.state_keys("PLAY#0#") == sorted(blobs)
        tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_schema")}
        assert "states" not in tables
        store.apply(StoreBatch("proc", states={"PLAY#0#1": None, "PLAY#0#new": b"n"}))
    finally:
        store.close()
    again = SQLiteStore(path)
    try:
        expected = {k: v for k, v in blobs.items() if k != "PLAY#0#1"} | {"PLAY#0#new": b"n"}
        assert again.states([*blobs, "PLAY#0#new"]) == expected
    finally:
        again.close()


def test_dedup_keys_take_a_fixed_size_whatever_their_length(tmp_path):
    store = SQLiteStore(tmp_path / "store.db")
    try:
        long_key = "x" * 5_000
        odd = "\ud800 lone surrogate"
        store.apply(StoreBatch("proc", dedup=[(long_key, T0), ("short", T0), (odd, T0)]))
        kinds = store._db.execute("SELECT typeof(id) FROM dedup_ids").fetchall()
        assert kinds == [("integer",)] * 3
        assert store.seen([long_key, "x" * 4_999, "short", odd]) == {long_key, "short", odd}
    finally:
        store.close()


def test_digest_dedup_keys_of_an_older_file_are_migrated_to_ids(tmp_path):
    # A file as written before ids: 16-byte BLAKE2b digests with an expiry index.
    path = tmp_path / "store.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE dedup_digests (digest BLOB PRIMARY KEY, expires_at_us INTEGER NOT NULL)"
        " WITHOUT ROWID; CREATE INDEX dedup_digests_by_expiry ON dedup_digests (expires_at_us);"
    )
    t0_us = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    keys = [f"evt-{i}:{i:016x}" for i in range(3_000)] + ["ünïcode-id:0", "\ud800 lone"]

    def digest(key: str) -> bytes:
        return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    old.executemany(
        "INSERT INTO dedup_digests VALUES (?, ?)",
        [(digest(k), t0_us + i) for i, k in enumerate(keys)],
    )
    old.commit()
    old.close()

    assert_dedup_keys_migrated(path, keys, {"dedup_digests", "dedup_digests_by_expiry"})


def test_two_store_objects_on_one_file_see_each_others_batches(tmp_path):
    path = tmp_path / "shared.db"
    a, b = SQLiteStore(path), SQLiteStore(path)  # like two processes: two connections
    try:
        a.apply(full_batch(0))
        assert dump(b, 1) == dump(a, 1)
        assert b.item("CONTENT#a", "DAY#2026-11-21") == {"plays": 1.0}

        b.apply(full_batch(1))
        b.apply(full_batch(2))  # deletes PLAY#0, written by a
        assert dump(a, 3) == dump(b, 3)
        assert a.item("CONTENT#a", "DAY#2026-11-21") == {"plays": 3.0, "playing_time_s": 4.5}
        assert a.state_keys("PLAY#") == ["PLAY#1", "PLAY#2"]
        assert a.offsets("proc") == {0: 20, 1: 11, 2: 21}

        assert a.expire_dedup(T0 + timedelta(minutes=1)) == 1
        assert b.seen(["e0", "e1", "e2"]) == {"e1", "e2"}
    finally:
        a.close()
        b.close()


def test_store_objects_writing_concurrently_lose_nothing(tmp_path):
    path = tmp_path / "shared.db"
    SQLiteStore(path).close()  # create the file before the writers start
    writers, batches = 4, 50
    errors: list[BaseException] = []

    def work(w: int) -> None:
        store = SQLiteStore(path)
        try:
            for i in range(batches):
                batch = StoreBatch(f"w{w}", offsets={0: i + 1})
                batch.add("T", "S", n=1)
                batch.members.add(("U", f"{w}-{i}"))
                store.apply(batch)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert not errors
    with_all = SQLiteStore(path)
    try:
        assert with_all.item("T", "S") == {"n": float(writers * batches)}
        assert with_all.count_members("U") == writers * batches
        assert all(with_all.offsets(f"w{w}") == {0: batches} for w in range(writers))
    finally:
        with_all.close()


# --- failures --------------------------------------------------------------------------


def test_a_failure_at_the_last_statement_rolls_back_the_whole_batch(tmp_path):
    path = tmp_path / "store.db"
    store = SQLiteStore(path)
    try:
        store.apply(full_batch(0))
        before = dump(store, 3)
        # Make the offsets write (the last statement of apply) fail for one consumer.
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TRIGGER doom BEFORE INSERT ON offsets WHEN NEW.consumer = 'doomed' "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )
        db.close()

        with pytest.raises(StoreError, match="injected failure"):
            store.apply(full_batch(1, consumer="doomed"))

        assert dump(store, 3) == before
        assert store.offsets("doomed") == {}
        other = SQLiteStore(path, busy_timeout_s=0.5)  # the write lock was released
        try:
            other.apply(full_batch(1))
            assert store.count_members("U#a") == 2
        finally:
            other.close()
    finally:
        store.close()


def test_a_failed_batch_leaves_no_transaction_open(tmp_path):
    path = tmp_path / "store.db"
    store, other = SQLiteStore(path), SQLiteStore(path, busy_timeout_s=0.5)
    try:
        bad = full_batch(0)
        bad.offsets[5] = 2**64  # raises OverflowError while binding, not sqlite3.Error
        with pytest.raises(StoreError):
            store.apply(bad)

        other.apply(full_batch(1))  # would time out if store still held the write lock
        assert store.item("CONTENT#1", "TOTAL") == {"plays": 1.0}
        assert store.item("CONTENT#0", "TOTAL") == {}
        assert other.item("CONTENT#a", "DAY#2026-11-21") == {"plays": 1.0, "playing_time_s": 1.5}
    finally:
        store.close()
        other.close()


def test_a_locked_file_raises_store_error_and_applies_nothing(tmp_path):
    path = tmp_path / "store.db"
    store = SQLiteStore(path, busy_timeout_s=0.2)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.raises(StoreError, match="locked"):
            store.apply(full_batch(0))
        blocker.execute("ROLLBACK")

        assert dump(store, 1)["offsets"] == {"proc": {}, "other": {}}
        store.apply(full_batch(0))
        assert store.offsets("proc") == {0: 1}
    finally:
        blocker.close()
        store.close()


# --- crash atomicity -------------------------------------------------------------------

# Applies batches forever; each adds 1 to item (T, S).n, member and dedup key i, and moves
# offset 0 to i + 1; after apply returns it prints i. It resumes from the stored offset.
WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from playpulse.store import SQLiteStore, StoreBatch

    store = SQLiteStore(sys.argv[1])
    i = store.offsets("crash").get(0, 0)
    while True:
        batch = StoreBatch("crash", offsets={0: i + 1})
        batch.add("T", "S", n=1)
        batch.members.add(("U", f"m{i}"))
        batch.dedup.append((f"e{i}", datetime(2126, 1, 1, tzinfo=UTC)))
        store.apply(batch)
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
        i += 1
    """
)


@dataclass
class Writer:
    """One writer process and the batches it acknowledged."""

    proc: subprocess.Popen[bytes]
    buffer: bytes = b""
    acks: list[int] = field(default_factory=list)

    def take_lines(self) -> None:
        *lines, self.buffer = self.buffer.split(b"\n")
        self.acks.extend(int(line) for line in lines)


def start_writer(path: Path) -> Writer:
    env = dict(os.environ)
    src = str(Path(playpulse.__file__).resolve().parents[1])  # the code under test
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    return Writer(proc)


def read_until(writer: Writer, target: int, deadline: float, linger: float) -> None:
    """Read acknowledgements until ``target`` came, then for ``linger`` seconds more."""
    assert writer.proc.stdout is not None
    stop_at = deadline
    with selectors.DefaultSelector() as selector:
        selector.register(writer.proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < stop_at:
            for key, _ in selector.select(timeout=max(0.0, stop_at - time.monotonic())):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    _, stderr = writer.proc.communicate(timeout=5)
                    pytest.fail(f"writer exited with {writer.proc.returncode}: {stderr.decode()}")
                writer.buffer += chunk
                writer.take_lines()
            if stop_at == deadline and len(writer.acks) >= target:
                stop_at = min(deadline, time.monotonic() + linger)
    if len(writer.acks) < target:
        pytest.fail(f"the writer acknowledged {len(writer.acks)} of {target} batches in time")


def kill_and_drain(writer: Writer) -> None:
    """SIGKILL the writer and collect the acknowledgements still in the pipe."""
    os.kill(writer.proc.pid, signal.SIGKILL)
    rest, stderr = writer.proc.communicate(timeout=10)
    assert writer.proc.returncode == -signal.SIGKILL, stderr.decode()
    writer.buffer += rest
    writer.take_lines()  # a torn last line (none expected) stays in the buffer, unchecked


@pytest.mark.slow
def test_a_sigkilled_writer_leaves_whole_batches_and_matching_offsets(tmp_path):
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    deadline = time.monotonic() + 10
    last_acked, stored = -1, 0
    rounds = 0

    while rounds < 10 and time.monotonic() < deadline - 1:
        writer = start_writer(path)
        try:
            # Read for a random while, so the kill lands anywhere in the loop.
            read_until(writer, rng.randrange(1, 300), deadline, linger=rng.uniform(0, 0.03))
            kill_and_drain(writer)
        finally:
            if writer.proc.poll() is None:
                writer.proc.kill()
                writer.proc.communicate()
        rounds += 1
        # The writer resumed after the last batch stored, and acknowledged in order.
        assert writer.acks == list(range(writer.acks[0], writer.acks[0] + len(writer.acks)))
        assert writer.acks[0] == stored, f"seed {seed}"
        last_acked = writer.acks[-1]

        store = SQLiteStore(path)
        try:
            offset = store.offsets("crash").get(0, 0)
            n = store.item("T", "S").get("n", 0.0)
            members = store.count_members("U")
            seen = store.seen([f"e{i}" for i in range(offset + 5)])
        finally:
            store.close()
        # Every acknowledged batch is stored, at most one more (applied, not yet printed),
        # and each stored batch is whole: the sum, the set and the dedup keys match the
        # offset exactly.
        assert last_acked + 1 <= offset <= last_acked + 2, f"seed {seed}"
        stored = offset
        assert n == offset, f"seed {seed}: n={n} offset={offset}"
        assert members == offset, f"seed {seed}"
        assert seen == {f"e{i}" for i in range(offset)}, f"seed {seed}"

    assert rounds >= 2, f"only {rounds} crash rounds before the deadline"
