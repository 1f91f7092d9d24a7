"""The client SDK: queue events in the app, send them in batches to the collector.

``track`` (and its helpers) checks what is cheap to check, encodes the event to JSON and
puts it in a bounded in-memory queue; it never blocks on the network and never raises
for delivery problems. One daemon thread per client takes batches from the queue and
POSTs them to ``{endpoint}/v1/events``, retrying what is worth retrying. Every event
ends in exactly one counter of :class:`~playpulse.client.options.ClientStats`, and
every event that is not stored is reported to ``on_error`` as a
:class:`~playpulse.client.options.DeliveryError`.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import msgspec

from playpulse import __version__
from playpulse.client.helpers import ContextLike, EventHelpers
from playpulse.client.options import ClientOptions, ClientStats, DeliveryError, DeliveryReason
from playpulse.client.transport import (
    RETRYABLE_STATUSES,
    SENT_AT_OVERHEAD,
    backoff_delay,
    build_body,
    parse_rejections,
    parse_retry_after,
)
from playpulse.events.codec import MAX_EVENT_BYTES, json_size
from playpulse.events.model import (
    EVENT_CLASSES,
    EVENT_TYPES,
    MAX_ID_CHARS,
    MAX_PROPERTIES_BYTES,
)

logger = logging.getLogger("playpulse.client")

_encoder = msgspec.json.Encoder()

# Envelope fields: set from track's own arguments or by the client and the collector,
# never through **fields.
_ENVELOPE = frozenset(
    {
        "event_type",
        "event_id",
        "occurred_at",
        "sent_at",
        "received_at",
        "derived_at",
        "user_id",
        "anonymous_id",
        "session_id",
        "context",
        "properties",
    }
)


@dataclass(frozen=True, slots=True)
class _Spec:
    allowed: frozenset[str]  # event-specific field names
    required: frozenset[str]  # event-specific fields without a default
    playback: bool


def _specs() -> dict[str, _Spec]:
    out = {}
    for cls in EVENT_CLASSES:
        fields = [f for f in msgspec.structs.fields(cls) if f.name not in _ENVELOPE]
        out[str(cls.__struct_config__.tag)] = _Spec(
            allowed=frozenset(f.name for f in fields),
            required=frozenset(f.name for f in fields if f.required),
            playback=cls.is_playback,
        )
    return out


_SPECS = _specs()
_ABANDONED = "close() timed out before they were sent"


@dataclass(slots=True)
class _Item:
    """One queued event: its JSON object without ``sent_at`` (ends with ``}``)."""

    seq: int
    event_id: str
    payload: bytes
    size: int  # bytes it adds to a request body (payload, sent_at, separator)
    enqueued_at: float  # time.monotonic()
    settled: bool = False


@dataclass(frozen=True, slots=True)
class _GaveUp:
    reason: DeliveryReason
    status: int | None
    detail: str


def _plain(value: Any) -> Any:
    """A dict for any non-dict mapping (msgspec encodes dicts and Structs, not Mappings)."""
    if isinstance(value, Mapping) and not isinstance(value, dict):
        return dict(value)
    return value


def _check_id(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        raise ValueError(f"{name} must be a string of 1 to {MAX_ID_CHARS} characters")


def _excerpt(response: httpx.Response) -> str:
    text = response.content[:200].decode("utf-8", "replace").strip()
    return f": {text}" if text else ""


def _exit_hook(ref: weakref.ref[Client]) -> Callable[[], None]:
    # Holds the client weakly: a client closed (and unregistered) or collected is not
    # kept alive by the atexit registry.
    def hook() -> None:
        client = ref()
        if client is not None:
            client.close(timeout_s=client.options.exit_timeout_s)

    return hook


class Client(EventHelpers):
    """Sends events to a playpulse collector in the background.

    ``endpoint`` is the collector's base URL (``http://127.0.0.1:8080``); events go to
    ``{endpoint}/v1/events``. ``write_key``, when given, is sent as
    ``Authorization: Bearer <write_key>`` and appears in no log, repr or error.
    ``options`` sets batching, retries and timeouts (:class:`ClientOptions`).
    ``on_error`` is called with a :class:`DeliveryError` for every event that is not
    stored (queue full, rejected, given up): from the calling thread for events that
    ``track`` drops or ``close`` abandons, from the client's thread otherwise; it must
    return quickly and must not call ``flush`` or ``close`` expecting them to wait.
    Exceptions it raises are logged and swallowed. Without ``on_error``, such events are
    logged at WARNING on the ``playpulse.client`` logger.

    Use as a context manager, or call :meth:`close`; clients not closed are flushed at
    interpreter exit (waiting at most ``options.exit_timeout_s``).

    Raises ``ValueError`` for an endpoint that is not an http(s) URL (or carries user
    info, a query or a fragment) and for an empty ``write_key``.
    """

    def __init__(
        self,
        endpoint: str,
        write_key: str | None = None,
        *,
        options: ClientOptions | None = None,
        on_error: Callable[[DeliveryError], None] | None = None,
    ) -> None:
        try:
            url = httpx.URL(endpoint)
        except (TypeError, httpx.InvalidURL) as exc:
            raise ValueError(f"endpoint {endpoint!r} is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"endpoint must be an http(s) URL such as 'http://127.0.0.1:8080', "
                f"got scheme {url.scheme!r}"
            )
        if url.userinfo or url.query or url.fragment:
            raise ValueError(
                "endpoint must not carry credentials, a query or a fragment; "
                "pass the key as write_key"
            )
        if write_key is not None and (not isinstance(write_key, str) or not write_key):
            raise ValueError("write_key must be a non-empty string or None")
        self.options = options if options is not None else ClientOptions()
        prefix = url.path.rstrip("/")
        self._endpoint = str(url.copy_with(path=prefix)).rstrip("/")
        self._events_url = str(url.copy_with(path=prefix + "/v1/events"))
        self._has_key = write_key is not None
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"playpulse-python/{__version__}",
        }
        if self.options.gzip:
            self._headers["Content-Encoding"] = "gzip"
        if write_key is not None:
            self._headers["Authorization"] = f"Bearer {write_key}"
        self._on_error = on_error
        # Made on the client's thread: building its TLS context takes ~0.1 s.
        self._http: httpx.Client | None = None

        self._cond = threading.Condition()
        self._buffer: deque[_Item] = deque()
        self._buffer_bytes = 0
        self._in_flight = 0
        self._last_seq = 0  # seq of the newest queued event
        self._settled_seq = 0  # every event up to this seq is settled
        self._flush_upto = 0  # send events up to this seq without waiting for a batch
        self._closed = False
        self._abandon = False  # close() timed out: stop retrying, fail what is left
        self._worker_done = False
        self._stop = threading.Event()  # interrupts backoff waits once abandoned
        self._counts = {"sent": 0, "accepted": 0, "rejected": 0, "dropped": 0, "failed": 0}

        self._thread = threading.Thread(target=self._run, name="playpulse-client", daemon=True)
        self._thread.start()
        self._exit_hook = _exit_hook(weakref.ref(self))
        atexit.register(self._exit_hook)

    # -- public API -------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The collector base URL, without a trailing slash."""
        return self._endpoint

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def stats(self) -> ClientStats:
        """A consistent snapshot of the event counters (see :class:`ClientStats`)."""
        with self._cond:
            return ClientStats(queued=len(self._buffer) + self._in_flight, **self._counts)

    def track(
        self,
        event_type: str,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        session_id: str | None = None,
        context: ContextLike | None = None,
        properties: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        **fields: Any,
    ) -> str:
        """Queue one event and return its ``event_id``; never blocks, never sends.

        - ``event_type``: one of :data:`~playpulse.events.model.EVENT_TYPES`.
        - ``user_id`` / ``anonymous_id``: at least one is required (1 to 256 chars).
        - ``session_id``: optional, 1 to 256 characters.
        - ``context``: a :class:`~playpulse.events.model.Context` or a dict of its fields.
        - ``properties``: free-form JSON object, at most 8 KiB as JSON.
        - ``event_id``: defaults to a new UUID4 string; the collector's dedup key.
        - ``occurred_at``: when it happened, UTC-aware (any zone is converted to UTC);
          defaults to now. ``sent_at`` is added when the batch is sent.
        - ``**fields``: the event type's own fields (``playback_id``, ``content``,
          ``position_s`` in seconds, ``amount_minor`` in minor currency units, ...);
          ``None`` values are left out.

        Checks only what is cheap here (the collector validates the rest and rejected
        events reach ``on_error``). Raises ``ValueError`` for an unknown event type, a
        field the type does not have, a missing required field, neither ``user_id`` nor
        ``anonymous_id``, a naive ``occurred_at``, a value that is not JSON-encodable,
        or an event larger than 32 KiB as JSON.

        If ``max_queue_size`` events already wait, or the client is closed, the event is
        dropped: ``stats.dropped`` grows and ``on_error`` is called (in this thread).
        """
        spec = _SPECS.get(event_type) if isinstance(event_type, str) else None
        if spec is None:
            raise ValueError(
                f"unknown event_type {event_type!r}; expected one of: {', '.join(EVENT_TYPES)}"
            )
        if user_id is None and anonymous_id is None:
            raise ValueError(f"{event_type}: one of user_id or anonymous_id is required")
        _check_id("user_id", user_id)
        _check_id("anonymous_id", anonymous_id)
        _check_id("session_id", session_id)
        _check_id("event_id", event_id)
        if occurred_at is None:
            occurred_at = datetime.now(UTC)
        elif not isinstance(occurred_at, datetime):
            raise ValueError(f"occurred_at must be a datetime, got {type(occurred_at).__name__}")
        elif occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
            raise ValueError(
                "occurred_at is a naive datetime; pass a UTC-aware one, such as datetime.now(UTC)"
            )
        else:
            occurred_at = occurred_at.astimezone(UTC)
        unknown = fields.keys() - spec.allowed
        if unknown:
            allowed = ", ".join(sorted(spec.allowed)) or "none"
            raise ValueError(
                f"{event_type} has no field(s) {', '.join(sorted(unknown))}; "
                f"its own fields are: {allowed}"
            )
        given = {k: _plain(v) for k, v in fields.items() if v is not None}
        missing = spec.required - given.keys()
        if missing:
            raise ValueError(f"{event_type} needs {', '.join(sorted(missing))}")
        if spec.playback and "playback_id" not in given and "content" not in given:
            raise ValueError(f"{event_type} needs playback_id or content")

        if event_id is None:
            event_id = str(uuid.uuid4())
        doc: dict[str, Any] = {
            "event_type": event_type,
            "event_id": event_id,
            "occurred_at": occurred_at,
        }
        for name, value in (
            ("user_id", user_id),
            ("anonymous_id", anonymous_id),
            ("session_id", session_id),
            ("context", _plain(context)),
            ("properties", _plain(properties)),
        ):
            if value is not None:
                doc[name] = value
        doc.update(given)
        try:
            payload = _encoder.encode(doc)
            props_size = json_size(doc["properties"]) if "properties" in doc else 0
        except (TypeError, ValueError, msgspec.MsgspecError) as exc:
            raise ValueError(f"{event_type}: a value is not JSON-encodable: {exc}") from None
        if props_size > MAX_PROPERTIES_BYTES:
            raise ValueError(
                f"properties is {props_size} bytes as JSON; the limit is {MAX_PROPERTIES_BYTES}"
            )
        size = len(payload) + SENT_AT_OVERHEAD
        if size > MAX_EVENT_BYTES:
            raise ValueError(
                f"{event_type} is {size} bytes as JSON; the limit is {MAX_EVENT_BYTES}"
            )

        drop: DeliveryReason | None = None
        with self._cond:
            if self._closed:
                drop = "closed"
            elif len(self._buffer) >= self.options.max_queue_size:
                drop = "queue_full"
            else:
                was_empty = not self._buffer
                self._last_seq += 1
                self._buffer.append(
                    _Item(self._last_seq, event_id, payload, size + 1, time.monotonic())
                )
                self._buffer_bytes += size + 1
                if (
                    was_empty
                    or len(self._buffer) >= self.options.batch_size
                    or self._buffer_bytes >= self.options.max_batch_bytes
                ):
                    self._cond.notify_all()
                return event_id
            self._counts["dropped"] += 1
        if drop == "closed":
            message = f"{event_type} event dropped: the client is closed"
        else:
            message = (
                f"{event_type} event dropped: {self.options.max_queue_size} events "
                "already wait to be sent (max_queue_size)"
            )
        self._report(DeliveryError(message, reason=drop, events=1, event_ids=(event_id,)))
        return event_id

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send every event queued so far now, and wait until each one is settled.

        ``timeout_s`` bounds the wait in seconds (``None``: until settled, which the
        retry limits bound). Returns ``True`` when all those events were stored or
        definitively rejected by the collector, ``False`` when the timeout passed first
        or some event was given up on (``stats.failed`` grew meanwhile). Events not yet
        settled at a timeout keep being sent. Called from the client's own thread
        (inside ``on_error``) it returns ``False`` at once. Never raises.
        """
        if threading.current_thread() is self._thread:
            return False
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            target = self._last_seq
            failed_before = self._counts["failed"]
            if target > self._flush_upto:
                self._flush_upto = target
                self._cond.notify_all()
            while self._settled_seq < target:
                if self._worker_done:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._counts["failed"] == failed_before

    def close(self, timeout_s: float | None = None) -> None:
        """Send what is queued, then stop the client's thread; idempotent.

        Later ``track`` calls drop their event (reason ``closed``). ``timeout_s`` bounds
        the wait in seconds (``None``: until the queue is settled, which the retry
        limits bound). When it passes, the events still waiting are given up at once
        (``stats.failed``, ``on_error`` with reason ``closed``, from this thread); the
        batch in flight is settled when its request ends (at most ``timeout_s`` of the
        options later), then the thread stops. A second call returns at once. Never
        raises.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._flush_upto = self._last_seq
            self._cond.notify_all()
        atexit.unregister(self._exit_hook)
        if threading.current_thread() is self._thread:
            return  # called from on_error: the thread drains the queue, then stops
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            # Give up: fail what waits now; the batch in flight ends with its request.
            with self._cond:
                self._abandon = True
                abandoned = list(self._buffer)
                self._buffer.clear()
                self._buffer_bytes = 0
                self._in_flight += len(abandoned)
                self._cond.notify_all()
            self._stop.set()
            if abandoned:
                self._fail(abandoned, _GaveUp("closed", None, _ABANDONED))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        key = "'<redacted>'" if self._has_key else "None"
        return f"Client(endpoint={self._endpoint!r}, write_key={key}, stats={self.stats})"

    # -- the background thread --------------------------------------------------------

    def _report(self, error: DeliveryError) -> None:
        if self._on_error is None:
            logger.warning("playpulse: %s", error)
            return
        try:
            self._on_error(error)
        except Exception:
            logger.exception("playpulse: on_error raised; the error is ignored")

    def _settle(
        self, items: Sequence[_Item], outcome: Literal["accepted", "rejected", "failed"]
    ) -> None:
        with self._cond:
            for item in items:
                if not item.settled:
                    item.settled = True
                    self._in_flight -= 1
                    self._counts[outcome] += 1

    def _fail(self, items: Sequence[_Item], gave_up: _GaveUp) -> None:
        self._settle(items, "failed")
        message = f"{len(items)} event(s) not delivered ({gave_up.reason}): {gave_up.detail}"
        self._report(
            DeliveryError(
                message,
                reason=gave_up.reason,
                events=len(items),
                status=gave_up.status,
                event_ids=tuple(i.event_id for i in items),
            )
        )

    def _run(self) -> None:
        try:
            self._http = httpx.Client(timeout=self.options.timeout_s)
            self._loop()
        except Exception:  # a bug in the client: never reach the host app
            logger.exception("playpulse: the client's thread failed; the client is closed")
            with self._cond:
                self._closed = self._abandon = True
            self._next_batch()  # fails what is still queued
        finally:
            with self._cond:
                self._worker_done = True
                self._cond.notify_all()
            if self._http is not None:
                self._http.close()

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._send(batch)
            except Exception as exc:  # a bug in the client: never reach the host app
                logger.exception("playpulse: unexpected error while sending a batch")
                rest = [i for i in batch if not i.settled]
                if rest:
                    self._fail(rest, _GaveUp("internal", None, type(exc).__name__))
            with self._cond:
                self._settled_seq = batch[-1].seq
                self._cond.notify_all()

    def _next_batch(self) -> list[_Item] | None:
        """Wait for a batch that is due and take it; ``None`` when the thread must stop."""
        opts = self.options
        abandoned: list[_Item] = []
        with self._cond:
            while True:
                if self._abandon:
                    abandoned = list(self._buffer)
                    self._buffer.clear()
                    self._buffer_bytes = 0
                    self._in_flight += len(abandoned)
                    break
                timeout: float | None = None
                if self._buffer:
                    first = self._buffer[0]
                    wait = first.enqueued_at + opts.flush_interval_s - time.monotonic()
                    if (
                        self._closed
                        or first.seq <= self._flush_upto
                        or len(self._buffer) >= opts.batch_size
                        or self._buffer_bytes >= opts.max_batch_bytes
                        or wait <= 0
                    ):
                        return self._take_batch()
                    timeout = wait
                elif self._closed:
                    return None
                self._cond.wait(timeout)
        if abandoned:
            self._fail(abandoned, _GaveUp("closed", None, _ABANDONED))
        with self._cond:
            self._settled_seq = self._last_seq
            self._cond.notify_all()
        return None

    def _take_batch(self) -> list[_Item]:
        # Called with the lock held and a non-empty buffer.
        batch: list[_Item] = []
        size = 2  # the brackets of the JSON array
        while self._buffer and len(batch) < self.options.batch_size:
            item = self._buffer[0]
            if batch and size + item.size > self.options.max_batch_bytes:
                break
            batch.append(self._buffer.popleft())
            size += item.size
            self._buffer_bytes -= item.size
        self._in_flight += len(batch)
        return batch

    def _send(self, batch: list[_Item]) -> None:
        """Deliver ``batch`` and settle every event in it (splits it on 413)."""
        try:
            result = self._post(batch)
        except Exception as exc:
            result = _GaveUp("internal", None, f"{type(exc).__name__}: {exc}")
        if isinstance(result, _GaveUp):
            logger.warning("playpulse: giving up on %d event(s): %s", len(batch), result.detail)
            self._fail(batch, result)
            return
        status = result.status_code
        if 200 <= status < 300:
            rejections = parse_rejections(result.content, len(batch)) if status == 200 else []
            bad = {r["index"] for r in rejections}
            with self._cond:
                self._counts["sent"] += len(batch)
            self._settle([i for n, i in enumerate(batch) if n not in bad], "accepted")
            if rejections:
                rejected = [batch[r["index"]] for r in rejections]
                self._settle(rejected, "rejected")
                self._report(
                    DeliveryError(
                        f"the collector rejected {len(rejected)} of {len(batch)} event(s) "
                        "as invalid (kept in its quarantine, not retried)",
                        reason="rejected",
                        events=len(rejected),
                        status=status,
                        event_ids=tuple(i.event_id for i in rejected),
                        rejections=tuple(rejections),
                    )
                )
        elif status == 413 and len(batch) > 1:
            half = len(batch) // 2
            self._send(batch[:half])
            self._send(batch[half:])
        elif status == 413:
            self._settle(batch, "rejected")
            self._report(
                DeliveryError(
                    f"event {batch[0].event_id} dropped: the collector answered 413 "
                    f"(too large) for it alone{_excerpt(result)}",
                    reason="too_large",
                    events=1,
                    status=status,
                    event_ids=(batch[0].event_id,),
                )
            )
        else:
            reason: DeliveryReason
            if status in (401, 403):
                reason = "unauthorized"
            elif status == 400:
                reason = "bad_request"
            else:
                reason = "http_error"
            self._fail(batch, _GaveUp(reason, status, f"HTTP {status}{_excerpt(result)}"))

    def _post(self, batch: list[_Item]) -> httpx.Response | _GaveUp:
        """POST ``batch`` until it gets a non-retryable answer or the retry limits run out."""
        opts = self.options
        assert self._http is not None  # made before the first batch
        payloads = [i.payload for i in batch]
        start = time.monotonic()
        retry = 0
        while True:
            if self._abandon:
                return _GaveUp("closed", None, _ABANDONED)
            body = build_body(payloads, datetime.now(UTC), compress=opts.gzip)
            retry_after: float | None = None
            status: int | None = None
            try:
                response = self._http.post(self._events_url, content=body, headers=self._headers)
            except httpx.TransportError as exc:
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
                if status not in RETRYABLE_STATUSES:
                    return response
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                detail = f"HTTP {status}{_excerpt(response)}"
            retry += 1
            if retry > opts.max_retries:
                return _GaveUp("retries_exhausted", status, f"{detail} (after {retry} attempt(s))")
            delay = backoff_delay(retry, opts.backoff_base_s, opts.backoff_max_s)
            if retry_after is not None:
                delay = max(delay, retry_after)
            if time.monotonic() - start + delay > opts.max_retry_time_s:
                return _GaveUp(
                    "retries_exhausted",
                    status,
                    f"{detail} (after {retry} attempt(s); the next one would start after "
                    f"max_retry_time_s={opts.max_retry_time_s})",
                )
            logger.debug("playpulse: %s; retry %d in %.2f s", detail, retry, delay)
            if self._stop.wait(delay):
                return _GaveUp("closed", status, _ABANDONED)
