"""Sustained end-to-end benchmark: the highest offered rate `playpulse up --processors N`
keeps up with on this machine.

For each rate of ``--rates`` (rising), a fresh ``python -m playpulse up --processors N``
(collector in the ``up`` process, N processor processes as one consumer group; default
N = 2) is offered that many events/s for ``--seconds`` (default 120) by the asyncio +
httpx sender of bench/process.py (simulated events with fresh ids and ``occurred_at`` =
now, each request carrying one marker ``play_start`` of a content id used nowhere else).
Meanwhile, every second, a thread reads the consumer lag (the stream's end offsets minus
the processors' offsets in ``store.db``, summed over partitions; both files read-only),
and the freshness poller of bench/process.py notes when each marker becomes visible in
the store (freshness = visible - POST acknowledged).

A rate is **sustained** when: the sender achieved at least 95 % of it with no errors;
the lag stayed bounded — over the second half of the run its largest value is at most
2 s of events at that rate and it did not grow (the mean of the last quarter at most
the mean of the third quarter plus 1 s of events); every marker became visible; and
freshness p99 is under 2 s. The result is the highest sustained rate (the ramp stops at
the first rate that is not).

    python bench/sustained.py                              # 5k..30k events/s, 2 min each
    python bench/sustained.py --rates 5000,10000 --seconds 20

bench/process.py runs this as its last part (``--sustained-rates``). Every wait has a
deadline and each service is always stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sqlite3
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from process import (  # bench/ is on sys.path as the script dir
    STARTUP_TIMEOUT_S,
    Freshness,
    Poller,
    _machine_busy_s,
    _offer,
    _percentile,
    _tree_cpu_s,
    build_workload,
    filler_events,
    running_service,
)

#: A rate is sustained only if freshness p99 stays under this.
FRESHNESS_P99_TARGET_S = 2.0
#: ... and the lag over the second half stays under this many seconds of events.
LAG_BOUND_S = 2.0


@dataclass
class Sustained:
    """One rate's run: what was offered and achieved, lag samples, freshness."""

    rate: float
    seconds: float
    processors: int
    fresh: Freshness
    lag: list[tuple[float, int]] = field(default_factory=list)  # (s since start, records)
    service_cpu_pct: float = math.nan
    sender_cpu_pct: float = math.nan
    other_cpu_pct: float = math.nan

    def _lags(self, lo: float, hi: float) -> list[int]:
        return [n for t, n in self.lag if lo * self.seconds <= t <= hi * self.seconds]

    @property
    def max_lag_second_half(self) -> int:
        return max(self._lags(0.5, 1.0), default=0)

    @property
    def lag_growing(self) -> bool:
        third, last = self._lags(0.5, 0.75), self._lags(0.75, 1.0)
        if not third or not last:
            return False
        return sum(last) / len(last) > sum(third) / len(third) + self.rate

    @property
    def p99_s(self) -> float:
        return _percentile(self.fresh.latencies_s, 0.99)

    def problems(self) -> list[str]:
        """Why this rate is not sustained ([] when it is)."""
        out = []
        if self.fresh.achieved_rate < 0.95 * self.rate:
            out.append(f"the sender achieved {self.fresh.achieved_rate:,.0f} events/s")
        if self.fresh.errors:
            out.append(f"errors {dict(self.fresh.errors)}")
        if self.max_lag_second_half > LAG_BOUND_S * self.rate:
            out.append(f"lag up to {self.max_lag_second_half:,} records")
        if self.lag_growing:
            out.append("lag growing")
        if self.fresh.never_visible:
            out.append(f"{self.fresh.never_visible} markers never visible")
        if not self.p99_s < FRESHNESS_P99_TARGET_S:
            out.append(f"freshness p99 {self.p99_s:.2f} s")
        return out


def _lag_now(stream_db: Path, store_db: Path) -> int | None:
    try:
        s = sqlite3.connect(f"file:{stream_db}?mode=ro", uri=True, timeout=2)
        t = sqlite3.connect(f"file:{store_db}?mode=ro", uri=True, timeout=2)
        try:
            end = s.execute("SELECT coalesce(sum(end_offset), 0) FROM partitions").fetchone()[0]
            done = t.execute(
                "SELECT coalesce(sum(next_offset), 0) FROM offsets WHERE consumer = 'processor'"
            ).fetchone()[0]
        finally:
            s.close()
            t.close()
    except sqlite3.Error:
        return None
    return int(end) - int(done)


