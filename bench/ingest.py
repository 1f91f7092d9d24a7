"""Ingest benchmark: how many events per second the HTTP collector takes on this machine.

Starts a real collector (``python -m playpulse collect``) on 127.0.0.1 with a fresh data
dir, then measures three scenarios, each for ``--duration`` seconds after a short warm-up,
with ``--senders`` concurrent keep-alive connections:

1. baseline: one event per request (a JSON object body);
2. batches of 100 events (a JSON array body);
3. batches of 500 events.

For each scenario it reports accepted events/s (summed from the ``accepted`` counts of the
responses, cross-checked against the collector's ``playpulse_events_accepted_total``),
requests/s, p50/p99 request latency, the collector's peak RSS, the CPU used by the
collector and by the senders, and every non-200 response by status.

    python bench/ingest.py                    # 20 s per scenario
    python bench/ingest.py --duration 3       # smoke run
    python bench/ingest.py --write-docs       # also update docs/benchmarks.md
    python bench/ingest.py --compare-senders  # CPU cost of each sender implementation
    python bench/ingest.py --profile          # extra batch-500 pass under py-spy

Every wait has a deadline and the collector is always stopped (SIGTERM, then SIGKILL).
The write key is random per run and never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil

# bench/ is on sys.path as the script dir
from benchdocs import command_lines, machine, write_docs
from sender import (
    REQUEST_ERRORS,
    REQUEST_TIMEOUT_S,
    Connection,
    accepted_in,
    connect,
    expire_requests,
    raw_requests,
    run,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"

#: (name, events per request); the first one is the baseline the others are compared to.
SCENARIOS: tuple[tuple[str, int], ...] = (
    ("baseline: 1 event/request", 1),
    ("batches of 100", 100),
    ("batches of 500", 500),
)
TARGET_EVENTS_PER_S = 100_000
TARGET_BATCH = 500

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
SAMPLE_INTERVAL_S = 0.2
PROFILE_RATE_HZ = 100


# --------------------------------------------------------------------------------------
# Events


_CONTEXTS = [
    # device_type, platform, os, app_version
    ("mobile", "ios", "iOS 17.5", "5.12.0"),
    ("mobile", "android", "Android 14", "5.11.2"),
    ("tablet", "ios", "iPadOS 17.4", "5.12.0"),
    ("web", "web", "macOS 14", "2024.06.1"),
    ("desktop", "windows", "Windows 11", "3.4.0"),
    ("tv", "tvos", "tvOS 17", "1.9.3"),
    ("car", "android_auto", "Android 13", "5.10.0"),
    ("speaker", "alexa", "Fire OS 7", "1.2.0"),
]
_PLACES = [
    ("DE", "Europe/Berlin"),
    ("AT", "Europe/Vienna"),
    ("CH", "Europe/Zurich"),
    ("GB", "Europe/London"),
    ("FR", "Europe/Paris"),
    ("SE", "Europe/Stockholm"),
    ("US", "America/New_York"),
    ("US", "America/Los_Angeles"),
]
_NETWORKS = ["wifi", "wifi", "wifi", "cellular", "cellular", "ethernet"]
_WORDS = [
    "night", "river", "silent", "garden", "winter", "letters", "shadow", "city", "empire",
    "ocean", "stolen", "light", "forgotten", "house", "last", "summer", "glass", "mountain",
    "secret", "road", "paper", "crown", "quiet", "storm",
]  # fmt: skip
_NAMES = [
    "Anna Berg", "Jonas Weber", "Mara Lind", "Felix Hart", "Clara Voss", "Tom Riedel",
    "Ida Sommer", "Paul Brandt", "Lea Krüger", "Noah Fischer", "Ella Novak", "Ben Adler",
]  # fmt: skip
_SOURCES = ["home_shelf", "search", "library", "recommendation", "deep_link", "continue"]
_CURRENCIES = ["EUR", "EUR", "EUR", "GBP", "SEK", "USD"]


def _ts(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds and 'Z', as SDKs send it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _catalog(rng: random.Random, size: int = 400) -> list[dict[str, Any]]:
    items = []
    for i in range(size):
        kind = rng.choices(["audiobook", "track", "episode"], [6, 3, 1])[0]
        title = " ".join(rng.sample(_WORDS, rng.randint(2, 4))).title()
        item: dict[str, Any] = {
            "content_id": f"{kind[:4]}-{i:06d}",
            "content_type": kind,
            "title": title,
            "creator": rng.choice(_NAMES),
            "duration_s": round(
                rng.uniform(3600, 60000) if kind == "audiobook" else rng.uniform(120, 5400), 1
            ),
        }
        if kind == "audiobook":
            item["chapter"] = rng.randint(0, 40)
            item["chapter_title"] = f"Chapter {item['chapter']}"
        items.append(item)
    return items


class _EventFactory:
    """Plays of content and shop visits by a population of users, ending about now."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC)
        self.catalog = _catalog(self.rng)

    def _envelope(self, user: dict[str, Any], event_type: str, at: datetime) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_type": event_type,
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "occurred_at": _ts(at),
            "sent_at": _ts(min(at + timedelta(seconds=self.rng.uniform(0.05, 20)), self.now)),
            **user["ids"],
            "session_id": user["session_id"],
            "context": user["context"],
        }
        return event

    def _user(self) -> dict[str, Any]:
        rng = self.rng
        device, plat, os_name, app_version = rng.choice(_CONTEXTS)
        country, zone = rng.choice(_PLACES)
        n = rng.randint(1, 5000)
        ids = {"user_id": f"u-{n:07d}"} if rng.random() < 0.85 else {}
        if not ids or rng.random() < 0.3:
            ids["anonymous_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        context = {
            "device_type": device,
            "platform": plat,
            "os": os_name,
            "app_version": app_version,
            "network_type": rng.choice(_NETWORKS),
            "country": country,
            "timezone": zone,
            "foreground": rng.random() < 0.6,
        }
        session_id = f"s-{rng.getrandbits(48):012x}"
        return {"ids": ids, "context": context, "session_id": session_id}

    def play(self) -> list[dict[str, Any]]:
        """play_start, heartbeats, pause/resume, a seek, more heartbeats, play_end."""
        rng = self.rng
        user = self._user()
        content = rng.choice(self.catalog)
        short = {"content_id": content["content_id"], "content_type": content["content_type"]}
        playback = {"playback_id": f"pb-{rng.getrandbits(64):016x}", "playback_rate": 1.0}
        if content["content_type"] == "audiobook":
            playback["playback_rate"] = rng.choice([1.0, 1.0, 1.25, 1.5, 2.0])
        at = self.now - timedelta(seconds=rng.uniform(60, 1800))
        position = round(rng.uniform(0, content["duration_s"] * 0.8), 1)
        events: list[dict[str, Any]] = []

        def add(event_type: str, step_s: float, **fields: Any) -> None:
            nonlocal at, position
            at = min(at + timedelta(seconds=step_s), self.now)
            position = round(min(position + step_s * playback["playback_rate"], 1e8), 1)
            event = self._envelope(user, event_type, at)
            event.update(playback)
            event["content"] = fields.pop("content", short)
            event["position_s"] = fields.pop("position_s", position)
            event.update(fields)
            events.append(event)

        start_props = {"source": rng.choice(_SOURCES), "experiment": rng.choice(["A", "B"])}
        add("play_start", 0, content=content, properties=start_props)
        for _ in range(rng.randint(1, 6)):
            add("heartbeat", 30)
        if rng.random() < 0.5:
            add("pause", rng.uniform(1, 30))
            add("resume", rng.uniform(5, 600))
        if rng.random() < 0.4:
            before = position
            position = round(max(0.0, position + rng.uniform(-120, 300)), 1)
            add("seek", 1, from_position_s=before)
        for _ in range(rng.randint(0, 4)):
            add("heartbeat", 30)
        reason = rng.choices(["completed", "stopped", "next", "error"], [2, 6, 2, 0.2])[0]
        add("play_end", rng.uniform(1, 30), content=content, reason=reason)
        return events

    def shop(self) -> list[dict[str, Any]]:
        """Product and vendor views, favorites, cart adds and sometimes an order."""
        rng = self.rng
        user = self._user()
        at = self.now - timedelta(seconds=rng.uniform(60, 1800))
        vendor = f"v-{rng.randint(1, 200):05d}"
        events: list[dict[str, Any]] = []

        def add(event_type: str, **fields: Any) -> None:
            nonlocal at
            at = min(at + timedelta(seconds=rng.uniform(2, 90)), self.now)
            event = self._envelope(user, event_type, at)
            event.update(fields)
            events.append(event)

        add("vendor_view", vendor_id=vendor)
        cart = []
        for _ in range(rng.randint(1, 4)):
            product = f"p-{rng.randint(1, 20000):06d}"
            add("product_view", product_id=product, vendor_id=vendor)
            if rng.random() < 0.2:
                add("product_favorite", product_id=product, vendor_id=vendor)
            if rng.random() < 0.4:
                quantity = rng.choice([1, 1, 1, 2])
                price = rng.choice([499, 999, 1499, 1999, 2499])
                add("cart_add", product_id=product, vendor_id=vendor, quantity=quantity)
                cart.append({"product_id": product, "quantity": quantity, "amount_minor": price})
        if cart and rng.random() < 0.6:
            order = {
                "order_id": f"o-{rng.getrandbits(48):012x}",
                "amount_minor": sum(i["amount_minor"] * i["quantity"] for i in cart),
                "currency": rng.choice(_CURRENCIES),
                "vendor_id": vendor,
                "items": cart,
            }
            add("order_created", **order)
            if rng.random() < 0.9:
                add("order_completed", **order)
        return events


