"""The Kinesis stream backend: an :class:`~playpulse.stream.base.EventStream` over one
Kinesis data stream.

``stream_url = kinesis://STREAM`` (see :func:`parse_kinesis_url`); the region, endpoint
(``AWS_ENDPOINT_URL``) and credentials come from the environment through
:func:`playpulse.aws.clients.client`. How the stream contract maps onto Kinesis:

- **partitions are the open shards**, sorted by the start of their hash-key range
  (partition ``i`` is the ``i``-th); :meth:`KinesisStream.shard_id` names them. The shard
  list is read when the stream is opened: reopen it after resharding.
- **a record's partition is the shard Kinesis itself picks** for its key: the MD5 of the
  key's UTF-8 bytes as a 128-bit integer, inside the shard's hash-key range
  (:meth:`KinesisStream.partition_for`). The partition key sent is the record key (the
  user). Kinesis takes partition keys of 1 to 256 characters: an empty key, or one that
  starts with NUL, is sent as NUL + key with an ``ExplicitHashKey`` of the key's MD5 (so
  it lands where its MD5 says, and reads back as the key); a key over 255 characters
  that would need that, or over 256 characters, is refused (that record fails).
- **positions are sequence numbers**: ``Record.offset`` is ``int(SequenceNumber)`` (a
  Python int holds Kinesis' 56-digit numbers; they grow within a shard but are *not*
  dense: offsets are opaque). The next position after a record is its offset + 1
  (``Batch.next_offset``), and position ``X`` means "the records with a sequence number
  ``>= X``": :meth:`KinesisStream.read` asks for ``AFTER_SEQUENCE_NUMBER`` of ``X - 1``
  (a real sequence number when ``X`` is a next position or a checkpoint) and, when
  Kinesis refuses that as not a sequence number of the shard, ``AT_SEQUENCE_NUMBER``
  ``X`` (a real one when ``X`` is a record's own offset); the partition's start is read
  with ``TRIM_HORIZON``. moto accepts any integer for both; real Kinesis accepts the
  sequence numbers it assigned. moto numbers the records of a shard 1, 2, 3, ...
- **partitions()**: ``start_offset`` is the shard's ``StartingSequenceNumber`` as read at
  open (Kinesis does not move it when its retention trims records: a read from it is a
  ``TRIM_HORIZON`` read); ``end_offset`` is the newest record's sequence number + 1 (the
  start when the shard has none), found by reading the shard forward from the newest
  sequence number this object knows (from appends, reads, earlier calls: the first call
  reads the shard from ``TRIM_HORIZON``). ``PartitionInfo.count`` is therefore *not* a
  record count (real sequence numbers are sparse; on moto, whose shards start at 0 and
  number their records from 1, it is one more): :meth:`KinesisStream.lag` counts.
- **appends**: ``PutRecords`` in chunks of at most 500 records and 5 MiB (data + partition
  key), retrying only the records that failed (per-record ``ErrorCode``
  ``ProvisionedThroughputExceededException``, ``InternalFailure``, KMS throttling; or the
  whole call throttled past botocore's own retries) with exponential backoff and jitter,
  at most ``max_put_attempts`` times each. PutRecords does not keep the order of a call's
  records when one fails and a later one does not, so a call carries **at most one record
  per key**: the next record of a key is sent only once the one before is stored; when a
  record finally fails, the later records of its key are not sent and fail too.
  A batch of one user's records thus takes one call per record; a batch of distinct
  users takes one call per 500. A call that fails without an answer (a connection reset
  or read timeout past botocore's retries) is retried too: its records may then be
  stored twice (at-least-once; consumers dedup by event id), never acknowledged unstored.
- **checkpoints and group leases** live in a small DynamoDB table,
  ``<stream>-playpulse-checkpoints`` (``pk``/``sk`` strings, on-demand billing), created
  on the first commit or group membership (KCL-style): ``pk = "group#" + group`` and
  ``sk = "checkpoint#" + shard id`` (attribute ``position``, a string: DynamoDB numbers
  hold 38 digits), ``"member#" + member`` and ``"lease#" + shard id`` (``owner``,
  ``expires`` in Unix seconds; leases are taken and renewed with conditional writes), so
  :class:`~playpulse.stream.base.LeaseGroupConsumer` works across processes.
- **retention is Kinesis'** (24 h to 365 d, ``manages_retention = False``):
  :meth:`KinesisStream.enforce_retention` deletes nothing, :meth:`KinesisStream.stored_bytes`
  and :meth:`KinesisStream.lost` raise.
- **lag** is a record count: the records from the group's checkpoint (the start where
  it has none) to the newest, counted by reading them (one ``GetRecords`` per 10,000
  records); CloudWatch's ``GetRecords.IteratorAgeMilliseconds`` is the cheap measure for
  alarms.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
import time
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from playpulse.aws.clients import client as aws_client
from playpulse.aws.clients import error_code
from playpulse.errors import BackpressureError, ConfigError, OffsetOutOfRangeError, StreamError
from playpulse.stream.base import (
    Appended,
    AppendResult,
    EventStream,
    GroupView,
    PartitionInfo,
    Record,
)

log = logging.getLogger(__name__)

#: PutRecords limits: records per call, bytes per call (data + partition keys), per record.
MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
#: GetRecords returns at most this many records per call.
MAX_GET_RECORDS = 10_000
#: Kinesis partition keys are 1 to 256 characters.
MAX_PARTITION_KEY_CHARS = 256
#: Shard iterators expire after 5 minutes; cached ones are used for 4.
ITERATOR_TTL_S = 240.0
#: Iterators kept per stream object (per (partition, position) they read from).
ITERATOR_CACHE_SIZE = 1024

#: Prefix of the partition key of a record whose key Kinesis cannot take as is.
_ESCAPE = "\x00"

#: Per-record PutRecords error codes after which the same record may be stored later.
_RETRIABLE_RECORD_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "InternalFailure",
        "InternalFailureException",
        "ServiceUnavailable",
        "KMSThrottlingException",
    }
)
#: Whole-call errors (left after botocore's own retries) worth another try later.
_RETRIABLE_CALL_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "InternalFailure",
        "InternalFailureException",
        "ServiceUnavailable",
        "KMSThrottlingException",
    }
)

_STREAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def parse_kinesis_url(url: str) -> str:
    """The stream name of ``kinesis://STREAM``.

    Raises :class:`~playpulse.errors.ConfigError` when the scheme is not ``kinesis``, the
    name is missing, or it is not a legal Kinesis stream name (1 to 128 ASCII letters,
    digits, ``_``, ``.``, ``-``), or the URL has a path.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"stream URL {url!r} cannot be parsed: {exc}") from exc
    if parts.scheme != "kinesis":
        raise ConfigError(f"stream URL {url!r}: scheme must be kinesis://")
    name = parts.netloc
    if not name:
        raise ConfigError(f"stream URL {url!r} names no stream (kinesis://STREAM)")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ConfigError(f"stream URL {url!r}: only kinesis://STREAM is accepted (no path)")
    if not _STREAM_NAME.match(name):
        raise ConfigError(
            f"stream URL {url!r}: {name!r} is not a legal Kinesis stream name "
            "(1 to 128 ASCII letters, digits, '_', '.', '-')"
        )
    return name


