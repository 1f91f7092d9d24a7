"""The contract every event stream backend must honour.

Every test here runs once per backend through the ``stream_factory`` / ``stream``
fixtures of ``conftest.py`` (SQLite on a real file, memory; Kafka and Kinesis later).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from playpulse.errors import OffsetOutOfRangeError, StreamError
from playpulse.stream import Appended, EventStream, PartitionInfo, Record
from playpulse.stream.base import GroupPartitionHealth, stream_health

FAR_FUTURE = timedelta(days=365 * 100)


def keys_for(stream: EventStream, partition: int, n: int, prefix: str = "user") -> list[str]:
    """``n`` distinct keys that ``stream`` places in ``partition``."""
    keys = []
    i = 0
    while len(keys) < n:
        key = f"{prefix}-{i}"
        if stream.partition_for(key) == partition:
            keys.append(key)
        i += 1
    return keys


def read_all(stream: EventStream, partition: int, batch: int = 1000) -> list[Record]:
    """Every retained record of ``partition``, read from its start offset in batches."""
    offset = stream.partitions()[partition].start_offset
    out: list[Record] = []
    while records := stream.read(partition, offset, batch):
        out.extend(records)
        offset = records[-1].offset + 1
    return out


def end_offsets(stream: EventStream) -> list[int]:
    return [info.end_offset for info in stream.partitions()]


def offsets_in(appended: list[Appended], partition: int) -> list[int]:
    """The offsets ``append`` reported for the records of ``partition``, in input order.

    Offsets are opaque outside the backends (``stream/base.py``): the tests take them from
    what ``append`` and ``read`` return, compare them and hand them back, and never
    compute one from another (Kinesis' are sparse sequence numbers).
    """
    return [a.offset for a in appended if a.partition == partition]


def skip_unless_it_manages_retention(stream: EventStream) -> None:
    """Skip the test on a stream whose broker keeps retention and size (Kafka): there
    ``enforce_retention`` deletes nothing and ``stored_bytes`` / ``lost`` are not known
    (:attr:`EventStream.manages_retention`)."""
    if not stream.manages_retention:
        pytest.skip(
            f"{type(stream).__name__} leaves retention, size and lost records to its broker "
            "(manages_retention is False)"
        )


def poll_all(consumer, max_records: int = 10_000) -> list:
    """Poll until caught up; the batches in the order they came."""
    batches = []
    while polled := consumer.poll(max_records):
        batches.extend(polled)
    return batches


# --- a fresh stream ------------------------------------------------------------------


def test_new_stream_is_empty(stream_factory):
    stream = stream_factory(num_partitions=3)

    assert stream.num_partitions == 3
    infos = stream.partitions()
    assert [info.partition for info in infos] == [0, 1, 2]
    assert all(info.start_offset == info.end_offset for info in infos)
    assert all(info.newest_offset is None and info.count == 0 for info in infos)
    assert stream.groups() == []
    for p in range(3):
        assert stream.read(p, infos[p].start_offset, 10) == []
        assert stream.committed("g", p) is None
    assert stream.lag("g") == {0: 0, 1: 0, 2: 0}
    if stream.manages_retention:
        assert stream.lost("g") == {0: 0, 1: 0, 2: 0}
        assert stream.stored_bytes() == 0
    else:
        assert stream.max_bytes is None
        assert stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE) == 0
        with pytest.raises(StreamError):
            stream.stored_bytes()
        with pytest.raises(StreamError):
            stream.lost("g")


def test_partition_for_is_deterministic_and_in_range(stream_factory):
    a = stream_factory(num_partitions=5)
    b = stream_factory(num_partitions=5)
    keys = [f"user-{i}" for i in range(200)] + ["", "é", "日本語", "a" * 1000]

    placed = [a.partition_for(k) for k in keys]

    assert placed == [b.partition_for(k) for k in keys]
    assert all(0 <= p < 5 for p in placed)
    # 200 distinct keys over 5 partitions: a partitioner that ignores the key fails this.
    assert set(placed) == set(range(5))


def test_context_manager_returns_the_stream(stream):
    with stream as entered:
        assert entered is stream
        [appended] = entered.append([("k", b"v")])
        assert appended.partition == stream.partition_for("k")
        [record] = entered.read(appended.partition, appended.offset, 10)
        assert (record.offset, record.key, record.value) == (appended.offset, "k", b"v")


# --- append ----------------------------------------------------------------------------


def test_empty_append_returns_empty_list_and_changes_nothing(stream):
    before = stream.partitions()
    assert stream.append([]) == []
    assert stream.partitions() == before
    assert all(info.start_offset == info.end_offset for info in before)


def test_append_returns_positions_in_input_order(stream):
    keys = [f"user-{i % 7}" for i in range(40)]
    records = [(key, f"v{i}".encode()) for i, key in enumerate(keys)]

    appended = stream.append(records)

    assert len(appended) == len(records)
    assert all(isinstance(a, Appended) for a in appended)
    assert [a.partition for a in appended] == [stream.partition_for(k) for k in keys]
    # Within each partition the offsets grow in input order (the keys take turns, so even
    # Kinesis, one record per key per PutRecords call, stores them in this order), and
    # the partition holds these records and no other.
    for p in range(stream.num_partitions):
        offsets = offsets_in(appended, p)
        assert offsets == sorted(set(offsets))
        assert [r.offset for r in read_all(stream, p)] == offsets
    # Each position holds the record that was reported there.
    for (key, value), a in zip(records, appended, strict=True):
        [record] = stream.read(a.partition, a.offset, 1)
        assert (record.partition, record.offset, record.key, record.value) == (
            a.partition,
            a.offset,
            key,
            value,
        )


def test_append_offsets_gives_each_partition_the_range_append_would(stream_factory):
    keys = [f"user-{i % 7}" for i in range(40)]
    records = [(key, f"v{i}".encode()) for i, key in enumerate(keys)]
    per_record, per_partition = stream_factory(), stream_factory()
    per_record.append([("warm", b"up")])
    per_partition.append([("warm", b"up")])

    ranges = per_partition.append_offsets(records)

    appended = per_record.append(records)
    assert set(ranges) == {a.partition for a in appended}
    for p, r in ranges.items():
        want = [v for k, v in records if per_partition.partition_for(k) == p]
        # The range spans the partition's records of this call, first to last, in input
        # order, and no other record (offsets are opaque: on Kinesis the range also
        # holds sequence numbers that are no record's).
        stored = [rec for rec in read_all(per_partition, p) if rec.offset in r]
        assert [rec.value for rec in stored] == want
        assert (stored[0].offset, stored[-1].offset) == (r.start, r[-1])
        assert r.stop == per_partition.partitions()[p].end_offset
        # As ``append`` placed the same records in the other stream.
        assert [
            rec.value for rec in read_all(per_record, p) if rec.offset in offsets_in(appended, p)
        ] == want
    assert per_partition.append_offsets([]) == {}


def test_offsets_grow_strictly_across_appends(stream):
    [key] = keys_for(stream, 2, 1)
    before = stream.partitions()
    offsets = []
    for i in range(5):
        appended = stream.append([(key, b"x")] * (i + 1))
        assert {a.partition for a in appended} == {2}
        offsets += [a.offset for a in appended]

    assert len(offsets) == 15
    assert offsets == sorted(set(offsets))  # growing across appends, never reused
    info = stream.partitions()[2]
    assert info.start_offset == before[2].start_offset <= offsets[0]
    assert info.newest_offset == offsets[-1]
    assert info.end_offset > offsets[-1]
    assert [r.offset for r in read_all(stream, 2)] == offsets
    assert stream.read(2, info.end_offset, 10) == []
    assert stream.lag("g")[2] == 15
    # The other partitions are untouched.
    assert [i for i in stream.partitions() if i.partition != 2] == [
        i for i in before if i.partition != 2
    ]


def test_same_key_keeps_append_order(stream):
    # Two keys in the same partition, interleaved within and across appends.
    a, b = keys_for(stream, 1, 2)
    stream.append([(a, b"a0"), (b, b"b0"), (a, b"a1")])
    stream.append([(b, b"b1"), (a, b"a2"), (b, b"b2")])
    stream.append([(a, b"a3")])

    records = read_all(stream, 1)

    assert [r.value for r in records if r.key == a] == [b"a0", b"a1", b"a2", b"a3"]
    assert [r.value for r in records if r.key == b] == [b"b0", b"b1", b"b2"]
    assert [r.value for r in records] == [b"a0", b"b0", b"a1", b"b1", b"a2", b"b2", b"a3"]


def test_records_carry_their_fields_and_utc_append_time(stream):
    values = [b"", b"\x00\xff binary \x00", "ünïcödé".encode(), b"x" * 100_000]
    [key] = keys_for(stream, 0, 1)
    before = datetime.now(UTC)
    stream.append([(key, v) for v in values])

    records = stream.read(0, stream.partitions()[0].start_offset, 10)

    assert [r.value for r in records] == values
    assert all(type(r.value) is bytes for r in records)
    assert all(r.key == key and r.partition == 0 for r in records)
    for r in records:
        assert r.appended_at.tzinfo is not None
        assert r.appended_at.utcoffset() == timedelta(0)
        # Not a timing check: catches an append time in the wrong epoch or time zone.
        assert abs(r.appended_at - before) < timedelta(hours=1)
    # One append, one partition: append times never go backwards with offsets.
    times = [r.appended_at for r in records]
    assert times == sorted(times)


def test_concurrent_appends_from_threads_keep_offsets_unique_and_per_key_order(stream):
    threads_n, appends_n = 4, 30
    landed: list[Appended] = []
    landed_lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(appends_n):
            appended = stream.append(
                [(f"thread-{t}-key-{j}", f"{t}:{i}".encode()) for j in range(3)]
            )
            with landed_lock:
                landed.extend(appended)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    total = 0
    for p in range(stream.num_partitions):
        records = read_all(stream, p)
        total += len(records)
        offsets = [r.offset for r in records]
        # Unique and growing, and exactly the positions the appends reported.
        assert offsets == sorted(set(offsets))
        assert offsets == sorted(offsets_in(landed, p))
        if records:
            assert stream.partitions()[p].newest_offset == offsets[-1]
        by_key: dict[str, list[int]] = defaultdict(list)
        for r in records:
            by_key[r.key].append(int(r.value.decode().split(":")[1]))
        for sequence in by_key.values():
            assert sequence == list(range(appends_n))
    assert total == threads_n * appends_n * 3


# --- read ------------------------------------------------------------------------------


def test_read_from_an_offset_honours_max_records(stream):
    [key] = keys_for(stream, 3, 1)
    offsets = [a.offset for a in stream.append([(key, f"v{i}".encode()) for i in range(10)])]
    info = stream.partitions()[3]

    assert [(r.offset, r.value) for r in stream.read(3, offsets[4], 100)] == [
        (offsets[i], f"v{i}".encode()) for i in range(4, 10)
    ]
    assert [r.offset for r in stream.read(3, offsets[4], 3)] == offsets[4:7]
    assert [r.value for r in stream.read(3, offsets[9], 5)] == [b"v9"]
    assert [r.offset for r in stream.read(3, info.start_offset, 1)] == offsets[:1]
    assert stream.read(3, info.end_offset, 5) == []  # at the end


@pytest.mark.parametrize("batch", [1, 3, 7, 100])
def test_reading_in_batches_returns_every_record_once(stream, batch):
    [key] = keys_for(stream, 0, 1)
    stream.append([(key, bytes([i])) for i in range(20)])

    assert [r.value for r in read_all(stream, 0, batch)] == [bytes([i]) for i in range(20)]


def test_read_outside_the_retained_range_raises(stream):
    [key] = keys_for(stream, 1, 1)
    stream.append([(key, b"v")] * 3)
    info, empty = stream.partitions()[1], stream.partitions()[0]
    # The probes are the integers just outside the range the backend reports (not
    # positions: ``read`` must refuse any integer below the start or above the end).

    with pytest.raises(OffsetOutOfRangeError):
        stream.read(1, info.end_offset + 1, 10)  # above the end offset
    with pytest.raises(OffsetOutOfRangeError):
        stream.read(1, info.start_offset - 1, 10)  # below the start offset
    assert empty.start_offset == empty.end_offset  # an empty partition has one position
    with pytest.raises(OffsetOutOfRangeError):
        stream.read(0, empty.end_offset + 1, 10)
    assert stream.read(0, empty.start_offset, 10) == []
    assert stream.read(1, info.end_offset, 10) == []
    assert len(stream.read(1, info.start_offset, 10)) == 3


def test_read_of_a_missing_partition_raises_stream_error(stream):
    with pytest.raises(StreamError):
        stream.read(stream.num_partitions, 0, 10)
    with pytest.raises(StreamError):
        stream.read(-1, 0, 10)


# --- consumer groups -----------------------------------------------------------------


def test_poll_returns_one_ordered_batch_per_partition_with_records(stream):
    k0 = keys_for(stream, 0, 2)
    k2 = keys_for(stream, 2, 1)
    appended = stream.append([(k0[0], b"a"), (k2[0], b"b"), (k0[1], b"c"), (k0[0], b"d")])

    batches = stream.consumer("g").poll()

    infos = stream.partitions()
    assert [b.partition for b in batches] == [0, 2]
    assert [r.value for r in batches[0].records] == [b"a", b"c", b"d"]
    assert [r.offset for r in batches[0].records] == offsets_in(appended, 0)
    # Read to the end: what follows the batch is the partition's end.
    assert batches[0].next_offset == infos[0].end_offset
    assert [r.value for r in batches[1].records] == [b"b"]
    assert [r.offset for r in batches[1].records] == offsets_in(appended, 2)
    assert batches[1].next_offset == infos[2].end_offset


def test_poll_advances_without_committing(stream):
    [key] = keys_for(stream, 0, 1)
    stream.append([(key, b"1"), (key, b"2")])
    consumer = stream.consumer("g")

    assert [r.value for b in consumer.poll() for r in b.records] == [b"1", b"2"]
    assert consumer.poll() == []  # caught up
    assert stream.committed("g", 0) is None
    assert stream.groups() == []

    stream.append([(key, b"3")])
    assert [r.value for b in consumer.poll() for r in b.records] == [b"3"]


def test_poll_honours_max_records_per_partition(stream):
    keys0 = keys_for(stream, 0, 1)
    keys1 = keys_for(stream, 1, 1)
    stream.append([(keys0[0], bytes([i])) for i in range(5)])
    stream.append([(keys1[0], bytes([i])) for i in range(3)])
    consumer = stream.consumer("g")

    first = consumer.poll(max_records=2)
    assert [(b.partition, len(b.records)) for b in first] == [(0, 2), (1, 2)]
    rest = poll_all(consumer, max_records=2)
    values = defaultdict(list)
    for b in first + rest:
        values[b.partition] += [r.value for r in b.records]
    assert values == {0: [bytes([i]) for i in range(5)], 1: [bytes([i]) for i in range(3)]}


def test_new_consumer_resumes_at_the_committed_offset(stream):
    [key] = keys_for(stream, 1, 1)
    offsets = [a.offset for a in stream.append([(key, bytes([i])) for i in range(6)])]
    consumer = stream.consumer("g")
    [batch] = consumer.poll(max_records=4)
    assert [r.offset for r in batch.records] == offsets[:4]
    # What follows the batch: after its last record, not after the next one.
    assert offsets[3] < batch.next_offset <= offsets[4]
    consumer.commit(batch)

    assert stream.committed("g", 1) == batch.next_offset
    assert stream.groups() == ["g"]
    assert stream.lag("g") == {0: 0, 1: 2, 2: 0, 3: 0}

    [resumed] = stream.consumer("g").poll()
    assert [r.offset for r in resumed.records] == offsets[4:]
    assert [r.value for r in resumed.records] == [bytes([4]), bytes([5])]


def test_uncommitted_records_are_redelivered_to_a_new_consumer(stream):
    keys = [f"user-{i}" for i in range(10)]
    stream.append([(k, k.encode()) for k in keys])
    first = poll_all(stream.consumer("g"))
    # The first consumer "crashes" before committing: everything comes again.
    again = poll_all(stream.consumer("g"))

    assert again == first
    assert sorted(r.key for b in again for r in b.records) == sorted(keys)

    # After a partial commit only the uncommitted partitions come again.
    consumer = stream.consumer("g")
    batches = consumer.poll()
    assert len(batches) > 1, "10 keys should reach more than one partition"
    consumer.commit(batches[0])
    redelivered = poll_all(stream.consumer("g"))
    assert [b.partition for b in redelivered] == [b.partition for b in batches[1:]]
    assert redelivered == batches[1:]


def test_groups_are_independent(stream):
    [key] = keys_for(stream, 2, 1)
    offsets = [a.offset for a in stream.append([(key, bytes([i])) for i in range(5)])]

    a = stream.consumer("a")
    [batch] = a.poll(max_records=3)
    a.commit(batch)

    assert stream.committed("a", 2) == batch.next_offset
    assert stream.committed("b", 2) is None
    assert stream.groups() == ["a"]
    [b_batch] = stream.consumer("b").poll()
    assert [r.offset for r in b_batch.records] == offsets
    assert stream.lag("a")[2] == 2
    assert stream.lag("b")[2] == 5

    stream.commit("b", 2, b_batch.next_offset)
    assert stream.groups() == ["a", "b"]
    assert stream.committed("a", 2) == batch.next_offset  # untouched by b's commit
    assert stream.committed("b", 2) == b_batch.next_offset
    assert stream.lag("b")[2] == 0
    assert stream.lag("a")[2] == 2


def test_commit_bounds(stream):
    [key] = keys_for(stream, 0, 1)
    offsets = [a.offset for a in stream.append([(key, b"v")] * 3)]
    infos = stream.partitions()
    # Past the end: the integer just above the end the backend reports (not a position).

    with pytest.raises(OffsetOutOfRangeError):
        stream.commit("g", 0, infos[0].end_offset + 1)  # past the end offset
    with pytest.raises(OffsetOutOfRangeError):
        stream.commit("g", 1, infos[1].end_offset + 1)  # partition 1 is empty
    with pytest.raises(OffsetOutOfRangeError):
        stream.commit("g", 0, -1)  # never an offset (Kafka's, Kinesis' are >= 0)
    assert stream.committed("g", 0) is None
    assert stream.committed("g", 1) is None
    assert stream.groups() == []

    stream.commit("g", 0, infos[0].end_offset)  # the end offset itself: everything processed
    assert stream.committed("g", 0) == infos[0].end_offset
    assert stream.lag("g")[0] == 0
    stream.commit("g", 0, offsets[1])  # a group may rewind
    assert stream.committed("g", 0) == offsets[1]
    assert stream.lag("g")[0] == 2


def test_lag_per_partition(stream):
    counts = {0: 4, 1: 0, 2: 7, 3: 1}
    offsets: dict[int, list[int]] = {}
    for p, n in counts.items():
        if n:
            [key] = keys_for(stream, p, 1)
            offsets[p] = [a.offset for a in stream.append([(key, b"v")] * n)]

    assert stream.lag("g") == counts
    stream.commit("g", 2, offsets[2][5])  # the 6th record is the next to read: 2 left
    stream.commit("g", 0, stream.partitions()[0].end_offset)
    assert stream.lag("g") == {0: 0, 1: 0, 2: 2, 3: 1}
    assert stream.lag("other") == counts


def test_consumer_reads_only_its_assigned_partitions(stream):
    appended = stream.append([(f"user-{i}", b"v") for i in range(40)])
    assert {a.partition for a in appended} == {0, 1, 2, 3}, "40 keys should reach all 4"

    batches = poll_all(stream.consumer("g", partitions=[1, 3]))

    assert {b.partition for b in batches} == {1, 3}
    assert sorted((b.partition, r.offset) for b in batches for r in b.records) == sorted(
        (a.partition, a.offset) for a in appended if a.partition in (1, 3)
    )


def test_consumer_seek(stream):
    [key] = keys_for(stream, 0, 1)
    offsets = [a.offset for a in stream.append([(key, bytes([i])) for i in range(5)])]
    consumer = stream.consumer("g")
    poll_all(consumer)

    consumer.seek(0, offsets[2])

    [batch] = consumer.poll()
    assert [r.offset for r in batch.records] == offsets[2:]
    assert [r.value for r in batch.records] == [bytes([2]), bytes([3]), bytes([4])]
    assert stream.committed("g", 0) is None


# --- append_each -----------------------------------------------------------------------


def test_append_each_stores_every_record_and_reports_none_failed(stream):
    records = [(f"user-{i % 9}", f"v{i}".encode()) for i in range(50)]

    result = stream.append_each(records)

    assert result.ok
    assert result.errors == {}
    assert result.failed == []
    assert len(result.landed) == len(records)
    for (key, value), landed in zip(records, result.landed, strict=True):
        assert landed is not None
        assert landed.partition == stream.partition_for(key)
        [record] = stream.read(landed.partition, landed.offset, 1)
        assert (record.offset, record.key, record.value) == (landed.offset, key, value)
    # The stream holds these records and no other.
    stored = [
        (r.partition, r.offset) for p in range(stream.num_partitions) for r in read_all(stream, p)
    ]
    assert sorted(stored) == sorted((a.partition, a.offset) for a in result.landed if a)
    assert len(set(stored)) == len(records)
    assert stream.append_each([]).landed == []


# --- consumer group members ------------------------------------------------------------


class RecordingListener:
    """A :class:`RebalanceListener` that records what it hears and starts the partitions
    in ``starts`` at the given offsets (the others at the group's committed offset)."""

    def __init__(self, starts: dict[int, int] | None = None) -> None:
        self.starts = starts or {}
        self.events: list[tuple[str, list[int]]] = []
        self.owned: set[int] = set()

    def on_assign(self, partitions: list[int]) -> dict[int, int]:
        assert not self.owned & set(partitions), "assigned a partition it already owns"
        self.events.append(("assign", partitions))
        self.owned |= set(partitions)
        return {p: self.starts[p] for p in partitions if p in self.starts}

    def on_revoke(self, partitions: list[int]) -> None:
        assert set(partitions) <= self.owned, "revoked a partition it did not own"
        self.events.append(("revoke", partitions))
        self.owned -= set(partitions)


#: Rebalances within this, heartbeats a sixth of it: short, for fast tests.
SESSION_S = 2.0
#: The session of the two members sharing the partitions. Longer than SESSION_S: on Kafka's
#: mock cluster a rebalance waits session - 1 s for every member to rejoin and a member is
#: dropped after a session without a heartbeat, so with 2 s a worker starved for about a
#: second (a loaded CI machine) was dropped mid-test and the other member took its share.
SHARED_SESSION_S = 6.0
#: A guard against a group that never gets there (not a timing assertion: every loop
#: ends as soon as its condition holds).
GIVE_UP_S = 60.0


def poll_members(members, until, max_records: int = 50, commit: bool = True) -> list:
    """Poll every ``(consumer, listener)`` of ``members`` in turn, committing each batch
    unless ``commit`` is false, until ``until(read)`` holds, where ``read`` is the
    ``(member, partition, offset, value)`` of every record read so far (returned).

    Checks on the way that every batch is of a partition its member owns and its
    listener was told of, and that no partition has two owners at once.
    """
    read: list = []
    deadline = time.monotonic() + GIVE_UP_S
    while not until(read):
        assert time.monotonic() < deadline, "the group did not get there"
        for consumer, listener in members:
            for batch in consumer.poll(max_records):
                assert batch.partition in listener.owned, "a record before its on_assign"
                assert batch.partition in consumer.assignment()
                assert consumer.owns([batch.partition])
                assert batch.next_offset == batch.records[-1].offset + 1
                read += [(consumer.member, r.partition, r.offset, r.value) for r in batch.records]
                if commit:
                    consumer.commit(batch)
        owners = [set(c.assignment()) for c, _ in members]
        for i, mine in enumerate(owners):
            for theirs in owners[i + 1 :]:
                assert not mine & theirs, "a partition with two owners"
    return read


def test_on_assign_says_where_each_partition_starts(stream):
    [k0] = keys_for(stream, 0, 1)
    [k1] = keys_for(stream, 1, 1)
    appended = stream.append(
        [(k0, bytes([i])) for i in range(6)] + [(k1, bytes([i])) for i in range(4)]
    )
    offsets0, offsets1 = offsets_in(appended, 0), offsets_in(appended, 1)
    stream.commit("g", 1, offsets1[1])
    listener = RecordingListener(starts={0: offsets0[3]})
    member = stream.group_consumer("g", "m", listener, session_timeout_s=SESSION_S)
    try:
        read = poll_members([(member, listener)], lambda read: len(read) >= 6)
    finally:
        member.close()

    # Partition 0 from where on_assign said, partition 1 from the committed offset.
    assert sorted((p, o, v) for _, p, o, v in read) == [
        (0, offsets0[i], bytes([i])) for i in range(3, 6)
    ] + [(1, offsets1[i], bytes([i])) for i in range(1, 4)]
    assert listener.events[0] == ("assign", [0, 1, 2, 3])
    assert listener.events[-1] == ("revoke", [0, 1, 2, 3])  # close() revokes what it owns
    assert listener.owned == set()
    infos = stream.partitions()
    assert stream.committed("g", 0) == infos[0].end_offset
    assert stream.committed("g", 1) == infos[1].end_offset


def test_a_replayed_batch_comes_again_and_an_older_commit_rewinds(stream):
    [key] = keys_for(stream, 2, 1)
    stream.append([(key, bytes([i])) for i in range(6)])

    # A member reads everything but commits only its first batch, then goes away.
    first = stream.group_consumer("g", "m1", RecordingListener(), session_timeout_s=SESSION_S)
    try:
        batches = []
        deadline = time.monotonic() + GIVE_UP_S
        while sum(len(b.records) for b in batches) < 6:
            assert time.monotonic() < deadline, "the member got no partition"
            batches += first.poll(4)
        assert [len(b.records) for b in batches] == [4, 2]
        first.commit(batches[0])
    finally:
        first.close()
    assert stream.committed("g", 2) == batches[0].next_offset
    assert stream.lag("g")[2] == 2

    # The next member of the group reads the uncommitted batch again, record for record;
    # then a replayed older batch is committed again: the group rewinds to it.
    listener = RecordingListener()
    second = stream.group_consumer("g", "m2", listener, session_timeout_s=SESSION_S)
    try:
        again = poll_members([(second, listener)], lambda read: len(read) >= 2)
        assert stream.committed("g", 2) == batches[1].next_offset
        assert stream.lag("g")[2] == 0
        second.commit(batches[0])
    finally:
        second.close()
    assert [(p, o, v) for _, p, o, v in again] == [
        (2, r.offset, r.value) for r in batches[1].records
    ]
    assert stream.committed("g", 2) == batches[0].next_offset
    assert stream.lag("g")[2] == 2

    listener = RecordingListener()
    third = stream.group_consumer("g", "m3", listener, session_timeout_s=SESSION_S)
    try:
        rewound = poll_members([(third, listener)], lambda read: len(read) >= 2)
    finally:
        third.close()
    assert [(o, v) for _, _, o, v in rewound] == [(r.offset, r.value) for r in batches[1].records]
    assert [v for _, _, _, v in rewound] == [bytes([4]), bytes([5])]


def test_two_members_share_the_partitions_and_read_every_record_once(stream):
    def values(start: int, n: int) -> list[tuple[str, bytes]]:
        return [(f"user-{i}", str(i).encode()) for i in range(start, start + n)]

    stream.append(values(0, 100))
    la, lb = RecordingListener(), RecordingListener()
    a = stream.group_consumer("g", "a", la, session_timeout_s=SHARED_SESSION_S)
    b = stream.group_consumer("g", "b", lb, session_timeout_s=SHARED_SESSION_S)
    members = [(a, la), (b, lb)]
    everything = set(range(stream.num_partitions))
    try:
        # Both join: they split the partitions between them, reading the backlog once.
        read = poll_members(
            members,
            lambda read: (
                len(read) >= 100
                and a.assignment()
                and b.assignment()
                and set(a.assignment()) | set(b.assignment()) == everything
            ),
        )
        # While both own their share, new records go to the owner of their partition.
        stream.append(values(100, 100))
        read += poll_members(members, lambda more: len(more) >= 100)
        for member, partition, _, value in read:
            if int(value) >= 100:
                assert partition in (a if member == "a" else b).assignment()
        assert {m for m, _, _, v in read if int(v) >= 100} == {"a", "b"}
        assert sorted(int(v) for _, _, _, v in read) == list(range(200))  # each once

        # One leaves: the other takes every partition and reads what comes next.
        a.close()
        assert la.owned == set()
        poll_members([(b, lb)], lambda _: set(b.assignment()) == everything)
        stream.append(values(200, 50))
        later = poll_members([(b, lb)], lambda more: len(more) >= 50)
        assert sorted(int(v) for _, _, _, v in later) == list(range(200, 250))
    finally:
        a.close()
        b.close()
    assert lb.owned == set()
    assert stream.lag("g") == {p: 0 for p in range(stream.num_partitions)}


# --- retention -------------------------------------------------------------------------


def test_retention_with_now_keeps_everything(stream):
    stream.append([(f"user-{i}", b"v") for i in range(20)])
    before = stream.partitions()

    assert stream.enforce_retention(datetime.now(UTC)) == 0
    assert stream.partitions() == before
    assert sum(len(read_all(stream, p)) for p in range(4)) == 20


def test_retention_far_in_the_future_deletes_everything(stream):
    skip_unless_it_manages_retention(stream)
    stream.append([(f"user-{i}", b"v") for i in range(20)])
    ends = end_offsets(stream)

    deleted = stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE)

    assert deleted == 20
    assert stream.partitions() == [PartitionInfo(p, ends[p], ends[p]) for p in range(4)]
    for p in range(4):
        assert stream.read(p, ends[p], 10) == []
        if ends[p]:
            with pytest.raises(OffsetOutOfRangeError):
                stream.read(p, 0, 10)
            with pytest.raises(OffsetOutOfRangeError):
                stream.read(p, ends[p] - 1, 10)
    # Nothing is left to delete.
    assert stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE) == 0


