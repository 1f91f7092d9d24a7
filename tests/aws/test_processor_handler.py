"""The Lambda processor handler and the event source mapping's runner, on the embedded
backends (SQLite stream and store, a Parquet lake): redelivery, poisoned records, the
dead-letter path, containers that take turns on a shard. The same handler over Kinesis,
DynamoDB and S3 is tested end to end in ``test_end_to_end.py``; the 200,000-event
reference runs through it in ``tests/processor/test_reference.py``."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from playpulse.aws.processor_handler import (
    KinesisBatchHandler,
    MalformedEventError,
    is_scheduled,
)
from playpulse.aws.runner import (
    EventSourceRunner,
    MappingOptions,
    kinesis_event,
    scheduled_event,
)
from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor.pipeline import Processor
from playpulse.quarantine.store import QuarantineStore
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.sqlite import SQLiteStream
from playpulse.testing import assert_same_answers, catalog_answers

EVENTS = 3_000


@pytest.fixture(scope="module")
def records() -> list[tuple[str, bytes]]:
    """A simulated workload as stream records (key = user), as the collector stores them."""
    out = []
    for sim in simulate(SimulationConfig(seed=11, max_events=EVENTS)):
        accepted = validate_event(json.dumps(sim.payload), sim.received_at)
        out.append((accepted.event.actor_id, accepted.payload))
    return out


@dataclass
class DataDir:
    settings: Settings
    stream: SQLiteStream
    store: SQLiteStore
    lake: LakeWriter
    quarantine: QuarantineStore

    def handler(self) -> KinesisBatchHandler:
        """A new container's handler (its own connections, an empty memory)."""
        return KinesisBatchHandler(
            SQLiteStream(self.settings.stream_path, num_partitions=4),
            SQLiteStore(self.settings.store_path),
            LakeWriter(self.settings.lake_path, SCHEMAS),
            self.quarantine,
        )


@pytest.fixture
def make_dir(tmp_path: Path) -> Iterator[object]:
    made: list[DataDir] = []

    def make(name: str, records: list[tuple[str, bytes]]) -> DataDir:
        settings = Settings(data_dir=tmp_path / name)
        settings.data_dir.mkdir()
        stream = SQLiteStream(settings.stream_path, num_partitions=4)
        for i in range(0, len(records), 500):
            stream.append(records[i : i + 500])
        d = DataDir(
            settings,
            stream,
            SQLiteStore(settings.store_path),
            LakeWriter(settings.lake_path, SCHEMAS),
            QuarantineStore(settings.quarantine_path),
        )
        made.append(d)
        return d

    yield make
    for d in made:
        d.stream.close()
        d.store.close()
        d.quarantine.close()


@pytest.fixture
def expected(make_dir, records) -> dict[str, list[dict[str, object]]]:
    """What the embedded processor answers for ``records``."""
    d = make_dir("embedded", records)
    Processor(d.stream, d.store, d.lake, d.quarantine).process_available()
    return catalog_answers(d.settings)


def test_the_runner_and_handler_answer_what_the_embedded_processor_does(
    make_dir, records, expected
):
    d = make_dir("lambda", records)
    stats = EventSourceRunner(d.stream, d.handler(), MappingOptions(batch_size=100)).run_once()
    assert stats.records == len(records)
    assert stats.invocations >= len(records) // 100
    assert stats.dead_lettered == 0
    assert_same_answers(catalog_answers(d.settings), expected)


def test_a_batch_delivered_twice_changes_nothing(make_dir, records, expected):
    d = make_dir("twice", records)
    handler = d.handler()
    for info in d.stream.partitions():
        offset = info.start_offset
        while batch := d.stream.read(info.partition, offset, 150):
            event = kinesis_event(d.stream, info.partition, batch)
            assert handler(event) == {"batchItemFailures": []}
            before = d.store.offsets("processor")
            # Redelivered to the same container, then to a new one: nothing changes.
            assert handler(event) == {"batchItemFailures": []}
            assert d.handler()(event) == {"batchItemFailures": []}
            assert d.store.offsets("processor") == before
            offset = batch[-1].offset + 1
    assert_same_answers(catalog_answers(d.settings), expected)


def test_containers_taking_turns_on_a_shard_give_the_same_numbers(make_dir, records, expected):
    d = make_dir("turns", records)
    containers = [d.handler(), d.handler(), d.handler()]
    turn = 0
    for info in d.stream.partitions():
        offset = info.start_offset
        while batch := d.stream.read(info.partition, offset, 70):
            # A warm container whose memory of the shard is stale must reload it.
            containers[turn % 3](kinesis_event(d.stream, info.partition, batch))
            turn += 1
            offset = batch[-1].offset + 1
    assert_same_answers(catalog_answers(d.settings), expected)


