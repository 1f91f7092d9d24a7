"""``playpulse up``: the collector and the processor in one process, on the data dir.

The processor runs on a background thread with its own connections, consuming the
embedded stream into the real-time store (``store.db``) and the Parquet lake
(``lake/``) while the collector appends to the stream.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator

from fastapi import FastAPI

from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor.pipeline import Processor, ProcessorOptions
from playpulse.quarantine.store import QuarantineStore
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.factory import open_stream

log = logging.getLogger("playpulse.service")


def open_processor(settings: Settings, options: ProcessorOptions | None = None) -> Processor:
    """A processor on the embedded stream, store and lake of ``settings.data_dir``.

    The caller closes ``processor.stream``, ``processor.store`` and
    ``processor.quarantine`` when done.
    """
    return Processor(
        open_stream(settings),
        SQLiteStore(settings.store_path),
        LakeWriter(settings.lake_path, SCHEMAS),
        QuarantineStore(settings.quarantine_path),
        options,
    )


class ProcessorThread:
    """Runs a :class:`Processor` on a daemon thread until :meth:`stop`."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="playpulse-processor", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.processor.run(self._stop)
        except BaseException as exc:  # reported by stop() and in the log
            self.error = exc
            log.exception("the processor stopped")

    def start(self) -> None:
        """Start consuming."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the thread to finish its batch and stop; close the connections."""
        self._stop.set()
        self._thread.join(timeout_s)
        for resource in (self.processor.stream, self.processor.store, self.processor.quarantine):
            resource.close()


def create_service_app(settings: Settings) -> FastAPI:
    """The collector app with a processor thread started and stopped by its lifespan."""
    app = create_app(settings)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        worker = ProcessorThread(open_processor(settings))
        application.state.processor = worker
        async with inner(application):
            worker.start()
            try:
                yield
            finally:
                worker.stop()

    app.router.lifespan_context = lifespan
    return app
