"""``playpulse up``: the collector and the processor together, on the data dir.

The processor runs in a process of its own (:class:`ProcessorProcess`), so it does not
share a Python interpreter lock with the HTTP collector, consuming the embedded stream
into the real-time store (``store.db``) and the Parquet lake (``lake/``) while the
collector appends to the stream. The ``up`` process holds the data dir's processor lock.

The child stops when ``up`` stops it or dies (its pipe's EOF), is started again with
backoff when it dies, and reports its state in ``processor-status.json``
(:func:`read_processor_status`), which ``/readyz`` (:func:`add_service_checks`), ``playpulse
status`` and the dashboard read.

With ``--processors N`` (:class:`ProcessorGroup`), N such children run as members
``processor-0`` ... of one consumer group that shares the stream's partitions; member
*i* > 0 reports in ``processor-<i>-status.json``. Backfills (imports, ``playpulse
reprocess``) rewrite the whole store: member 0 applies them holding the group lock
(``processor-group.lock``) exclusively, the others hold it shared around each batch, so
none writes meanwhile, and start again from the store afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from playpulse.collector.app import Degraded, add_readiness_check, create_app
from playpulse.config import Settings
from playpulse.errors import ConfigError, LakeError, PlaypulseError
from playpulse.events.model import EventBase
from playpulse.lake.factory import is_s3, open_lake
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import CORRUPT_DIR, corrupt_files
from playpulse.processor.backfill import (
    ReprocessResult,
    reprocess,
    reprocess_needed,
    request_reprocess,
    stage_backfill,
)
from playpulse.processor.pipeline import BatchStats, Processor, ProcessorOptions
from playpulse.quarantine.store import open_quarantine
from playpulse.store.factory import open_store
from playpulse.stream.factory import open_stream

log = logging.getLogger("playpulse.service")


def open_processor(settings: Settings, options: ProcessorOptions | None = None) -> Processor:
    """A processor on the embedded stream, store and lake of ``settings.data_dir``.

    The caller closes ``processor.stream``, ``processor.store`` and
    ``processor.quarantine`` when done.
    """
    return Processor(
        open_stream(settings),
        open_store(settings),
        open_lake(settings),
        open_quarantine(settings),
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
                apply_backfills(settings, processor)
                return processor.process_available()
            finally:
                close_processor(processor)
    if targets is None:
        stream = open_stream(settings)
        try:
            targets = {p.partition: p.end_offset for p in stream.partitions()}
        finally:
            stream.close()
    store = open_store(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            done = store.offsets(ProcessorOptions().consumer)
            if all(done.get(p, 0) >= end for p, end in targets.items() if end > 0):
                return None
            if time.monotonic() > deadline:
                problem = processor_problem(settings)
                raise PlaypulseError(
                    f"the processor running on {settings.data_dir} did not catch up within "
                    f"{timeout_s:.0f} s ({problem or 'it is running'}); check `playpulse status`"
                )
            time.sleep(0.05)
    finally:
        store.close()


def apply_backfills(settings: Settings, processor: Processor) -> bool:
    """If erasures are requested (:func:`playpulse.privacy.erase.apply_pending_erasures`),
    backfills are pending or a reprocess was interrupted, run them (erasures first) and
    :func:`~playpulse.processor.backfill.reprocess`, and start ``processor`` again from
    the recomputed store; returns whether it did. Call it holding the processor lock,
    from the processor's thread, between batches."""
    if not reprocess_needed(settings):
        return False
    from playpulse.privacy.erase import apply_pending_erasures

    # Erasures (`playpulse privacy delete`) recompute the store themselves.
    if apply_pending_erasures(settings, processor) and not reprocess_needed(settings):
        return True
    result = reprocess(settings, processor.options)
    processor.reset()
    log.info(
        "reprocessed: %d backfilled events added to the lake, %d plays and %d sessions",
        result.backfilled,
        result.plays,
        result.sessions,
    )
    return True