def test_offsets_are_not_reused_after_retention(stream):
    skip_unless_it_manages_retention(stream)
    [key] = keys_for(stream, 1, 1)
    stream.append([(key, b"old")] * 4)
    stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE)

    appended = stream.append([(key, b"new")] * 2)

    assert appended == [Appended(1, 4), Appended(1, 5)]
    assert stream.partitions()[1] == PartitionInfo(1, 4, 6)
    assert [(r.offset, r.value) for r in stream.read(1, 4, 10)] == [(4, b"new"), (5, b"new")]


def test_retention_deletes_exactly_the_records_older_than_the_cutoff(stream):
    skip_unless_it_manages_retention(stream)
    keys = keys_for(stream, 0, 2)
    stream.append([(keys[0], b"old-1"), (keys[1], b"old-2")])
    [last_old] = stream.read(0, 1, 1)
    # Let the clock move past the old records' append time (no timing is asserted).
    while datetime.now(UTC) <= last_old.appended_at + timedelta(milliseconds=1):
        pass
    stream.append([(keys[1], b"new-1"), (keys[0], b"new-2")])
    records = read_all(stream, 0)
    cutoff = records[2].appended_at  # the first new record's append time
    expected = [r for r in records if r.appended_at >= cutoff]
    assert [r.value for r in expected] == [b"new-1", b"new-2"]

    # ``now - retention`` equal to a record's append time keeps it...
    deleted = stream.enforce_retention(cutoff + timedelta(days=7))

    assert deleted == 2
    assert read_all(stream, 0) == expected
    assert stream.partitions()[0] == PartitionInfo(0, 2, 4)
    assert stream.enforce_retention(cutoff + timedelta(days=7)) == 0

    # ... one microsecond later it is deleted (with any other record appended then).
    at_cutoff = sum(1 for r in expected if r.appended_at == cutoff)
    assert stream.enforce_retention(cutoff + timedelta(days=7, microseconds=1)) == at_cutoff
    assert stream.partitions()[0] == PartitionInfo(0, 2 + at_cutoff, 4)


