"""The HTTP collector: POST /v1/events in, durable stream appends out.

Routes: ``POST /v1/events``, ``GET /v1/schema``, ``GET /healthz`` (liveness: the process
answers), ``GET /readyz`` (readiness: every check registered with
:func:`add_readiness_check` passes) and ``GET /metrics``. A response to POST /v1/events is
sent only after the valid events are durably appended to the stream and the rejected
ones are stored in the quarantine; a request with a valid event the stream did not
store (after a few quick retries of just those) is answered 503, never 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from playpulse.collector.all_errors import with_every_error
from playpulse.collector.body import (
    MAX_EVENT_DEPTH,
    RawEvent,
    gunzip,
    nesting_exceeds,
    split_events,
)
from playpulse.collector.docs import mount_docs
from playpulse.collector.http_errors import add_error_handlers, unsupported_media_type
from playpulse.collector.metrics import CollectorMetrics
from playpulse.config import Settings
from playpulse.errors import (
    BackpressureError,
    BodyError,
    ConfigError,
    EventValidationError,
    QuarantineError,
    StreamError,
)
from playpulse.events.codec import event_json_schema, validate_records
from playpulse.privacy.pseudonym import UserPrivacy
from playpulse.quarantine.store import QuarantineStore, Rejection, open_quarantine
from playpulse.status import StorageMetrics
from playpulse.stream.base import AppendResult, EventStream
from playpulse.stream.factory import open_stream

log = logging.getLogger("playpulse.collector")

#: How often the collector deletes stream records older than the retention.
RETENTION_INTERVAL_S = 600.0
#: Most bytes of a rejected event or body that the quarantine keeps (the rest is cut, and
#: the entry's errors say how large it was).
QUARANTINE_RAW_BYTES = 64 * 1024
#: How long one readiness check may take before /readyz reports it as failing.
READINESS_CHECK_TIMEOUT_S = 5.0

#: Attempts at appending a valid event before the request is answered 503: the first
#: append, then retries of only the records the stream reported not stored.
APPEND_ATTEMPTS = 3
#: Pause before each retry (the second, third, ... attempt).
APPEND_RETRY_DELAYS_S = (0.05, 0.15)
#: No retry starts later than this after the first append started, so a request waits at
#: most this plus one append for its retries (each append is bounded by the backend's own
#: timeouts: SQLite's busy timeout, Kafka's delivery timeout).
APPEND_RETRY_BUDGET_S = 0.5

#: A readiness check: returns None when healthy, else a one-line description of the problem.
ReadinessCheck = Callable[[], "str | Degraded | None"]


class _EventId(msgspec.Struct):
    event_id: str | None = None


_event_id_decoder = msgspec.json.Decoder(_EventId)


def _event_id_of(raw: RawEvent) -> str | None:
    try:
        value = _event_id_decoder.decode(raw).event_id
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None
    return value if isinstance(value, str) else None


def bounded_raw(
    raw: bytes, limit: int = QUARANTINE_RAW_BYTES
) -> tuple[bytes, list[dict[str, str]]]:
    """``raw`` cut to at most ``limit`` bytes for the quarantine, and the errors entry that
    says so (none when it fits)."""
    if len(raw) <= limit:
        return raw, []
    note = f"{len(raw)} bytes received; the quarantine keeps the first {limit}"
    return raw[:limit], [{"loc": "raw", "msg": note}]


def _validate(
    raws: Sequence[RawEvent], received_at: datetime
) -> tuple[list[tuple[str, bytes]], list[tuple[int, EventValidationError]]]:
    """:func:`validate_records`, plus the collector's own limits, and never raising for
    an event: an event that makes validation fail unexpectedly is rejected on its own."""
    try:
        records, invalid = validate_records(raws, received_at)
    except Exception:  # one odd event must not fail the others: validate one by one
        log.warning("validating a batch failed; validating its events one by one", exc_info=True)
        records, invalid = [], []
        for index, raw in enumerate(raws):
            try:
                one, bad = validate_records([raw], received_at)
            except Exception as exc:
                message = f"the event could not be read: {type(exc).__name__}: {exc}"
                invalid.append((index, EventValidationError(message, reason="malformed_json")))
                continue
            records.extend(one)
            invalid.extend((index, error) for _, error in bad)
        invalid.sort(key=lambda item: item[0])
    # Every problem of each rejected event, not only the decoder's first (all_errors).
    invalid = [(i, with_every_error(raws[i], error, received_at)) for i, error in invalid]
    # Inline the cheap part of nesting_exceeds (two counts) on the hot path.
    limit = MAX_EVENT_DEPTH
    deep = [
        n
        for n, (_, value) in enumerate(records)
        if value.count(b"{") + value.count(b"[") > limit and nesting_exceeds(value, limit)
    ]
    if not deep:
        return records, invalid
    # Map each accepted record back to its index in ``raws``: they are in order.
    rejected_at = {index for index, _ in invalid}
    accepted_at = [index for index in range(len(raws)) if index not in rejected_at]
    message = f"the event nests arrays or objects more than {MAX_EVENT_DEPTH} levels deep"
    for n in deep:
        error = EventValidationError(message, reason="nesting_too_deep")
        invalid.append((accepted_at[n], error))
    deep_set = set(deep)
    records = [record for n, record in enumerate(records) if n not in deep_set]
    invalid.sort(key=lambda item: item[0])
    return records, invalid


class EventsNotStoredError(StreamError):
    """Valid events of a request that the stream did not store, even after retrying them
    (raised by :meth:`Collector.ingest`; the HTTP answer is 503 ``stream_unavailable``).

    ``stored``: how many of the request's valid events are durably in the stream (each
    once); ``not_stored``: the indexes in the request (0-based, as in ``rejected``,
    ascending) of the valid events that are not, each with why in ``reasons``;
    ``rejected``: the request's invalid events, as in :class:`IngestResult` (already
    quarantined). Sending the whole request again is safe (the processor drops an event
    whose ``event_id`` and content it has seen: docs/metrics.md, Deduplication); so is
    sending only the events at ``not_stored``.
    """

    def __init__(
        self,
        stored: int,
        reasons: dict[int, str],
        rejected: list[dict[str, Any]],
        attempts: int,
    ) -> None:
        self.stored = stored
        self.not_stored = sorted(reasons)
        self.reasons = reasons
        self.rejected = rejected
        first = self.not_stored[0]
        super().__init__(
            f"{len(reasons)} of the {stored + len(reasons)} valid events of this request "
            f"were not stored after {attempts} attempt{'s' if attempts > 1 else ''} "
            f"(event {first}: {reasons[first]}); {stored} were stored. Send the request "
            "again (events stored twice are counted once) or only the events at not_stored"
        )

    def as_json(self) -> dict[str, Any]:
        """The ``error`` object of the 503 answer: ``code``, ``message``, ``stored``,
        ``not_stored`` and ``rejected``."""
        return {
            "code": "stream_unavailable",
            "message": str(self),
            "stored": self.stored,
            "not_stored": self.not_stored,
            "rejected": self.rejected,
        }


def _appends_all_or_nothing(stream: EventStream) -> bool:
    """Whether ``stream`` keeps :meth:`EventStream.append_each`'s default (an append
    stores all records or, raising, none) with an ``append_offsets`` that does the same
    work as its ``append``: then ``append_offsets`` tells the collector what
    ``append_each`` would, without building one ``Appended`` per record."""
    cls = type(stream)
    if cls.append_each is not EventStream.append_each:
        return False
    mro = cls.__mro__
    offsets_owner = next(c for c in mro if "append_offsets" in vars(c))
    append_owner = next(c for c in mro if "append" in vars(c))
    return offsets_owner is EventStream or mro.index(offsets_owner) <= mro.index(append_owner)


@dataclass
class IngestResult:
    """Outcome of one body: how many events were appended, and each rejection.

    ``rejected`` items are ``{"index": int, "event_id": str | None, "errors": [...]}``.
    """

    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The response body of POST /v1/events."""
        return {"accepted": self.accepted, "rejected": self.rejected}


