"""The event stream interface: a named, partitioned, append-only log.

The shape follows Kafka and Kinesis so that both fit behind it:

- a stream has ``num_partitions`` partitions (Kafka partitions, Kinesis shards);
- a record goes to the partition chosen from its key (``user_id``), so one user's events
  stay in order;
- ``append`` returns each record's partition and offset (Kafka offset, Kinesis sequence
  number); offsets grow strictly within a partition and are never reused. Outside the
  backends an offset is opaque: it is compared, stored and handed back, never computed
  with (a backend says what follows a record: :attr:`Batch.next_offset`; and how far a
  group lags: :meth:`EventStream.lag`);
- ``append_each`` may store some records and not others (a Kafka partition without a
  leader, a Kinesis shard throttled): it says which, so a producer retries only those;
- consumer groups read a partition from their committed offset in batches and commit the
  next offset to read (Kafka semantics), which gives at-least-once delivery: a consumer
  that crashes before committing reads the same records again;
- retention deletes old records, but never one that a consumer group has not committed,
  unless the stream is over its size limit (``max_bytes``): records deleted then before
  a group committed them are counted, per group and partition, as *lost* (:meth:`lost`).
  Retention deletes whole append batches (the records one append put in one partition),
  as Kafka deletes whole log segments;
- members of a consumer group share its partitions (:meth:`EventStream.group_consumer`):
  each partition is owned by one member at a time, a member that leaves or stops
  heartbeating loses its partitions to the others, and a :class:`RebalanceListener`
  hears of every change before anything is read from a newly owned partition.
"""

from __future__ import annotations

import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

from playpulse.errors import BackpressureError, OffsetOutOfRangeError, StreamError


