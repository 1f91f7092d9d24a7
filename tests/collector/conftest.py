"""A real collector on 127.0.0.1, served by uvicorn in a thread of the test process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from playpulse.collector.app import create_app
from playpulse.collector.server import uvicorn_options
from playpulse.config import Settings
from playpulse.quarantine.store import QuarantineStore
from playpulse.stream.base import EventStream
from playpulse.stream.sqlite import SQLiteStream


@dataclass
class RunningCollector:
    """A collector served on 127.0.0.1 with the stream and quarantine behind it."""

    url: str
    stream: EventStream
    quarantine: QuarantineStore
    settings: Settings

    def post(self, body: bytes | str, **kwargs: Any) -> httpx.Response:
        """POST ``body`` to /v1/events."""
        return httpx.post(f"{self.url}/v1/events", content=body, timeout=30, **kwargs)

    def stored_event_ids(self) -> list[str]:
        """event_id of every record in the stream, partition by partition."""
        import json

        ids = []
        for info in self.stream.partitions():
            for record in self.stream.read(info.partition, info.start_offset, 1_000_000):
                ids.append(json.loads(record.value)["event_id"])
        return ids


@contextlib.contextmanager
def serve(
    settings: Settings, stream: EventStream, quarantine: QuarantineStore, **options: Any
) -> Iterator[RunningCollector]:
    """Serve a collector app until the block ends; stops within 10 s.

    uvicorn runs with the collector's :func:`uvicorn_options`, updated by ``options``.
    """
    app = create_app(settings, stream=stream, quarantine=quarantine)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_options(settings) | {"log_level": "warning", "lifespan": "on"} | options
    server = uvicorn.Server(uvicorn.Config(app, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("collector did not start within 10 s")
        time.sleep(0.01)
    try:
        yield RunningCollector(f"http://127.0.0.1:{port}", stream, quarantine, settings)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


CollectorFactory = Callable[..., contextlib.AbstractContextManager[RunningCollector]]


@pytest.fixture
def make_collector(tmp_path: Path) -> Iterator[CollectorFactory]:
    """Start collectors with settings overrides and, optionally, a wrapped stream."""
    opened: list[Any] = []

    @contextlib.contextmanager
    def factory(
        wrap: Callable[[EventStream], EventStream] | None = None,
        server_options: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> Iterator[RunningCollector]:
        settings = Settings(data_dir=tmp_path, **overrides)
        stream: EventStream = SQLiteStream(settings.stream_path, num_partitions=4)
        quarantine = QuarantineStore(settings.quarantine_path)
        opened.extend([stream, quarantine])
        if wrap is not None:
            stream = wrap(stream)
        with serve(settings, stream, quarantine, **(server_options or {})) as running:
            yield running

    yield factory
    for resource in opened:
        resource.close()


@pytest.fixture
def collector(make_collector: CollectorFactory) -> Iterator[RunningCollector]:
    """A collector with default settings and no write keys."""
    with make_collector() as running:
        yield running


@pytest.fixture(scope="module")
def shared_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    """One collector for a whole test module (for property tests with many examples)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("collector"))
    stream = SQLiteStream(settings.stream_path, num_partitions=4)
    quarantine = QuarantineStore(settings.quarantine_path)
    with serve(settings, stream, quarantine) as running:
        yield running
    stream.close()
    quarantine.close()
