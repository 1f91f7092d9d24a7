"""Property tests: no body, header or encoding makes the collector answer 5xx, and what it
acknowledges is exactly what it stored.

Against one real collector on 127.0.0.1 (SQLite stream and quarantine in a temporary
folder) for the whole module.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck, given, note, settings
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
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
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
    # Not a JSON, NDJSON or text type: refused before the body is read (#17).
    expected = (415,) if content_type == "application/octet-stream" else (200, 400)
    assert response.status_code in expected, response.text
    if response.status_code == 200:
        result = response.json()
        # Every event is either accepted or rejected with a reason, and rejects are kept.
        assert shared_collector.quarantine.count() == before + len(result["rejected"])
        for rejected in result["rejected"]:
            assert rejected["errors"]
            assert all(e["loc"] and e["msg"] for e in rejected["errors"])
    else:
        assert response.json()["error"]["message"]


# Bodies of events whose fate is known: each item is valid (must be stored exactly once)
# or invalid in a known way (must be rejected and quarantined), framed as an array,
# NDJSON or one object, gzip-compressed in one or more members, maybe with bytes after.


@dataclass(frozen=True)
class Item:
    """One event's JSON text and whether the collector must accept it."""

    text: bytes
    valid: bool
    event_id: str
    kind: str


def _valid_event(event_id: str, user: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "play_start",
        "occurred_at": "2026-11-21T08:00:00Z",
        "user_id": user,
        "playback_id": "pb-1",
        "content": {"content_id": "book-42", "content_type": "audiobook"},
        "properties": {"chapter": [1, 2, {"title": "x"}]},
    }


def _with(event: dict[str, Any], field: str, raw_json: str) -> bytes:
    """``event`` as JSON with ``field`` set to ``raw_json`` verbatim (which json.dumps
    cannot write: huge numbers, deep nesting)."""
    return (json.dumps(event)[:-1] + f', "{field}": {raw_json}}}').encode()


@st.composite
def items(draw: st.DrawFn) -> Item:
    event_id = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    event = _valid_event(event_id, draw(st.sampled_from(["u1", "u2", "listener-7", "ü"])))
    kind = draw(
        st.sampled_from(
            ["valid"] * 5
            + ["unknown_type", "missing_field", "deep", "very_deep", "huge_int", "huge_float"]
            + ["bad_utf8", "malformed"]
        )
    )
    if kind == "valid":
        depth = draw(st.integers(0, 29))  # with the event and properties: at most 32 levels
        if depth:
            event["properties"] = {"x": json.loads("[" * depth + "]" * depth)}
        return Item(json.dumps(event).encode(), True, event_id, kind)
    del event["properties"]
    if kind == "unknown_type":
        text = json.dumps(event | {"event_type": "telepathy"}).encode()
    elif kind == "missing_field":
        del event[draw(st.sampled_from(["occurred_at", "event_type", "user_id"]))]
        text = json.dumps(event).encode()
    elif kind in ("deep", "very_deep"):
        depth = draw(st.integers(32, 60) if kind == "deep" else st.integers(900, 3000))
        text = _with(event, "properties", '{"x": ' + "[" * depth + "]" * depth + "}")
    elif kind == "huge_int":
        # Python reads integers of up to 4300 digits (accepted in properties), not more.
        text = _with(event, "properties", '{"n": ' + "9" * draw(st.integers(4301, 7000)) + "}")
    elif kind == "huge_float":
        text = _with(event, "position_s", "1e" + "9" * draw(st.integers(3, 400)))
    elif kind == "bad_utf8":
        text = json.dumps(event | {"user_id": "ZZZ"}).encode().replace(b"ZZZ", b"\xff\xfe")
    else:  # malformed: cut short
        whole = json.dumps(event).encode()
        text = whole[: draw(st.integers(1, len(whole) - 1))]
    return Item(text, False, event_id, kind)


def _gzip_members(draw: st.DrawFn, data: bytes) -> bytes:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return b"".join(gzip.compress(piece) for piece in pieces)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], list[Item], str, bool]:
    frame = draw(st.sampled_from(["array", "ndjson", "object"]))
    count = 1 if frame == "object" else draw(st.integers(1 if frame == "ndjson" else 0, 12))
    events = draw(st.lists(items(), min_size=count, max_size=count))
    if frame == "array":
        body = b"[" + b",".join(item.text for item in events) + b"]"
    elif frame == "ndjson":
        body = b"".join(item.text + b"\n" for item in events)
    else:
        body = events[0].text
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "application/x-ndjson"]))}
    trailing = False
    if draw(st.booleans()):
        body = _gzip_members(draw, body)
        headers["Content-Encoding"] = "gzip"
        if draw(st.integers(0, 4)) == 0:
            body += draw(st.binary(min_size=1, max_size=20))
            trailing = True
    return body, headers, events, frame, trailing


def _may_refuse_the_body(events: list[Item], frame: str) -> bool:
    """Whether the body as a whole may be refused (400) instead of event by event."""
    if frame == "ndjson" and len(events) == 1:
        frame = "object"  # one line is one object
    if frame == "array":  # a malformed element, or too deep to split the array
        return any(item.kind in ("malformed", "very_deep") for item in events)
    if frame == "object":
        return events[0].kind in ("malformed", "bad_utf8")
    return False


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=requests())
def test_acknowledged_events_are_stored_exactly_once_and_rejects_are_kept(
    client, shared_collector, request
):
    body, headers, events, frame, trailing = request
    stream, quarantine = shared_collector.stream, shared_collector.quarantine
    ends = {info.partition: info.end_offset for info in stream.partitions()}
    quarantined_before = quarantine.count()

    response = client.post("/v1/events", content=body, headers=headers)

    note(f"{frame} {[item.kind for item in events]} {body[:300]!r} -> {response.text[:500]}")
    hypothesis.event(f"{response.status_code}{' after trailing bytes' if trailing else ''}")
    assert response.status_code < 500, response.text
    new_ids = Counter(
        json.loads(record.value)["event_id"]
        for partition, end in ends.items()
        for record in stream.read(partition, end, 100_000)
    )
    quarantined = quarantine.count() - quarantined_before
    if response.status_code == 400:
        assert trailing or _may_refuse_the_body(events, frame), response.text
        assert new_ids == Counter()
        assert quarantined == 1  # the body, with the reason
        return
    assert not trailing, "bytes after the gzip stream must refuse the body"
    assert response.status_code == 200, response.text
    result = response.json()
    valid = [item.event_id for item in events if item.valid]
    assert result["accepted"] == len(valid)
    assert new_ids == Counter(valid)  # every acknowledged event, exactly once
    assert [r["index"] for r in result["rejected"]] == [
        index for index, item in enumerate(events) if not item.valid
    ]
    assert quarantined == len(result["rejected"])
    for rejected in result["rejected"]:
        assert all(error["loc"] and error["msg"] for error in rejected["errors"])
