"""`playpulse up` stops on SIGINT and SIGTERM (to it or to its process group), whatever
its processor child is doing, leaves no process behind and loses nothing it
acknowledged; a dead child is started again and reported; a child never outlives `up`.

Each test runs a real `playpulse up` on 127.0.0.1 (its own process group) and sends
events over HTTP from a thread while the signal arrives. The 10 s deadlines are hang
guards, not speed measurements.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from playpulse.config import Settings
from playpulse.events.codec import decode_stored, validate_event
from playpulse.service import ensure_processed, read_processor_status
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.factory import open_stream
from playpulse.testing import group_members, playpulse_server, process_tree

#: Restart a dead processor quickly, so the tests see restarts within seconds.
FAST_RESTART = {"PLAYPULSE_PROCESSOR_RESTART_DELAY_S": "0.5"}
STOP_DEADLINE_S = 10.0


def view_event(now: datetime) -> dict[str, Any]:
    """A valid product_view of vendor ``v1`` (counted in the store's vendor metrics)."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "product_view",
        "occurred_at": now.isoformat().replace("+00:00", "Z"),
        "user_id": f"u{uuid.uuid4().int % 40}",
        "product_id": "sku-1",
        "vendor_id": "v1",
    }


class Sender(threading.Thread):
    """POSTs batches of views to ``url`` until :meth:`finish` or the server goes away;
    ``acked`` holds the event ids of every batch answered 200 with nothing rejected."""

    def __init__(self, url: str, batch: int = 20) -> None:
        super().__init__(name="test-sender", daemon=True)
        self.url = url
        self.batch = batch
        self.acked: set[str] = set()
        self.errors: list[str] = []
        self._done = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._done.is_set():
                events = [view_event(datetime.now(UTC)) for _ in range(self.batch)]
                try:
                    response = client.post("/v1/events", json=events)
                except httpx.TransportError:
                    return  # the server stopped: what it answered before is what counts
                if response.status_code == 200:
                    assert response.json()["rejected"] == []
                    self.acked.update(e["event_id"] for e in events)
                elif response.status_code != 503:  # 503 while it shuts down is honest
                    self.errors.append(f"{response.status_code} {response.text[:200]}")

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        """Block until at least ``count`` events were acknowledged."""
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < count:
            assert self.is_alive(), f"the sender stopped early: {self.errors}"
            assert time.monotonic() < deadline, f"only {len(self.acked)} acknowledged"
            time.sleep(0.02)

    def finish(self) -> None:
        """Stop sending and wait for the thread."""
        self._done.set()
        self.join(15)


def stream_event_ids(settings: Settings) -> set[str]:
    """The event ids of every record in the data dir's stream."""
    stream = open_stream(settings)
    try:
        ids: set[str] = set()
        for info in stream.partitions():
            offset = info.start_offset
            while offset < info.end_offset:
                records = stream.read(info.partition, offset, 5000)
                if not records:
                    break
                ids.update(str(decode_stored(r.value).event_id) for r in records)
                offset = records[-1].offset + 1
        return ids
    finally:
        stream.close()


def views(settings: Settings) -> float:
    """The store's count of today's (UTC) views of vendor ``v1``."""
    store = SQLiteStore(settings.store_path)
    try:
        day = datetime.now(UTC).date().isoformat()
        return float(store.item("VENDOR#v1", f"METRICS#{day}").get("views", 0.0))
    finally:
        store.close()


def processor_child(pid: int) -> psutil.Process:
    """The processor child of `up` (not multiprocessing's resource tracker)."""
    deadline = time.monotonic() + 20
    while True:
        children = [
            c
            for c in psutil.Process(pid).children()
            if "resource_tracker" not in " ".join(c.cmdline())
        ]
        if len(children) == 1:
            return children[0]
        assert time.monotonic() < deadline, f"children of `up`: {children}"
        time.sleep(0.1)


def wait_running(settings: Settings, timeout_s: float = 30.0) -> dict[str, Any]:
    """The processor's status once it reports ``running``."""
    deadline = time.monotonic() + timeout_s
    while (status := read_processor_status(settings)) is None or status["state"] != "running":
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return status


