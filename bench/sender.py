"""The benchmarks' HTTP sender: pre-built HTTP/1.1 requests on uvloop, parsed by httptools.

Shared by bench/ingest.py (closed loop: each connection sends its next request as soon as
the previous one is answered, as fast as the collector takes them) and bench/sustained.py
(paced, :func:`send_paced`: one request every ``interval_s`` at a fixed offered rate,
at most ``connections`` in flight).

Why not httpx: sender and service share the machine's cores, so every CPU cycle the
sender spends is taken from the system under test. httpx costs about 15x more CPU per
request than this sender (bench/ingest.py ``--compare-senders``; its comment gives the
figures). Here each connection is an :class:`asyncio.Protocol` on uvloop holding one
request in flight; a request is one buffer (HTTP/1.1 head and body, so sending it is a
single write); the response is parsed by httptools (the C parser uvicorn itself uses)
and its ``accepted`` count by msgspec. It speaks only what the benchmarks need: POST with
Content-Length; a response with Content-Length or a chunked body; keep-alive.

Errors are never retried nor hidden: a request that fails (connection refused or reset,
no answer within the timeout, an unparsable answer) is reported by its exception's class
name, and a non-200 answer by its status, so that a benchmark can count them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httptools
import msgspec

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
    uvloop = None  # type: ignore[assignment]

#: A request not answered within this many seconds fails with TimeoutError.
REQUEST_TIMEOUT_S = 30.0
#: What a failed request is reported as: these exceptions, by class name.
REQUEST_ERRORS = (OSError, TimeoutError, httptools.HttpParserError)

T = TypeVar("T")


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight at a time.

    :meth:`request` writes a pre-built request and returns a future of ``(status,
    body)``; it fails with ``ConnectionResetError`` when the server closes the
    connection, with ``httptools.HttpParserError`` on a malformed answer, and with
    ``TimeoutError`` when :func:`expire_requests` gives up on it. Open one with
    :func:`connect`.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.parts: list[bytes] = []
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        #: ``time.monotonic()`` when the request in flight was written.
        self.sent_at = 0.0
        #: ``time.perf_counter()`` when the last answer was complete.
        self.answered_at = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._resolve(error=exc or ConnectionResetError("the server closed the connection"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        self.answered_at = time.perf_counter()
        status = self.parser.get_status_code()
        body = b"".join(self.parts)
        self.parts = []
        if not self.parser.should_keep_alive():
            self.close()
        self._resolve(result=(status, body))

    def _resolve(
        self, result: tuple[int, bytes] | None = None, error: BaseException | None = None
    ) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            return
        if error is not None:
            waiter.set_exception(error)
        else:
            assert result is not None
            waiter.set_result(result)

    def fail(self, error: BaseException) -> None:
        """Fail the request in flight (if any) with ``error`` and close the connection."""
        self._resolve(error=error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Send ``data`` (a whole HTTP/1.1 request); the future gets ``(status, body)``."""
        assert self.transport is not None
        assert self.waiter is None
        waiter = self.waiter = self.loop.create_future()
        self.sent_at = time.monotonic()
        if self.closed:  # closed by the server while idle: never written
            self._resolve(error=ConnectionResetError("the server closed the connection"))
        else:
            self.transport.write(data)
        return waiter


async def connect(port: int, host: str = "127.0.0.1") -> Connection:
    """A new :class:`Connection` to ``host:port``; raises OSError or TimeoutError
    (after :data:`REQUEST_TIMEOUT_S`)."""
    loop = asyncio.get_running_loop()
    transport, conn = await asyncio.wait_for(
        loop.create_connection(Connection, host, port), REQUEST_TIMEOUT_S
    )
    # uvloop may call connection_made only after create_connection returns.
    conn.transport = transport
    return conn


async def expire_requests(
    connections: Iterable[Connection | None], done: asyncio.Event, timeout_s: float
) -> None:
    """Until ``done`` is set, fail every request of ``connections`` (read anew each
    half second) unanswered for more than ``timeout_s`` with TimeoutError: one timer for
    all connections instead of one per request."""
    while not done.is_set():
        await asyncio.sleep(0.5)
        now = time.monotonic()
        for conn in list(connections):
            if conn is not None and conn.waiter is not None and now - conn.sent_at > timeout_s:
                conn.fail(TimeoutError("no response within the request timeout"))


def request_head(port: int, headers: dict[str, str] | None = None) -> bytes:
    """The head of a POST /v1/events JSON request to 127.0.0.1:``port`` with
    ``headers`` (e.g. Authorization), up to but without Content-Length."""
    head = f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += "Content-Type: application/json\r\nUser-Agent: playpulse-bench\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return head.encode()


def raw_request(head: bytes, body: bytes) -> bytes:
    """A whole request: ``head`` (from :func:`request_head`), Content-Length, ``body``."""
    return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)


def raw_requests(bodies: list[bytes], port: int, headers: dict[str, str]) -> list[bytes]:
    """:func:`raw_request` of each body, built once before a run."""
    head = request_head(port, headers)
    return [raw_request(head, body) for body in bodies]


class _Answer(msgspec.Struct):
    accepted: int = 0


_answer = msgspec.json.Decoder(_Answer)


