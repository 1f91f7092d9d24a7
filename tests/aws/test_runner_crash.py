"""``playpulse aws run-processor`` killed with SIGKILL mid-batch, 10 times, and
restarted, over Kinesis, DynamoDB and S3 on moto in server mode: nothing lost, nothing
counted twice (the catalog answers what the embedded processor answers for the same
records)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.stream.base import EventStream
from playpulse.testing import (
    assert_same_answers,
    catalog_answers,
    embedded_answers,
    read_partition,
)

EVENTS = 2_500
KILLS = 10


def workload() -> list[tuple[str, bytes]]:
    out = []
    for sim in simulate(SimulationConfig(seed=5, max_events=EVENTS)):
        accepted = validate_event(json.dumps(sim.payload), sim.received_at)
        out.append((accepted.event.actor_id, accepted.payload))
    return out


def append_all(stream: EventStream, records: list[tuple[str, bytes]]) -> None:
    for i in range(0, len(records), 500):
        stream.append(records[i : i + 500])


def kill_and_restart(env: dict[str, str], seed: int) -> int:
    """Start the runner, SIGKILL it at random moments ``KILLS`` times, then let it catch
    up; how many kills hit a running process."""
    rng = random.Random(seed)
    command = [sys.executable, "-m", "playpulse", "aws", "run-processor", "--batch-size", "250"]
    hits = 0
    for _ in range(KILLS):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 3.5))  # starting takes ~1 s; then it is mid-batch
        if proc.poll() is None:
            hits += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    done = subprocess.run(
        [*command, "--once"], env=env, capture_output=True, text=True, timeout=600, check=True
    )
    assert " 0 dead-lettered" in done.stdout, done.stdout
    return hits


@pytest.mark.slow
def test_sigkill_ten_times_on_kinesis_dynamodb_and_s3(
    aws_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playpulse.aws.clients import client
    from playpulse.store.dynamodb import create_table
    from playpulse.stream.kinesis import KinesisStream

    name = aws_env.unique("pp-crash")
    stream = KinesisStream(name, create=True, shards=2)
    create_table(name)
    client("s3").create_bucket(Bucket=name)
    records = workload()
    append_all(stream, records)
    # What the stream holds, shard by shard (a user's records keep their order).
    shards = [
        [(r.key, r.value) for r in read_partition(stream, info.partition)]
        for info in stream.partitions()
    ]
    stream.close()
    assert sum(len(shard) for shard in shards) == len(records)
    want = embedded_answers(tmp_path / "embedded", shards)
    urls = {
        "PLAYPULSE_STREAM_URL": f"kinesis://{name}",
        "PLAYPULSE_STORE_URL": f"dynamodb://{name}",
        "PLAYPULSE_LAKE_URL": f"s3://{name}/lake",
        "PLAYPULSE_DATA_DIR": str(tmp_path / "runner"),
    }
    env = {**os.environ, **urls}
    assert kill_and_restart(env, seed=1) == KILLS
    for var, value in urls.items():
        monkeypatch.setenv(var, value)
    assert_same_answers(catalog_answers(Settings()), want)
