"""Stream wrappers for tests: make a real stream slow or stuck on purpose."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from playpulse.stream.base import Appended, EventStream, PartitionInfo, Record


class GatedStream(EventStream):
    """Wraps a stream; ``append`` waits until ``gate`` is set (the gate starts open).

    Clear ``gate`` to hold appends, as a stream that cannot keep up would; set it to let
    them through. ``waiting`` counts appends currently held.
    """

    def __init__(self, inner: EventStream) -> None:
        self.inner = inner
        self.name = inner.name
        self.num_partitions = inner.num_partitions
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = 0
        self._lock = threading.Lock()

    def append(self, records: Sequence[tuple[str, bytes]]) -> list[Appended]:
        """Wait for the gate, then append to the wrapped stream."""
        with self._lock:
            self.waiting += 1
        try:
            self.gate.wait()
        finally:
            with self._lock:
                self.waiting -= 1
        return self.inner.append(records)

    def read(self, partition: int, offset: int, max_records: int) -> list[Record]:
        """Read from the wrapped stream."""
        return self.inner.read(partition, offset, max_records)

    def partitions(self) -> list[PartitionInfo]:
        """The wrapped stream's partitions."""
        return self.inner.partitions()

    def committed(self, group: str, partition: int) -> int | None:
        """The wrapped stream's committed offset."""
        return self.inner.committed(group, partition)

    def commit(self, group: str, partition: int, offset: int) -> None:
        """Commit on the wrapped stream."""
        self.inner.commit(group, partition, offset)

    def groups(self) -> list[str]:
        """The wrapped stream's groups."""
        return self.inner.groups()

    def enforce_retention(self, now: datetime) -> int:
        """Retention on the wrapped stream."""
        return self.inner.enforce_retention(now)

    def close(self) -> None:
        """Close the wrapped stream."""
        self.inner.close()
