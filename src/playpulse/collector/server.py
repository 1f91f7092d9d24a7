"""How uvicorn serves the collector: the connection limits of the HTTP edge.

:func:`uvicorn_options` turns :class:`~playpulse.config.Settings` into uvicorn's keyword
options. What each limit covers, and what is done where:

- **idle keep-alive connections** are closed after ``keep_alive_timeout_s`` (uvicorn's
  ``timeout_keep_alive``, armed after each response);
- **concurrency**: past ``max_connections`` open connections (or requests in flight) a
  new request gets ``503 Service Unavailable`` from uvicorn (``limit_concurrency``); the
  TCP connection itself is still accepted, so slow clients are bounded by the timeouts
  below, not by this cap;
- **slow or endless request headers** (slowloris): uvicorn has no timeout for them, and
  its httptools parser no size limit. :class:`HeaderLimitsProtocol` (uvicorn's httptools
  protocol plus two checks) closes a connection whose request line and headers are not
  complete within :data:`HEADER_TIMEOUT_S` of its first byte (or of the connection, for
  the first request), answering 408, and answers 431 to headers larger than
  :data:`MAX_HEADER_BYTES`. (Served with ``--http h11`` instead, uvicorn limits header
  size, ``h11_max_incomplete_event_size``, but not header time.)
- **slow request bodies**: ``request_read_timeout_s`` is enforced by the app (408 and the
  connection closed, see :mod:`playpulse.collector.app`), as is ``max_body_bytes`` (413,
  after draining at most ``request_drain_bytes`` so that the client reads it);
- **shutdown**: requests in flight get :data:`GRACEFUL_SHUTDOWN_S` to finish.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # uvicorn[standard]

from playpulse.config import Settings

#: Time from a connection's opening (or a request's first byte) to the end of the request's
#: headers; past it the collector answers 408 and closes the connection.
HEADER_TIMEOUT_S = 10.0
#: Most bytes of a request line and headers; past it the answer is 431.
MAX_HEADER_BYTES = 64 * 1024
#: After answering 408 or 431 on its own, the protocol reads and drops what the client
#: still sends for this long before it closes (a lingering close: closing with unread
#: data would make the client's kernel see a reset instead of the answer).
LINGER_S = 2.0
#: How long uvicorn lets requests in flight finish on shutdown.
GRACEFUL_SHUTDOWN_S = 5


class HeaderLimitsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit for headers.

    The deadline (:attr:`header_timeout_s`) runs from the connection's opening to the
    end of its first request's headers, and from the first byte of every later
    request to the end of its headers. Past it: ``408`` and the connection closed
    (after the previous request's response, when one is still being sent). Headers over
    :attr:`max_header_bytes`: ``431`` and closed. Relies on uvicorn's parser
    callbacks (``on_message_begin``, ``on_headers_complete``) and its ``cycle`` and
    ``loop`` attributes; tests/collector/test_edge.py checks both limits against the
    installed uvicorn.
    """

    header_timeout_s: float = HEADER_TIMEOUT_S
    max_header_bytes: int = MAX_HEADER_BYTES

    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes: int = 0
    _lingering: bool = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the connection and the deadline of its first request's headers."""
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadline, then let uvicorn clean up."""
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; refuse headers that grow past :attr:`max_header_bytes`."""
        if self._lingering:  # answered already: drop what still arrives
            return
        waiting = self._header_timer is not None
        super().data_received(data)
        if waiting and self._header_timer is not None:  # still in the headers
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._cancel_header_timer()
                self._answer_and_close(
                    "431 Request Header Fields Too Large",
                    f"request headers over {self.max_header_bytes} bytes",
                )

    def on_message_begin(self) -> None:
        """A request starts: its headers have :attr:`header_timeout_s` to arrive."""
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        """The headers are in: stop their deadline and run the request."""
        self._cancel_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        self._header_bytes = 0
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._header_bytes = 0

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # The headers of a pipelined request are late while the previous request's
            # response is still being sent: give them another period, then answer.
            bytes_so_far = self._header_bytes
            self._arm_header_timer()
            self._header_bytes = bytes_so_far
            return
        self._answer_and_close(
            "408 Request Timeout",
            f"request headers did not arrive within {self.header_timeout_s:g} s",
        )

    def _answer_and_close(self, status: str, message: str) -> None:
        """Answer ``status``, stop sending, drop what arrives for :data:`LINGER_S`, close."""
        transport = self.transport
        if transport.is_closing():
            return
        body = message.encode()
        transport.write(
            f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        self._lingering = True
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(LINGER_S, transport.close)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn keyword options (``uvicorn.run(app, **options)``) for the collector's limits.

    Covers ``timeout_keep_alive`` (``settings.keep_alive_timeout_s``),
    ``limit_concurrency`` (``settings.max_connections``), ``timeout_graceful_shutdown``,
    h11's header size limit and ``http``: :class:`HeaderLimitsProtocol` (see the module
    docstring). Host, port, workers and
    logging are the caller's. The body read timeout and size limits are the app's own.
    """
    options: dict[str, Any] = {
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "limit_concurrency": settings.max_connections,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
    }
    options["http"] = HeaderLimitsProtocol
    return options
