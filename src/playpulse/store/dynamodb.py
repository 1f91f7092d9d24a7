"""The real-time store on Amazon DynamoDB: ``dynamodb://TABLE`` (one table).

Table (:func:`create_table`): string keys ``pk`` (HASH) / ``sk`` (RANGE), on-demand
billing, TTL on ``expires_at`` (epoch seconds), and two global secondary indexes:

- ``by_sk`` (``_isk`` HASH, ``_ipk`` RANGE, all attributes): sparse, and no item this
  version writes carries ``_isk`` / ``_ipk`` any more, so it stays empty and costs
  nothing (every counter update written to it doubled the counters' write units;
  :meth:`DynamoDBStore.scan` reads the key registry instead). It is still declared so
  that the table matches the stack's template; it can go with the template's.
- ``by_vendor`` (``vendor_pk`` HASH, ``sk`` RANGE): the shop's ``VENDOR#<id>`` /
  ``METRICS#<date>`` items under their vendor. ``PRODUCT#<id>`` items are not in it: a
  store batch names no product's vendor (the processor would have to pass it).

Items (``~pp#`` starts every internal partition key; a counter key starting with it is
refused):

- counters: ``pk`` / ``sk`` as the processor names them (``CONTENT#<id>`` / ``DAY#<date>``,
  ``VENDOR#<id>`` / ``METRICS#<date>`` ...), one plain Number attribute per measure,
  added to with ``UpdateItem ... ADD``. Amounts go as the shortest ``repr`` of the float
  (at most 17 significant digits) and DynamoDB adds them exactly in decimal (38
  significant digits), so a sum is the exact decimal sum of the amounts, read back as the
  nearest float (within 1e-15 relative of a float accumulation). Values DynamoDB cannot
  hold (infinities, magnitudes outside [1e-120, 1e120)) are kept as a String holding the
  float's ``repr`` and updated by a conditional read-modify-write in float arithmetic.
  Attribute names ``pk``, ``sk``, ``expires_at``, ``vendor_pk`` and any starting with
  ``_`` are reserved.
- fences: every counter item carries, per (consumer, partition) that wrote it,
  ``_f#<consumer>#<partition>`` = the position of the last batch applied to it, as a
  64-digit zero-padded decimal string (Kinesis sequence numbers have 56 digits; DynamoDB
  numbers only 38). Each write is conditional on "absent or below this batch's
  position", so a batch applied twice, in whole or in part, adds nothing the second time.
  Positions must be integers in [0, 10**64).
- key registry: the counter keys by sort key, for :meth:`DynamoDBStore.scan`: write-once
  items ``~pp#KEYS#<sk>`` / ``<stamp>#<batch>`` holding the zlib-compressed JSON list
  of the partition keys a batch wrote under ``sk`` that the writing store object did not
  know to be registered (it loads a sort key's registry when it first writes under it),
  written before the batch's marker; a key listed whose item never came is skipped.
  :meth:`~DynamoDBStore.scan` is a Query on the registry then a (strongly consistent)
  BatchGetItem of the keys listed.
- sets: one item per member (``~pp#SET#<key>`` / ``m<member>``; a store object does not
  put again a member it put before, remembering up to 300,000), counted with
  ``Query Select=COUNT``.
- states: write-once **state packs** (:mod:`~playpulse.store.dynamodb_states`), never
  one item per key: each batch writes its states and deletes (tombstones) packed and
  zlib-compressed together into as few pack items as their bytes need
  (``~pp#SPACK#<shard>`` / ``<stamp>#<batch>#<n>``, at most about 350 KB each, spread
  over the state shard count of the table's ``~pp#META`` / ``LAYOUT`` item, 8 by
  default), with a TTL (10 days); they become visible with the batch's commit item
  (``~pp#SCOMMIT`` / ``<commit stamp>#<batch>``, listing them). Readers keep an
  in-memory index key -> (version, pack item, entry), loaded like the dedup index, and
  read blobs from the pack items (cached). Every apply carries the live states of pack
  items older than 2 days into its own pack, so nothing live expires while batches keep
  coming (a table idle for 8 days loses its states).
- dedup keys: one immutable item per applied batch (``~pp#DEDUP`` / ``<stamp>#<batch>``)
  holding its keys as 8-byte BLAKE2b fingerprints with their expiry (16 bytes a key,
  zlib-compressed), never one item per event. The store object keeps an in-memory index
  (fingerprint -> expiry), loaded in full when first needed and then by querying the
  items stamped since the last load (less a 60 s look-back for concurrent writers).
  Memory: about 150 bytes per key held in CPython (10 million keys: about 1.5 GB). Two
  keys share a fingerprint with probability about n^2 / 2^65 (n keys held). Later
  writes of a key win (by stamp). :meth:`DynamoDBStore.expire_dedup` records
  ``(stamp, before)`` in a META item: keys written before the stamp that expire before
  ``before`` are gone for every reader. The TTL (``expires_at``) of a dedup item is the
  later of its keys' last expiry and its write time, plus 2 days (the processor forgets
  keys a day after they expire; a key may outlive its expiry, as the contract allows,
  but not by more than that: beyond the interface's "until expire_dedup", the one
  wall-clock rule of the store). Readers ignore items past their TTL whether or not
  DynamoDB has deleted them yet (it deletes late), so every reader sees the same keys,
  and a cold start loads about the dedup window (7 days) plus 2 days of items.
- offsets: ``~pp#OFFSETS`` / ``c<consumer>``, one attribute ``o<partition>`` per
  partition (64-digit strings), written forward only (a conditional write), which also
  fences a zombie.

Applying a batch (:meth:`DynamoDBStore.apply`) cannot be one transaction (100 items at
most), so it is a redo journal over write-once packs:

1. the consumer's pending journals of the batch's partitions are finished first, then a
   batch whose positions were all applied is a no-op (:func:`~.base.replayed`);
2. the batch's states, with the live states carried forward (see states above), are
   written as pack items under the batch's id (invisible: no commit item yet), and its
   new counter keys to the key registry; then the
   rest of the batch (counters, members, dedup keys, offsets and the pack items' keys:
   no blobs), serialized and compressed, is written as journal chunks
   (``~pp#JOURNAL#<consumer>`` / ``C#<batch>#<n>``, under 350 KB each, removed by TTL
   after 30 days: deletes by TTL cost no write units), then its marker (``M#<batch>``,
   no TTL: only step 5 removes it): from here on the batch is durable;
3. every counter update is applied fenced (a ConditionalCheckFailed means applied
   already: skipped); members are put (idempotent); the dedup item is put under the
   stamp chosen in step 2 (idempotent); then the commit item makes the packs visible
   (not written when the batch's offsets are all applied already: it was, or a newer
   owner overtook this zombie, whose packs stay invisible);
4. the consumer's offsets move forward (conditional);
5. the marker is deleted.

A crash at any point leaves either no marker (nothing was written but pack items and
journal chunks, which nobody sees and which expire) or a marker that
:meth:`~DynamoDBStore.offsets` and the next :meth:`~DynamoDBStore.apply` finish by
redoing steps 3-5: the fences make the redo add only what was not added, and a commit
written twice is read once. A batch without offsets is fenced by its batch id instead
(``_j#<consumer>``). Everything the batch could be refused for (text that is not UTF-8,
NaN amounts or sums, naive datetimes, bad positions, oversized blobs) is checked before
step 2, so a refused batch writes nothing.

:meth:`DynamoDBStore.replace` is not atomic for readers on DynamoDB: it deletes the
derived items (counters, members, states) and writes the batch's; readers during it may
see a mix, and a crash midway leaves a partial store (run it again). It is meant for an
offline reprocess (processors stopped; store objects open elsewhere keep their state
index: reopen them).

Throttling (ProvisionedThroughputExceeded, ThrottlingException, RequestLimitExceeded,
TransactionConflict, and BatchWriteItem's UnprocessedItems) is retried with exponential
backoff beyond the SDK's own retries; other failures raise
:class:`~playpulse.errors.StoreError`. :attr:`DynamoDBStore.write_units` counts the write
capacity units DynamoDB reported (``ReturnConsumedCapacity=TOTAL``);
:attr:`DynamoDBStore.estimated_write_units` the units computed from item sizes (1 per
started KB, per item written and per index it is projected into), for endpoints that do
not report them exactly.

GSI reads are eventually consistent on DynamoDB: :meth:`~DynamoDBStore.vendor_items` may
miss a write of the last second; every other read is strongly consistent.
"""

