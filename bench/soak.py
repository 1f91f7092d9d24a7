"""Soak benchmark: memory, lag and bytes on disk per event under sustained load.

Starts ``python -m playpulse up`` on 127.0.0.1 with a fresh data dir (the shared
harness, :func:`playpulse.testing.playpulse_server`) and offers ``--rate`` events/s for
``--duration-s`` seconds in JSON arrays of ``--request-events``. The events come from
the project's event generator (:func:`playpulse.sources.simulator.simulate`: plays with
heartbeats, pauses, seeks, chapters; shop visits; duplicates, out-of-order and late
deliveries), generated while sending on a thread of their own. The simulated time
(about 3 days, ending now) is compressed into the run: what matters here is that the
processor sees a steady flow of plays that open and close, users and late events.

Every ``--sample-s`` seconds it samples:

- the RSS of every process of the service (the collector, the processor child and any
  other child), with psutil;
- the consumer lag: records in the stream not yet applied to the store (the stream's
  end offsets minus the processor's offsets in ``store.db``, read-only);
- bytes on disk of the stream, store, lake and quarantine (SQLite files with their WAL),
  divided by the events accepted so far.

Targets (issue #10): processor RSS over the second half of the run within +-10 % of
its level at half time (for the 10-minute run: minutes 5-10 against minute 5); the
store at most 300 bytes per event; no 5xx; lag bounded (it does not grow over the
second half and drains at the end).

    python bench/soak.py                              # 10 minutes at 5,000 events/s
    python bench/soak.py --duration-s 120 --rate 2000 # short run
    python bench/soak.py --write-docs                 # also update docs/benchmarks.md

The service is always stopped (SIGTERM, then SIGKILL) and the data dir removed unless
``--keep`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import queue
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil

from benchdocs import command_lines, machine, write_docs  # bench/ is on sys.path as the script dir
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.testing import playpulse_server

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"

TARGET_STORE_BYTES_PER_EVENT = 300.0
TARGET_RSS_BAND = 0.10
REQUEST_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 120.0

#: What the changes made for these targets did, measured once (not rerun by this script).
HISTORY = """Before (2026-12-04, commit af26e4a, a 2-minute run at 5,000 events/s): the store
took 1,230 bytes per event (each closed play's events as raw JSON in per-batch chunks,
1 KB-3 KB play states mostly in half-empty SQLite overflow pages, dedup keys as 53-byte
text twice over with their expiry index) and the processor's RSS moved between 185 and
240 MiB; it reached 340 MiB catching up on a backlog 40,000 records a poll (measured
with the store changes below, before `max_poll_records`). Changes: a
closed play's events folded into its state and compressed (zlib; about 65 bytes per
event), play and session states compressed, state blobs in a rowid table (no overflow
pages up to ~4 KB), dedup keys as 16-byte digests, at most 5,000 records per poll
(`max_poll_records`), the open-play cache capped (`play_cache_size`), play states scanned
500 at a time. About 100 MiB of the processor's RSS is its imports (pyarrow, FastAPI)."""


# --------------------------------------------------------------------------------------
# Events


def request_bodies(
    total: int, per_request: int, seed: int, out: queue.Queue[bytes | None], stop: threading.Event
) -> None:
    """Put JSON-array bodies of ``per_request`` simulated events (``total`` in all) on
    ``out``, then ``None``. The simulated window ends about now, so event times look
    current to the collector."""
    days = 3
    start = datetime.now(UTC) - timedelta(days=days, hours=1)
    config = SimulationConfig(seed=seed, start=start, duration=timedelta(days=days))
    chunk: list[str] = []
    try:
        for sim in simulate(config.with_target_events(total)):
            chunk.append(json.dumps(sim.payload, separators=(",", ":")))
            if len(chunk) == per_request:
                body = ("[" + ",".join(chunk) + "]").encode()
                chunk = []
                while not stop.is_set():
                    with contextlib.suppress(queue.Full):
                        out.put(body, timeout=0.5)
                        break
                if stop.is_set():
                    return
        if chunk:
            out.put(("[" + ",".join(chunk) + "]").encode())
    finally:
        out.put(None)


