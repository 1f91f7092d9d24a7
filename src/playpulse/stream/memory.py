"""An in-memory event stream: a test double and a reference for the contract.

It keeps everything in process memory, so nothing survives the process: use it in tests
and notebooks, never for data you need to keep.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from playpulse.errors import OffsetOutOfRangeError, StreamError
from playpulse.stream.base import Appended, EventStream, PartitionInfo, Record


class MemoryStream(EventStream):
    """An :class:`EventStream` held in lists, one per partition (not durable)."""

    def __init__(
        self,
        *,
        name: str = "events",
        num_partitions: int = 4,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self.name = name
        self.num_partitions = num_partitions
        self.retention = retention
        self._records: list[list[Record]] = [[] for _ in range(num_partitions)]
        self._start = [0] * num_partitions
        self._end = [0] * num_partitions
        self._offsets: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def append(self, records: Sequence[tuple[str, bytes]]) -> list[Appended]:
        """See :meth:`EventStream.append`."""
        now = datetime.now(UTC)
        out = []
        with self._lock:
            for key, value in records:
                p = self.partition_for(key)
                offset = self._end[p]
                self._end[p] += 1
                self._records[p].append(Record(p, offset, key, value, now))
                out.append(Appended(p, offset))
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
            i = offset - start
            return self._records[partition][i : i + max_records]

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

    def enforce_retention(self, now: datetime) -> int:
        """See :meth:`EventStream.enforce_retention`."""
        cutoff = now - self.retention
        deleted = 0
        with self._lock:
            for p in range(self.num_partitions):
                keep = [r for r in self._records[p] if r.appended_at >= cutoff]
                dropped = len(self._records[p]) - len(keep)
                self._records[p] = keep
                self._start[p] += dropped
                deleted += dropped
        return deleted
