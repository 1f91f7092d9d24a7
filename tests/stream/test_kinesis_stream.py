"""The Kinesis stream backend against moto in server mode: what the contract suite does
not cover (it runs on Kinesis too, see ``conftest.py``).

Failures are made for real with botocore event hooks on the stream's own boto3 client
(not mocks of our code): ``FailRecords`` takes records out of a PutRecords request before
it is sent (so moto never stores them) and puts a per-record
``ProvisionedThroughputExceededException`` in their place in the response, as Kinesis
does; ``SparseSequenceNumbers`` makes moto's sequence numbers (1, 2, 3, ... per shard)
look like real Kinesis ones (56 digits, sparse) in everything the client sees, and maps
them back in what it sends.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playpulse.aws.clients import client
from playpulse.config import Settings
from playpulse.errors import BackpressureError, ConfigError, OffsetOutOfRangeError, StreamError
from playpulse.stream.base import Batch
from playpulse.stream.factory import open_stream
from playpulse.stream.kinesis import (
    MAX_BYTES_PER_CALL,
    MAX_RECORDS_PER_CALL,
    KinesisStream,
    hash_key,
    parse_kinesis_url,
)

THROTTLED = "ProvisionedThroughputExceededException"


class _Http:
    """The HTTP response botocore expects from a ``before-call`` hook that answers."""

    status_code = 200
    headers: dict[str, str] = {}
    content = b""


class FailRecords:
    """Makes PutRecords fail the records ``fails(value, attempt)`` picks (``attempt`` is
    1 for a value's first sending): they are removed from the request before it is sent
    and reported failed with ``ProvisionedThroughputExceededException`` in the response.
    ``sent`` lists every call's values, in request order."""

    def __init__(self, kinesis: Any, fails: Callable[[bytes, int], bool]) -> None:
        self.fails = fails
        self.sent: list[list[bytes]] = []
        self.attempts: dict[bytes, int] = defaultdict(int)
        self._dropped: list[int] = []
        self._total = 0
        events = kinesis.meta.events
        events.register("before-call.kinesis.PutRecords", self._before)
        events.register("after-call.kinesis.PutRecords", self._after)

    def _before(self, params: dict[str, Any], **_: Any) -> Any:
        body = json.loads(params["body"])
        values = [base64.b64decode(r["Data"]) for r in body["Records"]]
        self.sent.append(values)
        keep, self._dropped = [], []
        for i, (raw, value) in enumerate(zip(body["Records"], values, strict=True)):
            self.attempts[value] += 1
            if self.fails(value, self.attempts[value]):
                self._dropped.append(i)
            else:
                keep.append(raw)
        self._total = len(values)
        if not keep:  # nothing left to send: answer as Kinesis would
            return _Http(), {"FailedRecordCount": 0, "Records": []}
        body["Records"] = keep
        params["body"] = json.dumps(body).encode()
        return None

    def _after(self, parsed: dict[str, Any], **_: Any) -> None:
        records = list(parsed.get("Records", []))
        for i in self._dropped:
            records.insert(i, {"ErrorCode": THROTTLED, "ErrorMessage": "Rate exceeded for shard"})
        assert len(records) == self._total
        parsed["Records"] = records
        parsed["FailedRecordCount"] = parsed.get("FailedRecordCount", 0) + len(self._dropped)


#: Real Kinesis sequence numbers have 56 digits.
BASE = 10**55
STEP = 1000


class SparseSequenceNumbers:
    """Shows moto's sequence number ``s`` to the client as ``BASE + STEP * s`` (56
    digits, sparse), and maps the numbers the client sends back: an
    ``AFTER_SEQUENCE_NUMBER`` ``x`` is after moto's ``floor((x - BASE) / STEP)``, an
    ``AT_SEQUENCE_NUMBER`` ``x`` at ``ceil``. Like Kinesis (and unlike moto), it refuses
    a number that is not one of a record (``InvalidArgumentException``)."""

    def __init__(self, kinesis: Any) -> None:
        events = kinesis.meta.events
        events.register("after-call.kinesis.PutRecords", self._records)
        events.register("after-call.kinesis.GetRecords", self._records)
        events.register("after-call.kinesis.ListShards", self._shards)
        events.register("before-parameter-build.kinesis.GetShardIterator", self._iterator)

    @staticmethod
    def _records(parsed: dict[str, Any], **_: Any) -> None:
        for r in parsed.get("Records", []):
            if "SequenceNumber" in r:
                r["SequenceNumber"] = str(BASE + STEP * int(r["SequenceNumber"]))

    @staticmethod
    def _shards(parsed: dict[str, Any], **_: Any) -> None:
        for s in parsed.get("Shards", []):
            rng = s["SequenceNumberRange"]
            for name in ("StartingSequenceNumber", "EndingSequenceNumber"):
                if name in rng:
                    rng[name] = str(BASE + STEP * int(rng[name]))

    @staticmethod
    def _iterator(params: dict[str, Any], **_: Any) -> None:
        if "StartingSequenceNumber" not in params:
            return
        x = int(params["StartingSequenceNumber"]) - BASE
        if x <= 0 or x % STEP:
            raise ClientError(
                {
                    "Error": {
                        "Code": "InvalidArgumentException",
                        "Message": f"StartingSequenceNumber {x + BASE} is not in the shard",
                    }
                },
                "GetShardIterator",
            )
        moto = (
            x // STEP if params["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER" else -(-x // STEP)
        )
        params["StartingSequenceNumber"] = str(moto)


@pytest.fixture
def make(aws_env: Any) -> Any:
    """Builds fresh Kinesis streams on the moto server (``shards`` shards, the given
    hooks installed on its own Kinesis client first); closes them afterwards."""
    made: list[KinesisStream] = []

    def build(shards: int = 4, hooks: tuple[type, ...] = (), **kwargs: Any) -> Any:
        kinesis = client("kinesis")
        installed = [hook(kinesis) for hook in hooks]
        stream = KinesisStream(
            aws_env.unique("kin"), create=True, shards=shards, kinesis=kinesis, **kwargs
        )
        made.append(stream)
        return (stream, *installed) if installed else stream

    yield build
    for stream in made:
        stream.close()


def read_partition(stream: KinesisStream, partition: int) -> list[Any]:
    out: list[Any] = []
    position = stream.partitions()[partition].start_offset
    while records := stream.read(partition, position, 1000):
        out += records
        position = records[-1].offset + 1
    return out


# --- placement ---------------------------------------------------------------------------


def test_partition_for_is_the_shard_kinesis_puts_the_key_in(make):
    stream = make(shards=5)
    keys = [f"user-{i}" for i in range(300)] + ["é", "日本語", "", "\x00starts-with-nul"]

    result = stream.append_each([(k, k.encode()) for k in keys])

    assert result.ok, result.errors
    # Where Kinesis put each record (the ShardId PutRecords answered) is partition_for.
    assert [a.partition for a in result.landed] == [stream.partition_for(k) for k in keys]
    assert {stream.partition_for(k) for k in keys} == set(range(5))
    # And independently of our code: the key's MD5 is inside that shard's hash-key range.
    shards = client("kinesis").list_shards(StreamName=stream.name)["Shards"]
    ranges = {
        s["ShardId"]: (
            int(s["HashKeyRange"]["StartingHashKey"]),
            int(s["HashKeyRange"]["EndingHashKey"]),
        )
        for s in shards
    }
    for key, landed in zip(keys, result.landed, strict=True):
        lo, hi = ranges[stream.shard_id(landed.partition)]
        assert lo <= hash_key(key) <= hi
    # Read back from the shards, every key (the empty one and the escaped one too) is
    # where partition_for says, under its own name.
    for p in range(5):
        for record in read_partition(stream, p):
            assert stream.partition_for(record.key) == p
            assert record.value == record.key.encode()
    assert stream.partition_of_shard(stream.shard_id(3)) == 3


def test_a_key_kinesis_cannot_carry_fails_alone(make):
    stream = make(shards=2)

    result = stream.append_each([("a" * 257, b"too long"), ("ok", b"fine"), ("a" * 257, b"2")])

    assert result.failed == [0, 2]
    assert "256" in result.errors[0]
    assert result.landed[1] is not None


# --- chunks ------------------------------------------------------------------------------


def put_calls(stream: KinesisStream) -> list[tuple[int, int]]:
    """``(records, bytes)`` of every PutRecords call the stream's client makes from now."""
    calls: list[tuple[int, int]] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        records = params["Records"]
        size = sum(len(r["Data"]) + len(r["PartitionKey"].encode()) for r in records)
        calls.append((len(records), size))

    stream._kinesis.meta.events.register("before-parameter-build.kinesis.PutRecords", count)
    return calls


def test_put_records_calls_carry_at_most_500_records(make):
    stream = make(shards=2)
    calls = put_calls(stream)

    result = stream.append_each([(f"user-{i}", b"v") for i in range(1_201)])

    assert result.ok
    assert [n for n, _ in calls] == [500, 500, 201]
    assert MAX_RECORDS_PER_CALL == 500
    assert sum(len(read_partition(stream, p)) for p in range(2)) == 1_201


def test_put_records_calls_carry_at_most_5_mib(make):
    stream = make(shards=2)
    calls = put_calls(stream)
    big = b"x" * 1_000_000  # 5 of them (and their keys) fit in 5 MiB, 6 do not

    result = stream.append_each([(f"user-{i}", big) for i in range(11)])

    assert result.ok
    assert [n for n, _ in calls] == [5, 5, 1]
    assert all(size <= MAX_BYTES_PER_CALL for _, size in calls)


def test_a_record_over_1_mib_fails_and_the_later_records_of_its_key_are_not_sent(make):
    stream = make(shards=2)

    result = stream.append_each(
        [("u", b"first"), ("u", b"x" * (1024 * 1024)), ("u", b"third"), ("v", b"other")]
    )

    assert result.failed == [1, 2]
    assert "1048576" in result.errors[1]
    assert result.errors[2].startswith("not sent")
    stored = [r.value for p in range(2) for r in read_partition(stream, p)]
    assert sorted(stored) == [b"first", b"other"]


# --- partial failures --------------------------------------------------------------------


def test_failed_records_are_retried_until_stored_and_only_they(make):
    stream, injector = make(
        shards=3, hooks=(lambda k: FailRecords(k, lambda v, n: int(v) % 3 == 0 and n <= 2),)
    )
    records = [(f"user-{i % 40}", str(i).encode()) for i in range(120)]

    result = stream.append_each(records)

    assert result.ok, result.errors
    # Each record is stored exactly once, where append_each says.
    stored = {(r.partition, r.offset): r.value for p in range(3) for r in read_partition(stream, p)}
    assert len(stored) == 120
    for (_, value), landed in zip(records, result.landed, strict=True):
        assert stored[(landed.partition, landed.offset)] == value
    # Only the failed records were sent again: 40 of them, twice more each.
    assert sum(len(call) for call in injector.sent) == 120 + 40 * 2
    assert {v for v, n in injector.attempts.items() if n > 1} == {
        str(i).encode() for i in range(0, 120, 3)
    }


def test_a_key_keeps_its_order_when_its_records_are_retried(make):
    # "a1" fails its first 3 sendings: nothing of key a after it may be sent meanwhile.
    stream, injector = make(
        shards=2, hooks=(lambda k: FailRecords(k, lambda v, n: v == b"a1" and n <= 3),)
    )
    records = [("a", f"a{i}".encode()) for i in range(5)] + [("b", b"b0"), ("b", b"b1")]

    result = stream.append_each(records)

    assert result.ok
    p = stream.partition_for("a")
    assert [r.value for r in read_partition(stream, p) if r.key == "a"] == [
        b"a0",
        b"a1",
        b"a2",
        b"a3",
        b"a4",
    ]
    # No call carried two records of one key, and a2 went only after a1 was stored.
    for call in injector.sent:
        keys = [v[:1] for v in call]
        assert len(keys) == len(set(keys))
    first_a2 = next(i for i, call in enumerate(injector.sent) if b"a2" in call)
    last_a1 = max(i for i, call in enumerate(injector.sent) if b"a1" in call)
    assert first_a2 > last_a1
    offsets = [result.landed[i].offset for i in range(5)]
    assert offsets == sorted(offsets)


def test_a_record_that_keeps_failing_is_reported_with_the_rest_of_its_key(make):
    stream, _ = make(
        shards=2,
        hooks=(lambda k: FailRecords(k, lambda v, n: v == b"a1"),),
        max_put_attempts=3,
        backoff_s=0.001,
    )

    result = stream.append_each(
        [("a", b"a0"), ("a", b"a1"), ("b", b"b0"), ("a", b"a2"), ("b", b"b1")]
    )

    assert result.failed == [1, 3]
    assert THROTTLED in result.errors[1]
    assert "3 attempts" in result.errors[1]
    assert result.errors[3].startswith("not sent")
    stored = sorted(r.value for p in range(2) for r in read_partition(stream, p))
    assert stored == [b"a0", b"b0", b"b1"]  # nothing acknowledged that is not stored
    with pytest.raises(StreamError, match="1 of 2 records not stored") as raised:
        stream.append([("a", b"a1"), ("c", b"c0")])
    assert not isinstance(raised.value, BackpressureError)  # c0 was stored


def test_when_nothing_can_be_stored_append_each_raises_backpressure(make):
    stream, _ = make(
        shards=2,
        hooks=(lambda k: FailRecords(k, lambda v, n: True),),
        max_put_attempts=2,
        backoff_s=0.001,
    )

    with pytest.raises(BackpressureError, match="none of 3 records stored"):
        stream.append_each([("a", b"1"), ("b", b"2"), ("a", b"3")])
    assert all(not read_partition(stream, p) for p in range(2))


# --- positions: 56-digit, sparse, opaque ---------------------------------------------------


def test_positions_work_with_56_digit_sparse_sequence_numbers(make):
    stream, _ = make(shards=2, hooks=(SparseSequenceNumbers,))
    [k0] = [k for k in (f"user-{i}" for i in range(50)) if stream.partition_for(k) == 0][:1]
    appended = stream.append([(k0, bytes([i])) for i in range(6)])

    offsets = [a.offset for a in appended]
    assert all(len(str(o)) == 56 for o in offsets)
    assert all(b - a == STEP for a, b in itertools.pairwise(offsets))  # sparse
    info = stream.partitions()[0]
    assert info.start_offset < offsets[0]
    assert info.end_offset == offsets[-1] + 1
    # Each record's own offset reads it; its next offset reads what follows.
    for i, offset in enumerate(offsets):
        [record] = stream.read(0, offset, 1)
        assert (record.offset, record.value) == (offset, bytes([i]))
        assert [r.value for r in stream.read(0, offset + 1, 10)] == [
            bytes([j]) for j in range(i + 1, 6)
        ]
    assert stream.read(0, info.end_offset, 10) == []
    with pytest.raises(OffsetOutOfRangeError):
        stream.read(0, info.end_offset + 1, 10)
    with pytest.raises(OffsetOutOfRangeError):
        stream.read(0, info.start_offset - 1, 10)

    # A consumer group commits the next offset; a new consumer resumes there; lag is a
    # record count, not a difference of sequence numbers.
    consumer = stream.consumer("g")
    [batch] = consumer.poll(max_records=4)
    assert batch.next_offset == offsets[3] + 1
    consumer.commit(batch)
    assert stream.committed("g", 0) == offsets[3] + 1
    assert stream.groups() == ["g"]
    assert stream.lag("g") == {0: 2, 1: 0}
    assert stream.lag("other") == {0: 6, 1: 0}
    [resumed] = stream.consumer("g").poll()
    assert [r.offset for r in resumed.records] == offsets[4:]
    stream.commit("g", 0, resumed.next_offset)
    assert stream.lag("g") == {0: 0, 1: 0}
    with pytest.raises(OffsetOutOfRangeError):
        stream.commit("g", 0, info.end_offset + 1)
    stream.commit("g", 0, offsets[1])  # a group may rewind
    assert stream.lag("g")[0] == 5


def test_a_group_member_starts_where_on_assign_says_with_real_positions(make):
    stream, _ = make(shards=2, hooks=(SparseSequenceNumbers,))
    [key] = [k for k in (f"user-{i}" for i in range(50)) if stream.partition_for(k) == 1][:1]
    offsets = [a.offset for a in stream.append([(key, bytes([i])) for i in range(5)])]

    class Listener:
        def on_assign(self, partitions: list[int]) -> dict[int, int]:
            return {1: offsets[2]}

        def on_revoke(self, partitions: list[int]) -> None:
            pass

    member = stream.group_consumer("g", "m", Listener(), session_timeout_s=2.0)
    try:
        batches: list[Batch] = []
        while sum(len(b.records) for b in batches) < 3:
            batches += member.poll(10)
    finally:
        member.close()
    assert [r.offset for b in batches for r in b.records] == offsets[2:]


# --- reads -------------------------------------------------------------------------------


def test_sequential_reads_reuse_their_shard_iterator(make):
    stream = make(shards=1)
    stream.append([("k", bytes([i])) for i in range(20)])
    calls: list[str] = []
    stream._kinesis.meta.events.register(
        "before-call.kinesis.GetShardIterator", lambda **_: calls.append("iterator")
    )
    position = stream.partitions()[0].start_offset
    calls.clear()

    values = []
    while records := stream.read(0, position, 3):
        values += [r.value for r in records]
        position = records[-1].offset + 1

    assert values == [bytes([i]) for i in range(20)]
    assert len(calls) <= 1  # the first read's iterator, then each read's next one


def test_records_carry_utc_times_and_binary_values(make):
    stream = make(shards=1)
    stream.append([("k", b"\x00\xff"), ("k", b"")])

    records = read_partition(stream, 0)

    assert [r.value for r in records] == [b"\x00\xff", b""]
    assert all(r.appended_at.utcoffset().total_seconds() == 0 for r in records)


# --- opening -----------------------------------------------------------------------------


def test_a_missing_stream_is_an_error_naming_it_unless_asked_to_create(aws_env):
    name = aws_env.unique("missing")
    with pytest.raises(StreamError, match=name):
        KinesisStream(name)
    with KinesisStream(name, create=True, shards=3) as created:
        assert created.num_partitions == 3
    with KinesisStream(name) as opened:  # now it exists
        assert opened.num_partitions == 3
        assert [opened.shard_id(p) for p in range(3)] == [f"shardId-{i:012d}" for i in range(3)]


def test_open_stream_opens_kinesis_urls(aws_env):
    name = aws_env.unique("factory")
    KinesisStream(name, create=True, shards=2).close()

    with open_stream(Settings(stream_url=f"kinesis://{name}")) as stream:
        assert isinstance(stream, KinesisStream)
        assert stream.num_partitions == 2
        assert stream.append([("k", b"v")])[0].partition == stream.partition_for("k")


@pytest.mark.parametrize(
    "url",
    ["kafka://x/y", "kinesis://", "kinesis://a/b", "kinesis://bad name", "kinesis://" + "a" * 129],
)
def test_malformed_kinesis_urls_are_config_errors(url):
    with pytest.raises(ConfigError):
        parse_kinesis_url(url)


def test_a_kinesis_url_names_the_stream():
    assert parse_kinesis_url("kinesis://play-pulse_events.v1") == "play-pulse_events.v1"


def test_concurrent_appends_from_threads_keep_each_keys_order(make):
    stream = make(shards=3)
    threads_n, appends_n = 4, 20

    def work(t: int) -> None:
        for i in range(appends_n):
            stream.append([(f"thread-{t}-key-{j}", f"{t}:{i}".encode()) for j in range(3)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    total = 0
    for p in range(3):
        records = read_partition(stream, p)
        total += len(records)
        offsets = [r.offset for r in records]
        assert offsets == sorted(set(offsets))  # unique and increasing
        by_key: dict[str, list[int]] = defaultdict(list)
        for r in records:
            by_key[r.key].append(int(r.value.decode().split(":")[1]))
        assert all(seq == list(range(appends_n)) for seq in by_key.values())
    assert total == threads_n * appends_n * 3


# --- model checks with real-looking positions ----------------------------------------------

KEYS = st.one_of(
    st.sampled_from([f"user-{i}" for i in range(6)]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
)
RECORDS = st.lists(st.tuples(KEYS, st.binary(max_size=32)), max_size=12)


@given(batches=st.lists(RECORDS, max_size=6), shards=st.integers(1, 4))
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_reading_every_shard_returns_what_was_appended(make, batches, shards):
    stream, _ = make(shards=shards, hooks=(SparseSequenceNumbers,))
    model: dict[int, list[tuple[str, bytes, int]]] = {p: [] for p in range(shards)}
    for batch in batches:
        appended = stream.append(batch)
        assert len(appended) == len(batch)
        for (key, value), a in zip(batch, appended, strict=True):
            assert a.partition == stream.partition_for(key)
            model[a.partition].append((key, value, a.offset))

    infos = stream.partitions()
    for p in range(shards):
        records = read_partition(stream, p)
        # Every record where append said; a key's records in append order (the records
        # of different keys may be stored in another order than appended: one record
        # per key per PutRecords call).
        assert [(r.key, r.value, r.offset) for r in records] == sorted(model[p], key=lambda t: t[2])
        for key in {k for k, _, _ in model[p]}:
            assert [r.value for r in records if r.key == key] == [
                v for k, v, _ in model[p] if k == key
            ]
        offsets = [r.offset for r in records]
        assert offsets == sorted(set(offsets))
        if offsets:
            assert infos[p].start_offset < offsets[0]
            assert infos[p].end_offset == offsets[-1] + 1
        else:
            assert infos[p].end_offset == infos[p].start_offset


class Quiet:
    """A rebalance listener that starts every partition at the group's checkpoint."""

    def on_assign(self, partitions: list[int]) -> dict[int, int]:
        return {}

    def on_revoke(self, partitions: list[int]) -> None:
        pass


def poll_until(member: Any, n: int, max_records: int) -> list[Batch]:
    batches: list[Batch] = []
    while sum(len(b.records) for b in batches) < n:
        batches += member.poll(max_records)
    return batches


def test_a_replayed_batch_comes_again_and_an_older_commit_rewinds(make):
    stream, _ = make(shards=2, hooks=(SparseSequenceNumbers,))
    [key] = [k for k in (f"user-{i}" for i in range(50)) if stream.partition_for(k) == 1][:1]
    stream.append([(key, bytes([i])) for i in range(6)])

    first = stream.group_consumer("g", "m1", Quiet(), session_timeout_s=2.0)
    try:
        batches = poll_until(first, 6, 4)
        assert [len(b.records) for b in batches] == [4, 2]
        first.commit(batches[0])
    finally:
        first.close()
    assert stream.committed("g", 1) == batches[0].next_offset
    assert stream.lag("g")[1] == 2

    second = stream.group_consumer("g", "m2", Quiet(), session_timeout_s=2.0)
    try:
        [again] = poll_until(second, 2, 10)
        assert again == batches[1]  # the same records at the same positions
        second.commit(again)
        assert stream.lag("g")[1] == 0
        second.commit(batches[0])  # a replayed older batch rewinds the group
    finally:
        second.close()
    assert stream.committed("g", 1) == batches[0].next_offset

    third = stream.group_consumer("g", "m3", Quiet(), session_timeout_s=2.0)
    try:
        [rewound] = poll_until(third, 2, 10)
    finally:
        third.close()
    assert [r.value for r in rewound.records] == [bytes([4]), bytes([5])]


def test_append_offsets_spans_each_partitions_records_when_keys_interleave(make):
    # a0 a1 b0 in one partition: one record per key per call stores a0 b0, then a1, so
    # a partition's offsets are not in the order of the records appended.
    stream = make(shards=1)
    ranges = stream.append_offsets([("a", b"a0"), ("a", b"a1"), ("b", b"b0")])

    records = read_partition(stream, 0)
    assert [r.value for r in records] == [b"a0", b"b0", b"a1"]
    assert ranges == {0: range(records[0].offset, records[-1].offset + 1)}
    assert stream.append_offsets([]) == {}


# --- group leases ------------------------------------------------------------------------


def test_a_lease_has_one_owner_until_it_expires_or_is_released(make, aws_env):
    one = make(shards=3)
    # A second stream object on the same Kinesis stream: another process of the group.
    other = KinesisStream(one.name)
    try:
        view = one.coordinate("g", "a", claim=[0, 1], session_timeout_s=10, now_s=1000.0)
        assert view.owned == {0, 1}
        assert view.members == ["a"]
        # b cannot take a's live leases (conditional writes), only the free one.
        view = other.coordinate("g", "b", claim=[0, 1, 2], session_timeout_s=10, now_s=1001.0)
        assert view.owned == {2}
        assert view.members == ["a", "b"]
        # a renews (its leases now run to 1015); a releases 1, which b then takes.
        view = one.coordinate("g", "a", release=[1], session_timeout_s=10, now_s=1005.0)
        assert view.owned == {0}
        view = other.coordinate("g", "b", claim=[0, 1], session_timeout_s=10, now_s=1006.0)
        assert view.owned == {1, 2}
        # a stops renewing: after its lease expires, b takes partition 0 and a is gone.
        view = other.coordinate("g", "b", claim=[0], session_timeout_s=10, now_s=1016.0)
        assert view.owned == {0, 1, 2}
        assert view.members == ["b"]
        # a, back, owns nothing; b leaves and frees everything at once.
        assert one.coordinate("g", "a", session_timeout_s=10, now_s=1017.0).owned == frozenset()
        other.leave("g", "b")
        view = one.coordinate("g", "a", claim=[0, 1, 2], session_timeout_s=10, now_s=1018.0)
        assert view.owned == {0, 1, 2}
        assert view.members == ["a"]
        # Leases are per group.
        assert other.coordinate("h", "b", claim=[0], session_timeout_s=10, now_s=1018.0).owned == {
            0
        }
    finally:
        other.close()


def test_a_put_records_call_throttled_as_a_whole_is_sent_again(make):
    stream = make(shards=2, backoff_s=0.001)
    refused: list[int] = []

    def throttle(**_: Any) -> None:
        if len(refused) < 2:  # the first two calls, past botocore's own retries
            refused.append(1)
            raise ClientError(
                {"Error": {"Code": "LimitExceededException", "Message": "Rate exceeded"}},
                "PutRecords",
            )

    stream._kinesis.meta.events.register("before-call.kinesis.PutRecords", throttle)

    result = stream.append_each([(f"user-{i}", b"v") for i in range(10)])

    assert result.ok
    assert len(refused) == 2
    assert sum(len(read_partition(stream, p)) for p in range(2)) == 10