# --------------------------------------------------------------------------------------
# Sampling


@dataclass
class Sample:
    """One sample, ``at_s`` seconds after sending started."""

    at_s: float
    accepted: int
    rss_mib: dict[str, float]
    lag: int
    bytes_on_disk: dict[str, int]
    cpu_busy_pct: float


def _db_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += (path.parent / (path.name + suffix)).stat().st_size
    return total


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def disk_usage(data_dir: Path) -> dict[str, int]:
    """Bytes on disk of the stream, store, lake and quarantine of ``data_dir``."""
    return {
        "stream": _db_bytes(data_dir / "stream.db"),
        "store": _db_bytes(data_dir / "store.db"),
        "lake": _dir_bytes(data_dir / "lake"),
        "quarantine": _db_bytes(data_dir / "quarantine.db"),
    }


def consumer_lag(data_dir: Path, consumer: str = "processor") -> int:
    """Records appended to the stream that the processor has not applied to the store
    (-1 when a file cannot be read right now)."""
    try:
        stream = sqlite3.connect(f"file:{data_dir / 'stream.db'}?mode=ro", uri=True, timeout=5)
        try:
            ends = dict(stream.execute("SELECT partition, end_offset FROM partitions").fetchall())
        finally:
            stream.close()
        store = sqlite3.connect(f"file:{data_dir / 'store.db'}?mode=ro", uri=True, timeout=5)
        try:
            done = dict(
                store.execute(
                    "SELECT partition, next_offset FROM offsets WHERE consumer = ?", (consumer,)
                ).fetchall()
            )
        finally:
            store.close()
    except sqlite3.Error:
        return -1
    return sum(max(0, end - done.get(p, 0)) for p, end in ends.items())


def process_rss_mib(root: psutil.Process) -> dict[str, float]:
    """RSS (MiB) of the service's processes by role: ``collector`` (the ``up`` process),
    ``processor`` (its multiprocessing child running the processor) and ``other``."""
    out: Counter[str] = Counter()
    with contextlib.suppress(psutil.Error):
        out["collector"] += root.memory_info().rss / 2**20
    for child in root.children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            rss = child.memory_info().rss / 2**20
        except psutil.Error:
            continue
        role = "processor" if "spawn_main" in cmdline else "other"
        out[role] += rss
    return dict(out)


# --------------------------------------------------------------------------------------
# The run


@dataclass
class Soak:
    """Everything one soak run measured."""

    rate: float
    duration_s: float
    request_events: int
    samples: list[Sample] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    late_sends: int = 0
    send_window_s: float = 0.0
    drain_s: float = math.nan
    drained: bool = False
    final_bytes: dict[str, int] = field(default_factory=dict)
    final_rss_mib: dict[str, float] = field(default_factory=dict)
    generator_starved: int = 0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("5"))

    @property
    def achieved_rate(self) -> float:
        return self.accepted / self.send_window_s if self.send_window_s > 0 else math.nan

    def bytes_per_event(self, part: str) -> float:
        return self.final_bytes.get(part, 0) / self.accepted if self.accepted else math.nan

    def half_samples(self) -> tuple[Sample | None, list[Sample]]:
        """The sample at half time (minute 5 of 10) and those after it while sending."""
        sending = [s for s in self.samples if s.at_s <= self.send_window_s + 1e-6]
        if not sending:
            return None, []
        half = self.duration_s / 2
        ref = min(sending, key=lambda s: abs(s.at_s - half))
        return ref, [s for s in sending if s.at_s >= ref.at_s]

    def rss_band(self) -> tuple[float, float, float]:
        """Processor RSS at half time, and the lowest and highest after it (MiB)."""
        ref, later = self.half_samples()
        if ref is None or not later:
            return math.nan, math.nan, math.nan
        values = [s.rss_mib.get("processor", math.nan) for s in later]
        return ref.rss_mib.get("processor", math.nan), min(values), max(values)

    def rss_ok(self) -> bool:
        ref, low, high = self.rss_band()
        return (
            not math.isnan(ref)
            and low >= ref * (1 - TARGET_RSS_BAND)
            and high <= ref * (1 + TARGET_RSS_BAND)
        )

    def lag_band(self) -> tuple[int, int]:
        """Highest lag in the first and in the second half of sending."""
        ref, later = self.half_samples()
        first = [s.lag for s in self.samples if ref is not None and s.at_s < ref.at_s]
        return max(first, default=0), max((s.lag for s in later), default=0)

    def lag_ok(self) -> bool:
        first, second = self.lag_band()
        # Bounded: the second half's peak is not far above the first's (or small in
        # absolute terms: a few polls' worth of events), and it drained at the end.
        return self.drained and (second <= max(2 * first, 5 * self.rate))

    def store_ok(self) -> bool:
        return self.bytes_per_event("store") <= TARGET_STORE_BYTES_PER_EVENT


