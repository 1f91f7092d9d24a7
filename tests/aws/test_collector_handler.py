"""The collector's Lambda handler (playpulse.aws.collector_handler) fed real API Gateway
HTTP API (payload 2.0 and 1.0) and Function URL events, built as AWS documents them,
against the real collector app served by starlette's TestClient with the same settings:
the same status, error bodies and headers; the events in a real SQLite stream; rejected
events kept in S3 on moto (server mode) and logged.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from playpulse.aws import collector_handler
from playpulse.aws import quarantine as aws_quarantine
from playpulse.aws.clients import client
from playpulse.aws.collector_handler import CollectorHandler
from playpulse.aws.quarantine import lambda_settings, quarantine_url
from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.quarantine.store import QuarantineStore
from playpulse.stream.base import Appended, AppendResult, EventStream
from playpulse.stream.sqlite import SQLiteStream

WRITE_KEY = "k-" + uuid.uuid4().hex
MAX_BODY_BYTES = 64 * 1024
MAX_EVENTS = 20
#: Response headers whose values must match the HTTP collector's.
COMPARED_HEADERS = ("content-type", "retry-after", "www-authenticate")


def event(user: str = "u1", **overrides: Any) -> dict[str, Any]:
    """A valid play_start event of ``user``."""
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "play_start",
        "occurred_at": datetime.now(UTC).isoformat(),
        "user_id": user,
        "playback_id": "p1",
        "content": {"content_id": "book-1", "content_type": "audiobook", "duration_s": 3600},
        "position_s": 0,
    }
    return base | overrides


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` levels deep."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def http_api_event(
    body: bytes | str,
    headers: dict[str, str],
    *,
    path: str = "/v1/events",
    method: str = "POST",
    base64_body: bool = False,
    stage: str = "$default",
) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0 (the AWS developer guide's
    "Working with AWS Lambda proxy integrations for HTTP APIs" example), for ``body``.
    A named ``stage`` prefixes the path, as API Gateway does."""
    raw = body.encode() if isinstance(body, str) else body
    full_path = path if stage == "$default" else f"/{stage}{path}"
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": full_path,
        "rawQueryString": "",
        "headers": {"host": "abc123.execute-api.us-east-1.amazonaws.com", **headers},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": full_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "test-agent",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": stage,
            "time": "05/Dec/2026:03:50:00 +0000",
            "timeEpoch": 1796356200000,
        },
        "body": base64.b64encode(raw).decode() if base64_body else raw.decode(),
        "isBase64Encoded": base64_body,
    }


def function_url_event(
    body: bytes | str, headers: dict[str, str], *, base64_body: bool = False
) -> dict[str, Any]:
    """A Lambda Function URL event (payload 2.0, as the Lambda developer guide's
    "Invoking Lambda function URLs" request payload example): lower-case headers, no
    stage, the URL id as domain prefix."""
    raw = body.encode() if isinstance(body, str) else body
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v1/events",
        "rawQueryString": "",
        "headers": {
            "host": "a1b2c3.lambda-url.us-east-1.on.aws",
            "x-amzn-trace-id": "Root=1-5eb33c07-1b0e4a1ec3a7d4d0b2f4b3f3",
            "x-forwarded-proto": "https",
            "x-forwarded-port": "443",
            **{k.lower(): v for k, v in headers.items()},
        },
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "a1b2c3",
            "domainName": "a1b2c3.lambda-url.us-east-1.on.aws",
            "domainPrefix": "a1b2c3",
            "http": {
                "method": "POST",
                "path": "/v1/events",
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "test-agent",
            },
            "requestId": "c2a3b7c0-2c5f-4d8e-9a4e-1f2b3c4d5e6f",
            "routeKey": "$default",
            "stage": "$default",
            "time": "05/Dec/2026:03:50:00 +0000",
            "timeEpoch": 1796356200000,
        },
        "body": base64.b64encode(raw).decode() if base64_body else raw.decode(),
        "isBase64Encoded": base64_body,
    }


def rest_v1_event(body: str, headers: dict[str, str]) -> dict[str, Any]:
    """An HTTP API payload format 1.0 event (the REST API proxy shape)."""
    return {
        "version": "1.0",
        "resource": "/v1/events",
        "path": "/v1/events",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "httpMethod": "POST",
            "identity": {"sourceIp": "192.0.2.1"},
            "path": "/v1/events",
            "requestId": "id",
            "resourcePath": "/v1/events",
            "stage": "$default",
        },
        "pathParameters": None,
        "stageVariables": None,
        "body": body,
        "isBase64Encoded": False,
    }


