"""Fixtures for the stream tests.

``stream_factory`` is parametrized over every stream backend, so each test that uses it
runs once per backend (the contract in ``test_contract.py``). To put a new backend under
the contract, add one entry to ``BACKENDS``: a function that builds a fresh, empty stream
from a directory it may use and the requested ``num_partitions``, ``retention`` and
``max_bytes``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import pytest

from playpulse.stream import EventStream, MemoryStream, SQLiteStream


class StreamFactory(Protocol):
    """Builds a fresh, empty stream of one backend; the fixture closes it afterwards."""

    def __call__(
        self,
        *,
        num_partitions: int = 4,
        retention: timedelta = timedelta(days=7),
        max_bytes: int | None = None,
    ) -> EventStream: ...


_Builder = Callable[[Path, int, timedelta, int | None], EventStream]


def _sqlite(
    directory: Path, num_partitions: int, retention: timedelta, max_bytes: int | None
) -> EventStream:
    # A real file (not ":memory:"): the WAL, locking and reopening paths are the real ones.
    return SQLiteStream(
        directory / "stream.db",
        num_partitions=num_partitions,
        retention=retention,
        max_bytes=max_bytes,
    )


def _memory(
    directory: Path, num_partitions: int, retention: timedelta, max_bytes: int | None
) -> EventStream:
    return MemoryStream(num_partitions=num_partitions, retention=retention, max_bytes=max_bytes)


BACKENDS: dict[str, _Builder] = {
    "sqlite": _sqlite,
    "memory": _memory,
}


@pytest.fixture(params=sorted(BACKENDS))
def stream_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StreamFactory]:
    """A factory of fresh streams of one backend (the test runs once per backend).

    Every call builds a new, independent stream (for SQLite a new file under
    ``tmp_path``); all of them are closed when the test ends.
    """
    build = BACKENDS[request.param]
    counter = itertools.count()
    made: list[EventStream] = []

    def factory(
        *,
        num_partitions: int = 4,
        retention: timedelta = timedelta(days=7),
        max_bytes: int | None = None,
    ) -> EventStream:
        directory = tmp_path / f"stream-{next(counter)}"
        directory.mkdir()
        stream = build(directory, num_partitions, retention, max_bytes)
        made.append(stream)
        return stream

    yield factory
    for stream in made:
        stream.close()


@pytest.fixture
def stream(stream_factory: StreamFactory) -> EventStream:
    """A fresh stream with 4 partitions and 7 days of retention, of each backend."""
    return stream_factory()
