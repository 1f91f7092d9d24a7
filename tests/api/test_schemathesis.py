"""Schemathesis against the OpenAPI that `playpulse up` publishes: no operation answers 5xx.

A real `playpulse up` on 127.0.0.1 (a day of simulated traffic of a few listeners, so the
queries have rows) serves ``/openapi.json``; schemathesis generates requests from it, valid
ones and invalid ones (its default modes), for every operation, including
``POST /v1/events`` with the request body the OpenAPI documents. Besides "no 5xx", answers
must match the documented status codes, content types and schemas. Only
``/v1/live/stream`` is left out: without ``max_events`` it streams until the client
leaves (its parameter is tested in test_read_api.py and test_params.py).

Bounded for CI: a fixed number of examples per operation, derandomized (the same
requests on every run), no Hypothesis deadline; about half a minute on 2 cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

#: Examples per operation (the read API's; schemathesis adds its explicit and boundary
#: examples, a few hundred requests per operation in all).
EXAMPLES_PER_OPERATION = 40
#: Examples of ``POST /v1/events``. Its body is the whole event model: the boundary
#: ("coverage") phase alone would send some 12,000 bodies, so it runs only the examples
#: and fuzzing phases.
EVENT_EXAMPLES = 150
#: Operations held to "no 5xx" only; every other one must also answer its documented
#: status codes, content types and response schemas. ``GET /metrics`` is Prometheus text
#: but documented as JSON (FastAPI's default for a route without a response class).
NOT_CONFORMING = {("GET", "/metrics")}


@pytest.fixture(scope="module")
def up_for_schemathesis(
    livedata: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`playpulse up` (no keys) on a day of traffic of 8 listeners; its base URL."""
    root = tmp_path_factory.mktemp("schemathesis")
    livedata.load_demo(root / "data", users=8, days=1.0)
    with livedata.running_up(root / "data", log_path=root / "up.log") as base:
        yield base


def _load(base: str, max_examples: int) -> Any:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=30)
    schema.config.generation.update(max_examples=max_examples, deterministic=True)
    return schema


@pytest.fixture(scope="module")
def published_openapi(up_for_schemathesis: str) -> Any:
    """The OpenAPI of the running server, loaded by schemathesis, every phase on."""
    return _load(up_for_schemathesis, EXAMPLES_PER_OPERATION)


@pytest.fixture(scope="module")
def published_openapi_fuzzing(up_for_schemathesis: str) -> Any:
    """The same, with the examples and fuzzing phases only."""
    schema = _load(up_for_schemathesis, EVENT_EXAMPLES)
    schema.config.phases.update(phases=["examples", "fuzzing"])
    return schema


def _check(case: Any) -> None:
    checks = [not_a_server_error]
    if (case.method.upper(), case.path) not in NOT_CONFORMING:
        checks += [status_code_conformance, content_type_conformance, response_schema_conformance]
    case.call_and_validate(checks=checks, timeout=30)


def _bounded(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


# ``/readyz`` answers 503 on purpose while a dependency is not ready (a processor still
# starting, say): tests/collector/test_readiness.py and tests/service cover it.
every_operation = (
    schemathesis.pytest.from_fixture("published_openapi")
    .exclude(path="/v1/live/stream")
    .exclude(path="/v1/events")
    .exclude(path="/readyz")
)
sending_events = schemathesis.pytest.from_fixture("published_openapi_fuzzing").include(
    path="/v1/events", method="POST"
)


@every_operation.parametrize()
@_bounded(EXAMPLES_PER_OPERATION)
def test_no_operation_answers_a_server_error(case: Any) -> None:
    _check(case)


@sending_events.parametrize()
@_bounded(EVENT_EXAMPLES)
def test_sending_events_never_answers_a_server_error(case: Any) -> None:
    _check(case)


def test_the_published_openapi_documents_every_read_operation(published_openapi: Any) -> None:
    # The runs above cover what the OpenAPI lists: make sure it lists the API.
    paths = set(published_openapi.raw_schema["paths"])
    expected = {"/v1/events", "/v1/metrics", "/v1/metrics/{name}", "/v1/sessions/histogram"}
    assert expected | {"/v1/live", "/v1/schema", "/healthz"} <= paths
