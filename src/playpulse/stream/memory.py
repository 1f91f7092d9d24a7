"""An in-memory event stream: a test double and a reference for the contract.

It keeps everything in process memory, so nothing survives the process: use it in tests
and notebooks, never for data you need to keep. Like the SQLite stream, it keeps the
records of one append to one partition together as a batch, which retention deletes
whole.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from playpulse.errors import ConfigError, OffsetOutOfRangeError, StreamError
from playpulse.stream.base import Appended, EventStream, GroupView, PartitionInfo, Record


@dataclass(frozen=True, slots=True)
class _Batch:
    records: list[Record]
    size_bytes: int

    @property
    def base(self) -> int:
        return self.records[0].offset

    @property
    def end(self) -> int:
        return self.records[-1].offset + 1


#: Bytes counted per record beside its key and value (its offset and append time), so
#: that even an empty record takes room and ``max_bytes=0`` keeps nothing.
RECORD_OVERHEAD_BYTES = 16


class MemoryStream(EventStream):
    """An :class:`EventStream` held in lists, one per partition (not durable).

    ``max_bytes`` bounds :meth:`stored_bytes` (UTF-8 keys plus values, plus
    :data:`RECORD_OVERHEAD_BYTES` a record for its offset and time) at retention;
    ``None`` means no bound. Raises :class:`~playpulse.errors.ConfigError` for a
    negative ``max_bytes``.
    """

    def __init__(
        self,
        *,
        name: str = "events",
        num_partitions: int = 4,
        retention: timedelta = timedelta(days=7),
        max_bytes: int | None = None,
    ) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ConfigError(f"max_bytes must be at least 0 or None, got {max_bytes}")
        self.name = name
        self.num_partitions = num_partitions
        self.retention = retention
        self.max_bytes = max_bytes
        self._batches: list[list[_Batch]] = [[] for _ in range(num_partitions)]
        self._start = [0] * num_partitions
        self._end = [0] * num_partitions
        self._offsets: dict[tuple[str, int], int] = {}
        self._lost: dict[tuple[str, int], int] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        # (group, member) -> lease expiry; (group, partition) -> (owner, lease expiry)
        self._members: dict[tuple[str, str], float] = {}
        self._owners: dict[tuple[str, int], tuple[str, float]] = {}

    def append(self, records: Sequence[tuple[str, bytes]]) -> list[Appended]:
        """See :meth:`EventStream.append`."""
        now = datetime.now(UTC)
        out = []
        with self._lock:
            by_partition: dict[int, list[Record]] = {}
            for key, value in records:
                p = self.partition_for(key)
                offset = self._end[p]
                self._end[p] += 1
                by_partition.setdefault(p, []).append(Record(p, offset, key, value, now))
                out.append(Appended(p, offset))
            for p, batch in by_partition.items():
                size = sum(
                    len(r.key.encode()) + len(r.value) + RECORD_OVERHEAD_BYTES for r in batch
                )
                self._batches[p].append(_Batch(batch, size))
                self._bytes += size
        return out

    def _check(self, partition: int) -> None:
        if not 0 <= partition < self.num_partitions:
            raise StreamError(
                f"partition {partition} does not exist (0..{self.num_partitions - 1})"
            )

    def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        """See :meth:`EventStream.read`."""
        self._check(partition)
        with self._lock:
            start, end = self._start[partition], self._end[partition]
            if offset < start or offset > end:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is outside partition {partition}'s retained range "
                    f"{start}..{end}"
                )
            out: list[Record] = []
            for batch in self._batches[partition]:
                if batch.end <= offset:
                    continue
                out.extend(batch.records[max(offset - batch.base, 0) :])
                if len(out) >= max_records:
                    break
            return out[:max_records]

    def partitions(self) -> list[PartitionInfo]:
        """See :meth:`EventStream.partitions`."""
        with self._lock:
            return [
                PartitionInfo(p, self._start[p], self._end[p]) for p in range(self.num_partitions)
            ]

    def committed(self, group: str, partition: int) -> int | None:
        """See :meth:`EventStream.committed`."""
        return self._offsets.get((group, partition))

    def commit(self, group: str, partition: int, offset: int) -> None:
        """See :meth:`EventStream.commit`."""
        self._check(partition)
        if offset > self._end[partition] or offset < 0:
            raise OffsetOutOfRangeError(
                f"cannot commit offset {offset} for partition {partition}: "
                f"its end offset is {self._end[partition]}"
            )
        self._offsets[(group, partition)] = offset

    def groups(self) -> list[str]:
        """See :meth:`EventStream.groups`."""
        return sorted({g for g, _ in self._offsets})

    def stored_bytes(self) -> int:
        """See :meth:`EventStream.stored_bytes` (UTF-8 keys plus values plus
        :data:`RECORD_OVERHEAD_BYTES` a record)."""
        return self._bytes

    def lost(self, group: str) -> dict[int, int]:
        """See :meth:`EventStream.lost`."""
        return {p: self._lost.get((group, p), 0) for p in range(self.num_partitions)}

    def enforce_retention(self, now: datetime) -> int:
        """See :meth:`EventStream.enforce_retention`."""
        cutoff = now - self.retention
        deleted = 0
        with self._lock:
            groups = sorted({g for g, _ in self._offsets})
            for p in range(self.num_partitions):
                # The offset below which every group has committed.
                bound = min(
                    (self._offsets.get((g, p), self._start[p]) for g in groups),
                    default=self._end[p],
                )
                while (
                    self._batches[p]
                    and self._batches[p][0].end <= bound
                    and self._batches[p][0].records[0].appended_at < cutoff
                ):
                    deleted += self._drop_oldest(p, groups)
            while self.max_bytes is not None and self._bytes > self.max_bytes:
                p = min(
                    (p for p in range(self.num_partitions) if self._batches[p]),
                    key=lambda p: (self._batches[p][0].records[0].appended_at, p),
                )
                deleted += self._drop_oldest(p, groups)
        return deleted

    def _drop_oldest(self, p: int, groups: list[str]) -> int:
        """Delete partition ``p``'s oldest batch, counting it as lost where uncommitted."""
        batch = self._batches[p].pop(0)
        for g in groups:
            position = self._offsets.get((g, p), self._start[p])
            lost = batch.end - max(position, batch.base)
            if lost > 0:
                self._lost[(g, p)] = self._lost.get((g, p), 0) + lost
        self._start[p] = batch.end
        self._bytes -= batch.size_bytes
        return len(batch.records)

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
        """See :meth:`EventStream.coordinate` (leases in this object: members of one
        group in threads of this process)."""
        until = now_s + session_timeout_s
        with self._lock:
            self._members[(group, member)] = until
            for p in release:
                if self._owners.get((group, p), ("", 0.0))[0] == member:
                    del self._owners[(group, p)]
            for p in claim:
                self._check(p)
                owner = self._owners.get((group, p))
                if owner is None or owner[0] == member or owner[1] < now_s:
                    self._owners[(group, p)] = (member, until)
            owned = set()
            for (g, p), (owner_name, expires) in list(self._owners.items()):
                if g == group and owner_name == member:
                    if expires < now_s:  # lapsed: lost, not renewed
                        del self._owners[(g, p)]
                    else:
                        self._owners[(g, p)] = (member, until)
                        owned.add(p)
            members = sorted(
                m for (g, m), exp in self._members.items() if g == group and exp >= now_s
            )
        return GroupView(members, frozenset(owned))

    def leave(self, group: str, member: str) -> None:
        """See :meth:`EventStream.leave`."""
        with self._lock:
            self._members.pop((group, member), None)
            for key, (owner, _) in list(self._owners.items()):
                if key[0] == group and owner == member:
                    del self._owners[key]
