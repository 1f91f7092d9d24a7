"""State packs of the DynamoDB store: how :class:`~playpulse.store.dynamodb.DynamoDBStore`
keeps state blobs (see its module docstring for where they sit in an apply).

A batch's states (and deletes, as tombstones) are written once, packed and compressed
together, never one item per key:

- **pack items** ``~pp#SPACK#<shard>`` / ``<stamp>#<batch>#<n>`` (``stamp``: the batch's
  20-digit microsecond stamp; ``shard``: ``n`` plus a hash of the batch id, modulo the
  table's state shard count, so that big batches spread their writes over partition
  keys): ``h`` the zlib-compressed JSON header ``[[key, version, length], ...]``
  (``length`` -1 for a tombstone; ``version``: the stamp of the batch that wrote that
  value), ``d`` the zlib-compressed concatenation of the blobs (at most about 350 KB of
  header and blobs an item before compression), ``expires_at`` the pack's TTL: its stamp
  plus :data:`PACK_TTL`.
- **commit items** ``~pp#SCOMMIT`` / ``<commit stamp>#<batch>`` (``p``: the JSON list of
  the batch's pack item keys; the packs' TTL): a batch's packs are visible only once its
  commit item exists, so the packs of a batch that never committed (a crash before its
  marker, a zombie overtaken) are never read. A redo may write a second commit item for
  a batch: readers take its packs once.

Readers (:class:`StateIndex`) keep an in-memory index key -> (version, pack stamp, pack
item, entry): loaded in full when first needed (every commit item, then the headers of
the pack items they list, read with a projection that leaves the blobs out), then by
querying the commit items stamped since the last load less a 60 s look-back for
concurrent writers. The current value of a key is its entry of the highest version
(then of the newest pack); a tombstone hides it. Blobs are read from the pack items when
asked for (BatchGetItem) and the decompressed items are cached (256 MB at most); a
writer caches the items it writes.

Expiry: TTL deletes cost no write units. Every apply carries the still-live entries of
pack items older than :data:`CARRY_AGE` into its own pack with their original versions
(entries of any writer: a key that many writers carry is only written more than once),
so nothing live expires while batches keep coming. Without batches,
``DynamoDBStore.keep_states_alive`` carries them the same way (a pack and a commit item,
nothing else); the runtimes call it while idle (``playpulse up`` hourly, ``playpulse
aws run-processor`` and the stack's EventBridge rule daily). A table nothing touches for
``PACK_TTL - CARRY_AGE`` (8 days) loses its states. Each live state is so written
again every two days: long-lived keys (a user's live and watermark states) cost their
compressed bytes in write units that often, and a cold start reads up to 10 days of
pack items. Tombstones are never carried: every value a tombstone hides is in an older
pack, which expires before it. Readers ignore pack items past their TTL whether
DynamoDB has deleted them yet or not.

One writer per key at a time is assumed for carried entries: a key written while a
concurrent writer carries its older value keeps the higher version, but a carried value
copied after a tombstone it did not see would outlive the tombstone's pack.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from playpulse.errors import StoreError

PACK_PK = "~pp#SPACK#"
COMMIT_PK = "~pp#SCOMMIT"
#: How long a pack item lives (its TTL from its batch's stamp).
PACK_TTL = timedelta(days=10)
#: Live entries of pack items older than this are carried into the next batch's pack.
CARRY_AGE = timedelta(days=2)
PACK_BYTES = 350_000
_ENTRY_OVERHEAD = 40  # header bytes an entry takes besides its key, before compression
_CACHE_BYTES = 256 * 1024 * 1024
STAMP_WIDTH = 20
#: How far back (us) an incremental load looks before the newest stamp it loaded, for
#: items that concurrent writers stamped earlier but wrote later.
LOOKBACK_US = 60_000_000
_US_PER_S = 1_000_000


@dataclass(frozen=True)
class Entry:
    """One state of a pack: ``key``, the ``version`` (stamp of the batch that wrote the
    value) and the blob, or ``None`` for a tombstone."""

    key: str
    version: int
    blob: bytes | None


@dataclass
class PackItem:
    """A pack item's header as the index keeps it. ``entries``: (key, version, offset,
    length) with length -1 for a tombstone; ``expires``: the TTL (epoch seconds)."""

    pk: str
    sk: str
    batch: str
    stamp: int
    expires: int
    entries: list[tuple[str, int, int, int]] = field(default_factory=list)

    @property
    def ref(self) -> tuple[str, str]:
        return (self.pk, self.sk)


def stamped_since(pk: str, upto_us: int | None) -> dict[str, Any]:
    """The Query key condition for the write-once items under ``pk`` (sort keys start
    with a :data:`STAMP_WIDTH`-digit stamp): all of them when ``upto_us`` is None (a
    first, full load), else those stamped after ``upto_us`` less :data:`LOOKBACK_US`."""
    values: dict[str, Any] = {":pk": {"S": pk}}
    if upto_us is None:
        return {"KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": values}
    since = max(upto_us - LOOKBACK_US, 0)
    values[":since"] = {"S": f"{since:0{STAMP_WIDTH}d}"}
    return {
        "KeyConditionExpression": "pk = :pk AND sk > :since",
        "ExpressionAttributeValues": values,
    }


def pack_shard(batch_id: str, n: int, shards: int) -> str:
    """The partition key of pack item ``n`` of batch ``batch_id``."""
    digest = hashlib.blake2b(batch_id.encode(), digest_size=2).digest()
    return f"{PACK_PK}{(int.from_bytes(digest, 'little') + n) % shards}"


def pack_sk(stamp: int, batch_id: str, n: int) -> str:
    """The sort key of pack item ``n`` of the batch ``batch_id`` stamped ``stamp``."""
    return f"{stamp:0{STAMP_WIDTH}d}#{batch_id}#{n:03d}"


def batch_of(sk: str) -> tuple[int, str]:
    """(stamp, batch id) of a pack or commit item's sort key."""
    parts = sk.split("#")
    return int(parts[0]), parts[1]