def hash_key(key: str) -> int:
    """Kinesis' hash of a partition key: the MD5 of its UTF-8 bytes as a 128-bit int."""
    return int.from_bytes(hashlib.md5(key.encode(), usedforsecurity=False).digest(), "big")


def _encode_key(key: str) -> tuple[str, str | None]:
    """``(PartitionKey, ExplicitHashKey or None)`` for record key ``key``. Raises
    :class:`ValueError` for a key Kinesis cannot carry."""
    if key and not key.startswith(_ESCAPE):
        if len(key) > MAX_PARTITION_KEY_CHARS:
            raise ValueError(
                f"key of {len(key)} characters: Kinesis partition keys have at most "
                f"{MAX_PARTITION_KEY_CHARS}"
            )
        return key, None
    if len(key) + 1 > MAX_PARTITION_KEY_CHARS:
        raise ValueError(
            f"key of {len(key)} characters starting with NUL: at most "
            f"{MAX_PARTITION_KEY_CHARS - 1} fit Kinesis escaped"
        )
    return _ESCAPE + key, str(hash_key(key))


def _decode_key(partition_key: str) -> str:
    return partition_key[1:] if partition_key.startswith(_ESCAPE) else partition_key


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _is_client_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, ClientError | BotoCoreError)


@dataclass(frozen=True, slots=True)
class _Shard:
    shard_id: str
    starting_hash: int
    starting_sequence: int


@dataclass(slots=True)
class _Pending:
    """One record of an append on its way: its index in the call and what is sent."""

    index: int
    partition_key: str
    explicit_hash_key: str | None
    data: bytes
    size: int
    attempts: int = 0