from __future__ import annotations

import contextlib
import decimal
import functools
import hashlib
import json
import math
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from playpulse.errors import ConfigError, StoreError
from playpulse.store.base import RealtimeStore, StoreBatch, replayed
from playpulse.store.dynamodb_states import (
    CARRY_AGE,
    COMMIT_PK,
    LOOKBACK_US,
    PACK_PK,
    PACK_TTL,
    STAMP_WIDTH,
    PackIO,
    PackItem,
    StatePacks,
    stamped_since,
)

T = TypeVar("T")

_INTERNAL = "~pp#"
_OFFSETS_PK = "~pp#OFFSETS"
_META_PK = "~pp#META"
_OLD_STATE_PK = "~pp#STATE#"  # states before packs: refused (_refuse_old_layout)
_DEDUP_PK = "~pp#DEDUP"
_JOURNAL_PK = "~pp#JOURNAL#"
_SET_PK = "~pp#SET#"
_KEYS_PK = "~pp#KEYS#"
_STATE_SHARDS = 8  # default; a table's own count is in its META LAYOUT item
_LAYOUT_SK = "LAYOUT"
_DEDUP_OPS_SK = "DEDUP_EXPIRED"

_POS_WIDTH = 64
_POS_LIMIT = 10**_POS_WIDTH
_CHUNK_BYTES = 350_000
_DEDUP_KEYS_PER_ITEM = 20_000  # 16 bytes each before compression: < 350 KB
_MAX_BLOB = 380_000
_JOURNAL_TTL = timedelta(days=30)  # journal chunks: a marker pending longer cannot be redone
_DEDUP_TTL_MARGIN = timedelta(days=2)
_KNOWN_MEMBERS = 300_000  # set members a store object remembers having put
_MIN_N, _MAX_N = 1e-120, 1e120
VENDOR_KEY = "vendor_pk"
_RESERVED = frozenset({"pk", "sk", "expires_at", VENDOR_KEY})
_THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        "LimitExceededException",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
_RETRIES = 8
_WORKERS = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_DEDUP_RECORD = struct.Struct("<Qq")  # fingerprint, expiry (microseconds since the epoch)
_JOURNAL_HEAD = struct.Struct(">II")

INDEXES = ("by_sk", "by_vendor")


class _ConditionFailed(StoreError):
    """A conditional write found its condition false (internal; caught where expected)."""


class _BadType(StoreError):
    """DynamoDB refused an operand's type or range (internal: the slow path follows)."""


# --- conversions --------------------------------------------------------------------------


def position_text(position: int) -> str:
    """A stream position as the 64-digit zero-padded string the store compares (strings
    order like the numbers). Raises :class:`StoreError` outside [0, 10**64)."""
    if isinstance(position, bool) or not isinstance(position, int):
        raise StoreError(f"position {position!r} is not an integer")
    if not 0 <= position < _POS_LIMIT:
        raise StoreError(f"position {position} is outside [0, 10**{_POS_WIDTH})")
    return f"{position:0{_POS_WIDTH}d}"


def fingerprint(key: str) -> int:
    """The 8-byte BLAKE2b fingerprint (as an int) under which a dedup key is kept."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _us(value: object) -> int:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise StoreError(f"store timestamps must be timezone-aware datetimes, got {value!r}")
    return (value - _EPOCH) // _US


def _from_us(us: int) -> datetime:
    return _EPOCH + us * _US


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise StoreError(f"{what} must be a string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StoreError(f"{what} {value!r} is not valid text: {exc}") from exc
    return value


def _special(x: float) -> bool:
    """Whether ``x`` cannot be a DynamoDB Number we add to (kept as a String then)."""
    return not math.isfinite(x) or (x != 0 and not _MIN_N <= abs(x) < _MAX_N)


def _number(x: float) -> dict[str, str]:
    """The wire form of ``x``: a Number (``repr``, with a ``.`` so that every parser reads
    it as a decimal), or a String for values DynamoDB cannot hold."""
    if _special(x):
        return {"S": repr(x)}
    text = repr(x)
    if "e" in text and "." not in text:
        text = text.replace("e", ".0e")
    return {"N": text}


_DECIMAL = decimal.Context(prec=38, traps=[decimal.Inexact, decimal.Overflow])


def _sum(old: dict[str, Any] | None, amount: float) -> dict[str, str]:
    """The wire form of stored ``old`` plus ``amount``: exact in decimal (as DynamoDB's
    ADD) when both are Numbers and the sum is one too, else in float arithmetic."""
    if old is None:
        return _number(amount)
    if "N" in old and not _special(amount):
        try:
            total = _DECIMAL.add(decimal.Decimal(old["N"]), decimal.Decimal(_number(amount)["N"]))
        except decimal.DecimalException:
            total = None
        if total is not None and not _special(float(total)):
            text = str(total)
            if "E" in text and "." not in text:
                text = text.replace("E", ".0E")
            return {"N": text}
    return _number(_value(old) + amount)


def _value(raw: dict[str, Any]) -> float:
    """A stored counter attribute (Number or String) as a float."""
    if "N" in raw:
        return float(raw["N"])
    if "S" in raw:
        return float(raw["S"])
    raise StoreError(f"a counter attribute holds {raw!r}, not a number")


def _user_attrs(item: dict[str, Any]) -> dict[str, float]:
    return {
        name: _value(raw)
        for name, raw in item.items()
        if name not in _RESERVED and not name.startswith("_")
    }


def _size(item: dict[str, Any]) -> int:
    """Approximate DynamoDB item size in bytes (names + values)."""
    total = 0
    for name, raw in item.items():
        total += len(name.encode())
        for kind, value in raw.items():
            if kind == "B":
                total += len(value)
            elif kind == "S":
                total += len(value.encode())
            elif kind == "N":
                total += len(value) // 2 + 2
            else:
                total += 1
    return total


def _units(size: int) -> int:
    return max(1, -(-size // 1024))


def _stamp() -> int:
    return time.time_ns() // 1000


def _kind(pk: str) -> str:
    """What an item of partition key ``pk`` is, for the write unit counts."""
    for prefix, kind in (
        (_SET_PK, "members"),
        (_KEYS_PK, "key registry"),
        (PACK_PK, "states"),
        (COMMIT_PK, "commits"),
        (_JOURNAL_PK, "journal"),
        (_DEDUP_PK, "dedup"),
        (_OFFSETS_PK, "offsets"),
        (_INTERNAL, "meta"),
    ):
        if pk.startswith(prefix):
            return kind
    return "counters"


def _chunks(seq: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


# --- a validated batch ---------------------------------------------------------------------


@dataclass
class _Prepared:
    """A validated batch in the form the journal keeps and the redo applies. ``states``
    are written to pack items before the journal (:meth:`DynamoDBStore._write_packs`);
    the journal keeps only the pack items' keys (``packs``)."""

    consumer: str
    batch_id: str
    stamp: int
    offsets: dict[int, int] = field(default_factory=dict)
    counters: list[tuple[str, str, dict[str, float]]] = field(default_factory=list)
    members: list[tuple[str, str]] = field(default_factory=list)
    dedup: bytes = b""  # _DEDUP_RECORD records, in batch order
    states: list[tuple[str, bytes | None]] = field(default_factory=list)
    packs: list[tuple[str, str]] = field(default_factory=list)  # pack items (pk, sk)
    pack_expires: int = 0  # their TTL (epoch seconds)
    pack_items: list[PackItem] = field(default_factory=list)  # not journaled

    @property
    def empty(self) -> bool:
        return not (self.offsets or self.counters or self.members or self.dedup or self.states)

    def encode(self) -> bytes:
        head = {
            "v": 3,
            "consumer": self.consumer,
            "batch": self.batch_id,
            "stamp": self.stamp,
            "offsets": [[p, str(o)] for p, o in self.offsets.items()],
            "counters": [
                [pk, sk, [[a, repr(v)] for a, v in attrs.items()]]
                for pk, sk, attrs in self.counters
            ],
            "members": self.members,
            "packs": self.packs,
            "pack_expires": self.pack_expires,
        }
        head_z = zlib.compress(json.dumps(head, ensure_ascii=False).encode(), 6)
        dedup_z = zlib.compress(self.dedup, 6) if self.dedup else b""
        return _JOURNAL_HEAD.pack(len(head_z), len(dedup_z)) + head_z + dedup_z

    @classmethod
    def decode(cls, data: bytes) -> _Prepared:
        n_head, n_dedup = _JOURNAL_HEAD.unpack_from(data)
        at = _JOURNAL_HEAD.size
        head = json.loads(zlib.decompress(data[at : at + n_head]))
        if head.get("v") != 3:
            raise StoreError(f"journal version {head.get('v')!r} is not known to this playpulse")
        at += n_head
        dedup = zlib.decompress(data[at : at + n_dedup]) if n_dedup else b""
        return cls(
            consumer=head["consumer"],
            batch_id=head["batch"],
            stamp=int(head["stamp"]),
            offsets={int(p): int(o) for p, o in head["offsets"]},
            counters=[
                (pk, sk, {a: float(v) for a, v in attrs}) for pk, sk, attrs in head["counters"]
            ],
            members=[(k, m) for k, m in head["members"]],
            dedup=dedup,
            packs=[(pk, sk) for pk, sk in head["packs"]],
            pack_expires=int(head["pack_expires"]),
        )


