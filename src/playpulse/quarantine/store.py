"""Quarantine storage in one SQLite file (WAL), shared by every process of a data dir.

The quarantine is bounded, because anyone with a write key can fill it: entries take at
most ``max_bytes`` (counted per entry as its raw payload, its errors and text fields plus
:data:`ENTRY_OVERHEAD_BYTES`) and are kept at most ``retention``. When an :meth:`add`
would pass the cap, or entries are older than the retention, the oldest go first, and
every entry dropped before it was replayed is counted, per reason and cause, in the file
itself (``quarantine_dropped``), so ``playpulse status`` and ``/metrics`` can say so.
``add`` stays cheap: the running totals live in a one-row table (``quarantine_totals``)
instead of a sum over the entries, and the age check runs at most every
:data:`RETENTION_CHECK_INTERVAL_S`. Freed pages are reused by later entries, so the file
stays near the cap; new files use ``auto_vacuum=INCREMENTAL`` so that what retention frees
is given back to the file system. Files from before these bounds are migrated on open.

Like the stream, :meth:`QuarantineStore.add` refuses to write to a file that was deleted,
moved or replaced while open (an ``os.stat`` per call), raising
:class:`~playpulse.errors.QuarantineError` instead of keeping rejections nobody will see.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from playpulse._sqlitefile import OpenedFile, immediate_transaction
from playpulse.config import Settings
from playpulse.errors import QuarantineError

Status = Literal["quarantined", "replayed"]

#: Default cap on the bytes of all entries (``quarantine_max_bytes``).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
#: Default age past which entries are dropped (``quarantine_retention_days``).
DEFAULT_RETENTION = timedelta(days=30)
#: Bytes counted per entry on top of its fields: the row's header and its index entries.
ENTRY_OVERHEAD_BYTES = 64
#: At most this often (per store object) does an ``add`` look for entries past retention.
RETENTION_CHECK_INTERVAL_S = 60.0

_COLUMNS = "id, received_at, source, reason, errors, event_id, raw, status, replayed_at"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    errors TEXT NOT NULL,
    event_id TEXT,
    raw BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'quarantined',
    replayed_at TEXT,
    origin TEXT UNIQUE,
    size_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS quarantine_status ON quarantine (status, id);
CREATE INDEX IF NOT EXISTS quarantine_received_at ON quarantine (received_at);
CREATE TABLE IF NOT EXISTS quarantine_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    entries INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine_dropped (
    reason TEXT NOT NULL,
    cause TEXT NOT NULL,
    entries INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    PRIMARY KEY (reason, cause)
) WITHOUT ROWID;
"""

#: ``size_bytes`` of an entry, as SQL over its columns (for migrating old files).
_SIZE_SQL = (
    f"length(raw) + length(errors) + length(received_at) + length(source) + length(reason) "
    f"+ coalesce(length(event_id), 0) + coalesce(length(origin), 0) + {ENTRY_OVERHEAD_BYTES}"
)


@contextlib.contextmanager
def _as_quarantine_error(doing: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        text = str(exc)
        if "readonly" in text or "unable to open" in text:
            text += " (is the data dir there, writable, and its disk not full?)"
        raise QuarantineError(f"{doing} failed: {text}") from exc


@dataclass(frozen=True, slots=True)
class Rejection:
    """Something to quarantine: the raw bytes as received and why they were rejected.

    ``source`` names where it was rejected (``collector``, ``import``, ``replay``);
    ``errors`` is a list of ``{"loc", "msg"}``; ``event_id`` is the event's id when it
    could be read; ``received_at`` is UTC-aware. ``origin`` names where the bytes came
    from when that is unique (``stream/3/1207``: partition 3, offset 1207): adding the
    same origin twice keeps one entry, so a processor that re-reads a batch after a
    crash does not quarantine its records twice.
    """

    raw: bytes
    reason: str
    errors: list[dict[str, str]]
    received_at: datetime
    source: str = "collector"
    event_id: str | None = None
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """A stored rejection with its id and replay status."""

    id: int
    received_at: datetime
    source: str
    reason: str
    errors: list[dict[str, str]]
    event_id: str | None
    raw: bytes
    status: Status
    replayed_at: datetime | None = field(default=None)

    def summary(self) -> dict[str, object]:
        """The entry without its raw payload, as JSON-ready values."""
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "source": self.source,
            "reason": self.reason,
            "event_id": self.event_id,
            "errors": self.errors,
            "status": self.status,
            "replayed_at": self.replayed_at.isoformat() if self.replayed_at else None,
            "raw_bytes": len(self.raw),
        }