EVENT_BUILDERS = {"http_api": http_api_event, "function_url": function_url_event}


def auth(key: str = WRITE_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def stored_ids(stream: EventStream) -> Counter[str]:
    """How many times each event_id is in ``stream``."""
    ids: Counter[str] = Counter()
    for info in stream.partitions():
        for record in stream.read(info.partition, info.start_offset, 1_000_000):
            ids[json.loads(record.value)["event_id"]] += 1
    return ids


class Pair:
    """The Lambda handler and the HTTP collector, each over its own SQLite stream, made
    from the same PLAYPULSE_* settings."""

    def __init__(self, lambda_dir: Path, http: TestClient, http_stream: EventStream) -> None:
        self.lambda_dir = lambda_dir
        self.http = http
        self.http_stream = http_stream

    def lambda_stream(self) -> SQLiteStream:
        return SQLiteStream(self.lambda_dir / "stream.db", num_partitions=4)

    def http_answer(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        response = self.http.post("/v1/events", content=body, headers=headers)
        return response.status_code, response.json(), dict(response.headers)

    def lambda_answer(self, lambda_event: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        answer = collector_handler.handler(lambda_event, None)
        assert set(answer) >= {"statusCode", "body", "headers", "isBase64Encoded"}
        assert answer["isBase64Encoded"] is False
        return answer["statusCode"], json.loads(answer["body"]), answer["headers"]

    def same_answer(
        self, body: bytes, headers: dict[str, str], lambda_event: dict[str, Any]
    ) -> tuple[int, Any]:
        """Post ``body`` to both; assert the same status, JSON body and compared headers."""
        status, answer, http_headers = self.http_answer(body, headers)
        l_status, l_answer, l_headers = self.lambda_answer(lambda_event)
        assert (l_status, l_answer) == (status, answer)
        for name in COMPARED_HEADERS:
            assert l_headers.get(name) == http_headers.get(name), name
        assert "connection" not in l_headers  # hop-by-hop: the gateway's business
        return status, answer


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pair]:
    """PLAYPULSE_* variables for both collectors; the Lambda handler made fresh from them
    on its first call (and closed after); the HTTP collector served by TestClient."""
    lambda_dir = tmp_path / "lambda"
    monkeypatch.setenv("PLAYPULSE_DATA_DIR", str(lambda_dir))
    monkeypatch.setenv("PLAYPULSE_STREAM_URL", f"sqlite:///{lambda_dir / 'stream.db'}")
    monkeypatch.setenv("PLAYPULSE_NUM_PARTITIONS", "4")
    monkeypatch.setenv("PLAYPULSE_WRITE_KEYS", f"other-key,{WRITE_KEY}")
    monkeypatch.setenv("PLAYPULSE_MAX_BODY_BYTES", str(MAX_BODY_BYTES))
    monkeypatch.setenv("PLAYPULSE_MAX_EVENTS_PER_REQUEST", str(MAX_EVENTS))
    monkeypatch.delenv("PLAYPULSE_LAKE_URL", raising=False)
    monkeypatch.delenv(aws_quarantine.QUARANTINE_URL_ENV, raising=False)
    monkeypatch.setattr(collector_handler, "_HANDLER", None)
    http_dir = tmp_path / "http"
    settings = Settings(data_dir=http_dir, stream_url=f"sqlite:///{http_dir / 'stream.db'}")
    assert settings.write_keys
    assert settings.max_body_bytes == MAX_BODY_BYTES
    http_stream = SQLiteStream(http_dir / "stream.db", num_partitions=4)
    app = create_app(settings, stream=http_stream)
    try:
        with TestClient(app) as http:
            yield Pair(lambda_dir, http, http_stream)
    finally:
        http_stream.close()
        made = collector_handler._HANDLER
        if made is not None:
            made.close()


@pytest.mark.parametrize("kind", sorted(EVENT_BUILDERS))
def test_valid_batch_same_answer_and_events_in_the_stream(pair: Pair, kind: str) -> None:
    events = [event(f"user-{n}") for n in range(5)]
    body = json.dumps(events).encode()
    headers = {"content-type": "application/json", **auth()}
    status, answer = pair.same_answer(body, headers, EVENT_BUILDERS[kind](body, headers))
    assert (status, answer) == (200, {"accepted": 5, "rejected": []})
    with pair.lambda_stream() as stream:
        assert stored_ids(stream) == Counter(e["event_id"] for e in events)
    assert stored_ids(pair.http_stream) == Counter(e["event_id"] for e in events)


def test_mixed_batch_rejects_the_invalid_event_alone_and_logs_it(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    good = [event(), event("u2")]
    bad = {**event(), "event_type": "no_such_type"}
    body = json.dumps([good[0], bad, good[1]]).encode()
    headers = {"content-type": "application/json", **auth()}
    with caplog.at_level(logging.WARNING, logger="playpulse.aws.collector"):
        status, answer = pair.same_answer(body, headers, http_api_event(body, headers))
    assert status == 200
    assert answer["accepted"] == 2
    assert [(r["index"], r["event_id"]) for r in answer["rejected"]] == [(1, bad["event_id"])]
    with pair.lambda_stream() as stream:
        assert set(stored_ids(stream)) == {e["event_id"] for e in good}
    # Never lost silently: logged with its reason and raw bytes (no S3 location here) ...
    logged = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(logged) == 1
    record = json.loads(logged[0].split(": ", 1)[1])
    assert record["reason"] == "unknown_event_type"
    assert record["event_id"] == bad["event_id"]
    assert json.loads(base64.b64decode(record["raw_base64"])) == bad
    # ... and in the data dir's quarantine.
    with QuarantineStore(pair.lambda_dir / "quarantine.db") as quarantine:
        entries = quarantine.list()
        assert [e.event_id for e in entries] == [bad["event_id"]]


# Bodies the collector refuses or partly rejects, each with the status it answers.
BAD_BODIES: dict[str, tuple[bytes, dict[str, str], int]] = {
    "malformed_array": (b'[{"event_id": "x"', {}, 400),
    "not_json": (b"hello", {}, 400),
    "empty": (b"", {}, 400),
    "one_bad_ndjson_line": (b'{"a": 1}\nnot json\n', {}, 200),
    "scalar": (b"42", {}, 400),
    "too_many_events": (json.dumps([event() for _ in range(MAX_EVENTS + 1)]).encode(), {}, 413),
    "nested_too_deep": (b"[" * 5000 + b"]" * 5000, {}, 400),
    "event_nested_too_deep": (
        json.dumps([event(), {**event(), "properties": {"x": nested(40)}}]).encode(),
        {},
        200,
    ),
    "unsupported_encoding": (b"[]", {"content-encoding": "br"}, 400),
    "bad_gzip": (b"\x1f\x8bnot really gzip", {"content-encoding": "gzip"}, 400),
    "body_too_large": (b" " * (MAX_BODY_BYTES + 1) + b"[]", {}, 413),
    "gzip_inflates_too_large": (
        gzip.compress(b"[" + b" " * (MAX_BODY_BYTES + 10) + b"]"),
        {"content-encoding": "gzip"},
        413,
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
@pytest.mark.parametrize("kind", sorted(EVENT_BUILDERS))
def test_bad_bodies_get_the_http_collectors_answer(pair: Pair, kind: str, name: str) -> None:
    body, extra, expected = BAD_BODIES[name]
    headers = {"content-type": "application/json", **auth(), **extra}
    lambda_event = EVENT_BUILDERS[kind](body, headers, base64_body=b"\x8b" in body)
    status, answer = pair.same_answer(body, headers, lambda_event)
    assert status == expected
    if status != 200:
        assert set(answer["error"]) == {"code", "message"}
    else:
        assert answer["rejected"]
    with pair.lambda_stream() as stream:
        assert sum(stored_ids(stream).values()) == answer.get("accepted", 0)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-key"},
        {"authorization": WRITE_KEY},  # no scheme
        {"authorization": f"Basic {WRITE_KEY}"},
    ],
    ids=["missing", "wrong", "no_scheme", "basic"],
)
@pytest.mark.parametrize("kind", sorted(EVENT_BUILDERS))
def test_missing_or_wrong_write_key_is_401(pair: Pair, kind: str, headers: dict[str, str]) -> None:
    body = json.dumps([event()]).encode()
    status, answer = pair.same_answer(body, headers, EVENT_BUILDERS[kind](body, headers))
    assert status == 401
    assert answer["error"]["code"] == "unauthorized"
    with pair.lambda_stream() as stream:
        assert not stored_ids(stream)


def test_header_names_in_any_case(pair: Pair) -> None:
    """HTTP API passes header names as the client sent them; the key still counts."""
    e = event()
    body = gzip.compress(json.dumps([e]).encode())
    lambda_event = http_api_event(
        body,
        {"Authorization": f"Bearer {WRITE_KEY}", "Content-Encoding": "GZIP"},
        base64_body=True,
    )
    status, answer, _ = pair.lambda_answer(lambda_event)
    assert (status, answer) == (200, {"accepted": 1, "rejected": []})
    with pair.lambda_stream() as stream:
        assert stored_ids(stream) == Counter([e["event_id"]])


@pytest.mark.parametrize("kind", sorted(EVENT_BUILDERS))
def test_base64_gzip_ndjson_body(pair: Pair, kind: str) -> None:
    events = [event(f"user-{n}") for n in range(3)]
    ndjson = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    # Two gzip members, as RFC 1952 allows.
    body = gzip.compress(ndjson[:10]) + gzip.compress(ndjson[10:])
    headers = {"content-type": "application/x-ndjson", "content-encoding": "gzip", **auth()}
    lambda_event = EVENT_BUILDERS[kind](body, headers, base64_body=True)
    assert lambda_event["body"] != body.decode("latin-1")
    status, answer = pair.same_answer(body, headers, lambda_event)
    assert (status, answer) == (200, {"accepted": 3, "rejected": []})
    with pair.lambda_stream() as stream:
        assert stored_ids(stream) == Counter(e["event_id"] for e in events)


def test_base64_plain_body_and_text_plain_beacon(pair: Pair) -> None:
    e = event()
    body = json.dumps(e).encode()
    headers = {"content-type": "text/plain;charset=UTF-8", **auth()}
    status, answer = pair.same_answer(
        body, headers, function_url_event(body, headers, base64_body=True)
    )
    assert (status, answer) == (200, {"accepted": 1, "rejected": []})


def test_invalid_base64_body_is_400_not_an_error(pair: Pair) -> None:
    lambda_event = http_api_event("[]", auth())
    lambda_event["body"] = "this is not base64!"
    lambda_event["isBase64Encoded"] = True
    status, answer, _ = pair.lambda_answer(lambda_event)
    assert status == 400
    assert answer["error"]["code"] == "malformed_body"
    assert "base64" in answer["error"]["message"]


def test_oversize_declared_content_length_is_413(pair: Pair) -> None:
    """A content-length over the limit is answered 413 as by the HTTP collector (the
    handler sets it to the body's real size, so a lying one changes nothing)."""
    body = b"[" + b" " * MAX_BODY_BYTES + b"]"
    headers = {"content-length": str(len(body)), **auth()}
    status, answer = pair.same_answer(body, headers, http_api_event(body, headers))
    assert status == 413
    assert answer["error"]["code"] == "body_too_large"
    small = json.dumps([event()]).encode()
    lying = http_api_event(small, {"content-length": str(10 * MAX_BODY_BYTES), **auth()})
    assert pair.lambda_answer(lying)[0] == 200


def test_named_stage_prefix_is_removed(pair: Pair) -> None:
    body = json.dumps([event()]).encode()
    status, answer, _ = pair.lambda_answer(http_api_event(body, auth(), stage="prod"))
    assert (status, answer) == (200, {"accepted": 1, "rejected": []})


def test_payload_format_1_0(pair: Pair) -> None:
    e = event()
    body = json.dumps([e])
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {WRITE_KEY}"}
    answer = collector_handler.handler(rest_v1_event(body, headers), None)
    assert set(answer) == {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"}
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"]) == {"accepted": 1, "rejected": []}
    with pair.lambda_stream() as stream:
        assert stored_ids(stream) == Counter([e["event_id"]])


def test_other_routes_work_too(pair: Pair) -> None:
    schema = collector_handler.handler(
        http_api_event("", {}, path="/v1/schema", method="GET"), None
    )
    assert schema["statusCode"] == 200
    assert "PlayStart" in json.loads(schema["body"])["$defs"]
    ready = collector_handler.handler(http_api_event("", {}, path="/readyz", method="GET"), None)
    assert ready["statusCode"] == 200
    assert json.loads(ready["body"])["status"] == "ready"


@pytest.mark.parametrize(
    "bad_event",
    [
        {},
        None,
        "POST /v1/events",
        {"Records": [{"kinesis": {"data": "e30="}}]},  # a Kinesis event, the wrong function
        {"version": "2.0", "requestContext": {"http": {}}},
        {"version": "2.0", "requestContext": {"http": {"method": "POST"}}, "headers": []},
        {"version": "2.0", "requestContext": {"http": {"method": "POST", "path": "/"}}, "body": 3},
    ],
)
def test_events_that_are_not_http_requests_are_400(pair: Pair, bad_event: Any) -> None:
    answer = collector_handler.handler(bad_event, None)
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["error"]["code"] == "unsupported_event"


def test_warm_container_reuses_one_app_and_its_stream(pair: Pair) -> None:
    """Invocations in one warm container share one app, whose stream stays open and
    usable from one invocation to the next."""
    sent = []
    for _ in range(3):
        e = event()
        sent.append(e["event_id"])
        body = json.dumps([e]).encode()
        assert pair.lambda_answer(function_url_event(body, auth()))[0] == 200
    made = collector_handler._HANDLER
    assert made is not None
    assert made.app is not None
    first_app = made.app
    assert pair.lambda_answer(function_url_event(json.dumps([event()]), auth()))[0] == 200
    assert made.app is first_app
    with pair.lambda_stream() as stream:
        assert set(sent) <= set(stored_ids(stream))


def test_stream_that_cannot_open_is_503_then_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the stream's folder should be")
    monkeypatch.setenv("PLAYPULSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PLAYPULSE_STREAM_URL", f"sqlite:///{blocker / 'stream.db'}")
    monkeypatch.delenv("PLAYPULSE_WRITE_KEYS", raising=False)
    monkeypatch.delenv("PLAYPULSE_LAKE_URL", raising=False)
    monkeypatch.delenv(aws_quarantine.QUARANTINE_URL_ENV, raising=False)
    handler = CollectorHandler()
    try:
        body = json.dumps([event()])
        answer = handler(http_api_event(body, {}), None)
        assert answer["statusCode"] == 503
        assert answer["headers"]["retry-after"] == "1"
        assert json.loads(answer["body"])["error"]["code"] == "stream_unavailable"
        blocker.unlink()
        answer = handler(http_api_event(body, {}), None)
        assert answer["statusCode"] == 200
    finally:
        handler.close()


class HalfDownStream(SQLiteStream):
    """A real SQLite stream whose ``append_each`` never stores the records of user
    ``down`` (as a shard that keeps refusing) and stores the others."""

    def append_each(self, records: Sequence[tuple[str, bytes]]) -> AppendResult:
        down = [n for n, (key, _) in enumerate(records) if key == "down"]
        failed = dict.fromkeys(down, "the shard is unavailable")
        keep = [n for n in range(len(records)) if n not in failed]
        landed: list[Appended | None] = [None] * len(records)
        for n, appended in zip(keep, self.append([records[n] for n in keep]), strict=True):
            landed[n] = appended
        return AppendResult(landed, failed)


def test_partial_append_answers_as_the_http_collector(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "lambda")
    events = [event("up"), event("down"), event("up"), {"bad": True}]
    body = json.dumps(events).encode()
    with (
        HalfDownStream(tmp_path / "lambda.db", num_partitions=4) as lambda_stream,
        HalfDownStream(tmp_path / "http.db", num_partitions=4) as http_stream,
    ):
        handler = CollectorHandler(settings, stream=lambda_stream)
        try:
            answer = handler(function_url_event(body, {}), None)
        finally:
            handler.close()
        app = create_app(Settings(data_dir=tmp_path / "http"), stream=http_stream)
        with TestClient(app) as http:
            expected = http.post("/v1/events", content=body)
        assert answer["statusCode"] == expected.status_code == 503
        assert answer["headers"]["retry-after"] == expected.headers["retry-after"]
        got = json.loads(answer["body"])
        assert got == expected.json()
        assert got["error"]["code"] == "stream_unavailable"
        assert (got["error"]["stored"], got["error"]["not_stored"]) == (2, [1])
        assert [r["index"] for r in got["error"]["rejected"]] == [3]
        assert stored_ids(lambda_stream) == Counter([events[0]["event_id"], events[2]["event_id"]])


# --- the quarantine on S3 (moto in server mode) ---------------------------------------


def test_quarantine_url_settings() -> None:
    def url(lake: str | None, explicit: str | None = None) -> str | None:
        env = {aws_quarantine.QUARANTINE_URL_ENV: explicit} if explicit else {}
        return quarantine_url(Settings(lake_url=lake), env)

    assert url(None) is None
    assert url("file:///var/lake") is None
    assert url("s3://bucket/lake") == "s3://bucket/quarantine"
    assert url("s3://bucket/a/b/lake/") == "s3://bucket/a/b/quarantine"
    assert url("s3://bucket") == "s3://bucket/_quarantine"
    assert url("s3://bucket/lake", "s3://other/rejects/") == "s3://other/rejects"
    with pytest.raises(ConfigError, match="PLAYPULSE_QUARANTINE_URL"):
        url(None, "file:///tmp/q")


def test_quarantine_object_keys() -> None:
    sink = aws_quarantine.S3QuarantineSink("s3://bucket/a/quarantine/")
    at = datetime(2026, 12, 5, 3, 4, 5, tzinfo=UTC)
    key = sink.key_for(at)
    assert key.startswith("a/quarantine/source=collector/date=2026-12-05/030405-")
    assert key.endswith(".ndjson")
    assert key != sink.key_for(at)  # a new object per request
    odd = sink.key_for(at, "import/../x y")
    assert odd.startswith("a/quarantine/source=import_.._x_y/date=2026-12-05/")
    assert aws_quarantine.S3QuarantineSink("s3://bucket").key_for(at).startswith("source=")
    with pytest.raises(ConfigError):
        aws_quarantine.S3QuarantineSink("file:///tmp/x")


def test_data_dir_defaults_to_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLAYPULSE_DATA_DIR", raising=False)
    settings = lambda_settings({})
    assert settings.data_dir.parts[-1] == "playpulse"
    assert settings.data_dir.is_absolute()
    assert lambda_settings({"PLAYPULSE_DATA_DIR": "x"}).data_dir == Path(".playpulse")


def _s3_objects(bucket: str, prefix: str) -> dict[str, list[dict[str, Any]]]:
    s3 = client("s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    out = {}
    for item in listed:
        text = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
        out[item["Key"]] = [json.loads(line) for line in text.splitlines()]
    return out


@pytest.fixture
def s3_lambda(
    aws_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, CollectorHandler]]:
    """A bucket on moto with the lake at ``s3://BUCKET/lake`` and the handler over a
    SQLite stream in tmp_path: (bucket, handler)."""
    bucket = aws_env.unique("quarantine")
    client("s3").create_bucket(Bucket=bucket)
    monkeypatch.setenv("PLAYPULSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PLAYPULSE_STREAM_URL", f"sqlite:///{tmp_path / 'stream.db'}")
    monkeypatch.setenv("PLAYPULSE_LAKE_URL", f"s3://{bucket}/lake")
    monkeypatch.delenv("PLAYPULSE_WRITE_KEYS", raising=False)
    monkeypatch.delenv(aws_quarantine.QUARANTINE_URL_ENV, raising=False)
    handler = CollectorHandler()
    try:
        yield bucket, handler
    finally:
        handler.close()


def test_rejections_are_stored_in_s3_beside_the_lake(
    s3_lambda: tuple[str, CollectorHandler],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bucket, handler = s3_lambda
    good = event()
    bad = {**event(), "occurred_at": "yesterday"}
    with caplog.at_level(logging.WARNING, logger="playpulse.aws.collector"):
        answer = handler(http_api_event(json.dumps([good, bad]), {}), None)
        malformed = handler(http_api_event(b"[{", {}), None)
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["accepted"] == 1
    assert malformed["statusCode"] == 400
    objects = _s3_objects(bucket, "quarantine/")
    assert len(objects) == 2
    today = datetime.now(UTC).date().isoformat()
    for key in objects:
        assert key.startswith(f"quarantine/source=collector/date={today}/")
        assert key.endswith(".ndjson")
    lines = [line for lines in objects.values() for line in lines]
    by_reason = {line["reason"]: line for line in lines}
    assert set(by_reason) == {"invalid_event", "malformed_body"}
    invalid = by_reason["invalid_event"]
    assert invalid["event_id"] == bad["event_id"]
    assert json.loads(base64.b64decode(invalid["raw_base64"])) == bad
    assert base64.b64decode(by_reason["malformed_body"]["raw_base64"]) == b"[{"
    assert not _s3_objects(bucket, "lake/")
    # Logged with the reason and where it is (not the raw bytes: they are in S3).
    logged = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(logged) == 2
    assert all(f"s3://{bucket}/quarantine/" in m and "raw_base64" not in m for m in logged)
    with SQLiteStream(tmp_path / "stream.db") as stream:
        assert stored_ids(stream) == Counter([good["event_id"]])


def test_s3_quarantine_down_is_503_and_appends_nothing(
    s3_lambda: tuple[str, CollectorHandler], tmp_path: Path
) -> None:
    bucket, handler = s3_lambda
    s3 = client("s3")
    s3.delete_bucket(Bucket=bucket)  # the quarantine's bucket is gone
    answer = handler(http_api_event(json.dumps([event(), {"bad": 1}]), {}), None)
    assert answer["statusCode"] == 503
    error = json.loads(answer["body"])["error"]
    assert error["code"] == "quarantine_unavailable"
    assert bucket in error["message"]
    with SQLiteStream(tmp_path / "stream.db") as stream:
        assert not stored_ids(stream)
    # A valid-only request needs no quarantine and is stored.
    assert handler(http_api_event(json.dumps([event()]), {}), None)["statusCode"] == 200


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_bodies = st.one_of(
    st.binary(max_size=300),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(
        st.builds(
            lambda e, extra: {**e, **extra},
            st.builds(event),
            st.dictionaries(
                st.sampled_from(["event_type", "occurred_at", "user_id", "content", "x"]),
                _json_values,
                max_size=2,
            ),
        ),
        max_size=4,
    ).map(lambda events: json.dumps(events).encode()),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=_bodies,
    gzipped=st.booleans(),
    encoding=st.sampled_from([None, "gzip", "identity", "deflate"]),
    as_base64=st.booleans(),
    kind=st.sampled_from(sorted(EVENT_BUILDERS)),
)
def test_any_body_gets_the_http_collectors_answer_and_never_a_5xx(
    pair: Pair, body: bytes, gzipped: bool, encoding: str | None, as_base64: bool, kind: str
) -> None:
    if gzipped:
        body = gzip.compress(body)
    headers = {**auth(), **({"content-encoding": encoding} if encoding else {})}
    as_base64 = as_base64 or not _is_utf8(body)  # AWS sends a binary body as base64
    status, _ = pair.same_answer(
        body, headers, EVENT_BUILDERS[kind](body, headers, base64_body=as_base64)
    )
    assert status < 500


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


# --- Kinesis on moto ------------------------------------------------------------------


def _kinesis_records(name: str) -> list[tuple[str, dict[str, Any]]]:
    """(partition key, event) of every record in the Kinesis stream ``name``, read with
    boto3 from each shard's start."""
    kinesis = client("kinesis")
    out: list[tuple[str, dict[str, Any]]] = []
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            out.extend((r["PartitionKey"], json.loads(r["Data"])) for r in page["Records"])
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return out


def test_events_go_to_the_kinesis_stream_the_settings_name(
    aws_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PLAYPULSE_STREAM_URL=kinesis://STREAM: the handler appends to that stream, one
    record per valid event, the user as partition key."""
    name = aws_env.unique("collector")
    kinesis = client("kinesis")
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    monkeypatch.setenv("PLAYPULSE_STREAM_URL", f"kinesis://{name}")
    monkeypatch.setenv("PLAYPULSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PLAYPULSE_WRITE_KEYS", WRITE_KEY)
    monkeypatch.delenv("PLAYPULSE_LAKE_URL", raising=False)
    monkeypatch.delenv(aws_quarantine.QUARANTINE_URL_ENV, raising=False)
    monkeypatch.setattr(collector_handler, "_HANDLER", None)
    events = [event(f"user-{n}") for n in range(6)]
    body = gzip.compress(json.dumps([*events, {"bad": True}]).encode())
    headers = {"content-encoding": "gzip", **auth()}
    try:
        answer = collector_handler.handler(function_url_event(body, headers, base64_body=True))
        denied = collector_handler.handler(function_url_event(json.dumps([event()]), {}))
    finally:
        made = collector_handler._HANDLER
        if made is not None:
            made.close()
    assert answer["statusCode"] == 200
    result = json.loads(answer["body"])
    assert result["accepted"] == 6
    assert [r["index"] for r in result["rejected"]] == [6]
    assert denied["statusCode"] == 401
    stored = _kinesis_records(name)
    assert sorted(e["event_id"] for _, e in stored) == sorted(e["event_id"] for e in events)
    assert all(key == e["user_id"] for key, e in stored)


_texts = st.text(max_size=12)
_any = st.none() | st.booleans() | st.integers() | _texts | st.lists(_texts, max_size=2)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    version=st.sampled_from(["2.0", "1.0", None]) | _any,
    method=st.sampled_from(["POST", "GET", "PUT", ""]) | _any,
    path=st.sampled_from(["/v1/events", "/", "/readyz", "v1/events", "/prod/v1/events"]) | _any,
    stage=st.sampled_from(["$default", "prod", None]) | _any,
    headers=st.none() | st.dictionaries(_texts, _any, max_size=3) | _any,
    body=st.none() | _texts | st.text(alphabet=st.characters(), max_size=20) | _any,
    is_base64=_any,
)
def test_any_event_shape_is_answered_never_raised_never_5xx(
    pair: Pair,
    version: Any,
    method: Any,
    path: Any,
    stage: Any,
    headers: Any,
    body: Any,
    is_base64: Any,
) -> None:
    lambda_event: dict[str, Any] = {
        "version": version,
        "headers": headers,
        "body": body,
        "isBase64Encoded": is_base64,
        "httpMethod": method,
        "path": path,
        "requestContext": {"stage": stage, "http": {"method": method, "path": path}},
    }
    answer = collector_handler.handler(lambda_event, None)
    assert 200 <= answer["statusCode"] < 500
    assert isinstance(answer["body"], str)


class ThrottleUsers:
    """A botocore hook on a real Kinesis client: PutRecords records of the users in
    ``always`` are never stored, those in ``once`` only from their second sending (they
    are taken out of the request and reported ``ProvisionedThroughputExceededException``
    in the response, as Kinesis reports a throttled record)."""

    def __init__(self, kinesis: Any, always: set[str], once: set[str]) -> None:
        self.always, self.once = always, once
        self.sendings: Counter[str] = Counter()
        self._dropped: list[int] = []
        self._total = 0
        kinesis.meta.events.register("before-call.kinesis.PutRecords", self._before)
        kinesis.meta.events.register("after-call.kinesis.PutRecords", self._after)

    def _before(self, params: dict[str, Any], **_: Any) -> Any:
        body = json.loads(params["body"])
        keep, self._dropped = [], []
        for i, record in enumerate(body["Records"]):
            value = json.loads(base64.b64decode(record["Data"]))
            self.sendings[value["event_id"]] += 1
            user = value["user_id"]
            if user in self.always or (user in self.once and self.sendings[value["event_id"]] == 1):
                self._dropped.append(i)
            else:
                keep.append(record)
        self._total = len(body["Records"])
        if not keep:
            return _BotocoreHttp(), {"FailedRecordCount": 0, "Records": []}
        body["Records"] = keep
        params["body"] = json.dumps(body).encode()
        return None

    def _after(self, parsed: dict[str, Any], **_: Any) -> None:
        records = list(parsed.get("Records", []))
        for i in self._dropped:
            records.insert(
                i,
                {
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": "Rate exceeded for shard",
                },
            )
        assert len(records) == self._total
        parsed["Records"] = records
        parsed["FailedRecordCount"] = len(self._dropped)


class _BotocoreHttp:
    """The HTTP response botocore expects from a ``before-call`` hook that answers."""

    status_code = 200
    headers: dict[str, str] = {}
    content = b""


def test_kinesis_partial_failures_acknowledge_only_what_is_stored(
    aws_env: Any, tmp_path: Path
) -> None:
    """PutRecords failing some records for real: a record throttled once is retried and
    stored (200); one that stays throttled makes the answer 503 stream_unavailable naming
    it, while the others of the request are stored, each once."""
    from playpulse.stream.kinesis import KinesisStream

    name = aws_env.unique("partial")
    kinesis = client("kinesis")
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    hooked = client("kinesis")
    throttle = ThrottleUsers(hooked, always={"down"}, once={"flaky"})
    stream = KinesisStream(name, kinesis=hooked, max_put_attempts=2, backoff_s=0.01)
    handler = CollectorHandler(Settings(data_dir=tmp_path / "data"), stream=stream)
    try:
        first = [event("up"), event("flaky"), event("up")]
        ok = handler(http_api_event(json.dumps(first), {}))
        second = [event("up"), event("down"), event("flaky")]
        partial = handler(http_api_event(json.dumps(second), {}))
    finally:
        handler.close()
        stream.close()
    assert ok["statusCode"] == 200
    assert json.loads(ok["body"]) == {"accepted": 3, "rejected": []}
    assert partial["statusCode"] == 503
    assert partial["headers"]["retry-after"] == "1"
    error = json.loads(partial["body"])["error"]
    assert error["code"] == "stream_unavailable"
    assert (error["stored"], error["not_stored"], error["rejected"]) == (2, [1], [])
    stored = Counter(e["event_id"] for _, e in _kinesis_records(name))
    expected = [e for e in first + second if e["user_id"] != "down"]
    assert stored == Counter(e["event_id"] for e in expected)
    assert throttle.sendings[second[1]["event_id"]] > 1  # the throttled one was retried


def test_a_caller_with_a_running_event_loop_gets_the_same_answer(pair: Pair) -> None:
    # An async caller (or Playwright's sync API, in the same test process) has a loop
    # running on its thread: the adapter must not try to run that loop again.
    import asyncio

    events = [event(f"user-{n}") for n in range(3)]
    body = json.dumps(events).encode()
    headers = {"content-type": "application/json", **auth()}

    async def call() -> dict[str, Any]:
        return collector_handler.handler(EVENT_BUILDERS["http_api"](body, headers), None)

    response = asyncio.run(call())
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"]) == {"accepted": 3, "rejected": []}
