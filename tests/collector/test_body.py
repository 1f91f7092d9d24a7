"""Bodies are read completely or refused: gzip members, trailing bytes, nesting depth,
odd numbers and bytes, and bounded quarantine entries; against a real collector."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from playpulse.collector.app import QUARANTINE_RAW_BYTES
from playpulse.collector.body import MAX_EVENT_DEPTH, gunzip, nesting_exceeds
from playpulse.errors import BodyError
from playpulse.testing import load_module

# events.py, loaded as a module (tests is not a package: importlib import mode)
event = load_module(Path(__file__).with_name("events.py"), "playpulse_tests_collector_events").event


def nested(levels: int) -> Any:
    """A value ``levels`` deep: lists inside lists, the innermost one empty."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def with_depth(depth: int) -> dict[str, Any]:
    """An event that nests exactly ``depth`` levels (itself 1, properties 2)."""
    return event(properties={"x": nested(depth - 2)})


def ndjson(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


GZIP = {"Content-Encoding": "gzip"}


# gzip


def test_every_gzip_member_is_read(collector):
    events = [event() for _ in range(3)]
    body = b"".join(gzip.compress(ndjson(e)) for e in events)
    response = collector.post(body, headers=GZIP | {"Content-Type": "application/x-ndjson"})
    assert response.json() == {"accepted": 3, "rejected": []}
    assert sorted(collector.stored_event_ids()) == sorted(e["event_id"] for e in events)


def test_a_json_array_split_across_gzip_members_is_one_body(collector):
    text = json.dumps([event(), event()]).encode()
    body = gzip.compress(text[:10]) + gzip.compress(text[10:])
    assert collector.post(body, headers=GZIP).json()["accepted"] == 2


def test_many_small_gzip_members_are_read():
    data = gzip.compress(b"a") * 20_000
    assert gunzip(data, 1_000_000) == b"a" * 20_000


def test_bytes_after_the_gzip_stream_are_a_400_and_nothing_is_stored(collector):
    body = gzip.compress(ndjson(event())) + b"\x00\x00garbage"
    response = collector.post(body, headers=GZIP)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "malformed_body"
    assert f"from byte {len(body) - 9}" in error["message"]
    assert collector.stored_event_ids() == []
    [entry] = collector.quarantine.list()
    assert entry.raw == body  # small: kept compressed, as received
    assert "gzip" in entry.errors[-1]["msg"]


def test_a_truncated_second_member_is_a_400(collector):
    second = gzip.compress(ndjson(event()))
    body = gzip.compress(ndjson(event())) + second[:-5]
    response = collector.post(body, headers=GZIP)
    assert response.status_code == 400
    assert "truncated" in response.json()["error"]["message"]
    assert collector.stored_event_ids() == []


def test_members_inflating_past_the_limit_together_are_a_413(collector):
    member = gzip.compress(b" " * (3 * 1024 * 1024))
    response = collector.post(member + member, headers=GZIP)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_gunzip_errors_say_where():
    with pytest.raises(BodyError, match="member at byte 0 is truncated"):
        gunzip(b"", 100)
    with pytest.raises(BodyError, match="not valid gzip in the member at byte 21"):
        gunzip(gzip.compress(b"a") + b"\x1f\x8bnot gzip", 100)


# nesting depth


def reference_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), children, max_size=3)
    ),
    max_leaves=60,
)


@given(value=json_values, limit=st.integers(0, 12))
@example(value="[", limit=0)  # brackets only inside a string, with no peeling left
@example(value={"a": "{[", "b": []}, limit=1)
def test_nesting_exceeds_is_exact_for_valid_json(value, limit):
    document = json.dumps(value).encode()
    assert nesting_exceeds(document, limit) == (reference_depth(value) > limit)


def test_an_event_at_the_depth_limit_is_accepted_one_deeper_is_rejected(collector):
    at_limit, deeper = with_depth(MAX_EVENT_DEPTH), with_depth(MAX_EVENT_DEPTH + 1)
    response = collector.post(json.dumps([at_limit, deeper]))
    body = response.json()
    assert body["accepted"] == 1
    [rejected] = body["rejected"]
    assert rejected["index"] == 1
    assert rejected["event_id"] == deeper["event_id"]
    assert f"more than {MAX_EVENT_DEPTH} levels" in rejected["errors"][0]["msg"]
    assert collector.stored_event_ids() == [at_limit["event_id"]]
    [entry] = collector.quarantine.list()
    assert entry.reason == "nesting_too_deep"


