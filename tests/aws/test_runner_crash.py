"""``playpulse aws run-processor`` killed with SIGKILL mid-batch, 10 times, and
restarted: nothing lost, nothing counted twice (the catalog answers what the embedded
processor answers for the same events)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor.pipeline import Processor
from playpulse.quarantine.store import QuarantineStore
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.base import EventStream
from playpulse.stream.sqlite import SQLiteStream
from playpulse.testing import assert_same_answers, catalog_answers

EVENTS = 20_000
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


def embedded_answers(root: Path, records: list[tuple[str, bytes]]) -> dict[str, list[dict]]:
    settings = Settings(data_dir=root)
    root.mkdir()
    stream = SQLiteStream(settings.stream_path, num_partitions=4)
    store = SQLiteStore(settings.store_path)
    quarantine = QuarantineStore(settings.quarantine_path)
    append_all(stream, records)
    lake = LakeWriter(settings.lake_path, SCHEMAS)
    Processor(stream, store, lake, quarantine).process_available()
    for closable in (stream, store, quarantine):
        closable.close()
    return catalog_answers(settings)


def kill_and_restart(env: dict[str, str], seed: int) -> int:
    """Start the runner, SIGKILL it at random moments ``KILLS`` times, then let it catch
    up; how many kills hit a running process."""
    rng = random.Random(seed)
    command = [sys.executable, "-m", "playpulse", "aws", "run-processor", "--batch-size", "100"]
    hits = 0
    for _ in range(KILLS):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 2.0))  # starting takes ~0.7 s; then it is mid-batch
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
def test_sigkill_ten_times_on_the_embedded_backends(tmp_path: Path) -> None:
    records = workload()
    want = embedded_answers(tmp_path / "embedded", records)
    root = tmp_path / "lambda"
    root.mkdir()
    stream = SQLiteStream(root / "stream.db", num_partitions=4)
    append_all(stream, records)
    stream.close()
    env = {**os.environ, "PLAYPULSE_DATA_DIR": str(root), "PLAYPULSE_NUM_PARTITIONS": "4"}
    assert kill_and_restart(env, seed=1) == KILLS
    assert_same_answers(catalog_answers(Settings(data_dir=root)), want)