def wait_stopped(proc: subprocess.Popen[bytes], log: Path) -> float:
    """Seconds until ``proc`` exited; fails the test after STOP_DEADLINE_S."""
    started = time.monotonic()
    try:
        proc.wait(STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`up` did not stop within {STOP_DEADLINE_S} s:\n{log.read_text()[-3000:]}")
    return time.monotonic() - started


def assert_nothing_left(tree: list[psutil.Process], pgid: int) -> None:
    """Every process of ``tree`` (taken while `up` ran) and of group ``pgid`` is gone."""
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive, f"still running after `up` stopped: {alive}"
    assert group_members(pgid) == []


def assert_nothing_lost(settings: Settings, acked: set[str]) -> None:
    """Every acknowledged event is in the stream, and processing it now (no `up` runs)
    counts every stored event exactly once."""
    stored = stream_event_ids(settings)
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged events are not in the stream"
    ensure_processed(settings)
    assert views(settings) == len(stored)


@pytest.mark.parametrize(
    "how",
    [
        "sigint-to-up",
        "sigint-to-group",  # Ctrl-C in a terminal
        "sigterm-to-up",
        "sigterm-to-group",  # systemd, Kubernetes
        "sigterm-after-child-sigkill",
    ],
)
def test_up_stops_within_10_s_without_losing_acknowledged_events(tmp_path: Path, how: str):
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    log = tmp_path / "up.log"
    with playpulse_server("up", data, log, env=FAST_RESTART) as (url, proc):
        wait_running(settings)
        child = processor_child(proc.pid)
        sender = Sender(url)
        sender.start()
        try:
            sender.wait_for(200)
            if how == "sigterm-after-child-sigkill":
                child.send_signal(signal.SIGKILL)
                child.wait(10)
                sender.wait_for(len(sender.acked) + 100)
                wait_running(settings)  # started again
            tree = process_tree(proc.pid)
            if how == "sigint-to-up":
                proc.send_signal(signal.SIGINT)
            elif how == "sigint-to-group":
                os.killpg(proc.pid, signal.SIGINT)
            elif how == "sigterm-to-group":
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGTERM)
            wait_stopped(proc, log)
        finally:
            sender.finish()
        assert proc.returncode == (130 if how.startswith("sigint") else 0), log.read_text()
        assert_nothing_left(tree, proc.pid)
    assert sender.errors == []
    text = log.read_text()
    assert "Traceback" not in text, text
    status = read_processor_status(settings)
    assert status is not None
    assert status["state"] == "stopped"
    if how == "sigterm-after-child-sigkill":
        assert "exited with code -9" in text
        assert f"{child.pid} was killed by SIGKILL" in status["last_error"]["message"]
    assert_nothing_lost(settings, sender.acked)


def test_up_with_two_workers_stops_on_sigterm_to_its_group(tmp_path: Path):
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    log = tmp_path / "up.log"
    with playpulse_server("up", data, log, "--workers", "2") as (url, proc):
        wait_running(settings)
        ready = httpx.get(f"{url}/readyz", timeout=5)  # a collector reads the status file
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) >= {"processor", "store", "lake"}
        sender = Sender(url)
        sender.start()
        try:
            sender.wait_for(200)
            tree = process_tree(proc.pid)
            assert len(tree) >= 4  # up, two collectors, the processor
            os.killpg(proc.pid, signal.SIGTERM)
            wait_stopped(proc, log)
        finally:
            sender.finish()
        assert proc.returncode == 0, log.read_text()
        assert_nothing_left(tree, proc.pid)
    assert "Traceback" not in log.read_text()
    assert_nothing_lost(settings, sender.acked)


def test_a_sigkilled_processor_is_started_again_and_reported(tmp_path: Path):
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    with playpulse_server("up", data, tmp_path / "up.log", env=FAST_RESTART) as (url, proc):
        wait_running(settings)
        pipes = pipe_fds(proc.pid)
        child = processor_child(proc.pid)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 20
        while True:  # restarted, running, and /readyz says so
            status = read_processor_status(settings)
            ready = httpx.get(f"{url}/readyz", timeout=5)
            restarted = status and status["pid"] != child.pid and status["state"] == "running"
            if restarted and ready.status_code == 200:
                break
            assert time.monotonic() < deadline, (status, ready.text)
            time.sleep(0.2)
        assert status["state"] == "running"
        assert status["restarts"] == 1
        assert "was killed by SIGKILL" in status["last_error"]["message"]
        assert processor_child(proc.pid).pid == status["pid"]
        # The dead child's pipe was closed, not kept beside the new one's.
        assert pipe_fds(proc.pid) == pipes


