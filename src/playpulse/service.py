"""``playpulse up``: the collector and the processor together, on the data dir.

The processor runs in a process of its own (:class:`ProcessorProcess`), so it does not
share a Python interpreter lock with the HTTP collector, consuming the embedded stream
into the real-time store (``store.db``) and the Parquet lake (``lake/``) while the
collector appends to the stream. The ``up`` process holds the data dir's processor lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from fastapi import FastAPI

from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.errors import ConfigError, PlaypulseError
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor.pipeline import BatchStats, Processor, ProcessorOptions
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


@contextlib.contextmanager
def processor_lock(settings: Settings) -> Iterator[bool]:
    """Try to become the one processor of ``settings.data_dir``; yields whether it did.

    One processor per data dir: ``playpulse up`` holds this lock while it runs, and
    ``playpulse process`` / ``playpulse import`` take it only when no ``up`` is
    running. The lock is an advisory ``flock`` on ``<data dir>/processor.lock``, released
    when the holder exits, however it exits.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.data_dir / "processor.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def close_processor(processor: Processor) -> None:
    """Close the connections of a processor made by :func:`open_processor`."""
    for resource in (processor.stream, processor.store, processor.quarantine):
        resource.close()


def ensure_processed(
    settings: Settings, targets: Mapping[int, int] | None = None, timeout_s: float = 600.0
) -> BatchStats | None:
    """Make sure the stream is processed up to ``targets`` (partition -> end offset;
    default: everything in the stream now).

    Processes it here when no processor runs on the data dir and returns the stats;
    otherwise waits for the running one (``playpulse up``) to commit past the targets
    and returns ``None``. Raises :class:`~playpulse.errors.PlaypulseError` when the
    running processor does not get there within ``timeout_s``.
    """
    with processor_lock(settings) as mine:
        if mine:
            processor = open_processor(settings)
            try:
                return processor.process_available()
            finally:
                close_processor(processor)
    if targets is None:
        stream = open_stream(settings)
        try:
            targets = {p.partition: p.end_offset for p in stream.partitions()}
        finally:
            stream.close()
    store = SQLiteStore(settings.store_path)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            done = store.offsets(ProcessorOptions().consumer)
            if all(done.get(p, 0) >= end for p, end in targets.items() if end > 0):
                return None
            if time.monotonic() > deadline:
                raise PlaypulseError(
                    f"the processor running on {settings.data_dir} did not catch up within "
                    f"{timeout_s:.0f} s; check `playpulse status`"
                )
            time.sleep(0.05)
    finally:
        store.close()


def compact_lake(settings: Settings) -> dict[str, int]:
    """Merge the committed small files of every lake table of ``settings.data_dir``
    (:meth:`LakeWriter.compact`, safe while a processor runs); returns files merged
    per table."""
    store = SQLiteStore(settings.store_path)
    try:
        committed = store.offsets(ProcessorOptions().consumer)
    finally:
        store.close()
    lake = LakeWriter(settings.lake_path, SCHEMAS)
    return {table: lake.compact(table, committed) for table in SCHEMAS}


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
        close_processor(self.processor)


def _processor_main(env: dict[str, str], stop: Any, parent_pid: int) -> None:
    """Entry point of the processor process: run until ``stop`` is set or the parent
    process is gone (then an orphan must not go on processing without the lock)."""
    os.environ.update(env)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    processor = open_processor(settings)
    halt = threading.Event()

    def watch() -> None:
        while not halt.is_set():
            if stop.wait(0.1) or os.getppid() != parent_pid:
                halt.set()

    watcher = threading.Thread(target=watch, name="playpulse-processor-watch", daemon=True)
    watcher.start()
    try:
        processor.run(halt)
    except BaseException:
        log.exception("the processor stopped")
        raise
    finally:
        halt.set()
        close_processor(processor)


class ProcessorProcess:
    """Runs a :class:`Processor` on ``settings``' data dir in a child process until
    :meth:`stop` (or until this process exits). The caller holds the processor lock.

    A child that dies (a crash, the OOM killer) is logged and started again after
    ``restart_delay_s``, doubling up to 30 s while it keeps dying within a minute: the
    store's offsets make a restart lose and double count nothing.
    """

    def __init__(self, settings: Settings, restart_delay_s: float = 1.0) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._env = settings.to_env()
        self._stop = self._ctx.Event()
        self._delay_s = restart_delay_s
        self._process = self._spawn()
        self._watcher = threading.Thread(
            target=self._watch, name="playpulse-processor-supervisor", daemon=True
        )
        self.restarts = 0

    def _spawn(self) -> Any:
        return self._ctx.Process(
            target=_processor_main,
            args=(self._env, self._stop, os.getpid()),
            name="playpulse-processor",
            daemon=True,
        )

    @property
    def pid(self) -> int | None:
        """The running child's process id (None before :meth:`start`)."""
        pid: int | None = self._process.pid
        return pid

    def start(self) -> None:
        """Start the process, and the thread that restarts it when it dies."""
        self._process.start()
        self._watcher.start()

    def _watch(self) -> None:
        delay = self._delay_s
        while not self._stop.is_set():
            started = time.monotonic()
            self._process.join()
            if self._stop.is_set():
                return
            log.error(
                "the processor process exited with code %s; starting it again in %.0f s",
                self._process.exitcode,
                delay,
            )
            if self._stop.wait(delay):
                return
            delay = min(30.0, delay * 2) if time.monotonic() - started < 60 else self._delay_s
            self._process = self._spawn()
            self._process.start()
            self.restarts += 1

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask it to finish its batch and exit; kill it after ``timeout_s``."""
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout_s)
        self._process.join(timeout_s)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)


def create_service_app(settings: Settings) -> FastAPI:
    """The collector app with a processor process started and stopped by its lifespan,
    the read API (``/v1/metrics``, ``/v1/live``, ...) and the dashboard at ``/``."""
    from playpulse.api import mount_read_api
    from playpulse.dashboard import mount_dashboard

    app = create_app(settings)
    app.title = "playpulse"
    mount_dashboard(app, mount_read_api(app, settings))
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        with processor_lock(settings) as mine:
            if not mine:
                raise ConfigError(
                    f"another processor runs on {settings.data_dir} (a `playpulse up` or "
                    "`playpulse process`): one per data dir"
                )
            worker = ProcessorProcess(settings)
            application.state.processor = worker
            async with inner(application):
                worker.start()
                try:
                    yield
                finally:
                    worker.stop()

    app.router.lifespan_context = lifespan
    return app


def create_worker_app_from_env() -> FastAPI:
    """One of several ``playpulse up --workers N`` processes: the collector, the read API
    and the dashboard, with settings from ``PLAYPULSE_*`` (the processor runs once, in
    the supervising process)."""
    from playpulse.api import mount_read_api
    from playpulse.dashboard import mount_dashboard

    app = create_app(Settings())
    app.title = "playpulse"
    mount_dashboard(app, mount_read_api(app, Settings()))
    return app