class Record(NamedTuple):
    """One record read from a partition (immutable).

    ``appended_at`` is the stream's own UTC time of the append (Kafka's LogAppendTime,
    Kinesis' ApproximateArrivalTimestamp). A named tuple, not a frozen dataclass: a
    processor makes one per event, and a tuple is made in about a third of the time.
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
class AppendResult:
    """What :meth:`EventStream.append_each` stored, record by record.

    ``landed[i]`` is where record ``i`` landed, or ``None`` when it was not stored;
    ``errors`` maps the index of every record not stored to why (one line). Records not
    in ``errors`` are durably stored; those in it are not, and may be sent again.
    """

    landed: list[Appended | None]
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[int]:
        """Indexes (into the appended records) of the records not stored, ascending."""
        return sorted(self.errors)

    @property
    def ok(self) -> bool:
        """Whether every record was stored."""
        return not self.errors


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
    #: Capability flag (after dlt's "destination capabilities"): whether this stream
    #: deletes records itself and so counts what it keeps and what it deleted —
    #: :meth:`enforce_retention` by age and ``max_bytes``, :meth:`stored_bytes`,
    #: :meth:`lost`. ``False`` for a broker with its own retention (Kafka's
    #: ``retention.ms`` / ``retention.bytes``): there ``enforce_retention`` deletes nothing
    #: and returns 0, ``max_bytes`` is ``None``, and ``stored_bytes`` and ``lost`` raise
    #: :class:`~playpulse.errors.StreamError` (the broker's own metrics tell). The
    #: retention and size contract tests skip a stream without it.
    manages_retention: bool = True
    #: Capability flag: whether positions are dense (each record's offset is the
    #: previous one's plus one, as in Kafka and the embedded streams), so that a
    #: partition's ``end_offset - start_offset`` counts its records. ``False`` for
    #: Kinesis, whose sequence numbers are sparse: there record counts are not known
    #: without reading (:func:`stream_health` and ``playpulse status`` say ``None``).
    dense_positions: bool = True

    def partition_for(self, key: str) -> int:
        """The partition a record with ``key`` goes to."""
        return partition_for_key(key, self.num_partitions)

    def shard_id(self, partition: int) -> str:
        """The name of ``partition`` in a Kinesis event (``eventID`` is
        ``"<shard id>:<sequence number>"``): Kinesis' own shard id on Kinesis, else
        ``shardId-`` and the partition in 12 digits (as Kinesis numbers its shards)."""
        return f"shardId-{partition:012d}"

    def partition_of_shard(self, shard_id: str) -> int:
        """The partition :meth:`shard_id` names. Raises :class:`ValueError` for a shard
        this stream does not have."""
        prefix, _, number = shard_id.partition("-")
        if prefix != "shardId" or not number.isdigit() or int(number) >= self.num_partitions:
            raise ValueError(f"{shard_id!r} is not a shard of stream {self.name!r}")
        return int(number)

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

    def append_each(self, records: Sequence[tuple[str, bytes]]) -> AppendResult:
        """Durably append ``(key, value)`` records, saying for each whether it was stored.

        Unlike :meth:`append`, a failure may concern only some records (a partition
        without a leader): the result names them with the reason, and every record not
        named is stored. Records with the same key keep their order among those stored.
        Raises :class:`~playpulse.errors.BackpressureError` when the stream cannot take
        any record now (nothing stored). The default, for backends whose appends are
        all-or-nothing, reports every record failed when :meth:`append` raises
        :class:`~playpulse.errors.StreamError`.
        """
        try:
            landed: list[Appended | None] = list(self.append(records))
        except BackpressureError:
            raise
        except StreamError as exc:
            return AppendResult([None] * len(records), dict.fromkeys(range(len(records)), str(exc)))
        return AppendResult(landed)

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

    def consumer(
        self,
        group: str,
        partitions: Sequence[int] | None = None,
        listener: RebalanceListener | None = None,
    ) -> Consumer:
        """A consumer of ``group`` for a fixed set of ``partitions`` (all by default):
        no group membership; ``listener`` hears of them all at the first poll."""
        return Consumer(self, group, partitions, listener)

    def group_consumer(
        self,
        group: str,
        member: str,
        listener: RebalanceListener,
        *,
        session_timeout_s: float = 6.0,
    ) -> GroupConsumer:
        """A member of consumer group ``group`` sharing its partitions with the other
        members (see :class:`GroupConsumer`). ``member`` names it, unique in the group
        (a member that restarts under its name gets its partitions back at once); it
        loses its partitions when it has not polled for ``session_timeout_s``.

        The default coordinates through :meth:`coordinate` (leases kept in the stream);
        a backend with its own group protocol (Kafka) overrides this. Raises
        :class:`~playpulse.errors.StreamError` for a backend that has neither.
        """
        return LeaseGroupConsumer(self, group, member, listener, session_timeout_s)

    def coordinate(
        self,
        group: str,
        member: str,
        *,
        claim: Iterable[int] = (),
        release: Iterable[int] = (),
        session_timeout_s: float,
        now_s: float,
    ) -> GroupView:
        """One atomic step of lease-based group membership (what
        :class:`LeaseGroupConsumer` uses): renew ``member``'s membership and the leases of
        the partitions it owns until ``now_s + session_timeout_s`` (Unix seconds), give up
        ``release``, take each partition of ``claim`` that no live member owns, and
        return the live members and what ``member`` owns now. A member or lease not
        renewed before it expires is dead: its partitions are free. Backends without a
        coordinator raise :class:`~playpulse.errors.StreamError`."""
        raise StreamError(f"the {type(self).__name__} has no consumer group coordinator")

    def leave(self, group: str, member: str) -> None:  # noqa: B027 - optional hook
        """Drop ``member`` from ``group`` and free its partitions at once (see
        :meth:`coordinate`)."""

    def lag(self, group: str) -> dict[int, int]:
        """Records not yet committed by ``group``, per partition (Kafka's consumer lag),
        as the backend counts them.

        A partition the group never committed in counts from its oldest retained record.
        Records that retention deleted before the group committed them still count until
        the group commits past them; :meth:`lost` keeps their count after that. The
        default is for backends with dense offsets (every offset a record): the end
        offset minus the committed one.
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
    deleted before the group committed them (:meth:`EventStream.lost`), ``None`` on a
    stream whose retention is the broker's (it does not say).
    """

    group: str
    partition: int
    lag: int
    lost: int | None


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """What monitoring needs of a stream, read in one go (see :func:`stream_health`).

    ``stored_bytes`` is :meth:`EventStream.stored_bytes`, ``max_bytes`` the size limit
    (``None``: unbounded), ``records`` the records retained (``None`` when positions are
    not dense: :attr:`EventStream.dense_positions`), ``groups`` one entry per consumer
    group and partition.
    """

    stored_bytes: int | None
    max_bytes: int | None
    records: int | None
    groups: list[GroupPartitionHealth]

    def lost_total(self, group: str | None = None) -> int | None:
        """Records lost, for ``group`` or summed over every group (``None`` when the
        stream does not say)."""
        counts = [g.lost for g in self.groups if group is None or g.group == group]
        if any(n is None for n in counts):
            return None
        return sum(n for n in counts if n is not None)

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
        lost: dict[int, int] | None = stream.lost(group) if stream.manages_retention else None
        for partition, lag in stream.lag(group).items():
            n = None if lost is None else lost.get(partition, 0)
            groups.append(GroupPartitionHealth(group, partition, lag, n))
    return StreamHealth(
        stored_bytes=stream.stored_bytes() if stream.manages_retention else None,
        max_bytes=stream.max_bytes,
        records=(
            sum(info.count for info in stream.partitions()) if stream.dense_positions else None
        ),
        groups=groups,
    )


@dataclass(frozen=True, slots=True)
class Batch:
    """Records read from one partition; commit ``next_offset`` once they are processed.

    ``next_offset`` is the position to resume from after the batch, as the backend that
    read it says (for Kafka and the embedded streams, the last record's offset plus
    one); nothing outside the backend computes it. It defaults to that for tests that
    build batches by hand.
    """

    partition: int
    records: list[Record]
    next_offset: int = -1

    def __post_init__(self) -> None:
        if self.next_offset == -1 and self.records:
            object.__setattr__(self, "next_offset", self.records[-1].offset + 1)


class RebalanceListener(Protocol):
    """What a consumer tells its user when the partitions it owns change (Kafka's
    ``ConsumerRebalanceListener``). Both are called from inside ``poll``, on the polling
    thread, before it reads anything of a newly owned partition."""

    def on_assign(self, partitions: list[int]) -> dict[int, int]:
        """``partitions`` are now this member's: return where to read each from (the
        next offset to read; one left out starts at the group's committed offset, else
        at the oldest record retained)."""
        ...  # pragma: no cover - a protocol

    def on_revoke(self, partitions: list[int]) -> None:
        """``partitions`` are no longer this member's (given to another member, or lost
        when this one stalled past its session timeout): drop what is kept of them."""
        ...  # pragma: no cover - a protocol


@dataclass(frozen=True, slots=True)
class GroupView:
    """A consumer group as :meth:`EventStream.coordinate` sees it: its live members
    (sorted) and the partitions the asking member owns."""

    members: list[str]
    owned: frozenset[int]


def range_assignment(members: Sequence[str], num_partitions: int) -> dict[str, list[int]]:
    """Kafka's range assignor: the sorted members take consecutive runs of partitions,
    the first ones one more when they do not divide evenly. ``{member: partitions}``;
    every partition goes to exactly one member (none when there are no members)."""
    ordered = sorted(members)
    out: dict[str, list[int]] = {m: [] for m in ordered}
    for i, m in enumerate(ordered):
        lo = i * num_partitions // len(ordered)
        hi = (i + 1) * num_partitions // len(ordered)
        out[m] = list(range(lo, hi))
    return out


class GroupConsumer(ABC):
    """A member of a consumer group: reads the partitions it owns now.

    ``poll`` first takes part in the group (heartbeat, rebalance: the listener hears of
    partitions revoked and assigned), then reads. ``commit`` records a processed batch
    with the group. Before writing a batch's results a processor checks :meth:`owns`,
    so that a member that stalled past its session timeout does not write for
    partitions another member now owns.
    """

    group: str
    member: str

    @abstractmethod
    def poll(self, max_records: int) -> list[Batch]:
        """Rebalance if due, then up to ``max_records`` records of each owned partition
        from this member's position: one :class:`Batch` per partition that had records."""

    @abstractmethod
    def assignment(self) -> list[int]:
        """The partitions this member owns now, ascending."""

    @abstractmethod
    def commit(self, batch: Batch) -> None:
        """Commit ``batch`` for the group (monitoring: lag; the store keeps positions)."""

    @abstractmethod
    def owns(self, partitions: Iterable[int]) -> bool:
        """Whether this member still owns every partition of ``partitions``, asked of
        the group's coordinator (renewing this member's leases)."""

    @abstractmethod
    def close(self) -> None:
        """Leave the group (the listener hears the partitions revoked) so the other
        members take them at once."""


