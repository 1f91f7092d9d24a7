"""Helpers shared by tests/api and tests/dashboard: demo data near now, a real
``playpulse up`` on 127.0.0.1, and live events posted through ``POST /v1/events``.

``tests`` is not a package (importlib import mode): load this file with
:func:`playpulse.testing.load_module`, as the conftest files do.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.service import ensure_processed
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.stream.factory import open_stream
from playpulse.testing import playpulse_server


def load_demo(
    data_dir: Path, *, users: int = 120, days: float = 4.0, seed: int = 7
) -> dict[str, Any]:
    """Fill ``data_dir`` with simulated traffic of the last ``days`` days and process it.

    Sessions start from ``now - days`` to ``now - 1 h`` (so the dashboard's default
    range, the last 7 days, shows them); events received after now are left out. Returns
    ``{"events": n, "now": now}``.
    """
    now = datetime.now(UTC)
    config = SimulationConfig(
        seed=seed,
        start=now - timedelta(days=days),
        duration=timedelta(days=days) - timedelta(hours=1),
        users=users,
    )
    settings = Settings(data_dir=data_dir)
    stream = open_stream(settings)
    count = 0
    try:
        batch: list[tuple[str, bytes]] = []
        for simulated in simulate(config):
            if simulated.received_at > now:
                continue
            accepted = validate_event(json.dumps(simulated.payload), simulated.received_at)
            batch.append((accepted.event.actor_id, accepted.payload))
            count += 1
            if len(batch) >= 2000:
                stream.append(batch)
                batch = []
        if batch:
            stream.append(batch)
    finally:
        stream.close()
    ensure_processed(settings, timeout_s=120)
    return {"events": count, "now": now}


@contextlib.contextmanager
def running_up(
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    log_path: Path | None = None,
    timeout_s: float = 30.0,
) -> Iterator[str]:
    """``python -m playpulse up`` on 127.0.0.1 and a free port; yields its base URL.

    ``PLAYPULSE_*`` variables of the test environment are dropped, ``env`` added; ``args``
    are extra options of ``up``. Output goes to ``log_path``. The
    process is stopped (SIGTERM, then SIGKILL after 15 s) however the block exits.
    """
    log_path = log_path or data_dir.parent / f"up-{data_dir.name}.log"
    with playpulse_server(
        "up", data_dir, log_path, *args, env=env, startup_timeout_s=timeout_s
    ) as (base, _):
        yield base


def play_start(user_id: str, content: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``play_start`` now, of ``content`` (default: an audiobook), on a phone."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "play_start",
        "occurred_at": now,
        "user_id": user_id,
        "playback_id": f"live-{uuid.uuid4()}",
        "position_s": 0,
        "content": dict(
            content
            or {
                "content_id": "live-book",
                "content_type": "audiobook",
                "title": "The Live Book",
                "creator": "L. Listener",
                "duration_s": 36000,
                "chapter": 1,
            }
        ),
        "context": {"device_type": "mobile", "platform": "ios", "timezone": "Europe/Berlin"},
    }


def post_play_starts(
    base: str, n: int, prefix: str = "live", headers: Mapping[str, str] | None = None
) -> list[str]:
    """POST ``n`` play_start events of ``n`` new listeners; returns their user ids."""
    users = [f"{prefix}-{uuid.uuid4().hex[:8]}" for _ in range(n)]
    response = httpx.post(
        f"{base}/v1/events",
        json=[play_start(u) for u in users],
        headers=dict(headers or {}),
        timeout=10,
    )
    response.raise_for_status()
    assert response.json()["accepted"] == n, response.text
    return users
