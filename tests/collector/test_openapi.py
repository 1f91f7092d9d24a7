"""The collector's published OpenAPI: valid, and documents POST /v1/events completely."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.testclient import TestClient

from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.testing import load_module

# events.py, loaded as a module (tests is not a package: importlib import mode)
event = load_module(Path(__file__).with_name("events.py"), "playpulse_tests_collector_events").event


@pytest.fixture
def openapi(collector) -> dict[str, Any]:
    return httpx.get(f"{collector.url}/openapi.json", timeout=10).json()


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for key, value in node.items():
            if key == "mapping" and isinstance(value, dict):  # discriminator mapping
                found.extend(value.values())
            else:
                found.extend(refs(value))
        return found
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_the_openapi_is_valid_and_every_ref_resolves(openapi):
    # Not a declared dev dependency (schemathesis checks the document too, in tests/api).
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(openapi)
    for ref in refs(openapi):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in openapi["components"]["schemas"]


def test_post_events_documents_its_body_and_answers(openapi):
    operation = openapi["paths"]["/v1/events"]["post"]
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/json", "application/x-ndjson", "text/plain"}
    assert content["text/plain"]["schema"]["type"] == "string"
    assert set(operation["responses"]) == {"200", "400", "401", "408", "413", "415", "429", "503"}
    error = {"$ref": "#/components/schemas/Error"}
    for status in ("400", "401", "408", "413", "415", "429", "503"):
        assert operation["responses"][status]["content"]["application/json"]["schema"] == error
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert "/readyz" in openapi["paths"]


def test_the_documented_schemas_describe_what_the_collector_does(collector, openapi):
    """A body the request schema accepts is accepted; answers match their schemas."""
    document = json.loads(json.dumps(openapi))
    components = document["components"]["schemas"]

    def schema_of(ref_or_schema: dict[str, Any]) -> dict[str, Any]:
        return {**ref_or_schema, "components": document["components"]}

    body = [event(), event()]
    request_schema = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    jsonschema.validate(body, schema_of(request_schema["application/json"]["schema"]))
    accepted = collector.post(json.dumps(body))
    assert accepted.status_code == 200
    jsonschema.validate(accepted.json(), schema_of(components["IngestResult"]))
    refused = collector.post(b"[1,")
    assert refused.status_code == 400
    jsonschema.validate(refused.json(), schema_of(components["Error"]))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"event_type": "play_start"}, schema_of(components["Event"]))


def test_the_array_limit_follows_the_setting(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, max_events_per_request=7))) as client:
        document = client.get("/openapi.json").json()
    body = document["paths"]["/v1/events"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["oneOf"][1]["maxItems"] == 7