class LeaseGroupConsumer(GroupConsumer):
    """A group member over a stream that keeps leases (:meth:`EventStream.coordinate`):
    the embedded streams.

    Every ``session_timeout_s / 6`` seconds (at the next poll) it renews its leases,
    gives up the partitions the range assignment over the live members gives to others,
    and takes those it gives to it that are free. A member killed stops renewing: after
    ``session_timeout_s`` its partitions are free and the others take them. A partition
    is taken only once its previous owner released it or its lease expired, so two
    members never read one partition at the same time (unless one stalls past its
    session timeout: :meth:`owns` is what a writer checks).
    """

    def __init__(
        self,
        stream: EventStream,
        group: str,
        member: str,
        listener: RebalanceListener,
        session_timeout_s: float = 6.0,
    ) -> None:
        self.stream = stream
        self.group = group
        self.member = member
        self.listener = listener
        self.session_timeout_s = session_timeout_s
        self._owned: set[int] = set()
        self._inner = Consumer(stream, group, [])
        self._next_heartbeat = 0.0

    def _coordinate(
        self, now: float, claim: Iterable[int] = (), release: Iterable[int] = ()
    ) -> GroupView:
        return self.stream.coordinate(
            self.group,
            self.member,
            claim=claim,
            release=release,
            session_timeout_s=self.session_timeout_s,
            now_s=now,
        )

    def rebalance(self, force: bool = False) -> None:
        """Heartbeat and rebalance now if due (or ``force``): what ``poll`` does first."""
        now = time.time()
        if not force and now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.session_timeout_s / 6
        view = self._coordinate(now)
        lost = self._owned - view.owned
        if lost:
            self._revoke(sorted(lost))
        wanted = set(
            range_assignment(view.members, self.stream.num_partitions).get(self.member, [])
        )
        give = self._owned - wanted
        if give:
            self._revoke(sorted(give))
        take = wanted - self._owned
        if give or take:
            view = self._coordinate(now, claim=take, release=give)
        got = sorted(view.owned - self._owned)
        if got:
            self._assign(got)

    def _revoke(self, partitions: list[int]) -> None:
        self.listener.on_revoke(partitions)
        self._owned.difference_update(partitions)
        self._inner.assigned = sorted(self._owned)

    def _assign(self, partitions: list[int]) -> None:
        starts = self.listener.on_assign(partitions)
        infos = {i.partition: i for i in self.stream.partitions()}
        for p in partitions:
            start = starts.get(p)
            if start is None:
                start = self.stream.committed(self.group, p)
            if start is None:
                start = infos[p].start_offset
            self._inner.seek(p, start)
        self._owned.update(partitions)
        self._inner.assigned = sorted(self._owned)

    def poll(self, max_records: int) -> list[Batch]:
        """See :meth:`GroupConsumer.poll`."""
        self.rebalance()
        return self._inner.poll(max_records)

    def assignment(self) -> list[int]:
        """See :meth:`GroupConsumer.assignment`."""
        return sorted(self._owned)

    def commit(self, batch: Batch) -> None:
        """See :meth:`GroupConsumer.commit`."""
        self._inner.commit(batch)

    def owns(self, partitions: Iterable[int]) -> bool:
        """See :meth:`GroupConsumer.owns`."""
        # Renews the leases but leaves the rebalance schedule alone: a member that is
        # always busy must still give partitions to members that join and take those of
        # members that died.
        view = self._coordinate(time.time())
        return set(partitions) <= view.owned

    def close(self) -> None:
        """See :meth:`GroupConsumer.close`."""
        if self._owned:
            self._revoke(sorted(self._owned))
        self.stream.leave(self.group, self.member)


