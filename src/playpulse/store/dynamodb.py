"""The real-time store on Amazon DynamoDB: ``dynamodb://TABLE`` (one table).

Table: keys ``pk`` / ``sk``, TTL on ``expires_at``, the global secondary indexes
``by_sk`` (empty) and ``by_vendor``; see :mod:`~playpulse.store.dynamodb_table`
(:func:`create_table`).

Items (``~pp#`` starts every internal partition key; a counter key starting with it is
refused):

- counters: ``pk`` / ``sk`` as the processor names them (``CONTENT#<id>`` / ``DAY#<date>``,
  ``VENDOR#<id>`` / ``METRICS#<date>`` ...), one plain Number attribute per measure,
  added to with ``UpdateItem ... ADD`` (exact decimal sums; values DynamoDB cannot
  hold are kept as Strings: see :mod:`~playpulse.store.dynamodb_items`).
  Attribute names ``pk``, ``sk``, ``expires_at``, ``vendor_pk`` and any starting with
  ``_`` are reserved.
- fences: every counter item carries, per (consumer, partition) that wrote it,
  ``_f#<consumer>#<partition>``, the position of the last batch applied to it (a
  64-digit string); each write is conditional on it, so a batch applied twice adds
  nothing the second time: see :mod:`~playpulse.store.dynamodb_counters`.
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
  coming; while none come, :meth:`DynamoDBStore.keep_states_alive` does (``playpulse
  up`` calls it hourly while idle, ``run-processor`` and the stack's rule daily).
- dedup keys: one immutable item per applied batch (``~pp#DEDUP`` / ``<stamp>#<batch>``)
  holding its keys as 8-byte fingerprints with their expiry, and the store object's
  in-memory index of them: see :mod:`~playpulse.store.dynamodb_dedup`.
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

Throttling is retried with backoff, other failures raise
:class:`~playpulse.errors.StoreError`, and write units are counted
(:attr:`DynamoDBStore.write_units`, :attr:`DynamoDBStore.estimated_write_units`): see
:mod:`~playpulse.store.dynamodb_calls`.

GSI reads are eventually consistent on DynamoDB: :meth:`~DynamoDBStore.vendor_items` may
miss a write of the last second; every other read is strongly consistent.

The code: :mod:`~playpulse.store.dynamodb_items` (key prefixes, wire encoding),
:mod:`~playpulse.store.dynamodb_batch` (the validated batch the journal keeps),
:mod:`~playpulse.store.dynamodb_calls` (the table's low-level calls),
:mod:`~playpulse.store.dynamodb_table` (creating the table),
:mod:`~playpulse.store.dynamodb_dedup` (the dedup index),
:mod:`~playpulse.store.dynamodb_counters` (fenced counter writes),
:mod:`~playpulse.store.dynamodb_journal` (the redo journal, offsets) and
:mod:`~playpulse.store.dynamodb_states` (state packs); :class:`DynamoDBStore` here.
"""

from __future__ import annotations

import json
import threading
import uuid
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from playpulse.aws.clients import error_code
from playpulse.errors import StoreError
from playpulse.store.base import RealtimeStore, StoreBatch, checked_text, replayed
from playpulse.store.dynamodb_batch import Prepared, prepare
from playpulse.store.dynamodb_calls import WORKERS, default_client, error_reason, in_chunks
from playpulse.store.dynamodb_items import (
    INTERNAL,
    KEYS_PK,
    LAYOUT_SK,
    META_PK,
    OFFSETS_PK,
    OLD_STATE_PK,
    RESERVED,
    SET_PK,
    STATE_SHARDS,
    VENDOR_KEY,
    fingerprint,
    number_value,
    position_text,
)
from playpulse.store.dynamodb_journal import JournalRedo
from playpulse.store.dynamodb_states import (
    CARRY_AGE,
    COMMIT_PK,
    PACK_PK,
    PACK_TTL,
    STAMP_WIDTH,
    PackIO,
    StatePacks,
)
from playpulse.store.dynamodb_table import INDEXES, TTL_ATTRIBUTE, create_table, table_properties

__all__ = [
    "INDEXES",
    "TTL_ATTRIBUTE",
    "VENDOR_KEY",
    "DynamoDBStore",
    "create_table",
    "fingerprint",
    "position_text",
    "table_properties",
]

_KNOWN_MEMBERS = 300_000  # set members a store object remembers having put


# --- the store -----------------------------------------------------------------------------