def measure_sustained(
    tmp: Path,
    records: list[tuple[str, bytes]],
    *,
    rate: float,
    seconds: float,
    processors: int = 2,
    request_events: int = 100,
    concurrency: int = 64,
    poll_ms: float = 20.0,
    drain_s: float = 30.0,
) -> Sustained:
    """Offer ``rate`` events/s for ``seconds`` to a fresh ``up --processors N`` in
    ``tmp``; sample the lag every second and the markers' freshness."""
    run_id = uuid.uuid4().hex[:8]
    n_requests = max(1, round(seconds * rate / request_events))
    fillers = filler_events(records, n_requests * (request_events - 1), run_id)
    fresh = Freshness(rate, seconds, request_events)
    result = Sustained(rate, seconds, processors, fresh)
    args = ("--processors", str(processors))
    with running_service(tmp, 1, args) as service:
        store_path = service.data_dir / "store.db"
        stream_path = service.data_dir / "stream.db"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (store_path.exists() and stream_path.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{store_path} did not appear\n{service.tail()}")
            time.sleep(0.05)
        poller = Poller(store_path, poll_ms / 1000)
        poller.start()
        stop = threading.Event()
        t0 = time.perf_counter()

        def sample_lag() -> None:
            while not stop.wait(1.0):
                lag = _lag_now(stream_path, store_path)
                if lag is not None:
                    result.lag.append((time.perf_counter() - t0, lag))

        sampler = threading.Thread(target=sample_lag, daemon=True)
        sampler.start()
        ps = psutil.Process(service.proc.pid)
        me = psutil.Process()
        cpu0, me0, busy0 = _tree_cpu_s(ps), me.cpu_times(), _machine_busy_s()
        try:
            asyncio.run(_offer(service.url, fillers, fresh, poller, run_id, concurrency))
            wall = time.perf_counter() - t0
            service_cpu = _tree_cpu_s(ps) - cpu0
            me1 = me.cpu_times()
            mine = (me1.user - me0.user) + (me1.system - me0.system)
            result.service_cpu_pct = 100 * service_cpu / wall
            result.sender_cpu_pct = 100 * mine / wall
            other = _machine_busy_s() - busy0 - service_cpu - mine
            result.other_cpu_pct = max(0.0, 100 * other / wall)
            stop.set()
            drain_deadline = time.perf_counter() + drain_s
            while poller.waiting() and time.perf_counter() < drain_deadline:
                service.check_alive()
                time.sleep(0.05)
        finally:
            stop.set()
            sampler.join(5.0)
            poller.stop.set()
            poller.join(5.0)
        service.check_alive()
        with poller.lock:
            fresh.visible = dict(poller.visible)
    return result


def ramp(
    tmp: Path,
    records: list[tuple[str, bytes]],
    rates: list[float],
    seconds: float,
    processors: int = 2,
) -> list[Sustained]:
    """:func:`measure_sustained` at each rate, rising, until one is not sustained."""
    runs = []
    for rate in rates:
        print(f"sustained: {rate:,.0f} events/s for {seconds:.0f} s ...", flush=True)
        run = measure_sustained(
            tmp / f"rate-{int(rate)}", records, rate=rate, seconds=seconds, processors=processors
        )
        runs.append(run)
        print(f"  {sustained_row(run)}", flush=True)
        if run.problems():
            break
    return runs


def sustained_row(run: Sustained) -> str:
    f = run.fresh
    verdict = "sustained" if not run.problems() else "NOT: " + "; ".join(run.problems())
    return (
        f"| {run.rate:,.0f} | {f.achieved_rate:,.0f} | {run.max_lag_second_half:,} | "
        f"{1000 * _percentile(f.latencies_s, 0.5):,.0f} | {1000 * run.p99_s:,.0f} | "
        f"{run.service_cpu_pct:.0f} | {run.sender_cpu_pct:.0f} | {run.other_cpu_pct:.0f} | "
        f"{verdict} |"
    )


def sustained_table(runs: list[Sustained]) -> str:
    """Markdown: one row per rate, and the highest sustained rate."""
    head = (
        "| offered events/s | achieved | max lag, 2nd half (records) | freshness p50 ms | "
        "p99 ms | service CPU % | sender + poller CPU % | other procs % | verdict |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    best = max((r.rate for r in runs if not r.problems()), default=None)
    line = (
        f"Highest sustained rate with `--processors {runs[0].processors}`: "
        + ("none" if best is None else f"**{best:,.0f} events/s**")
        if runs
        else "no run"
    )
    return "\n".join([head, *(sustained_row(r) for r in runs), "", line])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rates", default="5000,10000,15000,20000,25000,30000")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--processors", type=int, default=2)
    parser.add_argument("--events", type=int, default=50_000, help="simulated events to offer")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    records = build_workload(args.events, args.seed).records
    with tempfile.TemporaryDirectory(prefix="pp-sustained-") as tmp:
        runs = ramp(Path(tmp), records, rates, args.seconds, args.processors)
    print(sustained_table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