def apply_import(
    settings: Settings,
    events: Sequence[tuple[EventBase, str, bytes]],
    *,
    timeout_s: float = 600.0,
) -> ReprocessResult | None:
    """Backfill an import's ``events`` — (validated event, stream key, stored JSON
    payload) — into ``settings.data_dir``: when no processor runs on it, run
    :func:`~playpulse.processor.backfill.reprocess` with them here and return its
    result; otherwise stage them (:func:`~playpulse.processor.backfill.stage_backfill`),
    wait until the running one (``playpulse up``) has applied them and return ``None``.
    Then compact the lake (month files).

    Raises :class:`~playpulse.errors.PlaypulseError` when the running processor does not
    apply them within ``timeout_s`` (they stay pending: they are applied later).
    """
    with processor_lock(settings) as mine:
        if mine:
            if events or reprocess_needed(settings):
                done = reprocess(settings, incoming=events)
            else:
                done = ReprocessResult()
            compact_lake(settings)
            return done
    staged = stage_backfill(settings, events)
    deadline = time.monotonic() + timeout_s
    while staged is not None and staged.exists():
        if time.monotonic() > deadline:
            problem = processor_problem(settings)
            raise PlaypulseError(
                f"the processor running on {settings.data_dir} did not apply the import "
                f"within {timeout_s:.0f} s ({problem or 'it is running'}); it stays pending "
                "and is applied when the processor gets to it; check `playpulse status`"
            )
        time.sleep(0.05)
    compact_lake(settings)
    return None


def reprocess_data_dir(
    settings: Settings, since: date | None, until: date | None, *, timeout_s: float = 3600.0
) -> ReprocessResult | None:
    """``playpulse reprocess``: run :func:`~playpulse.processor.backfill.reprocess` of
    the UTC days ``since`` to ``until`` (inclusive, ``None`` unbounded) here when no
    processor runs on the data dir, then compact the lake, and return its result;
    otherwise ask the running one (:func:`~playpulse.processor.backfill.
    request_reprocess`), wait until it is done and return ``None``. Raises
    :class:`~playpulse.errors.PlaypulseError` when that takes over ``timeout_s``."""
    with processor_lock(settings) as mine:
        if mine:
            done = reprocess(settings, since=since, until=until)
            compact_lake(settings)
            return done
    request_reprocess(settings, since, until)
    deadline = time.monotonic() + timeout_s
    while reprocess_needed(settings):
        if time.monotonic() > deadline:
            raise PlaypulseError(
                f"the processor running on {settings.data_dir} did not reprocess within "
                f"{timeout_s:.0f} s; it stays requested; check `playpulse status`"
            )
        time.sleep(0.05)
    return None


def compact_lake(settings: Settings) -> dict[str, int]:
    """Merge the committed small files of every lake table of ``settings.data_dir``
    (:meth:`LakeWriter.compact`, safe while a processor runs); returns files merged
    per table."""
    store = open_store(settings)
    try:
        committed = store.offsets(ProcessorOptions().consumer)
    finally:
        store.close()
    lake = open_lake(settings)
    return {table: lake.compact(table, committed) for table in SCHEMAS}


class ProcessorThread:
    """Runs a :class:`Processor` on a daemon thread until :meth:`stop`; with the
    ``settings`` of its data dir, it also applies pending backfills between batches
    (:func:`apply_backfills`)."""

    def __init__(self, processor: Processor, settings: Settings | None = None) -> None:
        self.processor = processor
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="playpulse-processor", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            settings = self.settings
            idle = None if settings is None else lambda: apply_backfills(settings, self.processor)
            self.processor.run(self._stop, between_polls=idle)
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


#: The processor's state file in the data dir (see :func:`read_processor_status`).
STATUS_FILE = "processor-status.json"

#: How often the processor child rewrites its status while it runs (at most).
_STATUS_INTERVAL_S = 1.0


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:500]


def processor_status_path(settings: Settings, member: int = 0) -> Path:
    """``<data dir>/processor-status.json``: where the processor (member 0 of a group)
    reports its state; ``processor-<member>-status.json`` for the other members."""
    name = STATUS_FILE if member == 0 else f"processor-{member}-status.json"
    return settings.data_dir / name


def status_members(settings: Settings) -> list[int]:
    """The processor members that have a status file in the data dir, ascending (``[0]``
    when none has)."""
    found = {0}
    for path in settings.data_dir.glob("processor-*-status.json"):
        middle = path.name.removeprefix("processor-").removesuffix("-status.json")
        if middle.isdigit():
            found.add(int(middle))
    return sorted(found)


