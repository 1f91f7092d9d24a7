"""The 200,000-event reference with two processors consuming Kafka as a consumer group.

The workload of ``test_reference.py`` (simulated traffic plus the hand-made edge plays)
is produced to a topic of librdkafka's mock cluster (3 brokers, 4 partitions, on
127.0.0.1); two processors, each with a Kafka consumer of its own in group
``processor``, process it into one SQLite store and one Parquet lake. The first member
leaves after a few batches and joins again, so partitions move between members
(cooperative rebalances) with open plays and sessions in them. Then every check of
``test_reference.py`` runs against the reference computed from the topic's records.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from playpulse.events.codec import validate_event
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor.pipeline import ProcessorOptions
from playpulse.sources import SimulationConfig, simulate
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.kafka import KafkaStream
from playpulse.stream.sqlite import SQLiteStream
from playpulse.testing import load_module

pytestmark = pytest.mark.slow

ref_tests: Any = load_module(Path(__file__).with_name("test_reference.py"), "pp_kafka_ref_tests")
kafka_mock: Any = load_module(
    Path(__file__).parents[1] / "stream" / "kafka_mock.py", "pp_kafka_mock_for_processors"
)
reference = ref_tests.reference

PROCESSORS = 2


def workload_chunks() -> Iterator[list[tuple[str, bytes]]]:
    """The reference workload (same seed and edges as test_reference.py) as the appends
    the collector would make: chunks of ``(key, payload)``."""
    max_occurred = last_received = datetime.min.replace(tzinfo=UTC)
    chunk: list[tuple[str, bytes]] = []
    config = SimulationConfig(seed=ref_tests.SEED, max_events=ref_tests.MAX_EVENTS)
    for simulated in simulate(config):
        accepted = validate_event(json.dumps(simulated.payload), simulated.received_at)
        max_occurred = max(max_occurred, accepted.event.occurred_at)
        last_received = simulated.received_at
        chunk.append((accepted.event.actor_id, accepted.payload))
        if len(chunk) == 500:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
    received = max(last_received, max_occurred) + timedelta(minutes=5)
    edges = [
        validate_event(json.dumps(e), received)
        for e in ref_tests.edge_workload(max_occurred, received, ref_tests.SEED)
    ]
    for i in range(0, len(edges), 50):
        yield [(a.event.actor_id, a.payload) for a in edges[i : i + 50]]


#: The mock cluster keeps about 5 MB per partition (older records are deleted, as
#: retention would): the producer stays at most this many records ahead of the store.
MAX_AHEAD = 12_000


def process_as_kafka_group(root: Path, bootstrap: str, topic: str) -> int:
    """Produce the workload to ``topic`` (and the same appends to a SQLite stream, the
    reference's copy) while two members process it (test_reference.py's
    ``group_member``, each with a Kafka stream object of its own: its own consumer), until
    the store applied everything. Returns the number of records."""
    stop = threading.Event()
    errors: list[BaseException] = []
    options = ProcessorOptions(batch_size=1_000)
    produced = threading.Event()

    def applied(store: SQLiteStore) -> int:
        return sum(store.offsets(options.consumer).values())

    def open_stream() -> KafkaStream:
        return KafkaStream(bootstrap, topic)

    simulated = 0

    def produce() -> None:
        nonlocal simulated
        stream = KafkaStream(bootstrap, topic)
        copy = SQLiteStream(root / "reference-stream.db", num_partitions=4)
        store = SQLiteStore(root / "store.db")
        try:
            total = 0
            for chunk in workload_chunks():
                while total - applied(store) > MAX_AHEAD and not stop.is_set():
                    time.sleep(0.02)
                stream.append(chunk)
                copy.append(chunk)
                total += len(chunk)
            simulated = total
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        finally:
            stream.close()
            copy.close()
            store.close()
            produced.set()

    threads = [
        threading.Thread(
            target=ref_tests.group_member, args=(i, root, options, open_stream, stop, errors)
        )
        for i in range(PROCESSORS)
    ]
    threads.append(threading.Thread(target=produce))
    for thread in threads:
        thread.start()
    stream = KafkaStream(bootstrap, topic)
    store = SQLiteStore(root / "store.db")
    try:
        deadline = time.monotonic() + 600
        while not stop.is_set():
            assert time.monotonic() < deadline, "the group did not finish in 10 minutes"
            if produced.is_set():
                ends = {info.partition: info.end_offset for info in stream.partitions()}
                if store.offsets(options.consumer) == ends:
                    break
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        stream.close()
        store.close()
    if errors:
        raise errors[0]
    return simulated


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("kafka-reference")
    with kafka_mock.MockCluster(3) as cluster:
        topic = cluster.new_topic(4)
        total = process_as_kafka_group(root, cluster.bootstrap, topic)
    # The topic's records, appended in the same order to a SQLite stream: same partitions
    # (CRC-32 of the key) and offsets (dense from 0), all still there.
    copy = SQLiteStream(root / "reference-stream.db", num_partitions=4)
    try:
        ref = reference.compute_once(copy)  # test_reference.py's, if it ran here
    finally:
        copy.close()
    first, last = min(ref.days), max(ref.days)
    days = []
    day = date.fromisoformat(first) - timedelta(days=1)
    while day <= date.fromisoformat(last) + timedelta(days=1):
        days.append(day.isoformat())
        day += timedelta(days=1)
    store = SQLiteStore(root / "store.db")
    try:
        # ``appended``: every record (the simulated ones are over 200,000 alone).
        yield ref_tests.Run(store, LakeWriter(root / "lake", SCHEMAS), ref, total, days)
    finally:
        store.close()


CHECKS = [
    "test_the_workload_has_every_fault_and_feature",
    "test_pipeline_totals_match",
    "test_every_content_day_and_total_day_item_matches",
    "test_unique_listeners_match",
    "test_commerce_funnel_per_vendor_and_shop_matches",
    "test_lake_events_are_exactly_the_deduplicated_events",
    "test_lake_plays_match_every_finished_play",
    "test_lake_playing_time_per_content_and_start_day_matches",
    "test_sessions_view_matches_every_reference_session",
    "test_edge_plays_agree_with_the_reference",
]


@pytest.mark.parametrize("check", CHECKS)
def test_two_kafka_processors_match_the_reference(run: Any, check: str) -> None:
    getattr(ref_tests, check)(run)