def test_retention_honours_the_configured_retention(stream_factory):
    short = stream_factory(retention=timedelta(minutes=1))
    skip_unless_it_manages_retention(short)
    short.append([("k", b"v")])
    [record] = short.read(short.partition_for("k"), 0, 1)

    assert short.enforce_retention(record.appended_at + timedelta(seconds=59)) == 0
    assert short.enforce_retention(record.appended_at + timedelta(minutes=1, seconds=1)) == 1


def test_consumer_whose_committed_offset_was_deleted_resumes_at_the_start(stream_factory):
    stream = stream_factory(max_bytes=0)  # over its size limit: committed or not, all goes
    skip_unless_it_manages_retention(stream)
    [key] = keys_for(stream, 3, 1)
    stream.append([(key, bytes([i])) for i in range(6)])
    stream.commit("g", 3, 2)
    stream.enforce_retention(datetime.now(UTC))
    stream.append([(key, b"after-1"), (key, b"after-2")])

    assert stream.partitions()[3] == PartitionInfo(3, 6, 8)
    assert stream.committed("g", 3) == 2
    # Kafka's lag: the 4 records deleted before "g" committed them still count...
    assert stream.lag("g")[3] == 6
    assert stream.lost("g")[3] == 4

    consumer = stream.consumer("g")
    [batch] = consumer.poll()
    assert [(r.offset, r.value) for r in batch.records] == [(6, b"after-1"), (7, b"after-2")]
    consumer.commit(batch)
    assert stream.committed("g", 3) == 8
    # ... until it commits past them; the lost count stays.
    assert stream.lag("g")[3] == 0
    assert stream.lost("g") == {0: 0, 1: 0, 2: 0, 3: 4}