def write_processor_status(
    settings: Settings,
    status: Mapping[str, Any],
    *,
    log_failure: bool = True,
    member: int = 0,
) -> bool:
    """Replace the processor's status file by ``status`` (JSON), atomically: readers see
    the old document or the new one, never a part. Returns whether it was written (a
    missing or read-only data dir is logged when ``log_failure``, never raised: the
    status is advisory)."""
    path = processor_status_path(settings, member)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(dict(status), sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        if log_failure:
            log.warning("cannot write the processor status %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True


def read_processor_status(settings: Settings, member: int = 0) -> dict[str, Any] | None:
    """The processor's (group ``member``'s) last reported state on ``settings.data_dir``,
    or ``None`` when no processor has reported there (or the file is unreadable).

    Keys (times are ISO 8601 in UTC, or null):

    - ``state``: ``starting``, ``running``, ``failed`` (the child's last words before it
      exited on an error), ``restarting`` (the child died; ``next_start_at`` says when
      the supervisor starts it again) or ``stopped`` (``up`` stopped it).
    - ``pid``: the processor process; ``started_at``: when it started.
    - ``progress_at``: the last poll that committed a batch or found the stream caught up
      (a processor stuck in a batch or hung stops moving it).
    - ``offsets``: committed offset per partition (keys are partition numbers as text).
    - ``processed``: events read since ``started_at``.
    - ``restarts``: times ``up`` started the processor again since it started.
    - ``last_error``: ``{"message": one line, "at": time}`` of the last failure, kept
      across restarts; ``exit_code``: the last dead child's exit code (``-9``: SIGKILL).
    - ``updated_at``: when this document was written.
    """
    try:
        data = json.loads(processor_status_path(settings, member).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class _StatusReporter:
    """What a processor child writes to the status file: its state, each poll's
    progress (at most every second) and its last error."""

    def __init__(self, settings: Settings, restarts: int, member: int = 0) -> None:
        self.settings = settings
        self.member = member
        previous = read_processor_status(settings, member) or {}
        self.status: dict[str, Any] = {
            "state": "starting",
            "pid": os.getpid(),
            "started_at": _iso(_now()),
            "progress_at": None,
            "offsets": previous.get("offsets", {}),
            "processed": 0,
            "restarts": restarts,
            "last_error": previous.get("last_error"),
            "exit_code": None,
            "next_start_at": None,
        }
        self._written = 0.0
        self._failing = False
        self.write()

    def write(self) -> None:
        self.status["updated_at"] = _iso(_now())
        # One warning per run of failed writes, not one a second.
        ok = write_processor_status(
            self.settings, self.status, log_failure=not self._failing, member=self.member
        )
        self._failing = not ok
        self._written = time.monotonic()

    def progress(self, processor: Processor, read: int) -> None:
        self.status["processed"] += read
        self.status["progress_at"] = _iso(_now())
        if self.status["state"] != "running" or time.monotonic() - self._written >= (
            _STATUS_INTERVAL_S
        ):
            self.status["state"] = "running"
            offsets = processor.store.offsets(processor.options.consumer)
            self.status["offsets"] = {str(p): o for p, o in sorted(offsets.items())}
            # Freshness and store-write histograms, for /metrics (monitoring.metrics).
            self.status["metrics"] = processor.metrics.as_json()
            self.write()

    def reprocessing(self) -> None:
        """Say that live processing waits for a reprocess (an import's backfill, or
        ``playpulse reprocess``): not a stall (see :func:`processor_problem`)."""
        self.status["state"] = "reprocessing"
        self.status["reprocessing_since"] = _iso(_now())
        self.write()

    def finish(self, error: BaseException | None) -> None:
        if error is None:
            self.status["state"] = "stopped"
        else:
            self.status["state"] = "failed"
            self.status["last_error"] = {"message": _one_line(error), "at": _iso(_now())}
        self.write()


def _watch_parent(parent_fd: int, halt: threading.Event) -> None:
    # The parent holds the only write end: EOF (it closed it in stop(), or it died,
    # however) or any byte means stop. Nothing to poll, nothing that can hang.
    with contextlib.suppress(OSError):
        os.read(parent_fd, 1)
    halt.set()


#: How ``up`` starts the processor process (``python -c`` this, pipe fd, restarts).
_CHILD_CODE = "from playpulse.service import processor_spawn_main; processor_spawn_main()"


def processor_spawn_main() -> None:
    """Entry point of the processor process that :class:`ProcessorProcess` starts as
    ``python -c`` :data:`_CHILD_CODE` ``<pipe fd> <restarts>`` with the settings in
    ``PLAYPULSE_*`` (tools find it by ``processor_spawn_main`` in its command line):
    run until the parent closes the pipe or dies, or SIGTERM or SIGINT; report to the
    status file. Exits 1 on an error (the supervisor starts it again)."""
    parent_fd, restarts = int(sys.argv[1]), int(sys.argv[2])
    member = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    # Not the terminal's foreground group: logging to it must not stop this process
    # (SIGTTOU, under `stty tostop`).
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    halt = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda _sig, _frame: halt.set())
    threading.Thread(
        target=_watch_parent, args=(parent_fd, halt), name="playpulse-parent-watch", daemon=True
    ).start()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    reporter = _StatusReporter(settings, restarts, member)
    grouped = settings.processors > 1
    try:
        options = ProcessorOptions(member=f"processor-{member}") if grouped else None
        processor = open_processor(settings, options)
        group = _GroupLock(settings) if grouped else None
        try:
            processor.start()
            # What is alive now (modules, settings, the processor) lives as long as the
            # process: the cyclic GC's full collections need not walk it again.
            gc.collect()
            gc.freeze()
            interval_s = processor.options.poll_interval.total_seconds()
            last_backfill_check = time.monotonic()
            while not halt.is_set():
                started = time.monotonic()
                if group is None:
                    stats = processor.process_available(max_batches=1)
                else:
                    with group.batch(reporter.reprocessing):
                        if group.rewritten():
                            processor.reset()
                        stats = processor.process_available(max_batches=1)
                reporter.progress(processor, stats.read)
                # Pending backfills: when caught up, and at least every second under
                # steady traffic (which may never leave a poll empty). In a group,
                # member 0 applies them.
                if member == 0 and (stats.read == 0 or started - last_backfill_check >= 1.0):
                    if reprocess_needed(settings):
                        reporter.reprocessing()
                        if group is None:
                            apply_backfills(settings, processor)
                        else:
                            with group.exclusive():
                                apply_backfills(settings, processor)
                        reporter.progress(processor, 0)
                    last_backfill_check = time.monotonic()
                rest = 0.05 if stats.read == 0 else interval_s - (time.monotonic() - started)
                if rest > 0:
                    halt.wait(rest)
        finally:
            processor.close()
            if group is not None:
                group.close()
            close_processor(processor)
    except Exception as exc:
        log.exception("the processor failed")
        reporter.finish(exc)
        raise SystemExit(1) from None
    reporter.finish(None)


class _GroupLock:
    """How the members of a processor group keep out of a backfill's way: each holds
    ``<data dir>/processor-group.lock`` shared (``flock``) around a batch, member 0 holds
    it exclusively while it rewrites the store, then bumps the generation in the file so
    the others start again from the store (:meth:`rewritten`)."""

    def __init__(self, settings: Settings) -> None:
        self._path = settings.data_dir / "processor-group.lock"
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        self._generation = self._read()

    def _read(self) -> bytes:
        return os.pread(self._fd, 64, 0)

    @contextlib.contextmanager
    def batch(self, waiting: Callable[[], None]) -> Iterator[None]:
        """Hold the lock shared; call ``waiting`` first when a backfill holds it."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(self._fd, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def rewritten(self) -> bool:
        """Whether a backfill rewrote the store since this member last asked."""
        generation = self._read()
        changed = generation != self._generation
        self._generation = generation
        return changed

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock exclusively (no member is in a batch), then bump the generation."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            generation = str(time.time_ns()).encode()
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, generation, 0)
            self._generation = generation
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the file."""
        os.close(self._fd)


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class ProcessorProcess:
    """Runs a :class:`Processor` on ``settings``' data dir in a child process until
    :meth:`stop`. The caller holds the processor lock.

    The child holds the read end of a pipe whose only write end is here: when this
    process closes it (:meth:`stop`) or dies in any way (even SIGKILL), the child sees
    EOF, finishes its batch and exits, so it never processes without the lock. The child
    leads a process group of its own: a Ctrl-C or a SIGTERM to the group of ``up``
    reaches ``up``, which stops it (however early: even while it imports). A child
    that dies (a crash, the OOM killer) is reported in the log and the status file and
    started again after ``settings.processor_restart_delay_s``, doubling up to 30 s while
    it keeps dying within a minute of its start: the store's offsets make a restart lose
    and double count nothing. Nothing here waits on the child without a timeout.
    """

    def __init__(
        self, settings: Settings, restart_delay_s: float | None = None, member: int = 0
    ) -> None:
        self._settings = settings
        self.member = member
        self._env = settings.to_env()
        self._delay_s = (
            settings.processor_restart_delay_s if restart_delay_s is None else restart_delay_s
        )
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._writer: int | None = None
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher = threading.Thread(
            target=self._watch, name="playpulse-processor-supervisor", daemon=True
        )

    def _launch(self, restarts: int = 0) -> None:
        # A fresh pipe per child: its read end goes to the child alone (pass_fds), the
        # write end stays here alone (not inheritable), so EOF means "stop" or "the
        # parent died". Its own process group: group signals are for `up` to handle.
        reader, writer = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, str(reader), str(restarts), str(self.member)],
                env={**os.environ, **self._env},
                pass_fds=(reader,),
                process_group=0,
            )
        except BaseException:
            os.close(writer)
            raise
        finally:
            os.close(reader)
        if self._writer is not None:  # the pipe of a child that died
            os.close(self._writer)
        self._process = process
        self._writer = writer

    @property
    def pid(self) -> int | None:
        """The running child's process id (None before :meth:`start`)."""
        return None if self._process is None else self._process.pid

    def alive(self) -> bool:
        """Whether the child process runs now."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process, and the thread that restarts it when it dies."""
        with self._lock:
            self._launch()
        self._watcher.start()

    def _watch(self) -> None:
        delay = self._delay_s
        while True:
            started = time.monotonic()
            process = self._process
            assert process is not None  # started by start()
            while process.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(0.5)
                if self._stopping.is_set():
                    return
            # A child that exits 0 was told to stop: by SIGTERM to the whole process group
            # (systemd, Kubernetes), which reaches this process too, a moment later.
            code = process.returncode
            if self._stopping.wait(1.0 if code == 0 else 0.0):
                return
            what = _exit_description(code)
            log.error(
                "the processor process exited with code %s; starting it again in %.1f s",
                code,
                delay,
            )
            self._report_death(process, what, delay)
            if self._stopping.wait(delay):
                return
            delay = min(30.0, delay * 2) if time.monotonic() - started < 60 else self._delay_s
            while True:
                with self._lock:
                    if self._stopping.is_set():
                        return
                    try:
                        self._launch(self.restarts + 1)
                    except OSError as exc:  # no memory or processes left to fork
                        log.error("cannot start the processor process: %s", exc)
                    else:
                        self.restarts += 1
                        break
                if self._stopping.wait(delay):
                    return
                delay = min(30.0, delay * 2)

    def _report_death(self, process: subprocess.Popen[bytes], what: str, delay_s: float) -> None:
        status = read_processor_status(self._settings, self.member) or {}
        if status.get("pid") != process.pid or status.get("state") != "failed":
            # Killed or crashed without its last words: say how it ended.
            status["last_error"] = {
                "message": f"the processor process {process.pid} {what}",
                "at": _iso(_now()),
            }
        status.update(
            state="restarting",
            pid=process.pid,
            exit_code=process.returncode,
            restarts=self.restarts,
            next_start_at=_iso(_now() + timedelta(seconds=delay_s)),
            updated_at=_iso(_now()),
        )
        write_processor_status(self._settings, status, member=self.member)

    def stop(self, timeout_s: float = 3.0) -> None:
        """Ask the child to finish its batch and exit (pipe closed, SIGTERM); SIGKILL it
        after ``timeout_s``. Returns within about ``timeout_s + 2`` s whatever state the
        child is in (running, hung, already dead)."""
        with self._lock:
            self._stopping.set()
            process = self._process
            if self._writer is not None:
                os.close(self._writer)
                self._writer = None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.error("the processor did not stop within %.0f s: killing it", timeout_s)
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(2.0)
        if self._watcher.is_alive():
            self._watcher.join(1.0)
        status = read_processor_status(self._settings, self.member)
        if status is not None and status.get("pid") == process.pid:
            status.update(state="stopped", next_start_at=None, updated_at=_iso(_now()))
            write_processor_status(self._settings, status, member=self.member)