def build_events(count: int, seed: int = 20240601) -> list[bytes]:
    """``count`` valid events (about 85 % playback, 15 % commerce) as compact JSON."""
    factory = _EventFactory(seed)
    encoded: list[bytes] = []
    while len(encoded) < count:
        session = factory.shop() if factory.rng.random() < 0.2 else factory.play()
        encoded.extend(msgspec.json.encode(e) for e in session)
    return encoded[:count]


def check_events(events: list[bytes]) -> Counter[str]:
    """Validate every event with the collector's own rules; count them by type."""
    from playpulse.events.codec import validate_event

    now = datetime.now(UTC)
    types: Counter[str] = Counter()
    for raw in events:
        types[validate_event(raw, now).event.event_type] += 1
    return types


def batch_bodies(events: list[bytes], per_request: int) -> list[bytes]:
    """Request bodies: a JSON object per event for 1, else JSON arrays of ``per_request``."""
    if per_request == 1:
        return list(events)
    usable = len(events) - len(events) % per_request
    return [
        b"[" + b",".join(events[i : i + per_request]) + b"]" for i in range(0, usable, per_request)
    ]


# --------------------------------------------------------------------------------------
# The collector under test


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Collector:
    """``python -m playpulse collect`` as a subprocess; see :func:`running_collector`."""

    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, key: str | None, log: Path, workers: int = 1
    ):
        self.proc = proc
        self.workers = workers
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.key = key
        self.log = log
        self.ps = psutil.Process(proc.pid)

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the collector exited with {self.proc.returncode}\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join("  | " + line for line in text)

    def accepted_total(self, client: httpx.Client) -> float:
        """``playpulse_events_accepted_total`` from GET /metrics."""
        response = client.get(f"{self.url}/metrics", timeout=REQUEST_TIMEOUT_S)
        response.raise_for_status()
        match = re.search(r"^playpulse_events_accepted_total (\S+)$", response.text, re.M)
        if match is None:
            raise RuntimeError("playpulse_events_accepted_total is missing from /metrics")
        return float(match[1])


