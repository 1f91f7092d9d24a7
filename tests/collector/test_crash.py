"""Crash test: SIGKILL a real collector process mid-load and check what it acknowledged.

The collector runs as ``python -m playpulse collect`` in a subprocess. Several sender
threads POST 20,000 events (about 5% of them invalid on purpose) in batches. A 200
response *acknowledges* its batch: the events listed in ``rejected`` must be in the
quarantine, every other one must be in the stream. A request that fails because the
server died is not acknowledged; the sender sends it again once the collector is back
(at-least-once, so the stream may hold such events twice).

At a random point between 20% and 80% of the events the collector is killed with
SIGKILL and restarted on the same data dir. In the end every acknowledged event must be
where the response said it went, every valid event must be in the stream, and no invalid
event may be in it.

The seed is printed in every assertion message; set ``PLAYPULSE_CRASH_SEED`` to rerun
with another one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from playpulse.quarantine.store import QuarantineStore
from playpulse.stream.sqlite import SQLiteStream

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("PLAYPULSE_CRASH_SEED", "20260611"))
TOTAL_EVENTS = 20_000
INVALID_SHARE = 0.05
SENDERS = 4
BATCH_SIZES = (100, 200)
WRITE_KEY = "k"
NUM_PARTITIONS = 8
#: The whole test gives up after this long.
GLOBAL_DEADLINE_S = 120.0
#: Timeout of every HTTP call the senders make.
HTTP_TIMEOUT_S = 10.0
#: How long a collector may take to answer GET /healthz after it is started.
STARTUP_DEADLINE_S = 30.0
#: How long a collector may take to exit after SIGTERM before it is killed.
STOP_DEADLINE_S = 10.0

#: Kinds of deliberately invalid events, with the quarantine reason each one gets.
INVALID_KINDS = {
    "unknown_type": "unknown_event_type",
    "no_user": "invalid_event",
    "naive_time": "invalid_event",
}


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Planned:
    """One event to send: its id, its JSON, and the invalid kind (None when valid)."""

    event_id: str
    raw: dict[str, Any]
    invalid: str | None


def plan_events(rng: random.Random, now: datetime) -> list[Planned]:
    """``TOTAL_EVENTS`` events with unique ids, about ``INVALID_SHARE`` of them invalid."""
    events = []
    for i in range(TOTAL_EVENTS):
        event_id = f"crash-{i:05d}"
        occurred = now - timedelta(seconds=rng.randrange(1, 3600))
        event: dict[str, Any] = {
            "event_id": event_id,
            "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
        }
        if rng.random() < 0.5:
            event["user_id"] = f"user-{rng.randrange(500)}"
        else:
            event["anonymous_id"] = f"anon-{rng.randrange(500)}"
        kind = rng.choice(["heartbeat", "play_start", "product_view", "cart_add"])
        event["event_type"] = kind
        if kind == "heartbeat":
            event["playback_id"] = f"play-{rng.randrange(2000)}"
            event["position_s"] = round(rng.uniform(0, 3600), 3)
        elif kind == "play_start":
            event["content"] = {"content_id": f"book-{rng.randrange(100)}"}
        else:
            event["product_id"] = f"product-{rng.randrange(300)}"

        invalid = None
        if rng.random() < INVALID_SHARE:
            invalid = rng.choice(sorted(INVALID_KINDS))
            if invalid == "unknown_type":
                event["event_type"] = "no_such_event"
            elif invalid == "no_user":
                event.pop("user_id", None)
                event.pop("anonymous_id", None)
            else:  # naive_time: the same instant without its zone
                event["occurred_at"] = occurred.replace(tzinfo=None).isoformat()
        events.append(Planned(event_id, event, invalid))
    return events


def split_batches(rng: random.Random, events: list[Planned]) -> list[list[list[Planned]]]:
    """Deal ``events`` to ``SENDERS`` senders, each as a list of batches."""
    per_sender: list[list[list[Planned]]] = [[] for _ in range(SENDERS)]
    start = 0
    turn = 0
    while start < len(events):
        size = rng.randint(*BATCH_SIZES)
        per_sender[turn % SENDERS].append(events[start : start + size])
        start += size
        turn += 1
    return per_sender


# --------------------------------------------------------------------------- collector


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, chars: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return text[-chars:]


class CollectorProcess:
    """``python -m playpulse collect`` on 127.0.0.1, output in a log file."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYPULSE_")}
        env["PYTHONUNBUFFERED"] = "1"
        self._log: IO[bytes] = log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "playpulse",
                    "collect",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(data_dir),
                    "--write-key",
                    WRITE_KEY,
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
                env=env,
            )
        except BaseException:
            self._log.close()
            raise

    def wait_healthy(self, deadline: float) -> None:
        """Return once GET /healthz answers 200; fail at ``deadline`` or if it exits."""
        last_error = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"collector exited with {self.proc.returncode} during startup "
                    f"(seed {SEED}):\n{tail(self.log_path)}"
                )
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=1.0)
                if response.status_code == 200:
                    return
                last_error = f"status {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last_error = repr(exc)
            time.sleep(0.05)
        pytest.fail(
            f"collector not healthy in time (seed {SEED}); last error {last_error}:\n"
            f"{tail(self.log_path)}"
        )

    def sigkill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_DEADLINE_S)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after ``STOP_DEADLINE_S``; the exit code of a clean stop."""
        clean: int | None = None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    clean = self.proc.wait(timeout=STOP_DEADLINE_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=STOP_DEADLINE_S)
        finally:
            self._log.close()
        return clean


class Server:
    """Where the senders currently send to; ``up`` is cleared while it is restarting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._url = ""
        self._generation = 0
        self.up = threading.Event()

    def current(self) -> tuple[str, int]:
        with self._lock:
            return self._url, self._generation

    def set(self, url: str) -> None:
        with self._lock:
            self._url = url
            self._generation += 1
        self.up.set()


