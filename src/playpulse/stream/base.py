"""The event stream interface: a named, partitioned, append-only log.

The shape follows Kafka and Kinesis so that both fit behind it:

- a stream has ``num_partitions`` partitions (Kafka partitions, Kinesis shards);
- a record goes to the partition chosen from its key (``user_id``), so one user's events
  stay in order;
- ``append`` returns each record's partition and offset (Kafka offset, Kinesis sequence
  number); offsets grow strictly within a partition and are never reused;
- consumer groups read a partition from their committed offset in batches and commit the
  next offset to read (Kafka semantics), which gives at-least-once delivery: a consumer
  that crashes before committing reads the same records again;
- retention deletes old records, but never one that a consumer group has not committed,
  unless the stream is over its size limit (``max_bytes``): records deleted then before
  a group committed them are counted, per group and partition, as *lost* (:meth:`lost`).
  Retention deletes whole append batches (the records one append put in one partition),
  as Kafka deletes whole log segments.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from playpulse.errors import OffsetOutOfRangeError


@dataclass(frozen=True, slots=True)
class Record:
    """One record read from a partition.

    ``appended_at`` is the stream's own UTC time of the append (Kafka's LogAppendTime,
    Kinesis' ApproximateArrivalTimestamp).
    """

    partition: int
    offset: int
    key: str
    value: bytes
    appended_at: datetime


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an appended record landed."""

    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """A partition's retained range: offsets ``start_offset`` to ``end_offset - 1``.

    ``end_offset`` is the next offset to be assigned (Kafka's high watermark);
    ``newest_offset`` is ``end_offset - 1``, or ``None`` when nothing was ever appended.
    """

    partition: int
    start_offset: int
    end_offset: int

    @property
    def newest_offset(self) -> int | None:
        """Offset of the newest record, or ``None`` for a partition never written."""
        return self.end_offset - 1 if self.end_offset > 0 else None

    @property
    def count(self) -> int:
        """Number of records retained in the partition."""
        return self.end_offset - self.start_offset


def partition_for_key(key: str, num_partitions: int) -> int:
    """The partition (0 to ``num_partitions - 1``) for ``key``: CRC-32 of its UTF-8 bytes.

    Stable across processes and versions, unlike Python's ``hash``.
    """
    return zlib.crc32(key.encode()) % num_partitions


class EventStream(ABC):
    """A named, partitioned, append-only log of records (see the module docstring).

    Backends implement the abstract methods; every backend must pass
    ``tests/stream/test_contract.py``.
    """

    name: str
    num_partitions: int
    #: Bytes of records past which retention deletes the oldest, committed or not
    #: (``None``: no limit); see :meth:`enforce_retention`.
    max_bytes: int | None = None

    def partition_for(self, key: str) -> int:
        """The partition a record with ``key`` goes to."""
        return partition_for_key(key, self.num_partitions)

    @abstractmethod
    def append(self, records: Sequence[tuple[str, bytes]]) -> list[Appended]:
        """Durably append ``(key, value)`` records; return where each landed, in order.

        When it returns, every record is stored and survives a crash of this process.
        Records with the same key keep their order. Raises
        :class:`~playpulse.errors.BackpressureError` when the stream cannot take the
        records now (retry later) and :class:`~playpulse.errors.StreamError` on failure;
        in both cases none of the records is appended.
        """

    def append_offsets(self, records: Sequence[tuple[str, bytes]]) -> dict[int, range]:
        """:meth:`append`, saying where the records landed per partition rather than per
        record: ``{partition: range of offsets}``. The records of a partition took its
        offsets in their order in ``records``.

        Same guarantees and errors as :meth:`append`. Backends may override it to skip
        building one :class:`Appended` per record (the collector's hot path uses it).
        """
        out: dict[int, range] = {}
        for appended in self.append(records):
            r = out.get(appended.partition)
            out[appended.partition] = (
                range(appended.offset, appended.offset + 1)
                if r is None
                else range(r.start, appended.offset + 1)
            )
        return out

    @abstractmethod
    def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        """Up to ``max_records`` records of ``partition`` from ``offset`` on, in order.

        Returns ``[]`` at the end of the partition. Raises
        :class:`~playpulse.errors.OffsetOutOfRangeError` when ``offset`` is below the
        oldest retained offset or above the end offset.
        """

    @abstractmethod
    def partitions(self) -> list[PartitionInfo]:
        """The retained offset range of every partition, by partition number."""

    @abstractmethod
    def committed(self, group: str, partition: int) -> int | None:
        """The next offset ``group`` will read in ``partition``, or ``None`` if never
        committed."""

    @abstractmethod
    def commit(self, group: str, partition: int, offset: int) -> None:
        """Record that ``group`` has processed ``partition`` up to ``offset - 1``.

        ``offset`` is the next offset to read (Kafka semantics). Raises
        :class:`~playpulse.errors.OffsetOutOfRangeError` if ``offset`` is past the end.
        """

    @abstractmethod
    def groups(self) -> list[str]:
        """Every consumer group that has committed an offset."""

    @abstractmethod
    def enforce_retention(self, now: datetime) -> int:
        """Delete old records; return how many were deleted.

        Two rules, in this order:

        1. Age: delete the append batches appended before ``now - retention`` that every
           consumer group has committed (a group that never committed in a partition has
           committed nothing of it). With no group at all, age alone decides.
        2. Size: while the records retained take more than ``max_bytes`` (when it is not
           ``None``; bytes as :meth:`stored_bytes` counts them), delete the oldest batches
           of any partition, committed or not, and add every deleted record a group had
           not committed to that group's :meth:`lost` count.

        Offsets are not reused after deletion. A group whose committed offset was
        deleted resumes at the oldest retained record (Kafka's ``earliest`` reset).
        """

    @abstractmethod
    def stored_bytes(self) -> int:
        """Bytes the retained records take in the stream, the figure ``max_bytes`` bounds.

        Keys and values as stored (the SQLite stream counts its msgpack record batches),
        without the backend's indexes and free space.
        """

    @abstractmethod
    def lost(self, group: str) -> dict[int, int]:
        """Records of each partition that retention deleted before ``group`` committed
        them (because the stream was over ``max_bytes``), since the stream was created.

        Every partition is in the result (0 when nothing was lost). Kept across restarts
        by durable backends. A group that resumes after such a deletion skips to the
        oldest retained record: these records were never processed by it.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the stream is unusable afterwards."""

    def consumer(self, group: str, partitions: Sequence[int] | None = None) -> Consumer:
        """A consumer of ``group`` for ``partitions`` (all partitions by default)."""
        return Consumer(self, group, partitions)

    def lag(self, group: str) -> dict[int, int]:
        """Records not yet committed by ``group``, per partition: ``end_offset`` minus the
        committed offset (Kafka's consumer lag).

        A partition the group never committed in counts from its oldest retained record.
        Records that retention deleted before the group committed them still count until
        the group commits past them (its committed offset is then below the partition's
        start offset); :meth:`lost` keeps their count after that.
        """
        out = {}
        for info in self.partitions():
            committed = self.committed(group, info.partition)
            position = info.start_offset if committed is None else committed
            out[info.partition] = info.end_offset - position
        return out

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class GroupPartitionHealth:
    """One consumer group's standing in one partition (see :func:`stream_health`).

    ``lag``: records not committed yet (:meth:`EventStream.lag`); ``lost``: records
    deleted before the group committed them (:meth:`EventStream.lost`).
    """

    group: str
    partition: int
    lag: int
    lost: int


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """What monitoring needs of a stream, read in one go (see :func:`stream_health`).

    ``stored_bytes`` is :meth:`EventStream.stored_bytes`, ``max_bytes`` the size limit
    (``None``: unbounded), ``records`` the records retained, ``groups`` one entry per
    consumer group and partition.
    """

    stored_bytes: int
    max_bytes: int | None
    records: int
    groups: list[GroupPartitionHealth]

    def lost_total(self, group: str | None = None) -> int:
        """Records lost, for ``group`` or summed over every group."""
        return sum(g.lost for g in self.groups if group is None or g.group == group)

    def lag_total(self, group: str | None = None) -> int:
        """Records not committed yet, for ``group`` or summed over every group."""
        return sum(g.lag for g in self.groups if group is None or g.group == group)


