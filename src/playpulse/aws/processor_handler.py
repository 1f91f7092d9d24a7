"""The processor as an AWS Lambda function on a Kinesis event source mapping.

Lambda calls :func:`handler` with a batch of one shard's records (the Kinesis event
shape: ``{"Records": [{"kinesis": {"data", "sequenceNumber", "partitionKey",
"approximateArrivalTimestamp"}, "eventID": "<shard id>:<sequence number>", ...}]}``).
:class:`KinesisBatchHandler` runs the same :class:`~playpulse.processor.Processor` as
``playpulse up`` on it, so the numbers are the embedded default's, and answers with
``{"batchItemFailures": [...]}`` (the mapping's ``ReportBatchItemFailures``):

- **Redelivery changes nothing.** Records at or past the shard's applied position (kept
  by the real-time store per consumer and partition) are processed; older ones were
  applied already and are skipped, so a batch delivered twice, or retried from a failed
  record, adds nothing. A warm container whose in-memory state of the shard is not the
  store's (another container processed it since) reloads it from the store first.
- **A poisoned record fails only itself.** A record that cannot be read as an event (not
  base64, not an event playpulse stored) is reported as the batch's failure, after the
  records before it were processed: Lambda retries from it and, once its retries are
  exhausted, sends it to the mapping's on-failure destination (the dead-letter queue)
  and goes on after it.
- **An error of the processor** (the store or lake unreachable) raises: Lambda retries
  the batch (bisecting it); nothing of it was applied, or all of it (the store applies a
  batch atomically in effect).

The stack also calls it once a day on an EventBridge schedule (an event with
``"source": "aws.events"`` and ``"detail-type": "Scheduled Event"``): then it only keeps
the store's states alive (:meth:`~playpulse.store.base.RealtimeStore.keep_states_alive`:
DynamoDB's state packs would expire after 8 days without a batch) and answers
``{"statesCarried": n}``.

The handler reads its settings from the environment (``PLAYPULSE_STREAM_URL``,
``PLAYPULSE_STORE_URL``, ``PLAYPULSE_LAKE_URL``, ...), once per container.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from playpulse.config import Settings
from playpulse.errors import EventValidationError
from playpulse.events.codec import decode_stored
from playpulse.processor.pipeline import LakeSink, Processor, ProcessorOptions, processing_gc
from playpulse.quarantine.store import QuarantineStore
from playpulse.store.base import RealtimeStore
from playpulse.stream.base import Batch, EventStream, Record

log = logging.getLogger("playpulse.aws.processor")


class MalformedEventError(ValueError):
    """A Lambda event that is not a Kinesis batch of one shard (a handler of another
    event source, a test sending the wrong shape)."""


@dataclass(frozen=True, slots=True)
class KinesisItem:
    """One record of a Kinesis event: its ``sequence_number`` (the batch item failure's
    ``itemIdentifier``), and the stream record, or why it cannot be one (``problem``)."""

    sequence_number: str
    record: Record | None
    problem: str | None = None


def shard_of(event: Mapping[str, Any]) -> str:
    """The shard id of a Kinesis event's records (``eventID`` is
    ``"<shard id>:<sequence number>"``). Raises :class:`MalformedEventError` when the
    event has no records or mixes shards."""
    records = event.get("Records")
    if not isinstance(records, list) or not records:
        raise MalformedEventError("a Kinesis event has a non-empty 'Records' list")
    shards = set()
    for item in records:
        event_id = item.get("eventID") if isinstance(item, Mapping) else None
        if not isinstance(event_id, str) or ":" not in event_id:
            raise MalformedEventError(f"record without an eventID '<shard>:<seq>': {item!r:.200}")
        shards.add(event_id.split(":", 1)[0])
    if len(shards) != 1:
        raise MalformedEventError(f"a Kinesis batch comes from one shard, not {sorted(shards)}")
    return shards.pop()


def parse_items(event: Mapping[str, Any], partition: int) -> list[KinesisItem]:
    """The records of a Kinesis event as stream records of ``partition``, in order.

    A record whose fields cannot be read (no sequence number is a
    :class:`MalformedEventError`; data not base64, a bad timestamp) comes back with
    ``record=None`` and the ``problem``."""
    items = []
    for raw in event["Records"]:
        kinesis = raw.get("kinesis") if isinstance(raw, Mapping) else None
        seq = kinesis.get("sequenceNumber") if isinstance(kinesis, Mapping) else None
        if not isinstance(seq, str) or not seq.isdigit():
            raise MalformedEventError(f"record without a sequenceNumber: {raw!r:.200}")
        assert isinstance(kinesis, Mapping)
        try:
            value = base64.b64decode(kinesis.get("data", ""), validate=True)
            arrived = datetime.fromtimestamp(float(kinesis["approximateArrivalTimestamp"]), UTC)
            key = str(kinesis.get("partitionKey", ""))
        except (binascii.Error, ValueError, TypeError, KeyError, OverflowError) as exc:
            items.append(KinesisItem(seq, None, f"unreadable Kinesis record: {exc}"))
            continue
        items.append(KinesisItem(seq, Record(partition, int(seq), key, value, arrived)))
    return items


def is_scheduled(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` is an EventBridge scheduled event (``"source": "aws.events"``,
    ``"detail-type": "Scheduled Event"``), not a Kinesis batch."""
    return event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"


