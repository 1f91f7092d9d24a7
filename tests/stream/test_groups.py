"""Lease-based consumer groups (the embedded streams): members that stay busy still
rebalance, so partitions move within seconds however much work is waiting."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from playpulse.stream import EventStream, MemoryStream, SQLiteStream

SESSION_S = 0.6


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, list[int]]] = []

    def on_assign(self, partitions: list[int]) -> dict[int, int]:
        self.events.append(("assign", partitions))
        return {}

    def on_revoke(self, partitions: list[int]) -> None:
        self.events.append(("revoke", partitions))


@pytest.fixture(params=["memory", "sqlite"])
def stream(request: pytest.FixtureRequest, tmp_path: Path) -> EventStream:
    if request.param == "memory":
        return MemoryStream(num_partitions=4)
    return SQLiteStream(tmp_path / "stream.db", num_partitions=4)


def busy_until(stream: EventStream, members: dict, seconds: float, check) -> bool:
    """Poll every member and check ownership of its partitions the way a processor
    does before each write (every ~50 ms, far more often than the heartbeat) until
    ``check()`` holds or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for consumer in members.values():
            consumer.poll(10)
            consumer.owns(consumer.assignment())
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_busy_member_gives_a_joining_member_its_range(stream: EventStream) -> None:
    stream.append([(f"user-{i}", b"x") for i in range(2_000)])
    a = stream.group_consumer("g", "a", Recorder(), session_timeout_s=SESSION_S)
    assert busy_until(stream, {"a": a}, 5, lambda: a.assignment() == [0, 1, 2, 3])
    b = stream.group_consumer("g", "b", Recorder(), session_timeout_s=SESSION_S)
    members = {"a": a, "b": b}
    assert busy_until(
        stream, members, 5, lambda: a.assignment() == [0, 1] and b.assignment() == [2, 3]
    ), (a.assignment(), b.assignment())


def test_a_busy_survivor_takes_a_dead_members_partitions(stream: EventStream) -> None:
    stream.append([(f"user-{i}", b"x") for i in range(2_000)])
    a = stream.group_consumer("g", "a", Recorder(), session_timeout_s=SESSION_S)
    b = stream.group_consumer("g", "b", Recorder(), session_timeout_s=SESSION_S)
    both = {"a": a, "b": b}
    assert busy_until(
        stream, both, 5, lambda: a.assignment() == [0, 1] and b.assignment() == [2, 3]
    )
    # b dies (stops polling, never leaves); a stays busy.
    assert busy_until(stream, {"a": a}, 5, lambda: a.assignment() == [0, 1, 2, 3])
    assert b.assignment() == [2, 3]  # b does not know yet: its next poll revokes them
    b.poll(10)
    assert b.assignment() == []