def stream_health(stream: EventStream) -> StreamHealth:
    """Lag and lost records per consumer group and partition, bytes and records retained.

    For ``/metrics`` (:class:`playpulse.status.StorageMetrics` turns it into
    ``playpulse_stream_lost_records_total{group, partition}``, a count that only grows
    and is kept in the stream, ``playpulse_stream_lag_records`` and
    ``playpulse_stream_bytes``). Costs a few small queries per group (no scan of the
    records).
    Raises :class:`~playpulse.errors.StreamError` when the stream cannot be read.
    """
    groups = []
    for group in stream.groups():
        lost = stream.lost(group)
        for partition, lag in stream.lag(group).items():
            groups.append(GroupPartitionHealth(group, partition, lag, lost.get(partition, 0)))
    return StreamHealth(
        stored_bytes=stream.stored_bytes(),
        max_bytes=stream.max_bytes,
        records=sum(info.count for info in stream.partitions()),
        groups=groups,
    )


@dataclass(frozen=True, slots=True)
class Batch:
    """Records read from one partition; commit ``next_offset`` once they are processed."""

    partition: int
    records: list[Record]

    @property
    def next_offset(self) -> int:
        """The offset after the last record of the batch."""
        return self.records[-1].offset + 1


class Consumer:
    """Reads partitions for one consumer group from its committed offsets.

    ``poll`` returns the next batches without committing; ``commit(batch)`` marks a batch
    processed. Records polled but not committed are read again by the next consumer of
    the group (at-least-once).
    """

    def __init__(
        self, stream: EventStream, group: str, partitions: Sequence[int] | None = None
    ) -> None:
        self.stream = stream
        self.group = group
        self.assigned = list(range(stream.num_partitions) if partitions is None else partitions)
        self._position: dict[int, int] = {}
        for info in stream.partitions():
            if info.partition in self.assigned:
                committed = stream.committed(group, info.partition)
                self._position[info.partition] = (
                    info.start_offset if committed is None else committed
                )

    def poll(self, max_records: int = 10_000) -> list[Batch]:
        """Read up to ``max_records`` per partition from each assigned partition.

        Returns one :class:`Batch` per partition that had records; ``[]`` when all are
        caught up.
        """
        batches = []
        for partition in self.assigned:
            position = self._position.get(partition, 0)
            try:
                records = self.stream.read(partition, position, max_records)
            except OffsetOutOfRangeError:
                # Retention deleted what we had not read yet: resume at the oldest record.
                info = self.stream.partitions()[partition]
                if position >= info.start_offset:
                    raise
                self._position[partition] = info.start_offset
                records = self.stream.read(partition, info.start_offset, max_records)
            if records:
                self._position[partition] = records[-1].offset + 1
                batches.append(Batch(partition, records))
        return batches

    def commit(self, batch: Batch) -> None:
        """Commit ``batch`` for this group (the group resumes after its last record)."""
        self.stream.commit(self.group, batch.partition, batch.next_offset)

    def seek(self, partition: int, offset: int) -> None:
        """Make the next ``poll`` read ``partition`` from ``offset`` (no commit)."""
        self._position[partition] = offset
