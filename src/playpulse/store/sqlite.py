"""The embedded real-time store: one SQLite file in WAL mode.

Readers (the API, ``playpulse query``) may open the file from other processes while the
processor writes; each :meth:`SQLiteStore.apply` is one transaction.

Dedup keys are kept as 64-bit integers (table ``dedup_ids``, a rowid table whose
``INTEGER PRIMARY KEY`` is the key's id, :func:`dedup_id`: the first 8 bytes of its
16-byte BLAKE2b digest) rather than as text: a key is usually an event id and a content
hash, 50-60 characters, and there is one per event for the whole dedup window. The id is
the table's rowid, so a key costs one B-tree entry and no index: inserting one takes
about half the CPU of the 16-byte digest key with an expiry index used before
(``dedup_digests``), and :meth:`SQLiteStore.expire_dedup`, which runs about once an
hour of receipts, scans the table instead. Two distinct keys share an id with
probability about n^2 / 2^65 (n keys held at once): about 3 in 10^6 for a million
keys, 3 in 10^4 for a hundred million; the later of the two would be dropped as a
duplicate (the DynamoDB store's 8-byte fingerprints have the same bound). Files written
before (table ``dedup_digests`` with 16-byte digests, or ``dedup`` with text keys) are
migrated when opened.

State blobs live in a rowid table (``state_blobs``): a rowid table keeps a row of up to
about 4 KB inside its page, where a WITHOUT ROWID table (``states``, before) moves all
but the first ~500 bytes of any value above ~1 KB to an overflow page of its own,
mostly empty: compressed play states (1-3 KB) took twice their size. Files with a
``states`` table are migrated when opened.
"""

from __future__ import annotations

import hashlib
import operator
import sqlite3
import struct
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
CREATE TABLE IF NOT EXISTS dedup_ids (
    id INTEGER PRIMARY KEY, expires_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state_blobs (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    consumer TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) WITHOUT ROWID;
"""

_CHUNK = 500  # SQLite's variable limit is 32766; stay well below it.
_UPSERT_DEDUP = (
    "INSERT INTO dedup_ids VALUES (?, ?) ON CONFLICT (id) DO "
    "UPDATE SET expires_at_us = max(expires_at_us, excluded.expires_at_us)"
)
_DIGEST_BYTES = 16
_MEMO_LIMIT = 200_000  # dedup ids kept between lookups and the apply (about 30 MB)
_WAL_LIMIT_BYTES = 16 * 2**20


def dedup_id(key: str) -> int:
    """The signed 64-bit id under which the SQLite store keeps dedup key ``key`` (any
    string, lone surrogates included): the first 8 bytes (little-endian) of its 16-byte
    BLAKE2b digest, so that digests kept by earlier versions convert exactly."""
    try:
        data = key.encode()
    except UnicodeEncodeError:  # lone surrogates: the slower error handler only for them
        data = key.encode("utf-8", "surrogatepass")
    ident: int = _FIRST_8(hashlib.blake2b(data, digest_size=_DIGEST_BYTES).digest())[0]
    return ident


_FIRST_8 = struct.Struct("<q").unpack_from
_first = operator.itemgetter(0)


def _digest_id(digest: bytes) -> int:
    ident: int = _FIRST_8(digest)[0]
    return ident


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
        self._ids_memo: dict[str, int] = {}
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._migrate_text_dedup_keys()
            self._migrate_dedup_digests()
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
        into ``dedup_ids``, in one transaction."""

        def move() -> None:
            rows = self._db.execute("SELECT event_id, expires_at_us FROM dedup")
            while chunk := rows.fetchmany(10_000):
                self._db.executemany(
                    _UPSERT_DEDUP, [(dedup_id(key), expires) for key, expires in chunk]
                )

        self._migrate_away("dedup", "the dedup keys", move)

    def _migrate_dedup_digests(self) -> None:
        """Move the 16-byte digests of a file written before ids (table
        ``dedup_digests``) into ``dedup_ids``, in one transaction."""

        def move() -> None:
            rows = self._db.execute("SELECT digest, expires_at_us FROM dedup_digests")
            while chunk := rows.fetchmany(10_000):
                self._db.executemany(
                    _UPSERT_DEDUP, [(_digest_id(bytes(d)), expires) for d, expires in chunk]
                )

        self._migrate_away("dedup_digests", "the dedup keys", move)

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
            increments = [
                (pk, sk, attr, value)
                for (pk, sk), attrs in batch.increments.items()
                for attr, amount in attrs.items()
                if (value := float(amount)) != 0
            ]
            # In key order, as the dedup ids below: about a fifth less CPU per upsert.
            increments.sort()
            ids = self._ids_memo
            self._ids_memo = {}
            # (expires - _EPOCH) raises TypeError for a naive datetime or a non-datetime:
            # the StoreError below (what _us says, without its per-key checks).
            dedup = [
                (ids[key] if key in ids else dedup_id(key), (expires - _EPOCH) // _MICROSECOND)
                for key, expires in batch.dedup
            ]
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise StoreError(f"invalid batch for {self.path}: {exc}") from exc
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
                    # In id order: each B-tree page is visited once (about 20 % less CPU
                    # than the batch's random order). A repeated id keeps its last expiry
                    # either way (the sort is stable).
                    dedup.sort(key=_first)
                    self._db.executemany("INSERT OR REPLACE INTO dedup_ids VALUES (?, ?)", dedup)
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
        """See :meth:`RealtimeStore.dedup_expiries`. The ids computed here are kept until
        the next :meth:`apply` (a processor looks up each partition's keys, then applies
        them all), which then does not compute them again; at most ``_MEMO_LIMIT`` are
        kept."""
        memo = {key: dedup_id(key) for key in event_ids}
        ids = list(set(memo.values()))
        hits: dict[int, int] = {}
        with self._lock:
            if len(self._ids_memo) + len(memo) > _MEMO_LIMIT:
                self._ids_memo = memo
            else:
                self._ids_memo.update(memo)
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                hits.update(
                    self._db.execute(
                        f"SELECT id, expires_at_us FROM dedup_ids WHERE id IN ({marks})", chunk
                    ).fetchall()
                )
        if not hits:
            return {}
        return {key: _from_us(hits[ident]) for key, ident in memo.items() if ident in hits}

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
            cur = self._db.execute("DELETE FROM dedup_ids WHERE expires_at_us < ?", (_us(before),))
        return cur.rowcount

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


def delete_dedup_keys(path: str | Path, keys: Iterable[str]) -> int:
    """Delete the dedup keys ``keys`` from the SQLite store file ``path`` with
    ``secure_delete`` on (their bytes are overwritten, for an erasure); returns how many
    were there (0 when the file does not exist). Raises :class:`StoreError` when SQLite
    fails."""
    ids = sorted({dedup_id(k) for k in keys})
    path = Path(path)
    if not ids or not path.exists():
        return 0
    try:
        con = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA secure_delete=ON")
            removed = 0
            with immediate_transaction(con):
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    cur = con.execute(f"DELETE FROM dedup_ids WHERE id IN ({marks})", chunk)
                    removed += cur.rowcount
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot delete dedup keys from {path}: {exc}") from exc
    return removed


def _group(rows: list[tuple[str, str, float]]) -> list[tuple[str, dict[str, float]]]:
    out: list[tuple[str, dict[str, float]]] = []
    for key, attr, value in rows:
        if not out or out[-1][0] != key:
            out.append((key, {}))
        out[-1][1][attr] = float(value)
    return out
