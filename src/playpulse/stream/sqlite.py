"""The embedded event stream: one SQLite file in WAL mode.

Durability: ``append`` commits one transaction before it returns. In WAL mode with
``synchronous=NORMAL`` (the default here) a committed transaction survives a crash or
SIGKILL of the process; ``synchronous="FULL"`` also makes it survive power loss, at the
cost of an fsync per append (https://www.sqlite.org/pragma.html#pragma_synchronous).

Several processes may append to and read from the same file (``playpulse up`` and
``playpulse import``): offsets are assigned inside the write transaction, so they stay
strictly increasing whoever writes.

Storage follows Kafka's record batches: one append stores, per partition it touches,
one row holding all its records (msgpack ``[[key, value], ...]``) with the batch's base
offset and count. Record *i* of a batch has offset ``base_offset + i``. Writing a few
rows instead of one per record makes an append several times cheaper; reads and
retention work on whole batches and slice them.

Checkpoints (copying the WAL into the database file, with an fsync) run on a background
thread with a connection of its own, not inside ``append``: SQLite's automatic
checkpoint would run in the committing call and hold up every append of this process
for its duration (tens of ms on a busy disk). A checkpoint never affects durability,
which comes from the WAL commit. If the WAL still grows past ``WAL_LIMIT_BYTES`` (the
background checkpoints cannot catch up while appends keep coming), the next append
checkpoints itself before returning, which bounds the WAL as SQLite's default does.

Retention (``enforce_retention``) deletes whole record batches: by age only those every
consumer group has committed, and by size (``max_bytes``, against the running byte count
kept in ``partitions.stored_bytes``) the oldest, counting what a group had not committed
in ``lost_records``. Files made before these columns existed are migrated when opened.

An append refuses to write to a file it would lose: before each one, the path is
``os.stat``-ed (about a microsecond) and compared with the file opened, so a data dir
deleted, moved or replaced while running makes appends raise
:class:`~playpulse.errors.StreamError` (the collector answers 503) instead of
acknowledging records written to an unlinked file.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import msgspec

from playpulse._sqlitefile import OpenedFile, immediate_transaction
from playpulse.errors import BackpressureError, ConfigError, OffsetOutOfRangeError, StreamError
from playpulse.stream.base import Appended, EventStream, GroupView, PartitionInfo, Record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stream_meta (
    name TEXT PRIMARY KEY,
    num_partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS partitions (
    partition INTEGER PRIMARY KEY,
    start_offset INTEGER NOT NULL,
    end_offset INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS record_batches (
    partition INTEGER NOT NULL,
    base_offset INTEGER NOT NULL,
    record_count INTEGER NOT NULL,
    appended_at_us INTEGER NOT NULL,
    records BLOB NOT NULL,
    UNIQUE (partition, base_offset)
);
CREATE TABLE IF NOT EXISTS group_offsets (
    "group" TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    PRIMARY KEY ("group", partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_leases (
    "group" TEXT NOT NULL,
    partition INTEGER NOT NULL,  -- -1: the member's membership
    member TEXT NOT NULL,
    expires_s REAL NOT NULL,
    PRIMARY KEY ("group", partition, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lost_records (
    "group" TEXT NOT NULL,
    partition INTEGER NOT NULL,
    records INTEGER NOT NULL,
    PRIMARY KEY ("group", partition)
) WITHOUT ROWID;
"""


