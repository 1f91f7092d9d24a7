"""Sustained end-to-end benchmark: the highest offered rate `playpulse up --processors N`
keeps up with on this machine.

For each rate of ``--rates`` (rising), a fresh ``python -m playpulse up --processors N``
(collector in the ``up`` process, N processor processes as one consumer group; default
N = 2) is offered that many events/s for ``--seconds`` (default 120) by the paced sender
of bench/sender.py (pre-built HTTP/1.1 requests on uvloop, answers parsed by httptools:
one request of ``--request-events`` events, default 500 (:data:`REQUEST_EVENTS`), every
``request-events / rate`` seconds, at most ``--concurrency`` in flight on keep-alive
connections; ``--sender httpx`` uses the asyncio + httpx sender of bench/process.py
instead, about 15x costlier per request).
Each request carries the same events as bench/process.py's freshness part: simulated
events with fresh ids and ``occurred_at`` = now, and one marker ``play_start`` of a
content id used nowhere else. Meanwhile, every second, a thread reads the consumer lag
(the stream's end offsets minus the processors' offsets in ``store.db``, summed over
partitions; both files read-only), and the freshness poller of bench/process.py notes
when each marker becomes visible in the store (freshness = visible - POST acknowledged).

A rate is **sustained** when: the sender achieved at least 95 % of it with no errors (a
request that fails, is answered with a status other than 200 or has events rejected
counts as an error; none is retried); the lag stayed bounded — over the second half of
the run its largest value is at most 2 s of events at that rate and it did not grow
(the mean of the last quarter at most the mean of the third quarter plus 1 s of
events); every marker became visible; and freshness p99 is under 2 s. The result is the
highest sustained rate (the ramp stops at the first rate that is not).

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
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import psutil

# bench/ is on sys.path as the script dir
from process import (
    _NOW,
    STARTUP_TIMEOUT_S,
    Freshness,
    Poller,
    _machine_busy_s,
    _now_text,
    _offer,
    _percentile,
    _tree_cpu_s,
    build_workload,
    filler_events,
    marker_event,
    running_service,
)
from sender import Paced, raw_request, request_head, run, send_paced

#: A rate is sustained only if freshness p99 stays under this.
FRESHNESS_P99_TARGET_S = 2.0
#: ... and the lag over the second half stays under this many seconds of events.
LAG_BOUND_S = 2.0
#: Events per request (at most the collector's 1,000). The collector spends less CPU per
#: event in larger requests, CPU the processors on the same 2 cores then have: at
#: 10,000 events/s, requests of 100 cost it 19 % of a core, of 500 11 % (2026-12-05, 20 s
#: each, machine shared); bench/ingest.py: 10.1 us/event with 100, 6.4 with 500.
REQUEST_EVENTS = 500
#: Senders: ``raw`` is bench/sender.py's paced sender, ``httpx`` bench/process.py's.
SENDERS = ("raw", "httpx")


class MarkedRequests:
    """:class:`sender.PacedRequests` of a sustained run: request ``i`` holds
    ``request_events - 1`` events of ``fillers`` (the next ones, cyclically) and
    :func:`process.marker_event` ``i`` at position ``i % request_events``, with every
    ``occurred_at`` (and ``sent_at``) the send time, as bench/process.py's ``_offer``
    builds them. Outcomes go to ``fresh`` (accepted events, POST latencies, ack time of
    each marker fully accepted, errors by exception class, status or ``partly
    rejected``) and ``poller`` (markers to watch; forgotten when not acknowledged)."""

    def __init__(
        self, port: int, fillers: list[bytes], fresh: Freshness, poller: Poller, run_id: str
    ) -> None:
        if not fillers:
            raise ValueError("no filler events to offer")
        self.head = request_head(port)
        self.fillers = fillers
        self.fresh = fresh
        self.poller = poller
        self.run_id = run_id
        self.markers: dict[int, str] = {}  # request -> its marker's content id

    def request(self, i: int) -> bytes:
        per, fillers = self.fresh.request_events, self.fillers
        now = datetime.now(UTC)
        content_id, marker = marker_event(self.run_id, i)
        start = (i * (per - 1)) % len(fillers)
        chunk = fillers[start : start + per - 1]
        while len(chunk) < per - 1:  # wrap around
            chunk += fillers[: per - 1 - len(chunk)]
        chunk.insert(i % per, marker)
        body = (b"[" + b",".join(chunk) + b"]").replace(_NOW, _now_text(now))
        self.poller.watch(content_id, f"DAY#{now.date().isoformat()}")
        self.markers[i] = content_id
        return raw_request(self.head, body)

    def answered(self, i: int, status: int, accepted: int, sent_s: float, acked_s: float) -> None:
        fresh = self.fresh
        content_id = self.markers.pop(i)
        fresh.post_latency_s.append(acked_s - sent_s)
        fresh.accepted += accepted
        if status == 200 and accepted == fresh.request_events:
            fresh.acked[content_id] = acked_s
            return
        self.poller.forget(content_id)
        fresh.errors[str(status) if status != 200 else "partly rejected"] += 1

    def failed(self, i: int, error: str) -> None:
        content_id = self.markers.pop(i, None)
        if content_id is not None:
            self.poller.forget(content_id)
        self.fresh.errors[error] += 1


def offer_raw(
    url: str,
    fillers: list[bytes],
    fresh: Freshness,
    poller: Poller,
    run_id: str,
    concurrency: int,
) -> Paced:
    """Offer ``fresh.rate`` events/s for ``fresh.seconds`` to the collector at ``url``
    (``http://127.0.0.1:PORT``) with bench/sender.py's paced sender: one request of
    ``fresh.request_events`` events (:class:`MarkedRequests`) every ``request_events /
    rate`` seconds, at most ``concurrency`` in flight. Fills ``fresh`` (requests, send
    window, late sends, outcomes); returns the sender's own account."""
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"no port in the collector's url {url!r}")
    interval = fresh.request_events / fresh.rate
    count = max(1, round(fresh.seconds / interval))
    requests = MarkedRequests(port, fillers, fresh, poller, run_id)
    paced = run(
        send_paced(port, requests, count=count, interval_s=interval, connections=concurrency)
    )
    fresh.requests = paced.sent
    fresh.late_sends = paced.late_sends
    fresh.send_window_s = paced.send_window_s
    return paced