class ProcessorGroup:
    """``settings.processors`` :class:`ProcessorProcess` children, members
    ``processor-0`` ... of one consumer group (one child, not a group, when it is 1).
    Same interface as one :class:`ProcessorProcess`. The caller holds the processor
    lock."""

    def __init__(self, settings: Settings, restart_delay_s: float | None = None) -> None:
        self.members = [
            ProcessorProcess(settings, restart_delay_s, member=i)
            for i in range(settings.processors)
        ]
        self._settings = settings

    @property
    def pid(self) -> int | None:
        """Member 0's process id (None before :meth:`start`)."""
        return self.members[0].pid

    @property
    def restarts(self) -> int:
        """Restarts of every member, summed."""
        return sum(m.restarts for m in self.members)

    def alive(self) -> bool:
        """Whether every member's process runs now."""
        return all(m.alive() for m in self.members)

    def start(self) -> None:
        """Forget the status files of members beyond this group's size (an earlier run
        with more processors), then start every member."""
        for member in status_members(self._settings):
            if member >= len(self.members):
                processor_status_path(self._settings, member).unlink(missing_ok=True)
        for m in self.members:
            m.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop every member (see :meth:`ProcessorProcess.stop`), all at once."""
        threads = [
            threading.Thread(target=m.stop, args=(timeout_s,), daemon=True) for m in self.members
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout_s + 5)


def check_data_dir(settings: Settings) -> None:
    """Make sure ``settings.data_dir`` is a folder this process can write, creating it
    (and its parents) when missing; run before a server starts, so a bad data dir is one
    line, not a traceback. Raises :class:`~playpulse.errors.ConfigError` naming the path
    and the reason (not a folder, cannot be created, not writable)."""
    path = settings.data_dir
    if path.exists() and not path.is_dir():
        raise ConfigError(f"the data dir {path} is not a folder (use another --data-dir)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data dir {path}: {exc.strerror or exc} (use another --data-dir)"
        ) from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"the data dir {path} is not writable: {exc.strerror or exc}") from None


def lock_taken_error(settings: Settings) -> ConfigError:
    """The error for a data dir whose processor lock another process holds."""
    return ConfigError(
        f"another processor runs on {settings.data_dir} (a `playpulse up` or "
        "`playpulse process`): one per data dir; stop it or use another --data-dir"
    )


def _lag(settings: Settings) -> int | None:
    # Events in the stream the processors have not committed, as the stream backend
    # counts them (None when the stream won't say).
    try:
        stream = open_stream(settings)
        try:
            return sum(stream.lag(ProcessorOptions().consumer).values())
        finally:
            stream.close()
    except Exception:  # a readiness probe must answer; the stream has a check of its own
        return None


@dataclass(frozen=True)
class _ProcessorReport:
    """The fields of :func:`read_processor_status` that readiness and ``playpulse status``
    judge, read defensively (another process wrote them; any may be missing or odd)."""

    status: dict[str, Any]
    state: object
    pid: object
    restarts: int
    progress_at: datetime | None
    #: ``"; last error at <at>: <message>"``, or ``""`` when there is no last error.
    last_error: str


def _processor_report(settings: Settings, member: int = 0) -> _ProcessorReport | None:
    """The processor's (group ``member``'s) status file of ``settings.data_dir``, or None
    when no processor has reported there."""
    status = read_processor_status(settings, member)
    if status is None:
        return None
    error = status.get("last_error")
    return _ProcessorReport(
        status=status,
        state=status.get("state"),
        pid=status.get("pid"),
        restarts=status_count(status.get("restarts")),
        progress_at=_parse_time(status.get("progress_at")),
        last_error=(
            f"; last error at {error.get('at')}: {error.get('message')}"
            if isinstance(error, dict)
            else ""
        ),
    )


def processor_problem(settings: Settings, now: datetime | None = None) -> str | None:
    """Readiness of the processor of ``settings.data_dir`` from its status file: None
    when it runs and made progress within ``settings.processor_stall_s`` seconds, or is
    reprocessing (applying an import: busy, not stuck), else
    one line saying what is wrong (not started, failing or restarting with its last
    error, gone, stuck while events wait). With a group of processors
    (:class:`ProcessorGroup`), the first member's problem, named."""
    members = status_members(settings)
    for member in members:
        report = _processor_report(settings, member)
        problem = (
            "the processor has not reported yet"
            if report is None
            else _problem(settings, report, now or _now())
        )
        if problem is not None:
            return problem if len(members) == 1 else f"processor-{member}: {problem}"
    return None