class Collector:
    """Validates event bodies, quarantines what is invalid, appends the rest.

    Independent of HTTP so that other front doors (importers, a Lambda handler) reuse it.
    ``max_pending_events`` bounds the events waiting for the stream across concurrent
    calls; past it :meth:`ingest` raises :class:`~playpulse.errors.BackpressureError`.

    Appends go through :meth:`EventStream.append_each`: the records a stream reports not
    stored are appended again, only they, up to :data:`APPEND_ATTEMPTS` attempts in all,
    after :data:`APPEND_RETRY_DELAYS_S`, and none starting later than
    :data:`APPEND_RETRY_BUDGET_S` after the first; what is still not stored then makes
    :meth:`ingest` raise :class:`EventsNotStoredError`. A retried record lands after the
    records of its key stored before it (the processor orders events by their times).
    """

    def __init__(
        self,
        stream: EventStream,
        quarantine: QuarantineStore,
        *,
        max_pending_events: int = 50_000,
        metrics: CollectorMetrics | None = None,
        users: UserPrivacy | None = None,
    ) -> None:
        self.stream = stream
        #: Privacy hook (#14): pseudonymises user ids, refuses suppressed users' events.
        self.users = users
        self.quarantine = quarantine
        self.max_pending_events = max_pending_events
        self.metrics = metrics or CollectorMetrics()
        self.pending_events = 0
        self._all_or_nothing = _appends_all_or_nothing(stream)

    async def ingest(self, raws: Sequence[RawEvent], received_at: datetime) -> IngestResult:
        """Validate each raw event, quarantine rejects, durably append the valid ones.

        ``received_at`` is UTC-aware. Returns once both writes are committed. An event
        is rejected (never raises) when it does not match the model, nests more than
        :data:`~playpulse.collector.body.MAX_EVENT_DEPTH` levels deep or cannot be read
        at all; its quarantined raw JSON is cut to :data:`QUARANTINE_RAW_BYTES`. Raises
        :class:`~playpulse.errors.BackpressureError` when too many events are pending
        (nothing is written then), :class:`~playpulse.errors.QuarantineError` when the
        rejects cannot be stored (nothing is appended then) and
        :class:`EventsNotStoredError` (a :class:`~playpulse.errors.StreamError`) when
        valid events are not stored after the retries (it says which were; rejects are
        quarantined already). The stream's ``BackpressureError`` on the first append
        propagates (nothing stored).
        """
        result = IngestResult()
        rejections: list[Rejection] = []
        records, invalid = _validate(raws, received_at)
        refused: list[tuple[int, EventValidationError]] = []
        if self.users is not None:  # privacy: pseudonyms, suppressed users refused
            records, refused = self.users.filter(records, invalid, len(raws))
            for index, error in refused:  # answered, not quarantined (their id is not kept)
                result.rejected.append({"index": index, "event_id": None, "errors": error.errors})
        for index, error in invalid:
            whole = bytes(raws[index])
            event_id = _event_id_of(whole)
            if self.users is not None:
                whole = self.users.scrub_raw(whole)
            raw, note = bounded_raw(whole)
            result.rejected.append({"index": index, "event_id": event_id, "errors": error.errors})
            rejections.append(
                Rejection(
                    raw, error.reason, error.errors + note, received_at, "collector", event_id
                )
            )
        if refused:
            result.rejected.sort(key=lambda r: int(r["index"]))
        if self.pending_events + len(records) > self.max_pending_events:
            raise BackpressureError(
                f"{self.pending_events} events are waiting for the stream; "
                f"the limit is {self.max_pending_events}"
            )
        if rejections:
            await run_in_threadpool(self.quarantine.add, rejections)
            for rejection in rejections:
                self.metrics.rejected.labels(rejection.reason).inc()
        if records:
            self.pending_events += len(records)
            self.metrics.pending.set(self.pending_events)
            try:
                not_stored, attempts = await self._append(records)
            finally:
                self.pending_events -= len(records)
                self.metrics.pending.set(self.pending_events)
            stored = len(records) - len(not_stored)
            if stored:
                self.metrics.accepted.inc(stored)
            if not_stored:
                self.metrics.not_stored.inc(len(not_stored))
                reasons = _request_indexes(not_stored, len(raws), [*invalid, *refused])
                raise EventsNotStoredError(stored, reasons, result.rejected, attempts)
            result.accepted = len(records)
        return result

    def _append_once(self, records: Sequence[tuple[str, bytes]], first: bool) -> dict[int, str]:
        """One append of ``records`` (in a worker thread): ``{index: why}`` of those not
        stored. A :class:`~playpulse.errors.StreamError` raised means none was stored.
        On the ``first`` attempt nothing is stored yet, so a
        :class:`~playpulse.errors.BackpressureError` (429) or an unexpected error (503
        without details) propagates; on a retry it only fails the records retried."""
        started = time.perf_counter()
        try:
            if self._all_or_nothing:
                # The hot path: what append_each would say, without one Appended per record.
                self.stream.append_offsets(records)
                failed: dict[int, str] = {}
            else:
                result: AppendResult = self.stream.append_each(records)
                failed = result.errors
        except StreamError as exc:
            if first and isinstance(exc, BackpressureError):
                raise
            failed = dict.fromkeys(range(len(records)), str(exc) or type(exc).__name__)
        except Exception as exc:
            if first:
                raise
            log.exception("retrying %d records failed unexpectedly", len(records))
            failed = dict.fromkeys(range(len(records)), f"{type(exc).__name__}: {exc}")
        self.metrics.append_duration.observe(time.perf_counter() - started)
        if failed:
            self.metrics.append_failed.inc(len(failed))
        return failed

    async def _append(self, records: Sequence[tuple[str, bytes]]) -> tuple[dict[int, str], int]:
        """Append ``records``, retrying those not stored (see the class docstring).

        Returns ``({index into records: why}, attempts made)`` for the records still not
        stored (empty when all are). Raises what the first attempt raises (see
        :meth:`_append_once`).
        """
        started = time.monotonic()
        failed = await run_in_threadpool(self._append_once, records, True)
        attempts = 1
        for delay in APPEND_RETRY_DELAYS_S[: APPEND_ATTEMPTS - 1]:
            if not failed or time.monotonic() - started + delay > APPEND_RETRY_BUDGET_S:
                break
            indexes = sorted(failed)
            log.warning(
                "%d of %d records not stored (%s); retrying them",
                len(indexes),
                len(records),
                failed[indexes[0]],
            )
            await asyncio.sleep(delay)
            self.metrics.append_retries.inc()
            again = await run_in_threadpool(self._append_once, [records[i] for i in indexes], False)
            attempts += 1
            failed = {indexes[j]: why for j, why in again.items()}
        return failed, attempts

    def quarantine_body(
        self,
        body: bytes,
        error: BodyError,
        received_at: datetime,
        *,
        compressed: bytes | None = None,
    ) -> None:
        """Keep a body that could not be read as events, with the reason, in bounded size.

        ``body`` is the body as decompressed (or as received when it is not gzip or could
        not be decompressed); ``compressed`` is the body as received when it was gzip. The
        entry keeps ``compressed`` when it is at most :data:`QUARANTINE_RAW_BYTES` (a
        gzip bomb is small), else the first :data:`QUARANTINE_RAW_BYTES` of ``body``; its
        errors say which, with the full size. Raises
        :class:`~playpulse.errors.QuarantineError` (or ``sqlite3.Error``, ``OSError``)
        when the quarantine cannot store it.
        """
        errors = [{"loc": "body", "msg": str(error)}]
        if compressed is not None and len(compressed) <= QUARANTINE_RAW_BYTES:
            raw = compressed
            note = f"kept as received: gzip-compressed, {len(compressed)} bytes"
            if body is not compressed:  # it was decompressed before the error
                note += f" ({len(body)} bytes decompressed)"
            errors.append({"loc": "raw", "msg": note})
        else:
            raw, cut = bounded_raw(body)
            errors.extend(cut)
        self.quarantine.add([Rejection(raw, error.reason, errors, received_at, "collector")])
        self.metrics.rejected.labels(error.reason).inc()


