"""The redo journal of the DynamoDB store (:class:`JournalRedo`, a base of
:class:`~playpulse.store.dynamodb.DynamoDBStore`): steps 2 (journal chunks and marker)
to 5 of an apply, the redo of pending journals after a crash, and the consumers'
offsets items. :mod:`playpulse.store.dynamodb` describes the procedure."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from datetime import timedelta

from playpulse.errors import StoreError
from playpulse.store.dynamodb_batch import Prepared
from playpulse.store.dynamodb_calls import ConditionFailed, in_chunks
from playpulse.store.dynamodb_counters import CounterWrites
from playpulse.store.dynamodb_dedup import DedupIndex
from playpulse.store.dynamodb_items import JOURNAL_PK, OFFSETS_PK, SET_PK, from_us, position_text
from playpulse.store.dynamodb_states import COMMIT_PK, STAMP_WIDTH, StatePacks

_CHUNK_BYTES = 350_000
_JOURNAL_TTL = timedelta(days=30)  # journal chunks: a marker pending longer cannot be redone


class JournalRedo(CounterWrites, DedupIndex):
    """Journaling a batch and redoing journals (the module docstring). The store's
    ``__init__`` sets ``_packs``."""

    _packs: StatePacks

    def _commit_packs(self, prep: Prepared, fenced: bool) -> None:
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

    def _journal(self, prep: Prepared) -> None:
        """Steps 2: the batch's chunks, then its marker."""
        data = prep.encode()
        pk = JOURNAL_PK + prep.consumer
        ttl = {"N": str(int((from_us(prep.stamp) + _JOURNAL_TTL).timestamp()))}
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
        pk = JOURNAL_PK + consumer
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
            self._redo(Prepared.decode(data))

    def _redo(self, prep: Prepared, *, fenced: bool = True) -> None:
        """Steps 3-5 for a journaled batch (idempotent; also the crash recovery)."""
        # Every write of step 3 is independent of the others: one round of tasks on the
        # pool (each a leaf: it never waits on the pool itself).
        tasks: list[Callable[[], None]] = []
        tasks += [functools.partial(self._add, prep, c, fenced) for c in prep.counters]
        members = [
            {"PutRequest": {"Item": {"pk": {"S": SET_PK + k}, "sk": {"S": "m" + m}}}}
            for k, m in prep.members
        ]
        tasks += [functools.partial(self._batch_write, list(c)) for c in in_chunks(members, 25)]
        if prep.dedup:
            tasks.append(functools.partial(self._put_dedup, prep))
        self._parallel(lambda task: task(), tasks)
        self._commit_packs(prep, fenced)
        if fenced:
            self._move_offsets(prep)
            key = {"pk": {"S": JOURNAL_PK + prep.consumer}, "sk": {"S": f"M#{prep.batch_id}"}}
            self._write("delete_item", key, Key=key)

    def _move_offsets(self, prep: Prepared) -> None:
        """Step 4: the consumer's offsets, forward only (per partition on a conflict)."""
        if not prep.offsets:
            return
        key = {"pk": {"S": OFFSETS_PK}, "sk": {"S": "c" + prep.consumer}}
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
        except ConditionFailed:
            for part in items:  # some partitions are ahead already (a zombie, a redo)
                with contextlib.suppress(ConditionFailed):
                    update([part])

    def _read_offsets(self, consumer: str) -> dict[int, int]:
        item = self._get_item(OFFSETS_PK, "c" + consumer)
        return {
            int(name[1:]): int(raw["S"])
            for name, raw in item.items()
            if name.startswith("o") and name[1:].isdigit()
        }
