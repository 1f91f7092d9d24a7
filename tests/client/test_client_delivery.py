"""Batching, compression, authentication and the answers of the collector."""

from __future__ import annotations

import gzip
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from playpulse.client import Client, ClientOptions, ClientStats

MakeClient = Callable[..., Client]


def _pauses(client: Client, n: int, **extra: Any) -> list[str]:
    return [client.pause(user_id=f"u{i}", playback_id="p", **extra) for i in range(n)]


def _ids(stub: Any) -> list[str]:
    return [e["event_id"] for e in stub.events]


def test_batches_by_count(
    make_client: MakeClient, stub: Any, fast: ClientOptions, wait_until: Any
) -> None:
    client = make_client(options=replace(fast, batch_size=10))
    ids = _pauses(client, 25)
    wait_until(lambda: client.stats.accepted == 20)
    assert [len(r.events) for r in stub.requests] == [10, 10]
    assert client.stats.queued == 5  # the rest waits for the 60 s interval or a flush
    assert client.flush(5)
    assert [len(r.events) for r in stub.requests] == [10, 10, 5]
    assert _ids(stub) == ids
    assert client.stats == ClientStats(sent=25, accepted=25)


def test_batches_by_time(
    make_client: MakeClient, stub: Any, fast: ClientOptions, wait_until: Any
) -> None:
    client = make_client(options=replace(fast, flush_interval_s=0.2))
    started = time.monotonic()
    ids = _pauses(client, 3)
    (request,) = stub.wait_requests(1)
    # The batch waited for the interval (counted from its oldest event), not for more.
    assert request.at - started >= 0.2
    assert [e["event_id"] for e in request.events] == ids
    wait_until(lambda: client.stats.accepted == 3)
    ids2 = _pauses(client, 2)
    requests = stub.wait_requests(2)
    assert [e["event_id"] for e in requests[1].events] == ids2


def test_batches_by_bytes(make_client: MakeClient, stub: Any, fast: ClientOptions) -> None:
    limit = 4096
    client = make_client(options=replace(fast, max_batch_bytes=limit))
    ids = _pauses(client, 20, properties={"blob": "x" * 1000})
    assert client.flush(5)
    sizes = [len(r.body) for r in stub.requests]
    assert len(sizes) >= 5  # about 1.1 KiB per event: 3 per request
    assert all(size <= limit for size in sizes)
    assert _ids(stub) == ids


def test_bodies_are_gzip_json(make_client: MakeClient, stub: Any, fast: ClientOptions) -> None:
    client = make_client()
    _pauses(client, 50)
    assert client.flush(5)
    (request,) = stub.requests
    assert request.path == "/v1/events"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "application/json"
    assert request.raw[:2] == b"\x1f\x8b"
    assert len(request.raw) < len(request.body)
    assert json.loads(gzip.decompress(request.raw)) == request.events

    plain = make_client(options=replace(fast, gzip=False))
    _pauses(plain, 2)
    assert plain.flush(5)
    assert "content-encoding" not in stub.requests[1].headers
    assert json.loads(stub.requests[1].raw) == stub.requests[1].events


def test_authorization_header_only_with_a_key(make_client: MakeClient, stub: Any) -> None:
    keyed = make_client(write_key="k1")
    keyed.pause(user_id="u", playback_id="p")
    assert keyed.flush(5)
    anonymous = make_client()
    anonymous.pause(user_id="u", playback_id="p")
    assert anonymous.flush(5)
    assert stub.requests[0].headers["authorization"] == "Bearer k1"
    assert "authorization" not in stub.requests[1].headers


def test_429_is_retried_after_retry_after(make_client: MakeClient, stub: Any, errors: Any) -> None:
    stub.reply(stub.Reply(429, headers={"Retry-After": "0.3"}))
    client = make_client()  # backoff_base_s=0.01: the wait comes from Retry-After
    ids = _pauses(client, 5)
    assert client.flush(10)
    first, second = stub.requests
    assert second.at - first.at >= 0.3
    assert [e["event_id"] for e in first.events] == ids
    assert [e["event_id"] for e in second.events] == ids
    # sent_at is set per attempt, so the collector's skew correction stays right.
    assert second.events[0]["sent_at"] > first.events[0]["sent_at"]
    assert client.stats == ClientStats(sent=5, accepted=5)
    assert errors.items == []


def test_5xx_backs_off_then_gives_up(
    make_client: MakeClient, stub: Any, errors: Any, fast: ClientOptions
) -> None:
    stub.handler = lambda _: stub.Reply(503)
    client = make_client(
        options=replace(fast, max_retries=3, backoff_base_s=0.05, backoff_max_s=1.0)
    )
    ids = _pauses(client, 4)
    assert client.flush(10) is False
    requests = stub.requests
    assert len(requests) == 4  # one attempt and three retries
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    # Equal jitter: retry n waits at least half of 0.05 * 2 ** (n - 1).
    for n, gap in enumerate(gaps, start=1):
        assert gap >= 0.05 * 2 ** (n - 1) / 2
    assert client.stats == ClientStats(failed=4)
    (error,) = errors.items
    assert (error.reason, error.status, error.events) == ("retries_exhausted", 503, 4)
    assert list(error.event_ids) == ids
    assert "503" in str(error)