def _request_indexes(
    failed: dict[int, str], n_raws: int, invalid: Sequence[tuple[int, object]]
) -> dict[int, str]:
    """``failed`` keyed by index into the valid records, re-keyed by index in the
    request (the valid records are the request's events without ``invalid``, in order)."""
    rejected_at = {index for index, _ in invalid}
    accepted_at = [index for index in range(n_raws) if index not in rejected_at]
    return {accepted_at[i]: why for i, why in failed.items()}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)
    response.error_code = code  # type: ignore[attr-defined]  # for the metrics
    return response


def _authorized(request: Request, keys: Sequence[bytes]) -> bool:
    if not keys:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    given = token.strip().encode()
    # Compare against every key so the time taken does not tell which one matched.
    return sum(hmac.compare_digest(given, key) for key in keys) > 0


#: Bodies larger than this are decompressed and split in the thread pool, so that a
#: large or hostile body does not hold the event loop.
_THREAD_BODY_BYTES = 64 * 1024


class _BodyUnread(BodyError):
    """A BodyError raised before the whole body was read: the connection is closed after
    the answer (the rest of the body would be read as the next request otherwise)."""


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length", "").strip()
    return int(declared) if declared.isdigit() and len(declared) < 20 else None


async def _drain(chunks: AsyncIterator[bytes], limit_bytes: int, deadline: float) -> None:
    """Read and discard up to ``limit_bytes`` of the body until ``deadline`` (loop time),
    so that a client that sends its whole body before it reads gets the answer instead of
    a connection reset. Never raises for a timeout or a client that left."""
    drained = 0
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in chunks:
                drained += len(chunk)
                if drained > limit_bytes:
                    return
    except (TimeoutError, ClientDisconnect):
        return