def test_running_consumer_skips_to_the_start_after_retention(stream):
    skip_unless_it_manages_retention(stream)
    [key] = keys_for(stream, 2, 1)
    stream.append([(key, bytes([i])) for i in range(5)])
    consumer = stream.consumer("g")
    consumer.poll(max_records=1)  # position 1, then retention deletes 1..4
    stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE)
    stream.append([(key, b"new")])

    [batch] = consumer.poll()

    assert [(r.offset, r.value) for r in batch.records] == [(5, b"new")]


def one_record_per_batch(stream: EventStream, key: str, values: list[bytes]) -> None:
    """Append ``values`` under ``key``, one append (so one batch) each."""
    for value in values:
        stream.append([(key, value)])


def test_retention_by_age_keeps_what_a_group_has_not_committed(stream):
    skip_unless_it_manages_retention(stream)
    [k0] = keys_for(stream, 0, 1)
    [k1] = keys_for(stream, 1, 1)
    [k2] = keys_for(stream, 2, 1)
    for key in (k0, k1, k2):
        one_record_per_batch(stream, key, [b"a", b"b", b"c", b"d"])
    stream.commit("slow", 0, 1)
    stream.commit("fast", 0, 4)
    stream.commit("fast", 1, 3)  # "slow" never committed in partition 1: it keeps it all
    stream.commit("slow", 2, 4)
    stream.commit("fast", 2, 4)

    deleted = stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE)

    assert deleted == 1 + 0 + 4
    assert [(i.start_offset, i.end_offset) for i in stream.partitions()[:3]] == [
        (1, 4),
        (0, 4),
        (4, 4),
    ]
    assert stream.lag("slow") == {0: 3, 1: 4, 2: 0, 3: 0}
    assert stream.lag("fast") == {0: 0, 1: 1, 2: 0, 3: 0}
    assert stream.lost("slow") == stream.lost("fast") == {0: 0, 1: 0, 2: 0, 3: 0}
    # Once the slow group commits, the next retention deletes what it read.
    stream.commit("slow", 0, 3)
    assert stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE) == 2
    assert stream.partitions()[0].start_offset == 3


