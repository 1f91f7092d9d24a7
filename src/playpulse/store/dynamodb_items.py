"""Item layout and wire encoding of the DynamoDB store
(:class:`~playpulse.store.dynamodb.DynamoDBStore`; its module docstring describes the
items): the internal partition keys, stream positions as strings, dedup key
fingerprints, timestamps as microseconds, and counter amounts.

Counter amounts go as the shortest ``repr`` of the float (at most 17 significant digits)
and DynamoDB adds them exactly in decimal (38 significant digits), so a sum is the exact
decimal sum of the amounts, read back as the nearest float (within 1e-15 relative of a
float accumulation). Values DynamoDB cannot hold (infinities, magnitudes outside
[1e-120, 1e120)) are kept as a String holding the float's ``repr`` and updated by a
conditional read-modify-write in float arithmetic (:func:`number_sum`).
"""

from __future__ import annotations

import decimal
import hashlib
import math
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from playpulse.errors import StoreError

#: Starts every internal partition key (a counter key starting with it is refused).
INTERNAL = "~pp#"
#: Partition key of the consumers' offsets items (sort key ``c<consumer>``).
OFFSETS_PK = "~pp#OFFSETS"
#: Partition key of the table's META items (:data:`LAYOUT_SK`, :data:`DEDUP_OPS_SK`).
META_PK = "~pp#META"
#: Partition key prefix of states before packs (+ shard): refused by the store.
OLD_STATE_PK = "~pp#STATE#"
#: Partition key of the dedup items.
DEDUP_PK = "~pp#DEDUP"
#: Partition key prefix of a consumer's journal (+ consumer).
JOURNAL_PK = "~pp#JOURNAL#"
#: Partition key prefix of a set's member items (+ set key).
SET_PK = "~pp#SET#"
#: Partition key prefix of the key registry (+ sort key).
KEYS_PK = "~pp#KEYS#"
#: State shard count of a table without a META LAYOUT item (the default).
STATE_SHARDS = 8
#: Sort key of the META item holding the table's layout (``state_shards``).
LAYOUT_SK = "LAYOUT"
#: Sort key of the META item holding the expire_dedup ops.
DEDUP_OPS_SK = "DEDUP_EXPIRED"

_POS_WIDTH = 64
_POS_LIMIT = 10**_POS_WIDTH
_MIN_N, _MAX_N = 1e-120, 1e120
#: The attribute that puts an item in the ``by_vendor`` index.
VENDOR_KEY = "vendor_pk"
#: Attribute names a counter may not use (nor any starting with ``_``).
RESERVED = frozenset({"pk", "sk", "expires_at", VENDOR_KEY})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
#: One dedup key of a dedup item: fingerprint, expiry (microseconds since the epoch).
DEDUP_RECORD = struct.Struct("<Qq")


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


def to_us(value: object) -> int:
    """``value`` (a timezone-aware datetime) in microseconds since the epoch; raises
    :class:`StoreError` for anything else."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise StoreError(f"store timestamps must be timezone-aware datetimes, got {value!r}")
    return (value - _EPOCH) // _US


def from_us(us: int) -> datetime:
    """Microseconds since the epoch as a UTC datetime (the inverse of :func:`to_us`)."""
    return _EPOCH + us * _US


def is_special(x: float) -> bool:
    """Whether ``x`` cannot be a DynamoDB Number we add to (kept as a String then)."""
    return not math.isfinite(x) or (x != 0 and not _MIN_N <= abs(x) < _MAX_N)


def number(x: float) -> dict[str, str]:
    """The wire form of ``x``: a Number (``repr``, with a ``.`` so that every parser reads
    it as a decimal), or a String for values DynamoDB cannot hold."""
    if is_special(x):
        return {"S": repr(x)}
    text = repr(x)
    if "e" in text and "." not in text:
        text = text.replace("e", ".0e")
    return {"N": text}


_DECIMAL = decimal.Context(prec=38, traps=[decimal.Inexact, decimal.Overflow])


def number_sum(old: dict[str, Any] | None, amount: float) -> dict[str, str]:
    """The wire form of stored ``old`` plus ``amount``: exact in decimal (as DynamoDB's
    ADD) when both are Numbers and the sum is one too, else in float arithmetic."""
    if old is None:
        return number(amount)
    if "N" in old and not is_special(amount):
        try:
            total = _DECIMAL.add(decimal.Decimal(old["N"]), decimal.Decimal(number(amount)["N"]))
        except decimal.DecimalException:
            total = None
        if total is not None and not is_special(float(total)):
            text = str(total)
            if "E" in text and "." not in text:
                text = text.replace("E", ".0E")
            return {"N": text}
    return number(number_value(old) + amount)


def number_value(raw: dict[str, Any]) -> float:
    """A stored counter attribute (Number or String) as a float."""
    if "N" in raw:
        return float(raw["N"])
    if "S" in raw:
        return float(raw["S"])
    raise StoreError(f"a counter attribute holds {raw!r}, not a number")
