"""Settings, counters and the error type of the playpulse client SDK."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from playpulse.errors import PlaypulseError

#: Most events the collector takes in one request.
MAX_EVENTS_PER_REQUEST = 1000
#: Largest request body the collector takes, in bytes (the client stays below it).
MAX_BODY_BYTES = 5_000_000

DeliveryReason = Literal[
    "queue_full",
    "closed",
    "rejected",
    "too_large",
    "unauthorized",
    "bad_request",
    "http_error",
    "retries_exhausted",
    "internal",
]
"""Why events were not stored, as given in :attr:`DeliveryError.reason`.

- ``queue_full``: ``track`` dropped the event because ``max_queue_size`` events wait.
- ``closed``: ``track`` was called after ``close``, or ``close`` gave up waiting and the
  events still queued were abandoned.
- ``rejected``: the collector answered 200 but refused these events as invalid (it keeps
  them in its quarantine); ``rejections`` holds its reasons. Never retried.
- ``too_large``: one event alone was answered 413 (body too large). Dropped.
- ``unauthorized``: 401 or 403 (missing or wrong write key). Not retried.
- ``bad_request``: 400 (the collector could not read the body). Not retried.
- ``http_error``: another non-retryable status (404, 405, 422, ...). Not retried.
- ``retries_exhausted``: 408, 429, 5xx, connection errors or timeouts until
  ``max_retries`` or ``max_retry_time_s`` ran out.
- ``internal``: an unexpected error in the client itself (a bug); the batch is dropped.
"""


class DeliveryError(PlaypulseError):
    """Events were not stored by the collector; passed to the client's ``on_error``.

    Attributes:

    - ``reason``: one of :data:`DeliveryReason`.
    - ``events``: how many events this report is about (``>= 1``).
    - ``status``: the HTTP status of the last answer, or ``None`` when there was none
      (queue full, connection error, timeout).
    - ``event_ids``: the ids of those events, in send order.
    - ``rejections``: for ``reason == "rejected"``, the collector's entries
      ``{"index": int, "event_id": str | None, "errors": [{"loc": str, "msg": str}]}``
      where ``index`` is the position in the request that carried the event; else ``()``.

    The message never contains the write key.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: DeliveryReason,
        events: int,
        status: int | None = None,
        event_ids: tuple[str, ...] = (),
        rejections: tuple[dict[str, Any], ...] = (),
    ) -> None:
        super().__init__(message)
        self.reason: DeliveryReason = reason
        self.events = events
        self.status = status
        self.event_ids = event_ids
        self.rejections = rejections

    def __repr__(self) -> str:
        return (
            f"DeliveryError(reason={self.reason!r}, events={self.events}, "
            f"status={self.status!r}, message={str(self)!r})"
        )


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How a :class:`~playpulse.client.Client` batches, sends and retries.

    Batching: a batch is sent when ``batch_size`` events (1 to 1000) wait, when they
    add up to ``max_batch_bytes`` of uncompressed JSON (1 KiB to 5 MB), or when the
    oldest waiting event has waited ``flush_interval_s`` seconds, whichever comes first.
    At most ``max_queue_size`` events wait; ``track`` drops events beyond that.

    Sending: ``timeout_s`` is the connect/read/write timeout of one request in seconds;
    ``gzip`` compresses request bodies (``Content-Encoding: gzip``).

    Retries (408, 429, 5xx, connection errors, timeouts): up to ``max_retries`` retries
    after the first attempt, waiting an exponential backoff with jitter between
    ``backoff_base_s`` and ``backoff_max_s`` seconds (at least the ``Retry-After`` the
    collector sends), and giving up when the next attempt would start more than
    ``max_retry_time_s`` seconds after the first one.

    ``exit_timeout_s`` is the longest the flush at interpreter exit waits, in seconds.

    Raises ``ValueError`` when a value is out of range.
    """

    batch_size: int = 500
    flush_interval_s: float = 1.0
    max_batch_bytes: int = 512 * 1024
    max_queue_size: int = 10_000
    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_time_s: float = 120.0
    timeout_s: float = 10.0
    gzip: bool = True
    exit_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, accepted: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise ValueError(f"ClientOptions.{name} is {value!r}; it must be {accepted}")

        check(
            "batch_size",
            1 <= self.batch_size <= MAX_EVENTS_PER_REQUEST,
            f"between 1 and {MAX_EVENTS_PER_REQUEST}",
        )
        check("flush_interval_s", self.flush_interval_s > 0, "greater than 0")
        check(
            "max_batch_bytes",
            1024 <= self.max_batch_bytes <= MAX_BODY_BYTES,
            f"between 1024 and {MAX_BODY_BYTES}",
        )
        check("max_queue_size", self.max_queue_size >= 1, "at least 1")
        check("max_retries", self.max_retries >= 0, "at least 0")
        check("backoff_base_s", self.backoff_base_s >= 0, "at least 0")
        check(
            "backoff_max_s",
            self.backoff_max_s >= self.backoff_base_s,
            "at least backoff_base_s",
        )
        check("max_retry_time_s", self.max_retry_time_s >= 0, "at least 0")
        check("timeout_s", self.timeout_s > 0, "greater than 0")
        check("exit_timeout_s", self.exit_timeout_s >= 0, "at least 0")


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of a client's event counters (all counts of events, not requests).

    - ``queued``: accepted by ``track`` and not settled yet (waiting or in flight).
    - ``sent``: carried by a request the collector answered with 200
      (``accepted + `` the rejections listed in those answers).
    - ``accepted``: stored by the collector.
    - ``rejected``: refused by the collector for good: listed as rejected in a 200
      answer (kept in its quarantine), or too large on its own (413).
    - ``dropped``: discarded by ``track`` because the queue was full or the client closed.
    - ``failed``: given up on: retries exhausted, refused as a whole batch (400, 401,
      other 4xx), or abandoned by a ``close`` that timed out.

    Every event ``track`` returned an id for is counted in exactly one of
    ``dropped``, ``queued``, ``accepted``, ``rejected`` or ``failed``.
    """

    queued: int = 0
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    dropped: int = 0
    failed: int = 0
