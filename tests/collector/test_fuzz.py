"""Property tests: no body, header or encoding makes the collector answer 5xx."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {"event_type": st.sampled_from(["play_start", "heartbeat", "seek", "cart_add", "x"])},
    optional={
        "event_id": st.text(max_size=40) | st.integers(),
        "occurred_at": st.sampled_from(["2026-11-21T10:00:00Z", "2026-11-21T10:00:00", "x"])
        | st.datetimes().map(str),
        "user_id": st.text(max_size=5) | st.none(),
        "playback_id": st.text(max_size=5),
        "content": json_values,
        "position_s": st.floats() | st.integers() | st.text(max_size=3),
        "context": st.dictionaries(
            st.sampled_from(["timezone", "country", "foreground"]), json_values
        ),
    },
)
bodies = (
    st.binary(max_size=2000)
    | st.text(max_size=2000).map(str.encode)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.lists(event_like, max_size=20).map(lambda v: json.dumps(v).encode())
    | st.lists(event_like, min_size=1, max_size=20).map(
        lambda v: "\n".join(json.dumps(e) for e in v).encode()
    )
)


@pytest.fixture(scope="module")
def client(shared_collector: Any) -> Any:
    with httpx.Client(base_url=shared_collector.url, timeout=30) as c:
        yield c


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=bodies,
    gzipped=st.booleans(),
    content_type=st.sampled_from(
        ["application/json", "application/x-ndjson", "text/plain", "application/octet-stream"]
    ),
)
def test_arbitrary_bodies_never_get_a_5xx(client, shared_collector, body, gzipped, content_type):
    headers = {"Content-Type": content_type}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    before = shared_collector.quarantine.count()
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        result = response.json()
        # Every event is either accepted or rejected with a reason, and rejects are kept.
        assert shared_collector.quarantine.count() == before + len(result["rejected"])
        for rejected in result["rejected"]:
            assert rejected["errors"]
            assert all(e["loc"] and e["msg"] for e in rejected["errors"])
    else:
        assert response.json()["error"]["message"]