async def _receive_body(request: Request, settings: Settings) -> bytes:
    """The body as sent, read within ``settings.request_read_timeout_s``.

    Raises :class:`_BodyUnread` 413 when it is larger than ``settings.max_body_bytes``
    (after draining at most ``settings.request_drain_bytes`` of it, within the same
    timeout, unless the client waits for ``100 Continue``), 408 when it did not arrive
    in time and 400 when the client disconnected.
    """
    max_bytes = settings.max_body_bytes
    deadline = asyncio.get_running_loop().time() + settings.request_read_timeout_s
    chunks = request.stream()
    declared = _declared_length(request)
    if declared is not None and declared > max_bytes:
        expects_continue = "100-continue" in request.headers.get("expect", "").lower()
        if not expects_continue and declared <= settings.request_drain_bytes:
            await _drain(chunks, settings.request_drain_bytes, deadline)
        raise _BodyUnread(
            f"body is {declared} bytes; the limit is {max_bytes}", 413, "body_too_large"
        )
    received: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    break
                received.append(chunk)
    except TimeoutError:
        raise _BodyUnread(
            f"the body did not arrive within {settings.request_read_timeout_s:g} s "
            f"({size} bytes came)",
            408,
            "request_timeout",
        ) from None
    except ClientDisconnect:
        raise _BodyUnread(
            f"the client disconnected after {size} bytes of the body", 400, "client_disconnected"
        ) from None
    if size > max_bytes:
        await _drain(chunks, settings.request_drain_bytes - size, deadline)
        raise _BodyUnread(f"body is larger than {max_bytes} bytes", 413, "body_too_large")
    return b"".join(received)