async def _send(url: str, bodies: queue.Queue[bytes | None], soak: Soak, concurrency: int) -> None:
    interval = soak.request_events / soak.rate
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    slots = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()

    async def post(client: httpx.AsyncClient, body: bytes) -> None:
        try:
            response = await client.post(f"{url}/v1/events", content=body, headers=headers)
            soak.statuses[str(response.status_code)] += 1
            if response.status_code == 200:
                answer = response.json()
                soak.accepted += int(answer.get("accepted", 0))
                soak.rejected += len(answer.get("rejected", []))
        except httpx.HTTPError as exc:
            soak.statuses[type(exc).__name__] += 1
        finally:
            slots.release()

    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S) as client:
        tasks = []
        t0 = time.perf_counter()
        deadline = t0 + soak.duration_s
        i = 0
        while True:
            due = t0 + i * interval
            if due >= deadline:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -interval:
                soak.late_sends += 1
            try:
                body = bodies.get_nowait()
            except queue.Empty:
                soak.generator_starved += 1
                body = await loop.run_in_executor(None, bodies.get)
            if body is None:
                break
            await slots.acquire()
            tasks.append(asyncio.create_task(post(client, body)))
            soak.requests += 1
            i += 1
        await asyncio.gather(*tasks)
        soak.send_window_s = time.perf_counter() - t0