@dataclass
class Sustained:
    """One rate's run: what was offered and achieved, lag samples, freshness."""

    rate: float
    seconds: float
    processors: int
    fresh: Freshness
    sender: str = "raw"
    concurrency: int = 64
    lag: list[tuple[float, int]] = field(default_factory=list)  # (s since start, records)
    service_cpu_pct: float = math.nan
    #: Of the service: the ``up`` process (the collector), the rest is the processors.
    collector_cpu_pct: float = math.nan
    #: The sender alone (the thread that builds, sends and answers the requests).
    sender_cpu_pct: float = math.nan
    #: The rest of this process: the freshness poller and the lag sampler.
    poller_cpu_pct: float = math.nan
    other_cpu_pct: float = math.nan
    #: The raw sender's account (None with ``httpx``).
    paced: Paced | None = None

    @property
    def processors_cpu_pct(self) -> float:
        return self.service_cpu_pct - self.collector_cpu_pct

    @property
    def sender_errors(self) -> int:
        return sum(self.fresh.errors.values())

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


def has_table(db: Path, table: str) -> bool:
    """Whether SQLite file ``db`` exists and has ``table`` (read-only, never creates it)."""
    if not db.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return found is not None


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
    request_events: int = REQUEST_EVENTS,
    concurrency: int = 64,
    poll_ms: float = 20.0,
    drain_s: float = 30.0,
    sender: str = "raw",
) -> Sustained:
    """Offer ``rate`` events/s for ``seconds`` to a fresh ``up --processors N`` in
    ``tmp`` with ``sender`` (one of :data:`SENDERS`), requests of ``request_events``
    events; sample the lag every second and the markers' freshness. Raises ValueError
    for an unknown sender, RuntimeError when the service fails."""
    if sender not in SENDERS:
        raise ValueError(f"unknown sender {sender!r}: one of {', '.join(SENDERS)}")
    run_id = uuid.uuid4().hex[:8]
    n_requests = max(1, round(seconds * rate / request_events))
    fillers = filler_events(records, n_requests * (request_events - 1), run_id)
    fresh = Freshness(rate, seconds, request_events)
    result = Sustained(rate, seconds, processors, fresh, sender, concurrency)
    args = ("--processors", str(processors))
    with running_service(tmp, 1, args) as service:
        store_path = service.data_dir / "store.db"
        stream_path = service.data_dir / "stream.db"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        # The poller stops at its first error: start it once the tables are there.
        while not (has_table(store_path, "items") and has_table(stream_path, "partitions")):
            service.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{store_path} (items) or {stream_path} (partitions) did not appear within"
                    f" {STARTUP_TIMEOUT_S:.0f} s\n{service.tail()}"
                )
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
        up0 = ps.cpu_times()
        thread0 = time.thread_time()
        try:
            if sender == "raw":
                result.paced = offer_raw(service.url, fillers, fresh, poller, run_id, concurrency)
            else:
                asyncio.run(_offer(service.url, fillers, fresh, poller, run_id, concurrency))
            sender_cpu = time.thread_time() - thread0
            wall = time.perf_counter() - t0
            service_cpu = _tree_cpu_s(ps) - cpu0
            up1 = ps.cpu_times()
            collector_cpu = (up1.user - up0.user) + (up1.system - up0.system)
            me1 = me.cpu_times()
            mine = (me1.user - me0.user) + (me1.system - me0.system)
            result.service_cpu_pct = 100 * service_cpu / wall
            result.collector_cpu_pct = 100 * collector_cpu / wall
            result.sender_cpu_pct = 100 * sender_cpu / wall
            result.poller_cpu_pct = max(0.0, 100 * (mine - sender_cpu) / wall)
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
        if poller.error is not None:
            raise RuntimeError(f"the freshness poller failed: {poller.error!r}") from poller.error
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
    *,
    request_events: int = REQUEST_EVENTS,
    concurrency: int = 64,
    sender: str = "raw",
) -> list[Sustained]:
    """:func:`measure_sustained` at each rate, rising, until one is not sustained."""
    runs = []
    for rate in rates:
        print(f"sustained: {rate:,.0f} events/s for {seconds:.0f} s ...", flush=True)
        one = measure_sustained(
            tmp / f"rate-{int(rate)}",
            records,
            rate=rate,
            seconds=seconds,
            processors=processors,
            request_events=request_events,
            concurrency=concurrency,
            sender=sender,
        )
        runs.append(one)
        print(f"  {sustained_row(one)}", flush=True)
        if one.problems():
            break
    return runs


