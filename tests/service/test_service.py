"""One processor per data dir: `playpulse up`, `process` and imports cooperate."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.service import ensure_processed, processor_lock
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.factory import open_stream
from playpulse.testing import playpulse_server


def append_views(settings: Settings, n: int) -> dict[int, int]:
    now = datetime.now(UTC)
    stream = open_stream(settings)
    try:
        records = []
        for i in range(n):
            raw = {
                "event_id": str(uuid.uuid4()),
                "event_type": "product_view",
                "occurred_at": now.isoformat(),
                "user_id": f"u{i}",
                "product_id": "sku-1",
                "vendor_id": "v1",
            }
            accepted = validate_event(json.dumps(raw), now)
            records.append((accepted.event.actor_id, accepted.payload))
        stream.append(records)
        return {p.partition: p.end_offset for p in stream.partitions()}
    finally:
        stream.close()


def views(settings: Settings) -> float:
    """Vendor v1's product views over every day (the views may straddle midnight UTC)."""
    store = SQLiteStore(settings.store_path)
    try:
        return sum(attrs.get("views", 0.0) for _, attrs in store.items("VENDOR#v1", "METRICS#"))
    finally:
        store.close()


def test_without_a_running_processor_ensure_processed_processes_here(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    append_views(settings, 30)
    stats = ensure_processed(settings)
    assert stats is not None
    assert stats.processed == 30
    assert views(settings) == 30


def test_with_playpulse_up_running_it_waits_for_that_processor(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    with playpulse_server("up", tmp_path, tmp_path / "up.log"):
        with processor_lock(settings) as mine:
            assert not mine  # `up` holds it
        targets = append_views(settings, 40)  # as `playpulse import` appends
        assert ensure_processed(settings, targets, timeout_s=30) is None
        assert views(settings) == 40
        second = subprocess.run(
            [sys.executable, "-m", "playpulse", "process", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 0, second.stderr
        assert "the running processor has caught up" in second.stdout
    with processor_lock(settings) as mine:
        assert mine  # released when `up` exited


def test_the_processor_runs_in_its_own_process_and_dies_with_playpulse_up(tmp_path: Path):
    """`up` runs the processor in a child process (no shared interpreter lock with the
    collector); killed with SIGKILL, `up` leaves no processor working without the lock."""
    import signal

    import psutil

    settings = Settings(data_dir=tmp_path)
    with playpulse_server("up", tmp_path, tmp_path / "up.log") as (_, proc):
        children = psutil.Process(proc.pid).children()
        assert len(children) >= 1
        targets = append_views(settings, 25)
        assert ensure_processed(settings, targets, timeout_s=30) is None  # the child did it
        assert views(settings) == 25
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"still running after the parent died: {alive}"
    with processor_lock(settings) as mine:
        assert mine
    append_views(settings, 5)
    stats = ensure_processed(settings)  # processes here; nothing lost or counted twice
    assert stats is not None
    assert views(settings) == 30


def test_playpulse_up_starts_a_processor_that_died_again(tmp_path: Path):
    import signal

    import psutil

    settings = Settings(data_dir=tmp_path)
    log = tmp_path / "up.log"
    with playpulse_server("up", tmp_path, log) as (_, proc):
        targets = append_views(settings, 10)
        assert ensure_processed(settings, targets, timeout_s=30) is None
        (child,) = [
            c
            for c in psutil.Process(proc.pid).children()
            if "resource_tracker" not in " ".join(c.cmdline())
        ]
        child.send_signal(signal.SIGKILL)  # as the OOM killer would
        child.wait(10)
        targets = append_views(settings, 15)
        # Only a processor started again by `up` can get there: `up` holds the lock.
        assert ensure_processed(settings, targets, timeout_s=30) is None
        assert views(settings) == 25
    assert "the processor process exited with code -9; starting it again" in log.read_text()
