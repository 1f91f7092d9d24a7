"""`playpulse status` shows the quarantine's size, cap and drops, and records lost to the
stream's size limit (table and JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from typer.testing import CliRunner

from playpulse.cli import app
from playpulse.config import Settings
from playpulse.quarantine import Rejection, open_quarantine
from playpulse.stream.factory import open_stream

MiB = 1024 * 1024


def make_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYPULSE_QUARANTINE_MAX_BYTES", str(MiB))
    monkeypatch.setenv("PLAYPULSE_STREAM_MAX_BYTES", "0")
    settings = Settings(data_dir=tmp_path)
    with open_stream(settings) as stream:
        stream.append([(f"user-{i}", b"{}") for i in range(7)])
        for p in range(stream.num_partitions):
            stream.commit("processor", p, 0)
        stream.enforce_retention(datetime.now(UTC))  # over 0 bytes: all 7 are lost
    with open_quarantine(settings) as quarantine:
        now = datetime.now(UTC)
        for _ in range(30):
            quarantine.add([Rejection(b"z" * 64 * 1024, "malformed_body", [], now)])


def test_status_json_has_the_quarantine_bounds_and_lost_records(tmp_path, monkeypatch):
    make_data_dir(tmp_path, monkeypatch)

    result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path), "--format", "json"])

    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    q = info["quarantine"]
    assert q["max_bytes"] == MiB
    assert 0 < q["stored_bytes"] <= MiB
    assert q["entries"] == info["quarantined"] == 30 - q["dropped"]
    assert q["dropped"] > 10
    assert q["dropped_by_reason"] == {"malformed_body": q["dropped"]}
    assert q["retention_days"] == 30
    assert info["lost_records"]["processor"]["total"] == 7
    assert info["consumer_lag"]["processor"]["total"] == 7
    assert info["stream_max_bytes"] == 0


def test_status_table_says_what_was_dropped_and_lost(tmp_path, monkeypatch):
    make_data_dir(tmp_path, monkeypatch)

    result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert "of 1.0 MiB" in result.output
    assert "dropped before replay" in result.output
    assert "malformed_body" in result.output
    assert "consumer group processor: lag 7, LOST 7 records" in result.output
