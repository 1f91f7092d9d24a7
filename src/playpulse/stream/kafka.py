"""The Kafka stream backend: an :class:`~playpulse.stream.base.EventStream` over one topic.

``stream_url = kafka://HOST:PORT[,HOST:PORT...]/TOPIC`` (see :func:`parse_kafka_url`).
Built on confluent-kafka (librdkafka). How the stream contract maps onto Kafka:

- partitions are the topic's (its partition count is read from the cluster at open; a
  topic that does not exist is created by the broker's auto-creation, if enabled);
- a record's partition is :meth:`EventStream.partition_for` its key (CRC-32 of the key,
  librdkafka's ``consistent`` partitioner), given explicitly to every produce call;
- appends use an idempotent producer (``enable.idempotence=true``, ``acks=all``: no
  duplicate and no reordering on retries) and wait for the delivery report of every
  record: a record is reported stored only once the broker acknowledged it;
  ``message.timeout.ms`` bounds how long a record may wait for a broker, so nothing
  hangs when none is reachable;
- offsets are Kafka offsets; ``appended_at`` is the record's Kafka timestamp (CreateTime,
  or LogAppendTime when the topic is configured so);
- committed offsets are the Kafka consumer group's committed offsets (the admin API, so
  any group can be read and committed without joining it); lag is the partition's high
  watermark minus the committed offset;
- retention and size are the broker's business (the topic's ``retention.ms`` and
  ``retention.bytes``): :attr:`KafkaStream.manages_retention` is ``False``,
  :meth:`KafkaStream.enforce_retention` deletes nothing and :meth:`KafkaStream.stored_bytes`
  and :meth:`KafkaStream.lost` raise (the broker's metrics tell);
- consumer groups are Kafka's own (:class:`KafkaGroupConsumer`: subscribe, cooperative
  rebalancing, manual synchronous commits).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec

from playpulse.errors import BackpressureError, ConfigError, OffsetOutOfRangeError, StreamError
from playpulse.stream.base import (
    Appended,
    AppendResult,
    Batch,
    EventStream,
    GroupConsumer,
    PartitionInfo,
    RebalanceListener,
    Record,
)

log = logging.getLogger(__name__)

#: Errors after which the same records may well be stored if sent again later: a broker
#: or leader not reachable now. When every record of an append failed with one of them,
#: ``append_each`` raises :class:`~playpulse.errors.BackpressureError` (nothing stored).
_RETRIABLE_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._QUEUE_FULL,
    }
)


#: Commit errors that mean "the group is rebalancing": the commit can be sent again once
#: this member has rejoined (while it still owns the partition).
_REBALANCING_CODES = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
    }
)


class _RebalancingError(StreamError):
    """A commit refused because the group is rebalancing (kept, sent again later)."""


@dataclass(frozen=True, slots=True)
class KafkaURL:
    """A parsed ``kafka://`` stream URL: the bootstrap servers and the topic."""

    bootstrap_servers: str
    topic: str