def run_soak(
    tmp: Path, *, rate: float, duration_s: float, request_events: int, sample_s: float, seed: int
) -> Soak:
    """One soak run in ``tmp`` (see the module docstring)."""
    soak = Soak(rate, duration_s, request_events)
    total = math.ceil(rate * duration_s) + request_events
    bodies: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
    stop = threading.Event()
    generator = threading.Thread(
        target=request_bodies,
        args=(total, request_events, seed, bodies, stop),
        name="soak-events",
        daemon=True,
    )
    generator.start()
    data_dir = tmp / "data"
    with playpulse_server("up", data_dir, tmp / "service.log", "--host", "127.0.0.1") as (
        url,
        proc,
    ):
        root = psutil.Process(proc.pid)
        psutil.cpu_percent()  # starts the machine-wide counter
        t0 = time.perf_counter()
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(sample_s):
                soak.samples.append(
                    Sample(
                        at_s=time.perf_counter() - t0,
                        accepted=soak.accepted,
                        rss_mib=process_rss_mib(root),
                        lag=consumer_lag(data_dir),
                        bytes_on_disk=disk_usage(data_dir),
                        cpu_busy_pct=psutil.cpu_percent(),
                    )
                )
                last = soak.samples[-1]
                print(
                    f"  {last.at_s:6.0f} s  accepted {last.accepted:>10,}  lag {last.lag:>8,}  "
                    + "  ".join(f"{k} {v:.0f} MiB" for k, v in sorted(last.rss_mib.items()))
                    + f"  store {last.bytes_on_disk['store'] / max(last.accepted, 1):.0f} B/event"
                    + f"  machine {last.cpu_busy_pct:.0f} %",
                    flush=True,
                )

        sampler = threading.Thread(target=sample, name="soak-sampler", daemon=True)
        sampler.start()
        try:
            asyncio.run(_send(url, bodies, soak, concurrency=8))
            stop.set()
            drain_started = time.perf_counter()
            while time.perf_counter() - drain_started < DRAIN_TIMEOUT_S:
                if proc.poll() is not None:
                    break
                if consumer_lag(data_dir) == 0:
                    soak.drained = True
                    break
                time.sleep(0.5)
            soak.drain_s = time.perf_counter() - drain_started
        finally:
            sampling.set()
            sampler.join(sample_s + 30)
            stop.set()
        soak.final_bytes = disk_usage(data_dir)
        soak.final_rss_mib = process_rss_mib(root)
        if proc.poll() is not None:
            raise RuntimeError(f"playpulse up exited with {proc.returncode} during the soak")
    generator.join(10)
    log = (tmp / "service.log").read_text(errors="replace")
    if "Traceback" in log:
        print("  warning: the service logged a traceback (see service.log)", flush=True)
    return soak


# --------------------------------------------------------------------------------------
# Report


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def samples_table(soak: Soak) -> str:
    """Markdown table of the samples, at most about 20 rows."""
    step = max(1, math.ceil(len(soak.samples) / 20))
    rows = soak.samples[::step]
    if soak.samples and rows[-1] is not soak.samples[-1]:
        rows.append(soak.samples[-1])
    head = "| t s | accepted | lag | collector RSS MiB | processor RSS MiB | "
    head += "stream B/ev | store B/ev | lake B/ev | quarantine B/ev | machine CPU % |"
    lines = [head, "|" + "---|" * 10]
    for s in rows:
        per = {k: v / s.accepted if s.accepted else math.nan for k, v in s.bytes_on_disk.items()}
        lines.append(
            f"| {s.at_s:.0f} | {s.accepted:,} | {s.lag:,} | "
            f"{s.rss_mib.get('collector', math.nan):.0f} | "
            f"{s.rss_mib.get('processor', math.nan):.0f} | {per['stream']:.0f} | "
            f"{per['store']:.0f} | {per['lake']:.0f} | {per['quarantine']:.1f} | "
            f"{s.cpu_busy_pct:.0f} |"
        )
    return "\n".join(lines)


def summary_lines(soak: Soak) -> list[str]:
    """The targets and how the run did against them."""
    ref, low, high = soak.rss_band()
    first, second = soak.lag_band()
    half_min = soak.duration_s / 120
    return [
        f"- Offered {soak.rate:,.0f} events/s for {soak.duration_s:.0f} s in requests of "
        f"{soak.request_events} events; accepted {soak.accepted:,} "
        f"({soak.achieved_rate:,.0f} events/s), rejected {soak.rejected:,}; "
        f"responses {dict(sorted(soak.statuses.items()))}; "
        f"{soak.late_sends} requests sent more than one interval late, "
        f"generator starved {soak.generator_starved} times.",
        f"- Processor RSS at minute {half_min:.1f}: {ref:.0f} MiB; after it {low:.0f}-"
        f"{high:.0f} MiB ({100 * (low / ref - 1):+.1f} % / {100 * (high / ref - 1):+.1f} %); "
        f"target within +-{100 * TARGET_RSS_BAND:.0f} %: {_verdict(soak.rss_ok())}.",
        f"- Store: {soak.bytes_per_event('store'):.0f} bytes per event at the end "
        f"(target at most {TARGET_STORE_BYTES_PER_EVENT:.0f}): {_verdict(soak.store_ok())}. "
        f"Stream {soak.bytes_per_event('stream'):.0f}, lake {soak.bytes_per_event('lake'):.0f}, "
        f"quarantine {soak.bytes_per_event('quarantine'):.1f} bytes per event.",
        f"- 5xx responses: {soak.server_errors}: {_verdict(soak.server_errors == 0)}.",
        f"- Lag: peak {first:,} records in the first half, {second:,} in the second; "
        + (
            f"drained {soak.drain_s:.1f} s after sending stopped"
            if soak.drained
            else f"not drained {soak.drain_s:.0f} s after sending stopped"
        )
        + f": {_verdict(soak.lag_ok())}.",
    ]