def test_retention_by_age_deletes_a_batch_only_when_all_its_records_are_committed(stream):
    skip_unless_it_manages_retention(stream)
    [key] = keys_for(stream, 1, 1)
    stream.append([(key, b"1"), (key, b"2"), (key, b"3")])  # one batch: offsets 0..2
    stream.append([(key, b"4")])
    stream.commit("g", 1, 2)

    assert stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE) == 0
    stream.commit("g", 1, 3)
    assert stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE) == 3
    assert stream.partitions()[1] == PartitionInfo(1, 3, 4)
    assert stream.lost("g")[1] == 0


def test_stored_bytes_grow_with_appends_and_shrink_with_retention(stream):
    skip_unless_it_manages_retention(stream)
    stream.append([(f"user-{i}", b"x" * 100) for i in range(8)])
    one = stream.stored_bytes()
    stream.append([(f"user-{i}", b"x" * 100) for i in range(8)])

    assert 8 * 100 <= one < stream.stored_bytes()
    stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE)
    assert stream.stored_bytes() == 0


def test_over_max_bytes_the_oldest_go_first_even_uncommitted_and_are_counted_lost(
    stream_factory,
):
    stream = stream_factory(max_bytes=10**9)
    skip_unless_it_manages_retention(stream)
    [k0] = keys_for(stream, 0, 1)
    [k1] = keys_for(stream, 1, 1)
    # Interleaved appends, so "oldest" runs across partitions.
    for _ in range(5):
        stream.append([(k0, b"x" * 1000)])
        stream.append([(k1, b"y" * 1000)])
    stream.commit("a", 0, 5)  # "a" has read all of partition 0, none of partition 1
    stream.commit("b", 1, 1)  # "b" one record of partition 1, none of partition 0
    assert stream.enforce_retention(datetime.now(UTC)) == 0  # within the limit
    batch_bytes = stream.stored_bytes() // 10
    stream.max_bytes = 4 * batch_bytes  # room for the 4 newest batches

    deleted = stream.enforce_retention(datetime.now(UTC))  # nothing is old

    assert deleted == 6
    assert [(i.start_offset, i.end_offset) for i in stream.partitions()[:2]] == [(3, 5), (3, 5)]
    assert stream.stored_bytes() <= stream.max_bytes
    assert stream.lost("a") == {0: 0, 1: 3, 2: 0, 3: 0}
    assert stream.lost("b") == {0: 3, 1: 2, 2: 0, 3: 0}
    assert stream.lost("nobody") == {0: 0, 1: 0, 2: 0, 3: 0}
    # Lag counts the lost records until the group commits past them (in a partition
    # where it never committed, it counts from the oldest record retained: lost tells).
    assert stream.lag("a") == {0: 0, 1: 2, 2: 0, 3: 0}
    assert stream.lag("b") == {0: 2, 1: 4, 2: 0, 3: 0}
    assert stream.enforce_retention(datetime.now(UTC)) == 0

    health = stream_health(stream)
    assert health.max_bytes == 4 * batch_bytes
    assert health.stored_bytes == stream.stored_bytes()
    assert health.records == 4
    assert health.lost_total() == 8
    assert health.lost_total("a") == 3
    assert health.lag_total("b") == 6
    assert health.lag_total() == 8
    assert GroupPartitionHealth("b", 1, 4, 2) in health.groups
    assert len(health.groups) == 2 * 4


