"""``playpulse aws run-processor``: what Lambda's Kinesis event source mapping does, for
machines where Lambda cannot run (moto cannot invoke functions without Docker; a laptop).

:class:`EventSourceRunner` polls each shard of a stream and calls a handler with the
exact event Lambda would send (:func:`kinesis_event`), with the mapping's documented
behaviour (AWS Lambda developer guide, "Using Lambda with Kinesis" and "Configuring
partial batch response"):

- batches of at most ``batch_size`` records of one shard, in order;
- ``ReportBatchItemFailures``: the handler's ``batchItemFailures`` name failed records;
  the shard is checkpointed before the lowest one and retried from it (an empty or
  unknown ``itemIdentifier`` fails the whole batch);
- a handler error retries the batch, bisected (``BisectBatchOnFunctionError``) down to
  one record;
- after ``max_retries`` retries of the same record (``MaximumRetryAttempts``), the
  on-failure record (Lambda's ``KinesisBatchInfo`` shape, plus the records' data, so
  nothing is lost) goes to the dead-letter queue (an SQS queue URL) or, without one,
  the quarantine, and the shard moves on past it.

Like the stack's daily EventBridge rule, :meth:`EventSourceRunner.run` also calls the
handler with a scheduled event (:func:`scheduled_event`) when it starts and then every
``keep_alive_every_s`` (a day), whatever the traffic: the processor handler then keeps
the store's states alive.

Checkpoints are the stream's committed positions of the runner's group (on Kinesis, its
checkpoint table), committed after each delivered batch. A runner killed at any moment
redelivers at most one batch, which the handler skips (it is idempotent on redelivery).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from playpulse.quarantine.store import QuarantineStore, Rejection
from playpulse.stream.base import Batch, EventStream, Record

log = logging.getLogger("playpulse.aws.runner")

Handler = Callable[[dict[str, Any], Any], Mapping[str, Any] | None]

#: The group under which the runner checkpoints its shards in the stream.
RUNNER_GROUP = "lambda-event-source"
_ACCOUNT = "123456789012"


@dataclass(frozen=True)
class MappingOptions:
    """The event source mapping's settings (CloudFormation's
    ``AWS::Lambda::EventSourceMapping`` names them the same).

    - ``batch_size``: most records per invocation (``BatchSize``).
    - ``max_retries``: retries of a failing record before it goes to the dead-letter
      path (``MaximumRetryAttempts``); the first try is not a retry.
    - ``bisect_on_error``: halve a batch whose invocation raised
      (``BisectBatchOnFunctionError``).
    - ``dlq_url``: the SQS queue of the on-failure destination; ``None``: the quarantine.
    - ``group``: the stream group under which shards are checkpointed.
    - ``region``: the region written into the event's ARNs.
    """

    batch_size: int = 100
    max_retries: int = 2
    bisect_on_error: bool = True
    dlq_url: str | None = None
    group: str = RUNNER_GROUP
    region: str = "us-east-1"


@dataclass
class RunnerStats:
    """What :meth:`EventSourceRunner.run_once` did: ``invocations`` of the handler,
    ``records`` delivered (retries counted again), ``failed_invocations`` (the handler
    raised), ``dead_lettered`` records sent to the dead-letter path."""

    invocations: int = 0
    records: int = 0
    failed_invocations: int = 0
    dead_lettered: int = 0
    by_shard: dict[int, int] = field(default_factory=dict)


def kinesis_event(
    stream: EventStream, partition: int, records: Sequence[Record], region: str = "us-east-1"
) -> dict[str, Any]:
    """The event Lambda sends for ``records`` of one shard (the Kinesis event of the
    Lambda developer guide: ``{"Records": [{"kinesis": {...}, "eventID": ...}]}``)."""
    shard = stream.shard_id(partition)
    arn = f"arn:aws:kinesis:{region}:{_ACCOUNT}:stream/{stream.name}"
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.key,
                    "sequenceNumber": str(r.offset),
                    "data": base64.b64encode(r.value).decode("ascii"),
                    "approximateArrivalTimestamp": r.appended_at.timestamp(),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard}:{r.offset}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": f"arn:aws:iam::{_ACCOUNT}:role/playpulse-processor",
                "awsRegion": region,
                "eventSourceARN": arn,
            }
            for r in records
        ]
    }


def scheduled_event(region: str = "us-east-1", now: datetime | None = None) -> dict[str, Any]:
    """The event EventBridge sends for a scheduled rule (the EventBridge user guide's
    "Scheduled Event" shape), at ``now`` (UTC-aware; default: the current time)."""
    at = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": _ACCOUNT,
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{_ACCOUNT}:rule/playpulse-keep-alive"],
        "detail": {},
    }


class EventSourceRunner:
    """Polls ``stream`` and calls ``handler`` as Lambda's event source mapping would
    (see the module docstring). ``quarantine`` takes dead-lettered records when
    ``options.dlq_url`` is not set. Raises what the stream raises when it cannot be
    read; a handler's exceptions are retried, never raised."""

    def __init__(
        self,
        stream: EventStream,
        handler: Handler,
        options: MappingOptions | None = None,
        quarantine: QuarantineStore | None = None,
    ) -> None:
        self.stream = stream
        self.handler = handler
        self.options = options or MappingOptions()
        self.quarantine = quarantine
        # (partition, offset of the first record of a failing batch) -> tries so far.
        self._tries: dict[tuple[int, int], int] = {}

    def run_once(self) -> RunnerStats:
        """Deliver every shard's records until each is caught up; the totals."""
        stats = RunnerStats()
        for info in self.stream.partitions():
            while self._deliver_next(info.partition, info.start_offset, stats):
                pass
        return stats

    def run(
        self, stop: threading.Event, idle_sleep_s: float = 0.2, keep_alive_every_s: float = 86_400
    ) -> None:
        """:meth:`run_once` until ``stop`` is set, sleeping ``idle_sleep_s`` when caught
        up; and the handler called with a :func:`scheduled_event` at the start and then
        every ``keep_alive_every_s`` seconds (what the stack's daily rule does). A
        handler error there is logged, and tried again a minute later."""
        next_keep_alive = time.monotonic()
        while not stop.is_set():
            if time.monotonic() >= next_keep_alive:
                try:
                    self.handler(scheduled_event(self.options.region), None)
                    next_keep_alive = time.monotonic() + keep_alive_every_s
                except Exception:
                    log.exception("the scheduled keep-alive failed; trying again in a minute")
                    next_keep_alive = time.monotonic() + 60
            if self.run_once().records == 0:
                stop.wait(idle_sleep_s)

    def _deliver_next(self, p: int, start_offset: int, stats: RunnerStats) -> bool:
        committed = self.stream.committed(self.options.group, p)
        position = start_offset if committed is None else committed
        records = self.stream.read(p, position, self.options.batch_size)
        if not records:
            return False
        chunk = records
        while True:
            outcome = self._invoke(p, chunk, stats)
            if outcome is None:  # the handler raised
                first = (p, chunk[0].offset)
                tries = self._tries.get(first, 0) + 1
                self._tries[first] = tries
                if len(chunk) > 1 and self.options.bisect_on_error:
                    chunk = chunk[: len(chunk) // 2]
                    continue
                if tries > self.options.max_retries:
                    self._dead_letter(p, chunk, "the handler raised on every try", stats)
                    self._commit(p, chunk)
                return True
            if outcome == len(chunk):
                self._commit(p, chunk)
                self._tries.pop((p, chunk[0].offset), None)
                return True
            # Records before the lowest failure are done; retry from it.
            if outcome > 0:
                self._commit(p, chunk[:outcome])
            failed = chunk[outcome]
            tries = self._tries.get((p, failed.offset), 0) + 1
            self._tries[(p, failed.offset)] = tries
            if tries > self.options.max_retries:
                self._dead_letter(p, [failed], "reported failed on every try", stats)
                self._commit(p, [*chunk[:outcome], failed])
                self._tries.pop((p, failed.offset), None)
            return True

    def _invoke(self, p: int, chunk: list[Record], stats: RunnerStats) -> int | None:
        """Call the handler; how many leading records succeeded (``len(chunk)`` for
        all), or ``None`` when it raised."""
        stats.invocations += 1
        stats.records += len(chunk)
        stats.by_shard[p] = stats.by_shard.get(p, 0) + len(chunk)
        event = kinesis_event(self.stream, p, chunk, self.options.region)
        try:
            response = self.handler(event, None) or {}
        except Exception as exc:
            stats.failed_invocations += 1
            log.warning("handler failed on shard %s (%d records): %s", p, len(chunk), exc)
            return None
        failures = response.get("batchItemFailures") or []
        if not failures:
            return len(chunk)
        index = {str(r.offset): i for i, r in enumerate(chunk)}
        named = [index.get(str(f.get("itemIdentifier"))) for f in failures]
        if any(i is None for i in named):
            return 0  # an unknown identifier fails the whole batch
        return min(i for i in named if i is not None)

    def _commit(self, p: int, done: list[Record]) -> None:
        self.stream.commit(self.options.group, p, Batch(p, done).next_offset)

    def _dead_letter(self, p: int, records: list[Record], why: str, stats: RunnerStats) -> None:
        stats.dead_lettered += len(records)
        message = on_failure_record(self.stream, p, records, why, self.options)
        log.error(
            "shard %s records %s..%s go to the dead-letter path: %s",
            p,
            records[0].offset,
            records[-1].offset,
            why,
        )
        if self.options.dlq_url is not None:
            from playpulse.aws.clients import client

            sqs = client("sqs")
            sqs.send_message(QueueUrl=self.options.dlq_url, MessageBody=json.dumps(message))
        elif self.quarantine is not None:
            self.quarantine.add(
                [
                    Rejection(
                        r.value,
                        "retries_exhausted",
                        [{"loc": "record", "msg": why}],
                        r.appended_at,
                        "processor",
                        origin=f"stream/{p}/{r.offset}",
                    )
                    for r in records
                ]
            )
        else:
            raise RuntimeError(f"records of shard {p} failed and there is no dead-letter path")


def on_failure_record(
    stream: EventStream,
    partition: int,
    records: Sequence[Record],
    why: str,
    options: MappingOptions,
) -> dict[str, Any]:
    """What Lambda sends to a Kinesis mapping's on-failure destination (its
    ``KinesisBatchInfo`` record), plus ``playpulse.records`` (the records' keys and
    base64 data) and ``playpulse.reason``, so the dead-letter queue holds the events
    themselves, not only where they were."""
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"arn:aws:lambda:{options.region}:{_ACCOUNT}:function:playpulse",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": options.max_retries + 1,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(),
        "KinesisBatchInfo": {
            "shardId": stream.shard_id(partition),
            "startSequenceNumber": str(records[0].offset),
            "endSequenceNumber": str(records[-1].offset),
            "approximateArrivalOfFirstRecord": records[0].appended_at.isoformat(),
            "approximateArrivalOfLastRecord": records[-1].appended_at.isoformat(),
            "batchSize": len(records),
            "streamArn": f"arn:aws:kinesis:{options.region}:{_ACCOUNT}:stream/{stream.name}",
        },
        "playpulse": {
            "reason": why,
            "records": [
                {
                    "sequenceNumber": str(r.offset),
                    "partitionKey": r.key,
                    "data": base64.b64encode(r.value).decode("ascii"),
                }
                for r in records
            ],
        },
    }
