"""playpulse on AWS end to end, on moto in server mode: deploy the stack, send the
processor reference's simulated events through the Lambda collector handler (API Gateway
HTTP API events) into Kinesis, run the Lambda processor handler through
``playpulse aws run-processor``'s runner, and every catalog query over ``kinesis://`` +
``dynamodb://`` + ``s3://`` answers exactly what the embedded default answers for the
same records (read back from Kinesis and processed by the embedded processor)."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from playpulse.aws.collector_handler import CollectorHandler
from playpulse.aws.deploy import deploy, export_lines
from playpulse.aws.package import build_package
from playpulse.aws.processor_handler import from_settings
from playpulse.aws.quarantine import lambda_settings
from playpulse.aws.runner import EventSourceRunner, MappingOptions
from playpulse.aws.template import StackOptions
from playpulse.config import Settings
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.testing import (
    assert_same_answers,
    catalog_answers,
    embedded_answers,
    read_partition,
)

#: The processor reference's seed and, with ``PLAYPULSE_E2E_EVENTS=200000``, its whole
#: workload: that run passes in about 11 minutes (moto answers each DynamoDB request in
#: milliseconds, and its Query sorts the whole table), too long for the suite's budget,
#: which runs the same seed's first 10,000 events.
SEED = 7
EVENTS = int(os.environ.get("PLAYPULSE_E2E_EVENTS", "10000"))
BATCH_SIZE = 500


def http_api_event(body: str) -> dict[str, Any]:
    """An API Gateway HTTP API event (payload format 2.0) posting ``body``."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v1/events",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "api.example"},
        "requestContext": {
            "http": {"method": "POST", "path": "/v1/events", "sourceIp": "192.0.2.1"},
            "requestId": "e2e",
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": False,
    }


@dataclass
class Deployed:
    env: dict[str, str]
    settings: Settings
    sent: int
    accepted: int


@pytest.fixture(scope="module")
def deployed(moto_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in moto_server.env.items():
            mp.setenv(name, value)
        package = build_package(root / "lambda.zip", no_deps=True).path
        result = deploy(
            moto_server.unique("pp-e2e"),
            package,
            options=StackOptions(batch_size=BATCH_SIZE, shard_count=2),
            artifacts_bucket=moto_server.unique("pp-artifacts"),
            poll_s=0.1,
        )
        urls = {}
        for line in export_lines(result.outputs).splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                urls[name] = shlex.split(value)[0]
        for name, value in urls.items():
            mp.setenv(name, value)
        mp.setenv("PLAYPULSE_DATA_DIR", str(root / "lambda-tmp"))
        # The collector: every simulated event, 500 a request, as a client sends them.
        collector = CollectorHandler(lambda_settings())
        sent = accepted = 0
        batch: list[dict[str, Any]] = []
        for sim in simulate(SimulationConfig(seed=SEED, max_events=EVENTS)):
            batch.append(sim.payload)
            if len(batch) == 500:
                accepted += _post(collector, batch)
                sent += len(batch)
                batch = []
        if batch:
            accepted += _post(collector, batch)
            sent += len(batch)
        collector.close()
        yield Deployed(dict(os.environ), lambda_settings(), sent, accepted)


def _post(collector: CollectorHandler, events: list[dict[str, Any]]) -> int:
    response = collector(http_api_event(json.dumps(events)))
    assert response["statusCode"] in (200, 207), response
    return int(json.loads(response["body"])["accepted"])


@pytest.fixture(scope="module")
def processed(deployed: Deployed) -> dict[str, Any]:
    """The Lambda processor over the stack, driven by the runner until caught up."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in deployed.env.items():
            mp.setenv(name, value)
        handler = from_settings(lambda_settings())
        runner = EventSourceRunner(
            handler.stream, handler, MappingOptions(batch_size=BATCH_SIZE, max_retries=2)
        )
        stats = runner.run_once()
        return {"stats": stats, "handler": handler}


def stack_answers(root: Path, deployed: Deployed) -> dict[str, list[dict[str, Any]]]:
    """The embedded default's answers for the records the stack's stream holds (read
    back from Kinesis: each shard's records, in order, in a partition of their own)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in deployed.env.items():
            mp.setenv(name, value)
        from playpulse.stream.factory import open_stream

        kinesis = open_stream(deployed.settings)
        shards = [
            [(r.key, r.value) for r in read_partition(kinesis, info.partition)]
            for info in kinesis.partitions()
        ]
        kinesis.close()
    return embedded_answers(root, shards)


def test_the_collector_handler_stored_every_valid_event(deployed: Deployed) -> None:
    assert deployed.sent == EVENTS
    # The simulator's faults (invalid events) are rejected; every other one is stored.
    assert 0.9 * EVENTS < deployed.accepted <= EVENTS


def test_every_record_reached_the_processor_once(deployed: Deployed, processed: Any) -> None:
    stats = processed["stats"]
    assert stats.records == deployed.accepted
    assert stats.dead_lettered == 0
    assert stats.failed_invocations == 0


def test_every_catalog_query_on_aws_equals_the_embedded_default(
    deployed: Deployed, processed: Any, tmp_path: Path
) -> None:
    want = stack_answers(tmp_path / "embedded", deployed)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in deployed.env.items():
            mp.setenv(name, value)
        got = catalog_answers(deployed.settings)
    assert_same_answers(got, want)
    assert sum(len(rows) for rows in want.values()) > 100  # the answers are not empty