def first_poisoned(items: Sequence[KinesisItem]) -> tuple[int, str] | None:
    """The index of the first item that is not an event playpulse can process, and why;
    ``None`` when every item is one."""
    for i, item in enumerate(items):
        if item.record is None:
            return i, item.problem or "unreadable Kinesis record"
        try:
            decode_stored(item.record.value)
        except EventValidationError as exc:
            return i, f"{exc.reason}: {exc}"
    return None


class KinesisBatchHandler:
    """The processor for Lambda batches of one shard each (see the module docstring).

    One per warm container: it keeps the processor's in-memory state between batches,
    and checks it against the store before each batch. ``__call__(event, context)``
    returns ``{"batchItemFailures": [{"itemIdentifier": "<sequence number>"}]}``, or
    ``{"statesCarried": n}`` for a scheduled event (:func:`is_scheduled`).
    Raises :class:`MalformedEventError` for an event that is not a Kinesis batch, and
    what the store, lake or quarantine raise (Lambda then retries the batch).
    """

    def __init__(
        self,
        stream: EventStream,
        store: RealtimeStore,
        lake: LakeSink | None,
        quarantine: QuarantineStore,
        options: ProcessorOptions | None = None,
    ) -> None:
        self.stream = stream
        self.store = store
        self.options = options or ProcessorOptions()
        self.processor = Processor(stream, store, lake, quarantine, self.options)
        # Partition -> the applied position this container's memory of it matches.
        self._memory_at: dict[int, int | None] = {}
        self._lock = threading.Lock()

    def __call__(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        with self._lock:
            return self._handle(event)

    def _handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        if is_scheduled(event):
            carried = self.store.keep_states_alive()
            log.info("scheduled keep-alive: %d states carried forward", carried)
            return {"statesCarried": carried}
        partition = self.stream.partition_of_shard(shard_of(event))
        items = parse_items(event, partition)
        applied = self.store.offsets(self.options.consumer).get(partition)
        fresh = [
            i for i in items if applied is None or i.record is None or i.record.offset >= applied
        ]
        poisoned = first_poisoned(fresh)
        todo = fresh if poisoned is None else fresh[: poisoned[0]]
        if todo:
            if partition not in self._memory_at or self._memory_at[partition] != applied:
                # Another container processed the shard since (or none did here yet):
                # load its open plays and sessions from the store, drop lake files of a
                # batch never applied.
                self.processor.on_assign([partition])
            batch = Batch(partition, [i.record for i in todo if i.record is not None])
            try:
                with processing_gc():
                    self.processor.process_batch(batch)
            except Exception:
                self._memory_at.pop(partition, None)
                raise
            self._memory_at[partition] = batch.next_offset
        if poisoned is None:
            return {"batchItemFailures": []}
        index, why = poisoned
        log.error(
            "shard %s record %s cannot be processed (%s): reported as failed",
            partition,
            fresh[index].sequence_number,
            why,
        )
        return {"batchItemFailures": [{"itemIdentifier": fresh[index].sequence_number}]}

    def close(self) -> None:
        """Leave the processor (the stream, store, lake and quarantine stay open)."""
        self.processor.close()


def from_settings(settings: Settings) -> KinesisBatchHandler:
    """A handler over the stream, store and lake that ``settings`` name, with the
    Lambda quarantine (records that cannot be decoded go to S3 beside an ``s3://`` lake
    or to ``PLAYPULSE_QUARANTINE_URL``, and to the log: see
    :mod:`playpulse.aws.quarantine`). Raises what opening them raises
    (:class:`~playpulse.errors.ConfigError`, ``StreamError``, ``StoreError``)."""
    # Imported here: the factories pull in every backend's module.
    from playpulse.aws.quarantine import LambdaQuarantine, S3QuarantineSink, quarantine_url
    from playpulse.lake.factory import open_lake
    from playpulse.store.factory import open_store
    from playpulse.stream.factory import open_stream

    url = quarantine_url(settings)
    sink = S3QuarantineSink(url) if url else None
    return KinesisBatchHandler(
        open_stream(settings),
        open_store(settings),
        open_lake(settings),
        LambdaQuarantine.for_lambda(settings, sink),
    )


_handler: KinesisBatchHandler | None = None
_handler_lock = threading.Lock()


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point (``playpulse.aws.processor_handler.handler``): one
    :class:`KinesisBatchHandler` per container, built from the environment's settings at
    the first call (``data_dir`` defaults to ``<tmp>/playpulse``, a Lambda's only
    writable folder)."""
    global _handler
    with _handler_lock:
        if _handler is None:
            from playpulse.aws.quarantine import lambda_settings

            _handler = from_settings(lambda_settings())
    return _handler(event, context)
