"""The validated batch of the DynamoDB store (:class:`Prepared`, made by :func:`prepare`):
what a redo journal keeps of a batch and how it is serialized into journal chunks (see
:mod:`playpulse.store.dynamodb` for the journal)."""

from __future__ import annotations

import json
import math
import struct
import uuid
import zlib
from dataclasses import dataclass, field

from playpulse.errors import StoreError
from playpulse.store.base import StoreBatch, checked_text
from playpulse.store.dynamodb_items import (
    DEDUP_RECORD,
    INTERNAL,
    RESERVED,
    fingerprint,
    position_text,
    to_us,
)
from playpulse.store.dynamodb_states import STAMP_WIDTH, PackItem

_MAX_BLOB = 380_000
_JOURNAL_HEAD = struct.Struct(">II")


@dataclass
class Prepared:
    """A validated batch in the form the journal keeps and the redo applies. ``states``
    are written to pack items before the journal
    (:meth:`~playpulse.store.dynamodb.DynamoDBStore._write_packs`); the journal keeps only
    the pack items' keys (``packs``)."""

    consumer: str
    batch_id: str
    stamp: int
    offsets: dict[int, int] = field(default_factory=dict)
    counters: list[tuple[str, str, dict[str, float]]] = field(default_factory=list)
    members: list[tuple[str, str]] = field(default_factory=list)
    dedup: bytes = b""  # DEDUP_RECORD records, in batch order
    states: list[tuple[str, bytes | None]] = field(default_factory=list)
    packs: list[tuple[str, str]] = field(default_factory=list)  # pack items (pk, sk)
    pack_expires: int = 0  # their TTL (epoch seconds)
    pack_items: list[PackItem] = field(default_factory=list)  # not journaled

    @property
    def empty(self) -> bool:
        """Whether the batch holds nothing to write (no offsets either)."""
        return not (self.offsets or self.counters or self.members or self.dedup or self.states)

    def encode(self) -> bytes:
        """The journal form: two lengths, the zlib-compressed JSON head (everything but
        the dedup records and the states) and the zlib-compressed dedup records."""
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
    def decode(cls, data: bytes) -> Prepared:
        """The batch :meth:`encode` wrote (without its states and pack items); raises
        :class:`StoreError` for a journal version this playpulse does not know."""
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


def prepare(batch: StoreBatch, stamp: int) -> Prepared:
    """Check everything a batch holds; StoreError for anything DynamoDB cannot keep."""
    offsets = {}
    for p, o in batch.offsets.items():
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < 2**31:
            raise StoreError(f"partition {p!r} is not an integer in [0, 2**31)")
        position_text(o)
        offsets[p] = o
    consumer = checked_text(batch.consumer, "consumer name")
    counters = []
    for (pk, sk), attrs in batch.increments.items():
        checked_text(pk, "partition key")
        checked_text(sk, "sort key")
        if not pk or not sk:
            raise StoreError(f"item key ({pk!r}, {sk!r}) has an empty part: DynamoDB refuses it")
        if pk.startswith(INTERNAL):
            raise StoreError(f"partition key {pk!r} starts with the reserved {INTERNAL!r}")
        if len(pk.encode()) > 2000 or len(sk.encode()) > 1000:
            raise StoreError(f"item key ({pk[:40]!r}..., {sk[:40]!r}...) is too long for DynamoDB")
        amounts: dict[str, float] = {}
        for attr, raw in attrs.items():
            checked_text(attr, "attribute name")
            if attr in RESERVED or attr.startswith("_") or not attr:
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
    members = sorted(
        {(checked_text(k, "set key"), checked_text(m, "set member")) for k, m in batch.members}
    )
    for key, member in members:
        if len(key.encode()) > 2000 or len(member.encode()) > 1000:
            raise StoreError(f"set key or member {key[:40]!r}/{member[:40]!r} is too long")
    dedup = b"".join(
        DEDUP_RECORD.pack(fingerprint(checked_text(key, "dedup key")), to_us(expires))
        for key, expires in batch.dedup
    )
    states: list[tuple[str, bytes | None]] = []
    for key, value in batch.states.items():
        checked_text(key, "state key")
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
    return Prepared(consumer, batch_id, stamp, offsets, counters, members, dedup, states)