@contextlib.contextmanager
def running_collector(data_dir: Path, *, auth: bool, workers: int = 1) -> Iterator[Collector]:
    """Start the collector (``workers`` processes on one port), wait until GET /healthz
    answers, always stop it afterwards."""
    port = _free_port()
    key = secrets.token_urlsafe(24) if auth else None
    # Hermetic: settings come from the command line only, never from PLAYPULSE_* variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYPULSE_")}
    cmd = [sys.executable, "-m", "playpulse", "collect", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--data-dir", str(data_dir / "data")]
    if key:
        cmd += ["--write-key", key]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "collector.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    collector = Collector(proc, port, key, log_path, workers)
    try:
        _wait_healthy(collector)
        yield collector
    finally:
        _stop(proc)


def _wait_healthy(collector: Collector) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while True:
            collector.check_alive()
            try:
                if client.get(f"{collector.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the collector did not answer GET /healthz within {STARTUP_TIMEOUT_S:.0f} s"
                    f"\n{collector.tail()}"
                )
            time.sleep(0.1)


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
# Senders
#
# Sender and collector share the machine's 2 cores, so every CPU cycle a sender spends is
# taken from the collector. ``--compare-senders`` runs the baseline (the scenario with the
# most requests, hence the most client work) with each implementation and prints the
# sender CPU per request. Measured on the 2-core machine of docs/benchmarks.md (8 senders,
# baseline, 10 s each, collector and senders on the same machine):
#
#   sender                              req/s   sender CPU/request   collector CPU
#   raw (bench/sender.py)               1,952         45 us               91 %
#   httpx.AsyncClient, one per task       776        782 us               39 %
#   httpx.Client, one per thread (8)      892        653 us               51 %
#
# With httpx the sender costs more CPU per request than the collector does, so the
# baseline would measure the client rather than the collector (which then idles at
# 40-50 % of a core). Threads beat asyncio + httpx.AsyncClient slightly, but both are an
# order of magnitude costlier than the "raw" sender, the default: one asyncio task per
# keep-alive connection (bench/sender.py, shared with bench/sustained.py: uvloop, each
# request pre-built once, the response parsed by httptools), sending each connection's
# next request as soon as the previous one is answered. The httpx senders stay available
# (``--sender``, ``--compare-senders``) to check this.


@dataclass
class Plan:
    """When a scenario's measurement window starts and ends (``perf_counter_ns``)."""

    window_start_ns: int
    window_end_ns: int


@dataclass
class Record:
    """Completed requests of one sender: completion time, latency, accepted, status."""

    done_ns: list[int] = field(default_factory=list)
    latency_ns: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, done_ns: int, latency_ns: int, accepted: int, status: int) -> None:
        self.done_ns.append(done_ns)
        self.latency_ns.append(latency_ns)
        self.accepted.append(accepted)
        self.status.append(status)


def _start_offset(sender: int, senders: int, bodies: int) -> int:
    # Senders start at different bodies so concurrent requests carry different events.
    return sender * bodies // senders


async def _spread_connections(collector: Collector, connections: list[Connection | None]) -> None:
    """Open every sender's connection so that the collector's workers hold equal shares.

    uvicorn --workers share one listening socket, and a burst of connections opened at
    once is often accepted by one worker (runs where one worker held all 8 connections
    and the other idled). A load balancer, or SO_REUSEPORT, would spread them; here the
    connections are reopened until every worker holds its share (or 50 rounds passed).
    """
    share = math.ceil(len(connections) / collector.workers)
    for _ in range(50):
        for i, conn in enumerate(connections):
            if conn is None or conn.closed:
                connections[i] = await connect(collector.port)
        await asyncio.sleep(0.05)  # let the workers accept
        by_port = {
            conn.transport.get_extra_info("sockname")[1]: conn
            for conn in connections
            if conn is not None and conn.transport is not None
        }
        held = _connections_by_worker(collector, set(by_port))
        if len(held) == collector.workers and all(len(p) <= share for p in held.values()):
            return
        for ports in held.values():
            for port in sorted(ports)[share:]:
                by_port[port].close()