def parse_kafka_url(url: str) -> KafkaURL:
    """Parse ``kafka://HOST:PORT[,HOST:PORT...]/TOPIC``.

    Raises :class:`~playpulse.errors.ConfigError` naming what is missing (the scheme, a
    broker's host or port, the topic) or a topic name Kafka refuses (legal characters:
    ASCII letters, digits, ``.``, ``_``, ``-``; at most 249).
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced "[" (IPv6 literal), for example
        raise ConfigError(f"stream URL {url!r} cannot be parsed: {exc}") from exc
    if parts.scheme != "kafka":
        raise ConfigError(f"stream URL {url!r}: scheme must be kafka://")
    brokers = [b.strip() for b in parts.netloc.split(",") if b.strip()]
    if not brokers:
        raise ConfigError(f"stream URL {url!r} names no broker (kafka://HOST:PORT/TOPIC)")
    for broker in brokers:
        host, sep, port = broker.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"stream URL {url!r}: broker {broker!r} is not HOST:PORT")
    topic = parts.path.strip("/")
    if not topic:
        raise ConfigError(f"stream URL {url!r} names no topic (kafka://HOST:PORT/TOPIC)")
    if len(topic) > 249 or not all(c.isascii() and (c.isalnum() or c in "._-") for c in topic):
        raise ConfigError(
            f"stream URL {url!r}: topic {topic!r} is not a legal Kafka topic name "
            "(ASCII letters, digits, '.', '_', '-'; at most 249)"
        )
    return KafkaURL(",".join(brokers), topic)


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def _describe(err: KafkaError) -> str:
    return f"{err.name()}: {err.str()}"


def _to_record(msg: Message) -> Record:
    partition = msg.partition()
    offset = msg.offset()
    assert partition is not None  # a fetched message has both
    assert offset is not None
    key = msg.key()
    value = msg.value()
    _, timestamp_ms = msg.timestamp()
    return Record(
        partition=partition,
        offset=offset,
        key=(key.decode() if isinstance(key, bytes) else (key or "")),
        value=(bytes(value) if value is not None else b""),
        appended_at=datetime.fromtimestamp(timestamp_ms / 1000, UTC),
    )


class KafkaStream(EventStream):
    """An :class:`EventStream` over the Kafka topic ``topic`` (see the module docstring).

    ``bootstrap_servers`` is librdkafka's ``HOST:PORT[,HOST:PORT...]``;
    ``delivery_timeout_s`` bounds how long an appended record may wait for a broker
    (``message.timeout.ms``) before it is reported not stored; ``request_timeout_s``
    bounds every metadata, offset and read request. ``config`` adds librdkafka settings
    to every client (security, for example). ``group_prefix`` is put before every
    consumer group name this stream gives Kafka (``group.id``), so that several
    deployments (or tests) can share a cluster without sharing groups; :meth:`groups`
    lists only groups with the prefix, without it.

    Raises :class:`~playpulse.errors.StreamError` when the topic's metadata cannot be
    read within ``request_timeout_s`` (no broker reachable, topic missing and not
    auto-created).
    """

    manages_retention = False

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        delivery_timeout_s: float = 30.0,
        request_timeout_s: float = 10.0,
        config: dict[str, Any] | None = None,
        group_prefix: str = "",
    ) -> None:
        self.name = topic
        self.group_prefix = group_prefix
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.delivery_timeout_s = delivery_timeout_s
        self.request_timeout_s = request_timeout_s
        self.max_bytes = None
        self._base: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "logger": log,
            **(config or {}),
        }
        self._fatal: KafkaError | None = None
        self._producer: Producer | None = None
        self._reader: Consumer | None = None
        self._admin: AdminClient | None = None
        self._read_lock = threading.Lock()
        self._groups_lock = threading.Lock()
        self._known_groups: set[str] = set()
        self._closed = False
        try:
            self._producer = Producer(
                {
                    **self._base,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 2,
                    "message.timeout.ms": max(1, int(delivery_timeout_s * 1000)),
                    "error_cb": self._on_producer_error,
                }
            )
            self._admin = AdminClient(dict(self._base))
            metadata = self._producer.list_topics(topic, timeout=request_timeout_s)
        except KafkaException as exc:
            self.close()
            raise StreamError(
                f"Kafka topic {topic!r} at {bootstrap_servers}: cannot read its metadata: {exc}"
            ) from exc
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            self.close()
            why = described.error if described is not None else "not in the metadata"
            raise StreamError(f"Kafka topic {topic!r} at {bootstrap_servers}: unusable ({why})")
        self.num_partitions = len(described.partitions)

    # --- clients --------------------------------------------------------------------------

    def _on_producer_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
        log.warning("Kafka producer for %s: %s", self.topic, _describe(err))

    def _check_open(self) -> None:
        if self._closed:
            raise StreamError(f"Kafka stream {self.topic!r} is closed")

    def _admin_client(self) -> AdminClient:
        self._check_open()
        assert self._admin is not None
        return self._admin

    def _reader_consumer(self) -> Consumer:
        self._check_open()
        if self._reader is None:
            self._reader = Consumer(
                {
                    **self._base,
                    # Never joins or commits: only assign() and consume().
                    "group.id": self.group_id(f"playpulse-reader-{self.topic}"),
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "error",
                    "fetch.wait.max.ms": 10,
                }
            )
        return self._reader

    def group_id(self, group: str) -> str:
        """The Kafka ``group.id`` of consumer group ``group`` (``group_prefix`` + it)."""
        return self.group_prefix + group

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.num_partitions:
            raise StreamError(
                f"Kafka topic {self.topic!r} has partitions 0 to {self.num_partitions - 1}, "
                f"not {partition}"
            )

    # --- append ---------------------------------------------------------------------------

    def append_each(self, records: Sequence[tuple[str, bytes]]) -> AppendResult:
        """See :meth:`EventStream.append_each`: produce every record and wait for its
        delivery report; a record is in ``landed`` only once the broker acknowledged it
        (``acks=all``), and in ``errors`` with librdkafka's reason otherwise (timed out
        without a broker, refused by it). Raises
        :class:`~playpulse.errors.BackpressureError` when no record was stored and every
        failure is one a later retry may not meet (no broker or leader reachable, local
        queue full), and :class:`~playpulse.errors.StreamError` once the producer hit a
        fatal error or the stream is closed."""
        self._check_open()
        if self._fatal is not None:
            raise StreamError(
                f"Kafka producer for {self.topic!r} failed fatally: {_describe(self._fatal)}"
            )
        producer = self._producer
        assert producer is not None
        n = len(records)
        landed: list[Appended | None] = [None] * n
        failures: dict[int, KafkaError | str] = {}
        lock = threading.Lock()
        remaining = [n]
        done = threading.Event()
        if n == 0:
            return AppendResult([])

        def settle() -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

        def reporter(i: int) -> Callable[[KafkaError | None, Message], None]:
            def on_delivery(err: KafkaError | None, msg: Message) -> None:
                partition, offset = msg.partition(), msg.offset()
                if err is None and partition is not None and offset is not None and offset >= 0:
                    landed[i] = Appended(partition, offset)
                else:
                    failures[i] = err if err is not None else "no offset in the delivery report"
                settle()

            return on_delivery

        deadline = time.monotonic() + self.delivery_timeout_s + self.request_timeout_s
        for i, (key, value) in enumerate(records):
            while True:
                try:
                    producer.produce(
                        self.topic,
                        value=value,
                        key=key.encode(),
                        partition=self.partition_for(key),
                        on_delivery=reporter(i),
                    )
                    break
                except BufferError:
                    # librdkafka's local queue is full: serve delivery reports, then retry.
                    if time.monotonic() >= deadline:
                        failures[i] = KafkaError(KafkaError._QUEUE_FULL)
                        settle()
                        break
                    producer.poll(0.05)
                except KafkaException as exc:
                    err = _kafka_error(exc)
                    failures[i] = err if err is not None else str(exc)
                    settle()
                    break
        producer.poll(0)
        while not done.is_set():
            if time.monotonic() >= deadline:
                with lock:
                    for i in range(n):
                        if landed[i] is None and i not in failures:
                            failures[i] = "no delivery report in time"
                break
            producer.poll(0.05)
        with lock:
            errors = {i: failures[i] for i in sorted(failures)}
            result = AppendResult(
                [None if i in errors else a for i, a in enumerate(landed)],
                {i: (_describe(e) if isinstance(e, KafkaError) else e) for i, e in errors.items()},
            )
        if (
            errors
            and len(errors) == n
            and all(
                isinstance(e, KafkaError) and (e.code() in _RETRIABLE_CODES or e.retriable())
                for e in errors.values()
            )
        ):
            raise BackpressureError(
                f"Kafka topic {self.topic!r}: none of {n} records stored "
                f"({result.errors[min(result.errors)]})",
                retry_after_s=1.0,
            )
        return result

    def append(self, records: Sequence[tuple[str, bytes]]) -> list[Appended]:
        """See :meth:`EventStream.append`. Kafka cannot append all-or-nothing across
        partitions: when some records failed, the others *are* stored, and this raises
        :class:`~playpulse.errors.StreamError` saying how many failed (use
        :meth:`append_each` to retry only those)."""
        result = self.append_each(records)
        if result.errors:
            first = min(result.errors)
            raise StreamError(
                f"Kafka topic {self.topic!r}: {len(result.errors)} of {len(records)} records "
                f"not stored (record {first}: {result.errors[first]}); the others were stored"
            )
        return [a for a in result.landed if a is not None]

    # --- read -----------------------------------------------------------------------------

    def _watermarks(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """``{partition: (low, high)}`` watermarks, asked of the partitions' leaders."""
        admin = self._admin_client()
        out: dict[int, list[int]] = {p: [0, 0] for p in partitions}
        for slot, spec in ((0, OffsetSpec.earliest()), (1, OffsetSpec.latest())):
            futures = admin.list_offsets(
                {TopicPartition(self.topic, p): spec for p in partitions},
                request_timeout=self.request_timeout_s,
            )
            for tp, future in futures.items():
                try:
                    out[tp.partition][slot] = future.result().offset
                except KafkaException as exc:
                    raise StreamError(
                        f"Kafka topic {self.topic!r} partition {tp.partition}: cannot read "
                        f"its offsets: {exc}"
                    ) from exc
        return {p: (lo, hi) for p, (lo, hi) in out.items()}

    def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        """See :meth:`EventStream.read` (a fetch from the partition's leader)."""
        self._check_partition(partition)
        low, high = self._watermarks([partition])[partition]
        if not low <= offset <= high:
            raise OffsetOutOfRangeError(
                f"Kafka topic {self.topic!r} partition {partition}: offset {offset} is "
                f"outside {low}..{high}"
            )
        if offset == high or max_records <= 0:
            return []
        out: list[Record] = []
        # Offsets are dense for our producer (no transactions): ask for exactly what is
        # there, so consume() returns at once (it waits until it has that many or the
        # partition's end is reported).
        wanted = min(max_records, high - offset)
        deadline = time.monotonic() + self.request_timeout_s
        with self._read_lock:
            reader = self._reader_consumer()
            reader.assign([TopicPartition(self.topic, partition, offset)])
            try:
                while len(out) < wanted:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise StreamError(
                            f"Kafka topic {self.topic!r} partition {partition}: no records "
                            f"from offset {offset} within {self.request_timeout_s} s"
                        )
                    msgs = reader.consume(wanted - len(out), timeout=min(left, 0.5))
                    at_end = False
                    for msg in msgs:
                        err = msg.error()
                        if err is not None:
                            if err.code() == KafkaError._PARTITION_EOF:
                                at_end = True
                                continue
                            raise StreamError(
                                f"Kafka topic {self.topic!r} partition {partition}: "
                                f"read failed: {_describe(err)}"
                            )
                        msg_offset = msg.offset()
                        if msg.partition() != partition or msg_offset is None:
                            continue
                        if msg_offset < offset or (out and msg_offset <= out[-1].offset):
                            continue
                        out.append(_to_record(msg))
                        if len(out) == wanted or msg_offset >= high - 1:
                            at_end = True
                            break
                    if at_end:
                        break
            finally:
                reader.unassign()
        return out

    def partitions(self) -> list[PartitionInfo]:
        """See :meth:`EventStream.partitions`: the low and high watermarks."""
        marks = self._watermarks(range(self.num_partitions))
        return [PartitionInfo(p, lo, hi) for p, (lo, hi) in sorted(marks.items())]

    # --- consumer group offsets -----------------------------------------------------------

    def _committed_all(self, group: str) -> dict[int, int | None]:
        admin = self._admin_client()
        request = ConsumerGroupTopicPartitions(
            self.group_id(group),
            [TopicPartition(self.topic, p) for p in range(self.num_partitions)],
        )
        try:
            [future] = admin.list_consumer_group_offsets(
                [request], request_timeout=self.request_timeout_s
            ).values()
            found = future.result().topic_partitions or []
        except KafkaException as exc:
            raise StreamError(
                f"Kafka topic {self.topic!r}: cannot read group {group!r}'s offsets: {exc}"
            ) from exc
        out: dict[int, int | None] = dict.fromkeys(range(self.num_partitions))
        for tp in found:
            if tp.topic == self.topic and tp.error is None and tp.offset >= 0:
                out[tp.partition] = tp.offset
        return out

    def committed(self, group: str, partition: int) -> int | None:
        """See :meth:`EventStream.committed` (the group's committed offset in Kafka)."""
        self._check_partition(partition)
        return self._committed_all(group)[partition]

    def commit(self, group: str, partition: int, offset: int) -> None:
        """See :meth:`EventStream.commit`: commits for ``group`` without joining it (Kafka
        refuses that while the group has live members: a member commits through its
        :class:`KafkaGroupConsumer`; librdkafka's mock cluster refuses it for any group
        that ever had members); raises :class:`~playpulse.errors.StreamError` then."""
        self._check_partition(partition)
        _, high = self._watermarks([partition])[partition]
        if not 0 <= offset <= high:
            raise OffsetOutOfRangeError(
                f"Kafka topic {self.topic!r} partition {partition}: cannot commit offset "
                f"{offset} (end offset {high})"
            )
        admin = self._admin_client()
        request = ConsumerGroupTopicPartitions(
            self.group_id(group), [TopicPartition(self.topic, partition, offset)]
        )
        try:
            [future] = admin.alter_consumer_group_offsets(
                [request], request_timeout=self.request_timeout_s
            ).values()
            for tp in future.result().topic_partitions or []:
                if tp.error is not None:
                    raise StreamError(
                        f"Kafka topic {self.topic!r} partition {partition}: group {group!r} "
                        f"cannot commit offset {offset}: {tp.error}"
                    )
        except KafkaException as exc:
            raise StreamError(
                f"Kafka topic {self.topic!r} partition {partition}: group {group!r} cannot "
                f"commit offset {offset}: {exc}"
            ) from exc
        self._note_group(group)

    def _note_group(self, group: str) -> None:
        with self._groups_lock:
            self._known_groups.add(group)

    def groups(self) -> list[str]:
        """See :meth:`EventStream.groups`: the cluster's consumer groups (Kafka's
        ListGroups) with a committed offset in this topic. A cluster that does not answer
        ListGroups (librdkafka's mock cluster) is asked only about the groups this stream
        object committed for (here or through its group consumers)."""
        candidates = set()
        with self._groups_lock:
            candidates |= self._known_groups
        try:
            listed = self._admin_client().list_consumer_groups(
                request_timeout=self.request_timeout_s
            )
            result = listed.result()
            candidates |= {
                g.group_id[len(self.group_prefix) :]
                for g in result.valid or []
                if g.group_id.startswith(self.group_prefix)
            }
        except KafkaException as exc:
            log.debug("Kafka ListGroups failed (%s): using the groups known here", exc)
        return sorted(
            g
            for g in candidates
            if not g.startswith("playpulse-reader-")
            and any(v is not None for v in self._committed_all(g).values())
        )

    def lag(self, group: str) -> dict[int, int]:
        """See :meth:`EventStream.lag`: the high watermark minus the group's committed
        offset (from the low watermark where it never committed)."""
        committed = self._committed_all(group)
        out = {}
        for info in self.partitions():
            c = committed[info.partition]
            out[info.partition] = info.end_offset - (info.start_offset if c is None else c)
        return out

    # --- retention: the broker's ------------------------------------------------------------

    def enforce_retention(self, now: datetime) -> int:
        """Deletes nothing and returns 0: the broker applies the topic's ``retention.ms``
        and ``retention.bytes`` itself (:attr:`manages_retention` is ``False``)."""
        return 0

    def stored_bytes(self) -> int:
        """Not known to a Kafka client (the broker's log size metrics tell): raises
        :class:`~playpulse.errors.StreamError` (:attr:`manages_retention` is ``False``)."""
        raise StreamError(
            f"Kafka topic {self.topic!r}: its size is the broker's (see its log dir metrics)"
        )

    def lost(self, group: str) -> dict[int, int]:
        """Not known to a Kafka client (the broker deletes by its own retention without
        telling): raises :class:`~playpulse.errors.StreamError`."""
        raise StreamError(
            f"Kafka topic {self.topic!r}: records the broker deleted before group {group!r} "
            "committed them are not counted by Kafka"
        )

    # --- consumer groups ------------------------------------------------------------------

    def group_consumer(
        self,
        group: str,
        member: str,
        listener: RebalanceListener,
        *,
        session_timeout_s: float = 6.0,
    ) -> KafkaGroupConsumer:
        """See :meth:`EventStream.group_consumer`: a member of the Kafka consumer group
        ``group`` (:class:`KafkaGroupConsumer`)."""
        self._check_open()
        self._note_group(group)
        return KafkaGroupConsumer(self, group, member, listener, session_timeout_s)

    def close(self) -> None:
        """Flush and release every client (their threads and sockets); idempotent."""
        self._closed = True
        if self._producer is not None:
            self._producer.flush(self.delivery_timeout_s)
            self._producer = None
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._admin = None


