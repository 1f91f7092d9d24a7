"""The embedded event stream: one SQLite file in WAL mode.

Durability: ``append`` commits one transaction before it returns. In WAL mode with
``synchronous=NORMAL`` (the default here) a committed transaction survives a crash or
SIGKILL of the process; ``synchronous="FULL"`` also makes it survive power loss, at the
cost of an fsync per append (https://www.sqlite.org/pragma.html#pragma_synchronous).

Several processes may append to and read from the same file (``playpulse up`` and
``playpulse import``): offsets are assigned inside the write transaction, so they stay
strictly increasing whoever writes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from playpulse.errors import BackpressureError, ConfigError, OffsetOutOfRangeError, StreamError
from playpulse.stream.base import Appended, EventStream, PartitionInfo, Record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stream_meta (
    name TEXT PRIMARY KEY,
    num_partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS partitions (
    partition INTEGER PRIMARY KEY,
    start_offset INTEGER NOT NULL,
    end_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    appended_at_us INTEGER NOT NULL,
    PRIMARY KEY (partition, "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    "group" TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    PRIMARY KEY ("group", partition)
) WITHOUT ROWID;
"""


@contextlib.contextmanager
def _as_stream_error(doing: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StreamError(f"{doing} failed: {exc}") from exc


def _now_us() -> int:
    return time.time_ns() // 1000


def _from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


class SQLiteStream(EventStream):
    """An :class:`EventStream` in one SQLite file.

    ``path`` is created if missing. ``num_partitions`` is fixed when the file is created;
    opening it with another number raises :class:`~playpulse.errors.ConfigError`.
    ``retention`` is how long records are kept (see ``enforce_retention``).
    ``busy_timeout_s`` is how long an append waits for another writer before it raises
    :class:`~playpulse.errors.BackpressureError`.
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
    ) -> None:
        if num_partitions < 1:
            raise ConfigError(f"num_partitions must be at least 1, got {num_partitions}")
        self.path = Path(path)
        self.name = name
        self.num_partitions = num_partitions
        self.retention = retention
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._init_schema()
        except BaseException:
            self._db.close()
            raise

    def _init_schema(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
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
                        "INSERT INTO partitions VALUES (?, 0, 0)",
                        [(p,) for p in range(self.num_partitions)],
                    )
                elif row[0] != self.num_partitions:
                    raise ConfigError(
                        f"stream '{self.name}' in {self.path} has {row[0]} partitions; "
                        f"it cannot be opened with {self.num_partitions}"
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def append(self, records: Sequence[tuple[str, bytes]]) -> list[Appended]:
        """Append in one transaction; see :meth:`EventStream.append`."""
        if not records:
            return []
        placed = [(self.partition_for(key), key, value) for key, value in records]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise BackpressureError(f"stream {self.path} is busy: {exc}") from exc
            # Taken inside the write lock, so append times grow with offsets (retention
            # relies on that) whichever process writes.
            now_us = _now_us()
            try:
                ends = dict(self._db.execute("SELECT partition, end_offset FROM partitions"))
                rows = []
                result = []
                for partition, key, value in placed:
                    offset = ends[partition]
                    ends[partition] = offset + 1
                    rows.append((partition, offset, key, value, now_us))
                    result.append(Appended(partition, offset))
                self._db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", rows)
                self._db.executemany(
                    "UPDATE partitions SET end_offset = ? WHERE partition = ?",
                    [(end, p) for p, end in ends.items()],
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StreamError(f"append to {self.path} failed: {exc}") from exc
        return result

    def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        """See :meth:`EventStream.read`."""
        info = self._partition(partition)
        if offset < info.start_offset or offset > info.end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside partition {partition}'s retained range "
                f"{info.start_offset}..{info.end_offset}"
            )
        with self._lock, _as_stream_error(f"reading {self.path}"):
            rows = self._db.execute(
                'SELECT "offset", key, value, appended_at_us FROM records '
                'WHERE partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
                (partition, offset, max_records),
            ).fetchall()
        return [Record(partition, o, k, v, _from_us(t)) for o, k, v, t in rows]

    def _partition(self, partition: int) -> PartitionInfo:
        if not 0 <= partition < self.num_partitions:
            raise StreamError(
                f"partition {partition} does not exist (0..{self.num_partitions - 1})"
            )
        return self.partitions()[partition]

    def partitions(self) -> list[PartitionInfo]:
        """See :meth:`EventStream.partitions`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT partition, start_offset, end_offset FROM partitions ORDER BY partition"
            ).fetchall()
        return [PartitionInfo(p, s, e) for p, s, e in rows]

    def committed(self, group: str, partition: int) -> int | None:
        """See :meth:`EventStream.committed`."""
        with self._lock:
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
        with self._lock, _as_stream_error(f"committing to {self.path}"):
            self._db.execute(
                'INSERT INTO group_offsets VALUES (?, ?, ?) ON CONFLICT ("group", partition) '
                'DO UPDATE SET "offset" = excluded."offset"',
                (group, partition, offset),
            )

    def groups(self) -> list[str]:
        """See :meth:`EventStream.groups`."""
        with self._lock:
            rows = self._db.execute(
                'SELECT DISTINCT "group" FROM group_offsets ORDER BY "group"'
            ).fetchall()
        return [r[0] for r in rows]

    def enforce_retention(self, now: datetime) -> int:
        """See :meth:`EventStream.enforce_retention`."""
        cutoff_us = int((now - self.retention).timestamp() * 1_000_000)
        deleted = 0
        with self._lock, _as_stream_error(f"retention on {self.path}"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for partition, start, end in self._db.execute(
                    "SELECT partition, start_offset, end_offset FROM partitions"
                ).fetchall():
                    new_start = self._first_offset_at_or_after(partition, start, end, cutoff_us)
                    if new_start > start:
                        cur = self._db.execute(
                            'DELETE FROM records WHERE partition = ? AND "offset" < ?',
                            (partition, new_start),
                        )
                        deleted += cur.rowcount
                        self._db.execute(
                            "UPDATE partitions SET start_offset = ? WHERE partition = ?",
                            (new_start, partition),
                        )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return deleted

    def _first_offset_at_or_after(self, partition: int, lo: int, hi: int, cutoff_us: int) -> int:
        # Append times grow with offsets within a partition: binary search on the key.
        while lo < hi:
            mid = (lo + hi) // 2
            row = self._db.execute(
                'SELECT appended_at_us FROM records WHERE partition = ? AND "offset" = ?',
                (partition, mid),
            ).fetchone()
            if row is not None and row[0] < cutoff_us:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