def _prepare(batch: StoreBatch, stamp: int) -> _Prepared:
    """Check everything a batch holds; StoreError for anything DynamoDB cannot keep."""
    offsets = {}
    for p, o in batch.offsets.items():
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < 2**31:
            raise StoreError(f"partition {p!r} is not an integer in [0, 2**31)")
        position_text(o)
        offsets[p] = o
    consumer = _text(batch.consumer, "consumer name")
    counters = []
    for (pk, sk), attrs in batch.increments.items():
        _text(pk, "partition key")
        _text(sk, "sort key")
        if not pk or not sk:
            raise StoreError(f"item key ({pk!r}, {sk!r}) has an empty part: DynamoDB refuses it")
        if pk.startswith(_INTERNAL):
            raise StoreError(f"partition key {pk!r} starts with the reserved {_INTERNAL!r}")
        if len(pk.encode()) > 2000 or len(sk.encode()) > 1000:
            raise StoreError(f"item key ({pk[:40]!r}..., {sk[:40]!r}...) is too long for DynamoDB")
        amounts: dict[str, float] = {}
        for attr, raw in attrs.items():
            _text(attr, "attribute name")
            if attr in _RESERVED or attr.startswith("_") or not attr:
                raise StoreError(f"attribute name {attr!r} of {pk}/{sk} is reserved by the store")
            try:
                amount = float(raw)
            except (TypeError, ValueError, OverflowError) as exc:
                raise StoreError(f"amount {raw!r} for {pk}/{sk}.{attr} is not a number") from exc
            if math.isnan(amount):
                raise StoreError(f"amount for {pk}/{sk}.{attr} is NaN")
            if amount != 0:
                amounts[attr] = amount
        if amounts:
            counters.append((pk, sk, amounts))
    members = sorted({(_text(k, "set key"), _text(m, "set member")) for k, m in batch.members})
    for key, member in members:
        if len(key.encode()) > 2000 or len(member.encode()) > 1000:
            raise StoreError(f"set key or member {key[:40]!r}/{member[:40]!r} is too long")
    dedup = b"".join(
        _DEDUP_RECORD.pack(fingerprint(_text(key, "dedup key")), _us(expires))
        for key, expires in batch.dedup
    )
    states: list[tuple[str, bytes | None]] = []
    for key, value in batch.states.items():
        _text(key, "state key")
        if len(key.encode()) > 1000:
            raise StoreError(f"state key {key[:40]!r}... is too long for DynamoDB")
        if value is None:
            states.append((key, None))
            continue
        if not isinstance(value, bytes | bytearray | memoryview):
            raise StoreError(f"state {key!r} must be bytes, got {type(value).__name__}")
        blob = bytes(value)
        if len(blob) > _MAX_BLOB:
            raise StoreError(
                f"state {key!r} is {len(blob)} bytes: above a DynamoDB item's {_MAX_BLOB}"
            )
        states.append((key, blob))
    batch_id = f"{stamp:0{STAMP_WIDTH}d}-{uuid.uuid4().hex[:12]}"
    return _Prepared(consumer, batch_id, stamp, offsets, counters, members, dedup, states)


# --- the table -----------------------------------------------------------------------------