Header = list[tuple[str, int, int, int]]


def encode_packs(entries: list[Entry]) -> list[tuple[bytes, bytes, Header, bytes]]:
    """``entries`` in pack items of at most :data:`PACK_BYTES` before compression (an
    entry bigger than that alone): per item (compressed header, compressed data, the
    header's entries, the data uncompressed)."""
    groups: list[list[Entry]] = [[]]
    size = 0
    for entry in entries:
        n = len(entry.key.encode()) + _ENTRY_OVERHEAD + len(entry.blob or b"")
        if groups[-1] and size + n > PACK_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += n
    out = []
    for group in groups:
        if not group:
            continue
        header: Header = []
        offset = 0
        for e in group:
            length = -1 if e.blob is None else len(e.blob)
            header.append((e.key, e.version, offset, length))
            offset += max(length, 0)
        data = b"".join(e.blob for e in group if e.blob is not None)
        head = json.dumps([[k, v, n] for k, v, _, n in header], ensure_ascii=False)
        out.append((zlib.compress(head.encode(), 6), zlib.compress(data, 6), header, data))
    return out


def decode_header(raw: bytes) -> Header:
    """A pack item's header ``h`` as (key, version, offset, length) entries. Raises
    :class:`StoreError` for a header this playpulse cannot read."""
    try:
        listed = json.loads(zlib.decompress(raw))
    except (zlib.error, ValueError) as exc:
        raise StoreError(f"a state pack header does not decode: {exc}") from exc
    entries = []
    offset = 0
    for key, version, length in listed:
        entries.append((str(key), int(version), offset, int(length)))
        offset += max(int(length), 0)
    return entries


