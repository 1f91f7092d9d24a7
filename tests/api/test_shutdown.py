"""An open live stream does not hold `playpulse up` back when it is asked to stop."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from types import ModuleType

import httpx


def test_stop_ends_open_live_streams_at_once(livedata: ModuleType, tmp_path: Path):
    log = tmp_path / "up.log"
    with contextlib.ExitStack() as outer:
        client = outer.enter_context(httpx.Client(timeout=10))
        with livedata.running_up(tmp_path / "data", log_path=log) as base:
            response = outer.enter_context(client.stream("GET", f"{base}/v1/live/stream"))
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            asked = time.monotonic()
        # Leaving the block sent SIGTERM and waited for the process to exit.
        took = time.monotonic() - asked
        rest = list(lines)  # the server ended the stream cleanly
        assert all(not line or line.startswith(("event:", "id:", "data:")) for line in rest)
    text = log.read_text()
    assert "graceful shutdown exceeded" not in text, text
    assert "Application shutdown complete" in text
    assert took < 4.5, f"stopping took {took:.1f} s with a live stream open"