def test_a_poisoned_record_fails_alone_and_ends_in_the_dead_letter_path(make_dir, records):
    poison = b"\xff not an event"
    user = records[10][0]
    d = make_dir("poison", [*records[:1000], (user, poison), *records[1000:]])
    partition = d.stream.partition_for(user)
    handler = d.handler()
    # Directly: the records before it are processed, only the poisoned one is reported.
    batch = d.stream.read(partition, d.stream.partitions()[partition].start_offset, 10_000)
    at = next(i for i, r in enumerate(batch) if r.value == poison)
    response = handler(kinesis_event(d.stream, partition, batch[: at + 3]))
    assert response == {"batchItemFailures": [{"itemIdentifier": str(batch[at].offset)}]}
    assert d.store.offsets("processor")[partition] == batch[at].offset
    # Through the runner: retried, then dead-lettered (here: the quarantine), then on.
    options = MappingOptions(batch_size=100, max_retries=2)
    stats = EventSourceRunner(d.stream, handler, options, d.quarantine).run_once()
    assert stats.dead_lettered == 1
    entries = d.quarantine.list()
    assert [(e.reason, e.raw) for e in entries] == [("retries_exhausted", poison)]
    ends = {i.partition: i.end_offset for i in d.stream.partitions()}
    assert d.store.offsets("processor") == ends


def test_a_handler_error_is_retried_bisected_and_dead_lettered_once(make_dir, records):
    d = make_dir("raising", records[:400])
    calls: list[int] = []

    def flaky(event, context):
        # The handler of a function whose every call with the first record fails.
        first = json.loads(base64.b64decode(event["Records"][0]["kinesis"]["data"]))
        calls.append(len(event["Records"]))
        if first["event_id"] == json.loads(records[0][1])["event_id"]:
            raise RuntimeError("boom")
        return d.handler()(event, context)

    options = MappingOptions(batch_size=64, max_retries=1)
    stats = EventSourceRunner(d.stream, flaky, options, d.quarantine).run_once()
    assert stats.failed_invocations >= 2
    assert 1 in calls  # bisected down to the one record
    assert stats.dead_lettered == 1
    assert len(d.quarantine.list()) == 1


def test_an_event_that_is_not_a_kinesis_batch_is_refused(make_dir, records):
    d = make_dir("malformed", records[:10])
    handler = d.handler()
    with pytest.raises(MalformedEventError):
        handler({"Records": []})
    with pytest.raises(MalformedEventError):
        handler({"Records": [{"eventID": "shardId-000000000000:1"}]})
    event = kinesis_event(d.stream, 0, d.stream.read(0, 0, 5))
    other = kinesis_event(d.stream, 1, d.stream.read(1, 0, 5))
    with pytest.raises(MalformedEventError):
        handler({"Records": event["Records"] + other["Records"]})


def test_the_dead_letter_queue_gets_lambdas_on_failure_record_with_the_data(
    make_dir, records, aws_env
):
    from playpulse.aws.clients import client

    poison = b"\xff not an event"
    user = records[3][0]
    d = make_dir("sqs", [*records[:200], (user, poison), *records[200:400]])
    sqs = client("sqs")
    queue = sqs.create_queue(QueueName=aws_env.unique("pp-dlq"))["QueueUrl"]
    options = MappingOptions(batch_size=50, max_retries=1, dlq_url=queue)
    stats = EventSourceRunner(d.stream, d.handler(), options).run_once()
    assert stats.dead_lettered == 1
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    body = json.loads(messages[0]["Body"])
    info = body["KinesisBatchInfo"]
    partition = d.stream.partition_for(user)
    assert info["shardId"] == d.stream.shard_id(partition)
    assert info["batchSize"] == 1
    assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert [base64.b64decode(r["data"]) for r in body["playpulse"]["records"]] == [poison]
    ends = {i.partition: i.end_offset for i in d.stream.partitions()}
    assert d.store.offsets("processor") == ends  # and the shard went on past it
    assert d.quarantine.list() == []  # the queue is the dead-letter path here


def test_a_scheduled_event_keeps_the_stores_states_alive_and_processes_nothing(
    make_dir, records, aws_env
):
    from datetime import timedelta

    from playpulse.store.dynamodb import DynamoDBStore, create_table

    table = aws_env.unique("pp-keep-alive")
    create_table(table)
    d = make_dir("scheduled", records[:300])
    # Carrying every state, however young (the deployed store carries those of 2 days).
    store = DynamoDBStore(table, carry_age=timedelta(0))
    handler = KinesisBatchHandler(d.stream, store, None, d.quarantine)
    EventSourceRunner(d.stream, handler, MappingOptions(batch_size=100)).run_once()
    live = store.state_keys("")
    offsets = store.offsets("processor")
    assert live
    assert offsets

    assert is_scheduled(scheduled_event())
    assert handler(scheduled_event(), None) == {"statesCarried": len(live)}
    fresh = DynamoDBStore(table)
    assert fresh.state_keys("") == live
    assert fresh.offsets("processor") == offsets
    # A store whose states never expire has nothing to carry.
    assert d.handler()(scheduled_event(), None) == {"statesCarried": 0}


def test_the_runner_sends_a_scheduled_event_when_it_starts_and_then_every_interval(
    make_dir, records
):
    d = make_dir("runner-schedule", records[:200])
    real = d.handler()
    seen: list[str] = []

    def recording(event, context):
        seen.append("scheduled" if is_scheduled(event) else "batch")
        return real(event, context)

    stop = threading.Event()
    runner = EventSourceRunner(d.stream, recording, MappingOptions(batch_size=100))
    worker = threading.Thread(target=runner.run, args=(stop, 0.01, 0.05))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while seen.count("scheduled") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(10)
    assert seen[0] == "scheduled"
    assert seen.count("scheduled") >= 3  # at the start, then every 0.05 s
    assert "batch" in seen
    assert d.store.offsets("processor") != {}