def accepted_in(status: int, body: bytes) -> int:
    """The ``accepted`` count of a collector's answer (0 unless status 200); raises
    msgspec.DecodeError if a 200 answer is not the collector's JSON."""
    if status != 200:
        return 0
    return _answer.decode(body).accepted


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on a fresh uvloop event loop (asyncio's if uvloop is
    missing)."""
    factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


# --------------------------------------------------------------------------------------
# Paced: a fixed offered rate


class PacedRequests(Protocol):
    """What :func:`send_paced` sends, and where its answers go (all on the event loop)."""

    def request(self, i: int) -> bytes:
        """Request number ``i`` (0, 1, ...), built at its send time: a whole HTTP/1.1
        request, e.g. :func:`raw_request`."""

    def answered(self, i: int, status: int, accepted: int, sent_s: float, acked_s: float) -> None:
        """Request ``i`` was answered with ``status`` (``accepted`` events if 200);
        ``sent_s`` and ``acked_s`` are ``time.perf_counter()`` when it was written and when
        its answer was complete."""

    def failed(self, i: int, error: str) -> None:
        """Request ``i`` got no answer: ``error`` is the exception's class name, prefixed
        with ``connect: `` when no connection could be opened (request ``i`` then was
        never built)."""


@dataclass
class Paced:
    """What :func:`send_paced` did. Times are seconds."""

    #: Requests started (every one ends in ``answered`` or ``failed``).
    sent: int = 0
    #: Requests started more than one interval after their planned time (the sender or
    #: the in-flight bound could not keep up).
    late_sends: int = 0
    #: From the first planned send to the last answer.
    send_window_s: float = 0.0
    #: Connections opened (a failed request closes its connection).
    connections_opened: int = 0
    #: Most requests in flight at once.
    max_in_flight: int = 0


class _Pool:
    """Up to ``size`` keep-alive connections, opened when needed; idle ones reused last
    in, first out (so few connections stay busy)."""

    def __init__(self, port: int, size: int, stats: Paced) -> None:
        self.port = port
        self.size = size
        self.stats = stats
        self.idle: list[Connection] = []
        self.live: list[Connection] = []
        self.opening = 0
        self.freed = asyncio.Event()

    async def get(self) -> Connection:
        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
                self._drop(conn)
            if len(self.live) + self.opening < self.size:
                self.opening += 1
                try:
                    conn = await connect(self.port)
                finally:
                    self.opening -= 1
                self.live.append(conn)
                self.stats.connections_opened += 1
                return conn
            self.freed.clear()
            await self.freed.wait()

    def put(self, conn: Connection) -> None:
        if conn.closed:
            self._drop(conn)
        else:
            self.idle.append(conn)
        self.freed.set()

    def _drop(self, conn: Connection) -> None:
        with contextlib.suppress(ValueError):
            self.live.remove(conn)

    def close(self) -> None:
        for conn in self.live:
            conn.close()
        self.live.clear()
        self.idle.clear()


async def send_paced(
    port: int,
    requests: PacedRequests,
    *,
    count: int,
    interval_s: float,
    connections: int = 64,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> Paced:
    """Send ``count`` requests to 127.0.0.1:``port``, request ``i`` at ``i * interval_s``
    seconds after the start (or as soon after as a connection is free: at most
    ``connections`` requests in flight), and wait for every answer.

    Each request ends in ``requests.answered`` or ``requests.failed`` (never retried);
    a request unanswered after ``timeout_s`` fails with ``TimeoutError``. Returns what was
    done (:class:`Paced`). Exceptions raised by ``requests`` propagate.
    """
    if count < 1 or interval_s <= 0 or connections < 1:
        raise ValueError(
            f"send_paced needs count >= 1, interval_s > 0 and connections >= 1 "
            f"(got {count}, {interval_s}, {connections})"
        )
    stats = Paced()
    pool = _Pool(port, connections, stats)
    done = asyncio.Event()
    in_flight: set[asyncio.Task[None]] = set()

    async def complete(
        i: int, conn: Connection, answer: asyncio.Future[tuple[int, bytes]], sent_s: float
    ) -> None:
        try:
            status, body = await answer
        except REQUEST_ERRORS as exc:
            conn.close()
            pool.put(conn)
            requests.failed(i, type(exc).__name__)
            return
        acked_s = conn.answered_at
        pool.put(conn)
        requests.answered(i, status, accepted_in(status, body), sent_s, acked_s)

    guard = asyncio.create_task(expire_requests(pool.live, done, timeout_s))
    try:
        t0 = time.perf_counter()
        for i in range(count):
            delay = t0 + i * interval_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                conn = await pool.get()
            except REQUEST_ERRORS as exc:
                stats.sent += 1
                requests.failed(i, f"connect: {type(exc).__name__}")
                continue
            if t0 + (i + 1) * interval_s < time.perf_counter():
                stats.late_sends += 1
            data = requests.request(i)
            sent_s = time.perf_counter()
            task = asyncio.create_task(complete(i, conn, conn.request(data), sent_s))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            stats.sent += 1
            stats.max_in_flight = max(stats.max_in_flight, len(in_flight))
        if in_flight:
            await asyncio.gather(*in_flight)
        stats.send_window_s = time.perf_counter() - t0
    finally:
        done.set()
        guard.cancel()
        for task in in_flight:
            task.cancel()
        pool.close()
    return stats
