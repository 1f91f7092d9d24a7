"""Fixtures for the stream tests.

``stream_factory`` is parametrized over every stream backend, so each test that uses it
runs once per backend (the contract in ``test_contract.py``). To put a new backend under
the contract, add one entry to ``BACKENDS``: a function that builds a fresh, empty stream
from the test's request (for session fixtures it needs), a directory it may use and the
requested ``num_partitions``, ``retention`` and ``max_bytes``.

Kafka runs against librdkafka's mock cluster (``kafka_cluster``: 3 brokers on 127.0.0.1,
started once per session through ``kafka_mock.py``), a fresh topic per stream.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Protocol

import pytest

from playpulse.stream import EventStream, MemoryStream, SQLiteStream
from playpulse.stream.kafka import KafkaStream
from playpulse.stream.kinesis import KinesisStream


def _load_kafka_mock() -> ModuleType:
    """``kafka_mock.py`` as module ``kafka_mock`` (tests are not a package: pytest's
    importlib mode does not put this directory on ``sys.path``)."""
    if "kafka_mock" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "kafka_mock", Path(__file__).with_name("kafka_mock.py")
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["kafka_mock"] = module
        spec.loader.exec_module(module)
    return sys.modules["kafka_mock"]


kafka_mock = _load_kafka_mock()
MockCluster = kafka_mock.MockCluster


class StreamFactory(Protocol):
    """Builds a fresh, empty stream of one backend; the fixture closes it afterwards."""

    def __call__(
        self,
        *,
        num_partitions: int = 4,
        retention: timedelta = timedelta(days=7),
        max_bytes: int | None = None,
    ) -> EventStream: ...


_Builder = Callable[[pytest.FixtureRequest, Path, int, timedelta, int | None], EventStream]


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[MockCluster]:
    """librdkafka's mock Kafka cluster, 3 brokers on 127.0.0.1, for the whole session.

    Clients reach it at ``kafka_cluster.bootstrap``; it also sets brokers down and up
    and moves partition leaders (see ``kafka_mock.py``).
    """
    cluster = MockCluster(3)
    yield cluster
    cluster.close()


def _kafka(
    request: pytest.FixtureRequest,
    directory: Path,
    num_partitions: int,
    retention: timedelta,
    max_bytes: int | None,
) -> EventStream:
    # Retention and max_bytes are the broker's (KafkaStream.manages_retention is False).
    cluster: MockCluster = request.getfixturevalue("kafka_cluster")
    topic = cluster.new_topic(num_partitions)
    # Groups are cluster-wide: the prefix keeps each test's "g" its own.
    return KafkaStream(cluster.bootstrap, topic, delivery_timeout_s=10.0, group_prefix=f"{topic}.")


def _sqlite(
    request: pytest.FixtureRequest,
    directory: Path,
    num_partitions: int,
    retention: timedelta,
    max_bytes: int | None,
) -> EventStream:
    # A real file (not ":memory:"): the WAL, locking and reopening paths are the real ones.
    return SQLiteStream(
        directory / "stream.db",
        num_partitions=num_partitions,
        retention=retention,
        max_bytes=max_bytes,
    )


def _memory(
    request: pytest.FixtureRequest,
    directory: Path,
    num_partitions: int,
    retention: timedelta,
    max_bytes: int | None,
) -> EventStream:
    return MemoryStream(num_partitions=num_partitions, retention=retention, max_bytes=max_bytes)


#: Contract tests that cannot hold on Kinesis, by test name, with why (the ``_kinesis``
#: builder skips them). None: the contract tests treat positions as opaque (taken from
#: ``append`` and ``read``, compared and handed back, never computed with), so Kinesis'
#: sequence numbers (``Record.offset`` is ``int(SequenceNumber)``: growing within a shard
#: but sparse 56-digit numbers on real Kinesis, 1, 2, 3, ... on moto, with the shard's
#: start, its StartingSequenceNumber, below the first record's) pass them all. Retention
#: and size tests skip Kinesis through ``manages_retention`` instead.
KINESIS_SKIPS: dict[str, str] = {}


def _kinesis(
    request: pytest.FixtureRequest,
    directory: Path,
    num_partitions: int,
    retention: timedelta,
    max_bytes: int | None,
) -> EventStream:
    # moto in server mode (the session's ``moto_server``), a fresh stream of
    # ``num_partitions`` shards per stream built; retention is Kinesis' own.
    reason = KINESIS_SKIPS.get(request.node.originalname)
    if reason is not None:
        pytest.skip(reason)
    server = request.getfixturevalue("aws_env")
    return KinesisStream(server.unique("contract"), create=True, shards=num_partitions)


BACKENDS: dict[str, _Builder] = {
    "sqlite": _sqlite,
    "memory": _memory,
    "kafka": _kafka,
    "kinesis": _kinesis,
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
        stream = build(request, directory, num_partitions, retention, max_bytes)
        made.append(stream)
        return stream

    yield factory
    for stream in made:
        stream.close()


@pytest.fixture
def stream(stream_factory: StreamFactory) -> EventStream:
    """A fresh stream with 4 partitions and 7 days of retention, of each backend."""
    return stream_factory()
