"""#17's API items: 415 for a body that is not JSON, the project's error format on 404,
405 and 422, every problem of a rejected event listed, the OpenAPI's request body and a
description for every route. The app is the one ``playpulse up`` serves (collector, read
API, dashboard, SDK, GraphQL), without its processor process: these answers never reach
the processor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from playpulse.api import mount_read_api
from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.dashboard import mount_dashboard
from playpulse.service import mount_extras


def _stored(app: FastAPI) -> int:
    stream = app.state.collector.stream
    return sum(info.end_offset - info.start_offset for info in stream.partitions())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, TestClient]]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("api-errors")) / "data")
    app = create_app(settings)
    mount_dashboard(app, mount_read_api(app, settings))
    mount_extras(app, settings)
    with TestClient(app) as client:
        yield app, client


def _event(n: int | str, **fields: Any) -> dict[str, Any]:
    return {
        "event_type": "heartbeat",
        "event_id": f"err-{n}",
        "occurred_at": "2026-03-01T10:00:00Z",
        "user_id": "u-errors",
        "playback_id": "p-errors",
        "position_s": 5,
        **fields,
    }


def _error_of(response: Any) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert "\n" not in body["error"]["message"]
    error: dict[str, str] = body["error"]
    return error


@pytest.mark.parametrize(
    "content_type",
    ["application/xml", "application/x-www-form-urlencoded", "application/octet-stream",
     "multipart/form-data; boundary=x", "image/png"],
)  # fmt: skip
def test_a_body_that_is_not_json_is_answered_415_and_not_stored(
    served: tuple[FastAPI, TestClient], content_type: str
) -> None:
    app, client = served
    before = (_stored(app), app.state.collector.quarantine.count())
    body = json.dumps([_event(1)])
    response = client.post("/v1/events", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 415
    error = _error_of(response)
    assert error["code"] == "unsupported_media_type"
    assert content_type.split(";")[0] in error["message"]
    assert "application/json" in error["message"]
    assert (_stored(app), app.state.collector.quarantine.count()) == before


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "Application/JSON",
     "application/x-ndjson", "text/plain;charset=UTF-8", "application/vnd.api+json"],
)  # fmt: skip
def test_json_ndjson_text_and_no_content_type_are_read(
    served: tuple[FastAPI, TestClient], content_type: str | None
) -> None:
    app, client = served
    before = _stored(app)
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = json.dumps(_event(f"type-{content_type}"))
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "rejected": []}
    assert _stored(app) == before + 1


def test_404_in_the_project_error_format(served: tuple[FastAPI, TestClient]) -> None:
    _, client = served
    for path in ("/nope", "/v1/nope", "/v1/events/extra"):
        response = client.get(path)
        assert response.status_code == 404
        error = _error_of(response)
        assert error["code"] == "not_found"
        assert f"GET {path}" in error["message"]


def test_405_in_the_project_error_format_with_allow(served: tuple[FastAPI, TestClient]) -> None:
    _, client = served
    for method, path, allowed in (
        ("GET", "/v1/events", "POST"),
        ("PUT", "/v1/events", "POST"),
        ("DELETE", "/v1/metrics", "GET"),
        ("POST", "/healthz", "GET"),
    ):
        response = client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert allowed in response.headers["allow"]
        error = _error_of(response)
        assert error["code"] == "method_not_allowed"
        assert f"{method} is not allowed on {path}" in error["message"]
        assert allowed in error["message"]


def test_every_problem_of_a_rejected_event_is_listed(served: tuple[FastAPI, TestClient]) -> None:
    app, client = served
    bad = {
        "event_type": "play_start",
        "event_id": "err-many",
        "occurred_at": "1999-05-01T10:00:00Z",
        "content": {"content_id": "c1", "duration_s": -4, "chapter": "two"},
        "position_s": "abc",
        "context": {"country": "germany", "foreground": "yes"},
        "colour": "blue",
    }
    response = client.post("/v1/events", json=[_event(2), bad])
    assert response.status_code == 200
    result = response.json()
    assert result["accepted"] == 1
    (rejected,) = result["rejected"]
    assert (rejected["index"], rejected["event_id"]) == (1, "err-many")
    locs = [e["loc"] for e in rejected["errors"]]
    assert locs[0] == "content.duration_s"  # the decoder's first error stays first
    assert set(locs) == {
        "content.duration_s",
        "content.chapter",
        "position_s",
        "context.country",
        "context.foreground",
        "colour",
        "occurred_at",
        "user_id",
    }
    assert len(locs) == len(set(locs))
    messages = {e["loc"]: e["msg"] for e in rejected["errors"]}
    assert messages["occurred_at"] == "occurred_at is before 2000-01-01"
    assert messages["user_id"] == "one of user_id or anonymous_id is required"
    assert "unknown field" in messages["colour"]
    # The quarantine keeps the same list.
    (entry,) = app.state.collector.quarantine.list(limit=1000)[-1:]
    assert entry.event_id == "err-many"
    assert [e["loc"] for e in entry.errors][: len(locs)] == locs


def test_an_event_with_one_problem_lists_one(served: tuple[FastAPI, TestClient]) -> None:
    _, client = served
    response = client.post("/v1/events", json=_event(3, position_s=-1))
    (rejected,) = response.json()["rejected"]
    assert rejected["errors"] == [{"loc": "position_s", "msg": "Expected `float` >= 0.0"}]


def test_the_openapi_documents_the_request_body(served: tuple[FastAPI, TestClient]) -> None:
    _, client = served
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/v1/events"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    event = {"$ref": "#/components/schemas/Event"}
    assert schema["oneOf"][0] == event
    assert schema["oneOf"][1]["items"] == event
    assert "Event" in document["components"]["schemas"]
    assert "PlayStart" in document["components"]["schemas"]
    assert operation["responses"]["415"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


def test_every_route_has_a_summary_and_a_description(served: tuple[FastAPI, TestClient]) -> None:
    _, client = served
    document = client.get("/openapi.json").json()
    missing = []
    for path, operations in document["paths"].items():
        if path == "/graphql":  # strawberry's router: described by its GraphQL schema
            continue
        for method, operation in operations.items():
            if not operation.get("summary") or not operation.get("description"):
                missing.append(f"{method.upper()} {path}")
    assert not missing, missing