class Consumer(GroupConsumer):
    """Reads a fixed set of partitions for one consumer group from its committed
    offsets (no group membership: every partition it was given is its own).

    ``poll`` returns the next batches without committing; ``commit(batch)`` marks a batch
    processed. Records polled but not committed are read again by the next consumer of
    the group (at-least-once). A ``listener`` hears of all the partitions at the first
    poll (and says where to start reading them).
    """

    def __init__(
        self,
        stream: EventStream,
        group: str,
        partitions: Sequence[int] | None = None,
        listener: RebalanceListener | None = None,
    ) -> None:
        self.stream = stream
        self.group = group
        self.member = group
        self.assigned = list(range(stream.num_partitions) if partitions is None else partitions)
        self._listener = listener
        self._announced = listener is None
        self._position: dict[int, int] = {}
        for info in stream.partitions():
            if info.partition in self.assigned:
                committed = stream.committed(group, info.partition)
                self._position[info.partition] = (
                    info.start_offset if committed is None else committed
                )

    def assignment(self) -> list[int]:
        """See :meth:`GroupConsumer.assignment`."""
        return sorted(self.assigned)

    def owns(self, partitions: Iterable[int]) -> bool:
        """See :meth:`GroupConsumer.owns` (always, for the partitions it was given)."""
        return set(partitions) <= set(self.assigned)

    def close(self) -> None:
        """See :meth:`GroupConsumer.close` (the listener hears every partition revoked)."""
        if self._listener is not None and self._announced:
            self._listener.on_revoke(sorted(self.assigned))
        self._listener = None

    def poll(self, max_records: int = 10_000) -> list[Batch]:
        """Read up to ``max_records`` per partition from each assigned partition.

        Returns one :class:`Batch` per partition that had records; ``[]`` when all are
        caught up.
        """
        if not self._announced and self._listener is not None:
            self._announced = True
            for p, start in self._listener.on_assign(sorted(self.assigned)).items():
                self._position[p] = start
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
