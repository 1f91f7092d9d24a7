"""Processing benchmark: events/s from the embedded stream into store and lake, and freshness.

Two measurements, reported side by side in one run:

1. **Throughput.** Simulates ``--events`` realistic events (``playpulse.sources.simulator``),
   validates them as the collector would and appends them to a fresh embedded stream
   (8 partitions) in a temp dir; none of that is timed. Then, on that same stream, it
   times:

   - reading every record (``Consumer.poll``) and nothing else: the floor under any
     processor;
   - the baseline, a deliberately naive processor (:func:`naive_baseline`): per event,
     ``json.loads`` and one SQLite statement (``INSERT ... ON CONFLICT DO UPDATE SET
     n = n + 1`` on a per-content-per-day counter), each statement its own transaction
     (autocommit), in WAL mode with ``synchronous=NORMAL`` like the real store; a variant
     with one transaction per stream batch shows what the commits cost;
   - the real :class:`~playpulse.processor.pipeline.Processor` (SQLite store + Parquet
     lake, default :class:`~playpulse.processor.pipeline.ProcessorOptions`) running
     ``process_available()`` to the end in this process, once per ``--batch-sizes`` value
     (default 100, 1,000 and 5,000; passes under 1,000 stop after
     ``--small-batch-events``), each on a fresh store and lake; the stores of the full
     passes are compared item by item (batch boundaries must not change the numbers);
   - one more pass of the real processor under cProfile over the first
     ``--profile-events`` events: the top functions by own time and the time of each
     stage of a poll (``process_batches``).

   - the floor (bench/floor.py): the steps any processor of this stream, store and
     lake must do, each timed alone, the cheapest way the libraries offer;
   - long plays in small batches (bench/longplays.py): CPU per event for plays of 5 to
     50 minutes at batch_size 25, which should not grow with the play's length.

   Every run reports wall time, events/s, the process CPU time (events per CPU-second is
   steadier than events/s when other work shares the machine) and the CPU other
   processes used meanwhile.

2. **Freshness.** Starts ``python -m playpulse up`` (the processor in a process of its
   own; ``--workers 2`` puts the collector in two processes) on a fresh data
   dir, offers ``--rate`` events/s for ``--freshness-seconds``
   from an asyncio + httpx sender (``--request-events`` events every
   ``request-events / rate`` seconds), each request carrying one marker: a
   ``play_start`` of a content id used nowhere else; the other events are simulated ones
   with fresh ids and ``occurred_at`` = now. A poller thread reads ``store.db``
   (read-only, its own connection) every ``--poll-ms`` and notes when each marker's item
   (``CONTENT#<id>`` / ``DAY#<date>`` ``plays``) appears. Freshness = visible - POST
   acknowledged (200). Reports p50/p99/max, the achieved rate and markers never seen.

    python bench/process.py                        # defaults: 2-3 minutes on 2 cores
    python bench/process.py --events 20000 --freshness-seconds 3 --batch-sizes 500,2000
    python bench/process.py --write-docs           # also update docs/benchmarks.md

Every wait has a deadline and the service is always stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import math
import os
import pstats
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil

from benchdocs import command_lines, machine, write_docs  # bench/ is on sys.path as the script dir
from floor import FloorStep, floor_table, floor_total, measure_floor
from longplays import LongPlayRun, long_plays_table, measure_long_plays
from playpulse.events.codec import validate_event
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor.pipeline import Processor, ProcessorOptions
from playpulse.quarantine.store import QuarantineStore
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.sqlite import SQLiteStream

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"

TARGET_EVENTS_PER_S = 200_000
#: Issue #12's per-core targets: events per CPU-second at batch_size 5,000 and 100.
TARGET_PER_CPU_S = {5_000: 40_000, 100: 15_000}
#: Issue #12's sustained end-to-end target with `up --processors 2` (events/s).
TARGET_SUSTAINED_EVENTS_PER_S = 20_000
TARGET_FRESHNESS_P99_S = 1.0
NUM_PARTITIONS = 8
DEFAULT_BATCH_SIZE = ProcessorOptions().batch_size
#: Passes with a smaller batch_size read only ``--small-batch-events`` events (slow).
SMALL_BATCH = 1_000

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 30.0
SAMPLE_INTERVAL_S = 0.5


def _fmt_int(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (``q`` in [0, 1])."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _tree_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds (user + system) of ``proc`` and its live descendants."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def _tree_rss_mib(proc: psutil.Process) -> float:
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
    return total / 2**20


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores) since boot."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


# --------------------------------------------------------------------------------------
# Workload


@dataclass
class Workload:
    """Validated events as the collector appends them: ``(actor_id, normalized JSON)``."""

    records: list[tuple[str, bytes]]
    types: Counter[str]
    simulated_s: float

    @property
    def event_bytes(self) -> float:
        return sum(len(v) for _, v in self.records) / max(len(self.records), 1)


def build_workload(n: int, seed: int) -> Workload:
    """``n`` simulated events (default realistic mix: duplicates, out of order, late)."""
    started = time.perf_counter()
    records: list[tuple[str, bytes]] = []
    types: Counter[str] = Counter()
    config = SimulationConfig(seed=seed).with_target_events(n)
    for sim in simulate(config):
        accepted = validate_event(json.dumps(sim.payload), sim.received_at)
        records.append((accepted.event.actor_id, accepted.payload))
        types[accepted.event.event_type] += 1
    return Workload(records, types, time.perf_counter() - started)


def fill_stream(path: Path, records: list[tuple[str, bytes]], per_append: int) -> SQLiteStream:
    """A fresh stream at ``path`` holding ``records``, appended ``per_append`` at a time
    (one append = one collector request, so one record batch per partition touched)."""
    stream = SQLiteStream(path, num_partitions=NUM_PARTITIONS)
    for start in range(0, len(records), per_append):
        stream.append(records[start : start + per_append])
    return stream


# --------------------------------------------------------------------------------------
# Throughput


@dataclass
class Run:
    """One timed pass over the stream."""

    name: str
    batch_size: int
    events: int
    wall_s: float
    cpu_s: float
    other_cpu_pct: float
    is_baseline: bool = False
    is_processor: bool = False
    note: str = ""
    lake_files: int = 0

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def events_per_cpu_s(self) -> float:
        return self.events / self.cpu_s if self.cpu_s > 0 else math.nan

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.wall_s if self.wall_s > 0 else math.nan


@contextlib.contextmanager
def _timed(out: dict[str, float]) -> Iterator[None]:
    """Wall time, this process's CPU time and other processes' CPU (% of one core)."""
    me = psutil.Process()
    busy0, cpu0, wall0 = _machine_busy_s(), me.cpu_times(), time.perf_counter()
    try:
        yield
    finally:
        wall = time.perf_counter() - wall0
        cpu1 = me.cpu_times()
        cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        other = max(0.0, _machine_busy_s() - busy0 - cpu)
        out.update(wall_s=wall, cpu_s=cpu, other_cpu_pct=100 * other / wall if wall else 0.0)


def measure_read(stream: SQLiteStream, batch_size: int) -> Run:
    """Read every record with a consumer, as the processor does, and do nothing else."""
    consumer = stream.consumer(f"bench-read-{uuid.uuid4().hex[:8]}")
    n = 0
    t: dict[str, float] = {}
    with _timed(t):
        while batches := consumer.poll(batch_size):
            n += sum(len(b.records) for b in batches)
    return Run("stream read only (no processing)", batch_size, n, **t)


_NAIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS counts (
    item TEXT NOT NULL, day TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (item, day)
) WITHOUT ROWID
"""
_NAIVE_UPSERT = (
    "INSERT INTO counts VALUES (?, ?, 1) ON CONFLICT (item, day) DO UPDATE SET n = n + 1"
)


