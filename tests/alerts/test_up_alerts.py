"""Alerts through a real ``playpulse up``: invalid events at 20 % fire
``PlaypulseRejectedShareHigh`` at a real webhook receiver on 127.0.0.1; ``up`` restarted
while it fires does not notify it again; valid traffic resolves it, once."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from playpulse.testing import playpulse_server

RULE = "PlaypulseRejectedShareHigh"


class Receiver:
    """Alertmanager-style webhook receiver: every (alertname, status) it was sent."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                for alert in body["alerts"]:
                    receiver.got.append((alert["labels"]["alertname"], alert["status"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, rule: str) -> list[str]:
        return [status for name, status in self.got if name == rule]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()


def _events(n: int, invalid: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    events: list[dict[str, Any]] = [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "product_view",
            "occurred_at": now,
            "user_id": f"u{i % 7}",
            "product_id": "p1",
        }
        for i in range(n - invalid)
    ]
    events += [{"event_type": "product_view", "occurred_at": "not a time"}] * invalid
    return events


def _send_until(url: str, invalid: int, done: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the alert did not change state in time"
        httpx.post(f"{url}/v1/events", json=_events(200, invalid), timeout=10)
        time.sleep(0.25)


def test_rejected_share_fires_resolves_and_stays_quiet_across_a_restart(
    receiver: Receiver, tmp_path: Path
) -> None:
    env = {
        "PLAYPULSE_ALERT_WEBHOOKS": receiver.url,
        "PLAYPULSE_ALERT_FOR_S": "2",
        "PLAYPULSE_ALERT_INTERVAL_S": "0.5",
    }
    data = tmp_path / "data"
    with playpulse_server("up", data, tmp_path / "up.log", env=env) as (url, _):
        _send_until(url, 40, lambda: receiver.of(RULE) == ["firing"])
    # Restarted while the alert fires: it is still firing, and says so to nobody again.
    with playpulse_server("up", data, tmp_path / "up2.log", env=env) as (url, _):
        for _ in range(16):  # 4 s of the same traffic: eight evaluations
            httpx.post(f"{url}/v1/events", json=_events(200, 40), timeout=10)
            time.sleep(0.25)
        assert receiver.of(RULE) == ["firing"]
        # The dashboard's banner data lists it.
        banner = httpx.get(f"{url}/dashboard/readiness", timeout=10).json()
        assert RULE in [alert["name"] for alert in banner["alerts"]]
        _send_until(url, 0, lambda: receiver.of(RULE) == ["firing", "resolved"])
        time.sleep(1.5)
    assert receiver.of(RULE) == ["firing", "resolved"]