def _connections_by_worker(collector: Collector, client_ports: set[int]) -> dict[int, set[int]]:
    """Which of ``client_ports`` each collector process holds (pid -> ports)."""
    out: dict[int, set[int]] = {}
    for proc in [collector.ps, *collector.ps.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            for c in proc.net_connections("tcp"):
                if c.laddr.port == collector.port and c.raddr and c.raddr.port in client_ports:
                    out.setdefault(proc.pid, set()).add(c.raddr.port)
    return out


async def _raw_senders(
    collector: Collector, bodies: list[bytes], senders: int, plan: Plan
) -> list[Record]:
    requests = raw_requests(bodies, collector.port, collector.auth_headers)
    connections: list[Connection | None] = [None] * senders
    done = asyncio.Event()

    async def sender(i: int) -> Record:
        record = Record()
        index = _start_offset(i, senders, len(requests))
        perf = time.perf_counter_ns
        while perf() < plan.window_end_ns:
            conn = connections[i]
            if conn is None or conn.closed:
                try:
                    conn = await connect(collector.port)
                except (OSError, TimeoutError) as exc:
                    record.errors[f"connect: {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.1)
                    continue
                connections[i] = conn
            data = requests[index]
            index = (index + 1) % len(requests)
            started = perf()
            try:
                status, body = await conn.request(data)
            except REQUEST_ERRORS as exc:
                record.errors[type(exc).__name__] += 1
                conn.close()
                await asyncio.sleep(0.1)
                continue
            finished = perf()
            record.add(finished, finished - started, accepted_in(status, body), status)
            if status in (429, 503):
                await asyncio.sleep(0.05)
        return record

    if collector.workers > 1:
        await _spread_connections(collector, connections)
    guard = asyncio.create_task(expire_requests(connections, done, REQUEST_TIMEOUT_S))
    try:
        timeout = (plan.window_end_ns - time.perf_counter_ns()) / 1e9 + REQUEST_TIMEOUT_S + 5
        return await asyncio.wait_for(asyncio.gather(*(sender(i) for i in range(senders))), timeout)
    finally:
        done.set()
        guard.cancel()
        for conn in connections:
            if conn is not None:
                conn.close()


async def _httpx_async_senders(
    collector: Collector, bodies: list[bytes], senders: int, plan: Plan
) -> list[Record]:
    # One client (one keep-alive connection) per sender: cheaper than one shared pool.
    headers = {"Content-Type": "application/json", **collector.auth_headers}

    async def sender(i: int) -> Record:
        record = Record()
        index = _start_offset(i, senders, len(bodies))
        perf = time.perf_counter_ns
        async with httpx.AsyncClient(
            base_url=collector.url, headers=headers, timeout=REQUEST_TIMEOUT_S
        ) as client:
            while perf() < plan.window_end_ns:
                body = bodies[index]
                index = (index + 1) % len(bodies)
                started = perf()
                try:
                    response = await client.post("/v1/events", content=body)
                except httpx.TransportError as exc:
                    record.errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.1)
                    continue
                finished = perf()
                status = response.status_code
                accepted = accepted_in(status, response.content)
                record.add(finished, finished - started, accepted, status)
        return record

    timeout = (plan.window_end_ns - time.perf_counter_ns()) / 1e9 + REQUEST_TIMEOUT_S + 5
    return await asyncio.wait_for(asyncio.gather(*(sender(i) for i in range(senders))), timeout)


def _run_async(
    senders_fn: Callable[..., Any], collector: Collector, bodies: list[bytes], n: int, plan: Plan
) -> list[Record]:
    result: list[Record] = run(senders_fn(collector, bodies, n, plan))
    return result


def _httpx_thread_senders(
    collector: Collector, bodies: list[bytes], senders: int, plan: Plan
) -> list[Record]:
    headers = {"Content-Type": "application/json", **collector.auth_headers}
    records = [Record() for _ in range(senders)]

    def sender(i: int) -> None:
        record = records[i]
        index = _start_offset(i, senders, len(bodies))
        perf = time.perf_counter_ns
        with httpx.Client(base_url=collector.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as c:
            while perf() < plan.window_end_ns:
                body = bodies[index]
                index = (index + 1) % len(bodies)
                started = perf()
                try:
                    response = c.post("/v1/events", content=body)
                except httpx.TransportError as exc:
                    record.errors[type(exc).__name__] += 1
                    time.sleep(0.1)
                    continue
                finished = perf()
                status = response.status_code
                record.add(
                    finished, finished - started, accepted_in(status, response.content), status
                )

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(senders)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + (plan.window_end_ns - time.perf_counter_ns()) / 1e9
    deadline += REQUEST_TIMEOUT_S + 5
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            raise RuntimeError("a sender thread did not finish before its deadline")
    return records


SENDERS: dict[str, Callable[[Collector, list[bytes], int, Plan], list[Record]]] = {
    "raw": lambda c, b, n, p: _run_async(_raw_senders, c, b, n, p),
    "httpx-async": lambda c, b, n, p: _run_async(_httpx_async_senders, c, b, n, p),
    "httpx-threads": _httpx_thread_senders,
}


# --------------------------------------------------------------------------------------
# Measuring a scenario


class Watcher(threading.Thread):
    """Samples the collector's RSS and, at the window's edges, its metrics and CPU times."""

    def __init__(self, collector: Collector, plan: Plan) -> None:
        super().__init__(name="bench-watcher", daemon=True)
        self.collector = collector
        self.plan = plan
        self.stop_event = threading.Event()
        self.rss_max = 0
        self.edges: list[dict[str, float]] = []
        self.connections: list[int] = []
        self.error: BaseException | None = None
        self.me = psutil.Process()

    def _edge(self, client: httpx.Client) -> dict[str, float]:
        if not self.edges:
            self.connections = worker_connections(self.collector)
        server_cpu = _tree_cpu_s(self.collector.ps)
        me = self.me.cpu_times()
        busy = _machine_busy_s()
        before = time.perf_counter_ns()
        accepted = self.collector.accepted_total(client)
        after = time.perf_counter_ns()
        return {
            "at_ns": (before + after) / 2,
            "accepted": accepted,
            "server_cpu": server_cpu,
            "bench_cpu": me.user + me.system,
            "machine_busy": busy,
        }

    def run(self) -> None:
        try:
            with httpx.Client(headers={"Connection": "close"}) as client:
                for edge_ns in (self.plan.window_start_ns, self.plan.window_end_ns):
                    while time.perf_counter_ns() < edge_ns:
                        self._sample()
                        wait = min(SAMPLE_INTERVAL_S, (edge_ns - time.perf_counter_ns()) / 1e9)
                        if self.stop_event.wait(max(0.0, wait)):
                            return
                    self.edges.append(self._edge(client))
                while not self.stop_event.wait(SAMPLE_INTERVAL_S):
                    self._sample()
        except BaseException as exc:
            self.error = exc

    def _sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            procs = [self.collector.ps, *self.collector.ps.children(recursive=True)]
            rss = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    rss += proc.memory_info().rss
            self.rss_max = max(self.rss_max, rss)


def worker_connections(collector: Collector) -> list[int]:
    """Established client connections held by each process of the collector, busiest
    first (one entry per process that holds any; uvicorn --workers has several)."""
    counts = []
    for proc in [collector.ps, *collector.ps.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            conns = proc.net_connections("tcp")
            held = sum(
                1
                for c in conns
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == collector.port
            )
            if held:
                counts.append(held)
    return sorted(counts, reverse=True)


def _tree_cpu_s(root: psutil.Process) -> float:
    """CPU seconds of the collector and its worker processes (uvicorn --workers)."""
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


@dataclass
class Result:
    name: str
    per_request: int
    duration_s: float
    events: int
    requests: int
    p50_ms: float
    p99_ms: float
    rss_max_mib: float
    server_cpu_pct: float
    bench_cpu_pct: float
    other_cpu_pct: float
    metrics_events_per_s: float
    total_responses_accepted: int
    total_metrics_accepted: int
    non_200: Counter[str]
    #: Client connections per collector process at the window start, busiest first.
    connections: list[int] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.duration_s

    @property
    def server_cpu_us_per_event(self) -> float:
        """CPU time of the collector processes per accepted event, in microseconds."""
        return 1e6 * self.server_cpu_pct / 100 / max(self.events_per_s, 1e-9)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s

    @property
    def bench_cpu_us_per_request(self) -> float:
        return self.bench_cpu_pct / 100 * 1e6 / max(self.requests_per_s, 1e-9)


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[rank - 1])


def _machine_busy_s() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def wait_until_quiet(collector: Collector, max_wait_s: float, limit_pct: float = 20.0) -> float:
    """Wait (at most ``max_wait_s``) until other processes use < ``limit_pct`` % CPU.

    Other work on the machine (a test run, a build) takes CPU from the collector and the
    senders; ``other procs CPU %`` in the table shows what happened during the windows.
    Returns the CPU % of other processes last seen.
    """
    me = psutil.Process()
    deadline = time.monotonic() + max_wait_s
    told = False
    while True:
        ours = [p.cpu_times() for p in (me, collector.ps)]
        busy, started = _machine_busy_s(), time.monotonic()
        time.sleep(1.0)
        elapsed = time.monotonic() - started
        ours_s = sum(
            b.user + b.system - a.user - a.system
            for a, b in zip(ours, (me.cpu_times(), collector.ps.cpu_times()), strict=True)
        )
        other = 100 * max(0.0, _machine_busy_s() - busy - ours_s) / elapsed
        if other < limit_pct or time.monotonic() >= deadline:
            if told or other >= limit_pct:
                print(f"  other processes use {other:.0f} % CPU; starting", flush=True)
            return other
        if not told:
            print(f"  other processes use {other:.0f} % CPU; waiting for quiet ...", flush=True)
            told = True


def run_scenario(
    collector: Collector,
    name: str,
    per_request: int,
    bodies: list[bytes],
    args: argparse.Namespace,
    sender: str,
) -> Result:
    with httpx.Client(headers={"Connection": "close"}) as client:
        total_before = collector.accepted_total(client)
    start = time.perf_counter_ns()
    window_start = start + int(args.warmup * 1e9)
    plan = Plan(window_start, window_start + int(args.duration * 1e9))
    watcher = Watcher(collector, plan)
    watcher.start()
    try:
        records = SENDERS[sender](collector, bodies, args.senders, plan)
    finally:
        watcher.stop_event.set()
        watcher.join(timeout=REQUEST_TIMEOUT_S + 5)
    collector.check_alive()
    if watcher.error is not None:
        raise RuntimeError(f"measuring the collector failed: {watcher.error!r}")
    if len(watcher.edges) != 2:
        raise RuntimeError("the measurement window was not sampled at both edges")
    with httpx.Client(headers={"Connection": "close"}) as client:
        total_after = collector.accepted_total(client)

    events = requests = 0
    latencies: list[int] = []
    non_200: Counter[str] = Counter()
    total_accepted = 0
    for record in records:
        non_200.update(record.errors)
        for done, latency, accepted, status in zip(
            record.done_ns, record.latency_ns, record.accepted, record.status, strict=True
        ):
            total_accepted += accepted
            if status != 200:
                non_200[str(status)] += 1
            if plan.window_start_ns <= done < plan.window_end_ns:
                events += accepted
                requests += 1
                latencies.append(latency)
    latencies.sort()
    first, last = watcher.edges
    seconds = args.duration

    def cpu_pct(key: str) -> float:
        return 100 * (last[key] - first[key]) / seconds

    server_cpu, bench_cpu = cpu_pct("server_cpu"), cpu_pct("bench_cpu")
    machine_busy = cpu_pct("machine_busy")
    return Result(
        name=name,
        per_request=per_request,
        duration_s=seconds,
        events=events,
        requests=requests,
        p50_ms=_percentile(latencies, 0.50) / 1e6,
        p99_ms=_percentile(latencies, 0.99) / 1e6,
        rss_max_mib=watcher.rss_max / 2**20,
        server_cpu_pct=server_cpu,
        bench_cpu_pct=bench_cpu,
        other_cpu_pct=max(0.0, machine_busy - server_cpu - bench_cpu),
        metrics_events_per_s=(last["accepted"] - first["accepted"])
        / ((last["at_ns"] - first["at_ns"]) / 1e9),
        total_responses_accepted=total_accepted,
        total_metrics_accepted=round(total_after - total_before),
        non_200=non_200,
        connections=watcher.connections,
    )


# --------------------------------------------------------------------------------------
# Profiling (optional)


def start_profiler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(math.ceil(seconds))]
    # --gil: sample only the thread holding the GIL, i.e. where the collector's Python CPU
    # goes (SQLite's own work runs with the GIL released and is not in these samples).
    cmd += ["--rate", str(PROFILE_RATE_HZ), "--gil", "--nonblocking"]
    cmd += ["--format", "raw", "--output", str(out)]
    with out.with_suffix(".log").open("wb") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frame_name(frame: str, *, line: bool) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    where = f"{path}:{match['line']}" if line and match["line"] else path
    return f"{match['func']} ({where})"


#: Where a sample's time goes: the first label whose marker occurs in its stack.
_PROFILE_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "validation (msgspec decode, checks, re-encode)",
        ("validate_event (", "validate_records (", "validate_batch ("),
    ),
    ("split_events (body into raw events)", ("split_events",)),
    ("SQLiteStream.append, Python side", ("SQLiteStream.append",)),
    ("prometheus_client metrics", ("prometheus_client/",)),
    ("reading the request body", ("_read_body (",)),
    ("thread-pool hand-off (anyio, threading)", ("anyio/", "threading.py")),
    ("rest of Collector.ingest / the route", ("playpulse/collector/",)),
    (
        "uvicorn HTTP protocol (parse, write)",
        ("RequestResponseCycle.send (", "RequestResponseCycle.receive (", "HttpToolsProtocol."),
    ),
    ("FastAPI / Starlette routing, middleware, JSON", ("fastapi/", "starlette/")),
)