def _problem(settings: Settings, report: _ProcessorReport, now: datetime) -> str | None:
    # processor_problem of a status file already read.
    if report.state == "reprocessing":  # an import or `playpulse reprocess`: busy, not stuck
        if pid_alive(report.pid):
            return None
        return f"the processor process {report.pid} is gone{report.last_error}"
    if report.state != "running":
        again = f" after {report.restarts} restart(s)" if report.restarts else ""
        return f"the processor is {report.state}{again}{report.last_error}"
    if not pid_alive(report.pid):
        return f"the processor process {report.pid} is gone{report.last_error}"
    if report.progress_at is None:
        return "the processor has not polled yet"
    idle_s = (now - report.progress_at).total_seconds()
    if idle_s > settings.processor_stall_s:
        lag = _lag(settings)
        waiting = "" if lag is None else f" while {lag} event(s) wait"
        return f"the processor made no progress for {idle_s:.0f} s{waiting}"
    return None


def status_count(value: object) -> int:
    """A count read from a processor status file, which another process wrote: the
    value when it is an integer, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def pid_alive(pid: object) -> bool:
    """Whether ``pid`` (read from a status file: any JSON value) names a live process."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processor_status_line(settings: Settings, now: datetime | None = None) -> str:
    """The processor of ``settings.data_dir`` in one line, for ``playpulse status``:
    its state, process, progress and restarts, and its last error (with its time) when
    it has one; a failing processor starts with ``FAILING``, one that runs but makes no
    progress with ``STUCK``. A group of processors: one such line per member, named,
    joined by `` | ``."""
    members = status_members(settings)
    if len(members) == 1:
        return _member_status_line(settings, 0, now or _now())
    return " | ".join(
        f"processor-{m}: {_member_status_line(settings, m, now or _now())}" for m in members
    )


