"""Low-level calls of the DynamoDB store on its table (:class:`TableCalls`, a base of
:class:`~playpulse.store.dynamodb.DynamoDBStore`), and the client and error helpers the
store modules share.

Throttling (ProvisionedThroughputExceeded, ThrottlingException, RequestLimitExceeded,
TransactionConflict, and BatchWriteItem's UnprocessedItems) is retried with exponential
backoff beyond the SDK's own retries; other failures raise
:class:`~playpulse.errors.StoreError`. :attr:`TableCalls.write_units` counts the write
capacity units DynamoDB reported (``ReturnConsumedCapacity=TOTAL``);
:attr:`TableCalls.estimated_write_units` the units computed from item sizes (1 per
started KB, per item written and per index it is projected into), for endpoints that do
not report them exactly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from playpulse.aws.clients import error_code
from playpulse.errors import ConfigError, StoreError
from playpulse.store.dynamodb_items import (
    DEDUP_PK,
    INTERNAL,
    JOURNAL_PK,
    KEYS_PK,
    OFFSETS_PK,
    SET_PK,
    VENDOR_KEY,
)
from playpulse.store.dynamodb_states import COMMIT_PK, PACK_PK

T = TypeVar("T")

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
#: Worker threads of a store object (item writes of a batch, BatchGetItem chunks).
WORKERS = 8


class ConditionFailed(StoreError):
    """A conditional write found its condition false (caught where expected)."""


class BadType(StoreError):
    """DynamoDB refused an operand's type or range (the slow path follows)."""


def default_client() -> Any:
    """The default boto3 DynamoDB client (:func:`playpulse.aws.clients.client`, which
    honours ``AWS_ENDPOINT_URL``); a configuration problem raises :class:`StoreError`."""
    from playpulse.aws.clients import client

    try:
        return client("dynamodb")
    except ConfigError as exc:
        raise StoreError(str(exc)) from exc


def error_reason(exc: BaseException) -> str:
    """One line saying why a call failed: the error code and the first line of the
    message."""
    code = error_code(exc)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{code}: {text}" if code and code not in text else text


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
        (SET_PK, "members"),
        (KEYS_PK, "key registry"),
        (PACK_PK, "states"),
        (COMMIT_PK, "commits"),
        (JOURNAL_PK, "journal"),
        (DEDUP_PK, "dedup"),
        (OFFSETS_PK, "offsets"),
        (INTERNAL, "meta"),
    ):
        if pk.startswith(prefix):
            return kind
    return "counters"


def in_chunks(seq: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``seq`` in consecutive slices of ``size`` items (the last may be shorter)."""
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


class TableCalls:
    """The calls of a store object on its DynamoDB table ``table``: retries, write unit
    counts, batched writes and reads, paginated queries and the worker pool. The store's
    ``__init__`` sets the attributes below."""

    table: str
    _ddb: Any
    _pool: ThreadPoolExecutor
    _lock: threading.Lock
    _last_stamp: int
    write_units: float
    estimated_write_units: int
    write_requests: int
    estimated_units_by_kind: dict[str, int]

    def _call(self, op: str, **kwargs: Any) -> Any:
        """Call ``op``, retrying throttling; ConditionalCheckFailed -> ConditionFailed,
        a refused operand type or range -> BadType, anything else -> StoreError."""
        method = getattr(self._ddb, op)
        delay = 0.05
        for attempt in range(_RETRIES + 1):
            try:
                response = method(**kwargs)
            except Exception as exc:
                code = error_code(exc)
                if code == "ConditionalCheckFailedException":
                    raise ConditionFailed(f"{op} on {self.table!r}: condition false") from exc
                if code == "ValidationException" and (
                    "incorrect data type" in str(exc)
                    or "overflow" in str(exc).lower()
                    or "precision" in str(exc).lower()
                    or "underflow" in str(exc).lower()
                ):
                    raise BadType(str(exc)) from exc
                if code in _THROTTLED and attempt < _RETRIES:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if code == "ResourceNotFoundException":
                    raise StoreError(
                        f"DynamoDB {op} on table {self.table!r} failed: the table does not exist"
                    ) from exc
                raise StoreError(
                    f"DynamoDB {op} on table {self.table!r} failed: {error_reason(exc)}"
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
        for chunk in in_chunks(requests, 25):
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
        chunks = list(in_chunks(keys, 100))
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

    def _get_item(self, pk: str, sk: str) -> dict[str, Any]:
        response = self._call(
            "get_item",
            TableName=self.table,
            Key={"pk": {"S": pk}, "sk": {"S": sk}},
            ConsistentRead=True,
        )
        return dict(response.get("Item", {}))