@contextlib.contextmanager
def _as_stream_error(doing: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StreamError(f"{doing} failed: {exc}") from exc


log = logging.getLogger("playpulse.stream")


def _why(exc: BaseException) -> str:
    """``exc`` in a few words (an OSError's reason and path, or the message), with a hint
    when the cause is likely a read-only or missing folder."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = str(exc)
    if "readonly" in text or "unable to open" in text:
        return f"{text} (is the data dir there, writable, and its disk not full?)"
    return text


#: Bytes written by one stream object after which its background checkpoint runs
#: (SQLite's automatic checkpoint: 1,000 pages of 4 KiB).
CHECKPOINT_BYTES = 4 * 1024 * 1024
#: WAL size past which an append checkpoints inline (the background one is behind).
WAL_LIMIT_BYTES = 64 * 1024 * 1024

_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(list[tuple[str, bytes]])


def _encode(records: list[tuple[str, bytes]]) -> bytes:
    return _batch_encoder.encode(records)


def decode_record_batch(blob: bytes) -> list[tuple[str, bytes]]:
    """The ``(key, value)`` records of one ``record_batches.records`` blob (msgpack), in
    offset order from the row's ``base_offset``. Raises :class:`msgspec.DecodeError` for
    a blob that is not one."""
    return _batch_decoder.decode(blob)


_decode = decode_record_batch
_new_tuple = tuple.__new__


def _now_us() -> int:
    return time.time_ns() // 1000


def _from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


class _Checkpointer:
    """A daemon thread that runs ``PRAGMA wal_checkpoint(PASSIVE)`` when asked."""

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        #: Frames in the WAL after the last checkpoint (SQLite's ``log`` figure).
        self.wal_frames = 0

    def request(self) -> None:
        """Start a checkpoint soon (the thread starts on the first request)."""
        with self._start_lock:
            if self._stopping:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"checkpoint {self.path.name}", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        try:
            # mode=rw: never create a new, empty file where the stream was deleted.
            db = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode=rw",
                uri=True,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            log.warning("checkpoint thread for %s cannot open it: %s", self.path, exc)
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    # A few rounds: appends made during a round leave frames for the next.
                    for _ in range(3):
                        busy, frames, done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        self.wal_frames = max(frames, 0)
                        if busy or done >= frames or self._stopping:
                            break
                except sqlite3.Error as exc:
                    log.warning("checkpoint of %s failed: %s", self.path, exc)
        finally:
            db.close()

    def close(self) -> None:
        """Stop the thread (waits for a running checkpoint)."""
        with self._start_lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join()


class SQLiteStream(EventStream):
    """An :class:`EventStream` in one SQLite file.

    ``path`` is created if missing. ``num_partitions`` is fixed when the file is created;
    opening it with another number raises :class:`~playpulse.errors.ConfigError`.
    ``retention`` is how long records are kept (see ``enforce_retention``).
    ``busy_timeout_s`` is how long an append waits for another writer before it raises
    :class:`~playpulse.errors.BackpressureError`. ``max_bytes`` bounds
    :meth:`stored_bytes` at retention (``None``: no bound; see
    :meth:`EventStream.enforce_retention`).

    Raises :class:`~playpulse.errors.StreamError` when the file or its folder cannot be
    created, opened or written (a read-only data dir, a path that is a file).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str = "events",
        num_partitions: int = 8,
        retention: timedelta = timedelta(days=7),
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_s: float = 5.0,
        max_bytes: int | None = None,
    ) -> None:
        if num_partitions < 1:
            raise ConfigError(f"num_partitions must be at least 1, got {num_partitions}")
        if max_bytes is not None and max_bytes < 0:
            raise ConfigError(f"max_bytes must be at least 0 or None, got {max_bytes}")
        self.path = Path(path)
        self.name = name
        self.num_partitions = num_partitions
        self.retention = retention
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.busy_timeout_s = busy_timeout_s
        self._checkpointer = _Checkpointer(self.path, busy_timeout_s)
        self._unchecked_bytes = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StreamError(f"cannot open the stream {self.path}: {_why(exc)}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            # Checkpoints run on self._checkpointer's thread (see the module docstring).
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            self._init_schema()
            #: The file opened: appends check that the path still names it.
            self._file = OpenedFile(
                self.path, error=StreamError, kind="stream", refusing="append records"
            )
        except (OSError, sqlite3.Error) as exc:
            self._db.close()
            raise StreamError(f"cannot open the stream {self.path}: {_why(exc)}") from exc
        except BaseException:
            self._db.close()
            raise

    def _init_schema(self) -> None:
        with self._lock, immediate_transaction(self._db):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            other = self._db.execute(
                "SELECT name FROM stream_meta WHERE name != ?", (self.name,)
            ).fetchone()
            if other is not None:
                raise ConfigError(
                    f"{self.path} holds stream '{other[0]}'; one file holds one stream, "
                    f"so open '{self.name}' in another file"
                )
            row = self._db.execute(
                "SELECT num_partitions FROM stream_meta WHERE name = ?", (self.name,)
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO stream_meta VALUES (?, ?)", (self.name, self.num_partitions)
                )
                self._db.executemany(
                    "INSERT INTO partitions (partition, start_offset, end_offset) VALUES (?, 0, 0)",
                    [(p,) for p in range(self.num_partitions)],
                )
            elif row[0] != self.num_partitions:
                raise ConfigError(
                    f"stream '{self.name}' in {self.path} has {row[0]} partitions; "
                    f"it cannot be opened with {self.num_partitions}"
                )
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(partitions)")}
            if "stored_bytes" not in columns:  # a file from before the size limit
                self._db.execute(
                    "ALTER TABLE partitions ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0"
                )
                self._db.execute(
                    "UPDATE partitions SET stored_bytes = (SELECT coalesce(sum(length("
                    "records)), 0) FROM record_batches b WHERE b.partition = "
                    "partitions.partition)"
                )

    def append(self, records: Sequence[tuple[str, bytes]]) -> list[Appended]:
        """Append in one transaction; see :meth:`EventStream.append`."""
        next_offset = {p: r.start for p, r in self.append_offsets(records).items()}
        out = []
        for key, _ in records:
            partition = self.partition_for(key)
            out.append(Appended(partition, next_offset[partition]))
            next_offset[partition] += 1
        return out

    def append_offsets(self, records: Sequence[tuple[str, bytes]]) -> dict[int, range]:
        """Append in one transaction; see :meth:`EventStream.append_offsets`."""
        if not records:
            return {}
        # partition_for_key inlined: this loop runs once per event on the ingest path.
        crc32, n = zlib.crc32, self.num_partitions
        by_partition: dict[int, list[tuple[str, bytes]]] = {}
        for record in records:
            partition = crc32(record[0].encode()) % n
            group = by_partition.get(partition)
            if group is None:
                by_partition[partition] = [record]
            else:
                group.append(record)
        blobs = {p: _encode(group) for p, group in by_partition.items()}
        self.check_file()
        with self._lock:
            self._begin_write()
            # Taken inside the write lock, so append times grow with offsets (retention
            # relies on that) whichever process writes.
            now_us = _now_us()
            try:
                ends = dict(self._db.execute("SELECT partition, end_offset FROM partitions"))
                self._db.executemany(
                    "INSERT INTO record_batches VALUES (?, ?, ?, ?, ?)",
                    [(p, ends[p], len(by_partition[p]), now_us, blob) for p, blob in blobs.items()],
                )
                self._db.executemany(
                    "UPDATE partitions SET end_offset = ?, stored_bytes = stored_bytes + ? "
                    "WHERE partition = ?",
                    [(ends[p] + len(group), len(blobs[p]), p) for p, group in by_partition.items()],
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:  # a failed COMMIT may have ended it
                    self._db.execute("ROLLBACK")
                raise StreamError(f"append to {self.path} failed: {exc}") from exc
            self._written(sum(map(len, blobs.values())))
        return {p: range(ends[p], ends[p] + len(group)) for p, group in by_partition.items()}

    def check_file(self) -> None:
        """Raise :class:`~playpulse.errors.StreamError` unless ``path`` still names the
        file this stream opened (one ``os.stat``, about a microsecond).

        SQLite keeps writing to a file that was deleted or moved away (with its data
        dir) while open; records appended then would be acknowledged and lost.
        """
        self._file.check()

    def _begin_write(self) -> None:
        """``BEGIN IMMEDIATE``, waiting up to ``busy_timeout_s`` for another writer.

        SQLite's own busy handler sleeps 1, 2, 5, 10, ... up to 100 ms between tries, so
        with two processes appending all the time (``--workers 2``) one of them kept
        losing and slept for longer and longer while the other wrote (p99 latencies of
        0.3-0.7 s, a worker idle). Polling every 0.2-2 ms instead hands the lock over
        within about a transaction's time. Raises :class:`BackpressureError` when the
        file stays locked.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.0002
        self._db.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.Error as exc:
                    locked = "locked" in str(exc) or "busy" in str(exc)
                    if not locked:
                        raise StreamError(
                            f"cannot write to the stream {self.path}: {exc} "
                            f"(is {self.path.parent} writable and its disk not full?)"
                        ) from exc
                    if time.monotonic() >= deadline:
                        raise BackpressureError(f"stream {self.path} is busy: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 1.5, 0.002)
        finally:
            self._db.execute(f"PRAGMA busy_timeout={round(self.busy_timeout_s * 1000)}")

    def _written(self, size: int) -> None:
        """Account for ``size`` bytes just committed; checkpoint when due (lock held)."""
        self._unchecked_bytes += size + self._page_size
        if self._unchecked_bytes < CHECKPOINT_BYTES:
            return
        self._unchecked_bytes = 0
        if self._checkpointer.wal_frames * self._page_size > WAL_LIMIT_BYTES:
            # The background checkpoints fall behind: catch up here, as SQLite would.
            try:
                _, frames, done = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                log.warning("checkpoint of %s failed: %s", self.path, exc)
            else:
                self._checkpointer.wal_frames = 0 if done >= frames else max(frames, 0)
            return
        self._checkpointer.request()

    def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        """See :meth:`EventStream.read`."""
        info = self._partition(partition)
        if offset < info.start_offset or offset > info.end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside partition {partition}'s retained range "
                f"{info.start_offset}..{info.end_offset}"
            )
        out: list[Record] = []
        with self._lock, _as_stream_error(f"reading {self.path}"):
            row = self._db.execute(
                "SELECT max(base_offset) FROM record_batches "
                "WHERE partition = ? AND base_offset <= ?",
                (partition, offset),
            ).fetchone()
            first = offset if row[0] is None else row[0]
            cursor = self._db.execute(
                "SELECT base_offset, appended_at_us, records FROM record_batches "
                "WHERE partition = ? AND base_offset >= ? ORDER BY base_offset",
                (partition, first),
            )
            for base, appended_us, blob in cursor:
                appended_at = _from_us(appended_us)
                first_i = offset - base if base < offset else 0
                pairs = _decode(blob)[first_i : first_i + max_records - len(out)]
                # tuple.__new__ straight: a NamedTuple's own __new__ is a Python function.
                out.extend(
                    [
                        _new_tuple(Record, (partition, base + i, key, value, appended_at))
                        for i, (key, value) in enumerate(pairs, first_i)
                    ]
                )
                if len(out) >= max_records:
                    return out
        return out

    def _partition(self, partition: int) -> PartitionInfo:
        if not 0 <= partition < self.num_partitions:
            raise StreamError(
                f"partition {partition} does not exist (0..{self.num_partitions - 1})"
            )
        return self.partitions()[partition]

    def partitions(self) -> list[PartitionInfo]:
        """See :meth:`EventStream.partitions`."""
        with self._lock, _as_stream_error(f"reading {self.path}"):
            rows = self._db.execute(
                "SELECT partition, start_offset, end_offset FROM partitions ORDER BY partition"
            ).fetchall()
        return [PartitionInfo(p, s, e) for p, s, e in rows]

    def committed(self, group: str, partition: int) -> int | None:
        """See :meth:`EventStream.committed`."""
        with self._lock, _as_stream_error(f"reading {self.path}"):
            row = self._db.execute(
                'SELECT "offset" FROM group_offsets WHERE "group" = ? AND partition = ?',
                (group, partition),
            ).fetchone()
        return None if row is None else int(row[0])

    def commit(self, group: str, partition: int, offset: int) -> None:
        """See :meth:`EventStream.commit`."""
        info = self._partition(partition)
        if offset > info.end_offset or offset < 0:
            raise OffsetOutOfRangeError(
                f"cannot commit offset {offset} for partition {partition}: "
                f"its end offset is {info.end_offset}"
            )
        self.check_file()
        with self._lock, _as_stream_error(f"committing to {self.path}"):
            self._db.execute(
                'INSERT INTO group_offsets VALUES (?, ?, ?) ON CONFLICT ("group", partition) '
                'DO UPDATE SET "offset" = excluded."offset"',
                (group, partition, offset),
            )
            self._written(0)

    def groups(self) -> list[str]:
        """See :meth:`EventStream.groups`."""
        with self._lock, _as_stream_error(f"reading {self.path}"):
            rows = self._db.execute(
                'SELECT DISTINCT "group" FROM group_offsets ORDER BY "group"'
            ).fetchall()
        return [r[0] for r in rows]

    def coordinate(
        self,
        group: str,
        member: str,
        *,
        claim: Iterable[int] = (),
        release: Iterable[int] = (),
        session_timeout_s: float,
        now_s: float,
    ) -> GroupView:
        """See :meth:`EventStream.coordinate`: one write transaction on the
        ``group_leases`` table, so members in several processes agree (a partition has
        one row per owner; a live one excludes every other)."""
        until = now_s + session_timeout_s
        claim = [p for p in claim if 0 <= p < self.num_partitions]
        with self._lock, _as_stream_error(f"coordinating group {group!r} in {self.path}"):
            with immediate_transaction(self._db):
                db = self._db
                db.execute(
                    'DELETE FROM group_leases WHERE "group" = ? AND expires_s < ?', (group, now_s)
                )
                db.executemany(
                    'DELETE FROM group_leases WHERE "group" = ? AND partition = ? AND member = ?',
                    [(group, p, member) for p in release],
                )
                db.execute(
                    'UPDATE group_leases SET expires_s = ? WHERE "group" = ? AND member = ?',
                    (until, group, member),
                )
                db.execute(
                    "INSERT INTO group_leases VALUES (?, -1, ?, ?) "
                    'ON CONFLICT ("group", partition, member) DO NOTHING',
                    (group, member, until),
                )
                for p in claim:
                    taken = db.execute(
                        'SELECT 1 FROM group_leases WHERE "group" = ? AND partition = ?',
                        (group, p),
                    ).fetchone()
                    if taken is None:
                        db.execute(
                            "INSERT INTO group_leases VALUES (?, ?, ?, ?)",
                            (group, p, member, until),
                        )
                rows = db.execute(
                    'SELECT partition, member FROM group_leases WHERE "group" = ?', (group,)
                ).fetchall()
            self._written(0)
        members = sorted(m for p, m in rows if p == -1)
        owned = frozenset(p for p, m in rows if p >= 0 and m == member)
        return GroupView(members, owned)

    def leave(self, group: str, member: str) -> None:
        """See :meth:`EventStream.leave`."""
        with (
            self._lock,
            _as_stream_error(f"leaving group {group!r} in {self.path}"),
            immediate_transaction(self._db),
        ):
            self._db.execute(
                'DELETE FROM group_leases WHERE "group" = ? AND member = ?', (group, member)
            )

    def stored_bytes(self) -> int:
        """See :meth:`EventStream.stored_bytes` (the msgpack record batches' bytes)."""
        with self._lock, _as_stream_error(f"reading {self.path}"):
            row = self._db.execute("SELECT coalesce(sum(stored_bytes), 0) FROM partitions")
            return int(row.fetchone()[0])

    def lost(self, group: str) -> dict[int, int]:
        """See :meth:`EventStream.lost`."""
        with self._lock, _as_stream_error(f"reading {self.path}"):
            rows = self._db.execute(
                'SELECT partition, records FROM lost_records WHERE "group" = ?', (group,)
            ).fetchall()
        found = dict(rows)
        return {p: int(found.get(p, 0)) for p in range(self.num_partitions)}

    def enforce_retention(self, now: datetime) -> int:
        """See :meth:`EventStream.enforce_retention` (whole record batches go at once).

        Raises :class:`~playpulse.errors.StreamError` if the file cannot be written.
        """
        cutoff_us = int((now - self.retention).timestamp() * 1_000_000)
        deleted = 0
        with self._lock, _as_stream_error(f"retention on {self.path}"):
            with immediate_transaction(self._db):
                parts = {
                    p: (start, end)
                    for p, start, end in self._db.execute(
                        "SELECT partition, start_offset, end_offset FROM partitions"
                    )
                }
                offsets = {
                    (g, p): int(o)
                    for g, p, o in self._db.execute(
                        'SELECT "group", partition, "offset" FROM group_offsets'
                    )
                }
                groups = sorted({g for g, _ in offsets})
                for p, (start, end) in parts.items():
                    # Every group has committed the offsets below ``bound``.
                    bound = min((offsets.get((g, p), start) for g in groups), default=end)
                    # Append times grow with offsets: the first batch young enough, or not
                    # wholly committed, marks the new start.
                    row = self._db.execute(
                        "SELECT base_offset FROM record_batches WHERE partition = ? "
                        "AND (appended_at_us >= ? OR base_offset + record_count > ?) "
                        "ORDER BY base_offset LIMIT 1",
                        (p, cutoff_us, bound),
                    ).fetchone()
                    new_start = end if row is None else int(row[0])
                    if new_start > start:
                        deleted += self._delete_below(p, start, new_start)
                if self.max_bytes is not None:
                    deleted += self._enforce_max_bytes(self.max_bytes, parts, offsets, groups)
            self._written(0)
        return deleted

    def _delete_below(self, partition: int, start: int, new_start: int) -> int:
        """Delete ``partition``'s batches below ``new_start`` (a batch's base offset or the
        end offset) and move its start there; return how many records went (lock and
        transaction held)."""
        size = self._db.execute(
            "SELECT coalesce(sum(length(records)), 0) FROM record_batches "
            "WHERE partition = ? AND base_offset < ?",
            (partition, new_start),
        ).fetchone()[0]
        self._db.execute(
            "DELETE FROM record_batches WHERE partition = ? AND base_offset < ?",
            (partition, new_start),
        )
        self._db.execute(
            "UPDATE partitions SET start_offset = ?, stored_bytes = max(stored_bytes - ?, 0) "
            "WHERE partition = ?",
            (new_start, size, partition),
        )
        return new_start - start

    def _enforce_max_bytes(
        self,
        max_bytes: int,
        parts: dict[int, tuple[int, int]],
        offsets: dict[tuple[str, int], int],
        groups: list[str],
    ) -> int:
        """Delete the oldest batches of any partition until the stored bytes are within
        ``max_bytes``, counting uncommitted records as lost (lock and transaction held)."""
        total = int(
            self._db.execute("SELECT coalesce(sum(stored_bytes), 0) FROM partitions").fetchone()[0]
        )
        excess = total - max_bytes
        if excess <= 0:
            return 0

        def oldest_first(p: int) -> Generator[tuple[int, int, int, int, int]]:
            cursor = self._db.execute(
                "SELECT appended_at_us, base_offset, record_count, length(records) "
                "FROM record_batches WHERE partition = ? ORDER BY base_offset",
                (p,),
            )
            try:
                while rows := cursor.fetchmany(256):
                    for appended_us, base, count, size in rows:
                        yield appended_us, p, base, count, size
            finally:
                cursor.close()

        new_start = {p: start for p, (start, _) in parts.items()}
        lost: dict[tuple[str, int], int] = {}
        readers = [oldest_first(p) for p in sorted(parts)]
        try:
            # Oldest first across partitions: by append time, then partition.
            for _, p, base, count, size in heapq.merge(*readers):
                if excess <= 0:
                    break
                excess -= size
                new_start[p] = base + count
                for g in groups:
                    position = offsets.get((g, p), parts[p][0])
                    n = base + count - max(position, base)
                    if n > 0:
                        lost[(g, p)] = lost.get((g, p), 0) + n
        finally:
            for reader in readers:  # close their cursors before deleting
                reader.close()
        deleted = 0
        for p, start in new_start.items():
            if start > parts[p][0]:
                deleted += self._delete_below(p, parts[p][0], start)
        self._db.executemany(
            'INSERT INTO lost_records VALUES (?, ?, ?) ON CONFLICT ("group", partition) '
            "DO UPDATE SET records = records + excluded.records",
            [(g, p, n) for (g, p), n in lost.items()],
        )
        if lost:
            log.warning(
                "stream %s is over its limit of %d bytes: deleted %d records before every "
                "consumer group committed them (lost: %s)",
                self.path,
                max_bytes,
                deleted,
                ", ".join(f"{g}/{p}: {n}" for (g, p), n in sorted(lost.items())),
            )
        return deleted

    # --- privacy (issue #14): erasing one person's records -----------------------------

    def erase(
        self, matches: Callable[[str, bytes], bool], *, floor: Mapping[int, int] | None = None
    ) -> int:
        """Delete every record for which ``matches(key, value)`` is true; return how many.

        Each record batch holding such a record is replaced, in one transaction, by the
        runs of its other records, each at its own base offset: the other records keep
        their offsets, and the erased ones become gaps that :meth:`read` steps over (a
        partition's ``end_offset - start_offset`` still counts them until retention
        passes them). Erased records at a partition's end that no consumer group has
        committed give their offsets back (``end_offset`` moves down to the last kept
        record, the highest offset a group committed here, or ``floor[partition]`` — the
        offsets a consumer that commits elsewhere, such as the processor in its store,
        has reached — whichever is highest), so a consumer is never left waiting for
        records that are gone; nobody read them. The connection runs with ``PRAGMA
        secure_delete=ON`` for it, so the erased bytes are overwritten in the file's
        pages; the caller VACUUMs and checkpoints the file afterwards to clear the
        write-ahead log too. For ``playpulse privacy delete``, run by the holder of the
        processor lock between batches. Raises :class:`~playpulse.errors.StreamError`
        when the file cannot be read or written.
        """
        self.check_file()
        erased = 0
        with self._lock, _as_stream_error(f"erasing records from {self.path}"):
            previous = self._db.execute("PRAGMA secure_delete").fetchone()[0]
            self._db.execute("PRAGMA secure_delete=ON")
            try:
                with immediate_transaction(self._db):
                    rows = self._db.execute(
                        "SELECT partition, base_offset, appended_at_us, records "
                        "FROM record_batches ORDER BY partition, base_offset"
                    ).fetchall()
                    touched: set[int] = set()
                    for partition, base, appended_us, blob in rows:
                        records = _decode(blob)
                        keep = [not matches(key, value) for key, value in records]
                        if all(keep):
                            continue
                        erased += keep.count(False)
                        touched.add(partition)
                        runs: list[tuple[int, list[tuple[str, bytes]]]] = []
                        for i, record in enumerate(records):
                            if not keep[i]:
                                continue
                            if runs and runs[-1][0] + len(runs[-1][1]) == base + i:
                                runs[-1][1].append(record)
                            else:
                                runs.append((base + i, [record]))
                        self._db.execute(
                            "DELETE FROM record_batches WHERE partition = ? AND base_offset = ?",
                            (partition, base),
                        )
                        blobs = [(start, _encode(run)) for start, run in runs]
                        self._db.executemany(
                            "INSERT INTO record_batches VALUES (?, ?, ?, ?, ?)",
                            [
                                (partition, start, len(run), appended_us, new)
                                for (start, run), (_, new) in zip(runs, blobs, strict=True)
                            ],
                        )
                        self._db.execute(
                            "UPDATE partitions SET stored_bytes = max(stored_bytes - ?, 0) "
                            "WHERE partition = ?",
                            (len(blob) - sum(len(new) for _, new in blobs), partition),
                        )
                    for partition in sorted(touched):
                        self._give_back_erased_tail(partition, (floor or {}).get(partition, 0))
            finally:
                self._db.execute(f"PRAGMA secure_delete={int(previous)}")
        return erased

    def _give_back_erased_tail(self, partition: int, floor: int) -> None:
        """Move ``partition``'s end offset down to just after its last record, but not
        below its start, any group's committed offset or ``floor`` (lock and transaction
        held)."""
        start, end = self._db.execute(
            "SELECT start_offset, end_offset FROM partitions WHERE partition = ?", (partition,)
        ).fetchone()
        (last_end,) = self._db.execute(
            "SELECT max(base_offset + record_count) FROM record_batches WHERE partition = ?",
            (partition,),
        ).fetchone()
        (committed,) = self._db.execute(
            'SELECT max("offset") FROM group_offsets WHERE partition = ?', (partition,)
        ).fetchone()
        new_end = max(start, last_end or 0, committed or 0, floor)
        if new_end < end:
            self._db.execute(
                "UPDATE partitions SET end_offset = ? WHERE partition = ?", (new_end, partition)
            )

    def close(self) -> None:
        """Stop the checkpoint thread and close the connection."""
        self._checkpointer.close()
        with self._lock:
            self._db.close()