# --------------------------------------------------------------------------- senders


@dataclass
class SenderLog:
    """What one sender learned from the collector's answers."""

    accepted: dict[str, int] = field(default_factory=dict)  # event_id -> server generation
    rejected: dict[str, int] = field(default_factory=dict)
    #: Events of requests that got no answer and were sent again.
    resent: set[str] = field(default_factory=set)
    transport_errors: Counter[str] = field(default_factory=Counter)
    retried_statuses: Counter[int] = field(default_factory=Counter)
    acked_events: int = 0
    error: BaseException | None = None


class Sender(threading.Thread):
    def __init__(
        self, number: int, batches: list[list[Planned]], server: Server, stop: threading.Event
    ) -> None:
        super().__init__(name=f"crash-sender-{number}", daemon=True)
        self.batches = batches
        self.server = server
        self.stop_flag = stop
        self.log = SenderLog()

    def run(self) -> None:
        try:
            with httpx.Client(
                timeout=HTTP_TIMEOUT_S,
                headers={"Authorization": f"Bearer {WRITE_KEY}"},
            ) as client:
                for batch in self.batches:
                    self._send(client, batch)
        except BaseException as exc:
            self.log.error = exc

    def _send(self, client: httpx.Client, batch: list[Planned]) -> None:
        body = json.dumps([p.raw for p in batch]).encode()
        while True:
            if self.stop_flag.is_set():
                raise RuntimeError("stopped: the global deadline passed")
            url, generation = self.server.current()
            try:
                response = client.post(
                    f"{url}/v1/events",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
            except httpx.TransportError as exc:
                # No answer: nothing is acknowledged. Wait for the collector to come back.
                self.log.transport_errors[type(exc).__name__] += 1
                self.log.resent.update(p.event_id for p in batch)
                self.server.up.wait(timeout=HTTP_TIMEOUT_S)
                time.sleep(0.02)
                continue
            if response.status_code in (429, 503):
                self.log.retried_statuses[response.status_code] += 1
                self.log.resent.update(p.event_id for p in batch)
                time.sleep(0.05)
                continue
            if response.status_code != 200:
                raise AssertionError(
                    f"unexpected status {response.status_code}: {response.text[:500]}"
                )
            self._acknowledge(batch, response.json(), generation)
            return

    def _acknowledge(self, batch: list[Planned], answer: dict[str, Any], generation: int) -> None:
        rejected_at: dict[int, dict[str, Any]] = {}
        for item in answer["rejected"]:
            index = item["index"]
            assert 0 <= index < len(batch), f"rejected index {index} out of range: {item}"
            assert index not in rejected_at, f"index {index} rejected twice: {answer}"
            assert item["event_id"] == batch[index].event_id, (
                f"rejected index {index} names {item['event_id']}, "
                f"but that event is {batch[index].event_id}"
            )
            assert item["errors"], f"a rejection without errors: {item}"
            rejected_at[index] = item
        assert answer["accepted"] == len(batch) - len(rejected_at), answer["accepted"]
        for index, planned in enumerate(batch):
            if index in rejected_at:
                self.log.rejected[planned.event_id] = generation
            else:
                self.log.accepted[planned.event_id] = generation
        self.log.acked_events += len(batch)


# --------------------------------------------------------------------------- reading back


def stream_event_ids(path: Path) -> Counter[str]:
    """How often each event_id is in the stream, all partitions read from their start."""
    seen: Counter[str] = Counter()
    stream = SQLiteStream(path, num_partitions=NUM_PARTITIONS)
    try:
        for info in stream.partitions():
            offset = info.start_offset
            while offset < info.end_offset:
                records = stream.read(info.partition, offset, 5000)
                assert records, f"partition {info.partition} has a gap at offset {offset}"
                for record in records:
                    assert record.offset == offset, (
                        f"partition {info.partition}: offset {record.offset}, expected {offset}"
                    )
                    seen[json.loads(record.value)["event_id"]] += 1
                    offset += 1
    finally:
        stream.close()
    return seen


def quarantined(path: Path) -> dict[str, list[str]]:
    """The quarantine's reasons for each event_id, every status, paged by id."""
    reasons: dict[str, list[str]] = defaultdict(list)
    store = QuarantineStore(path)
    try:
        after_id = 0
        while True:
            page = store.list(status=None, limit=1000, after_id=after_id)
            if not page:
                break
            for entry in page:
                assert entry.event_id is not None, f"entry {entry.id} has no event_id"
                reasons[entry.event_id].append(entry.reason)
            after_id = page[-1].id
    finally:
        store.close()
    return reasons


def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def preview(ids: set[str] | list[str], n: int = 10) -> str:
    return f"{len(ids)}: {sorted(ids)[:n]}"


# --------------------------------------------------------------------------- the test


def test_sigkill_loses_no_acknowledged_event(tmp_path: Path) -> None:
    deadline = time.monotonic() + GLOBAL_DEADLINE_S
    rng = random.Random(SEED)
    events = plan_events(rng, datetime.now(UTC))
    per_sender = split_batches(rng, events)
    kill_at = int(TOTAL_EVENTS * rng.uniform(0.2, 0.8))
    valid = {p.event_id for p in events if p.invalid is None}
    invalid = {p.event_id: p.invalid for p in events if p.invalid is not None}
    assert len(valid) + len(invalid) == TOTAL_EVENTS
    ctx = f"seed {SEED}, kill after {kill_at} acknowledged events"

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = Server()
    stop = threading.Event()
    senders = [Sender(n, batches, server, stop) for n, batches in enumerate(per_sender)]
    processes: list[CollectorProcess] = []
    started = time.monotonic()
    timings: dict[str, float] = {}
    clean_exit: int | None = None
    try:
        first = CollectorProcess(data_dir, tmp_path / "collector-1.log")
        processes.append(first)
        first.wait_healthy(min(deadline, time.monotonic() + STARTUP_DEADLINE_S))
        timings["first start"] = time.monotonic() - started
        server.set(first.url)
        for sender in senders:
            sender.start()

        # Kill at the planned point of progress (or as soon as the senders stopped).
        while sum(s.log.acked_events for s in senders) < kill_at:
            if not any(s.is_alive() for s in senders):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"deadline passed before the kill ({ctx})")
            time.sleep(0.002)
        server.up.clear()
        first.sigkill()
        acked_at_kill = sum(s.log.acked_events for s in senders)
        timings["kill"] = time.monotonic() - started
        assert first.proc.returncode == -signal.SIGKILL, first.proc.returncode

        second = CollectorProcess(data_dir, tmp_path / "collector-2.log")
        processes.append(second)
        second.wait_healthy(min(deadline, time.monotonic() + STARTUP_DEADLINE_S))
        timings["restart"] = time.monotonic() - started
        server.set(second.url)

        for sender in senders:
            sender.join(timeout=max(0.0, deadline - time.monotonic()))
        if any(s.is_alive() for s in senders):
            stop.set()
            pytest.fail(f"senders did not finish within {GLOBAL_DEADLINE_S} s ({ctx})")
        timings["senders done"] = time.monotonic() - started
        errors = [s.log.error for s in senders if s.log.error is not None]
        if errors:
            raise AssertionError(f"a sender failed ({ctx})") from errors[0]
        clean_exit = second.stop()
    finally:
        stop.set()
        server.up.set()  # wake senders waiting for a restart so that they see ``stop``
        for process in processes:
            process.stop()

    accepted: dict[str, int] = {}
    rejected: dict[str, int] = {}
    resent: set[str] = set()
    transport_errors: Counter[str] = Counter()
    for sender in senders:
        accepted.update(sender.log.accepted)
        rejected.update(sender.log.rejected)
        resent |= sender.log.resent
        transport_errors += sender.log.transport_errors
    in_stream = stream_event_ids(data_dir / "stream.db")
    in_quarantine = quarantined(data_dir / "quarantine.db")
    timings["read back"] = time.monotonic() - started

    duplicates = {e for e, n in in_stream.items() if n > 1}
    summary = (
        f"{ctx}; acknowledged at kill {acked_at_kill}; accepted by first process "
        f"{sum(1 for g in accepted.values() if g == 1)}, by second "
        f"{sum(1 for g in accepted.values() if g == 2)}; rejected {len(rejected)}; "
        f"resent {len(resent)}; transport errors {dict(transport_errors)}; "
        f"stream duplicates {len(duplicates)}; timings {timings}"
    )
    print(summary)

    # The kill happened mid-load: both processes acknowledged events.
    assert 0 < acked_at_kill < TOTAL_EVENTS, summary
    assert any(g == 1 for g in accepted.values()), summary
    assert any(g == 2 for g in accepted.values()), summary

    # The collector told the truth about validity.
    assert set(accepted) == valid, summary
    assert set(rejected) == set(invalid), summary

    # Every acknowledged-accepted event is in the stream; the first process's too.
    missing = set(accepted) - set(in_stream)
    assert not missing, f"acknowledged events missing from the stream {preview(missing)}; {summary}"
    # Every acknowledged-rejected event is in the quarantine, with its reason.
    not_quarantined = set(rejected) - set(in_quarantine)
    assert not not_quarantined, (
        f"rejected events missing from the quarantine {preview(not_quarantined)}; {summary}"
    )
    wrong_reason = {
        e: in_quarantine[e] for e in rejected if INVALID_KINDS[invalid[e]] not in in_quarantine[e]
    }
    assert not wrong_reason, f"unexpected quarantine reasons {wrong_reason}; {summary}"

    # Nothing else got in: no invalid event in the stream, no unknown id anywhere.
    leaked = set(invalid) & set(in_stream)
    assert not leaked, f"invalid events in the stream {preview(leaked)}; {summary}"
    unknown = set(in_stream) - valid
    assert not unknown, f"unknown events in the stream {preview(unknown)}; {summary}"
    wrongly_quarantined = set(in_quarantine) - set(invalid)
    assert not wrongly_quarantined, (
        f"valid events in the quarantine {preview(wrongly_quarantined)}; {summary}"
    )
    # Duplicates only come from requests that got no answer and were sent again.
    unexplained = duplicates - resent
    assert not unexplained, f"duplicates that were never resent {preview(unexplained)}; {summary}"
    quarantine_duplicates = {e for e, r in in_quarantine.items() if len(r) > 1} - resent
    assert not quarantine_duplicates, (
        f"quarantine duplicates never resent {preview(quarantine_duplicates)}; {summary}"
    )

    assert integrity(data_dir / "stream.db") == "ok", summary
    assert integrity(data_dir / "quarantine.db") == "ok", summary
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: 0 or -SIGTERM is clean.
    assert clean_exit in (0, -signal.SIGTERM), f"exit code after SIGTERM {clean_exit}; {summary}"
    assert "Application shutdown complete" in tail(processes[-1].log_path), summary
