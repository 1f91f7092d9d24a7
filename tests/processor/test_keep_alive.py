"""The processor's runtime keeps the store's states alive while it is idle: DynamoDB's
state packs expire 10 days after their batch unless a later apply carries them forward,
so a deployment that gets no event for 8 days would lose its open plays and sessions.
On moto in server mode, with a store that carries every state however young."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from playpulse.aws.clients import client
from playpulse.events.codec import validate_event
from playpulse.processor.pipeline import Processor
from playpulse.quarantine.store import QuarantineStore
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.store.dynamodb import DynamoDBStore, create_table
from playpulse.stream.memory import MemoryStream


def keep_alive_commits(table: str) -> int:
    """The commit items the keep-alive wrote (its batch ids say ``keepalive``)."""
    items = client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "~pp#SCOMMIT"}},
    )["Items"]
    return sum("keepalive" in item["sk"]["S"] for item in items)


def test_an_idle_processor_carries_the_stores_states_forward(aws_env: Any, tmp_path: Path) -> None:
    table = aws_env.unique("pp-idle")
    create_table(table)
    stream = MemoryStream(num_partitions=2)
    for sim in simulate(SimulationConfig(seed=3, max_events=300)):
        accepted = validate_event(json.dumps(sim.payload), sim.received_at)
        stream.append([(accepted.event.actor_id, accepted.payload)])
    store = DynamoDBStore(table, carry_age=timedelta(0))
    quarantine = QuarantineStore(tmp_path / "q.db")
    processor = Processor(stream, store, None, quarantine)
    stop = threading.Event()
    worker = threading.Thread(target=processor.run, args=(stop,))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while keep_alive_commits(table) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(30)
        processor.close()
        quarantine.close()
    assert not worker.is_alive()
    assert keep_alive_commits(table) == 1  # once when first idle, then hourly
    live = store.state_keys("")
    assert live  # open plays and sessions: what the keep-alive carried
    assert DynamoDBStore(table).state_keys("") == live
