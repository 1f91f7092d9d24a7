"""Quarantine storage in one SQLite file (WAL), shared by every process of a data dir."""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from playpulse.errors import QuarantineError

Status = Literal["quarantined", "replayed"]

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
    origin TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS quarantine_status ON quarantine (status, id);
"""


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


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise QuarantineError("quarantine timestamps must be timezone-aware")
    return value.astimezone(UTC).isoformat()


class QuarantineStore:
    """Rejected events in the SQLite file ``path`` (created if missing).

    Safe to use from several threads and processes. :meth:`add` commits before it
    returns, so a rejection that was answered to a client is on disk.
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._db.executescript(_SCHEMA)

    def add(self, rejections: Iterable[Rejection]) -> list[int]:
        """Store ``rejections`` in one transaction; return their new ids."""
        rows = [
            (
                _ts(r.received_at),
                r.source,
                r.reason,
                json.dumps(r.errors),
                r.event_id,
                r.raw,
                r.origin,
            )
            for r in rejections
        ]
        if not rows:
            return []
        ids = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cur = self._db.execute(
                        "INSERT INTO quarantine (received_at, source, reason, errors, event_id, "
                        "raw, origin) VALUES (?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (origin) DO NOTHING RETURNING id",
                        row,
                    )
                    found = cur.fetchone()
                    if found is None:  # already stored under this origin
                        found = self._db.execute(
                            "SELECT id FROM quarantine WHERE origin = ?", (row[-1],)
                        ).fetchone()
                    ids.append(int(found[0]))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

    def list(
        self,
        *,
        status: Status | None = "quarantined",
        reason: str | None = None,
        limit: int = 100,
        after_id: int = 0,
    ) -> list[QuarantineEntry]:
        """Entries with ``id > after_id``, oldest first, filtered by status and reason."""
        sql = "SELECT * FROM quarantine WHERE id > ?"
        params: list[object] = [after_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if reason is not None:
            sql += " AND reason = ?"
            params.append(reason)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [self._entry(row) for row in rows]

    def get(self, entry_id: int) -> QuarantineEntry:
        """The entry with ``entry_id``; raises :class:`QuarantineError` if there is none."""
        with self._lock:
            row = self._db.execute("SELECT * FROM quarantine WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise QuarantineError(f"no quarantine entry with id {entry_id} in {self.path}")
        return self._entry(row)

    def count(self, status: Status | None = "quarantined") -> int:
        """How many entries have ``status`` (all entries when ``None``)."""
        with self._lock:
            if status is None:
                row = self._db.execute("SELECT count(*) FROM quarantine").fetchone()
            else:
                row = self._db.execute(
                    "SELECT count(*) FROM quarantine WHERE status = ?", (status,)
                ).fetchone()
        return int(row[0])

    def counts_by_reason(self) -> dict[str, int]:
        """Entries still quarantined, per reason code."""
        with self._lock:
            rows = self._db.execute(
                "SELECT reason, count(*) FROM quarantine WHERE status = 'quarantined' "
                "GROUP BY reason ORDER BY reason"
            ).fetchall()
        return {reason: int(n) for reason, n in rows}

    def mark_replayed(self, entry_ids: Sequence[int], replayed_at: datetime) -> None:
        """Mark entries as replayed (they stay stored, for the record)."""
        with self._lock:
            self._db.executemany(
                "UPDATE quarantine SET status = 'replayed', replayed_at = ? WHERE id = ?",
                [(_ts(replayed_at), i) for i in entry_ids],
            )

    def update_rejection(
        self, entry_id: int, reason: str, errors: builtins.list[dict[str, str]]
    ) -> None:
        """Replace an entry's reason and errors (after a failed replay)."""
        with self._lock:
            self._db.execute(
                "UPDATE quarantine SET reason = ?, errors = ? WHERE id = ?",
                (reason, json.dumps(errors), entry_id),
            )

    @staticmethod
    def _entry(row: tuple[object, ...]) -> QuarantineEntry:
        id_, received, source, reason, errors, event_id, raw, status, replayed, _origin = row
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