def _member_status_line(settings: Settings, member: int, now: datetime) -> str:
    report = _processor_report(settings, member)
    if report is None:
        return "never run here by `playpulse up`"
    status, state, pid, last_error = report.status, report.state, report.pid, report.last_error
    if state == "stopped":
        return f"stopped at {status.get('updated_at')} (no `playpulse up` runs){last_error}"
    if state in ("failed", "restarting"):
        again = status.get("next_start_at")
        when = f", next start at {again}" if again else ""
        return f"FAILING: {state} after {report.restarts} restart(s){when}{last_error}"
    if not pid_alive(pid):
        return f"not running: its process {pid} is gone (was `playpulse up` killed?){last_error}"
    if state == "reprocessing":
        since = status.get("reprocessing_since")
        return (
            f"reprocessing since {since} (an import or `playpulse reprocess`; live events "
            f"wait), pid {pid}, {report.restarts} restart(s){last_error}"
        )
    progress_at = report.progress_at
    ago = "none yet" if progress_at is None else f"{(now - progress_at).total_seconds():.1f} s ago"
    line = (
        f"{state}, pid {pid}, {status_count(status.get('processed')):,} events since "
        f"{status.get('started_at')}, last progress {ago}, {report.restarts} restart(s)"
        f"{last_error}"
    )
    if state == "running" and (problem := _problem(settings, report, now)) is not None:
        line = f"STUCK: {problem}; {line}"
    return line