@pytest.mark.parametrize("depth", [100, 900, 985, 995, 3000])
@pytest.mark.parametrize("shape", ["array", "ndjson", "object"])
def test_deep_events_never_fail_the_request(collector, depth, shape):
    good = event()
    deep = event(event_id=f"deep-{depth}")
    text = json.dumps(deep)[:-1] + ', "properties": {"x": ' + "[" * depth + "]" * depth + "}}"
    body = {
        "array": f"[{json.dumps(good)}, {text}]",
        "ndjson": f"{json.dumps(good)}\n{text}\n",
        "object": text,
    }[shape].encode()
    response = collector.post(body)
    assert response.status_code in (200, 400), response.text
    stored = collector.stored_event_ids()
    assert deep["event_id"] not in stored
    entries = collector.quarantine.list()
    if response.status_code == 400:  # too deep to split the array: the body is refused
        assert shape == "array"
        assert response.json()["error"]["code"] == "nesting_too_deep"
        assert stored == []
        assert [e.reason for e in entries] == ["nesting_too_deep"]
    else:
        assert stored == ([] if shape == "object" else [good["event_id"]])
        assert len(entries) == 1
        assert [r["index"] for r in response.json()["rejected"]] == [0 if shape == "object" else 1]


# numbers and bytes


def test_huge_numbers_are_rejected_per_event(collector):
    good = event()
    digits = '{"n": ' + "9" * 5000 + "}"
    huge_int = json.dumps(event())[:-1] + ', "properties": ' + digits + "}"
    huge_float = json.dumps(event())[:-1] + ', "position_s": 1e999999}'
    response = collector.post(f"[{json.dumps(good)}, {huge_int}, {huge_float}]".encode())
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [1, 2]
    assert all(r["errors"][0]["msg"] for r in body["rejected"])


def test_invalid_utf8_is_rejected_per_event_or_body(collector):
    good = event()
    bad = json.dumps(event(user_id="caf\u00e9")).encode().replace(b"caf\\u00e9", b"caf\xe9")
    response = collector.post(b"[" + json.dumps(good).encode() + b"," + bad + b"]")
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert "UTF-8" in response.json()["rejected"][0]["errors"][0]["msg"]
    assert collector.post(b"\xff\xfe[]").status_code == 400


# bounded quarantine entries


def test_a_large_malformed_body_is_quarantined_cut_with_its_size(collector):
    body = b"[" + b'{"a": 1}, ' * 30_000 + b"oops]"
    response = collector.post(body)
    assert response.status_code == 400
    [entry] = collector.quarantine.list()
    assert entry.raw == body[:QUARANTINE_RAW_BYTES]
    assert f"{len(body)} bytes received" in entry.errors[-1]["msg"]


def test_a_gzip_bomb_that_is_malformed_is_kept_compressed(collector):
    inflated = b"[" + b" " * (4 * 1024 * 1024) + b"oops]"
    body = gzip.compress(inflated)
    assert len(body) < QUARANTINE_RAW_BYTES
    assert collector.post(body, headers=GZIP).status_code == 400
    [entry] = collector.quarantine.list()
    assert entry.raw == body
    note = entry.errors[-1]["msg"]
    assert f"gzip-compressed, {len(body)} bytes ({len(inflated)} bytes decompressed)" in note


def test_a_huge_rejected_event_is_quarantined_cut(collector):
    huge = event(title="z" * 200_000)
    response = collector.post(json.dumps([huge]))
    assert response.json()["rejected"][0]["event_id"] == huge["event_id"]
    [entry] = collector.quarantine.list()
    assert len(entry.raw) == QUARANTINE_RAW_BYTES
    assert entry.event_id == huge["event_id"]
    assert entry.errors[-1]["loc"] == "raw"