@dataclass(frozen=True, slots=True)
class QuarantineStats:
    """The quarantine's size and what it dropped (see :meth:`QuarantineStore.stats`).

    ``entries``: entries stored (quarantined or replayed); ``quarantined``: of them, not
    replayed yet; ``stored_bytes``: their bytes as the cap counts them; ``max_bytes`` and
    ``retention``: the bounds of this store object; ``file_bytes``: the file and its WAL
    on disk; ``dropped_by_reason``: entries dropped before they were replayed, per reason
    code; ``dropped_by_cause``: the same per cause (``max_bytes``, ``retention``).
    """

    entries: int
    quarantined: int
    stored_bytes: int
    max_bytes: int
    retention: timedelta
    file_bytes: int
    dropped_by_reason: dict[str, int]
    dropped_by_cause: dict[str, int]

    @property
    def dropped(self) -> int:
        """Entries dropped before they were replayed, in all."""
        return sum(self.dropped_by_reason.values())

    def as_json(self) -> dict[str, object]:
        """JSON-ready values (``retention_days`` for ``retention``)."""
        return {
            "entries": self.entries,
            "quarantined": self.quarantined,
            "stored_bytes": self.stored_bytes,
            "max_bytes": self.max_bytes,
            "retention_days": self.retention / timedelta(days=1),
            "file_bytes": self.file_bytes,
            "dropped": self.dropped,
            "dropped_by_reason": self.dropped_by_reason,
            "dropped_by_cause": self.dropped_by_cause,
        }


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise QuarantineError("quarantine timestamps must be timezone-aware")
    return value.astimezone(UTC).isoformat()