def sustained_row(run: Sustained) -> str:
    f = run.fresh
    verdict = "sustained" if not run.problems() else "NOT: " + "; ".join(run.problems())
    return (
        f"| {run.rate:,.0f} | {f.achieved_rate:,.0f} | {run.max_lag_second_half:,} | "
        f"{1000 * _percentile(f.latencies_s, 0.5):,.0f} | {1000 * run.p99_s:,.0f} | "
        f"{run.collector_cpu_pct:.0f} | {run.processors_cpu_pct:.0f} | "
        f"{run.sender_cpu_pct:.0f} | {run.poller_cpu_pct:.0f} | {run.other_cpu_pct:.0f} | "
        f"{run.sender_errors:,} | {verdict} |"
    )


def sender_text(runs: list[Sustained]) -> str:
    """One sentence: what the runs' sender did (for the docs)."""
    if not runs:
        return ""
    first = runs[0]
    per = first.fresh.request_events
    what = (
        "bench/sender.py's paced sender (pre-built HTTP/1.1 requests on uvloop, answers"
        " parsed by httptools)"
        if first.sender == "raw"
        else "bench/process.py's asyncio + httpx sender"
    )
    return (
        f"Sender: {what}; one request of {per} events ({per - 1} simulated events with fresh"
        f" ids and `occurred_at` = now, plus one marker) every {per} / rate seconds, at"
        f" most {first.concurrency} in flight on keep-alive connections; a request that"
        " fails, gets a status other than 200 or has events rejected counts as a sender"
        " error and is not retried. CPU % are of one core: `collector` is the `up` process"
        " (collector, API, supervisor), `processors` its children; `sender` the sending"
        " thread alone, `poller` the freshness poller and lag sampler threads."
    )


def sustained_table(runs: list[Sustained]) -> str:
    """Markdown: one row per rate, and the highest sustained rate."""
    head = (
        "| offered events/s | achieved | max lag, 2nd half (records) | freshness p50 ms | "
        "p99 ms | collector CPU % | processors CPU % | sender CPU % | poller CPU % | "
        "other procs % | sender errors | verdict |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    best = max((r.rate for r in runs if not r.problems()), default=None)
    line = (
        f"Highest sustained rate with `--processors {runs[0].processors}`: "
        + ("none" if best is None else f"**{best:,.0f} events/s**")
        if runs
        else "no run"
    )
    return "\n".join([head, *(sustained_row(r) for r in runs), "", line, "", sender_text(runs)])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rates", default="5000,10000,15000,20000,25000,30000")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--processors", type=int, default=2)
    parser.add_argument(
        "--request-events", type=int, default=REQUEST_EVENTS, help="events per request"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight, max")
    parser.add_argument("--sender", choices=SENDERS, default="raw")
    parser.add_argument("--events", type=int, default=50_000, help="simulated events to offer")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    records = build_workload(args.events, args.seed).records
    with tempfile.TemporaryDirectory(prefix="pp-sustained-") as tmp:
        runs = ramp(
            Path(tmp),
            records,
            rates,
            args.seconds,
            args.processors,
            request_events=args.request_events,
            concurrency=args.concurrency,
            sender=args.sender,
        )
    print(sustained_table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