def _content_encoding(request: Request) -> str:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return "gzip"
    if encoding in ("identity", ""):
        return "identity"
    raise BodyError(f"Content-Encoding '{encoding[:64]}' is not supported; use gzip or none")


async def _off_loop(size: int, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, in the thread pool when the body is large."""
    if size > _THREAD_BODY_BYTES:
        return await run_in_threadpool(function, *args)
    return function(*args)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unhealthy (no detail given)"


class Degraded(str):
    """What a readiness check returns when its dependency works with reduced service (a
    lake file set aside, say): ``/readyz`` stays 200 and reports it as
    ``{"ok": true, "degraded": "..."}`` with ``"status": "degraded"``."""


async def _run_check(name: str, check: ReadinessCheck) -> dict[str, Any]:
    try:
        problem = await asyncio.wait_for(
            run_in_threadpool(check), timeout=READINESS_CHECK_TIMEOUT_S
        )
    except TimeoutError:
        problem = f"the check did not answer within {READINESS_CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # a failing check is a problem to report, not a 500
        log.warning("readiness check %r raised %s", name, exc, exc_info=True)
        problem = f"the check raised {type(exc).__name__}: {exc}"
    if problem is None:
        return {"ok": True}
    if isinstance(problem, Degraded):
        return {"ok": True, "degraded": _one_line(str(problem))}
    return {"ok": False, "problem": _one_line(str(problem))}


async def readiness_report(app: FastAPI) -> dict[str, Any]:
    """Run the readiness checks of ``app`` now (concurrently): ``{"status": "ready" |
    "degraded" | "not_ready", "checks": {name: {"ok": bool, "problem" | "degraded":
    str}}}``. ``not_ready`` when a check failed; ``degraded`` when all passed but one
    reported reduced service (:class:`Degraded`)."""
    registered: dict[str, ReadinessCheck] = dict(getattr(app.state, "readiness_checks", {}))
    names = list(registered)
    results = await asyncio.gather(*(_run_check(n, registered[n]) for n in names))
    status = "ready"
    if any("degraded" in result for result in results):
        status = "degraded"
    if not all(result["ok"] for result in results):
        status = "not_ready"
    return {"status": status, "checks": dict(zip(names, results, strict=True))}


def add_readiness_check(app: FastAPI, name: str, check: ReadinessCheck) -> None:
    """Make ``GET /readyz`` of ``app`` also depend on ``check``.

    ``check`` is a synchronous callable, run in the thread pool on every /readyz request
    (keep it cheap: a stat or a trivial query); it returns None when healthy or a
    one-line problem (a :class:`Degraded` one keeps the process ready but says so).
    A check that raises or takes longer than
    :data:`READINESS_CHECK_TIMEOUT_S` counts as failing with that as its problem.
    ``/readyz`` answers 200 ``{"status": "ready", "checks": {name: {"ok": true}}}`` when
    every check passes, else 503 ``{"status": "not_ready", "checks": {name: {"ok":
    false, "problem": "..."}, ...}}`` (checks run concurrently). The first call on an
    app adds the ``/readyz`` route to it. Raises
    :class:`~playpulse.errors.ConfigError` when ``name`` is empty or already registered.
    """
    if not name:
        raise ConfigError("a readiness check needs a name")
    checks: dict[str, ReadinessCheck] | None = getattr(app.state, "readiness_checks", None)
    if checks is None:
        checks = {}
        app.state.readiness_checks = checks

        @app.get(
            "/readyz",
            summary="Readiness: every dependency this process needs is usable",
            responses={
                200: {"description": "Ready: every check passed."},
                503: {"description": "Not ready: the failing checks name their problem."},
            },
        )
        async def readyz() -> Response:
            """200 when every registered check passes (the stream, the quarantine, and
            with `playpulse up` the processor, store and lake), else 503 naming each
            failing check's problem."""
            report = await readiness_report(app)
            ready = report["status"] != "not_ready"
            return JSONResponse(
                report, 200 if ready else 503, headers=None if ready else {"Retry-After": "5"}
            )

    if name in checks:
        raise ConfigError(f"readiness check {name!r} is already registered on this app")
    checks[name] = check


def _file_check(what: str, path: Path) -> ReadinessCheck:
    """A check that ``path`` and its folder exist, are writable and are still the file
    that was there when the check was made (a deleted and recreated file is not the one
    an open SQLite connection writes to)."""
    try:
        opened = os.stat(path)
        identity: tuple[int, int] | None = (opened.st_dev, opened.st_ino)
    except OSError:
        identity = None

    def check() -> str | None:
        folder = path.parent
        if not folder.is_dir():
            return f"{what} folder {folder} is missing or not a folder"
        try:
            now = os.stat(path)
        except OSError as exc:
            return f"{what} file {path} cannot be read: {exc.strerror or exc}"
        if identity is not None and (now.st_dev, now.st_ino) != identity:
            return f"{what} file {path} was replaced since it was opened; restart the collector"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{what} folder {folder} is not writable"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"{what} file {path} is not writable"
        return None

    return check


def _path_of(resource: object) -> Path | None:
    """The file behind a stream or quarantine, looking through test wrappers."""
    for _ in range(8):
        path = getattr(resource, "path", None)
        if isinstance(path, Path):
            return path
        resource = getattr(resource, "inner", None)
        if resource is None:
            return None
    return None


_REJECTED_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["index", "event_id", "errors"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "event_id": {"type": ["string", "null"]},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["loc", "msg"],
                    "properties": {"loc": {"type": "string"}, "msg": {"type": "string"}},
                },
            },
        },
    },
}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "machine-readable reason"},
                "message": {"type": "string", "description": "what, where and why"},
                "stored": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "503 stream_unavailable after the append: how many valid "
                    "events of the request are stored (each once)",
                },
                "not_stored": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "description": "503 stream_unavailable after the append: indexes in the "
                    "request of the valid events not stored; send the request again, or "
                    "only these",
                },
                "rejected": {
                    **_REJECTED_SCHEMA,
                    "description": "503 stream_unavailable after the append: the invalid "
                    "events, as in IngestResult (quarantined already)",
                },
            },
        }
    },
}
_INGEST_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["accepted", "rejected"],
    "properties": {
        "accepted": {"type": "integer", "minimum": 0},
        "rejected": _REJECTED_SCHEMA,
    },
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before sending again",
        "schema": {"type": "string"},
    }
}