class KinesisStream(EventStream):
    """An :class:`EventStream` over the Kinesis data stream ``stream_name`` (see the
    module docstring for how the contract maps onto Kinesis).

    ``create`` creates the stream with ``shards`` shards (provisioned mode) when it does
    not exist, and waits until it is active; without it a missing stream is an error.
    ``checkpoint_table`` names the DynamoDB table of checkpoints and group leases
    (default ``<stream>-playpulse-checkpoints``). ``max_put_attempts`` bounds the tries of
    each appended record, the backoff between tries doubling from ``backoff_s`` up to
    ``max_backoff_s`` seconds. ``kinesis`` / ``dynamodb`` are boto3 clients to use instead
    of :func:`playpulse.aws.clients.client`'s (tests hook their events).

    Raises :class:`~playpulse.errors.StreamError` naming the stream when it does not exist
    (and ``create`` is false), is not active within ``wait_s`` seconds, has no open shard
    or cannot be described.
    """

    manages_retention = False
    dense_positions = False

    def __init__(
        self,
        stream_name: str,
        *,
        create: bool = False,
        shards: int = 1,
        checkpoint_table: str | None = None,
        max_put_attempts: int = 8,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        wait_s: float = 60.0,
        kinesis: Any = None,
        dynamodb: Any = None,
    ) -> None:
        self.name = stream_name
        self.stream_name = stream_name
        self.max_bytes = None
        self.checkpoint_table = checkpoint_table or f"{stream_name}-playpulse-checkpoints"
        self.max_put_attempts = max(1, max_put_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.wait_s = wait_s
        self._kinesis = kinesis if kinesis is not None else aws_client("kinesis")
        self._dynamodb_client = dynamodb
        self._table_ready = False
        self._lock = threading.Lock()
        self._table_lock = threading.Lock()
        # (partition, position) -> (shard iterator reading from it, when it was made).
        self._iterators: OrderedDict[tuple[int, int], tuple[str, float]] = OrderedDict()
        # Newest sequence number known per partition (a lower bound of the real one).
        self._newest: dict[int, int] = {}
        self._closed = False
        self._describe_or_create(create, shards)
        self._shards = self._open_shards()
        self.num_partitions = len(self._shards)
        self._starts = [s.starting_hash for s in self._shards]
        self._partition_of = {s.shard_id: i for i, s in enumerate(self._shards)}

    # --- opening --------------------------------------------------------------------------

    def _where(self) -> str:
        return f"Kinesis stream {self.stream_name!r}"

    def _describe_or_create(self, create: bool, shards: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            status = self._kinesis.describe_stream_summary(StreamName=self.stream_name)[
                "StreamDescriptionSummary"
            ]["StreamStatus"]
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise StreamError(f"{self._where()}: cannot describe it: {exc}") from exc
            if not create:
                raise StreamError(
                    f"{self._where()} does not exist (create it, e.g. with "
                    "'playpulse aws deploy', or open it with create=True)"
                ) from exc
            try:
                self._kinesis.create_stream(
                    StreamName=self.stream_name,
                    ShardCount=shards,
                    StreamModeDetails={"StreamMode": "PROVISIONED"},
                )
            except ClientError as create_exc:
                if error_code(create_exc) != "ResourceInUseException":  # a racing creator
                    raise StreamError(
                        f"{self._where()}: cannot create it with {shards} shards: {create_exc}"
                    ) from create_exc
            status = "CREATING"
        except BotoCoreError as exc:
            raise StreamError(f"{self._where()}: cannot describe it: {exc}") from exc
        deadline = time.monotonic() + self.wait_s
        delay = 0.05
        while status not in ("ACTIVE", "UPDATING"):
            if time.monotonic() >= deadline:
                raise StreamError(
                    f"{self._where()} is {status}, not ACTIVE, after {self.wait_s:g} s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            try:
                status = self._kinesis.describe_stream_summary(StreamName=self.stream_name)[
                    "StreamDescriptionSummary"
                ]["StreamStatus"]
            except (ClientError, BotoCoreError) as exc:
                raise StreamError(f"{self._where()}: cannot describe it: {exc}") from exc

    def _open_shards(self) -> list[_Shard]:
        from botocore.exceptions import BotoCoreError, ClientError

        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamName": self.stream_name}
        try:
            while True:
                page = self._kinesis.list_shards(**kwargs)
                shards += page.get("Shards", [])
                token = page.get("NextToken")
                if not token:
                    break
                kwargs = {"NextToken": token}
        except (ClientError, BotoCoreError) as exc:
            raise StreamError(f"{self._where()}: cannot list its shards: {exc}") from exc
        open_shards = sorted(
            (
                _Shard(
                    s["ShardId"],
                    int(s["HashKeyRange"]["StartingHashKey"]),
                    int(s["SequenceNumberRange"]["StartingSequenceNumber"]),
                )
                for s in shards
                if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})
            ),
            key=lambda s: s.starting_hash,
        )
        if not open_shards:
            raise StreamError(f"{self._where()} has no open shard")
        return open_shards

    def _check_open(self) -> None:
        if self._closed:
            raise StreamError(f"{self._where()} is closed")

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.num_partitions:
            raise StreamError(
                f"{self._where()} has partitions (shards) 0 to {self.num_partitions - 1}, "
                f"not {partition}"
            )

    # --- partitions and shards ------------------------------------------------------------

    def partition_for(self, key: str) -> int:
        """The partition of the shard Kinesis puts ``key`` in: the one whose hash-key
        range holds the MD5 of the key (:func:`hash_key`)."""
        return bisect_right(self._starts, hash_key(key)) - 1

    def shard_id(self, partition: int) -> str:
        """Kinesis' id of the shard that is ``partition`` (``shardId-000000000003``).
        Raises :class:`~playpulse.errors.StreamError` for a partition out of range."""
        self._check_partition(partition)
        return self._shards[partition].shard_id

    def partition_of_shard(self, shard_id: str) -> int:
        """The partition of Kinesis shard ``shard_id``. Raises :class:`ValueError` for a
        shard that is not one of the stream's open shards."""
        try:
            return self._partition_of[shard_id]
        except KeyError:
            raise ValueError(f"{shard_id!r} is not an open shard of {self._where()}") from None

    # --- append ---------------------------------------------------------------------------

    def append_each(self, records: Sequence[tuple[str, bytes]]) -> AppendResult:
        """See :meth:`EventStream.append_each` and the module docstring: PutRecords in
        chunks (500 records, 5 MiB), at most one record per key per call, retrying only
        the records that failed with a retriable error (throttling, internal failure) up
        to ``max_put_attempts`` times with backoff. A record is in ``landed`` only once
        Kinesis returned its sequence number; a record that failed, and every later
        record of its key (not sent, to keep the key's order), is in ``errors``.

        Raises :class:`~playpulse.errors.BackpressureError` when no record was stored and
        every failure was throttling or another retriable one, and
        :class:`~playpulse.errors.StreamError` when the stream no longer exists or this
        object is closed.
        """
        self._check_open()
        n = len(records)
        landed: list[Appended | None] = [None] * n
        errors: dict[int, str] = {}
        retriable: set[int] = set()
        queues: dict[str, deque[_Pending]] = {}
        for i, (key, value) in enumerate(records):
            queue = queues.setdefault(key, deque())
            try:
                partition_key, explicit = _encode_key(key)
            except ValueError as exc:
                errors[i] = str(exc)
                queue.append(_Pending(i, "", None, b"", -1))
                continue
            size = len(value) + len(partition_key.encode())
            queue.append(_Pending(i, partition_key, explicit, bytes(value), size))
        backoff = self.backoff_s
        while True:
            # A key's queue head that already failed (refused key): it and the rest go.
            for queue in queues.values():
                if queue and queue[0].size < 0:
                    self._drop_after_failure(queue, errors)
            heads = sorted((q[0] for q in queues.values() if q), key=lambda p: p.index)
            if not heads:
                break
            retry = False
            for chunk in self._chunks(heads, errors):
                outcome = self._put_chunk(chunk)
                for pending, (where, reason, can_retry) in zip(chunk, outcome, strict=True):
                    key = records[pending.index][0]
                    queue = queues[key]
                    if where is not None:
                        landed[pending.index] = where
                        queue.popleft()
                        continue
                    pending.attempts += 1
                    if can_retry and pending.attempts < self.max_put_attempts:
                        retry = True
                        continue
                    errors[pending.index] = (
                        f"{reason} (after {pending.attempts} attempt"
                        f"{'s' if pending.attempts != 1 else ''})"
                    )
                    if can_retry:
                        retriable.add(pending.index)
                    self._drop_after_failure(queue, errors)
            for queue in queues.values():
                while queue and queue[0].index in errors:  # chunking refused it (too big)
                    self._drop_after_failure(queue, errors)
            if retry:
                time.sleep(backoff / 2 + random.uniform(0, backoff / 2))
                backoff = min(backoff * 2, self.max_backoff_s)
        result = AppendResult(landed, {i: errors[i] for i in sorted(errors)})
        if (
            n
            and len(errors) == n
            and retriable
            and all(i in retriable or errors[i].startswith("not sent") for i in errors)
        ):
            first = min(retriable)
            raise BackpressureError(
                f"{self._where()}: none of {n} records stored ({errors[first]})",
                retry_after_s=1.0,
            )
        return result

    @staticmethod
    def _drop_after_failure(queue: deque[_Pending], errors: dict[int, str]) -> None:
        """The head of ``queue`` failed for good: the later records of its key fail too."""
        failed = queue.popleft()
        while queue:
            later = queue.popleft()
            errors.setdefault(
                later.index,
                f"not sent: record {failed.index} of the same key was not stored "
                "(sending it would break the key's order)",
            )

    def _chunks(self, heads: list[_Pending], errors: dict[int, str]) -> list[list[_Pending]]:
        chunks: list[list[_Pending]] = []
        current: list[_Pending] = []
        size = 0
        for pending in heads:
            if pending.size > MAX_RECORD_BYTES:
                errors[pending.index] = (
                    f"record of {pending.size} bytes (data + partition key): Kinesis takes "
                    f"at most {MAX_RECORD_BYTES}"
                )
                continue
            if current and (
                len(current) >= MAX_RECORDS_PER_CALL or size + pending.size > MAX_BYTES_PER_CALL
            ):
                chunks.append(current)
                current, size = [], 0
            current.append(pending)
            size += pending.size
        if current:
            chunks.append(current)
        return chunks

    def _put_chunk(self, chunk: list[_Pending]) -> list[tuple[Appended | None, str, bool]]:
        """One PutRecords call: per record ``(where it landed or None, why not, whether a
        retry may store it)``."""
        entries: list[dict[str, Any]] = []
        for pending in chunk:
            entry: dict[str, Any] = {"Data": pending.data, "PartitionKey": pending.partition_key}
            if pending.explicit_hash_key is not None:
                entry["ExplicitHashKey"] = pending.explicit_hash_key
            entries.append(entry)
        try:
            response = self._kinesis.put_records(StreamName=self.stream_name, Records=entries)
        except Exception as exc:
            if not _is_client_error(exc):
                raise
            code = error_code(exc)
            if code == "ResourceNotFoundException":
                raise StreamError(f"{self._where()} no longer exists: {exc}") from exc
            can_retry = code in _RETRIABLE_CALL_CODES or not code  # no code: connection
            return [(None, f"PutRecords failed: {exc}", can_retry)] * len(chunk)
        results = response.get("Records", [])
        if len(results) != len(chunk):
            raise StreamError(
                f"{self._where()}: PutRecords answered {len(results)} records for {len(chunk)} sent"
            )
        out: list[tuple[Appended | None, str, bool]] = []
        newest: dict[int, int] = {}
        for result in results:
            code = result.get("ErrorCode")
            if code or "SequenceNumber" not in result:
                reason = f"{code or 'no sequence number'}: {result.get('ErrorMessage', '')}"
                out.append((None, reason.rstrip(": "), code in _RETRIABLE_RECORD_CODES))
                continue
            shard_id = result["ShardId"]
            partition = self._partition_of.get(shard_id)
            if partition is None:
                raise StreamError(
                    f"{self._where()}: a record landed in shard {shard_id}, not one of the "
                    "open shards read at open (resharded? reopen the stream)"
                )
            offset = int(result["SequenceNumber"])
            newest[partition] = max(newest.get(partition, offset), offset)
            out.append((Appended(partition, offset), "", False))
        self._note_newest(newest)
        return out

    def append(self, records: Sequence[tuple[str, bytes]]) -> list[Appended]:
        """See :meth:`EventStream.append`. Kinesis cannot append all-or-nothing: when some
        records failed (after their retries) the others *are* stored, and this raises
        :class:`~playpulse.errors.StreamError` saying how many failed (use
        :meth:`append_each` to retry only those); :class:`BackpressureError` when none
        was stored because of throttling."""
        result = self.append_each(records)
        if result.errors:
            first = min(result.errors)
            raise StreamError(
                f"{self._where()}: {len(result.errors)} of {len(records)} records not stored "
                f"(record {first}: {result.errors[first]}); the others were stored"
            )
        return [a for a in result.landed if a is not None]

    def append_offsets(self, records: Sequence[tuple[str, bytes]]) -> dict[int, range]:
        """See :meth:`EventStream.append_offsets`: ``{partition: range(lowest offset,
        highest offset + 1)}`` of the records stored there. On Kinesis the range holds
        sequence numbers that are no record (they are sparse), and the records of
        *different* keys in one partition may take its offsets in another order than in
        ``records`` (one record per key per PutRecords call; a key's own records keep
        their order). Same errors as :meth:`append`."""
        spans: dict[int, tuple[int, int]] = {}
        for a in self.append(records):
            lo, hi = spans.get(a.partition, (a.offset, a.offset))
            spans[a.partition] = (min(lo, a.offset), max(hi, a.offset))
        return {p: range(lo, hi + 1) for p, (lo, hi) in spans.items()}

    def _note_newest(self, newest: dict[int, int]) -> None:
        with self._lock:
            for p, seq in newest.items():
                if seq > self._newest.get(p, -1):
                    self._newest[p] = seq

    # --- read -----------------------------------------------------------------------------

    def _iterator(self, partition: int, position: int) -> str:
        """A shard iterator reading ``partition`` from ``position`` (cached, else new)."""
        now = time.monotonic()
        with self._lock:
            cached = self._iterators.pop((partition, position), None)
        if cached is not None and now - cached[1] < ITERATOR_TTL_S:
            return cached[0]
        return self._new_iterator(partition, position)

    def _new_iterator(self, partition: int, position: int) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        shard = self._shards[partition]
        attempts: list[dict[str, str]]
        if position <= shard.starting_sequence:
            attempts = [{"ShardIteratorType": "TRIM_HORIZON"}]
        else:
            attempts = [
                {
                    "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                    "StartingSequenceNumber": str(position - 1),
                },
                {
                    "ShardIteratorType": "AT_SEQUENCE_NUMBER",
                    "StartingSequenceNumber": str(position),
                },
            ]
        last: Exception | None = None
        for kwargs in attempts:
            try:
                response = self._kinesis.get_shard_iterator(
                    StreamName=self.stream_name, ShardId=shard.shard_id, **kwargs
                )
                return str(response["ShardIterator"])
            except ClientError as exc:
                if error_code(exc) != "InvalidArgumentException":
                    raise StreamError(
                        f"{self._where()} shard {shard.shard_id}: no iterator at position "
                        f"{position}: {exc}"
                    ) from exc
                last = exc
            except BotoCoreError as exc:
                raise StreamError(
                    f"{self._where()} shard {shard.shard_id}: no iterator at position "
                    f"{position}: {exc}"
                ) from exc
        raise OffsetOutOfRangeError(
            f"{self._where()} shard {shard.shard_id}: position {position} is not one Kinesis "
            f"knows in the shard: {last}"
        )

    def _keep_iterator(self, partition: int, position: int, iterator: str | None) -> None:
        if iterator is None:
            return
        with self._lock:
            self._iterators[(partition, position)] = (iterator, time.monotonic())
            while len(self._iterators) > ITERATOR_CACHE_SIZE:
                self._iterators.popitem(last=False)

    def _fetch(self, partition: int, position: int, max_records: int) -> list[Record]:
        """Up to ``max_records`` records of ``partition`` with sequence numbers
        ``>= position``; fewer only at the end of the shard (or of a closed shard)."""
        from botocore.exceptions import BotoCoreError, ClientError

        out: list[Record] = []
        empty_pages = 0
        while len(out) < max_records:
            want = min(MAX_GET_RECORDS, max_records - len(out))
            iterator = self._iterator(partition, position)
            try:
                response = self._kinesis.get_records(ShardIterator=iterator, Limit=want)
            except ClientError as exc:
                if error_code(exc) == "ExpiredIteratorException":
                    with self._lock:
                        self._iterators.pop((partition, position), None)
                    iterator = self._new_iterator(partition, position)
                    try:
                        response = self._kinesis.get_records(ShardIterator=iterator, Limit=want)
                    except (ClientError, BotoCoreError) as again:
                        raise self._read_error(partition, position, again) from again
                else:
                    raise self._read_error(partition, position, exc) from exc
            except BotoCoreError as exc:
                raise self._read_error(partition, position, exc) from exc
            got = response.get("Records", [])
            for raw in got:
                out.append(
                    Record(
                        partition=partition,
                        offset=int(raw["SequenceNumber"]),
                        key=_decode_key(raw.get("PartitionKey", "")),
                        value=bytes(raw.get("Data", b"")),
                        appended_at=_utc(raw["ApproximateArrivalTimestamp"]),
                    )
                )
            if got:
                position = out[-1].offset + 1
                self._note_newest({partition: out[-1].offset})
            following = response.get("NextShardIterator")
            self._keep_iterator(partition, position, following)
            behind = int(response.get("MillisBehindLatest", 0) or 0)
            if following is None:  # a closed shard read to its end
                break
            if not got:
                empty_pages += 1
                if behind == 0 or empty_pages >= 20:
                    break
            elif len(got) < want and behind == 0:
                break
        return out

    def _read_error(self, partition: int, position: int, exc: Exception) -> StreamError:
        return StreamError(
            f"{self._where()} shard {self._shards[partition].shard_id}: cannot read from "
            f"position {position}: {exc}"
        )

    def _end(self, partition: int) -> int:
        """The partition's end offset: newest sequence number + 1, or its start when it
        has no record; reads forward from the newest sequence number known here."""
        start = self._shards[partition].starting_sequence
        with self._lock:
            newest = self._newest.get(partition)
        position = start if newest is None else newest + 1
        while True:
            records = self._fetch(partition, position, MAX_GET_RECORDS)
            if not records:
                break
            position = records[-1].offset + 1
        with self._lock:
            newest = self._newest.get(partition)
        return start if newest is None else max(start, newest + 1)

    def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        """See :meth:`EventStream.read`: the records with sequence numbers ``>= offset``
        (``GetShardIterator`` + ``GetRecords``; iterators are cached per (partition, next
        position) so sequential reads make one ``GetRecords`` call each). Raises
        :class:`~playpulse.errors.OffsetOutOfRangeError` for an offset below the shard's
        start or past its end, :class:`~playpulse.errors.StreamError` when Kinesis cannot
        be read."""
        self._check_open()
        self._check_partition(partition)
        start = self._shards[partition].starting_sequence
        if offset < start:
            raise OffsetOutOfRangeError(
                f"{self._where()} shard {self._shards[partition].shard_id}: offset {offset} "
                f"is below the shard's start {start}"
            )
        records = self._fetch(partition, offset, max_records) if max_records > 0 else []
        if not records:
            with self._lock:
                newest = self._newest.get(partition)
            if offset == start or (newest is not None and offset <= newest + 1):
                return []  # within what is known to exist: no need to find the end
            end = self._end(partition)
            if offset > end:
                raise OffsetOutOfRangeError(
                    f"{self._where()} shard {self._shards[partition].shard_id}: offset "
                    f"{offset} is past the end {end}"
                )
        return records

    def partitions(self) -> list[PartitionInfo]:
        """See :meth:`EventStream.partitions` and the module docstring: ``start_offset``
        is the shard's starting sequence number, ``end_offset`` the newest record's + 1
        (``count`` is not a record count on real Kinesis: sequence numbers are sparse)."""
        self._check_open()
        return [
            PartitionInfo(p, self._shards[p].starting_sequence, self._end(p))
            for p in range(self.num_partitions)
        ]

    # --- checkpoints (DynamoDB) -------------------------------------------------------------

    def _dynamodb(self) -> Any:
        with self._table_lock:
            if self._dynamodb_client is None:
                self._dynamodb_client = aws_client("dynamodb")
            return self._dynamodb_client

    def _table_where(self) -> str:
        return f"DynamoDB table {self.checkpoint_table!r} (checkpoints of {self._where()})"

    def _table_exists(self) -> bool:
        """Whether the checkpoint table exists (without creating it)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._table_ready:
            return True
        try:
            self._dynamodb().describe_table(TableName=self.checkpoint_table)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return False
            raise StreamError(f"{self._table_where()}: cannot describe it: {exc}") from exc
        except BotoCoreError as exc:
            raise StreamError(f"{self._table_where()}: cannot describe it: {exc}") from exc
        self._table_ready = True
        return True

    def _ensure_table(self) -> Any:
        """The DynamoDB client, once the checkpoint table exists (created on first use:
        ``pk``/``sk`` strings, on-demand billing)."""
        from botocore.exceptions import BotoCoreError, ClientError

        db = self._dynamodb()
        if self._table_exists():
            return db
        try:
            db.create_table(
                TableName=self.checkpoint_table,
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":  # another process made it
                raise StreamError(f"{self._table_where()}: cannot create it: {exc}") from exc
        except BotoCoreError as exc:
            raise StreamError(f"{self._table_where()}: cannot create it: {exc}") from exc
        deadline = time.monotonic() + self.wait_s
        delay = 0.05
        while True:
            try:
                status = db.describe_table(TableName=self.checkpoint_table)["Table"]["TableStatus"]
            except (ClientError, BotoCoreError) as exc:
                raise StreamError(f"{self._table_where()}: cannot describe it: {exc}") from exc
            if status == "ACTIVE":
                break
            if time.monotonic() >= deadline:
                raise StreamError(f"{self._table_where()} is {status} after {self.wait_s:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        self._table_ready = True
        return db

    def _db_call(self, what: str, call: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise StreamError(f"{self._table_where()}: cannot {what}: {exc}") from exc

    @staticmethod
    def _group_pk(group: str) -> dict[str, str]:
        return {"S": f"group#{group}"}

    def committed(self, group: str, partition: int) -> int | None:
        """See :meth:`EventStream.committed` (a consistent read of the checkpoint item;
        ``None`` while the checkpoint table does not exist)."""
        self._check_open()
        self._check_partition(partition)
        if not self._table_exists():
            return None
        db = self._dynamodb()
        item = self._db_call(
            f"read group {group!r}'s checkpoint",
            db.get_item,
            TableName=self.checkpoint_table,
            Key={
                "pk": self._group_pk(group),
                "sk": {"S": f"checkpoint#{self._shards[partition].shard_id}"},
            },
            ConsistentRead=True,
        ).get("Item")
        return None if item is None else int(item["position"]["S"])

    def commit(self, group: str, partition: int, offset: int) -> None:
        """See :meth:`EventStream.commit`: writes the checkpoint item (the table is made
        on first use). Raises :class:`~playpulse.errors.OffsetOutOfRangeError` for a
        negative offset or one past the partition's end."""
        self._check_open()
        self._check_partition(partition)
        if offset < 0 or offset > self._end(partition):
            raise OffsetOutOfRangeError(
                f"{self._where()} shard {self._shards[partition].shard_id}: group {group!r} "
                f"cannot commit offset {offset}: outside 0..{self._end(partition)}"
            )
        db = self._ensure_table()
        self._db_call(
            f"write group {group!r}'s checkpoint",
            db.put_item,
            TableName=self.checkpoint_table,
            Item={
                "pk": self._group_pk(group),
                "sk": {"S": f"checkpoint#{self._shards[partition].shard_id}"},
                "group": {"S": group},
                "position": {"S": str(offset)},
                "committed_at": {"S": datetime.now(UTC).isoformat()},
            },
        )

    def groups(self) -> list[str]:
        """See :meth:`EventStream.groups` (a scan of the checkpoint table: small)."""
        self._check_open()
        if not self._table_exists():
            return []
        db = self._dynamodb()
        names: set[str] = set()
        kwargs: dict[str, Any] = {
            "TableName": self.checkpoint_table,
            "ConsistentRead": True,
            "FilterExpression": "begins_with(sk, :c)",
            "ExpressionAttributeValues": {":c": {"S": "checkpoint#"}},
            "ProjectionExpression": "#g",
            "ExpressionAttributeNames": {"#g": "group"},
        }
        while True:
            page = self._db_call("list the groups", db.scan, **kwargs)
            names |= {item["group"]["S"] for item in page.get("Items", [])}
            last = page.get("LastEvaluatedKey")
            if not last:
                break
            kwargs["ExclusiveStartKey"] = last
        return sorted(names)

    def lag(self, group: str) -> dict[int, int]:
        """See :meth:`EventStream.lag`: the records from ``group``'s checkpoint (the
        shard's start where it has none) to the newest, counted by reading them."""
        self._check_open()
        out = {}
        for p in range(self.num_partitions):
            committed = self.committed(group, p)
            position = self._shards[p].starting_sequence if committed is None else committed
            count = 0
            while records := self._fetch(p, position, MAX_GET_RECORDS):
                count += len(records)
                position = records[-1].offset + 1
            out[p] = count
        return out

    # --- group membership (leases in the checkpoint table) -------------------------------

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
        """See :meth:`EventStream.coordinate`: the member's item and its shard leases
        are renewed with conditional writes (``owner = member``); a lease is claimed with
        a conditional put that succeeds only when the lease is absent, expired or already
        the member's, so two members never own one shard at once."""
        from botocore.exceptions import ClientError

        self._check_open()
        db = self._ensure_table()
        pk = self._group_pk(group)
        until = {"N": repr(now_s + session_timeout_s)}
        now = {"N": repr(now_s)}
        me = {"S": member}
        self._db_call(
            f"renew member {member!r} of group {group!r}",
            db.put_item,
            TableName=self.checkpoint_table,
            Item={"pk": pk, "sk": {"S": f"member#{member}"}, "member": me, "expires": until},
        )
        for gone in set(release):
            self._check_partition(gone)
            self._release(db, pk, gone, member)
        items = self._group_items(db, pk)
        members = sorted(
            item["member"]["S"]
            for item in items
            if item["sk"]["S"].startswith("member#") and float(item["expires"]["N"]) > now_s
        )
        for item in items:  # forget dead members (unless one renewed itself meanwhile)
            if item["sk"]["S"].startswith("member#") and float(item["expires"]["N"]) <= now_s:
                try:
                    db.delete_item(
                        TableName=self.checkpoint_table,
                        Key={"pk": pk, "sk": item["sk"]},
                        ConditionExpression="expires <= :now",
                        ExpressionAttributeValues={":now": now},
                    )
                except ClientError as exc:
                    if error_code(exc) != "ConditionalCheckFailedException":
                        raise StreamError(
                            f"{self._table_where()}: cannot forget dead member "
                            f"{item['sk']['S']}: {exc}"
                        ) from exc
        owned: set[int] = set()
        released = set(release)
        for item in items:
            sk = item["sk"]["S"]
            if not sk.startswith("lease#") or item.get("owner", {}).get("S") != member:
                continue
            mine = self._partition_of.get(sk[len("lease#") :])
            if mine is None or mine in released:
                continue
            try:
                db.update_item(
                    TableName=self.checkpoint_table,
                    Key={"pk": pk, "sk": {"S": sk}},
                    UpdateExpression="SET expires = :until",
                    ConditionExpression="#o = :me",
                    ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={":until": until, ":me": me},
                )
                owned.add(mine)
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise StreamError(
                        f"{self._table_where()}: cannot renew {member!r}'s lease of {sk}: {exc}"
                    ) from exc
        for p in sorted(set(claim) - owned - released):
            self._check_partition(p)
            try:
                db.put_item(
                    TableName=self.checkpoint_table,
                    Item={
                        "pk": pk,
                        "sk": {"S": f"lease#{self._shards[p].shard_id}"},
                        "owner": me,
                        "expires": until,
                    },
                    ConditionExpression="attribute_not_exists(pk) OR expires <= :now OR #o = :me",
                    ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={":now": now, ":me": me},
                )
                owned.add(p)
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise StreamError(
                        f"{self._table_where()}: cannot claim partition {p} for {member!r}: {exc}"
                    ) from exc
        return GroupView(members, frozenset(owned))

    def _group_items(self, db: Any, pk: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.checkpoint_table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": pk},
            "ConsistentRead": True,
        }
        while True:
            page = self._db_call(f"read group {pk['S']!r}", db.query, **kwargs)
            items += page.get("Items", [])
            last = page.get("LastEvaluatedKey")
            if not last:
                return items
            kwargs["ExclusiveStartKey"] = last

    def _release(self, db: Any, pk: dict[str, str], partition: int, member: str) -> None:
        from botocore.exceptions import ClientError

        try:
            db.delete_item(
                TableName=self.checkpoint_table,
                Key={"pk": pk, "sk": {"S": f"lease#{self._shards[partition].shard_id}"}},
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": {"S": member}},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise StreamError(
                    f"{self._table_where()}: cannot release partition {partition} of "
                    f"{member!r}: {exc}"
                ) from exc

    def leave(self, group: str, member: str) -> None:
        """See :meth:`EventStream.leave`: deletes the member's item and the leases it
        owns (conditionally: a lease another member took meanwhile stays)."""
        if self._closed or not self._table_exists():
            return
        db = self._dynamodb()
        pk = self._group_pk(group)
        self._db_call(
            f"remove member {member!r} of group {group!r}",
            db.delete_item,
            TableName=self.checkpoint_table,
            Key={"pk": pk, "sk": {"S": f"member#{member}"}},
        )
        for item in self._group_items(db, pk):
            sk = item["sk"]["S"]
            if sk.startswith("lease#") and item.get("owner", {}).get("S") == member:
                p = self._partition_of.get(sk[len("lease#") :])
                if p is not None:
                    self._release(db, pk, p, member)

    # --- retention: Kinesis' ---------------------------------------------------------------

    def enforce_retention(self, now: datetime) -> int:
        """Deletes nothing and returns 0: Kinesis trims records past the stream's
        retention period (24 h to 365 d) itself (:attr:`manages_retention` is ``False``)."""
        return 0

    def stored_bytes(self) -> int:
        """Not known to a Kinesis client (CloudWatch's ``IncomingBytes`` tells): raises
        :class:`~playpulse.errors.StreamError`."""
        raise StreamError(f"{self._where()}: its size is Kinesis' own (see CloudWatch)")

    def lost(self, group: str) -> dict[int, int]:
        """Not known to a Kinesis client (Kinesis trims by age without telling): raises
        :class:`~playpulse.errors.StreamError`."""
        raise StreamError(
            f"{self._where()}: records Kinesis trimmed before group {group!r} committed them "
            "are not counted by Kinesis"
        )

    def close(self) -> None:
        """Release the clients' connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._iterators.clear()
        for c in (self._kinesis, self._dynamodb_client):
            closer = getattr(c, "close", None)
            if callable(closer):
                closer()
