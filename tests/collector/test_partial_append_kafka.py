"""POST /v1/events over Kafka (librdkafka's mock cluster) while one partition has no live
leader: the collector acknowledges only what the broker stored (issue #12 items 3, 5)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from playpulse.collector import app as collector_app
from playpulse.stream.base import EventStream
from playpulse.stream.kafka import KafkaStream
from playpulse.testing import load_module

# tests is not a package (importlib import mode): load the helpers as modules.
_events = load_module(Path(__file__).with_name("events.py"), "playpulse_tests_collector_events")
kafka_mock = load_module(Path(__file__).parent.parent / "stream" / "kafka_mock.py", "kafka_mock")

#: How long the producer waits for a broker before it reports a record not stored.
DELIVERY_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A mock Kafka cluster of 3 brokers on 127.0.0.1 for this module."""
    with kafka_mock.MockCluster(3) as running:
        yield running


@pytest.fixture
def kafka(cluster: Any) -> Iterator[KafkaStream]:
    """A KafkaStream on a fresh 4-partition topic: partition 0 led by broker 3, the
    others by broker 1."""
    topic = cluster.new_topic(4)
    for p in range(4):
        cluster.set_leader(topic, p, 3 if p == 0 else 1)
    stream = KafkaStream(cluster.bootstrap, topic, delivery_timeout_s=DELIVERY_TIMEOUT_S)
    yield stream
    stream.close()


def stored_ids(stream: EventStream) -> Counter[str]:
    """How many times each event_id is in the stream."""
    ids: Counter[str] = Counter()
    for info in stream.partitions():
        offset = info.start_offset
        while records := stream.read(info.partition, offset, 1000):
            ids.update(json.loads(r.value)["event_id"] for r in records)
            offset = records[-1].offset + 1
    return ids


def test_events_of_a_partition_without_leader_are_503_and_the_rest_stored_once(
    make_collector, cluster, kafka
):
    users = [f"u{n}" for n in range(24)]
    down = {n for n, user in enumerate(users) if kafka.partition_for(user) == 0}
    assert down
    assert len(down) < len(users)
    # The broker is down longer than the retry budget: no retry, the answer says which.
    assert DELIVERY_TIMEOUT_S > collector_app.APPEND_RETRY_BUDGET_S
    # The producer learns every partition's leader before the broker goes down.
    assert kafka.append_each([(user, b'{"event_id": "warm-up"}') for user in users]).ok
    events = [_events.event(user_id=user) for user in users]
    with make_collector(wrap=lambda _: kafka) as running:
        cluster.set_down(3)
        try:
            response = running.post(json.dumps(events))
        finally:
            cluster.set_up(3)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "stream_unavailable"
        assert error["not_stored"] == sorted(down)
        assert error["stored"] == len(users) - len(down)
        ids = [e["event_id"] for e in events]
        stored = stored_ids(kafka)
        assert stored.pop("warm-up") == len(users)
        # Every event acknowledged is stored once, none of the others.
        assert stored == Counter(ids[n] for n in range(len(users)) if n not in down)
        # With the broker back, sending the whole request again stores the rest; the
        # events stored twice are dropped by the processor's dedup (event_id + content).
        again = running.post(json.dumps(events))
        assert again.status_code == 200, again.text
        stored = stored_ids(kafka)
        assert all(stored[ids[n]] == 1 for n in down)
        assert all(stored[ids[n]] == 2 for n in range(len(users)) if n not in down)