def test_retry_after_beyond_the_time_budget_gives_up_at_once(
    make_client: MakeClient, stub: Any, errors: Any, fast: ClientOptions
) -> None:
    stub.handler = lambda _: stub.Reply(429, headers={"Retry-After": "3600"})
    client = make_client(options=replace(fast, max_retry_time_s=1.0))
    client.pause(user_id="u", playback_id="p")
    assert client.flush(5) is False
    assert len(stub.requests) == 1
    assert errors.reasons() == ["retries_exhausted"]
    assert "max_retry_time_s" in str(errors.items[0])


def test_connection_errors_are_retried_then_reported(
    make_client: MakeClient, errors: Any, fast: ClientOptions
) -> None:
    # A port nobody listens on: connection refused, every time.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(endpoint=f"http://127.0.0.1:{port}", options=replace(fast, max_retries=2))
    client.pause(user_id="u", playback_id="p")
    assert client.flush(10) is False
    (error,) = errors.items
    assert (error.reason, error.status) == ("retries_exhausted", None)
    assert "3 attempt" in str(error)
    assert client.stats.failed == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [(401, "unauthorized"), (403, "unauthorized"), (400, "bad_request"), (404, "http_error")],
)
def test_client_errors_are_not_retried(
    make_client: MakeClient, stub: Any, errors: Any, status: int, reason: str
) -> None:
    stub.handler = lambda _: stub.Reply(status)
    client = make_client(write_key="wrong")
    ids = _pauses(client, 3)
    assert client.flush(5) is False
    assert len(stub.requests) == 1
    (error,) = errors.items
    assert (error.reason, error.status, list(error.event_ids)) == (reason, status, ids)
    assert client.stats == ClientStats(failed=3)
    # The client keeps working for later events.
    stub.handler = None
    client.pause(user_id="u", playback_id="p")
    assert client.flush(5) is True


def test_413_splits_the_batch_in_halves(make_client: MakeClient, stub: Any, errors: Any) -> None:
    stub.handler = lambda rec: stub.Reply(413 if len(rec.events) > 3 else 200)
    client = make_client()
    ids = _pauses(client, 10)
    assert client.flush(10)
    assert [len(r.events) for r in stub.requests] == [10, 5, 2, 3, 5, 2, 3]
    delivered = [e["event_id"] for r in stub.requests if len(r.events) <= 3 for e in r.events]
    assert delivered == ids
    assert client.stats == ClientStats(sent=10, accepted=10)
    assert errors.items == []


def test_413_for_one_event_drops_only_that_event(
    make_client: MakeClient, stub: Any, errors: Any
) -> None:
    def too_big(rec: Any) -> Any:
        huge = any("huge" in e.get("properties", {}) for e in rec.events)
        return stub.Reply(413 if huge else 200)

    stub.handler = too_big
    client = make_client()
    ids = _pauses(client, 3)
    big = client.pause(user_id="u", playback_id="p", properties={"huge": True})
    ids += _pauses(client, 4)
    assert client.flush(10)  # a definitive refusal still counts as settled
    assert client.stats == ClientStats(sent=7, accepted=7, rejected=1)
    (error,) = errors.items
    assert (error.reason, error.status, error.event_ids) == ("too_large", 413, (big,))
    answered_200 = [r for r in stub.requests if too_big(r).status == 200]
    assert sorted(e["event_id"] for r in answered_200 for e in r.events) == sorted(ids)


def test_rejected_events_are_reported_not_retried(
    make_client: MakeClient, stub: Any, errors: Any
) -> None:
    stub.reply(stub.Reply(200, reject=(1, 3)))
    client = make_client()
    ids = _pauses(client, 5)
    assert client.flush(5) is True
    assert len(stub.requests) == 1
    assert client.stats == ClientStats(sent=5, accepted=3, rejected=2)
    (error,) = errors.items
    assert error.reason == "rejected"
    assert error.event_ids == (ids[1], ids[3])
    assert [r["index"] for r in error.rejections] == [1, 3]
    assert error.rejections[0]["errors"][0]["msg"] == "rejected by the stub"
    time.sleep(0.1)
    assert len(stub.requests) == 1


def test_an_unreadable_200_counts_as_accepted(make_client: MakeClient, stub: Any) -> None:
    stub.reply(stub.Reply(200, body=b"ok"))
    client = make_client()
    _pauses(client, 2)
    assert client.flush(5)
    assert client.stats == ClientStats(sent=2, accepted=2)


def test_a_failing_on_error_does_not_break_the_client(
    stub: Any, fast: ClientOptions, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(_: Any) -> None:
        raise RuntimeError("callback bug")

    stub.reply(stub.Reply(401))
    with Client(stub.url, options=fast, on_error=boom) as client:
        client.pause(user_id="u", playback_id="p")
        assert client.flush(5) is False
        client.pause(user_id="u", playback_id="p")
        assert client.flush(5) is True
    assert "on_error raised" in caplog.text


def test_without_on_error_failures_are_logged(
    stub: Any, fast: ClientOptions, caplog: pytest.LogCaptureFixture
) -> None:
    stub.reply(stub.Reply(400))
    with Client(stub.url, options=fast) as client:
        client.pause(user_id="u", playback_id="p")
        assert client.flush(5) is False
    assert "bad_request" in caplog.text