def pipe_fds(pid: int) -> int:
    """How many pipes process ``pid`` holds open."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("pipe:")
    return count


def test_a_processor_exits_by_itself_when_up_is_sigkilled(tmp_path: Path):
    data = tmp_path / "data"
    with playpulse_server("up", data, tmp_path / "up.log") as (_, proc):
        wait_running(Settings(data_dir=data))
        child = processor_child(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        child.wait(STOP_DEADLINE_S)  # psutil.TimeoutExpired fails the test
    status = read_processor_status(Settings(data_dir=data))
    assert status is not None
    assert status["state"] == "stopped"  # it said so on its way out


def restart_delays(log: Path) -> list[float]:
    """The delays (s) before each restart of the processor, from the log of `up`."""
    return [
        float(line.rsplit(" in ", 1)[1].split()[0])
        for line in log.read_text().splitlines()
        if "starting it again in" in line
    ]


def corrupt(path: Path) -> None:
    """Overwrite the SQLite header of ``path`` with garbage."""
    with path.open("r+b") as f:
        f.write(b"not a database, garbage " * 4)


def test_a_corrupt_store_fails_readiness_while_the_collector_keeps_every_event(
    tmp_path: Path,
):
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    log = tmp_path / "up.log"
    # A store with data in it, then its header destroyed before `up` starts.
    now = datetime.now(UTC)
    before = [view_event(now) for _ in range(10)]
    stream = open_stream(settings)
    try:
        stream.append([(e["user_id"], validate_event(json.dumps(e), now).payload) for e in before])
    finally:
        stream.close()
    ensure_processed(settings)
    assert views(settings) == 10
    assert settings.store_path.exists()
    corrupt(settings.store_path)
    with playpulse_server("up", data, log, env=FAST_RESTART) as (url, proc):
        deadline = time.monotonic() + 20
        while True:  # the processor fails on the store and says so
            ready = httpx.get(f"{url}/readyz", timeout=5)
            checks = ready.json()["checks"]
            if ready.status_code == 503 and "last error" in checks["processor"].get("problem", ""):
                break
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.2)
        assert "store.db" in checks["store"]["problem"]
        assert "not a database" in checks["store"]["problem"]
        assert "not a database" in checks["processor"]["problem"]
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        # The collector keeps acknowledging, and storing, what it is sent.
        sent: set[str] = set()
        for _ in range(5):
            events = [view_event(datetime.now(UTC)) for _ in range(20)]
            response = httpx.post(f"{url}/v1/events", json=events, timeout=10)
            assert response.status_code == 200, response.text
            assert response.json() == {"accepted": 20, "rejected": []}
            sent.update(e["event_id"] for e in events)
        # Backoff, not a storm: each restart waits twice as long as the one before.
        while len(delays := restart_delays(log)) < 3:
            assert time.monotonic() < deadline + 40, log.read_text()[-3000:]
            time.sleep(0.2)
        assert delays[:3] == [0.5, 1.0, 2.0]
        status = read_processor_status(settings)
        assert status is not None
        assert status["state"] != "running"
        assert 2 <= status["restarts"] <= len(delays)
        tree = process_tree(proc.pid)
        proc.send_signal(signal.SIGTERM)
        wait_stopped(proc, log)
        assert proc.returncode == 0
        assert_nothing_left(tree, proc.pid)
    assert sent <= stream_event_ids(settings)
    # With the store rebuilt from the stream, every acknowledged event is processed.
    settings.store_path.unlink()
    assert_nothing_lost(settings, sent)


def test_status_file_is_json_a_reader_can_use(tmp_path: Path):
    """The documented keys are there while `up` runs (what `playpulse status` shows)."""
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    with playpulse_server("up", data, tmp_path / "up.log") as (url, _):
        deadline = time.monotonic() + 20
        wait_running(settings)
        assert (
            httpx.post(f"{url}/v1/events", json=[view_event(datetime.now(UTC))]).json()["accepted"]
            == 1
        )
        while not (read_processor_status(settings) or {}).get("processed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        status = read_processor_status(settings)
        assert status is not None
        assert set(status) >= {
            "state",
            "pid",
            "started_at",
            "progress_at",
            "offsets",
            "processed",
            "restarts",
            "last_error",
            "updated_at",
        }
        assert status["processed"] == 1
        assert sum(status["offsets"].values()) == 1
        assert datetime.fromisoformat(status["progress_at"]).tzinfo is not None
        json.dumps(status)


def test_a_stuck_processor_is_not_ready_and_up_still_stops(tmp_path: Path):
    """A processor that stops making progress (here: SIGSTOP) while events wait makes
    /readyz answer 503 naming it; it is ready again once it resumes; and `up` stops on
    SIGTERM even while its child is stopped (SIGKILL after the grace period)."""
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    log = tmp_path / "up.log"
    env = {"PLAYPULSE_PROCESSOR_STALL_S": "2"}
    with playpulse_server("up", data, log, env=env) as (url, proc):
        wait_running(settings)
        child = processor_child(proc.pid)
        child.suspend()  # SIGSTOP: alive, holding its place, doing nothing
        events = [view_event(datetime.now(UTC)) for _ in range(30)]
        assert httpx.post(f"{url}/v1/events", json=events, timeout=10).status_code == 200
        deadline = time.monotonic() + 20
        while (ready := httpx.get(f"{url}/readyz", timeout=5)).status_code != 503:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.2)
        problem = ready.json()["checks"]["processor"]["problem"]
        assert "made no progress" in problem
        assert "30 event(s) wait" in problem
        child.resume()
        while (ready := httpx.get(f"{url}/readyz", timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.2)
        child.suspend()
        tree = process_tree(proc.pid)
        proc.send_signal(signal.SIGTERM)
        wait_stopped(proc, log)
        assert proc.returncode == 0
        assert_nothing_left(tree, proc.pid)
    assert "did not stop within" in log.read_text()  # it was killed, and said so
    assert_nothing_lost(settings, {e["event_id"] for e in events})


def test_ctrl_c_while_the_processor_starts_is_no_traceback(tmp_path: Path):
    """Ctrl-C right after `up` answers, while its child still imports: the child leads
    its own process group, so only `up` gets the signal and stops it quietly."""
    data = tmp_path / "data"
    log = tmp_path / "up.log"
    with playpulse_server("up", data, log) as (_, proc):
        tree = process_tree(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        wait_stopped(proc, log)
        assert proc.returncode == 130
        assert_nothing_left(tree, proc.pid)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "starting it again" not in text, text