def store_problem(settings: Settings) -> str | None:
    """Readiness of the real-time store: None when ``store.db`` opens and answers a
    trivial query (or does not exist yet), else the problem in one line. A store that is
    not a SQLite file (DynamoDB) reports its problems when it is used."""
    if not settings.store_is_file:
        return None
    path = settings.store_path
    if not settings.data_dir.is_dir():
        return f"the data dir {settings.data_dir} is missing or not a folder"
    if not path.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=1.0)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"the store {path} cannot be read: {exc}"
    return None


def lake_problem(settings: Settings) -> str | None:
    """Readiness of the lake: None when its folder can be listed (or does not exist
    yet), else the problem in one line; :class:`~playpulse.collector.app.Degraded`
    when files that could not be read were moved aside (:func:`playpulse.lake.
    corrupt_files`): processing and queries go on without their rows."""
    location = settings.lake_location
    if not settings.data_dir.is_dir():
        return f"the data dir {settings.data_dir} is missing or not a folder"
    try:
        if is_s3(settings):
            lake = open_lake(settings)
            if not lake.exists():
                return f"the lake's bucket ({location}) does not exist"
            aside = corrupt_files(lake)
        else:
            path = settings.lake_path
            if not path.exists():
                return None
            with os.scandir(path) as entries:
                next(entries, None)
            aside = corrupt_files(path)
    except OSError as exc:
        return f"the lake {location} cannot be read: {exc.strerror or exc}"
    except LakeError as exc:
        return f"the lake {location} cannot be read: {exc}"
    if aside:
        newest = aside[-1]
        return Degraded(
            f"{len(aside)} lake file(s) could not be read and were moved to "
            f"{location}/{CORRUPT_DIR} (their rows are missing from queries); newest: "
            f"{newest.original}: {newest.reason}"
        )
    return None