class QuarantineStore:
    """Rejected events in the SQLite file ``path`` (created if missing), bounded by
    ``max_bytes`` and ``retention`` (see the module docstring).

    Safe to use from several threads and processes. :meth:`add` commits before it
    returns, so a rejection that was answered to a client is on disk. Raises
    :class:`~playpulse.errors.QuarantineError` when the file cannot be created, opened or
    written (a read-only data dir, a path that is a file), and for ``max_bytes`` < 1.
    """

    def __init__(
        self,
        path: str | Path,
        busy_timeout_s: float = 10.0,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retention: timedelta = DEFAULT_RETENTION,
        raw_retention: timedelta | None = None,
    ) -> None:
        if max_bytes < 1:
            raise QuarantineError(f"the quarantine's max_bytes must be at least 1, got {max_bytes}")
        if retention <= timedelta(0):
            raise QuarantineError(f"the quarantine's retention must be positive, got {retention}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.retention = retention
        #: Age past which an entry's raw payload is blanked (privacy; None: kept).
        self.raw_retention = raw_retention
        self._lock = threading.Lock()
        self._next_retention_check = 0.0  # time.monotonic() of the next age check
        doing = f"opening the quarantine {self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QuarantineError(f"{doing} failed: {exc.strerror}: {exc.filename}") from exc
        with _as_quarantine_error(doing):
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        try:
            with _as_quarantine_error(doing):
                # Takes effect only in a new file (before its first table).
                self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                # Privacy: dropped and blanked payloads are overwritten, not left in free pages.
                self._db.execute("PRAGMA secure_delete=ON")
                with self._lock:
                    self._init_schema()
            try:
                #: The file opened: writes check that the path still names it.
                self._file = OpenedFile(
                    self.path,
                    error=QuarantineError,
                    kind="quarantine",
                    refusing="store rejections",
                )
            except OSError as exc:
                raise QuarantineError(f"{doing} failed: {exc.strerror}") from exc
        except BaseException:
            self._db.close()
            raise

    def _init_schema(self) -> None:
        """Create the tables, migrate a file from before the bounds (lock held)."""
        with immediate_transaction(self._db):
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(quarantine)")}
            if columns and "size_bytes" not in columns:
                self._db.execute(
                    "ALTER TABLE quarantine ADD COLUMN size_bytes INTEGER NOT NULL DEFAULT 0"
                )
                self._db.execute(f"UPDATE quarantine SET size_bytes = {_SIZE_SQL}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            if self._db.execute("SELECT 1 FROM quarantine_totals").fetchone() is None:
                self._db.execute(
                    "INSERT INTO quarantine_totals "
                    "SELECT 1, count(*), coalesce(sum(size_bytes), 0) FROM quarantine"
                )

    @classmethod
    def from_settings(cls, settings: Settings) -> QuarantineStore:
        """The quarantine of ``settings.data_dir``, bounded by ``quarantine_max_bytes`` and
        ``quarantine_retention_days``. Raises :class:`QuarantineError` as the constructor."""
        return cls(
            settings.quarantine_path,
            max_bytes=settings.quarantine_max_bytes,
            retention=settings.quarantine_retention,
            raw_retention=timedelta(days=settings.quarantine_raw_retention_days),
        )

    def check_file(self) -> None:
        """Raise :class:`QuarantineError` unless ``path`` still names the file this store
        opened (one ``os.stat``): SQLite keeps writing to a deleted or moved file, and
        what it wrote there would be lost."""
        self._file.check()

    def add(self, rejections: Iterable[Rejection]) -> list[int]:
        """Store ``rejections`` in one transaction; return their ids, in order.

        An ``origin`` already stored returns the stored entry's id. Then, if the entries
        take more than ``max_bytes``, the oldest entries (not those of this call) are
        dropped until they fit, and, at most every :data:`RETENTION_CHECK_INTERVAL_S`,
        those older than ``retention``; drops are counted (see :meth:`stats`). Raises
        :class:`QuarantineError` when the file is gone, replaced or cannot be written.
        """
        rows = []
        for r in rejections:
            errors = json.dumps(r.errors)
            received = _ts(r.received_at)
            size = (
                len(r.raw)
                + len(errors)
                + len(received)
                + len(r.source)
                + len(r.reason)
                + len(r.event_id or "")
                + len(r.origin or "")
                + ENTRY_OVERHEAD_BYTES
            )
            row = (received, r.source, r.reason, errors, r.event_id, r.raw, r.origin, size)
            rows.append(row)
        if not rows:
            return []
        self.check_file()
        ids = []
        with self._lock, _as_quarantine_error(f"storing rejections in {self.path}"):
            with immediate_transaction(self._db):
                new_ids: builtins.list[int] = []
                added_bytes = 0
                for row in rows:
                    cur = self._db.execute(
                        "INSERT INTO quarantine (received_at, source, reason, errors, event_id, "
                        "raw, origin, size_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (origin) DO NOTHING RETURNING id",
                        row,
                    )
                    found = cur.fetchone()
                    if found is None:  # already stored under this origin
                        found = self._db.execute(
                            "SELECT id FROM quarantine WHERE origin = ?", (row[6],)
                        ).fetchone()
                    else:
                        new_ids.append(int(found[0]))
                        added_bytes += row[-1]
                    ids.append(int(found[0]))
                if new_ids:
                    (total,) = self._db.execute(
                        "UPDATE quarantine_totals SET entries = entries + ?, "
                        "stored_bytes = stored_bytes + ? RETURNING stored_bytes",
                        (len(new_ids), added_bytes),
                    ).fetchone()
                    if total > self.max_bytes:
                        self._drop_oldest(total - self.max_bytes, before_id=min(new_ids))
                expired = 0
                if time.monotonic() >= self._next_retention_check:
                    self._next_retention_check = time.monotonic() + RETENTION_CHECK_INTERVAL_S
                    expired = self._drop_expired(datetime.now(UTC))
            if expired:
                self._give_back_free_pages()
        return ids

    def enforce_retention(self, now: datetime) -> int:
        """Drop entries received before ``now - retention``, then the oldest while the
        entries take more than ``max_bytes``; return how many were dropped.

        :meth:`add` does the same as it goes; call this periodically so that old entries
        go even when nothing is added. Raises :class:`QuarantineError` when the file
        cannot be written.
        """
        self.check_file()
        with self._lock, _as_quarantine_error(f"retention on {self.path}"):
            with immediate_transaction(self._db):
                dropped = self._drop_expired(now)
                (total,) = self._db.execute("SELECT stored_bytes FROM quarantine_totals").fetchone()
                if total > self.max_bytes:
                    dropped += self._drop_oldest(total - self.max_bytes, before_id=None)
            if dropped:
                self._give_back_free_pages()
        return dropped

    def _drop_oldest(self, excess_bytes: int, before_id: int | None) -> int:
        """Drop the oldest entries (ids below ``before_id``) until ``excess_bytes`` are
        freed or none is left; count them (lock and transaction held)."""
        cursor = self._db.execute(
            "SELECT id, size_bytes FROM quarantine WHERE id < ? ORDER BY id",
            (before_id if before_id is not None else 2**63 - 1,),
        )
        last_id = None
        freed = 0
        while freed < excess_bytes and (rows := cursor.fetchmany(256)):
            for entry_id, size in rows:
                last_id, freed = entry_id, freed + size
                if freed >= excess_bytes:
                    break
        cursor.close()
        if last_id is None:
            return 0
        return self._drop("id <= ?", (last_id,), "max_bytes")

    def _drop_expired(self, now: datetime) -> int:
        """Blank the raw payloads past ``raw_retention`` (:meth:`_blank_raw`), then drop
        entries received before ``now - retention`` (lock and transaction held)."""
        self._blank_raw(now)
        return self._drop("received_at < ?", (_ts(now - self.retention),), "retention")

    def _drop(self, where: str, params: tuple[object, ...], cause: str) -> int:
        """Delete the entries matching ``where``, count those not replayed as dropped for
        ``cause`` per reason, and update the totals; return how many went."""
        groups = self._db.execute(
            "SELECT reason, status = 'replayed', count(*), sum(size_bytes) FROM quarantine "
            f"WHERE {where} GROUP BY 1, 2",
            params,
        ).fetchall()
        if not groups:
            return 0
        self._db.execute(f"DELETE FROM quarantine WHERE {where}", params)
        entries = sum(int(n) for _, _, n, _ in groups)
        size = sum(int(b) for _, _, _, b in groups)
        self._db.execute(
            "UPDATE quarantine_totals SET entries = entries - ?, stored_bytes = stored_bytes - ?",
            (entries, size),
        )
        self._db.executemany(
            "INSERT INTO quarantine_dropped VALUES (?, ?, ?, ?) ON CONFLICT (reason, cause) DO "
            "UPDATE SET entries = entries + excluded.entries, "
            "stored_bytes = stored_bytes + excluded.stored_bytes",
            [(reason, cause, n, b) for reason, replayed, n, b in groups if not replayed],
        )
        return entries

    # --- privacy (issue #14): raw payload retention and erasure -------------------------

    def _blank_raw(self, now: datetime) -> int:
        """Replace the raw payload of entries received before ``now - raw_retention`` by
        no bytes, keeping the entry (reason, errors, event id) and noting it in its
        errors; update the totals; return how many were blanked (lock and transaction
        held). Nothing when ``raw_retention`` is None."""
        if self.raw_retention is None:
            return 0
        cutoff = _ts(now - self.raw_retention)
        note = json.dumps(
            {
                "loc": "raw",
                "msg": f"raw payload dropped after {self.raw_retention.total_seconds() / 86400:g} "
                "day(s) (quarantine_raw_retention_days)",
            }
        )
        (count, freed) = self._db.execute(
            "SELECT count(*), coalesce(sum(length(raw)), 0) FROM quarantine "
            "WHERE received_at < ? AND length(raw) > 0",
            (cutoff,),
        ).fetchone()
        if not count:
            return 0
        self._db.execute(
            "UPDATE quarantine SET raw = x'', errors = json_insert(errors, '$[#]', json(?)), "
            "size_bytes = max(size_bytes - length(raw), 0) "
            "WHERE received_at < ? AND length(raw) > 0",
            (note, cutoff),
        )
        self._db.execute(
            "UPDATE quarantine_totals SET stored_bytes = max(stored_bytes - ?, 0)", (int(freed),)
        )
        return int(count)

    def blank_raw(self, now: datetime) -> int:
        """Blank the raw payloads of entries received before ``now - raw_retention`` (see
        :meth:`_blank_raw`, which :meth:`add` and :meth:`enforce_retention` also run);
        return how many. Raises :class:`QuarantineError` when the file cannot be
        written."""
        self.check_file()
        with (
            self._lock,
            _as_quarantine_error(f"raw payload retention on {self.path}"),
            immediate_transaction(self._db),
        ):
            return self._blank_raw(now)

    def erase(self, needles: Sequence[bytes]) -> int:
        """Delete every entry whose raw payload, errors or event id holds one of
        ``needles`` (a person's id, as bytes), counting them as dropped with cause
        ``erasure``; return how many. Deleted bytes are overwritten (secure_delete); the
        caller VACUUMs and checkpoints the file afterwards. Raises
        :class:`QuarantineError` when the file cannot be written."""
        needles = [n for n in needles if n]
        if not needles:
            return 0
        where = " OR ".join(
            "instr(raw, ?) > 0 OR instr(CAST(errors AS BLOB), ?) > 0 "
            "OR instr(CAST(coalesce(event_id, '') AS BLOB), ?) > 0"
            for _ in needles
        )
        params = tuple(n for n in needles for _ in range(3))
        self.check_file()
        with (
            self._lock,
            _as_quarantine_error(f"erasing entries from {self.path}"),
            immediate_transaction(self._db),
        ):
            return self._drop(f"({where})", params, "erasure")

    def _give_back_free_pages(self) -> None:
        """Return free pages to the file system (files with incremental auto-vacuum)."""
        # executescript steps the pragma to the end (execute frees one page per step);
        # on failure the pages stay free and are reused by later entries.
        with contextlib.suppress(sqlite3.Error):
            self._db.executescript("PRAGMA incremental_vacuum;")

    def stats(self) -> QuarantineStats:
        """Entries, bytes, bounds and drops (reads the totals, no scan of the entries).
        Raises :class:`QuarantineError` when the file cannot be read."""
        with self._lock, _as_quarantine_error(f"reading {self.path}"):
            entries, stored = self._db.execute(
                "SELECT entries, stored_bytes FROM quarantine_totals"
            ).fetchone()
            (quarantined,) = self._db.execute(
                "SELECT count(*) FROM quarantine WHERE status = 'quarantined'"
            ).fetchone()
            dropped = self._db.execute(
                "SELECT reason, cause, entries FROM quarantine_dropped"
            ).fetchall()
        by_reason: dict[str, int] = {}
        by_cause: dict[str, int] = {}
        for reason, cause, n in dropped:
            by_reason[reason] = by_reason.get(reason, 0) + int(n)
            by_cause[cause] = by_cause.get(cause, 0) + int(n)
        file_bytes = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                file_bytes += os.path.getsize(f"{self.path}{suffix}")
        return QuarantineStats(
            entries=int(entries),
            quarantined=int(quarantined),
            stored_bytes=int(stored),
            max_bytes=self.max_bytes,
            retention=self.retention,
            file_bytes=file_bytes,
            dropped_by_reason=dict(sorted(by_reason.items())),
            dropped_by_cause=dict(sorted(by_cause.items())),
        )

    def list(
        self,
        *,
        status: Status | None = "quarantined",
        reason: str | None = None,
        limit: int = 100,
        after_id: int = 0,
    ) -> list[QuarantineEntry]:
        """Entries with ``id > after_id``, oldest first, filtered by status and reason."""
        sql = f"SELECT {_COLUMNS} FROM quarantine WHERE id > ?"
        params: list[object] = [after_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if reason is not None:
            sql += " AND reason = ?"
            params.append(reason)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self._lock, _as_quarantine_error(f"reading {self.path}"):
            rows = self._db.execute(sql, params).fetchall()
        return [self._entry(row) for row in rows]

    def get(self, entry_id: int) -> QuarantineEntry:
        """The entry with ``entry_id``; raises :class:`QuarantineError` if there is none."""
        with self._lock, _as_quarantine_error(f"reading {self.path}"):
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM quarantine WHERE id = ?", (entry_id,)
            ).fetchone()
        if row is None:
            raise QuarantineError(f"no quarantine entry with id {entry_id} in {self.path}")
        return self._entry(row)

    def count(self, status: Status | None = "quarantined") -> int:
        """How many entries have ``status`` (all entries when ``None``)."""
        with self._lock, _as_quarantine_error(f"reading {self.path}"):
            if status is None:
                row = self._db.execute("SELECT count(*) FROM quarantine").fetchone()
            else:
                row = self._db.execute(
                    "SELECT count(*) FROM quarantine WHERE status = ?", (status,)
                ).fetchone()
        return int(row[0])

    def counts_by_reason(self) -> dict[str, int]:
        """Entries still quarantined, per reason code."""
        with self._lock, _as_quarantine_error(f"reading {self.path}"):
            rows = self._db.execute(
                "SELECT reason, count(*) FROM quarantine WHERE status = 'quarantined' "
                "GROUP BY reason ORDER BY reason"
            ).fetchall()
        return {reason: int(n) for reason, n in rows}

    def mark_replayed(self, entry_ids: Sequence[int], replayed_at: datetime) -> None:
        """Mark entries as replayed (they stay stored, for the record)."""
        with self._lock, _as_quarantine_error(f"marking entries replayed in {self.path}"):
            self._db.executemany(
                "UPDATE quarantine SET status = 'replayed', replayed_at = ? WHERE id = ?",
                [(_ts(replayed_at), i) for i in entry_ids],
            )

    def update_rejection(
        self, entry_id: int, reason: str, errors: builtins.list[dict[str, str]]
    ) -> None:
        """Replace an entry's reason and errors (after a failed replay)."""
        with self._lock, _as_quarantine_error(f"updating an entry in {self.path}"):
            self._db.execute(
                "UPDATE quarantine SET reason = ?, errors = ? WHERE id = ?",
                (reason, json.dumps(errors), entry_id),
            )

    @staticmethod
    def _entry(row: tuple[object, ...]) -> QuarantineEntry:
        id_, received, source, reason, errors, event_id, raw, status, replayed = row
        return QuarantineEntry(
            id=int(str(id_)),
            received_at=datetime.fromisoformat(str(received)),
            source=str(source),
            reason=str(reason),
            errors=json.loads(str(errors)),
            event_id=None if event_id is None else str(event_id),
            raw=bytes(raw) if isinstance(raw, bytes | bytearray | memoryview) else b"",
            status="replayed" if status == "replayed" else "quarantined",
            replayed_at=None if replayed is None else datetime.fromisoformat(str(replayed)),
        )

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> QuarantineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_quarantine(settings: Settings) -> QuarantineStore:
    """The quarantine of ``settings.data_dir`` with its bounds from the settings (see
    :meth:`QuarantineStore.from_settings`)."""
    return QuarantineStore.from_settings(settings)
