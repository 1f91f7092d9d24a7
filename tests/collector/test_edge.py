"""The HTTP edge of a real collector on 127.0.0.1: timeouts, size and connection limits,
answers that reach clients which send the whole body first, and storage failures that
are 503s, never 500s."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from playpulse.collector.server import (
    GRACEFUL_SHUTDOWN_S,
    HeaderLimitsProtocol,
    uvicorn_options,
)
from playpulse.config import Settings
from playpulse.stream.base import Appended, EventStream
from playpulse.stream.testing import GatedStream
from playpulse.testing import load_module

#: Socket timeout of every raw client here: a test that waits longer has failed.
SOCKET_TIMEOUT_S = 20.0


# events.py, loaded as a module (tests is not a package: importlib import mode)
event = load_module(Path(__file__).with_name("events.py"), "playpulse_tests_collector_events").event


@contextlib.contextmanager
def connect(url: str) -> Iterator[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S)
    try:
        yield sock
    finally:
        sock.close()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(response: bytes) -> tuple[int, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def metric(url: str, line_start: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_uvicorn_options_carry_the_settings():
    settings = Settings(keep_alive_timeout_s=7, max_connections=123)
    options = uvicorn_options(settings)
    assert options["timeout_keep_alive"] == 7
    assert options["limit_concurrency"] == 123
    assert options["timeout_graceful_shutdown"] == GRACEFUL_SHUTDOWN_S
    assert options["http"] is HeaderLimitsProtocol


def test_urllib_client_reads_the_413_of_a_body_it_sent_whole(make_collector):
    with make_collector(max_body_bytes=4096) as running:
        body = json.dumps([event(title="x" * 500) for _ in range(400)]).encode()
        assert len(body) > 200_000
        request = urllib.request.Request(
            f"{running.url}/v1/events", data=body, headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT_S)
        assert caught.value.code == 413
        error = json.loads(caught.value.read())["error"]
        assert error["code"] == "body_too_large"
        assert "4096" in error["message"]
        assert running.stored_event_ids() == []


def test_chunked_body_over_the_limit_gets_its_413_after_being_sent_whole(make_collector):
    with make_collector(max_body_bytes=4096) as running, connect(running.url) as sock:
        chunk = b"x" * 8192
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: keep-alive\r\n\r\n"
            + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 64
            + b"0\r\n\r\n"
        )
        status, body = status_and_body(read_until_closed(sock))
    assert status == 413
    assert json.loads(body)["error"]["code"] == "body_too_large"


def test_body_over_the_drain_limit_is_refused_at_once(make_collector):
    with (
        make_collector(max_body_bytes=4096, request_drain_bytes=10_000) as running,
        connect(running.url) as sock,
    ):
        # The client waits for 100 Continue (as curl does): nothing is read, 413 at once.
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        status, body = status_and_body(read_until_closed(sock))
    assert status == 413
    assert "50000000 bytes" in json.loads(body)["error"]["message"]


def test_unauthorized_whole_body_client_reads_the_401(make_collector):
    with make_collector(write_keys=["k"]) as running:
        body = json.dumps([event() for _ in range(2000)]).encode()
        request = urllib.request.Request(f"{running.url}/v1/events", data=body)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=SOCKET_TIMEOUT_S)
        assert caught.value.code == 401


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(make_collector):
    with make_collector(request_read_timeout_s=0.5) as running:
        with connect(running.url) as sock:
            sock.sendall(
                b'POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n[{"a":'
            )
            status, body = status_and_body(read_until_closed(sock))
        assert status == 408
        error = json.loads(body)["error"]
        assert error["code"] == "request_timeout"
        assert "0.5 s" in error["message"]
        assert metric(running.url, 'playpulse_request_errors_total{code="request_timeout"}') == 1
        assert running.quarantine.count() == 0


def test_headers_that_do_not_arrive_get_408(make_collector):
    class FastTimeout(HeaderLimitsProtocol):
        header_timeout_s = 0.5

    with make_collector(server_options={"http": FastTimeout}) as running:
        with connect(running.url) as sock:
            sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Le")
            status, body = status_and_body(read_until_closed(sock))
        assert status == 408
        assert b"0.5 s" in body
        with connect(running.url) as idle:  # a connection that never sends a byte
            status, _ = status_and_body(read_until_closed(idle))
        assert status == 408
        # A complete request on a keep-alive connection is served, then the next one's
        # headers get the same deadline.
        with connect(running.url) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            first = sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost:")
            status, _ = status_and_body(read_until_closed(sock))
        assert status == 408


def test_headers_over_the_size_limit_get_431(collector):
    with connect(collector.url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                sock.sendall(b"X-Padding: " + b"p" * 1000 + b"\r\n")
        status, _ = status_and_body(read_until_closed(sock))
    assert status == 431


def test_past_max_connections_requests_get_503(make_collector):
    with make_collector(max_connections=3) as running:
        with contextlib.ExitStack() as held:
            for _ in range(3):
                held.enter_context(connect(running.url))
            refused = httpx.get(f"{running.url}/healthz", timeout=10)
        assert refused.status_code == 503
        assert httpx.get(f"{running.url}/healthz", timeout=10).status_code == 200


class FailingStream(GatedStream):
    """A real stream whose appends raise ``error``: a fault of the storage below."""

    def __init__(self, inner: EventStream, error: Exception) -> None:
        super().__init__(inner)
        self.error = error

    def append(self, records: Sequence[tuple[str, bytes]]) -> list[Appended]:
        """Raise the configured error."""
        raise self.error

    def append_offsets(self, records: Sequence[tuple[str, bytes]]) -> dict[int, range]:
        """Raise the configured error."""
        raise self.error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (OSError(28, "No space left on device"), "storage_unavailable"),
        (RuntimeError("a bug"), "internal_error"),
    ],
)
def test_storage_faults_and_bugs_are_503_with_retry_after(make_collector, error, code):
    with make_collector(wrap=lambda s: FailingStream(s, error)) as running:
        response = running.post(json.dumps([event()]))
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == code
        assert metric(running.url, f'playpulse_request_errors_total{{code="{code}"}}') == 1
        assert metric(running.url, 'playpulse_requests_total{status="503"}') == 1


def test_unwritable_quarantine_is_503_and_nothing_is_appended(collector):
    collector.quarantine.close()  # every write to it fails from now on
    valid, invalid = event(), event(event_type="nope")
    response = collector.post(json.dumps([valid, invalid]))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "quarantine_unavailable"
    assert response.headers["retry-after"]
    assert collector.stored_event_ids() == []  # the client sends the batch again
    malformed = collector.post(b"[1,")
    assert malformed.status_code == 503
    assert malformed.json()["error"]["code"] == "quarantine_unavailable"


def test_a_deleted_data_dir_stops_acknowledging(collector):
    shutil.rmtree(collector.settings.data_dir)
    response = collector.post(json.dumps([event()]))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] in ("stream_unavailable", "storage_unavailable")
    assert response.headers["retry-after"]
    assert httpx.get(f"{collector.url}/readyz", timeout=10).status_code == 503
    assert httpx.get(f"{collector.url}/healthz", timeout=10).status_code == 200


def test_idle_keep_alive_connections_are_closed(make_collector):
    with make_collector(keep_alive_timeout_s=1) as running, connect(running.url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        response = read_until_closed(sock)  # returns once the server closes the idle one
    assert response.startswith(b"HTTP/1.1 200")


def test_late_pipelined_headers_wait_for_the_response_in_flight(make_collector):
    class FastTimeout(HeaderLimitsProtocol):
        header_timeout_s = 0.3

    gated: list[GatedStream] = []

    def wrap(stream: EventStream) -> EventStream:
        gated.append(GatedStream(stream))
        return gated[0]

    with (
        make_collector(wrap=wrap, server_options={"http": FastTimeout}) as running,
        connect(running.url) as sock,
    ):
        gated[0].gate.clear()  # the first request's append waits
        body = json.dumps([event()]).encode()
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
            + b"GET /healthz HTTP/1.1\r\nHo"  # the next request's headers, cut short
        )
        # Several header periods pass while the append waits: the connection stays open
        # and silent (no 408 before the 200, no close).
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(65536)
        sock.settimeout(SOCKET_TIMEOUT_S)
        gated[0].gate.set()
        answer = read_until_closed(sock)
    first, _, rest = answer.partition(b"HTTP/1.1 408")
    assert first.startswith(b"HTTP/1.1 200")
    assert b'"accepted":1' in first
    assert rest  # then the late headers got their 408