def _error_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def post_events_openapi(max_events: int = 1000) -> dict[str, Any]:
    """The OpenAPI operation fields of POST /v1/events: its request body and responses.

    The body refers to ``#/components/schemas/Event`` (the event model's JSON Schema,
    see :func:`openapi_components`); errors to ``#/components/schemas/Error``
    (``{"error": {"code", "message"}}``).
    """
    event = {"$ref": "#/components/schemas/Event"}
    text = {
        "type": "string",
        "description": "NDJSON (one event per line) or one JSON array or object, as text "
        "(navigator.sendBeacon sends text/plain)",
    }
    return {
        "parameters": [
            {
                "name": "Content-Encoding",
                "in": "header",
                "required": False,
                "description": "gzip (one or more members) or none",
                "schema": {"type": "string", "enum": ["gzip", "identity"]},
            }
        ],
        "requestBody": {
            "required": True,
            "description": "One event, or an array of at most "
            f"{max_events} events; each is validated on its own.",
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            event,
                            {"type": "array", "items": event, "maxItems": max_events},
                        ]
                    }
                },
                "application/x-ndjson": {"schema": text},
                "text/plain": {"schema": text},
            },
        },
        "responses": {
            "200": {
                "description": "The valid events are durably stored; each invalid one is "
                "listed in rejected, with where and why, and kept in the quarantine.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/IngestResult"}}
                },
            },
            "400": _error_response(
                "The body cannot be read as events (malformed JSON or gzip, bytes after the "
                "gzip stream, nested too deep, unsupported Content-Encoding)."
            ),
            "401": _error_response("A write key is required and was missing or wrong."),
            "408": _error_response("The body did not arrive within the read timeout."),
            "415": _error_response(
                "The Content-Type is not JSON, NDJSON or text/plain (none is read as JSON)."
            ),
            "413": _error_response(
                "The body is too large (also after gunzip) or holds too many events."
            ),
            "429": _error_response("Too many events wait for the stream.", _RETRY_AFTER),
            "503": _error_response(
                "The stream or quarantine cannot store events now, or the collector is at "
                "its connection limit. When the stream did not store every valid event "
                "(even after retrying the others), the error (stream_unavailable) says how "
                "many were stored and which were not (stored, not_stored, rejected); "
                "sending the whole request again is safe: an event stored twice counts once.",
                _RETRY_AFTER,
            ),
        },
    }