def naive_baseline(stream: SQLiteStream, db_path: Path, batch_size: int, per_event: bool) -> Run:
    """The naive processor: per event, decode the JSON and run one upsert.

    The counter is per content (playback events with ``content``), per product (commerce
    events), else per event type, per UTC day of ``occurred_at``. ``per_event``: every
    statement is its own transaction (sqlite3 autocommit); otherwise one transaction per
    stream batch. No dedup, no plays or sessions, no lake.
    """
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(_NAIVE_SCHEMA)
    consumer = stream.consumer(f"bench-naive-{uuid.uuid4().hex[:8]}")
    n = 0
    t: dict[str, float] = {}
    try:
        with _timed(t):
            while batches := consumer.poll(batch_size):
                for batch in batches:
                    if not per_event:
                        db.execute("BEGIN")
                    for record in batch.records:
                        event = json.loads(record.value)
                        content = event.get("content") or {}
                        if content.get("content_id"):
                            item = f"CONTENT#{content['content_id']}"
                        elif event.get("product_id"):
                            item = f"PRODUCT#{event['product_id']}"
                        else:
                            item = f"TYPE#{event['event_type']}"
                        db.execute(_NAIVE_UPSERT, (item, event["occurred_at"][:10]))
                        n += 1
                    if not per_event:
                        db.execute("COMMIT")
        total = db.execute("SELECT sum(n) FROM counts").fetchone()[0]
        if total != n:
            raise RuntimeError(f"naive baseline counted {total} of {n} events")
    finally:
        db.close()
    if per_event:
        name, note = "baseline: naive, 1 statement + 1 commit per event", "autocommit"
    else:
        name, note = "naive, 1 statement per event, 1 commit per batch", ""
    return Run(name, batch_size, n, **t, is_baseline=per_event, note=note)


@dataclass
class ProcessorSetup:
    processor: Processor
    store: SQLiteStore
    quarantine: QuarantineStore

    def close(self) -> None:
        self.store.close()
        self.quarantine.close()


def make_processor(stream: SQLiteStream, data_dir: Path, batch_size: int) -> ProcessorSetup:
    store = SQLiteStore(data_dir / "store.db")
    quarantine = QuarantineStore(data_dir / "quarantine.db")
    lake = LakeWriter(data_dir / "lake", SCHEMAS)
    # batch_size per partition, as the rows say: the default max_poll_records (5,000 over
    # all partitions, which bounds memory) would cut every batch to 625.
    options = ProcessorOptions(
        batch_size=batch_size, max_poll_records=batch_size * stream.num_partitions
    )
    return ProcessorSetup(Processor(stream, store, lake, quarantine, options), store, quarantine)


def measure_processor(
    stream: SQLiteStream, data_dir: Path, batch_size: int, max_events: int | None = None
) -> Run:
    """The real processor over the whole stream (or, with ``max_events``, whole polls
    until it has read that many), on a fresh store and lake."""
    setup = make_processor(stream, data_dir, batch_size)
    t: dict[str, float] = {}
    # As `playpulse up`'s processor process does after its start: what is alive (here
    # also this harness's workload) is frozen out of the cyclic GC's full collections.
    gc.collect()
    gc.freeze()
    try:
        with _timed(t):
            if max_events is None:
                stats = setup.processor.process_available()
            else:
                stats = setup.processor.process_available(max_batches=1)
                while stats.read < max_events:
                    more = setup.processor.process_available(max_batches=1)
                    if more.read == 0:
                        break
                    for name, value in vars(more).items():
                        setattr(stats, name, getattr(stats, name) + value)
    finally:
        gc.unfreeze()
        setup.close()
    lake_files = sum(1 for _ in (data_dir / "lake").rglob("*.parquet"))
    note = (
        f"{stats.processed:,} kept, {stats.duplicates:,} duplicates, {stats.late:,} late, "
        f"{stats.plays_finished:,} plays finished, {lake_files:,} lake files"
    )
    default = " (default)" if batch_size == DEFAULT_BATCH_SIZE else ""
    name = f"Processor, batch_size={batch_size:,}{default}"
    return Run(
        name, batch_size, stats.read, **t, is_processor=True, note=note, lake_files=lake_files
    )


def store_items(path: Path) -> dict[tuple[str, str, str], float]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {(pk, sk, a): v for pk, sk, a, v in db.execute("SELECT * FROM items")}
    finally:
        db.close()


def compare_stores(a: Path, b: Path) -> tuple[int, int]:
    """(items in ``a``, items whose values differ between the stores beyond rounding)."""
    left, right = store_items(a), store_items(b)
    differ = 0
    for key in left.keys() | right.keys():
        x, y = left.get(key, 0.0), right.get(key, 0.0)
        if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6):
            differ += 1
    return len(left), differ


# --------------------------------------------------------------------------------------
# Profile


@dataclass
class Profile:
    events: int
    seconds: float
    profiled_s: float
    top: list[tuple[str, int, float, float]]  # function, calls, tottime, cumtime
    stages: list[tuple[str, float]]  # direct callees of process_batch (+ stream poll)
    text: str


