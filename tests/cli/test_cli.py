"""The ``playpulse`` command as a user runs it: a real process, real files, real HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from playpulse.quarantine.store import QuarantineStore, Rejection
from playpulse.testing import playpulse_server, run_cli


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, timeout_s=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "heartbeat",
        "occurred_at": datetime.now(UTC).isoformat(),
        "user_id": "u-1",
        "playback_id": "pb-1",
        "position_s": 12.5,
    }
    base.update(overrides)
    return base


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """``playpulse collect`` with two write keys from the environment; yields url, dir, log."""
    log = tmp_path / "collector.log"
    data_dir = tmp_path / "data"
    env = {"PLAYPULSE_WRITE_KEYS": "sekrit-key-1, sekrit-key-2"}
    with playpulse_server("collect", data_dir, log, "--access-log", env=env) as (url, _):
        yield url, data_dir, log


def test_collect_status_quarantine_and_keys_stay_out_of_logs(collector_process):
    url, data_dir, log = collector_process
    good = [event() for _ in range(5)]
    bad = event(event_type="teleport")
    auth = {"Authorization": "Bearer sekrit-key-2"}
    response = httpx.post(f"{url}/v1/events", json=[*good, bad], headers=auth, timeout=10)
    assert response.json()["accepted"] == 5
    wrong = httpx.post(
        f"{url}/v1/events", json=good, headers={"Authorization": "Bearer sekrit-guess"}
    )
    assert wrong.status_code == 401

    status = run("status", "--data-dir", str(data_dir), "--format", "json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["stream_records"] == 5
    assert info["events_in_lake"] == 0  # no processor ran
    assert info["duplicates_dropped"] is None
    assert info["quarantined"] == 1
    assert sum(p["records"] for p in info["partitions"]) == 5
    assert {p["partition"] for p in info["partitions"]} == set(range(8))
    assert info["consumer_lag"] == {}

    listed = run("--data-dir", str(data_dir), "quarantine", "list", "--format", "json")
    entries = json.loads(listed.stdout)
    assert [e["event_id"] for e in entries] == [bad["event_id"]]
    shown = json.loads(run("--data-dir", str(data_dir), "quarantine", "show", "1").stdout)
    assert json.loads(shown["raw"]) == bad
    assert shown["reason"] == "unknown_event_type"

    text = log.read_text()
    assert "POST /v1/events" in text  # the access log is on, so requests are logged...
    assert "sekrit" not in text  # ...but never a key, right or wrong


def test_status_reports_consumer_lag(tmp_path):
    from playpulse.stream.sqlite import SQLiteStream

    stream = SQLiteStream(tmp_path / "stream.db", num_partitions=8)
    stream.append([(f"user-{i}", b"{}") for i in range(20)])
    consumer = stream.consumer("processor")
    batches = consumer.poll(max_records=1)
    consumer.commit(batches[0])
    stream.close()
    info = json.loads(run("status", "--data-dir", str(tmp_path), "--format", "json").stdout)
    assert info["stream_records"] == 20
    assert info["consumer_lag"]["processor"]["total"] == 19


def test_replay_appends_events_that_now_pass(tmp_path):
    store = QuarantineStore(tmp_path / "quarantine.db")
    fixed = event()
    still_bad = event(event_type="teleport")
    now = datetime.now(UTC)
    store.add(
        [
            # As if an older collector had rejected a now-valid event.
            Rejection(
                json.dumps(fixed).encode(), "invalid_event", [], now, event_id=fixed["event_id"]
            ),
            Rejection(
                json.dumps(still_bad).encode(),
                "invalid_event",
                [],
                now,
                event_id=still_bad["event_id"],
            ),
            Rejection(b"[,", "malformed_body", [], now, "collector"),
        ]
    )
    store.close()
    from playpulse.stream.sqlite import SQLiteStream

    SQLiteStream(tmp_path / "stream.db", num_partitions=8).close()
    result = run("--data-dir", str(tmp_path), "quarantine", "replay", "--all")
    assert result.returncode == 0, result.stderr
    assert "replayed 1, still failing 1, skipped 1" in result.stdout
    info = json.loads(run("status", "--data-dir", str(tmp_path), "--format", "json").stdout)
    assert info["stream_records"] == 1
    assert info["quarantined"] == 2
    reopened = QuarantineStore(tmp_path / "quarantine.db")
    entries = {e.event_id: e for e in reopened.list(status=None)}
    assert entries[fixed["event_id"]].status == "replayed"
    assert entries[still_bad["event_id"]].reason == "unknown_event_type"


def test_schema_prints_the_event_json_schema():
    result = run("schema")
    schema = json.loads(result.stdout)
    assert set(schema["discriminator"]["mapping"]) >= {"play_start", "order_completed"}


def test_errors_are_one_line_without_traceback(tmp_path):
    missing = run("status", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: no playpulse data in")
    assert "Traceback" not in missing.stderr
    bad_port = run("collect", env={"PLAYPULSE_PORT": "not-a-port"})
    assert bad_port.returncode == 2
    assert "port" in bad_port.stderr
    assert "Traceback" not in bad_port.stderr
    unknown = run("quarantine", "show", "99", "--data-dir", str(tmp_path))
    assert unknown.returncode == 2
    assert "no quarantine entry with id 99" in unknown.stderr


def test_two_collector_workers_share_the_port_stream_and_metrics(tmp_path):
    log = tmp_path / "workers.log"
    with playpulse_server("collect", tmp_path / "d", log, "--workers", "2") as (url, _):
        for i in range(40):  # a new connection each time, so both workers take requests
            batch = [event(user_id=f"user-{i}") for _ in range(5)]
            assert httpx.post(f"{url}/v1/events", json=batch, timeout=10).json()["accepted"] == 5
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert "playpulse_events_accepted_total 200.0" in metrics
        info = json.loads(
            run("status", "--data-dir", str(tmp_path / "d"), "--format", "json").stdout
        )
        assert info["stream_records"] == 200
        for p in info["partitions"]:  # offsets stay dense whoever appended
            assert p["records"] == (0 if p["newest_offset"] is None else p["newest_offset"] + 1)
        assert "Started parent process" in log.read_text()


def test_status_shows_a_failing_processor_and_lake_files_set_aside(tmp_path):
    from playpulse.config import Settings
    from playpulse.lake import LakeWriter
    from playpulse.lake.schema import SCHEMAS
    from playpulse.service import write_processor_status
    from playpulse.stream.sqlite import SQLiteStream

    SQLiteStream(tmp_path / "stream.db", num_partitions=8).close()
    settings = Settings(data_dir=tmp_path)
    write_processor_status(
        settings,
        {
            "state": "restarting",
            "restarts": 3,
            "last_error": {"at": "2026-12-04T20:00:00+00:00", "message": "DatabaseError: boom"},
        },
    )
    bad = settings.lake_path / "plays" / "event_date=2026-11-17" / "p0000-o0-9.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not parquet")
    assert LakeWriter(settings.lake_path, SCHEMAS).set_aside(bad, "not a Parquet file")

    info = json.loads(run("status", "--data-dir", str(tmp_path), "--format", "json").stdout)
    assert info["processor"]["state"] == "restarting"
    assert "DatabaseError: boom" in info["processor"]["problem"]
    (aside,) = info["lake_files_set_aside"]
    assert aside["original"] == "plays/event_date=2026-11-17/p0000-o0-9.parquet"
    assert aside["reason"] == "not a Parquet file"

    table = run("status", "--data-dir", str(tmp_path), env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "FAILING" in table.stdout
    assert "DatabaseError: boom" in table.stdout
    assert "plays/event_date=2026-11-17/p0000-o0-9.parquet" in table.stdout