def openapi_components() -> dict[str, Any]:
    """Schemas for ``components.schemas`` of the collector's OpenAPI: ``Event`` (from
    :func:`~playpulse.events.codec.event_json_schema`, its ``$defs`` moved beside it),
    ``IngestResult`` and ``Error``."""
    schema = event_json_schema()
    defs = schema.pop("$defs", {})
    schema.pop("$schema", None)

    def move_refs(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: move_refs(value) for key, value in node.items()}
        if isinstance(node, list):
            return [move_refs(value) for value in node]
        if isinstance(node, str) and node.startswith("#/$defs/"):
            return "#/components/schemas/" + node.removeprefix("#/$defs/")
        return node

    components: dict[str, Any] = {name: move_refs(value) for name, value in defs.items()}
    components["Event"] = move_refs(schema)
    components["IngestResult"] = _INGEST_RESULT_SCHEMA
    components["Error"] = _ERROR_SCHEMA
    return components


def _add_openapi_components(app: FastAPI) -> None:
    """Make ``app.openapi()`` include :func:`openapi_components`."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, value in openapi_components().items():
                schemas.setdefault(name, value)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _unavailable(what: str, exc: BaseException) -> Response:
    """503 with Retry-After for a failure of the collector's storage, not of the request."""
    log.error("%s unavailable: %s", what, exc)
    message = f"the {what} cannot store this request now ({exc}); send it again later"
    return _error(503, f"{what}_unavailable", message, {"Retry-After": "1"})