def _func_name(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":  # a builtin: "<method 'execute' of ...>"
        return name
    path = Path(filename)
    parts = path.parts
    if "playpulse" in parts:
        short = "/".join(parts[parts.index("playpulse") :])
    elif "site-packages" in parts:
        short = "/".join(parts[parts.index("site-packages") + 1 :])
    else:
        short = path.name
    return f"{short}:{line}({name})"


def profile_processor(
    stream: SQLiteStream, data_dir: Path, batch_size: int, max_events: int, top: int = 10
) -> Profile:
    """Run the real processor under cProfile until it has read ``max_events`` events
    (whole polls: up to ``batch_size`` events per partition each)."""
    setup = make_processor(stream, data_dir, batch_size)
    profiler = cProfile.Profile()
    read = 0
    started = time.perf_counter()
    try:
        profiler.enable()
        while read < max_events:
            stats = setup.processor.process_available(max_batches=1)
            if stats.read == 0:
                break
            read += stats.read
    finally:
        profiler.disable()
        setup.close()
    seconds = time.perf_counter() - started
    st = pstats.Stats(profiler)
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = st.total_tt  # type: ignore[attr-defined]
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    top_rows = [(_func_name(k), v[1], v[2], v[3]) for k, v in rows]

    # Stages: what a poll's process_batches and the step's per-partition pass
    # (playpulse/processor/step.py's _Partition.run) call directly, with the time spent
    # under each call from them (non-overlapping), plus the pass's own lines (the
    # per-event loop) and the poll.
    def is_pass(k: Any) -> bool:
        return bool(k[2] == "run" and k[0].endswith(os.path.join("processor", "step.py")))

    def is_driver(k: Any) -> bool:  # the step's coroutine and what drives it
        if k[2] in ("<method 'send' of 'generator' objects>", "<built-in method builtins.next>"):
            return True
        return bool(
            k[2] in ("run_step", "step") and k[0].endswith(os.path.join("processor", "step.py"))
        )

    parents = {k for k in raw if k[2] == "process_batches" or is_pass(k) or is_driver(k)}
    stages: dict[str, float] = {}
    for key, (_, _, tt, _, callers) in raw.items():
        if is_pass(key):
            stages["step pass itself (the per-event loop)"] = tt
            continue
        if is_driver(key):
            continue
        under = sum(callers[k][3] for k in parents if k in callers)
        if under:
            name = _func_name(key)
            if key[2].startswith("<"):  # <listcomp>, <genexpr>: name what it mostly calls
                inner = [(v[4][key][3], k) for k, v in raw.items() if key in v[4]]
                if inner:
                    name += f" -> {max(inner)[1][2]}"
            stages[name] = stages.get(name, 0.0) + under
        if key[2] == "poll" and key[0].endswith(os.path.join("stream", "base.py")):
            stages["stream read (Consumer.poll)"] = raw[key][3]
    lines = [
        f"cProfile of the real Processor (batch_size={batch_size:,}) over {read:,} events: "
        f"{seconds:.1f} s wall under the profiler ({read / seconds:,.0f} events/s), "
        f"{total:.1f} s profiled",
        "",
        f"Top {top} functions by own time (tottime):",
        f"{'tottime s':>10} {'share':>6} {'cumtime s':>10} {'calls':>9}  function",
    ]
    for name, calls, tt, ct in top_rows:
        lines.append(f"{tt:10.2f} {100 * tt / total:5.1f}% {ct:10.2f} {calls:9,}  {name}")
    lines += ["", "Where a poll's time goes (direct callees, cumulative):"]
    ordered = sorted(stages.items(), key=lambda kv: kv[1], reverse=True)
    for name, ct in ordered[:14]:
        lines.append(f"{ct:10.2f} {100 * ct / total:5.1f}%  {name}")
    return Profile(read, seconds, total, top_rows, ordered, "\n".join(lines))


# --------------------------------------------------------------------------------------
# Freshness: the service under test


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log: Path

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"playpulse up exited with {self.proc.returncode}\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join("  | " + line for line in text)


@contextlib.contextmanager
def running_service(
    tmp: Path, workers: int = 1, extra_args: tuple[str, ...] = ()
) -> Iterator[Service]:
    """``python -m playpulse up`` (plus ``extra_args``) on a fresh data dir; always
    stopped afterwards."""
    port = _free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    data_dir = tmp / "data"
    # Hermetic: settings from the command line only, never from PLAYPULSE_* variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYPULSE_")}
    cmd = [sys.executable, "-m", "playpulse", "up", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--data-dir", str(data_dir), "--workers", str(workers)]
    cmd += extra_args
    log_path = tmp / "service.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    service = Service(proc, f"http://127.0.0.1:{port}", data_dir, log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while True:
                service.check_alive()
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{service.url}/healthz").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"playpulse up did not answer /healthz within {STARTUP_TIMEOUT_S:.0f} s"
                        f"\n{service.tail()}"
                    )
                time.sleep(0.1)
        yield service
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


# --------------------------------------------------------------------------------------
# Freshness: requests, markers and the poller

_NOW = b"@@NOW@@"


def filler_events(records: list[tuple[str, bytes]], count: int, run_id: str) -> list[bytes]:
    """``count`` simulated events as JSON with fresh event ids and ``occurred_at`` (and
    ``sent_at``) left as a placeholder, filled in with the send time. Past the end of
    ``records`` they repeat with play and session ids suffixed, so plays stay apart."""
    if not records:
        raise ValueError("no simulated events to offer")
    out = []
    for i in range(count):
        cycle, index = divmod(i, len(records))
        event = msgspec.json.decode(records[index][1])
        for name in ("received_at", "derived_at"):  # set by the collector
            event.pop(name, None)
        event["event_id"] = f"fresh-{run_id}-{i}"
        event["occurred_at"] = "@@NOW@@"
        if "sent_at" in event:
            event["sent_at"] = "@@NOW@@"
        if cycle:
            for name in ("playback_id", "session_id"):
                if name in event:
                    event[name] = f"{event[name]}~{cycle}"
        out.append(msgspec.json.encode(event))
    return out


def marker_event(run_id: str, i: int) -> tuple[str, bytes]:
    """A play_start of a content id used nowhere else; visible as CONTENT#<id> plays."""
    content_id = f"fresh-{run_id}-{i:07d}"
    event = {
        "event_type": "play_start",
        "event_id": f"marker-{run_id}-{i}",
        "occurred_at": "@@NOW@@",
        "user_id": f"fresh-listener-{run_id}-{i}",
        "playback_id": f"marker-play-{run_id}-{i}",
        "content": {
            "content_id": content_id,
            "content_type": "track",
            "title": "Freshness marker",
            "creator": "bench/process.py",
            "duration_s": 180.0,
        },
        "context": {"device_type": "web", "platform": "web", "timezone": "UTC"},
        "position_s": 0.0,
    }
    return content_id, msgspec.json.encode(event)


def _now_text(moment: datetime) -> bytes:
    return (moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z").encode()


class Poller(threading.Thread):
    """Polls ``store.db`` read-only for pending markers and notes when each appears."""

    def __init__(self, store_path: Path, interval_s: float) -> None:
        super().__init__(name="freshness-poller", daemon=True)
        self.store_path = store_path
        self.interval_s = interval_s
        self.lock = threading.Lock()
        self.pending: dict[str, str] = {}  # content id -> sort key (DAY#<date>)
        self.visible: dict[str, float] = {}  # content id -> perf_counter when seen
        self.polls = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def watch(self, content_id: str, sk: str) -> None:
        with self.lock:
            self.pending[content_id] = sk

    def forget(self, content_id: str) -> None:
        with self.lock:
            self.pending.pop(content_id, None)

    def waiting(self) -> int:
        with self.lock:
            return len(self.pending)

    def run(self) -> None:
        try:
            db = sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True, timeout=5.0)
            try:
                while not self.stop.is_set():
                    started = time.perf_counter()
                    self._poll(db, started)
                    self.polls += 1
                    self.stop.wait(max(0.0, self.interval_s - (time.perf_counter() - started)))
            finally:
                db.close()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _poll(self, db: sqlite3.Connection, at: float) -> None:
        with self.lock:
            wanted = list(self.pending.items())
        by_sk: dict[str, list[str]] = {}
        for content_id, sk in wanted:
            by_sk.setdefault(sk, []).append(f"CONTENT#{content_id}")
        found = []
        # A read transaction sees the store as of its start, so a marker found here was
        # visible by ``at`` (at most one poll interval late).
        for sk, pks in by_sk.items():
            for start in range(0, len(pks), 500):
                chunk = pks[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found += [
                    row[0].removeprefix("CONTENT#")
                    for row in db.execute(
                        f"SELECT pk FROM items WHERE sk = ? AND attr = 'plays' "
                        f"AND value >= 1 AND pk IN ({marks})",
                        (sk, *chunk),
                    )
                ]
        if found:
            with self.lock:
                for content_id in found:
                    self.pending.pop(content_id, None)
                    self.visible.setdefault(content_id, at)


@dataclass
class Freshness:
    rate: float
    seconds: float
    request_events: int
    requests: int = 0
    accepted: int = 0
    send_window_s: float = 0.0
    acked: dict[str, float] = field(default_factory=dict)  # content id -> ack time
    visible: dict[str, float] = field(default_factory=dict)
    post_latency_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    late_sends: int = 0
    service_cpu_pct: float = math.nan
    bench_cpu_pct: float = math.nan
    service_rss_mib: float = math.nan
    other_cpu_pct: float = math.nan
    lake_files: int = 0
    polls: int = 0
    drain_s: float = 0.0

    @property
    def achieved_rate(self) -> float:
        return self.accepted / self.send_window_s if self.send_window_s > 0 else math.nan

    @property
    def latencies_s(self) -> list[float]:
        return sorted(
            max(0.0, self.visible[c] - t) for c, t in self.acked.items() if c in self.visible
        )

    @property
    def visible_before_ack(self) -> int:
        return sum(1 for c, t in self.acked.items() if c in self.visible and self.visible[c] < t)

    @property
    def never_visible(self) -> int:
        return sum(1 for c in self.acked if c not in self.visible)

    def quantile_ms(self, q: float) -> float:
        return 1000 * _percentile(self.latencies_s, q)

    def trend_ms(self) -> tuple[float, float]:
        """p50 of the first and of the last quarter of the markers, in send order: a
        processor that keeps up shows about the same; one falling behind, a growing one."""
        ordered = sorted(
            (t, max(0.0, self.visible[c] - t)) for c, t in self.acked.items() if c in self.visible
        )
        quarter = max(1, len(ordered) // 4)
        first = sorted(v for _, v in ordered[:quarter])
        last = sorted(v for _, v in ordered[-quarter:])
        return 1000 * _percentile(first, 0.5), 1000 * _percentile(last, 0.5)


async def _offer(
    url: str,
    fillers: list[bytes],
    result: Freshness,
    poller: Poller,
    run_id: str,
    concurrency: int,
) -> None:
    per = result.request_events
    interval = per / result.rate
    n_requests = max(1, round(result.seconds / interval))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": "application/json"}
    slots = asyncio.Semaphore(concurrency)

    async def send(client: httpx.AsyncClient, i: int) -> None:
        try:
            now = datetime.now(UTC)
            content_id, marker = marker_event(run_id, i)
            start = (i * (per - 1)) % len(fillers)
            chunk = [fillers[(start + k) % len(fillers)] for k in range(per - 1)]
            chunk.insert(i % per, marker)
            body = (b"[" + b",".join(chunk) + b"]").replace(_NOW, _now_text(now))
            poller.watch(content_id, f"DAY#{now.date().isoformat()}")
            posted = time.perf_counter()
            try:
                response = await client.post(f"{url}/v1/events", content=body, headers=headers)
            except httpx.HTTPError as exc:
                poller.forget(content_id)
                result.errors[type(exc).__name__] += 1
                return
            acked = time.perf_counter()
            result.post_latency_s.append(acked - posted)
            if response.status_code != 200:
                poller.forget(content_id)
                result.errors[str(response.status_code)] += 1
                return
            accepted = int(response.json().get("accepted", 0))
            result.accepted += accepted
            if accepted == per:
                result.acked[content_id] = acked
            else:
                poller.forget(content_id)
                result.errors["partly rejected"] += 1
        finally:
            slots.release()

    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S) as client:
        tasks = []
        t0 = time.perf_counter()
        for i in range(n_requests):
            delay = t0 + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -interval:
                result.late_sends += 1
            await slots.acquire()
            tasks.append(asyncio.create_task(send(client, i)))
            result.requests += 1
        await asyncio.gather(*tasks)
        result.send_window_s = time.perf_counter() - t0


def measure_freshness(
    tmp: Path,
    records: list[tuple[str, bytes]],
    *,
    rate: float,
    seconds: float,
    request_events: int,
    poll_ms: float,
    drain_s: float,
    concurrency: int,
    workers: int = 1,
) -> Freshness:
    run_id = uuid.uuid4().hex[:8]
    n_requests = max(1, round(seconds * rate / request_events))
    fillers = filler_events(records, n_requests * (request_events - 1), run_id)
    result = Freshness(rate, seconds, request_events)
    with running_service(tmp, workers) as service:
        print(f"  playpulse up pid {service.proc.pid} on {service.url}", flush=True)
        ps = psutil.Process(service.proc.pid)
        store_path = service.data_dir / "store.db"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        from sustained import has_table  # sustained imports this module: not at the top

        # The poller stops at its first error: wait for the store's tables, not its file.
        while not has_table(store_path, "items"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{store_path} did not appear\n{service.tail()}")
            time.sleep(0.05)
        poller = Poller(store_path, poll_ms / 1000)
        poller.start()
        rss = 0.0
        stop_sampling = threading.Event()

        def sample() -> None:
            nonlocal rss
            while not stop_sampling.wait(SAMPLE_INTERVAL_S):
                rss = max(rss, _tree_rss_mib(ps))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        me = psutil.Process()
        cpu0 = _tree_cpu_s(ps)
        me0, busy0, wall0 = me.cpu_times(), _machine_busy_s(), time.perf_counter()
        try:
            asyncio.run(_offer(service.url, fillers, result, poller, run_id, concurrency))
            service_cpu = _tree_cpu_s(ps) - cpu0
            wall = time.perf_counter() - wall0
            me1 = me.cpu_times()
            mine = (me1.user - me0.user) + (me1.system - me0.system)
            other = _machine_busy_s() - busy0 - service_cpu - mine
            result.service_cpu_pct = 100 * service_cpu / wall
            result.bench_cpu_pct = 100 * mine / wall
            result.other_cpu_pct = max(0.0, 100 * other / wall)
            drain_started = time.perf_counter()
            drain_deadline = drain_started + drain_s
            while poller.waiting() and time.perf_counter() < drain_deadline:
                service.check_alive()
                if poller.error:
                    raise poller.error
                time.sleep(0.05)
            result.drain_s = time.perf_counter() - drain_started
        finally:
            poller.stop.set()
            poller.join(5.0)
            stop_sampling.set()
            sampler.join(5.0)
        if poller.error:
            raise RuntimeError(f"the poller failed: {poller.error!r}") from poller.error
        service.check_alive()
        with poller.lock:
            result.visible = dict(poller.visible)
        result.polls = poller.polls
        result.service_rss_mib = rss
        result.lake_files = sum(1 for _ in (service.data_dir / "lake").rglob("*.parquet"))
        if "Traceback" in service.log.read_text(errors="replace"):
            print(f"  warning: the service logged a traceback\n{service.tail()}", flush=True)
    return result


# --------------------------------------------------------------------------------------
# Report


def throughput_table(runs: list[Run]) -> str:
    base = next((r.events_per_s for r in runs if r.is_baseline), math.nan)
    head = [
        "run",
        "batch size",
        "events",
        "wall s",
        "events/s",
        "vs baseline",
        "CPU s",
        "CPU % of one core",
        "events per CPU-s",
        "other procs CPU %",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in runs:
        ratio = "-" if r.name.startswith("stream read") else f"{r.events_per_s / base:.2f}x"
        cells = [
            r.name,
            f"{r.batch_size:,}",
            f"{r.events:,}",
            f"{r.wall_s:.1f}",
            _fmt_int(r.events_per_s),
            ratio,
            f"{r.cpu_s:.1f}",
            f"{r.cpu_pct:.0f}",
            _fmt_int(r.events_per_cpu_s),
            f"{r.other_cpu_pct:.0f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def freshness_table(f: Freshness) -> str:
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(f.errors.items())) or "0"
    head = [
        "offered events/s",
        "achieved events/s",
        "requests (events each)",
        "POST p50 / p99 ms",
        "markers acked",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p50 first / last quarter ms",
        "never visible",
        "visible before ack",
        "service CPU %",
        "service RSS max MiB",
        "sender + poller CPU %",
        "other procs CPU %",
        "lake files",
        "non-200 / errors",
    ]
    lat = f.latencies_s
    cells = [
        _fmt_int(f.rate),
        _fmt_int(f.achieved_rate),
        f"{f.requests:,} ({f.request_events})",
        "{:.0f} / {:.0f}".format(
            *(1000 * _percentile(sorted(f.post_latency_s), q) for q in (0.5, 0.99))
        ),
        f"{len(f.acked):,}",
        f"{f.quantile_ms(0.5):.0f}",
        f"{f.quantile_ms(0.99):.0f}",
        f"{1000 * lat[-1]:.0f}" if lat else "-",
        "{:.0f} / {:.0f}".format(*f.trend_ms()),
        f"{f.never_visible:,}",
        f"{f.visible_before_ack:,}",
        f"{f.service_cpu_pct:.0f}",
        f"{f.service_rss_mib:.0f}",
        f"{f.bench_cpu_pct:.0f}",
        f"{f.other_cpu_pct:.0f}",
        f"{f.lake_files:,}",
        errors,
    ]
    return "\n".join(
        [
            "| " + " | ".join(head) + " |",
            "|" + "|".join("---" for _ in head) + "|",
            "| " + " | ".join(cells) + " |",
        ]
    )


def _verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def _target_run(runs: list[Run]) -> Run | None:
    """The pass the target is judged on: the default batch_size, else the largest."""
    procs = sorted((r for r in runs if r.is_processor), key=lambda r: r.batch_size)
    default = [r for r in procs if r.batch_size == DEFAULT_BATCH_SIZE]
    return (default or procs[-1:] or [None])[0]


def observations(runs: list[Run]) -> list[str]:
    """Plain statements computed from the rows (true for whatever run produced them)."""
    out = []
    base = next((r for r in runs if r.is_baseline), None)
    procs = sorted((r for r in runs if r.is_processor), key=lambda r: r.batch_size)
    target = _target_run(runs)
    if base is not None and target is not None:
        out.append(
            f"The real processor (batch_size {target.batch_size:,}) costs"
            f" {base.events_per_cpu_s / target.events_per_cpu_s:.1f}x the CPU per event of"
            " the naive one-statement-per-event baseline (it does much more per event; see"
            " the profile below)."
        )
    if len(procs) >= 2:
        small, large = procs[0], procs[-1]
        out.append(
            f"batch_size {small.batch_size:,} costs"
            f" {large.events_per_cpu_s / small.events_per_cpu_s:.1f}x the CPU per event of"
            f" {large.batch_size:,}; lake files per 10,000 events:"
            + ",".join(
                f" {10_000 * r.lake_files / max(r.events, 1):.0f} at {r.batch_size:,}"
                for r in procs
            )
            + "."
        )
    return out


def freshness_observations(fresh: Freshness, runs: list[Run]) -> list[str]:
    """What the throughput passes say about keeping up with the offered rate."""
    procs = sorted((r for r in runs if r.is_processor), key=lambda r: r.batch_size)
    if not procs:
        return []
    needs = ", ".join(
        f"{100 * fresh.rate / r.events_per_cpu_s:.0f} % at batch_size {r.batch_size:,}"
        for r in procs
    )
    return [
        f"Keeping up with {fresh.rate:,.0f} events/s takes, from the CPU per event of the"
        f" throughput passes, this much of one core for the processor alone: {needs}."
        f" The service (collector + processor) got {fresh.service_cpu_pct:.0f} % while other"
        f" processes used {fresh.other_cpu_pct:.0f} %. A processor that falls behind reads"
        " bigger batches, which are cheaper per event, so it settles at a lag of about the"
        " time to gather batches big enough."
    ]


def docs_section(
    args: argparse.Namespace,
    workload: Workload,
    runs: list[Run],
    consistency: list[str],
    profile: Profile | None,
    fresh: Freshness | None,
    load_before: tuple[float, float, float],
    floor: list[FloorStep],
    long_plays: list[LongPlayRun],
    sustained_runs: list[Any],
) -> str:
    command = shlex.join(["python", "bench/process.py", *sys.argv[1:]])
    total = sum(workload.types.values())
    mix = ", ".join(
        f"{t} {100 * n / total:.1f} %" for t, n in workload.types.most_common() if n / total >= 0.01
    )
    sizes = ", ".join(f"{b:,}" for b in args.batch_sizes)
    parts = [
        "## Processing (bench/process.py)",
        "",
        "How many events per second the processor takes from the embedded stream into the"
        " real-time store (SQLite) and the Parquet lake on one core, next to a naive"
        " baseline in the same run; and how fresh the store is under live load.",
        "",
        f"- Workload: {args.events:,} events from the simulator (`SimulationConfig(seed="
        f"{args.seed}).with_target_events({args.events})`: realistic plays and shop visits"
        " with 2 % duplicates, 5 % out of order, 1 % late), validated like the collector"
        f" does and appended {args.append_events} per append to a fresh SQLite stream of"
        f" {NUM_PARTITIONS} partitions; average event {workload.event_bytes:.0f} bytes;"
        f" mix: {mix} (types under 1 % left out). Building it is not timed.",
        "- Throughput: every pass reads the same stream from its start in this process, on"
        " one thread. `stream read only` reads every record (`Consumer.poll`) and does"
        " nothing else. The **baseline** is a deliberately naive processor written in"
        " bench/process.py: per event `json.loads` and one `INSERT ... ON CONFLICT DO"
        " UPDATE SET n = n + 1` on a per-content (or product, or event type) per-day"
        " counter, each statement its own transaction (autocommit; WAL,"
        " `synchronous=NORMAL` like the store). It does far less than the real processor"
        " (no dedup, plays, sessions, listeners or lake), so it bounds what one SQLite"
        " statement per event costs; the `1 commit per batch` row is the same with one"
        " transaction per stream batch. The real `Processor` runs with default"
        f" `ProcessorOptions` except `batch_size` ({sizes}; records per partition per"
        " poll), each on a fresh store and lake, `process_available()` to the end; passes"
        f" with a batch_size under {SMALL_BATCH:,} are slow and stop after the first"
        f" {args.small_batch_events:,} events (whole polls). Small batches are what"
        " `playpulse up` sees when it keeps up: each poll takes what arrived since the last"
        " one, tens to a few hundred events per partition at 5,000 events/s."
        " `vs baseline` = events/s over the baseline's in this run.",
        "- CPU s is this process's CPU time (user + system) during the pass; `events per"
        " CPU-s` does not move with contention the way events/s does. `other procs` is"
        " the CPU the rest of the machine used meanwhile (of one core; should be near 0).",
        f"- Freshness: `python -m playpulse up --workers {args.workers}` ("
        + (
            "the collector in the `up` process, the processor in a child process"
            if args.workers == 1
            else f"{args.workers} collector processes and the processor in a child"
            " process of the supervising `up` process"
        )
        + ", otherwise default settings) on a fresh data dir; an asyncio + httpx sender offers"
        f" {args.rate:,.0f} events/s for {args.freshness_seconds:g} s as"
        f" {args.request_events} events every {1000 * args.request_events / args.rate:g} ms"
        f" (at most {args.concurrency} requests in flight, so a slow collector lowers the"
        " achieved rate); each request carries one"
        " marker, a `play_start` of a content id used nowhere else, among simulated events"
        " with fresh ids and `occurred_at` = now. A thread polls `store.db` read-only every"
        f" {args.poll_ms:g} ms for the markers' `CONTENT#<id>` / `DAY#<date>` `plays` item."
        " Freshness = first poll that sees it - the POST's 200 (so up to one poll"
        " interval high; a marker seen before its ack counts 0)."
        f" `never visible`: acked markers not seen {args.drain_seconds:g} s after the"
        " last send. `p50 first / last quarter` compares early and late markers: equal"
        " when the processor keeps up, growing when it falls behind. `service CPU %`:"
        " the service's processes together, of one core.",
        *command_lines(command),
        f"Machine: {machine()}; load average before the run"
        f" {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f} (1 / 5 / 15"
        " min). The machine is shared: compare rows within one run, and prefer events per"
        " CPU-s across runs.",
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "### Throughput",
        "",
        throughput_table(runs),
        "",
        *[f"- {line}" for line in consistency],
        *[f"- {line}" for line in observations(runs)],
    ]
    target = _target_run(runs)
    if target is not None:
        short = TARGET_EVENTS_PER_S / target.events_per_s
        per_cpu = TARGET_EVENTS_PER_S / target.events_per_cpu_s
        parts += [
            "",
            f"Target: >= {TARGET_EVENTS_PER_S:,} events/s processed on one core (store +"
            f" lake). Measured {target.events_per_s:,.0f} events/s with batch_size"
            f" {target.batch_size:,} ({target.events_per_cpu_s:,.0f} per CPU-second):"
            f" {_verdict(target.events_per_s >= TARGET_EVENTS_PER_S)}, {short:.0f}x short"
            f" ({per_cpu:.0f}x per CPU-second). The budget at the target is 5 us of CPU per"
            f" event; the processor spends {1e6 / target.events_per_cpu_s:,.0f} us.",
        ]
    for size, wanted in TARGET_PER_CPU_S.items():
        run = next((r for r in runs if r.batch_size == size and r.is_processor), None)
        if run is not None:
            parts += [
                "",
                f"Target (issue #12): >= {wanted:,} events per CPU-second at batch_size"
                f" {size:,}. Measured {run.events_per_cpu_s:,.0f}:"
                f" {_verdict(run.events_per_cpu_s >= wanted)}.",
            ]
    if floor:
        total = floor_total(floor)
        budget_us = 1e6 / TARGET_EVENTS_PER_S
        parts += [
            "",
            "### Floor: the steps every processor of this stack must do",
            "",
            "Each step alone, done the cheapest way the libraries offer, computing no"
            " metric (bench/floor.py; best of 3 passes by CPU time, same stream):",
            "",
            floor_table(floor),
            "",
            f"Reading, parsing, remembering the ids of and writing to Parquet the events"
            f" alone costs {total.us_per_event:.1f} us of CPU per event on this machine:"
            f" {total.events_per_cpu_s:,.0f} events per CPU-second, before any dedup"
            " lookup, play, session or aggregate. "
            + (
                f"That is over the {budget_us:g} us budget of the target, so no processor"
                " built on this stream, store and lake can reach it on one core of this"
                " machine."
                if total.us_per_event > budget_us
                else f"That is within the {budget_us:g} us budget of the target."
            ),
        ]
    if long_plays:
        parts += [
            "",
            "### Long plays in small batches",
            "",
            "While `playpulse up` keeps up, each poll brings one or two events per open"
            " play, so the processor must not cost more per event as a play grows"
            f" (bench/longplays.py: {long_plays[0].plays} listeners, one play each, a"
            " heartbeat every 10 s, batch_size 25; CPU of this process; the shortest"
            " plays are the baseline):",
            "",
            long_plays_table(long_plays),
        ]
    if fresh is not None:
        p99_s = fresh.quantile_ms(0.99) / 1000
        met = (
            p99_s < TARGET_FRESHNESS_P99_S
            and fresh.never_visible == 0
            and fresh.achieved_rate >= 0.95 * fresh.rate
        )
        parts += [
            "",
            "### Freshness",
            "",
            freshness_table(fresh),
            "",
            f"Target: p99 < {TARGET_FRESHNESS_P99_S:g} s at {fresh.rate:,.0f} events/s"
            f" offered, every marker visible. Measured p99 {p99_s:.2f} s at"
            f" {fresh.achieved_rate:,.0f} events/s achieved, {fresh.never_visible:,} never"
            f" visible: {_verdict(met)}.",
            "",
            *[f"- {line}" for line in freshness_observations(fresh, runs)],
        ]
    if sustained_runs:
        from sustained import FRESHNESS_P99_TARGET_S, LAG_BOUND_S, sustained_table

        best = max((r.rate for r in sustained_runs if not r.problems()), default=0.0)
        parts += [
            "",
            f"### Sustained end to end (`playpulse up --processors {args.processors}`)",
            "",
            "bench/sustained.py, called by this run: for each offered rate (rising; the ramp"
            " stops at the first rate not sustained), a fresh `python -m playpulse up"
            f" --processors {args.processors}` (the collector in the `up` process,"
            f" {args.processors} processor processes as one consumer group; this 2-core"
            " machine also runs the sender) gets that many events/s for"
            f" {args.sustained_seconds:g} s from bench/sender.py's paced sender (the Sender"
            " line under the table says how). Every second a thread reads the consumer lag"
            " (stream end offsets minus the processors' offsets in `store.db`). A rate is"
            " sustained when the sender achieved >= 95 % of it with no error, the lag over"
            f" the second half stayed under {LAG_BOUND_S:g} s of events and did not grow"
            " (mean of the last quarter at most the third quarter's plus 1 s of events), every"
            f" marker became visible and freshness p99 < {FRESHNESS_P99_TARGET_S:g} s.",
            "",
            sustained_table(sustained_runs),
            "",
            f"Target (issue #12): >= {TARGET_SUSTAINED_EVENTS_PER_S:,} events/s sustained with"
            f" freshness p99 under 2 s. Measured {best:,.0f}:"
            f" {_verdict(best >= TARGET_SUSTAINED_EVENTS_PER_S)}.",
        ]
    if profile is not None:
        parts += [
            "",
            "### Where the processor's time goes",
            "",
            f"cProfile of one more pass (default batch_size) over the first"
            f" {profile.events:,} events; the profiler slows the run down, most for functions"
            " called very often, so read shares, not seconds. Top 5 functions by own time:",
            "",
            "| function | calls | own s | share | cumulative s |",
            "|---|---|---|---|---|",
        ]
        total = sum(s for _, s in profile.stages) or 1.0
        for name, calls, tt, ct in profile.top[:5]:
            parts.append(
                f"| `{name}` | {calls:,} | {tt:.2f} | {100 * tt / profile.profiled_s:.0f} % |"
                f" {ct:.2f} |"
            )
        parts += [
            "",
            "Stages of a poll (`Processor.process_batches` and the step's per-partition "
            "pass, `step.py` `_Partition.run`: their direct callees, time under each; "
            "`step pass itself` is the per-event loop's own lines):",
            "",
            "| stage | s | share of the stages |",
            "|---|---|---|",
        ]
        for name, ct in profile.stages[:10]:
            parts.append(f"| `{name}` | {ct:.2f} | {100 * ct / total:.0f} % |")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------
# Main


def _sizes(value: str) -> list[int]:
    try:
        sizes = [int(v.replace("_", "")) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be positive integers")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to simulate")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed")
    parser.add_argument(
        "--batch-sizes",
        type=_sizes,
        default=[100, 1_000, DEFAULT_BATCH_SIZE],
        help="comma-separated ProcessorOptions.batch_size values to time",
    )
    parser.add_argument(
        "--small-batch-events",
        type=int,
        default=25_000,
        help=f"passes with batch_size < {SMALL_BATCH:,} stop after this many events",
    )
    parser.add_argument(
        "--append-events", type=int, default=500, help="events per stream append (setup)"
    )
    parser.add_argument(
        "--profile-events",
        type=int,
        default=40_000,
        help="events of the cProfile pass (0: no profile)",
    )
    parser.add_argument("--rate", type=float, default=5_000, help="events/s offered")
    parser.add_argument("--freshness-seconds", type=float, default=20.0)
    parser.add_argument("--request-events", type=int, default=50, help="events per request")
    parser.add_argument("--concurrency", type=int, default=32, help="most requests in flight")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="`playpulse up --workers`: collector processes (the processor has its own)",
    )
    parser.add_argument("--poll-ms", type=float, default=5.0, help="store poll interval")
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=30.0,
        help="after the last send, wait at most this long for markers",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before each part, wait at most this long for other processes to go idle",
    )
    parser.add_argument(
        "--sustained-rates",
        default="5000,10000,15000,20000,25000,30000",
        help="rising events/s offered to `up --processors N` (bench/sustained.py)",
    )
    parser.add_argument("--sustained-seconds", type=float, default=120.0)
    parser.add_argument("--processors", type=int, default=2, help="for the sustained part")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-freshness", action="store_true")
    parser.add_argument("--no-sustained", action="store_true")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS}")
    args = parser.parse_args(argv)
    if min(args.events, args.append_events, args.small_batch_events) < 1:
        parser.error("--events, --append-events and --small-batch-events must be >= 1")
    if args.profile_events < 0:
        parser.error("--profile-events must be >= 0")
    if args.rate <= 0 or args.freshness_seconds <= 0 or args.request_events < 2:
        parser.error("--rate and --freshness-seconds must be > 0, --request-events >= 2")
    if args.concurrency < 1 or args.poll_ms <= 0 or args.drain_seconds < 0:
        parser.error("--concurrency >= 1, --poll-ms > 0 and --drain-seconds >= 0 please")
    if args.write_docs and (args.no_throughput or args.no_freshness or args.no_sustained):
        parser.error("--write-docs needs every part")
    return args


def wait_until_quiet(max_wait_s: float, limit_pct: float = 30.0) -> float:
    """Wait (at most ``max_wait_s``) until other processes use under ``limit_pct`` of one
    core over a second; return what they used in the last second (%)."""
    me = psutil.Process()
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0, cpu0 = _machine_busy_s(), me.cpu_times()
        time.sleep(1.0)
        cpu1 = me.cpu_times()
        mine = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        other = 100 * max(0.0, _machine_busy_s() - busy0 - mine)
        if other < limit_pct or time.monotonic() >= deadline:
            if other >= limit_pct:
                print(f"  (other processes still use {other:.0f} % of a core; going on)")
            return other


def _step(what: str, fn: Callable[[], Any]) -> Any:
    print(f"{what} ...", flush=True)
    return fn()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    started = time.perf_counter()
    workload = build_workload(args.events, args.seed)
    print(
        f"simulated and validated {len(workload.records):,} events "
        f"({workload.event_bytes:.0f} bytes on average, {len(workload.types)} types) in "
        f"{workload.simulated_s:.1f} s",
        flush=True,
    )
    runs: list[Run] = []
    consistency: list[str] = []
    profile: Profile | None = None
    fresh: Freshness | None = None
    floor: list[FloorStep] = []
    long_plays: list[LongPlayRun] = []
    sustained_runs: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="playpulse-bench-process-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.no_throughput:
            stream = fill_stream(tmp / "stream.db", workload.records, args.append_events)
            wait_until_quiet(args.quiet_wait)
            try:

                def report(run: Run) -> None:
                    runs.append(run)
                    print(
                        f"  {run.events:,} events in {run.wall_s:.1f} s: "
                        f"{run.events_per_s:,.0f} events/s, {run.events_per_cpu_s:,.0f} per "
                        f"CPU-s, other procs {run.other_cpu_pct:.0f} %"
                        + (f" ({run.note})" if run.note else ""),
                        flush=True,
                    )

                report(_step("stream read", lambda: measure_read(stream, DEFAULT_BATCH_SIZE)))
                floor = _step(
                    "floor (bench/floor.py)",
                    lambda: measure_floor(tmp / "stream.db", tmp / "floor"),
                )
                print(f"  {floor_total(floor).us_per_event:.2f} us per event", flush=True)
                report(
                    _step(
                        "baseline (naive, commit per event)",
                        lambda: naive_baseline(
                            stream, tmp / "naive-event.db", DEFAULT_BATCH_SIZE, per_event=True
                        ),
                    )
                )
                report(
                    _step(
                        "naive, commit per batch",
                        lambda: naive_baseline(
                            stream, tmp / "naive-batch.db", DEFAULT_BATCH_SIZE, per_event=False
                        ),
                    )
                )
                full = []
                for size in args.batch_sizes:
                    cap = args.small_batch_events if size < SMALL_BATCH else None
                    if cap is None or cap >= len(workload.records):
                        cap = None
                        full.append(size)
                    what = f"Processor batch_size={size:,}"
                    if cap is not None:
                        what += f" (first {cap:,} events)"
                    report(
                        _step(
                            what,
                            lambda size=size, cap=cap: measure_processor(
                                stream, tmp / f"proc-{size}", size, cap
                            ),
                        )
                    )
                reference = full[0] if full else 0
                for size in full[1:]:
                    items, differ = compare_stores(
                        tmp / f"proc-{reference}" / "store.db", tmp / f"proc-{size}" / "store.db"
                    )
                    consistency.append(
                        f"Store after batch_size={size:,} vs {reference:,}: {items:,} items, "
                        f"{differ:,} differ"
                        + (" (batch boundaries do not change the numbers)." if not differ else "")
                    )
                    print(f"  {consistency[-1]}", flush=True)
                long_plays = _step(
                    "long plays, small batches (bench/longplays.py)",
                    lambda: measure_long_plays(tmp / "long-plays"),
                )
                if args.profile_events:
                    profile = _step(
                        f"cProfile pass over {args.profile_events:,} events",
                        lambda: profile_processor(
                            stream, tmp / "profile", DEFAULT_BATCH_SIZE, args.profile_events
                        ),
                    )
            finally:
                stream.close()
        if not args.no_freshness:
            wait_until_quiet(args.quiet_wait)
            print(
                f"freshness: {args.rate:,.0f} events/s for {args.freshness_seconds:g} s ...",
                flush=True,
            )
            fresh = measure_freshness(
                tmp / "fresh",
                workload.records,
                rate=args.rate,
                seconds=args.freshness_seconds,
                request_events=args.request_events,
                poll_ms=args.poll_ms,
                drain_s=args.drain_seconds,
                concurrency=args.concurrency,
                workers=args.workers,
            )
        if not args.no_sustained:
            # Imported here: bench/sustained.py builds on this module's service and sender.
            from sustained import ramp

            wait_until_quiet(args.quiet_wait)
            rates = [float(r) for r in args.sustained_rates.split(",") if r.strip()]
            sustained_runs = ramp(
                tmp / "sustained",
                workload.records,
                rates,
                args.sustained_seconds,
                args.processors,
            )
    if runs:
        print("\n" + throughput_table(runs))
        for line in consistency + observations(runs):
            print(f"- {line}")
    if floor:
        print("\n" + floor_table(floor))
    if long_plays:
        print("\n" + long_plays_table(long_plays))
    if fresh is not None:
        print("\n" + freshness_table(fresh))
        print(f"(poller: {fresh.polls:,} polls; drain after the last send {fresh.drain_s:.1f} s)")
        for line in freshness_observations(fresh, runs):
            print(f"- {line}")
    if sustained_runs:
        from sustained import sustained_table

        print("\n" + sustained_table(sustained_runs))
    if profile is not None:
        print("\n" + profile.text)
    if args.write_docs:
        write_docs(
            DOCS,
            "process",
            docs_section(
                args,
                workload,
                runs,
                consistency,
                profile,
                fresh,
                load_before,
                floor,
                long_plays,
                sustained_runs,
            ),
        )
        print(f"\nupdated the process section of {DOCS}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