def docs_section(soak: Soak, command: str, load_before: tuple[float, float, float]) -> str:
    """The ``soak`` section of docs/benchmarks.md."""
    busy = [s.cpu_busy_pct for s in soak.samples]
    return "\n".join(
        [
            "## Soak (bench/soak.py)",
            "",
            "Memory, consumer lag and bytes on disk per event under sustained load: "
            "`playpulse up` (collector and processor process) on 127.0.0.1 with a fresh data "
            "dir, offered events from `playpulse.sources.simulator` (plays, shop visits, "
            "duplicates, out-of-order and late deliveries; about 3 simulated days compressed "
            "into the run) at a fixed rate in JSON arrays. Every sample records the RSS of "
            "each process (psutil), the consumer lag (stream end offsets minus the "
            "processor's offsets in `store.db`) and the bytes on disk of the stream, the "
            "real-time store, the lake and the quarantine (SQLite files with WAL) divided by "
            "the events accepted so far. Targets (issue #10): processor RSS over the second "
            "half of the run within +-10 % of its level at half time (minute 5 of 10), the "
            "store at most 300 bytes per event, no 5xx, lag bounded.",
            *command_lines(command),
            f"Machine: {machine()}. The benchmark (event generation and sending) shares the "
            "2 cores with the service; other work on the machine is in the `machine CPU %` "
            f"column (load average before the run {load_before[0]:.1f}; machine busy "
            f"{min(busy, default=math.nan):.0f}-{max(busy, default=math.nan):.0f} % during "
            "it), so RSS and lag figures are noisy.",
            f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
            "",
            *summary_lines(soak),
            "",
            samples_table(soak),
            "",
            HISTORY,
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=600.0, help="seconds of sending")
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s offered")
    parser.add_argument("--request-events", type=int, default=500, help="events per request")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS}")
    parser.add_argument("--keep", type=Path, help="keep the data dir and log in this directory")
    args = parser.parse_args(argv)
    if args.duration_s <= 0 or args.rate <= 0 or args.request_events < 1 or args.sample_s <= 0:
        parser.error("--duration-s, --rate, --request-events and --sample-s must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="playpulse-bench-soak-") as tmp_name:
        tmp = Path(tmp_name)
        print(
            f"soak: {args.rate:,.0f} events/s for {args.duration_s:.0f} s through playpulse up",
            flush=True,
        )
        try:
            soak = run_soak(
                tmp,
                rate=args.rate,
                duration_s=args.duration_s,
                request_events=args.request_events,
                sample_s=args.sample_s,
                seed=args.seed,
            )
        finally:
            if args.keep is not None:
                shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
    print()
    print(samples_table(soak))
    print()
    print("\n".join(summary_lines(soak)))
    if args.write_docs:
        command = (
            f"python bench/soak.py --duration-s {args.duration_s:g} --rate {args.rate:g} "
            f"--request-events {args.request_events} --sample-s {args.sample_s:g} "
            f"--seed {args.seed} --write-docs"
        )
        write_docs(DOCS, "soak", docs_section(soak, command, load_before))
        print(f"\nwrote the soak section of {DOCS}")
    ok = soak.rss_ok() and soak.store_ok() and soak.server_errors == 0 and soak.lag_ok()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
