"""Test helpers: a stream wrapper that is slow or stuck on purpose, an unprivileged run
and a folder it can reach."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

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
        self.max_bytes = inner.max_bytes
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

    def stored_bytes(self) -> int:
        """The wrapped stream's stored bytes."""
        return self.inner.stored_bytes()

    def lost(self, group: str) -> dict[int, int]:
        """The wrapped stream's lost records of ``group``."""
        return self.inner.lost(group)

    def close(self) -> None:
        """Close the wrapped stream."""
        self.inner.close()


@contextlib.contextmanager
def unprivileged_dir() -> Iterator[Path]:
    """A new temporary folder that the user ``nobody`` of :func:`run_unprivileged` can
    reach (mode 0755; pytest's ``tmp_path`` is root's only). On exit, every folder in it
    is made writable again (tests make them read-only) and the whole tree is removed."""
    path = Path(tempfile.mkdtemp(prefix="playpulse-ro-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for sub in [path, *path.rglob("*")]:
            if sub.is_dir():
                sub.chmod(0o755)
        shutil.rmtree(path)


def run_unprivileged(fn: Callable[[], object]) -> str:
    """Run ``fn`` in a forked child, as the user ``nobody`` (uid 65534) when this process
    is root; return ``"ok"`` if it returned, else ``"<exception class>: <message>"``.

    For tests of read-only files and folders: root writes whatever the permissions say,
    so a test running as root (containers, CI) must drop privileges to see a
    permission refused. Everything ``fn`` needs must be imported already (the child
    cannot read the interpreter's files once it is ``nobody``). POSIX only.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's code
        status = 1
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                fn()
                message = "ok"
            except BaseException as exc:
                message = f"{type(exc).__name__}: {exc}"
            os.write(write_end, message.encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"the unprivileged child failed (wait status {status})")
    return b"".join(chunks).decode()
