"""An in-memory real-time store: a test double and a reference for the contract.

It keeps everything in process memory, so nothing survives the process: use it in tests
and notebooks, never for data you need to keep. It accepts and rejects the same batches as
:class:`~playpulse.store.sqlite.SQLiteStore` (naive datetimes, NaN amounts or sums,
offsets beyond 64 bits, keys that are not storable text), so code tested against it
behaves the same against the file.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime

from playpulse.errors import StoreError
from playpulse.store.base import ItemKey, RealtimeStore, StoreBatch, checked_text, replayed

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class MemoryStore(RealtimeStore):
    """A :class:`RealtimeStore` held in dicts (not durable).

    :meth:`apply` first checks the whole batch and computes every new value, then
    changes the dicts in steps that cannot fail, all under one lock: a batch is applied
    completely or, with a :class:`~playpulse.errors.StoreError`, not at all.
    """

    def __init__(self) -> None:
        self._items: dict[str, dict[str, dict[str, float]]] = {}  # pk -> sk -> attr -> value
        self._members: dict[str, set[str]] = {}
        self._dedup: dict[str, datetime] = {}  # event id -> expires at
        self._states: dict[str, bytes] = {}
        self._offsets: dict[str, dict[int, int]] = {}  # consumer -> partition -> offset
        self._lock = threading.Lock()

    def apply(self, batch: StoreBatch) -> None:
        """See :meth:`RealtimeStore.apply`."""
        self._write(batch, replace=False)

    def replace(self, batch: StoreBatch) -> None:
        """See :meth:`RealtimeStore.replace`."""
        self._write(batch, replace=True)

    def snapshot(self, consumer: str) -> StoreBatch:
        """Everything the store holds, as one batch that recreates it in an empty store
        (offsets: ``consumer``'s), but attributes that are exactly 0 (a batch never writes a
        zero). What a reprocess computed in memory, ready for
        :meth:`RealtimeStore.replace` of the durable store."""
        batch = StoreBatch(consumer)
        with self._lock:
            for pk, by_sk in self._items.items():
                for sk, attrs in by_sk.items():
                    batch.increments[(pk, sk)].update(attrs)
            batch.members = {(key, m) for key, members in self._members.items() for m in members}
            batch.dedup = list(self._dedup.items())
            batch.states = dict(self._states)
            batch.offsets = dict(self._offsets.get(consumer, {}))
        return batch

    def _write(self, batch: StoreBatch, *, replace: bool) -> None:
        with self._lock:
            if not replace and replayed(batch, self._offsets.get(batch.consumer, {})):
                return
            # 1. Check everything and compute the new values; nothing is changed yet.
            items: dict[ItemKey, dict[str, float]] = {}
            for (pk, sk), attrs in batch.increments.items():
                stored = self._items.get(_text(pk), {}).get(_text(sk), {})
                for attr, raw in attrs.items():
                    amount = _amount(raw, pk, sk, _text(attr))
                    if amount == 0:  # like SQLite: a zero adds nothing, not even the attr
                        continue
                    new = items.setdefault((pk, sk), {})
                    value = stored[attr] + amount if attr in stored else amount
                    if math.isnan(value):
                        raise StoreError(
                            f"adding {amount} to {pk}/{sk}.{attr} gives NaN "
                            f"(it holds {stored[attr]})"
                        )
                    new[attr] = value
            members = [(_text(key), _text(member)) for key, member in batch.members]
            dedup = [(_text(event_id), _aware(expires)) for event_id, expires in batch.dedup]
            states = {_text(k): None if v is None else _blob(k, v) for k, v in batch.states.items()}
            offsets = {
                _int64(p, "partition"): _int64(o, "offset") for p, o in batch.offsets.items()
            }
            consumer = _text(batch.consumer) if offsets else batch.consumer

            # 2. Apply: plain dict and set updates, which cannot fail halfway.
            if replace:
                self._items, self._members, self._states = {}, {}, {}
                fresh = {
                    key: {a: float(v) for a, v in attrs.items() if v != 0}
                    for key, attrs in batch.increments.items()
                }
                items = {key: attrs for key, attrs in fresh.items() if attrs}
            for (pk, sk), attrs in items.items():
                self._items.setdefault(pk, {}).setdefault(sk, {}).update(attrs)
            for key, member in members:
                self._members.setdefault(key, set()).add(member)
            self._dedup.update(dedup)  # a later expiry of the same id replaces the earlier
            for key, blob in states.items():
                if blob is None:
                    self._states.pop(key, None)
                else:
                    self._states[key] = blob
            if offsets:
                self._offsets.setdefault(consumer, {}).update(offsets)

    def offsets(self, consumer: str) -> dict[int, int]:
        """See :meth:`RealtimeStore.offsets`."""
        with self._lock:
            return dict(self._offsets.get(consumer, {}))

    def dedup_expiries(self, event_ids: Sequence[str]) -> dict[str, datetime]:
        """See :meth:`RealtimeStore.dedup_expiries`.

        Like SQLite, a dedup key stays until :meth:`expire_dedup` removes it; the store
        reads no clock.
        """
        with self._lock:
            return {e: self._dedup[e] for e in event_ids if e in self._dedup}

    def states(self, keys: Iterable[str]) -> dict[str, bytes]:
        """See :meth:`RealtimeStore.states`."""
        with self._lock:
            return {key: self._states[key] for key in keys if key in self._states}

    def state_keys(self, prefix: str) -> list[str]:
        """See :meth:`RealtimeStore.state_keys`."""
        with self._lock:
            return sorted(key for key in self._states if key.startswith(prefix))

    def item(self, pk: str, sk: str) -> dict[str, float]:
        """See :meth:`RealtimeStore.item`."""
        with self._lock:
            return dict(self._items.get(pk, {}).get(sk, {}))

    def items(self, pk: str, sk_prefix: str = "") -> list[tuple[str, dict[str, float]]]:
        """See :meth:`RealtimeStore.items`."""
        with self._lock:
            under = self._items.get(pk, {})
            return [(sk, dict(under[sk])) for sk in sorted(under) if sk.startswith(sk_prefix)]

    def scan(self, pk_prefix: str, sk: str) -> list[tuple[str, dict[str, float]]]:
        """See :meth:`RealtimeStore.scan`."""
        with self._lock:
            return [
                (pk, dict(self._items[pk][sk]))
                for pk in sorted(self._items)
                if pk.startswith(pk_prefix) and sk in self._items[pk]
            ]

    def count_members(self, set_key: str) -> int:
        """See :meth:`RealtimeStore.count_members`."""
        with self._lock:
            return len(self._members.get(set_key, ()))

    def expire_dedup(self, before: datetime) -> int:
        """See :meth:`RealtimeStore.expire_dedup`."""
        before = _aware(before)
        with self._lock:
            expired = [event_id for event_id, at in self._dedup.items() if at < before]
            for event_id in expired:
                del self._dedup[event_id]
        return len(expired)

    def close(self) -> None:
        """Nothing to release; the data stays readable."""


def _text(value: object) -> str:
    """``value`` if it is a string a store key can be (:func:`checked_text`)."""
    return checked_text(value, "store key")


def _amount(value: object, pk: str, sk: str, attr: str) -> float:
    try:
        amount = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as exc:
        raise StoreError(f"amount {value!r} for {pk}/{sk}.{attr} is not a number") from exc
    if math.isnan(amount):
        raise StoreError(f"amount for {pk}/{sk}.{attr} is NaN")
    return amount


def _aware(value: object) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise StoreError(f"store timestamps must be timezone-aware datetimes, got {value!r}")
    return value


def _blob(key: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise StoreError(f"state {key!r} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _int64(value: object, what: str) -> int:
    if not isinstance(value, int) or not _INT64_MIN <= value <= _INT64_MAX:
        raise StoreError(f"{what} {value!r} is not a 64-bit integer")
    return value
