"""POST /v1/events against a real collector: formats, limits, errors, quarantine."""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from playpulse.stream.testing import GatedStream
from playpulse.testing import load_module

# events.py, loaded as a module (tests is not a package: importlib import mode)
_events = load_module(Path(__file__).with_name("events.py"), "playpulse_tests_collector_events")


def event(**overrides: Any) -> dict[str, Any]:
    """The shared valid event, with the audiobook's duration and a playback position."""
    content = {"content_id": "book-1", "content_type": "audiobook", "duration_s": 3600}
    return _events.event(**({"content": content, "position_s": 0} | overrides))


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"\n".join(json.dumps(e).encode() for e in events) + b"\n"


def test_json_array_is_appended_and_acknowledged(collector):
    events = [event() for _ in range(3)]
    response = collector.post(json.dumps(events))
    assert response.status_code == 200
    assert response.json() == {"accepted": 3, "rejected": []}
    assert sorted(collector.stored_event_ids()) == sorted(e["event_id"] for e in events)


def test_ndjson_gzip_and_text_plain_are_accepted(collector):
    events = [event() for _ in range(4)]
    gz = collector.post(
        gzip.compress(ndjson(events[:2])),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/x-ndjson"},
    )
    beacon = collector.post(ndjson(events[2:]), headers={"Content-Type": "text/plain"})
    assert gz.json()["accepted"] == 2
    assert beacon.json()["accepted"] == 2
    assert sorted(collector.stored_event_ids()) == sorted(e["event_id"] for e in events)


def test_single_object_body_is_one_event(collector):
    response = collector.post(json.dumps(event()))
    assert response.json() == {"accepted": 1, "rejected": []}


def test_stored_event_is_normalized_with_received_and_derived_times(collector):
    sent = datetime.now(UTC)
    e = event(
        occurred_at=(sent - timedelta(seconds=10)).astimezone().isoformat(),
        sent_at=(sent + timedelta(hours=1)).isoformat(),  # a client clock one hour fast
    )
    collector.post(json.dumps([e]))
    record = collector.stream.read(collector.stream.partition_for("u1"), 0, 10)[0]
    stored = json.loads(record.value)
    assert stored["occurred_at"].endswith("Z")
    received = datetime.fromisoformat(stored["received_at"])
    derived = datetime.fromisoformat(stored["derived_at"])
    # derived_at = received_at - (sent_at - occurred_at): ten seconds before receipt.
    expected = received - (
        datetime.fromisoformat(e["sent_at"]) - datetime.fromisoformat(e["occurred_at"])
    )
    assert derived == expected
    assert abs((received - derived) - timedelta(hours=1, seconds=10)) < timedelta(seconds=1)


def test_invalid_events_are_rejected_one_by_one_and_quarantined(collector):
    good = event()
    unknown = event(event_type="telepathy")
    naive = event(occurred_at="2026-01-01T10:00:00")
    future = event(occurred_at=(datetime.now(UTC) + timedelta(hours=25)).isoformat())
    ancient = event(occurred_at="1999-12-31T23:59:59Z")
    response = collector.post(json.dumps([good, unknown, naive, future, ancient]))
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1
    rejected = {r["index"]: r for r in body["rejected"]}
    assert sorted(rejected) == [1, 2, 3, 4]
    assert rejected[1]["event_id"] == unknown["event_id"]
    assert rejected[1]["errors"][0]["loc"] == "event_type"
    assert "telepathy" in rejected[1]["errors"][0]["msg"]
    assert "time zone" in rejected[2]["errors"][0]["msg"]
    assert rejected[3]["errors"][0]["loc"] == "occurred_at"
    assert "2000-01-01" in rejected[4]["errors"][0]["msg"]
    entries = collector.quarantine.list()
    assert [e.event_id for e in entries] == [
        unknown["event_id"],
        naive["event_id"],
        future["event_id"],
        ancient["event_id"],
    ]
    assert [e.reason for e in entries] == [
        "unknown_event_type",
        "invalid_event",
        "occurred_at_out_of_range",
        "occurred_at_out_of_range",
    ]
    assert json.loads(entries[0].raw) == unknown
    assert collector.stored_event_ids() == [good["event_id"]]


def test_event_up_to_24h_in_the_future_is_accepted(collector):
    e = event(occurred_at=(datetime.now(UTC) + timedelta(hours=23, minutes=59)).isoformat())
    assert collector.post(json.dumps([e])).json()["accepted"] == 1


def test_malformed_json_array_is_400_saying_where_and_quarantined(collector):
    body = b'[{"event_type": "play_start", "event_id": "x"},, {}]'
    response = collector.post(body)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "byte" in message
    entries = collector.quarantine.list()
    assert len(entries) == 1
    assert entries[0].reason == "malformed_body"
    assert entries[0].raw == body