class DynamoDBStore(JournalRedo, RealtimeStore):
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
        self._ddb = client if client is not None else default_client()
        if create:
            create_table(table, client=self._ddb)
        try:
            self._ddb.describe_table(TableName=table)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise StoreError(
                    f"DynamoDB table {table!r} does not exist (create it with "
                    "'playpulse aws deploy' or playpulse.store.dynamodb.create_table)"
                ) from exc
            raise StoreError(
                f"opening DynamoDB table {table!r} failed: {error_reason(exc)}"
            ) from exc
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"ddb-{table}")
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
        layout = self._get_item(META_PK, LAYOUT_SK)
        #: How many partition keys state items spread over (the table's META LAYOUT).
        self.state_shards = int(layout.get("state_shards", {}).get("N", STATE_SHARDS))
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
                ExpressionAttributeValues={":pk": {"S": f"{OLD_STATE_PK}{shard}"}},
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

    # --- apply ---

    def apply(self, batch: StoreBatch) -> None:
        """See :meth:`RealtimeStore.apply` and the module docstring (a redo journal and
        fenced item writes)."""
        prep = prepare(batch, self._next_stamp())
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

    def keep_states_alive(self) -> int:
        """See :meth:`RealtimeStore.keep_states_alive`: the live states of pack items
        older than ``carry_age`` carried forward, as an apply carries them, into pack
        items of their own made visible by a commit item (no offsets, counters or
        journal). Without it a table that gets no batch for ``pack_ttl - carry_age``
        (8 days) would lose its states to the TTL. The number of states carried."""
        stamp = self._next_stamp()
        batch_id = f"{stamp:0{STAMP_WIDTH}d}-keepalive-{uuid.uuid4().hex[:8]}"
        prep = Prepared("keep-alive", batch_id, stamp)  # the consumer names no offsets
        self._write_packs(prep)
        self._commit_packs(prep, fenced=False)
        return sum(len(item.entries) for item in prep.pack_items)

    def _write_packs(self, prep: Prepared) -> None:
        """Step 2a: the batch's states, and the live states of pack items older than
        ``carry_age``, in write-once pack items with a TTL (invisible until step 3
        commits them; :meth:`StatePacks.write`)."""
        written = self._packs.write(prep.stamp, prep.batch_id, prep.states)
        if written is not None:
            prep.packs = [item.ref for item in written]
            prep.pack_items = written
            prep.pack_expires = written[0].expires

    def _register_keys(self, prep: Prepared) -> None:
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
                        "pk": {"S": KEYS_PK + sk},
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

    # --- replace ---

    def replace(self, batch: StoreBatch) -> None:
        """See :meth:`RealtimeStore.replace`; on DynamoDB it is not atomic for readers nor
        across a crash (module docstring): meant for an offline reprocess."""
        prep = prepare(batch, self._next_stamp())
        deletes = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "ProjectionExpression": "pk, sk",
            "FilterExpression": "NOT begins_with(pk, :internal) OR begins_with(pk, :set) "
            "OR begins_with(pk, :pack) OR pk = :commit OR begins_with(pk, :keys)",
            "ExpressionAttributeValues": {
                ":internal": {"S": INTERNAL},
                ":keys": {"S": KEYS_PK},
                ":set": {"S": SET_PK},
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
        self._parallel(lambda chunk: self._batch_write(list(chunk)), list(in_chunks(deletes, 25)))
        self._packs.reset()
        with self._keys_lock:
            self._known_keys.clear()
            self._known_members.clear()
        self._write_packs(prep)
        self._register_keys(prep)
        self._redo(prep, fenced=False)
        if prep.offsets:
            key = {"pk": {"S": OFFSETS_PK}, "sk": {"S": "c" + prep.consumer}}
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
        consumer = checked_text(consumer, "consumer name")
        self._finish_journals(consumer, None)
        return self._read_offsets(consumer)

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
        if pk.startswith(INTERNAL):
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
            if attrs and not pk.startswith(INTERNAL):
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
            if pk.startswith(pk_prefix) and not pk.startswith(INTERNAL)
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
            ExpressionAttributeValues={":pk": {"S": KEYS_PK + sk}},
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
            "ExpressionAttributeValues": {":pk": {"S": SET_PK + set_key}},
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


def _user_attrs(item: dict[str, Any]) -> dict[str, float]:
    return {
        name: number_value(raw)
        for name, raw in item.items()
        if name not in RESERVED and not name.startswith("_")
    }


def _storable(key: str) -> bool:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
