"""The client against the real collector (``playpulse collect`` in a subprocess)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from playpulse.client import Client, ClientOptions, ClientStats

try:
    from playpulse.collector import create_app  # noqa: F401
except Exception:  # the collector is not there (yet)
    pytest.skip("playpulse.collector.create_app does not import", allow_module_level=True)

from playpulse.stream import SQLiteStream

WRITE_KEY = "k1"
START_DEADLINE_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A running collector: its base URL and its data dir."""
    data_dir = tmp_path_factory.mktemp("collector")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir / "collector.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "playpulse", "collect",
                "--host", "127.0.0.1", "--port", str(port),
                "--data-dir", str(data_dir), "--write-key", WRITE_KEY,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + START_DEADLINE_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"collector exited with {proc.returncode}:\n{log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"collector not healthy after {START_DEADLINE_S} s:\n{log_path.read_text()}"
                    )
                time.sleep(0.1)
            yield url, data_dir
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _stored_event_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:  # open it the way the collector made it
        (num_partitions,) = conn.execute(
            "SELECT num_partitions FROM stream_meta WHERE name = 'events'"
        ).fetchone()
    conn.close()
    stream = SQLiteStream(db, num_partitions=num_partitions)
    try:
        ids = []
        for info in stream.partitions():
            offset = info.start_offset
            while records := stream.read(info.partition, offset, 1000):
                ids += [json.loads(r.value)["event_id"] for r in records]
                offset = records[-1].offset + 1
        return ids
    finally:
        stream.close()


def test_2000_events_reach_the_stream(collector: tuple[str, Path], errors: Any) -> None:
    url, data_dir = collector
    options = ClientOptions(batch_size=300, flush_interval_s=0.2, max_retry_time_s=30)
    client = Client(url, WRITE_KEY, options=options, on_error=errors)
    sent = []
    try:
        for i in range(1000):
            sent.append(
                client.heartbeat(
                    user_id=f"user-{i % 37}",
                    playback_id=f"pb-{i % 11}",
                    content={"content_id": "book-1", "content_type": "audiobook"},
                    position_s=float(i),
                    context={"device_type": "mobile", "timezone": "Europe/Berlin"},
                )
            )
            sent.append(
                client.cart_add(
                    anonymous_id=f"anon-{i}",
                    product_id=f"prod-{i % 5}",
                    amount_minor=1999,
                    currency="EUR",
                    properties={"i": i},
                )
            )
    finally:
        client.close(timeout_s=60)
    assert errors.items == []
    assert client.stats == ClientStats(sent=2000, accepted=2000)
    stored = _stored_event_ids(data_dir / "stream.db")
    assert set(sent) <= set(stored)


def test_the_real_collector_rejects_invalid_events_and_wrong_keys(
    collector: tuple[str, Path], errors: Any
) -> None:
    url, _ = collector
    with Client(url, WRITE_KEY, on_error=errors) as client:
        good = client.pause(user_id="u", playback_id="p", position_s=1.0)
        bad = client.pause(user_id="u", playback_id="p", position_s=-5.0)  # checked remotely
        assert client.flush(30) is True  # a rejection is definitive
    assert client.stats == ClientStats(sent=2, accepted=1, rejected=1)
    (error,) = errors.items
    assert (error.reason, error.event_ids) == ("rejected", (bad,))
    assert error.rejections[0]["errors"][0]["loc"] == "position_s"
    assert good not in error.event_ids

    with Client(url, "wrong-key", on_error=errors) as client:
        client.pause(user_id="u", playback_id="p")
        assert client.flush(30) is False
    assert errors.items[-1].reason == "unauthorized"
    assert errors.items[-1].status == 401