def test_malformed_ndjson_line_rejects_that_line_only(collector):
    good = event()
    body = json.dumps(good).encode() + b"\n{not json\n"
    response = collector.post(body, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert response.json()["rejected"][0]["index"] == 1
    assert collector.quarantine.list()[0].reason == "malformed_json"


@pytest.mark.parametrize("body", [b"", b"   ", b"42", b'"text"', b"null", b"{broken"])
def test_bodies_that_are_not_events_are_400(collector, body):
    response = collector.post(body)
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_body_over_5_mb_is_413(collector):
    padding = "x" * 1000
    events = [event(properties={"pad": padding}) for _ in range(5300)]
    body = json.dumps(events).encode()
    assert len(body) > 5 * 1024 * 1024
    response = collector.post(body)
    assert response.status_code == 413
    assert "5242880" in response.json()["error"]["message"]
    assert collector.stored_event_ids() == []


def test_gzip_bomb_over_5_mb_decompressed_is_413(collector):
    body = gzip.compress(b"[" + b" " * (6 * 1024 * 1024) + b"]")
    assert len(body) < 100_000
    response = collector.post(body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413


def test_more_than_1000_events_is_413(collector):
    response = collector.post(json.dumps([event() for _ in range(1001)]))
    assert response.status_code == 413
    assert "1000" in response.json()["error"]["message"]
    assert collector.post(json.dumps([event() for _ in range(1000)])).json()["accepted"] == 1000


def test_event_over_32_kb_is_rejected_with_its_size(collector):
    big = event(properties={"a": "y" * 6000, "b": "y" * 6000})  # over the properties limit
    huge = event(context={"platform": "ios"}, title="z" * 40_000)
    response = collector.post(json.dumps([big, huge, event()]))
    body = response.json()
    assert body["accepted"] == 1
    errors = {r["index"]: r["errors"][0]["msg"] for r in body["rejected"]}
    assert "properties" in errors[0]
    assert "limit is 32768" in errors[1]
    assert {e.reason for e in collector.quarantine.list()} == {"invalid_event", "event_too_large"}


def test_bad_gzip_is_400(collector):
    response = collector.post(b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "gzip" in response.json()["error"]["message"]


def test_unknown_content_encoding_is_400(collector):
    response = collector.post(b"[]", headers={"Content-Encoding": "br"})
    assert response.status_code == 400


def test_empty_array_is_accepted_as_nothing(collector):
    assert collector.post(b"[]").json() == {"accepted": 0, "rejected": []}


def test_write_keys_are_required_when_configured(make_collector):
    with make_collector(write_keys=["k-one", "k-two"]) as running:
        body = json.dumps([event()])
        missing = running.post(body)
        wrong = running.post(body, headers={"Authorization": "Bearer nope"})
        basic = running.post(body, headers={"Authorization": "Basic k-one"})
        right = running.post(body, headers={"Authorization": "Bearer k-two"})
        assert [missing.status_code, wrong.status_code, basic.status_code] == [401, 401, 401]
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert right.status_code == 200
        assert len(running.stored_event_ids()) == 1
        assert running.quarantine.count() == 0


def test_backpressure_answers_429_with_retry_after(make_collector):
    with make_collector(wrap=GatedStream, max_pending_events=10) as running:
        gated = running.stream
        assert isinstance(gated, GatedStream)
        gated.gate.clear()
        with httpx.Client(timeout=30) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(
                client.post, f"{running.url}/v1/events", content=json.dumps([event()] * 10)
            )
            for _ in range(500):
                if gated.waiting:
                    break
                time.sleep(0.01)
            assert gated.waiting == 1
            refused = client.post(f"{running.url}/v1/events", content=json.dumps([event()]))
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            gated.gate.set()
            assert held.result(timeout=30).json()["accepted"] == 10
        retried = running.post(json.dumps([event()]))
        assert retried.status_code == 200


def test_healthz_schema_and_metrics(collector):
    assert httpx.get(f"{collector.url}/healthz").json()["status"] == "ok"
    schema = httpx.get(f"{collector.url}/v1/schema").json()
    assert "play_start" in schema["discriminator"]["mapping"]
    collector.post(json.dumps([event(), event(event_type="nope")]))
    collector.post(b"[,]")
    metrics = httpx.get(f"{collector.url}/metrics").text
    assert "playpulse_events_accepted_total 1.0" in metrics
    assert 'playpulse_events_rejected_total{reason="unknown_event_type"} 1.0' in metrics
    assert 'playpulse_events_rejected_total{reason="malformed_body"} 1.0' in metrics
    assert 'playpulse_request_duration_seconds_count{status="200"} 1.0' in metrics
    assert "playpulse_stream_append_duration_seconds_count 1.0" in metrics
    # What the stream and the quarantine hold, read from their files at scrape time.
    assert "playpulse_quarantine_entries 2.0" in metrics
    assert "playpulse_quarantine_bytes " in metrics
