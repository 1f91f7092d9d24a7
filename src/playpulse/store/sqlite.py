"""The embedded real-time store: one SQLite file in WAL mode.

Readers (the API, ``playpulse query``) may open the file from other processes while the
processor writes; each :meth:`SQLiteStore.apply` is one transaction.

Dedup keys are kept as 16-byte BLAKE2b digests of the key (table ``dedup_digests``)
rather than as text: a key is usually an event id and a content hash, 50-60 characters,
and there is one per event for the whole dedup window, so they were a large part of the
file. Two distinct keys share a digest with probability about n^2 / 2^129 (n keys held at
once): below 10^-20 for a billion keys. Files written before (table ``dedup``, text
keys) are migrated when opened.

State blobs live in a rowid table (``state_blobs``): a rowid table keeps a row of up to
about 4 KB inside its page, where a WITHOUT ROWID table (``states``, before) moves all
but the first ~500 bytes of any value above ~1 KB to an overflow page of its own,
mostly empty: compressed play states (1-3 KB) took twice their size. Files with a
``states`` table are migrated when opened.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playpulse._sqlitefile import immediate_transaction
from playpulse.errors import StoreError
from playpulse.store.base import RealtimeStore, StoreBatch, replayed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL, sk TEXT NOT NULL, attr TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (pk, sk, attr)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS items_by_sk ON items (sk, pk);
CREATE TABLE IF NOT EXISTS members (
    set_key TEXT NOT NULL, member TEXT NOT NULL, PRIMARY KEY (set_key, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedup_digests (
    digest BLOB PRIMARY KEY, expires_at_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_digests_by_expiry ON dedup_digests (expires_at_us);
CREATE TABLE IF NOT EXISTS state_blobs (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    consumer TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) WITHOUT ROWID;
"""

_CHUNK = 500  # SQLite's variable limit is 32766; stay well below it.
_DIGEST_BYTES = 16
_WAL_LIMIT_BYTES = 16 * 2**20


def dedup_digest(key: str) -> bytes:
    """The 16-byte digest under which the SQLite store keeps dedup key ``key`` (any
    string, lone surrogates included)."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=_DIGEST_BYTES).digest()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _from_us(us: int) -> datetime:
    return _EPOCH + us * _MICROSECOND


def _us(value: datetime) -> int:
    """Microseconds since the epoch, exactly (float timestamps lose microseconds)."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise StoreError(f"store timestamps must be timezone-aware datetimes, got {value!r}")
    return (value - _EPOCH) // _MICROSECOND


