"""What only the Kafka stream has: its URL, the factory, brokers that fail.

Everything runs against librdkafka's mock cluster (``kafka_cluster`` in conftest.py,
3 brokers on 127.0.0.1), with a fresh topic per test; the generic stream contract runs on
Kafka in ``test_contract.py``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from playpulse.config import Settings
from playpulse.errors import BackpressureError, ConfigError, StreamError
from playpulse.stream.factory import open_stream
from playpulse.stream.kafka import KafkaStream, parse_kafka_url

kafka_mock = sys.modules["kafka_mock"]  # loaded by conftest.py

# A record that waits for a broker longer than this is reported not stored.
DELIVERY_TIMEOUT_S = 1.5


@pytest.fixture
def topic(kafka_cluster) -> str:
    return kafka_cluster.new_topic(4)


@pytest.fixture
def kafka(kafka_cluster, topic):
    stream = KafkaStream(
        kafka_cluster.bootstrap,
        topic,
        delivery_timeout_s=DELIVERY_TIMEOUT_S,
        group_prefix=f"{topic}.",
    )
    yield stream
    stream.close()


def keys_in(stream, partition: int, n: int) -> list[str]:
    keys = []
    i = 0
    while len(keys) < n:
        if stream.partition_for(f"user-{i}") == partition:
            keys.append(f"user-{i}")
        i += 1
    return keys


def read_everything(stream) -> list:
    out = []
    for info in stream.partitions():
        offset = info.start_offset
        while records := stream.read(info.partition, offset, 1000):
            out += records
            offset = records[-1].offset + 1
    return out


# --- the URL and the factory -----------------------------------------------------------


def test_parse_kafka_url():
    assert parse_kafka_url("kafka://localhost:9092/events") == parse_kafka_url(
        "kafka://localhost:9092/events/"
    )
    url = parse_kafka_url("kafka://a:9092, b.example:19092/play.events_v1")
    assert url.bootstrap_servers == "a:9092,b.example:19092"
    assert url.topic == "play.events_v1"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("sqlite:///x.db", "scheme must be kafka"),
        ("kafka:///events", "names no broker"),
        ("kafka://localhost/events", "is not HOST:PORT"),
        ("kafka://localhost:port/events", "is not HOST:PORT"),
        ("kafka://localhost:9092", "names no topic"),
        ("kafka://localhost:9092/", "names no topic"),
        ("kafka://localhost:9092/a b", "not a legal Kafka topic name"),
        ("kafka://localhost:9092/" + "t" * 250, "not a legal Kafka topic name"),
    ],
)
def test_a_bad_kafka_url_is_refused_saying_why(url, why):
    with pytest.raises(ConfigError, match=why):
        parse_kafka_url(url)


TOPIC_CHARS = st.sampled_from("abcXYZ019._-")
HOSTS = st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)


@given(
    brokers=st.lists(st.tuples(HOSTS, st.integers(1, 65535)), min_size=1, max_size=4),
    topic=st.text(TOPIC_CHARS, min_size=1, max_size=249),
)
def test_parse_kafka_url_gives_back_the_brokers_and_topic(brokers, topic):
    servers = ",".join(f"{h}:{p}" for h, p in brokers)

    url = parse_kafka_url(f"kafka://{servers}/{topic}")

    assert url.bootstrap_servers == servers
    assert url.topic == topic.strip("/")


@given(st.one_of(st.text(max_size=60), st.text(max_size=60).map(lambda t: "kafka://" + t)))
def test_parse_kafka_url_accepts_or_refuses_with_config_error(text):
    try:
        url = parse_kafka_url(text)
    except ConfigError as exc:
        message = str(exc)
    else:
        assert url.topic
        assert all(s.rpartition(":")[2].isdigit() for s in url.bootstrap_servers.split(","))
        return
    assert repr(text) in message  # it says which URL


def test_open_stream_opens_a_kafka_url(kafka_cluster, tmp_path: Path):
    topic = kafka_cluster.new_topic(3)
    settings = Settings(data_dir=tmp_path, stream_url=f"kafka://{kafka_cluster.bootstrap}/{topic}")

    stream = open_stream(settings)
    try:
        assert isinstance(stream, KafkaStream)
        assert stream.topic == topic
        assert stream.num_partitions == 3  # the topic's, not settings.num_partitions
        assert not stream.manages_retention
        assert stream.append([("k", b"v")])[0].offset == 0
    finally:
        stream.close()
    assert not (tmp_path / "stream.db").exists()


def test_a_kafka_stream_url_passes_the_settings_check():
    assert Settings(stream_url="kafka://h:9092/events").stream_url == "kafka://h:9092/events"


def test_group_prefix_namespaces_the_consumer_groups(kafka_cluster, topic, kafka):
    kafka.append([(f"user-{i}", b"v") for i in range(8)])
    plain = KafkaStream(kafka_cluster.bootstrap, topic)
    try:
        kafka.commit("g", 0, kafka.partitions()[0].end_offset)

        assert kafka.groups() == ["g"]
        assert kafka.group_id("g") == f"{topic}.g"
        # Without the prefix it is another group; with it, the same.
        assert plain.committed("g", 0) is None
        assert plain.committed(f"{topic}.g", 0) == kafka.committed("g", 0)
        assert plain.groups() == []
    finally:
        plain.close()


def read_one_batch(member):
    """Poll ``member`` until it returns a batch (it joins the group first)."""
    for _ in range(600):  # a guard, not a timing assertion (polls wait 0.1 s at most)
        if batches := member.poll(100):
            return batches[0]
    raise AssertionError("the member got no records")


def test_a_commit_refused_during_a_rebalance_is_sent_again_at_the_next_poll(kafka_cluster, kafka):
    kafka.append([("user-1", bytes([i])) for i in range(10)])
    p = kafka.partition_for("user-1")
    member = kafka.group_consumer("g", "m", _NoListener(), session_timeout_s=2.0)
    try:
        batch = read_one_batch(member)
        assert batch.next_offset == 10
        kafka_cluster.push_request_errors(
            kafka_mock.OFFSET_COMMIT_API_KEY, [kafka_mock.ERR_REBALANCE_IN_PROGRESS]
        )

        member.commit(batch)  # refused by the group: kept, not raised

        assert kafka.committed("g", p) is None
        member.poll(100)
        assert kafka.committed("g", p) == 10

        # Another refusal is an error the caller hears of.
        kafka_cluster.push_request_errors(
            kafka_mock.OFFSET_COMMIT_API_KEY, [kafka_mock.ERR_OFFSET_METADATA_TOO_LARGE]
        )
        with pytest.raises(StreamError, match="cannot commit partition"):
            member.commit(batch)
    finally:
        member.close()


def test_a_commit_refused_during_a_rebalance_is_sent_when_the_member_leaves(kafka_cluster, kafka):
    kafka.append([("user-1", bytes([i])) for i in range(10)])
    p = kafka.partition_for("user-1")
    member = kafka.group_consumer("g", "m", _NoListener(), session_timeout_s=2.0)
    try:
        batch = read_one_batch(member)
        kafka_cluster.push_request_errors(
            kafka_mock.OFFSET_COMMIT_API_KEY, [kafka_mock.ERR_REBALANCE_IN_PROGRESS]
        )
        member.commit(batch)
        assert kafka.committed("g", p) is None
    finally:
        member.close()
    assert kafka.committed("g", p) == 10


# --- no broker -------------------------------------------------------------------------


def test_opening_without_a_reachable_broker_raises_stream_error_in_bounded_time():
    # Port 1 on 127.0.0.1: connection refused at once; the metadata request times out.
    with pytest.raises(StreamError, match=r"cannot read its metadata|unusable"):
        KafkaStream("127.0.0.1:1", "events", request_timeout_s=1.0)


def test_a_closed_stream_refuses_to_work(kafka):
    kafka.close()
    kafka.close()  # idempotent
    with pytest.raises(StreamError, match="closed"):
        kafka.append([("k", b"v")])
    with pytest.raises(StreamError, match="closed"):
        kafka.read(0, 0, 1)


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_close_leaves_no_thread_behind(kafka_cluster, topic):
    before = os_threads()
    stream = KafkaStream(kafka_cluster.bootstrap, topic)
    stream.append([(f"user-{i}", b"v") for i in range(10)])
    stream.read(0, 0, 10)
    member = stream.group_consumer("g", "m", _NoListener(), session_timeout_s=2.0)
    member.poll(10)
    assert os_threads() > before  # librdkafka's threads (not Python's)

    member.close()
    stream.close()

    assert os_threads() == before


class _NoListener:
    def on_assign(self, partitions: list[int]) -> dict[int, int]:
        return {}

    def on_revoke(self, partitions: list[int]) -> None:
        pass


# --- a broker fails --------------------------------------------------------------------


def test_a_partition_whose_leader_is_down_fails_only_its_records(kafka_cluster, topic, kafka):
    for p in range(4):
        kafka_cluster.set_leader(topic, p, 3 if p == 0 else 1)
    records = [(f"user-{i}", f"v{i}".encode()) for i in range(40)]
    on_0 = {i for i, (k, _) in enumerate(records) if kafka.partition_for(k) == 0}
    assert on_0
    assert len(on_0) < len(records)
    # The producer learns the new leaders (once every partition answered).
    assert kafka.append_each([(key, b"warm-up") for key, _ in records]).ok

    kafka_cluster.set_down(3)
    try:
        result = kafka.append_each(records)

        # Exactly the records of partition 0 failed, each with librdkafka's reason.
        assert set(result.errors) == on_0
        assert all("timed out" in why.lower() for why in result.errors.values())
        for i, landed in enumerate(result.landed):
            assert (landed is None) == (i in on_0)
        # append() cannot be all-or-nothing on Kafka: it says the others were stored.
        with pytest.raises(StreamError, match=f"{len(on_0)} of 40 records not stored"):
            kafka.append(records)
        # Nothing of partition 0 stored at all: no broker took it.
        with pytest.raises(BackpressureError, match="none of 2 records stored"):
            kafka.append_each([records[i] for i in sorted(on_0)[:2]])
    finally:
        kafka_cluster.set_up(3)

    stored = {r.value for r in read_everything(kafka)}
    assert stored.isdisjoint({records[i][1] for i in on_0})
    # The producer retries only the failed records: now they are stored, once each.
    retried = kafka.append_each([records[i] for i in sorted(on_0)])
    assert retried.ok
    values = Counter(r.value for r in read_everything(kafka))
    assert all(values[v] == 1 for i, (_, v) in enumerate(records) if i in on_0)
    assert all(values[v] == 2 for i, (_, v) in enumerate(records) if i not in on_0)


def test_with_every_broker_down_an_append_raises_backpressure_and_stores_nothing(
    kafka_cluster, kafka
):
    records = [(f"user-{i}", f"v{i}".encode()) for i in range(12)]
    assert kafka.append_each([(k, b"warm-up") for k, _ in records]).ok
    for broker in (1, 2, 3):
        kafka_cluster.set_down(broker)
    try:
        # Bounded by delivery_timeout_s: no hang, and the caller is told to retry later.
        with pytest.raises(BackpressureError) as raised:
            kafka.append_each(records)
        assert raised.value.retry_after_s > 0
    finally:
        for broker in (1, 2, 3):
            kafka_cluster.set_up(broker)

    assert {r.value for r in read_everything(kafka)} == {b"warm-up"}
    # The brokers are back: appends work again once the producer has reconnected (on a
    # busy machine the first may still time out: retried, as the collector does, only the
    # records reported not stored).
    pending, deadline = records, time.monotonic() + 60
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} records still not stored"
        try:
            result = kafka.append_each(pending)
        except BackpressureError:
            continue
        pending = [pending[i] for i in result.failed]
    assert len(read_everything(kafka)) == 2 * len(records)


def test_a_broker_failing_during_a_stream_of_appends_loses_and_claims_nothing(
    kafka_cluster, topic, kafka
):
    # Broker 3 leads partitions 0 and 1; it goes down during the stream of appends, and
    # partition 1 fails over to broker 2 (partition 0 stays without a live leader).
    for p in range(4):
        kafka_cluster.set_leader(topic, p, 3 if p < 2 else 1)
    assert kafka.append_each([(f"user-{i}", b"warm-up") for i in range(12)]).ok
    started = [threading.Event() for _ in range(20)]
    went_down = threading.Event()

    def chaos() -> None:
        started[4].wait()  # while append 4 is under way
        kafka_cluster.set_down(3)
        went_down.set()
        started[6].wait()
        kafka_cluster.set_leader(topic, 1, 2)
        started[9].wait()
        kafka_cluster.set_up(3)

    troublemaker = threading.Thread(target=chaos)
    troublemaker.start()
    stored: dict[bytes, tuple[int, int]] = {}
    failed: list[bytes] = []
    try:
        for n, started_n in enumerate(started):
            batch = [(f"user-{i}", f"{n}:{i}".encode()) for i in range(12)]
            if n == 5:  # appends 5 to 8 surely meet the broker down
                went_down.wait()
            started_n.set()
            try:
                result = kafka.append_each(batch)
            except BackpressureError:  # nothing stored: all failed
                failed += [v for _, v in batch]
                continue
            for (_, value), landed in zip(batch, result.landed, strict=True):
                if landed is None:
                    failed.append(value)
                else:
                    stored[value] = (landed.partition, landed.offset)
    finally:
        for event in started:
            event.set()
        went_down.set()
        troublemaker.join()
        kafka_cluster.set_up(3)

    assert failed, "the broker failure should have failed some appends"
    assert len(stored) + len(failed) == 20 * 12
    log = read_everything(kafka)
    where = {(r.partition, r.offset): r.value for r in log}
    counts = Counter(r.value for r in log)
    # Every record reported stored is where the report said, exactly once...
    for value, position in stored.items():
        assert where[position] == value
        assert counts[value] == 1
    # ... and one reported failed is at most once in the log (never stored twice).
    assert all(counts[v] <= 1 for v in failed)
    # Nothing is in the log that no append sent.
    assert set(counts) <= set(stored) | set(failed) | {b"warm-up"}
    # Retried, the failed records are all stored (at most once more).
    retried = kafka.append_each([(f"user-{v.decode().split(':')[1]}", v) for v in failed])
    assert retried.ok
    counts = Counter(r.value for r in read_everything(kafka))
    assert all(counts[v] >= 1 for v in failed)