def table_properties() -> dict[str, Any]:
    """The store table's key schema, attribute definitions, billing mode and GSIs, in the
    shape both ``CreateTable`` and a CloudFormation ``AWS::DynamoDB::Table`` take (add
    ``TimeToLiveSpecification``: attribute ``expires_at``). The ``by_sk`` index is
    sparse on ``_isk`` / ``_ipk``, which no item carries any more (the module
    docstring): it stays empty."""
    strings = ["pk", "sk", "_isk", "_ipk", VENDOR_KEY]
    return {
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": "S"} for n in strings],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "by_sk",
                "KeySchema": [
                    {"AttributeName": "_isk", "KeyType": "HASH"},
                    {"AttributeName": "_ipk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": "by_vendor",
                "KeySchema": [
                    {"AttributeName": VENDOR_KEY, "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    }


#: The TTL attribute of the store table (epoch seconds).
TTL_ATTRIBUTE = "expires_at"


def create_table(
    table: str,
    *,
    client: Any | None = None,
    wait: bool = True,
    state_shards: int | None = None,
) -> None:
    """Create the store's table ``table`` (:func:`table_properties`) with TTL on
    ``expires_at``; nothing if it exists. For tests and ``playpulse aws deploy``.
    ``state_shards`` (if given) is written to the table's META LAYOUT item: how many
    partition keys a batch's state pack items spread over (each takes about 1,000 write
    units a second). Without it, or on a table made elsewhere (CloudFormation), stores
    use 8. The count of a table cannot change (readers find pack items through commit
    items, so any count reads, but one table keeps one layout).

    Raises :class:`StoreError` when DynamoDB refuses.
    """
    ddb = client if client is not None else _client()
    if state_shards is not None and not 1 <= state_shards <= 1000:
        raise StoreError(f"state_shards must be within 1..1000, got {state_shards}")
    try:
        ddb.create_table(TableName=table, **table_properties())
    except Exception as exc:
        if _code(exc) != "ResourceInUseException":
            raise StoreError(f"creating DynamoDB table {table!r} failed: {_reason(exc)}") from exc
    try:
        if wait:
            ddb.get_waiter("table_exists").wait(
                TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        ddb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    except Exception as exc:
        if "already enabled" not in str(exc).lower():
            raise StoreError(
                f"enabling TTL on DynamoDB table {table!r} failed: {_reason(exc)}"
            ) from exc
    if state_shards is not None:
        _write_layout(ddb, table, state_shards)


def _write_layout(ddb: Any, table: str, state_shards: int) -> None:
    """Write the META LAYOUT item once; StoreError if the table has another layout."""
    key = {"pk": {"S": _META_PK}, "sk": {"S": _LAYOUT_SK}}
    try:
        ddb.put_item(
            TableName=table,
            Item={**key, "state_shards": {"N": str(state_shards)}},
            ConditionExpression="attribute_not_exists(pk)",
        )
        return
    except Exception as exc:
        if _code(exc) != "ConditionalCheckFailedException":
            raise StoreError(
                f"writing the layout of DynamoDB table {table!r} failed: {_reason(exc)}"
            ) from exc
    held = ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item", {})
    if int(held.get("state_shards", {}).get("N", -1)) != state_shards:
        raise StoreError(
            f"DynamoDB table {table!r} keeps its states in "
            f"{held.get('state_shards', {}).get('N')} shards, not {state_shards}: "
            "the layout of a table cannot change"
        )


def _client() -> Any:
    from playpulse.aws.clients import client

    try:
        return client("dynamodb")
    except ConfigError as exc:
        raise StoreError(str(exc)) from exc


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _reason(exc: BaseException) -> str:
    code = _code(exc)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{code}: {text}" if code and code not in text else text


# --- the store -----------------------------------------------------------------------------


class DynamoDBStore(RealtimeStore):
    """A :class:`RealtimeStore` in the DynamoDB table ``table`` (see the module docstring).

    ``create=True`` creates the table when missing (tests, deploy); otherwise a missing
    table is a :class:`StoreError` naming it. ``client`` is a boto3 DynamoDB client
    (default: :func:`playpulse.aws.clients.client`, which honours ``AWS_ENDPOINT_URL``).
    ``pack_ttl`` / ``carry_age``: the TTL of state pack items and the age from which
    an apply carries their live states forward (:mod:`~.dynamodb_states`); raises
    :class:`StoreError` unless ``0 <= carry_age < pack_ttl``. Thread-safe; item writes of
    a batch run on up to 8 threads.
    """

    def __init__(
        self,
        table: str,
        *,
        create: bool = False,
        client: Any | None = None,
        pack_ttl: timedelta = PACK_TTL,
        carry_age: timedelta = CARRY_AGE,
    ) -> None:
        if not table:
            raise StoreError("dynamodb:// needs a table name (dynamodb://TABLE)")
        self.table = table
        self._ddb = client if client is not None else _client()
        if create:
            create_table(table, client=self._ddb)
        try:
            self._ddb.describe_table(TableName=table)
        except Exception as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise StoreError(
                    f"DynamoDB table {table!r} does not exist (create it with "
                    "'playpulse aws deploy' or playpulse.store.dynamodb.create_table)"
                ) from exc
            raise StoreError(f"opening DynamoDB table {table!r} failed: {_reason(exc)}") from exc
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix=f"ddb-{table}")
        self._lock = threading.Lock()  # units, stamps
        self._index_lock = threading.Lock()
        self._last_stamp = 0
        self.write_units = 0.0
        self.estimated_write_units = 0
        self.write_requests = 0
        #: estimated_write_units by what was written: counters, members, states (pack
        #: items), commits, journal, dedup, offsets, meta.
        self.estimated_units_by_kind: dict[str, int] = {}
        # dedup index: fingerprint -> (expiry us, stamp sk of the item that wrote it)
        self._index: dict[int, tuple[int, str]] = {}
        self._loaded: dict[str, int] = {}  # dedup item sk -> its stamp
        self._loaded_upto = 0  # newest stamp loaded
        self._full = False  # whether every dedup item was loaded once
        self._ops: list[tuple[str, int]] = []  # applied expire ops (cut sk, before us)
        if not timedelta(0) <= carry_age < pack_ttl:
            raise StoreError(
                f"carry_age ({carry_age}) must be at least 0 and below pack_ttl ({pack_ttl})"
            )
        #: TTL of state pack items, and the age from which their live states are carried.
        self.pack_ttl = pack_ttl
        self.carry_age = carry_age
        self._keys_lock = threading.Lock()
        self._known_keys: dict[str, set[str]] = {}  # sort key -> pks in the key registry
        self._known_members: set[tuple[str, str]] = set()  # (set key, member) put
        self._closed = False
        layout = self._get_item(_META_PK, _LAYOUT_SK)
        #: How many partition keys state items spread over (the table's META LAYOUT).
        self.state_shards = int(layout.get("state_shards", {}).get("N", _STATE_SHARDS))
        self._refuse_old_layout()
        self._packs = StatePacks(
            self.table,
            PackIO(self._batch_write, self._batch_get, self._query),
            self.state_shards,
            pack_ttl,
            carry_age,
        )

    def _refuse_old_layout(self) -> None:
        """Raise :class:`StoreError` when the table holds states in the layout before
        state packs (one item per key under ``~pp#STATE#<shard>``): this version reads
        neither them nor that layout's ``scan`` index, so it must not run on such a
        table (one Query of at most one item per state shard)."""
        for shard in range(self.state_shards):
            response = self._call(
                "query",
                TableName=self.table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"{_OLD_STATE_PK}{shard}"}},
                Limit=1,
                ProjectionExpression="pk",
            )
            if response.get("Items"):
                raise StoreError(
                    f"DynamoDB table {self.table!r} was written by a playpulse before state "
                    "packs (2026-12-05: states one item per key under ~pp#STATE#): this "
                    "version does not read that layout. Create a new table ('playpulse aws "
                    "deploy' with a new stack, or playpulse.store.dynamodb.create_table) "
                    "and point PLAYPULSE_STORE_URL at it"
                )

    # --- low-level calls ---

    def _call(self, op: str, **kwargs: Any) -> Any:
        """Call ``op``, retrying throttling; ConditionalCheckFailed -> _ConditionFailed,
        a refused operand type or range -> _BadType, anything else -> StoreError."""
        method = getattr(self._ddb, op)
        delay = 0.05
        for attempt in range(_RETRIES + 1):
            try:
                response = method(**kwargs)
            except Exception as exc:
                code = _code(exc)
                if code == "ConditionalCheckFailedException":
                    raise _ConditionFailed(f"{op} on {self.table!r}: condition false") from exc
                if code == "ValidationException" and (
                    "incorrect data type" in str(exc)
                    or "overflow" in str(exc).lower()
                    or "precision" in str(exc).lower()
                    or "underflow" in str(exc).lower()
                ):
                    raise _BadType(str(exc)) from exc
                if code in _THROTTLED and attempt < _RETRIES:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if code == "ResourceNotFoundException":
                    raise StoreError(
                        f"DynamoDB {op} on table {self.table!r} failed: the table does not exist"
                    ) from exc
                raise StoreError(
                    f"DynamoDB {op} on table {self.table!r} failed: {_reason(exc)}"
                ) from exc
            self._count(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _count(self, response: dict[str, Any]) -> None:
        consumed = response.get("ConsumedCapacity")
        if consumed is None:
            return
        entries = consumed if isinstance(consumed, list) else [consumed]
        with self._lock:
            for entry in entries:
                self.write_units += float(entry.get("CapacityUnits", 0.0))

    def _estimate(self, item: dict[str, Any]) -> None:
        units = _units(_size(item))
        if "_isk" in item:
            units *= 2  # projected into by_sk
        if VENDOR_KEY in item:
            units += _units(_size(item))
        kind = _kind(item["pk"]["S"]) if "pk" in item else "other"
        with self._lock:
            self.estimated_write_units += units
            self.write_requests += 1
            self.estimated_units_by_kind[kind] = self.estimated_units_by_kind.get(kind, 0) + units

    def _write(self, op: str, item_for_size: dict[str, Any], **kwargs: Any) -> Any:
        self._estimate(item_for_size)
        return self._call(op, TableName=self.table, ReturnConsumedCapacity="TOTAL", **kwargs)

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks of 25, retrying UnprocessedItems with backoff."""
        for request in requests:
            body = request.get("PutRequest", {}).get("Item") or request["DeleteRequest"]["Key"]
            self._estimate(body)
        for chunk in _chunks(requests, 25):
            pending: list[dict[str, Any]] = list(chunk)
            delay = 0.05
            for _ in range(_RETRIES * 4):
                response = self._call(
                    "batch_write_item",
                    RequestItems={self.table: pending},
                    ReturnConsumedCapacity="TOTAL",
                )
                pending = response.get("UnprocessedItems", {}).get(self.table, [])
                if not pending:
                    break
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                raise StoreError(
                    f"DynamoDB BatchWriteItem on {self.table!r}: {len(pending)} items still "
                    "unprocessed after retries (throttled)"
                )

    def _batch_get(
        self, keys: list[dict[str, Any]], projection: str | None, names: dict[str, str]
    ) -> list[dict[str, Any]]:
        """BatchGetItem (consistent) in chunks of 100 (on the pool), retrying
        UnprocessedKeys. Not for pool tasks (it waits on the pool)."""
        chunks = list(_chunks(keys, 100))
        found: list[list[dict[str, Any]]] = [[] for _ in chunks]

        def one(n: int) -> None:
            found[n] = self._batch_get_one(chunks[n], projection, names)

        self._parallel(one, range(len(chunks)))
        return [item for part in found for item in part]

    def _batch_get_one(
        self, chunk: Sequence[dict[str, Any]], projection: str | None, names: dict[str, str]
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if chunk:
            spec: dict[str, Any] = {"Keys": list(chunk), "ConsistentRead": True}
            if projection:
                spec["ProjectionExpression"] = projection
            if names:
                spec["ExpressionAttributeNames"] = names
            request: dict[str, Any] = {self.table: spec}
            delay = 0.05
            for _ in range(_RETRIES * 4):
                response = self._call("batch_get_item", RequestItems=request)
                out.extend(response.get("Responses", {}).get(self.table, []))
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                raise StoreError(f"DynamoDB BatchGetItem on {self.table!r}: keys left unread")
        return out

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item a Query returns, page by page."""
        kwargs.setdefault("TableName", self.table)
        while True:
            response = self._call("query", **kwargs)
            yield from response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def _parallel(self, fn: Callable[[T], None], work: Sequence[T]) -> None:
        """Run ``fn`` over ``work`` on the pool; raise the first error after all ran."""
        if len(work) <= 1:
            for one in work:
                fn(one)
            return
        futures = [self._pool.submit(fn, one) for one in work]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    def _next_stamp(self) -> int:
        with self._lock:
            stamp = max(_stamp(), self._last_stamp + 1)
            self._last_stamp = stamp
            return stamp

    # --- apply ---

    def apply(self, batch: StoreBatch) -> None:
        """See :meth:`RealtimeStore.apply` and the module docstring (a redo journal and
        fenced item writes)."""
        prep = _prepare(batch, self._next_stamp())
        if prep.empty:
            return
        self._finish_journals(prep.consumer, set(prep.offsets))
        if replayed(batch, self._read_offsets(prep.consumer)):
            return
        self._check_sums(prep)
        with self._keys_lock:  # members this object put before are not put again
            added = prep.members
            prep.members = [m for m in added if m not in self._known_members]
        self._write_packs(prep)
        self._register_keys(prep)
        self._journal(prep)
        self._redo(prep)
        with self._keys_lock:
            if len(self._known_members) + len(added) > _KNOWN_MEMBERS:
                self._known_members.clear()
            self._known_members.update(added)

    def _check_sums(self, prep: _Prepared) -> None:
        """Refuse, before writing, an infinite amount added to the opposite infinity."""
        for pk, sk, attrs in prep.counters:
            infinite = {a: v for a, v in attrs.items() if math.isinf(v)}
            if not infinite:
                continue
            stored = self._get_item(pk, sk)
            for attr, amount in infinite.items():
                if attr in stored and math.isnan(_value(stored[attr]) + amount):
                    raise StoreError(
                        f"adding {amount} to {pk}/{sk}.{attr} gives NaN "
                        f"(it holds {_value(stored[attr])})"
                    )

    def _write_packs(self, prep: _Prepared) -> None:
        """Step 2a: the batch's states, and the live states of pack items older than
        ``carry_age``, in write-once pack items with a TTL (invisible until step 3
        commits them; :meth:`StatePacks.write`)."""
        written = self._packs.write(prep.stamp, prep.batch_id, prep.states)
        if written is not None:
            prep.packs = [item.ref for item in written]
            prep.pack_items = written
            prep.pack_expires = written[0].expires

    def _register_keys(self, prep: _Prepared) -> None:
        """Step 2b: the batch's counter keys that the key registry may not hold yet, one
        write-once item per sort key (``~pp#KEYS#<sk>`` / ``<stamp>#<batch>``). This
        object remembers what it registered or read there, so a key is registered about
        once. Written before the counters (a listed key whose item never came is skipped
        by :meth:`scan`)."""
        by_sk: dict[str, set[str]] = {}
        for pk, sk, _ in prep.counters:
            by_sk.setdefault(sk, set()).add(pk)
        with self._keys_lock:
            unknown = [sk for sk in by_sk if sk not in self._known_keys]
        loaded: dict[str, set[str]] = {}

        def load(sk: str) -> None:
            loaded[sk] = self._registered_pks(sk)

        self._parallel(load, unknown)
        with self._keys_lock:
            for sk, pks in loaded.items():
                self._known_keys.setdefault(sk, set()).update(pks)
            new = {sk: pks - self._known_keys[sk] for sk, pks in by_sk.items()}
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": _KEYS_PK + sk},
                        "sk": {"S": f"{prep.stamp:0{STAMP_WIDTH}d}#{prep.batch_id}"},
                        "k": {"B": zlib.compress(json.dumps(sorted(pks)).encode(), 6)},
                    }
                }
            }
            for sk, pks in new.items()
            if pks
        ]
        self._batch_write(requests)
        with self._keys_lock:
            for sk, pks in new.items():
                self._known_keys[sk].update(pks)

    def _commit_packs(self, prep: _Prepared, fenced: bool) -> None:
        """Step 3's last write: the commit item that makes the batch's pack items visible
        (not written when the batch's offsets were all applied already: it committed
        before, or a newer owner's batches overtook this zombie)."""
        if not prep.packs:
            return
        if fenced and prep.offsets:
            applied = self._read_offsets(prep.consumer)
            if all(p in applied and o <= applied[p] for p, o in prep.offsets.items()):
                return
        item = {
            "pk": {"S": COMMIT_PK},
            "sk": {"S": f"{self._next_stamp():0{STAMP_WIDTH}d}#{prep.batch_id}"},
            "p": {"S": json.dumps(prep.packs)},
            "expires_at": {"N": str(prep.pack_expires)},
        }
        self._write("put_item", item, Item=item)
        self._packs.committed(prep.batch_id, prep.pack_expires, prep.pack_items)

    def _journal(self, prep: _Prepared) -> None:
        """Steps 2: the batch's chunks, then its marker."""
        data = prep.encode()
        pk = _JOURNAL_PK + prep.consumer
        ttl = {"N": str(int((_from_us(prep.stamp) + _JOURNAL_TTL).timestamp()))}
        chunks = [data[i : i + _CHUNK_BYTES] for i in range(0, len(data), _CHUNK_BYTES)]
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": pk},
                        "sk": {"S": f"C#{prep.batch_id}#{n:05d}"},
                        "d": {"B": chunk},
                        "expires_at": ttl,
                    }
                }
            }
            for n, chunk in enumerate(chunks)
        ]
        self._batch_write(requests)
        marker = {
            "pk": {"S": pk},
            "sk": {"S": f"M#{prep.batch_id}"},
            "chunks": {"N": str(len(chunks))},
            "partitions": {"S": ",".join(str(p) for p in sorted(prep.offsets)) or "-"},
        }
        self._write("put_item", marker, Item=marker)

    def _finish_journals(self, consumer: str, partitions: set[int] | None) -> None:
        """Redo every pending journal of ``consumer`` (those touching ``partitions``, or
        all when ``None``), oldest first."""
        pk = _JOURNAL_PK + consumer
        markers = list(
            self._query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :m)",
                ExpressionAttributeValues={":pk": {"S": pk}, ":m": {"S": "M#"}},
                ConsistentRead=True,
            )
        )
        for marker in sorted(markers, key=lambda m: m["sk"]["S"]):
            listed = marker.get("partitions", {}).get("S", "").split(",")
            touched = {int(p) for p in listed if p.isdigit()}
            if partitions is not None and touched and not touched & partitions:
                continue
            batch_id = marker["sk"]["S"][2:]
            chunks = list(
                self._query(
                    KeyConditionExpression="pk = :pk AND begins_with(sk, :c)",
                    ExpressionAttributeValues={
                        ":pk": {"S": pk},
                        ":c": {"S": f"C#{batch_id}#"},
                    },
                    ConsistentRead=True,
                )
            )
            expected = int(marker["chunks"]["N"])
            if len(chunks) != expected:
                raise StoreError(
                    f"journal {batch_id} of {consumer!r} in {self.table!r} has "
                    f"{len(chunks)} of its {expected} chunks: cannot redo it"
                )
            data = b"".join(c["d"]["B"] for c in sorted(chunks, key=lambda c: c["sk"]["S"]))
            self._redo(_Prepared.decode(data))

    def _fence(
        self, prep: _Prepared
    ) -> tuple[list[str], list[str], dict[str, str], dict[str, Any]]:
        """(conditions, SET parts, names, values) fencing an item write with the batch."""
        conds: list[str] = []
        sets: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        if prep.offsets:
            for i, (p, o) in enumerate(sorted(prep.offsets.items())):
                names[f"#f{i}"] = f"_f#{prep.consumer}#{p}"
                values[f":f{i}"] = {"S": position_text(o)}
                conds.append(f"(attribute_not_exists(#f{i}) OR #f{i} < :f{i})")
                sets.append(f"#f{i} = :f{i}")
        else:
            names["#j"] = f"_j#{prep.consumer}"
            values[":j"] = {"S": prep.batch_id}
            conds.append("(attribute_not_exists(#j) OR #j <> :j)")
            sets.append("#j = :j")
        return conds, sets, names, values

    def _applied(self, item: dict[str, Any], prep: _Prepared) -> bool:
        """Whether ``item`` carries the fence of ``prep`` (written by it or later)."""
        if not prep.offsets:
            return bool(item.get(f"_j#{prep.consumer}", {}).get("S") == prep.batch_id)
        for p, o in prep.offsets.items():
            fence = item.get(f"_f#{prep.consumer}#{p}", {}).get("S")
            if fence is None or fence < position_text(o):
                return False
        return True

    def _redo(self, prep: _Prepared, *, fenced: bool = True) -> None:
        """Steps 3-5 for a journaled batch (idempotent; also the crash recovery)."""
        # Every write of step 3 is independent of the others: one round of tasks on the
        # pool (each a leaf: it never waits on the pool itself).
        tasks: list[Callable[[], None]] = []
        tasks += [functools.partial(self._add, prep, c, fenced) for c in prep.counters]
        members = [
            {"PutRequest": {"Item": {"pk": {"S": _SET_PK + k}, "sk": {"S": "m" + m}}}}
            for k, m in prep.members
        ]
        tasks += [functools.partial(self._batch_write, list(c)) for c in _chunks(members, 25)]
        if prep.dedup:
            tasks.append(functools.partial(self._put_dedup, prep))
        self._parallel(lambda task: task(), tasks)
        self._commit_packs(prep, fenced)
        if fenced:
            self._move_offsets(prep)
            key = {"pk": {"S": _JOURNAL_PK + prep.consumer}, "sk": {"S": f"M#{prep.batch_id}"}}
            self._write("delete_item", key, Key=key)

    def _add(
        self, prep: _Prepared, counter: tuple[str, str, dict[str, float]], fenced: bool
    ) -> None:
        pk, sk, attrs = counter
        if any(_special(v) for v in attrs.values()):
            self._read_modify_write(prep, counter, fenced)
            return
        conds, sets, names, values = self._fence(prep) if fenced else ([], [], {}, {})
        adds = []
        for i, (attr, amount) in enumerate(attrs.items()):
            names[f"#a{i}"] = attr
            values[f":a{i}"] = _number(amount)
            adds.append(f"#a{i} :a{i}")
        _vendor_attribute(pk, sets, names, values)
        key = {"pk": {"S": pk}, "sk": {"S": sk}}
        size_item = {**key, **{a: _number(v) for a, v in attrs.items()}}
        if pk.startswith("VENDOR#"):
            size_item[VENDOR_KEY] = key["pk"]
        update = f"ADD {', '.join(adds)}" + (f" SET {', '.join(sets)}" if sets else "")
        kwargs: dict[str, Any] = {
            "Key": key,
            "UpdateExpression": update,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if conds:
            kwargs["ConditionExpression"] = " AND ".join(conds)
        try:
            self._write("update_item", size_item, **kwargs)
        except _ConditionFailed:
            return  # applied already
        except _BadType:
            self._read_modify_write(prep, counter, fenced)

    def _get_item(self, pk: str, sk: str) -> dict[str, Any]:
        response = self._call(
            "get_item",
            TableName=self.table,
            Key={"pk": {"S": pk}, "sk": {"S": sk}},
            ConsistentRead=True,
        )
        return dict(response.get("Item", {}))

    def _read_modify_write(
        self, prep: _Prepared, counter: tuple[str, str, dict[str, float]], fenced: bool
    ) -> None:
        """The slow path for values DynamoDB cannot add: float arithmetic, a write
        conditional on the values read (and on the fence), retried on a race."""
        pk, sk, attrs = counter
        for _ in range(100):
            item = self._get_item(pk, sk)
            if fenced and item and self._applied(item, prep):
                return
            conds, sets, names, values = self._fence(prep) if fenced else ([], [], {}, {})
            for i, (attr, amount) in enumerate(attrs.items()):
                names[f"#a{i}"] = attr
                old = item.get(attr)
                values[f":a{i}"] = _sum(old, amount)
                sets.append(f"#a{i} = :a{i}")
                if old is None:
                    conds.append(f"attribute_not_exists(#a{i})")
                else:
                    values[f":o{i}"] = old
                    conds.append(f"#a{i} = :o{i}")
            _vendor_attribute(pk, sets, names, values)
            key = {"pk": {"S": pk}, "sk": {"S": sk}}
            try:
                self._write(
                    "update_item",
                    {**item, **key},
                    Key=key,
                    UpdateExpression="SET " + ", ".join(sets),
                    ConditionExpression=" AND ".join(conds),
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
                return
            except _ConditionFailed:
                continue  # raced with another writer: read again
        raise StoreError(f"updating {pk}/{sk} in {self.table!r}: too many concurrent writers")

    def _put_dedup(self, prep: _Prepared) -> None:
        """The batch's immutable dedup item(s) (idempotent: deterministic keys)."""
        records = prep.dedup
        step = _DEDUP_KEYS_PER_ITEM * _DEDUP_RECORD.size
        expiries = [us for _, us in _DEDUP_RECORD.iter_unpack(records)]
        ttl_us = max(max(expiries), prep.stamp) + _DEDUP_TTL_MARGIN // _US
        ttl_s = min(ttl_us // 1_000_000, 253_402_300_799)  # TTL beyond 9999 is useless
        requests = []
        for n, start in enumerate(range(0, len(records), step)):
            sk = f"{prep.stamp:0{STAMP_WIDTH}d}#{prep.batch_id}#{n:03d}"
            item = {
                "pk": {"S": _DEDUP_PK},
                "sk": {"S": sk},
                "d": {"B": zlib.compress(records[start : start + step], 1)},
                "expires_at": {"N": str(ttl_s)},
            }
            requests.append({"PutRequest": {"Item": item}})
        self._batch_write(requests)
        with self._index_lock:
            for request in requests:
                self._load_dedup_item(request["PutRequest"]["Item"])

    def _move_offsets(self, prep: _Prepared) -> None:
        """Step 4: the consumer's offsets, forward only (per partition on a conflict)."""
        if not prep.offsets:
            return
        key = {"pk": {"S": _OFFSETS_PK}, "sk": {"S": "c" + prep.consumer}}
        items = sorted(prep.offsets.items())

        def update(parts: list[tuple[int, int]]) -> None:
            names = {f"#o{i}": f"o{p}" for i, (p, _) in enumerate(parts)}
            values = {f":o{i}": {"S": position_text(o)} for i, (_, o) in enumerate(parts)}
            self._write(
                "update_item",
                {**key, **{n: values[":" + k[1:]] for k, n in names.items()}},
                Key=key,
                UpdateExpression="SET " + ", ".join(f"#o{i} = :o{i}" for i in range(len(parts))),
                ConditionExpression=" AND ".join(
                    f"(attribute_not_exists(#o{i}) OR #o{i} < :o{i})" for i in range(len(parts))
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )

        try:
            update(items)
        except _ConditionFailed:
            for part in items:  # some partitions are ahead already (a zombie, a redo)
                with contextlib.suppress(_ConditionFailed):
                    update([part])

    def _read_offsets(self, consumer: str) -> dict[int, int]:
        item = self._get_item(_OFFSETS_PK, "c" + consumer)
        return {
            int(name[1:]): int(raw["S"])
            for name, raw in item.items()
            if name.startswith("o") and name[1:].isdigit()
        }

    # --- replace ---

    def replace(self, batch: StoreBatch) -> None:
        """See :meth:`RealtimeStore.replace`; on DynamoDB it is not atomic for readers nor
        across a crash (module docstring): meant for an offline reprocess."""
        prep = _prepare(batch, self._next_stamp())
        deletes = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "ProjectionExpression": "pk, sk",
            "FilterExpression": "NOT begins_with(pk, :internal) OR begins_with(pk, :set) "
            "OR begins_with(pk, :pack) OR pk = :commit OR begins_with(pk, :keys)",
            "ExpressionAttributeValues": {
                ":internal": {"S": _INTERNAL},
                ":keys": {"S": _KEYS_PK},
                ":set": {"S": _SET_PK},
                ":pack": {"S": PACK_PK},
                ":commit": {"S": COMMIT_PK},
            },
            "ConsistentRead": True,
        }
        while True:
            response = self._call("scan", **kwargs)
            deletes += [{"DeleteRequest": {"Key": item}} for item in response.get("Items", [])]
            if not response.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        self._parallel(lambda chunk: self._batch_write(list(chunk)), list(_chunks(deletes, 25)))
        self._packs.reset()
        with self._keys_lock:
            self._known_keys.clear()
            self._known_members.clear()
        self._write_packs(prep)
        self._register_keys(prep)
        self._redo(prep, fenced=False)
        if prep.offsets:
            key = {"pk": {"S": _OFFSETS_PK}, "sk": {"S": "c" + prep.consumer}}
            parts = sorted(prep.offsets.items())
            names = {f"#o{i}": f"o{p}" for i, (p, _) in enumerate(parts)}
            values = {f":o{i}": {"S": position_text(o)} for i, (_, o) in enumerate(parts)}
            self._write(
                "update_item",
                key,
                Key=key,
                UpdateExpression="SET " + ", ".join(f"#o{i} = :o{i}" for i in range(len(parts))),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )

    # --- reads ---

    def offsets(self, consumer: str) -> dict[int, int]:
        """See :meth:`RealtimeStore.offsets`: finishes the consumer's pending journals
        first (a crash's half-applied batch), so offsets and items agree. A journal that
        another live member of the consumer is applying at that moment is applied by
        both: the fences keep it exactly once (it costs its writes twice)."""
        consumer = _text(consumer, "consumer name")
        self._finish_journals(consumer, None)
        return self._read_offsets(consumer)

    def dedup_expiries(self, event_ids: Sequence[str]) -> dict[str, datetime]:
        """See :meth:`RealtimeStore.dedup_expiries` (the in-memory index, refreshed)."""
        if not event_ids:
            return {}
        self._refresh_index()
        out: dict[str, datetime] = {}
        with self._index_lock:
            for key in event_ids:
                hit = self._index.get(fingerprint(key))
                if hit is not None:
                    out[key] = _from_us(hit[0])
        return out

    def _refresh_index(self) -> None:
        """Load the dedup items written since the last load and the expire ops."""
        with self._index_lock:
            ops_item = self._get_item(_META_PK, _DEDUP_OPS_SK)
            ops = _decode_ops(ops_item)
            if ops != self._ops:
                self._ops = ops
                self._apply_ops(ops)
            since = stamped_since(_DEDUP_PK, self._loaded_upto if self._full else None)
            for item in self._query(**since, ConsistentRead=True):
                self._load_dedup_item(item)
            self._full = True
            horizon = self._loaded_upto - LOOKBACK_US
            for sk in [sk for sk, stamp in self._loaded.items() if stamp < horizon]:
                del self._loaded[sk]

    def _load_dedup_item(self, item: dict[str, Any]) -> None:
        """Merge one dedup item into the index (under ``_index_lock``)."""
        sk = item["sk"]["S"]
        if sk in self._loaded:
            return
        stamp = int(sk.split("#", 1)[0])
        self._loaded[sk] = stamp
        self._loaded_upto = max(self._loaded_upto, stamp)
        if int(item["expires_at"]["N"]) < time.time():
            return  # past its TTL: gone for every reader, deleted or not yet
        cuts = [before for cut, before in self._ops if cut > sk]
        gone_before = max(cuts) if cuts else None
        for fp, expiry in _DEDUP_RECORD.iter_unpack(zlib.decompress(item["d"]["B"])):
            if gone_before is not None and expiry < gone_before:
                continue
            held = self._index.get(fp)
            if held is None or held[1] <= sk:
                self._index[fp] = (expiry, sk)

    def _apply_ops(self, ops: list[tuple[str, int]]) -> int:
        """Drop from the index what the expire ops removed; how many (under the lock)."""
        gone = [
            fp
            for fp, (expiry, sk) in self._index.items()
            if any(cut > sk and expiry < before for cut, before in ops)
        ]
        for fp in gone:
            del self._index[fp]
        return len(gone)

    def expire_dedup(self, before: datetime) -> int:
        """See :meth:`RealtimeStore.expire_dedup`: records ``(now, before)`` in the META
        item (for every reader) and drops the keys from this object's index."""
        before_us = _us(before)
        self._refresh_index()
        cut = f"{self._next_stamp():0{STAMP_WIDTH}d}"
        key = {"pk": {"S": _META_PK}, "sk": {"S": _DEDUP_OPS_SK}}
        for _ in range(100):
            item = self._get_item(_META_PK, _DEDUP_OPS_SK)
            ops = _decode_ops(item)
            # An op whose bound is at or below the new one is subsumed by it.
            kept = [(c, b) for c, b in ops if b > before_us] + [(cut, before_us)]
            version = int(item.get("version", {}).get("N", "0"))
            new = {
                **key,
                "ops": {"S": json.dumps(kept)},
                "version": {"N": str(version + 1)},
            }
            try:
                self._write(
                    "put_item",
                    new,
                    Item=new,
                    ConditionExpression="attribute_not_exists(#ver) OR #ver = :v",
                    ExpressionAttributeNames={"#ver": "version"},
                    ExpressionAttributeValues={":v": {"N": str(version)}},
                )
            except _ConditionFailed:
                continue
            with self._index_lock:
                self._ops = kept
                return self._apply_ops([(cut, before_us)])
        raise StoreError(f"expire_dedup on {self.table!r}: too many concurrent writers")

    def states(self, keys: Iterable[str]) -> dict[str, bytes]:
        """See :meth:`RealtimeStore.states` (the pack index, refreshed; blobs from the
        cache or the pack items)."""
        wanted = [k for k in dict.fromkeys(keys) if isinstance(k, str)]
        if not wanted:
            return {}
        return self._packs.states(wanted)

    def state_keys(self, prefix: str) -> list[str]:
        """See :meth:`RealtimeStore.state_keys` (the pack index, refreshed)."""
        if not isinstance(prefix, str):
            return []
        return self._packs.keys(prefix)

    def item(self, pk: str, sk: str) -> dict[str, float]:
        """See :meth:`RealtimeStore.item`."""
        if not pk or not sk or not _storable(pk) or not _storable(sk):
            return {}
        if pk.startswith(_INTERNAL):
            return {}
        return _user_attrs(self._get_item(pk, sk))

    def items(self, pk: str, sk_prefix: str = "") -> list[tuple[str, dict[str, float]]]:
        """See :meth:`RealtimeStore.items` (a Query on the table)."""
        if not pk or not _storable(pk) or not _storable(sk_prefix):
            return []
        condition = "pk = :pk"
        values: dict[str, Any] = {":pk": {"S": pk}}
        if sk_prefix:
            condition += " AND begins_with(sk, :p)"
            values[":p"] = {"S": sk_prefix}
        out = []
        for item in self._query(
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ConsistentRead=True,
        ):
            attrs = _user_attrs(item)
            if attrs and not pk.startswith(_INTERNAL):
                out.append((item["sk"]["S"], attrs))
        return out

    def scan(self, pk_prefix: str, sk: str) -> list[tuple[str, dict[str, float]]]:
        """See :meth:`RealtimeStore.scan`: the partition keys the key registry lists
        under ``sk`` (a Query), then their items (BatchGetItem, strongly consistent)."""
        if not sk or not _storable(sk) or not _storable(pk_prefix):
            return []
        pks = sorted(
            pk
            for pk in self._registered_pks(sk)
            if pk.startswith(pk_prefix) and not pk.startswith(_INTERNAL)
        )
        keys = [{"pk": {"S": pk}, "sk": {"S": sk}} for pk in pks]
        found = self._batch_get(keys, None, {}) if keys else []
        out = []
        for item in found:
            attrs = _user_attrs(item)
            if attrs:
                out.append((item["pk"]["S"], attrs))
        return sorted(out, key=lambda row: row[0])

    def _registered_pks(self, sk: str) -> set[str]:
        """Every partition key the key registry holds for sort key ``sk``."""
        pks: set[str] = set()
        for item in self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": _KEYS_PK + sk}},
            ConsistentRead=True,
        ):
            try:
                pks.update(json.loads(zlib.decompress(item["k"]["B"])))
            except (zlib.error, ValueError) as exc:
                raise StoreError(
                    f"key registry item {sk!r}/{item['sk']['S']} in {self.table!r} does "
                    f"not decode: {exc}"
                ) from exc
        return pks

    def vendor_items(
        self, vendor_pk: str, sk_prefix: str = ""
    ) -> list[tuple[str, dict[str, float]]]:
        """(sk, attributes) of the items under vendor ``vendor_pk`` (``VENDOR#<id>``) in
        the ``by_vendor`` index, by sort key (eventually consistent on DynamoDB)."""
        condition = "#v = :v"
        values: dict[str, Any] = {":v": {"S": vendor_pk}}
        if sk_prefix:
            condition += " AND begins_with(sk, :p)"
            values[":p"] = {"S": sk_prefix}
        return [
            (item["sk"]["S"], _user_attrs(item))
            for item in self._query(
                IndexName="by_vendor",
                KeyConditionExpression=condition,
                ExpressionAttributeNames={"#v": VENDOR_KEY},
                ExpressionAttributeValues=values,
            )
        ]

    def count_members(self, set_key: str) -> int:
        """See :meth:`RealtimeStore.count_members` (Query Select=COUNT, paginated)."""
        if not _storable(set_key):
            return 0
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": _SET_PK + set_key}},
            "Select": "COUNT",
            "ConsistentRead": True,
        }
        total = 0
        while True:
            response = self._call("query", **kwargs)
            total += int(response.get("Count", 0))
            if not response.get("LastEvaluatedKey"):
                return total
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def close(self) -> None:
        """Stop the worker threads (the client needs no closing)."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True)


def _storable(key: str) -> bool:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode_ops(item: dict[str, Any]) -> list[tuple[str, int]]:
    raw = item.get("ops", {}).get("S")
    return [(str(c), int(b)) for c, b in json.loads(raw)] if raw else []


def _vendor_attribute(
    pk: str, sets: list[str], names: dict[str, str], values: dict[str, Any]
) -> None:
    """Add to an update expression's parts the attribute that puts a ``VENDOR#`` item in
    the ``by_vendor`` index."""
    if pk.startswith("VENDOR#"):
        sets.append("#v = :vpk")
        names["#v"] = VENDOR_KEY
        values[":vpk"] = {"S": pk}
