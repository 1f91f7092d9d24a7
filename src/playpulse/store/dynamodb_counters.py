"""Fenced counter writes of the DynamoDB store (:class:`CounterWrites`, a base of
:class:`~playpulse.store.dynamodb.DynamoDBStore`): step 3 of an apply for counters (see
:mod:`playpulse.store.dynamodb`), ``UpdateItem ... ADD`` with a read-modify-write for
values DynamoDB cannot add (:mod:`~playpulse.store.dynamodb_items`).

Fences: every counter item carries, per (consumer, partition) that wrote it,
``_f#<consumer>#<partition>`` = the position of the last batch applied to it, as a
64-digit zero-padded decimal string (Kinesis sequence numbers have 56 digits; DynamoDB
numbers only 38). Each write is conditional on "absent or below this batch's
position", so a batch applied twice, in whole or in part, adds nothing the second time.
Positions must be integers in [0, 10**64).
"""

from __future__ import annotations

import math
from typing import Any

from playpulse.errors import StoreError
from playpulse.store.dynamodb_batch import Prepared
from playpulse.store.dynamodb_calls import BadType, ConditionFailed, TableCalls
from playpulse.store.dynamodb_items import (
    VENDOR_KEY,
    is_special,
    number,
    number_sum,
    number_value,
    position_text,
)


class CounterWrites(TableCalls):
    """The fenced counter writes of a store object (the module docstring)."""

    def _check_sums(self, prep: Prepared) -> None:
        """Refuse, before writing, an infinite amount added to the opposite infinity."""
        for pk, sk, attrs in prep.counters:
            infinite = {a: v for a, v in attrs.items() if math.isinf(v)}
            if not infinite:
                continue
            stored = self._get_item(pk, sk)
            for attr, amount in infinite.items():
                if attr in stored and math.isnan(number_value(stored[attr]) + amount):
                    raise StoreError(
                        f"adding {amount} to {pk}/{sk}.{attr} gives NaN "
                        f"(it holds {number_value(stored[attr])})"
                    )

    def _fence(self, prep: Prepared) -> tuple[list[str], list[str], dict[str, str], dict[str, Any]]:
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

    def _applied(self, item: dict[str, Any], prep: Prepared) -> bool:
        """Whether ``item`` carries the fence of ``prep`` (written by it or later)."""
        if not prep.offsets:
            return bool(item.get(f"_j#{prep.consumer}", {}).get("S") == prep.batch_id)
        for p, o in prep.offsets.items():
            fence = item.get(f"_f#{prep.consumer}#{p}", {}).get("S")
            if fence is None or fence < position_text(o):
                return False
        return True

    def _add(
        self, prep: Prepared, counter: tuple[str, str, dict[str, float]], fenced: bool
    ) -> None:
        pk, sk, attrs = counter
        if any(is_special(v) for v in attrs.values()):
            self._read_modify_write(prep, counter, fenced)
            return
        conds, sets, names, values = self._fence(prep) if fenced else ([], [], {}, {})
        adds = []
        for i, (attr, amount) in enumerate(attrs.items()):
            names[f"#a{i}"] = attr
            values[f":a{i}"] = number(amount)
            adds.append(f"#a{i} :a{i}")
        _vendor_attribute(pk, sets, names, values)
        key = {"pk": {"S": pk}, "sk": {"S": sk}}
        size_item = {**key, **{a: number(v) for a, v in attrs.items()}}
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
        except ConditionFailed:
            return  # applied already
        except BadType:
            self._read_modify_write(prep, counter, fenced)

    def _read_modify_write(
        self, prep: Prepared, counter: tuple[str, str, dict[str, float]], fenced: bool
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
                values[f":a{i}"] = number_sum(old, amount)
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
            except ConditionFailed:
                continue  # raced with another writer: read again
        raise StoreError(f"updating {pk}/{sk} in {self.table!r}: too many concurrent writers")


def _vendor_attribute(
    pk: str, sets: list[str], names: dict[str, str], values: dict[str, Any]
) -> None:
    """Add to an update expression's parts the attribute that puts a ``VENDOR#`` item in
    the ``by_vendor`` index."""
    if pk.startswith("VENDOR#"):
        sets.append("#v = :vpk")
        names["#v"] = VENDOR_KEY
        values[":vpk"] = {"S": pk}