def _prefix_where(column: str, prefix: str) -> tuple[str, tuple[str, ...]]:
    """An index-friendly condition (and its parameters) for ``column`` starting with
    ``prefix``. SQLite compares TEXT as UTF-8 bytes, which orders like code points, so the
    strings with the prefix are those from ``prefix`` up to (excluding) the next string
    that does not have it: the prefix with its last character raised by one."""
    stem = prefix.rstrip("\U0010ffff")
    if not stem:  # "" or only U+10FFFF: every string from ``prefix`` on has the prefix
        return f"{column} >= ?", (prefix,)
    last = ord(stem[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates cannot be stored; skip past them
        last = 0xE000
    return f"{column} >= ? AND {column} < ?", (prefix, stem[:-1] + chr(last))


class SQLiteStore(RealtimeStore):
    """A :class:`RealtimeStore` in the SQLite file ``path`` (created if missing)."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # A big transaction (a backlog caught up) grows the WAL; without a limit the file
        # keeps that size for good. Truncated back to this after a checkpoint.
        self._db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._migrate_text_dedup_keys()
            self._migrate_states_table()

    def _migrate_states_table(self) -> None:
        """Move the state blobs of a file written before ``state_blobs`` (table
        ``states``, WITHOUT ROWID) into it, in one transaction."""

        def move() -> None:
            self._db.execute(
                "INSERT OR REPLACE INTO state_blobs (key, value) "
                "SELECT key, value FROM states ORDER BY key"
            )

        self._migrate_away("states", "the states", move)

    def _migrate_text_dedup_keys(self) -> None:
        """Move the text dedup keys of a file written before digests (table ``dedup``)
        into ``dedup_digests``, in one transaction."""

        def move() -> None:
            rows = self._db.execute("SELECT event_id, expires_at_us FROM dedup")
            while chunk := rows.fetchmany(10_000):
                self._db.executemany(
                    "INSERT INTO dedup_digests VALUES (?, ?) ON CONFLICT (digest) DO "
                    "UPDATE SET expires_at_us = max(expires_at_us, excluded.expires_at_us)",
                    [(dedup_digest(key), expires) for key, expires in chunk],
                )

        self._migrate_away("dedup", "the dedup keys", move)

    def _migrate_away(self, table: str, what: str, move: Callable[[], None]) -> None:
        """If the file has the old ``table``: ``move`` its rows and drop it, in one
        transaction (another process may race: the table is checked again inside it).
        Raises :class:`StoreError` naming ``what`` when that fails."""
        exists = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?"
        if self._db.execute(exists, (table,)).fetchone() is None:
            return
        try:
            with immediate_transaction(self._db):
                if self._db.execute(exists, (table,)).fetchone() is not None:
                    move()
                    self._db.execute(f"DROP TABLE {table}")
        except Exception as exc:
            raise StoreError(f"migrating {what} of {self.path} failed: {exc}") from exc

    def apply(self, batch: StoreBatch) -> None:
        """See :meth:`RealtimeStore.apply`."""
        self._write(batch, replace=False)

    def replace(self, batch: StoreBatch) -> None:
        """See :meth:`RealtimeStore.replace`: one transaction that empties the tables
        (offsets and dedup keys excepted) and applies ``batch``."""
        self._write(batch, replace=True)

    def _write(self, batch: StoreBatch, *, replace: bool) -> None:
        try:
            # Convert and check what Python can before the transaction starts.
            amounts = [
                (pk, sk, attr, float(amount))
                for (pk, sk), attrs in batch.increments.items()
                for attr, amount in attrs.items()
            ]
            dedup = [(dedup_digest(key), _us(expires)) for key, expires in batch.dedup]
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise StoreError(f"invalid batch for {self.path}: {exc}") from exc
        increments = [row for row in amounts if row[3] != 0]
        with self._lock:
            try:
                with immediate_transaction(self._db):
                    if replace:
                        for table in ("items", "members", "state_blobs"):
                            self._db.execute(f"DELETE FROM {table}")
                    else:
                        applied = self._db.execute(
                            "SELECT partition, next_offset FROM offsets WHERE consumer = ?",
                            (batch.consumer,),
                        ).fetchall()
                        if replayed(batch, dict(applied)):
                            return
                    self._db.executemany(
                        "INSERT INTO items VALUES (?, ?, ?, ?) ON CONFLICT (pk, sk, attr) "
                        "DO UPDATE SET value = value + excluded.value",
                        increments,
                    )
                    self._db.executemany(
                        "INSERT OR IGNORE INTO members VALUES (?, ?)", sorted(batch.members)
                    )
                    self._db.executemany(
                        "INSERT OR REPLACE INTO dedup_digests VALUES (?, ?)", dedup
                    )
                    self._db.executemany(
                        "INSERT OR REPLACE INTO state_blobs (key, value) VALUES (?, ?)",
                        [(k, v) for k, v in batch.states.items() if v is not None],
                    )
                    self._db.executemany(
                        "DELETE FROM state_blobs WHERE key = ?",
                        [(k,) for k, v in batch.states.items() if v is None],
                    )
                    self._db.executemany(
                        "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)",
                        [(batch.consumer, p, o) for p, o in batch.offsets.items()],
                    )
            except StoreError:
                raise
            except Exception as exc:
                # Not only sqlite3.Error: binding can raise OverflowError (an int beyond
                # 64 bits) or UnicodeEncodeError.
                raise StoreError(f"applying a batch to {self.path} failed: {exc}") from exc

    def offsets(self, consumer: str) -> dict[int, int]:
        """See :meth:`RealtimeStore.offsets`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT partition, next_offset FROM offsets WHERE consumer = ?", (consumer,)
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def dedup_expiries(self, event_ids: Sequence[str]) -> dict[str, datetime]:
        """See :meth:`RealtimeStore.dedup_expiries`."""
        by_digest: dict[bytes, list[str]] = {}
        for key in event_ids:
            by_digest.setdefault(dedup_digest(key), []).append(key)
        digests = list(by_digest)
        found: dict[str, datetime] = {}
        with self._lock:
            for start in range(0, len(digests), _CHUNK):
                chunk = digests[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for digest, expires in self._db.execute(
                    f"SELECT digest, expires_at_us FROM dedup_digests WHERE digest IN ({marks})",
                    chunk,
                ):
                    at = _from_us(expires)
                    found.update((key, at) for key in by_digest[bytes(digest)])
        return found

    def states(self, keys: Iterable[str]) -> dict[str, bytes]:
        """See :meth:`RealtimeStore.states`."""
        wanted = list(keys)
        out: dict[str, bytes] = {}
        with self._lock:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                out.update(
                    (k, bytes(v))
                    for k, v in self._db.execute(
                        f"SELECT key, value FROM state_blobs WHERE key IN ({marks})", chunk
                    )
                )
        return out

    def state_keys(self, prefix: str) -> list[str]:
        """See :meth:`RealtimeStore.state_keys`."""
        where, params = _prefix_where("key", prefix)
        with self._lock:
            rows = self._db.execute(
                f"SELECT key FROM state_blobs WHERE {where} ORDER BY key", params
            ).fetchall()
        return [r[0] for r in rows]

    def item(self, pk: str, sk: str) -> dict[str, float]:
        """See :meth:`RealtimeStore.item`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT attr, value FROM items WHERE pk = ? AND sk = ?", (pk, sk)
            ).fetchall()
        return {a: float(v) for a, v in rows}

    def items(self, pk: str, sk_prefix: str = "") -> list[tuple[str, dict[str, float]]]:
        """See :meth:`RealtimeStore.items`."""
        where, params = _prefix_where("sk", sk_prefix)
        with self._lock:
            rows = self._db.execute(
                f"SELECT sk, attr, value FROM items WHERE pk = ? AND {where} ORDER BY sk",
                (pk, *params),
            ).fetchall()
        return _group(rows)

    def scan(self, pk_prefix: str, sk: str) -> list[tuple[str, dict[str, float]]]:
        """See :meth:`RealtimeStore.scan`."""
        where, params = _prefix_where("pk", pk_prefix)
        with self._lock:
            rows = self._db.execute(
                f"SELECT pk, attr, value FROM items WHERE sk = ? AND {where} ORDER BY pk",
                (sk, *params),
            ).fetchall()
        return _group(rows)

    def count_members(self, set_key: str) -> int:
        """See :meth:`RealtimeStore.count_members`."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) FROM members WHERE set_key = ?", (set_key,)
            ).fetchone()
        return int(row[0])

    def expire_dedup(self, before: datetime) -> int:
        """See :meth:`RealtimeStore.expire_dedup`."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM dedup_digests WHERE expires_at_us < ?", (_us(before),)
            )
        return cur.rowcount

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


def _group(rows: list[tuple[str, str, float]]) -> list[tuple[str, dict[str, float]]]:
    out: list[tuple[str, dict[str, float]]] = []
    for key, attr, value in rows:
        if not out or out[-1][0] != key:
            out.append((key, {}))
        out[-1][1][attr] = float(value)
    return out