def summarize_profile(raw: Path, seconds: float, top: int = 15) -> str:
    """Where the collector's GIL-holding samples fall, from py-spy's raw output.

    By category (see ``_PROFILE_CATEGORIES``), by line (own time) and by playpulse
    function (including callees); the event loop thread and the worker threads (stream
    appends) are also counted apart.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = 0
    for text in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = text.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        if not frames or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        worker = frames[0].startswith("Thread._bootstrap")
        threads["worker threads (stream appends)" if worker else "event loop thread"] += count
        own[_frame_name(frames[-1], line=True)] += count
        names = [_frame_name(f, line=False) for f in frames]
        for name in set(names):
            if "(playpulse/" in name and "(playpulse/cli.py" not in name and "__main__" not in name:
                inclusive[name] += count
        joined = ";".join(names)
        label = next(
            (label for label, marks in _PROFILE_CATEGORIES if any(m in joined for m in marks)),
            "other (event loop, GC, ...)",
        )
        categories[label] += count
    if not total:
        return "py-spy recorded no samples"

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f} %"

    held = 100 * total / (PROFILE_RATE_HZ * seconds)
    lines = [
        f"{total} samples at {PROFILE_RATE_HZ} Hz of the thread holding the GIL: the GIL was"
        f" held about {held:.0f} % of the {seconds:g} s; percentages are of the samples.",
        "",
        "By thread:",
    ]
    lines += [f"  {pct(n)}  {name}" for name, n in threads.most_common()]
    lines += ["", "By category:"]
    lines += [f"  {pct(n)}  {name}" for name, n in categories.most_common()]
    lines += ["", "Own time (by line):"]
    lines += [f"  {pct(n)}  {name}" for name, n in own.most_common(top)]
    lines += ["", "playpulse functions, including callees:"]
    lines += [f"  {pct(n)}  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Report


def _fmt_int(value: float) -> str:
    return f"{value:,.0f}"


def markdown_table(results: list[Result]) -> str:
    baseline = results[0].events_per_s or math.nan
    head = [
        "scenario",
        "events/s",
        "vs baseline",
        "events/s (/metrics)",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "collector RSS max MiB",
        "collector CPU %",
        "collector CPU us/event",
        "sender CPU %",
        "other procs CPU %",
        "non-200 / errors",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in results:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.non_200.items())) or "0"
        cells = [
            r.name,
            _fmt_int(r.events_per_s),
            f"{r.events_per_s / baseline:.1f}x",
            _fmt_int(r.metrics_events_per_s),
            _fmt_int(r.requests_per_s),
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            f"{r.rss_max_mib:.0f}",
            f"{r.server_cpu_pct:.0f}",
            f"{r.server_cpu_us_per_event:.1f}",
            f"{r.bench_cpu_pct:.0f}",
            f"{r.other_cpu_pct:.0f}",
            errors,
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def cross_check(results: list[Result]) -> list[str]:
    lines = []
    for r in results:
        window = (r.metrics_events_per_s - r.events_per_s) / max(r.events_per_s, 1e-9)
        same = r.total_responses_accepted == r.total_metrics_accepted
        lines.append(
            f"- {r.name}: /metrics rate differs from the responses' by {100 * window:+.2f} % "
            f"in the window; whole scenario: responses {r.total_responses_accepted:,}, "
            f"/metrics {r.total_metrics_accepted:,} ({'equal' if same else 'DIFFERENT'})"
        )
    return lines


#: Above this CPU % of other processes during a window, the run is flagged as disturbed.
OTHER_CPU_WARN_PCT = 20.0


def _contention_warning(results: list[Result]) -> list[str]:
    worst = max(results, key=lambda r: r.other_cpu_pct)
    if worst.other_cpu_pct < OTHER_CPU_WARN_PCT:
        return []
    return [
        "",
        f"**Disturbed run:** other processes used up to {worst.other_cpu_pct:.0f} % CPU"
        f" during the windows ({worst.name}); the figures are lower than on an idle machine.",
    ]


def _connections_text(result: Result) -> str:
    return " + ".join(map(str, result.connections)) or "unknown"


def connection_notes(results: list[Result], workers: int) -> list[str]:
    """How the senders' connections were spread over the collector workers."""
    return [
        f"- {r.name}: the {sum(r.connections)} connections were held"
        f" {_connections_text(r)} by the workers at the window start"
        + (
            f" (only {len(r.connections)} of the {workers} workers had any)"
            if len(r.connections) < workers
            else ""
        )
        for r in results
        if "workers" in r.name
    ]