def test_without_max_bytes_nothing_uncommitted_is_ever_deleted(stream):
    stream.append([(f"user-{i}", b"v" * 500) for i in range(40)])
    stream.commit("g", 0, 0)

    stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE)

    assert sum(stream.lag("g").values()) == 40
    if stream.manages_retention:
        assert stream.lost("g") == {p: 0 for p in range(4)}


# --- model checks ----------------------------------------------------------------------

KEYS = st.one_of(
    st.sampled_from([f"user-{i}" for i in range(6)]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
)
RECORDS = st.lists(st.tuples(KEYS, st.binary(max_size=32)), max_size=12)


def model_check_examples(request: pytest.FixtureRequest, n: int) -> int:
    """``n`` examples for a model check, fewer on Kinesis: there every stream call is an
    HTTP request to the moto server (some 300 per stateful example, ~8 ms each), and the
    Kinesis tests run their own model check with real-looking sparse positions; a third
    (at least 10) on Kafka, where every example creates a topic on the mock cluster
    (~0.2 s each)."""
    backend = request.node.callspec.params.get("stream_factory")
    if backend == "kinesis":
        return max(5, n // 6)
    return max(10, n // 3) if backend == "kafka" else n


def test_reading_every_partition_returns_what_was_appended(stream_factory, request):
    @given(batches=st.lists(RECORDS, max_size=10), num_partitions=st.integers(1, 5))
    @settings(max_examples=model_check_examples(request, 60), deadline=None)
    def check(batches, num_partitions):
        # The factory builds a fresh stream for every example.
        check_reading_every_partition(stream_factory, batches, num_partitions)

    check()


def check_reading_every_partition(stream_factory, batches, num_partitions):
    stream = stream_factory(num_partitions=num_partitions)
    # Per partition, (offset, key, value) of every record appended, in append order.
    model: dict[int, list[tuple[int, str, bytes]]] = {p: [] for p in range(num_partitions)}
    try:
        for batch in batches:
            newest = {p: max((o for o, _, _ in m), default=None) for p, m in model.items()}
            appended = stream.append(batch)
            assert len(appended) == len(batch)
            for (key, value), a in zip(batch, appended, strict=True):
                assert a.partition == stream.partition_for(key)
                # Every record lands after everything appended before this append.
                before = newest[a.partition]
                assert before is None or a.offset > before
                model[a.partition].append((a.offset, key, value))

        for p in range(num_partitions):
            records = read_all(stream, p)
            # Each record at the position append reported, in offset order, no other.
            assert [(r.offset, r.key, r.value) for r in records] == sorted(model[p])
            assert len({o for o, _, _ in model[p]}) == len(model[p])
            # A key's records in append order (the records of different keys in one
            # append may take a partition's offsets in another order: Kinesis).
            for key in {k for _, k, _ in model[p]}:
                assert [r.value for r in records if r.key == key] == [
                    v for _, k, v in model[p] if k == key
                ]
            info = stream.partitions()[p]
            if model[p]:
                assert info.start_offset <= records[0].offset
                assert info.newest_offset == records[-1].offset
                assert info.end_offset > records[-1].offset
            else:
                assert info.start_offset == info.end_offset
            assert stream.read(p, info.end_offset, 10) == []
            assert stream.lag("g")[p] == len(model[p])
    finally:
        stream.close()


class StreamMachine(RuleBasedStateMachine):
    """Appends, reads, consumes and retention against a plain model of the partitions.

    Positions are opaque (see :func:`offsets_in`): the model keeps the offsets the
    stream reported and compares them; a partition's start and end are taken from the
    stream where they may move (retention, appends), checked against the records on
    either side, and must not move otherwise.
    """

    factory = None  # set by the test

    @initialize(num_partitions=st.integers(1, 4))
    def open_stream(self, num_partitions):
        self.stream = type(self).factory(num_partitions=num_partitions)
        self.n = num_partitions
        infos = self.stream.partitions()
        assert all(i.start_offset == i.end_offset for i in infos)
        self.first_start = [i.start_offset for i in infos]
        self.start = list(self.first_start)
        self.end = [i.end_offset for i in infos]
        # Per partition, (offset, key, value) of each record retained, by offset.
        self.records: list[list[tuple[int, str, bytes]]] = [[] for _ in range(num_partitions)]
        # Per partition, the offsets of the records retention deleted.
        self.gone: list[list[int]] = [[] for _ in range(num_partitions)]
        # Per partition, the offsets of each append's batch still retained, oldest first.
        self.batches: list[list[list[int]]] = [[] for _ in range(num_partitions)]
        self.committed: dict[tuple[str, int], int] = {}
        self.lost: dict[tuple[str, int], int] = {}

    def offsets(self, p):
        """Every offset ever appended in ``p``, deleted or not, ascending."""
        return sorted(self.gone[p] + [o for o, _, _ in self.records[p]])

    def unread(self, group, p):
        """The retained records ``group`` reads next in ``p``: from its committed
        offset, or all of them when it never committed there."""
        c = self.committed.get((group, p))
        return [r for r in self.records[p] if c is None or r[0] >= c]

    @rule(batch=RECORDS)
    def append(self, batch):
        newest = [max(self.offsets(p), default=None) for p in range(self.n)]
        appended = self.stream.append(batch)
        assert [a.partition for a in appended] == [self.stream.partition_for(k) for k, _ in batch]
        mine: dict[int, list[int]] = defaultdict(list)
        by_key: dict[str, list[int]] = defaultdict(list)
        for (key, value), a in zip(batch, appended, strict=True):
            assert newest[a.partition] is None or a.offset > newest[a.partition]
            mine[a.partition].append(a.offset)
            by_key[key].append(a.offset)
            self.records[a.partition].append((a.offset, key, value))
        assert all(offsets == sorted(set(offsets)) for offsets in by_key.values())
        infos = self.stream.partitions()
        for p, offsets in mine.items():
            assert len(set(offsets)) == len(offsets)
            self.records[p].sort()
            self.batches[p].append(sorted(offsets))
            assert infos[p].end_offset > max(offsets)
            self.end[p] = infos[p].end_offset

    @rule(data=st.data())
    def read(self, data):
        p = data.draw(st.integers(0, self.n - 1))
        # Positions the stream reported, in range and (deleted records) below it, and
        # the integers just outside the range.
        inside = [self.start[p], self.end[p]] + [o for o, _, _ in self.records[p]]
        outside = self.gone[p] + [self.start[p] - 1, self.end[p] + 1]
        offset, ok = data.draw(
            st.sampled_from([(o, True) for o in inside] + [(o, False) for o in outside])
        )
        max_records = data.draw(st.integers(1, 20))
        if not ok:
            with pytest.raises(OffsetOutOfRangeError):
                self.stream.read(p, offset, max_records)
            return
        records = self.stream.read(p, offset, max_records)
        want = [r for r in self.records[p] if r[0] >= offset][:max_records]
        assert [(r.offset, r.key, r.value) for r in records] == want
        assert all(r.partition == p for r in records)

    @rule()
    def retention_now_deletes_nothing(self):
        assert self.stream.enforce_retention(datetime.now(UTC)) == 0

    def groups(self):
        return sorted({g for g, _ in self.committed})

    def delete_oldest_batch(self, p):
        offsets = set(self.batches[p].pop(0))
        self.gone[p] += sorted(offsets)
        self.records[p] = [r for r in self.records[p] if r[0] not in offsets]
        return len(offsets)

    def check_start_moved(self, partitions):
        """After retention deleted records of ``partitions``: their start is above every
        deleted offset and at or below every retained one (and the end)."""
        infos = self.stream.partitions()
        for p in partitions:
            start = infos[p].start_offset
            assert all(o < start for o in self.gone[p])
            assert start <= min((o for o, _, _ in self.records[p]), default=infos[p].end_offset)
            assert start <= infos[p].end_offset
            self.start[p] = start

    @precondition(lambda self: self.stream.manages_retention)
    @rule()
    def retention_far_future_deletes_what_every_group_committed(self):
        expected = 0
        moved = []
        groups = self.groups()
        for p in range(self.n):
            # A batch goes once every group committed past its last record (a group
            # that never committed in the partition committed nothing of it).
            bounds = [self.committed.get((g, p)) for g in groups]
            while self.batches[p] and all(
                b is not None and self.batches[p][0][-1] < b for b in bounds
            ):
                expected += self.delete_oldest_batch(p)
                moved.append(p)
        assert self.stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE) == expected
        self.check_start_moved(sorted(set(moved)))

    @precondition(lambda self: self.stream.manages_retention)
    @rule()
    def over_the_size_limit_everything_goes_and_uncommitted_records_are_lost(self):
        expected = sum(len(r) for r in self.records)
        for g in self.groups():
            for p in range(self.n):
                self.lost[(g, p)] = self.lost.get((g, p), 0) + len(self.unread(g, p))
        self.stream.max_bytes = 0
        try:
            assert self.stream.enforce_retention(datetime.now(UTC)) == expected
        finally:
            self.stream.max_bytes = None
        moved = [p for p in range(self.n) if self.batches[p]]
        for p in moved:
            while self.batches[p]:
                self.delete_oldest_batch(p)
        self.check_start_moved(moved)

    @rule(group=st.sampled_from(["a", "b"]), data=st.data())
    def commit(self, group, data):
        p = data.draw(st.integers(0, self.n - 1))
        # Any position the stream reported (a deleted record's too), or just past the end.
        reported = [self.first_start[p], self.start[p], self.end[p], *self.offsets(p)]
        offset, ok = data.draw(
            st.sampled_from([(o, True) for o in reported] + [(self.end[p] + 1, False)])
        )
        if not ok:
            with pytest.raises(OffsetOutOfRangeError):
                self.stream.commit(group, p, offset)
            return
        self.stream.commit(group, p, offset)
        self.committed[(group, p)] = offset

    @rule(group=st.sampled_from(["a", "b"]), max_records=st.integers(1, 5))
    def consume_and_commit_once(self, group, max_records):
        consumer = self.stream.consumer(group)
        batches = consumer.poll(max_records)
        assert [b.partition for b in batches] == [p for p in range(self.n) if self.unread(group, p)]
        for batch in batches:
            p = batch.partition
            unread = self.unread(group, p)
            assert [(r.offset, r.key, r.value) for r in batch.records] == unread[:max_records]
            # What follows the batch: after its last record, at or before the next one.
            following = unread[max_records:]
            assert batch.records[-1].offset < batch.next_offset <= self.end[p]
            assert not following or batch.next_offset <= following[0][0]
            consumer.commit(batch)
            self.committed[(group, p)] = batch.next_offset

    @invariant()
    def partitions_match(self):
        infos = self.stream.partitions()
        assert [(i.partition, i.start_offset, i.end_offset) for i in infos] == [
            (p, self.start[p], self.end[p]) for p in range(self.n)
        ]
        for p in range(self.n):
            newest = max(self.offsets(p), default=None)
            if newest is not None:
                assert infos[p].newest_offset == newest
        assert self.stream.groups() == self.groups()
        for group in ("a", "b"):
            # Lag counts the records from the committed offset on, deleted ones too (or
            # every retained one where the group never committed).
            expected = {}
            for p in range(self.n):
                c = self.committed.get((group, p))
                expected[p] = (
                    len(self.records[p]) if c is None else sum(1 for o in self.offsets(p) if o >= c)
                )
            assert self.stream.lag(group) == expected
            if self.stream.manages_retention:
                assert self.stream.lost(group) == {
                    p: self.lost.get((group, p), 0) for p in range(self.n)
                }

    @invariant()
    def committed_matches(self):
        for group in ("a", "b"):
            for p in range(self.n):
                assert self.stream.committed(group, p) == self.committed.get((group, p))

    def teardown(self):
        if hasattr(self, "stream"):  # absent if the machine failed before initializing
            self.stream.close()


def test_stateful_model_check(stream_factory, request):
    machine = type("Machine", (StreamMachine,), {"factory": staticmethod(stream_factory)})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=model_check_examples(request, 40),
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        ),
    )