class KafkaGroupConsumer(GroupConsumer):
    """A member of Kafka consumer group ``group`` reading ``stream``'s topic.

    Subscribes with the cooperative-sticky assignor (a rebalance moves only the
    partitions that change owner), commits manually and synchronously
    (``enable.auto.commit=false``). The listener hears ``on_revoke`` / ``on_assign`` from
    inside :meth:`poll`, before any record of a newly owned partition is returned; a
    partition the listener gives no start offset resumes at the group's committed
    offset, else at the oldest record (``auto.offset.reset=earliest``). A member that does
    not poll within ``session_timeout_s`` (heartbeats are librdkafka's, in the
    background) or ``max.poll.interval.ms`` loses its partitions (``on_revoke``).
    """

    def __init__(
        self,
        stream: KafkaStream,
        group: str,
        member: str,
        listener: RebalanceListener,
        session_timeout_s: float = 6.0,
    ) -> None:
        self.stream = stream
        self.group = group
        self.member = member
        self.listener = listener
        self._owned: set[int] = set()
        self._buffer: dict[int, list[Record]] = {}
        # Offsets whose commit the group refused during a rebalance, sent again later.
        self._pending: dict[int, int] = {}
        self._closed = False
        session_ms = max(1000, int(session_timeout_s * 1000))
        self._consumer = Consumer(
            {
                **stream._base,
                "group.id": stream.group_id(group),
                "client.id": member,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(100, session_ms // 6),
                "fetch.wait.max.ms": 50,
            }
        )
        self._consumer.subscribe(
            [stream.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ids = sorted(tp.partition for tp in partitions)
        starts = self.listener.on_assign(ids) if ids else {}
        for tp in partitions:
            start = starts.get(tp.partition)
            tp.offset = OFFSET_INVALID if start is None else start  # invalid: committed
        consumer.incremental_assign(partitions)
        self._owned.update(ids)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ids = sorted(tp.partition for tp in partitions if tp.partition in self._owned)
        # Last chance to commit what was processed, before the next owner starts from it.
        try:
            self._commit_pending([p for p in ids if p in self._pending])
        except StreamError as exc:  # the next owner reads those records again
            log.warning("Kafka group %s member %s: %s", self.group, self.member, exc)
        for p in ids:
            self._buffer.pop(p, None)
            self._pending.pop(p, None)
        self._owned.difference_update(ids)
        if ids:
            self.listener.on_revoke(ids)

    def poll(self, max_records: int) -> list[Batch]:
        """See :meth:`GroupConsumer.poll`: serves the group protocol (rebalance
        callbacks), waits up to 0.1 s for records when none are buffered, and returns up
        to ``max_records`` of each owned partition (records fetched beyond that wait in a
        buffer for the next poll; those of a revoked partition are dropped)."""
        if self._closed:
            raise StreamError(f"group consumer {self.member!r} of {self.group!r} is closed")
        buffered = sum(len(v) for v in self._buffer.values())
        want = max(1, max_records * max(1, len(self._owned)) - buffered)
        try:
            msgs = self._consumer.consume(want, timeout=0.0 if buffered else 0.1)
        except KafkaException as exc:
            raise StreamError(f"Kafka group {self.group!r} member {self.member!r}: {exc}") from exc
        self._commit_pending([p for p in self._pending if p in self._owned])
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise StreamError(
                        f"Kafka group {self.group!r} member {self.member!r}: {_describe(err)}"
                    )
                log.warning("Kafka group %s member %s: %s", self.group, self.member, err)
                continue
            p = msg.partition()
            if p is None or p not in self._owned:
                continue
            self._buffer.setdefault(p, []).append(_to_record(msg))
        batches = []
        for p in sorted(self._buffer):
            records = self._buffer[p]
            if not records:
                continue
            take, self._buffer[p] = records[:max_records], records[max_records:]
            batches.append(Batch(p, take, next_offset=take[-1].offset + 1))
        return batches

    def assignment(self) -> list[int]:
        """See :meth:`GroupConsumer.assignment`."""
        return sorted(self._owned)

    def commit(self, batch: Batch) -> None:
        """See :meth:`GroupConsumer.commit`: commits ``batch.next_offset`` synchronously.

        A commit the group refuses because it is rebalancing (Kafka's
        ``REBALANCE_IN_PROGRESS``, or a generation that just ended) is kept and sent again
        at the next :meth:`poll`, or when the partition is revoked, before the listener
        hears it, so the next owner starts after it; if that fails too the next owner
        reads those records again (at-least-once: the store's writes are idempotent per
        position). Raises :class:`~playpulse.errors.StreamError` when the commit fails
        otherwise.
        """
        if batch.partition in self._owned:
            self._pending[batch.partition] = batch.next_offset
            self._commit_pending([batch.partition])
        else:
            self._commit_offsets({batch.partition: batch.next_offset})

    def _commit_pending(self, partitions: Iterable[int]) -> None:
        offsets = {p: self._pending[p] for p in partitions if p in self._pending}
        if not offsets:
            return
        try:
            self._commit_offsets(offsets)
        except _RebalancingError as exc:
            log.debug("Kafka group %s member %s: commit later: %s", self.group, self.member, exc)
            return
        for p, offset in offsets.items():
            if self._pending.get(p) == offset:
                del self._pending[p]

    def _commit_offsets(self, offsets: dict[int, int]) -> None:
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self.stream.topic, p, o) for p, o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            err = _kafka_error(exc)
            where = ", ".join(f"partition {p} offset {o}" for p, o in sorted(offsets.items()))
            message = f"Kafka group {self.group!r} member {self.member!r}: cannot commit {where}"
            if err is not None and err.code() in _REBALANCING_CODES:
                raise _RebalancingError(f"{message}: {_describe(err)}") from exc
            raise StreamError(f"{message}: {exc}") from exc

    def owns(self, partitions: Iterable[int]) -> bool:
        """See :meth:`GroupConsumer.owns`: from the current assignment (librdkafka
        revokes it, and the listener hears it, when the session is lost)."""
        return set(partitions) <= self._owned

    def close(self) -> None:
        """See :meth:`GroupConsumer.close`: leaves the group (the listener hears every
        owned partition revoked) and stops the consumer's threads; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._commit_pending([p for p in self._pending if p in self._owned])
        except StreamError as exc:
            log.warning("Kafka group %s member %s: %s", self.group, self.member, exc)
        try:
            self._consumer.close()  # serves the revoke callback and leaves the group
        finally:
            if self._owned:  # the callback was not served: tell the listener here
                ids = sorted(self._owned)
                self._owned.clear()
                self._buffer.clear()
                self._pending.clear()
                self.listener.on_revoke(ids)