class StateIndex:
    """The in-memory index of committed state packs (see the module docstring). Not
    thread-safe by itself: its owner holds ``lock`` around every call."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        #: key -> (version, pack stamp, item, entry number)
        self.current: dict[str, tuple[int, int, PackItem, int]] = {}
        self.items: dict[tuple[str, str], PackItem] = {}
        self.committed: dict[str, int] = {}  # batch id -> commit TTL (epoch s)
        self.commit_upto = 0  # newest commit stamp loaded
        self.full = False  # whether every commit was loaded once
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._cache_bytes = 0

    def reset(self) -> None:
        """Forget everything (the next refresh loads in full)."""
        self.current.clear()
        self.items.clear()
        self.committed.clear()
        self.commit_upto = 0
        self.full = False
        self._cache.clear()
        self._cache_bytes = 0

    def commit(self, batch_id: str, expires: int, items: list[PackItem]) -> None:
        """Make the pack ``items`` of the committed batch ``batch_id`` visible."""
        self.committed[batch_id] = max(expires, self.committed.get(batch_id, 0))
        now = time.time()
        for item in items:
            if item.ref in self.items or item.expires < now:
                continue
            self.items[item.ref] = item
            for n, (key, version, _, _) in enumerate(item.entries):
                held = self.current.get(key)
                if held is None or (version, item.stamp) > (held[0], held[1]):
                    self.current[key] = (version, item.stamp, item, n)

    def expire(self, now: float) -> None:
        """Drop what is past its TTL: items (and the entries pointing at them) and
        commits."""
        gone = [ref for ref, item in self.items.items() if item.expires < now]
        if gone:
            dead = set(gone)
            for key in [k for k, v in self.current.items() if v[2].ref in dead]:
                del self.current[key]
            for ref in gone:
                del self.items[ref]
                self._drop_cached(ref)
        for batch in [b for b, ttl in self.committed.items() if ttl < now]:
            del self.committed[batch]

    def live(self, key: str) -> tuple[PackItem, int] | None:
        """The item and entry number of ``key``'s current value (``None``: absent or
        deleted)."""
        held = self.current.get(key)
        if held is None or held[2].entries[held[3]][3] < 0:
            return None
        return held[2], held[3]

    def keys(self, prefix: str) -> list[str]:
        """Every key with a current value starting with ``prefix``, sorted."""
        return sorted(
            k
            for k, (_, _, item, n) in self.current.items()
            if k.startswith(prefix) and item.entries[n][3] >= 0
        )

    def aging(self, before_stamp: int, skip: set[str]) -> list[tuple[str, int, PackItem, int]]:
        """(key, version, item, entry) of the current values held in items stamped
        before ``before_stamp``, but for ``skip`` (what is to be carried forward)."""
        return [
            (k, v, item, n)
            for k, (v, _, item, n) in self.current.items()
            if item.stamp < before_stamp and item.entries[n][3] >= 0 and k not in skip
        ]

    # --- blobs ---

    def cached(self, ref: tuple[str, str]) -> bytes | None:
        data = self._cache.get(ref)
        if data is not None:
            self._cache.move_to_end(ref)
        return data

    def cache(self, ref: tuple[str, str], data: bytes) -> None:
        """Keep an item's decompressed data (least recently used ones go past 256 MB)."""
        if ref in self._cache:
            return
        self._cache[ref] = data
        self._cache_bytes += len(data)
        while self._cache_bytes > _CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= len(old)

    def _drop_cached(self, ref: tuple[str, str]) -> None:
        data = self._cache.pop(ref, None)
        if data is not None:
            self._cache_bytes -= len(data)


@dataclass(frozen=True)
class PackIO:
    """The store's DynamoDB calls the packs use: ``batch_write(requests)``
    (BatchWriteItem requests, retried), ``batch_get(keys, projection, names)``
    (consistent BatchGetItem) and ``query(**kwargs)`` (every item of a Query)."""

    batch_write: Callable[[list[dict[str, Any]]], None]
    batch_get: Callable[[list[dict[str, Any]], str | None, dict[str, str]], list[dict[str, Any]]]
    query: Callable[..., Iterator[dict[str, Any]]]


