"""The dedup keys of the DynamoDB store (:class:`DedupIndex`, a base of
:class:`~playpulse.store.dynamodb.DynamoDBStore`).

Dedup keys: one immutable item per applied batch (``~pp#DEDUP`` / ``<stamp>#<batch>``)
holding its keys as 8-byte BLAKE2b fingerprints with their expiry (16 bytes a key,
zlib-compressed), never one item per event. The store object keeps an in-memory index
(fingerprint -> expiry), loaded in full when first needed and then by querying the
items stamped since the last load (less a 60 s look-back for concurrent writers).
Memory: about 150 bytes per key held in CPython (10 million keys: about 1.5 GB). Two
keys share a fingerprint with probability about n^2 / 2^65 (n keys held). Later
writes of a key win (by stamp). :meth:`DedupIndex.expire_dedup` records
``(stamp, before)`` in a META item: keys written before the stamp that expire before
``before`` are gone for every reader. The TTL (``expires_at``) of a dedup item is the
later of its keys' last expiry and its write time, plus 2 days (the processor forgets
keys a day after they expire; a key may outlive its expiry, as the contract allows,
but not by more than that: beyond the interface's "until expire_dedup", the one
wall-clock rule of the store). Readers ignore items past their TTL whether or not
DynamoDB has deleted them yet (it deletes late), so every reader sees the same keys,
and a cold start loads about the dedup window (7 days) plus 2 days of items.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from playpulse.errors import StoreError
from playpulse.store.dynamodb_batch import Prepared
from playpulse.store.dynamodb_calls import ConditionFailed, TableCalls
from playpulse.store.dynamodb_items import (
    DEDUP_OPS_SK,
    DEDUP_PK,
    DEDUP_RECORD,
    META_PK,
    fingerprint,
    from_us,
    to_us,
)
from playpulse.store.dynamodb_states import LOOKBACK_US, STAMP_WIDTH, stamped_since

_DEDUP_KEYS_PER_ITEM = 20_000  # 16 bytes each before compression: < 350 KB
_DEDUP_TTL_MARGIN_US = timedelta(days=2) // timedelta(microseconds=1)


class DedupIndex(TableCalls):
    """The dedup items and this store object's in-memory index of them (the module
    docstring). The store's ``__init__`` sets the attributes below."""

    _index_lock: threading.Lock
    _index: dict[int, tuple[int, str]]  # fingerprint -> (expiry us, stamp sk of its item)
    _loaded: dict[str, int]
    _loaded_upto: int
    _full: bool
    _ops: list[tuple[str, int]]

    def _put_dedup(self, prep: Prepared) -> None:
        """The batch's immutable dedup item(s) (idempotent: deterministic keys)."""
        records = prep.dedup
        step = _DEDUP_KEYS_PER_ITEM * DEDUP_RECORD.size
        expiries = [us for _, us in DEDUP_RECORD.iter_unpack(records)]
        ttl_us = max(max(expiries), prep.stamp) + _DEDUP_TTL_MARGIN_US
        ttl_s = min(ttl_us // 1_000_000, 253_402_300_799)  # TTL beyond 9999 is useless
        requests = []
        for n, start in enumerate(range(0, len(records), step)):
            sk = f"{prep.stamp:0{STAMP_WIDTH}d}#{prep.batch_id}#{n:03d}"
            item = {
                "pk": {"S": DEDUP_PK},
                "sk": {"S": sk},
                "d": {"B": zlib.compress(records[start : start + step], 1)},
                "expires_at": {"N": str(ttl_s)},
            }
            requests.append({"PutRequest": {"Item": item}})
        self._batch_write(requests)
        with self._index_lock:
            for request in requests:
                self._load_dedup_item(request["PutRequest"]["Item"])

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
                    out[key] = from_us(hit[0])
        return out

    def _refresh_index(self) -> None:
        """Load the dedup items written since the last load and the expire ops."""
        with self._index_lock:
            ops_item = self._get_item(META_PK, DEDUP_OPS_SK)
            ops = _decode_ops(ops_item)
            if ops != self._ops:
                self._ops = ops
                self._apply_ops(ops)
            since = stamped_since(DEDUP_PK, self._loaded_upto if self._full else None)
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
        for fp, expiry in DEDUP_RECORD.iter_unpack(zlib.decompress(item["d"]["B"])):
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
        before_us = to_us(before)
        self._refresh_index()
        cut = f"{self._next_stamp():0{STAMP_WIDTH}d}"
        key = {"pk": {"S": META_PK}, "sk": {"S": DEDUP_OPS_SK}}
        for _ in range(100):
            item = self._get_item(META_PK, DEDUP_OPS_SK)
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
            except ConditionFailed:
                continue
            with self._index_lock:
                self._ops = kept
                return self._apply_ops([(cut, before_us)])
        raise StoreError(f"expire_dedup on {self.table!r}: too many concurrent writers")


def _decode_ops(item: dict[str, Any]) -> list[tuple[str, int]]:
    raw = item.get("ops", {}).get("S")
    return [(str(c), int(b)) for c, b in json.loads(raw)] if raw else []