def _target(results: list[Result]) -> tuple[float, bool]:
    rate = max((r.events_per_s for r in results if r.per_request == TARGET_BATCH), default=0.0)
    return rate, rate >= TARGET_EVENTS_PER_S


def docs_section(
    results: list[Result],
    args: argparse.Namespace,
    types: Counter[str],
    event_bytes: float,
    profile: str | None,
) -> str:
    rate, met = _target(results)
    command = shlex.join(["python", "bench/ingest.py", *sys.argv[1:]])
    mix = ", ".join(f"{t} {100 * n / sum(types.values()):.0f} %" for t, n in types.most_common())
    verdict = "**met**" if met else "**not met**"
    auth = "a write key sent as `Authorization: Bearer`" if args.auth else "no write key"
    sender_note = {
        "raw": " (pre-built HTTP/1.1 requests on uvloop, responses parsed by httptools: about"
        " 15x less CPU per request than httpx, measured with `--compare-senders`; see the"
        " comment in bench/ingest.py)",
    }.get(args.sender, "")
    parts = [
        "## Ingest (bench/ingest.py)",
        "",
        "How many events per second the HTTP collector (`playpulse collect`, POST /v1/events)"
        " durably appends to the embedded stream. The benchmark starts a real collector on"
        " 127.0.0.1 with a fresh data dir (default settings: SQLite stream in WAL mode,"
        f" `synchronous=NORMAL`, 8 partitions; {auth}), then for each scenario sends"
        f" pre-encoded request bodies over {args.senders} concurrent keep-alive connections"
        f" for {args.duration:g} s (after a {args.warmup:g} s warm-up that is not counted)."
        " A response comes only after its events are committed to the stream, so events/s"
        " is the durable ingest rate.",
        "",
        "- Scenarios: the baseline sends one event per request (a JSON object body); the"
        " others send the same events in JSON arrays of 100 and of 500. `vs baseline` is a"
        " scenario's events/s divided by the baseline's in the same run.",
        f"- Events: {len(types):,} types from realistic plays (play_start, heartbeats,"
        " pause/resume, seek, play_end, with content and context) and shop visits; mix: "
        f"{mix}. Average event size {event_bytes:.0f} bytes; {args.events:,} unique"
        " event_ids, sent repeatedly (the collector does not dedup).",
        "- events/s: sum of the `accepted` counts of the responses completed in the window;"
        " `events/s (/metrics)` is the same from `playpulse_events_accepted_total`"
        " (cross-check). requests/s, p50/p99 latency (send to full response) over the same"
        " window. RSS: peak of the collector process. CPU %: of one core (200 % = both);"
        " `collector CPU us/event` is the collector's CPU time per accepted event (what"
        " the code costs, less sensitive to neighbours than events/s); `other procs` is"
        " whatever else ran on the machine meanwhile (should be near 0).",
        f"- Senders: `{args.sender}`{sender_note}. Sender CPU % is the whole benchmark process.",
        "- With several collector workers (uvicorn --workers, one listening socket), a"
        " burst of new connections is often accepted by one worker alone (earlier runs had"
        " all 8 on one worker while the other idled). The senders therefore reopen"
        " connections until each worker holds an equal share, as a load balancer in front"
        " would do; the run reports the spread.",
        "- Figures move between runs on a shared VM (disk flushes, neighbours): compare"
        " scenarios within one run rather than single figures across runs.",
        *command_lines(command),
        f"Machine: {machine()}. Sender and collector run on the same machine and share its"
        " cores, so the figures are a lower bound for a collector with the machine to itself.",
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        markdown_table(results),
        *_contention_warning(results),
        "",
        "Cross-check against /metrics:",
        "",
        *cross_check(results),
        *connection_notes(results, args.workers),
        "",
        f"Target: >= {TARGET_EVENTS_PER_S:,} events/s with batches of {TARGET_BATCH}."
        f" Measured {rate:,.0f} events/s: {verdict}.",
    ]
    batches = [r for r in results if r.per_request == TARGET_BATCH]
    if batches:
        used = "; ".join(
            f"{r.name}: {r.server_cpu_pct:.0f} % ({r.server_cpu_us_per_event:.1f} us per event)"
            for r in batches
        )
        parts += [
            "",
            f"Collector CPU with batches of {TARGET_BATCH}, of the"
            f" {100 * (os.cpu_count() or 1)} % the machine has: {used}."
            f" `python bench/ingest.py --profile` adds a batches-of-{TARGET_BATCH} pass with"
            " py-spy attached to the single-process collector and prints where its time goes.",
        ]
    if profile:
        parts += [
            "",
            f"Profile of the collector during an extra batches-of-{TARGET_BATCH} pass"
            " (py-spy, not part of the table above):",
            "",
            "```text",
            profile,
            "```",
        ]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds before")
    parser.add_argument("--senders", type=int, default=8, help="concurrent connections")
    parser.add_argument("--events", type=int, default=20_000, help="unique events to build")
    parser.add_argument("--sender", choices=sorted(SENDERS), default="raw")
    parser.add_argument(
        "--no-auth", dest="auth", action="store_false", help="run the collector without a key"
    )
    parser.add_argument(
        "--compare-senders",
        action="store_true",
        help="only run the baseline once with each sender implementation and compare CPU",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"add a batches-of-{TARGET_BATCH} pass with py-spy attached to the collector",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each scenario, wait at most this long for other processes to go idle",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also run batches of 500 against `playpulse collect --workers N` (1: skip)",
    )
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS}")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.senders < 1:
        parser.error("--duration must be > 0, --warmup >= 0 and --senders >= 1")
    if args.events < max(n for _, n in SCENARIOS):
        parser.error(f"--events must be at least {max(n for _, n in SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    events = build_events(args.events)
    types = check_events(events)
    event_bytes = sum(map(len, events)) / len(events)
    print(
        f"built {len(events):,} events ({event_bytes:.0f} bytes on average, "
        f"{len(types)} types) in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    bodies = {n: batch_bodies(events, n) for _, n in SCENARIOS}
    profile_text: str | None = None
    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="playpulse-bench-") as tmp,
        running_collector(Path(tmp), auth=args.auth) as collector,
    ):
        print(f"collector pid {collector.proc.pid} on {collector.url}", flush=True)
        if args.compare_senders:
            name, n = SCENARIOS[0]
            for sender in SENDERS:
                wait_until_quiet(collector, args.quiet_wait)
                result = run_scenario(collector, f"{name} [{sender}]", n, bodies[n], args, sender)
                results.append(result)
                print(
                    f"{sender:14} {result.requests_per_s:8,.0f} req/s, sender CPU "
                    f"{result.bench_cpu_pct:4.0f} % = {result.bench_cpu_us_per_request:5.0f} us"
                    f"/request, collector CPU {result.server_cpu_pct:4.0f} %",
                    flush=True,
                )
            print("\n" + markdown_table(results))
            return 0
        for name, n in SCENARIOS:
            print(f"running {name} for {args.warmup:g} + {args.duration:g} s ...", flush=True)
            wait_until_quiet(collector, args.quiet_wait)
            result = run_scenario(collector, name, n, bodies[n], args, args.sender)
            results.append(result)
            print(
                f"  {result.events_per_s:,.0f} events/s, {result.requests_per_s:,.0f} req/s, "
                f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms",
                flush=True,
            )
        if args.workers > 1:
            name = f"batches of {TARGET_BATCH}, {args.workers} collector workers"
            with running_collector(
                Path(tmp) / "workers", auth=args.auth, workers=args.workers
            ) as multi:
                print(f"running {name} for {args.warmup:g} + {args.duration:g} s ...", flush=True)
                wait_until_quiet(multi, args.quiet_wait)
                result = run_scenario(
                    multi, name, TARGET_BATCH, bodies[TARGET_BATCH], args, args.sender
                )
                results.append(result)
                print(
                    f"  {result.events_per_s:,.0f} events/s, {result.requests_per_s:,.0f} "
                    f"req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                    f"connections per worker {_connections_text(result)}",
                    flush=True,
                )
        if args.profile:
            raw = Path(tmp) / "profile.txt"
            print(f"profiling batches of {TARGET_BATCH} with py-spy ...", flush=True)
            wait_until_quiet(collector, args.quiet_wait)
            spy = start_profiler(collector.proc.pid, args.warmup + args.duration, raw)
            try:
                run_scenario(
                    collector, "profiled", TARGET_BATCH, bodies[TARGET_BATCH], args, args.sender
                )
                spy.wait(timeout=args.warmup + args.duration + 30)
            finally:
                _stop(spy)
            if spy.returncode == 0 and raw.exists():
                profile_text = summarize_profile(raw, math.ceil(args.warmup + args.duration))
            else:
                log = raw.with_suffix(".log").read_text(errors="replace").strip()
                profile_text = f"py-spy failed (exit {spy.returncode}): {log[-500:]}"

    print()
    print(markdown_table(results))
    print()
    print("\n".join(cross_check(results) + connection_notes(results, args.workers)))
    if warning := _contention_warning(results):
        print("\n".join(warning).replace("**", ""))
    rate, met = _target(results)
    print(
        f"\ntarget >= {TARGET_EVENTS_PER_S:,} events/s with batches of {TARGET_BATCH}: "
        f"{rate:,.0f} events/s, {'met' if met else 'NOT met'}"
    )
    if profile_text:
        print("\n" + profile_text)
    if args.write_docs:
        write_docs(DOCS, "ingest", docs_section(results, args, types, event_bytes, profile_text))
        print(f"\nwrote the ingest section of {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