class StatePacks:
    """Writes and reads the state packs of table ``table`` (see the module docstring)
    through ``io``: ``shards`` partition keys for pack items, ``pack_ttl`` their TTL,
    ``carry_age`` the age from which live states are carried forward. Thread-safe.
    Raises :class:`StoreError` for a pack that does not decode, and what ``io`` raises."""

    def __init__(
        self, table: str, io: PackIO, shards: int, pack_ttl: timedelta, carry_age: timedelta
    ) -> None:
        self.table = table
        self.io = io
        self.shards = shards
        self.pack_ttl = pack_ttl
        self.carry_age = carry_age
        self.index = StateIndex()

    def write(
        self, stamp: int, batch_id: str, states: list[tuple[str, bytes | None]]
    ) -> list[PackItem] | None:
        """Write the pack items of batch ``batch_id`` stamped ``stamp`` (microseconds):
        ``states`` (``None``: a tombstone) at version ``stamp``, and the live states of
        pack items older than ``carry_age`` at their own versions. Their headers (what
        :meth:`committed` takes once the batch commits), or ``None`` if nothing was to
        be written."""
        cutoff = stamp - self.carry_age // timedelta(microseconds=1)
        self.refresh()
        with self.index.lock:
            aging = self.index.aging(cutoff, {key for key, _ in states})
        carried = self.blobs([(key, item, n) for key, _, item, n in aging])
        entries = [Entry(key, stamp, blob) for key, blob in states]
        entries += [Entry(key, version, carried[key]) for key, version, _, _ in aging]
        if not entries:
            return None
        expires = (stamp + self.pack_ttl // timedelta(microseconds=1)) // _US_PER_S
        requests = []
        written = []
        for n, (head, data, header, raw) in enumerate(encode_packs(entries)):
            pk = pack_shard(batch_id, n, self.shards)
            sk = pack_sk(stamp, batch_id, n)
            item = {
                "pk": {"S": pk},
                "sk": {"S": sk},
                "h": {"B": head},
                "d": {"B": data},
                "expires_at": {"N": str(expires)},
            }
            requests.append({"PutRequest": {"Item": item}})
            written.append(PackItem(pk, sk, batch_id, stamp, expires, header))
            with self.index.lock:
                self.index.cache((pk, sk), raw)
        self.io.batch_write(requests)
        return written

    def committed(self, batch_id: str, expires: int, items: list[PackItem]) -> None:
        """The commit item of ``batch_id`` is written: its ``items`` are visible."""
        with self.index.lock:
            self.index.commit(batch_id, expires, items)

    def reset(self) -> None:
        """Forget the index and the cache (the next read loads in full)."""
        with self.index.lock:
            self.index.reset()

    def refresh(self) -> None:
        """Load the commit items written since the last load (all of them the first
        time) and the headers of the pack items they make visible."""
        idx = self.index
        with idx.lock:
            now = time.time()
            commits: list[tuple[str, int, list[tuple[str, str]]]] = []
            since = stamped_since(COMMIT_PK, idx.commit_upto if idx.full else None)
            for item in self.io.query(**since, ConsistentRead=True):
                stamp, batch = batch_of(item["sk"]["S"])
                idx.commit_upto = max(idx.commit_upto, stamp)
                expires = int(item["expires_at"]["N"])
                if expires < now:
                    continue  # past its TTL, deleted or not yet
                refs = [(pk, sk) for pk, sk in json.loads(item["p"]["S"])]
                if any(ref not in idx.items for ref in refs):
                    commits.append((batch, expires, refs))
            wanted = [
                {"pk": {"S": pk}, "sk": {"S": sk}}
                for pk, sk in dict.fromkeys(r for _, _, refs in commits for r in refs)
                if (pk, sk) not in idx.items
            ]
            headers: dict[tuple[str, str], PackItem] = {}
            got_items = (
                self.io.batch_get(wanted, "pk, #sk, h, expires_at", {"#sk": "sk"}) if wanted else []
            )
            for got in got_items:
                pk, sk = got["pk"]["S"], got["sk"]["S"]
                stamp, batch = batch_of(sk)
                header = decode_header(bytes(got["h"]["B"]))
                headers[(pk, sk)] = PackItem(
                    pk, sk, batch, stamp, int(got["expires_at"]["N"]), header
                )
            for batch, expires, refs in commits:
                # A pack item missing now was deleted by its TTL (the clocks disagree).
                idx.commit(batch, expires, [headers[r] for r in refs if r in headers])
            idx.full = True
            idx.expire(now)

    def blobs(self, wanted: list[tuple[str, PackItem, int]]) -> dict[str, bytes]:
        """key -> blob for (key, pack item, entry) triples: from the cache, or read
        from the pack items (BatchGetItem, then cached). A pack item that is gone
        (deleted by its TTL) leaves its keys out."""
        idx = self.index
        with idx.lock:
            data = {item.ref: idx.cached(item.ref) for _, item, _ in wanted}
        missing = [{"pk": {"S": pk}, "sk": {"S": sk}} for (pk, sk), d in data.items() if d is None]
        if missing:
            for got in self.io.batch_get(missing, "pk, #sk, d", {"#sk": "sk"}):
                ref = (got["pk"]["S"], got["sk"]["S"])
                try:
                    raw = zlib.decompress(got["d"]["B"])
                except zlib.error as exc:
                    raise StoreError(
                        f"state pack {ref[1]} in {self.table!r} does not decompress: {exc}"
                    ) from exc
                data[ref] = raw
                with idx.lock:
                    idx.cache(ref, raw)
        out: dict[str, bytes] = {}
        for key, item, n in wanted:
            held = data.get(item.ref)
            if held is not None:
                _, _, offset, length = item.entries[n]
                out[key] = held[offset : offset + length]
        return out

    def states(self, keys: list[str]) -> dict[str, bytes]:
        """The current blobs of ``keys`` (the index refreshed first); absent and
        deleted keys are left out."""
        self.refresh()
        with self.index.lock:
            found = [(k, *hit) for k in keys if (hit := self.index.live(k)) is not None]
        return self.blobs(found)

    def keys(self, prefix: str) -> list[str]:
        """Every key with a current value starting with ``prefix``, sorted (the index
        refreshed first)."""
        self.refresh()
        with self.index.lock:
            return self.index.keys(prefix)