def create_app(
    settings: Settings | None = None,
    *,
    stream: EventStream | None = None,
    quarantine: QuarantineStore | None = None,
) -> FastAPI:
    """The collector as an ASGI app.

    Opens the embedded stream and quarantine in ``settings.data_dir`` unless ``stream``
    or ``quarantine`` are given (they are then left open on shutdown).
    """
    settings = settings or Settings()
    owned: list[EventStream | QuarantineStore] = []
    if stream is None:
        stream = open_stream(settings)
        owned.append(stream)
    if quarantine is None:
        quarantine = open_quarantine(settings)
        owned.append(quarantine)
    collector = Collector(
        stream,
        quarantine,
        max_pending_events=settings.max_pending_events,
        users=UserPrivacy(settings),
    )
    metrics = collector.metrics
    metrics.add_collector(StorageMetrics(stream, quarantine))
    write_keys = [k.get_secret_value().encode() for k in settings.write_keys]

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not write_keys:
            log.warning(
                "no write keys configured: anyone who can reach this address can send events"
            )
        interval_s = RETENTION_INTERVAL_S if settings.stream_max_bytes is None else 60.0
        task = asyncio.create_task(_retention_loop(stream, quarantine, interval_s))
        try:
            yield
        finally:
            task.cancel()
            for resource in owned:
                resource.close()

    app = FastAPI(
        title="playpulse collector",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: mount_docs, offline (no CDN)
        redoc_url=None,
    )
    app.state.collector = collector
    add_error_handlers(app)  # 404, 405 and 422 in the project's error format
    mount_docs(app)
    _add_openapi_components(app)
    for what, resource in (("stream", stream), ("quarantine", quarantine)):
        path = _path_of(resource)
        if path is not None:
            add_readiness_check(app, what, _file_check(what, path))
        else:  # an in-memory backend is as writable as the process is alive
            add_readiness_check(app, what, lambda: None)

    @app.post(
        "/v1/events",
        summary="Send events (JSON array, NDJSON or one object; gzip ok)",
        description="Validates each event on its own: the valid ones are durably appended "
        "to the stream, each invalid one is answered in `rejected` with every problem it "
        "has (where and why) and kept in the quarantine. Content-Type: application/json "
        "(one event or an array), application/x-ndjson or text/plain (sendBeacon); "
        "Content-Encoding: gzip or none. `?schema=NAME` maps another pipeline's payloads "
        "first (docs/event-shapes.md). Sending a request again is safe: an event stored "
        "twice counts once.",
        openapi_extra=post_events_openapi(settings.max_events_per_request),
    )
    async def post_events(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await _post_events(request)
        except Exception as exc:  # the last resort: a clear 503, never a 500
            log.exception("POST /v1/events failed unexpectedly")
            response = _error(
                503,
                "internal_error",
                f"the collector failed unexpectedly ({type(exc).__name__}); "
                "nothing of this request was stored, send it again later",
                {"Retry-After": "1"},
            )
        status = str(response.status_code)
        metrics.requests.labels(status).inc()
        metrics.request_duration.labels(status).observe(time.perf_counter() - started)
        code = getattr(response, "error_code", None)
        if code is not None:
            metrics.request_errors.labels(code).inc()
        return response

    async def _post_events(request: Request) -> Response:
        if not _authorized(request, write_keys):
            deadline = asyncio.get_running_loop().time() + settings.request_read_timeout_s
            await _drain(request.stream(), settings.request_drain_bytes, deadline)
            return _error(
                401,
                "unauthorized",
                "a valid write key is required: Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer", "Connection": "close"},
            )
        media_problem = unsupported_media_type(request)
        if media_problem is not None:
            deadline = asyncio.get_running_loop().time() + settings.request_read_timeout_s
            await _drain(request.stream(), settings.request_drain_bytes, deadline)
            return _error(415, "unsupported_media_type", media_problem, {"Connection": "close"})
        received_at = datetime.now(UTC)
        received = body = b""
        gzipped = False
        try:
            received = body = await _receive_body(request, settings)
            gzipped = _content_encoding(request) == "gzip"
            if gzipped:
                body = await _off_loop(len(received), gunzip, received, settings.max_body_bytes)
            raws = await _off_loop(
                len(received), split_events, body, settings.max_events_per_request
            )
            shape = request.query_params.get("schema")
            if shape is None:
                result = await collector.ingest(raws, received_at)
            else:  # payloads of another pipeline's shape (#16): sources/shapes
                from playpulse.sources.shapes import ingest_shaped

                limits = (settings.max_events_per_request, settings.max_body_bytes)
                result = await ingest_shaped(collector, shape, raws, received_at, *limits)
        except BodyError as exc:
            headers = {"Connection": "close"} if isinstance(exc, _BodyUnread) else None
            if exc.status == 400 and exc.reason != "client_disconnected":
                compressed = received if gzipped else None
                try:
                    await run_in_threadpool(
                        collector.quarantine_body, body, exc, received_at, compressed=compressed
                    )
                except (QuarantineError, sqlite3.Error, OSError) as failure:
                    return _unavailable("quarantine", failure)
            return _error(exc.status, exc.reason, str(exc), headers)
        except BackpressureError as exc:
            retry_after = str(max(1, round(exc.retry_after_s)))
            return _error(429, "backpressure", str(exc), {"Retry-After": retry_after})
        except EventsNotStoredError as exc:
            log.error("stream unavailable: %s", exc)
            response = JSONResponse({"error": exc.as_json()}, 503, headers={"Retry-After": "1"})
            response.error_code = "stream_unavailable"  # type: ignore[attr-defined]
            return response
        except StreamError as exc:
            return _unavailable("stream", exc)
        except (QuarantineError, sqlite3.Error, OSError) as exc:
            return _unavailable(
                "quarantine" if isinstance(exc, QuarantineError) else "storage", exc
            )
        return JSONResponse(result.as_json())

    @app.get("/v1/schema", summary="JSON Schema of the event model")
    async def schema() -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of one event as `POST /v1/events` takes it:
        every event type, its fields, types and limits (docs/events.md)."""
        return event_json_schema()

    @app.get("/healthz", summary="Liveness: the collector process answers")
    async def healthz() -> dict[str, Any]:
        """Always 200 while the process answers; whether it can do its work is /readyz."""
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        """The collector's and pipeline's metrics in Prometheus' text format
        (docs/monitoring.md); behind the read keys or the metrics token when set."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # /metrics behind the read keys or the metrics token when either is set (the read
    # API, if mounted later, decides who may read it).
    from playpulse.api.auth import guard_metrics

    guard_metrics(app, settings)
    return app


async def _retention_loop(
    stream: EventStream, quarantine: QuarantineStore, interval_s: float
) -> None:
    """Every ``interval_s``: the stream's retention (what every consumer group committed
    and is past ``retention_days``, or the oldest records when over ``stream_max_bytes``)
    and the quarantine's (past ``quarantine_retention_days`` or over its cap)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            deleted = await run_in_threadpool(stream.enforce_retention, datetime.now(UTC))
        except StreamError as exc:
            log.error("retention failed: %s", exc)
        else:
            if deleted:
                log.info("retention deleted %d records", deleted)
        try:
            dropped = await run_in_threadpool(quarantine.enforce_retention, datetime.now(UTC))
        except QuarantineError as exc:
            log.error("quarantine retention failed: %s", exc)
        else:
            if dropped:
                log.info("quarantine retention dropped %d entries", dropped)


def create_app_from_env() -> FastAPI:
    """The collector app with settings from ``PLAYPULSE_*`` variables (for workers)."""
    return create_app(Settings())