def add_service_checks(app: FastAPI, settings: Settings) -> None:
    """Register the ``processor``, ``store`` and ``lake`` checks of ``GET /readyz`` on
    ``app`` (see :func:`processor_problem`, :func:`store_problem`,
    :func:`lake_problem`)."""
    checks: dict[str, Callable[[], str | None]] = {
        "processor": lambda: processor_problem(settings),
        "store": lambda: store_problem(settings),
        "lake": lambda: lake_problem(settings),
    }
    for name, check in checks.items():
        add_readiness_check(app, name, check)


def mount_extras(app: FastAPI, settings: Settings) -> None:
    """What ``playpulse up`` serves besides the collector, the read API and the
    dashboard: the browser SDK at ``/sdk/playpulse.js``, the GraphQL API at ``/graphql``
    (the marketplace front ends' mutation and vendor analytics) and the content catalog
    at ``/v1/content/{content_id}`` (enrichment)."""
    from playpulse.api.enrich import create_enrich_router
    from playpulse.graphql import mount_graphql
    from playpulse.sdk_js import mount_sdk

    mount_sdk(app)
    mount_graphql(app, settings)
    app.include_router(create_enrich_router(settings))


def create_service_app(settings: Settings, *, lock_held: bool = False) -> FastAPI:
    """The collector app with a processor process started and stopped by its lifespan,
    the read API (``/v1/metrics``, ``/v1/live``, ...), the dashboard at ``/`` and the
    processor, store and lake checks of ``/readyz``.

    The lifespan takes the data dir's processor lock unless ``lock_held`` (the caller
    holds it, as ``playpulse up`` does to report a taken lock before the server starts);
    it raises :class:`~playpulse.errors.ConfigError` when another process holds it."""
    from playpulse.alerts import firing_alerts, start_alerting
    from playpulse.api import mount_read_api
    from playpulse.dashboard import mount_dashboard

    app = create_app(settings)
    app.title = "playpulse"
    mount_dashboard(app, mount_read_api(app, settings))
    mount_extras(app, settings)
    add_service_checks(app, settings)
    app.state.firing_alerts = lambda: firing_alerts(settings)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        with contextlib.ExitStack() as stack:
            if not lock_held and not stack.enter_context(processor_lock(settings)):
                raise lock_taken_error(settings)
            worker = ProcessorGroup(settings)
            application.state.processor = worker
            async with inner(application):
                worker.start()
                # Alert rules evaluated on a thread, notifying the webhooks (#15).
                alerts = start_alerting(settings, application)
                try:
                    yield
                finally:
                    alerts.stop()
                    worker.stop()

    app.router.lifespan_context = lifespan
    return app


def create_worker_app_from_env() -> FastAPI:
    """One of several ``playpulse up --workers N`` processes: the collector, the read API
    and the dashboard, with settings from ``PLAYPULSE_*`` (the processor runs once, in
    the supervising process), and the processor, store and lake checks of ``/readyz``."""
    from playpulse.api import mount_read_api
    from playpulse.dashboard import mount_dashboard

    settings = Settings()
    app = create_app(settings)
    app.title = "playpulse"
    mount_dashboard(app, mount_read_api(app, settings))
    mount_extras(app, settings)
    add_service_checks(app, settings)
    return app
