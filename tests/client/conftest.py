"""A scripted stub collector on 127.0.0.1 for the client tests.

The stub is a real HTTP server (``ThreadingHTTPServer`` on an ephemeral port). It
records every request (arrival time, headers, raw and decompressed body, parsed events)
and answers from a script: queued :class:`Reply` objects first, then ``handler`` (a
function of the request), then 200 with every event accepted.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from playpulse.client import Client, ClientOptions, DeliveryError

#: Longest a hanging reply waits for the test to release it, in seconds.
HANG_LIMIT_S = 30.0


@dataclass
class Recorded:
    """One request as the stub saw it."""

    at: float  # time.monotonic() when the body was read
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    raw: bytes
    body: bytes  # decompressed
    events: list[dict[str, Any]]


@dataclass
class Reply:
    """How the stub answers one request.

    ``reject`` lists indices reported as rejected in a 200 answer; ``hang`` makes the
    stub hold the request until the test ends (then it closes the connection).
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    reject: tuple[int, ...] = ()
    hang: bool = False


class StubCollector:
    """The stub server and what it recorded (see the module docstring).

    Tests build replies as ``stub.Reply(...)`` (no import from this conftest needed).
    """

    Reply = Reply

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Reply] = deque()
        self.handler: Callable[[Recorded], Reply] | None = None
        self.release = threading.Event()
        self._cond = threading.Condition()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(Reply(200, body=b'{"status":"ok"}'), [])

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
                events = json.loads(body) if body else []
                rec = Recorded(time.monotonic(), "POST", self.path, headers, raw, body, events)
                with stub._cond:
                    stub.requests.append(rec)
                    reply = stub.script.popleft() if stub.script else None
                    stub._cond.notify_all()
                if reply is None:
                    reply = stub.handler(rec) if stub.handler else Reply()
                if reply.hang:
                    stub.release.wait(HANG_LIMIT_S)
                    self.close_connection = True
                    return
                self._answer(reply, events)

            def _answer(self, reply: Reply, events: list[dict[str, Any]]) -> None:
                body = reply.body
                if body is None:
                    if reply.status == 200:
                        rejected = [
                            {
                                "index": i,
                                "event_id": events[i].get("event_id"),
                                "errors": [{"loc": "event", "msg": "rejected by the stub"}],
                            }
                            for i in reply.reject
                        ]
                        body = json.dumps(
                            {"accepted": len(events) - len(rejected), "rejected": rejected}
                        ).encode()
                    else:
                        body = json.dumps({"error": f"stub answers {reply.status}"}).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def reply(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        with self._cond:
            self.script.extend(replies)

    def wait_requests(self, n: int, timeout_s: float = 5.0) -> list[Recorded]:
        """Wait until at least ``n`` requests arrived; fail the test after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.requests) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"stub got {len(self.requests)} requests, expected {n}")
                self._cond.wait(remaining)
            return list(self.requests)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event of every request, in arrival order (retries included)."""
        with self._cond:
            return [e for r in self.requests for e in r.events]

    def stop(self) -> None:
        """Release hanging replies and stop the server."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def stub() -> Iterator[StubCollector]:
    """A running stub collector, stopped after the test."""
    server = StubCollector()
    try:
        yield server
    finally:
        server.stop()


class Errors:
    """An ``on_error`` callback that records what it gets (thread-safe)."""

    def __init__(self) -> None:
        self.items: list[DeliveryError] = []
        self._lock = threading.Lock()

    def __call__(self, error: DeliveryError) -> None:
        with self._lock:
            self.items.append(error)

    def reasons(self) -> list[str]:
        """The reasons received so far, in order."""
        with self._lock:
            return [e.reason for e in self.items]

    def event_ids(self) -> list[str]:
        """The event ids of every error received so far."""
        with self._lock:
            return [i for e in self.items for i in e.event_ids]


@pytest.fixture
def errors() -> Errors:
    """A recording ``on_error`` callback."""
    return Errors()


#: Options for tests: batches only on demand or after 60 s, retries fast.
FAST = ClientOptions(
    flush_interval_s=60.0,
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    max_retry_time_s=10.0,
    timeout_s=5.0,
)


@pytest.fixture
def make_client(stub: StubCollector, errors: Errors) -> Iterator[Callable[..., Client]]:
    """Build clients for the stub (``FAST`` options unless given); closes them after."""
    made: list[Client] = []

    def make(
        write_key: str | None = None,
        options: ClientOptions = FAST,
        endpoint: str | None = None,
    ) -> Client:
        client = Client(endpoint or stub.url, write_key, options=options, on_error=errors)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            client.close(timeout_s=2.0)


def _wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(0.01)


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """``wait_until(predicate, timeout_s=5.0)``: poll every 10 ms, fail after the deadline."""
    return _wait_until


@pytest.fixture
def fast() -> ClientOptions:
    """``FAST`` options; derive others with ``dataclasses.replace(fast, ...)``."""
    return FAST
