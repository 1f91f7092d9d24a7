"""The HTTP collector: POST /v1/events in, durable stream appends out.

Routes: ``POST /v1/events``, ``GET /v1/schema``, ``GET /healthz`` (liveness: the process
answers), ``GET /readyz`` (readiness: every check registered with
:func:`add_readiness_check` passes) and ``GET /metrics``. A response to POST /v1/events is
sent only after the valid events are durably appended to the stream and the rejected
ones are stored in the quarantine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
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

from playpulse.collector.body import RawEvent, gunzip, split_events
from playpulse.collector.metrics import CollectorMetrics
from playpulse.config import Settings
from playpulse.errors import BackpressureError, BodyError, ConfigError, StreamError
from playpulse.events.codec import event_json_schema, validate_records
from playpulse.quarantine.store import QuarantineStore, Rejection
from playpulse.stream.base import EventStream
from playpulse.stream.factory import open_stream

log = logging.getLogger("playpulse.collector")

#: How often the collector deletes stream records older than the retention.
RETENTION_INTERVAL_S = 600.0
#: How long one readiness check may take before /readyz reports it as failing.
READINESS_CHECK_TIMEOUT_S = 5.0

#: A readiness check: returns None when healthy, else a one-line description of the problem.
ReadinessCheck = Callable[[], str | None]


class _EventId(msgspec.Struct):
    event_id: str | None = None


_event_id_decoder = msgspec.json.Decoder(_EventId)


def _event_id_of(raw: RawEvent) -> str | None:
    try:
        value = _event_id_decoder.decode(raw).event_id
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, str) else None


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
    """

    def __init__(
        self,
        stream: EventStream,
        quarantine: QuarantineStore,
        *,
        max_pending_events: int = 50_000,
        metrics: CollectorMetrics | None = None,
    ) -> None:
        self.stream = stream
        self.quarantine = quarantine
        self.max_pending_events = max_pending_events
        self.metrics = metrics or CollectorMetrics()
        self.pending_events = 0

    async def ingest(self, raws: Sequence[RawEvent], received_at: datetime) -> IngestResult:
        """Validate each raw event, quarantine rejects, durably append the valid ones.

        ``received_at`` is UTC-aware. Returns once both writes are committed. Raises
        :class:`~playpulse.errors.BackpressureError` when too many events are pending
        (nothing is written then) and :class:`~playpulse.errors.StreamError` when the
        append fails (rejects are quarantined already; the valid events are not
        appended and the caller should retry them).
        """
        result = IngestResult()
        rejections: list[Rejection] = []
        records, invalid = validate_records(raws, received_at)
        for index, error in invalid:
            raw = bytes(raws[index])
            event_id = _event_id_of(raw)
            result.rejected.append({"index": index, "event_id": event_id, "errors": error.errors})
            rejections.append(
                Rejection(raw, error.reason, error.errors, received_at, "collector", event_id)
            )
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
            started = time.perf_counter()
            try:
                await run_in_threadpool(self.stream.append_offsets, records)
            finally:
                self.pending_events -= len(records)
                self.metrics.pending.set(self.pending_events)
            self.metrics.append_duration.observe(time.perf_counter() - started)
            self.metrics.accepted.inc(len(records))
            result.accepted = len(records)
        return result

    def quarantine_body(self, body: bytes, error: BodyError, received_at: datetime) -> None:
        """Keep a body that could not be read as events, with the reason."""
        errors = [{"loc": "body", "msg": str(error)}]
        self.quarantine.add([Rejection(body, error.reason, errors, received_at, "collector")])
        self.metrics.rejected.labels(error.reason).inc()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


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


async def _read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise BodyError(
            f"body is {declared} bytes; the limit is {max_bytes}", 413, "body_too_large"
        )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyError(f"body is larger than {max_bytes} bytes", 413, "body_too_large")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        body = gunzip(body, max_bytes)
    elif encoding not in ("identity", ""):
        raise BodyError(f"Content-Encoding '{encoding}' is not supported; use gzip or none")
    return body


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unhealthy (no detail given)"


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
    return {"ok": False, "problem": _one_line(str(problem))}


def add_readiness_check(app: FastAPI, name: str, check: ReadinessCheck) -> None:
    """Make ``GET /readyz`` of ``app`` also depend on ``check``.

    ``check`` is a synchronous callable, run in the thread pool on every /readyz request
    (keep it cheap: a stat or a trivial query); it returns None when healthy or a
    one-line problem. A check that raises or takes longer than
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
        registered = checks

        @app.get(
            "/readyz",
            summary="Readiness: every dependency this process needs is usable",
            responses={
                200: {"description": "Ready: every check passed."},
                503: {"description": "Not ready: the failing checks name their problem."},
            },
        )
        async def readyz() -> Response:
            names = list(registered)
            results = await asyncio.gather(*(_run_check(n, registered[n]) for n in names))
            report = dict(zip(names, results, strict=True))
            ready = all(result["ok"] for result in results)
            return JSONResponse(
                {"status": "ready" if ready else "not_ready", "checks": report},
                200 if ready else 503,
                headers=None if ready else {"Retry-After": "5"},
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
        quarantine = QuarantineStore(settings.quarantine_path)
        owned.append(quarantine)
    collector = Collector(stream, quarantine, max_pending_events=settings.max_pending_events)
    metrics = collector.metrics
    write_keys = [k.get_secret_value().encode() for k in settings.write_keys]

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not write_keys:
            log.warning(
                "no write keys configured: anyone who can reach this address can send events"
            )
        task = asyncio.create_task(_retention_loop(collector.stream))
        try:
            yield
        finally:
            task.cancel()
            for resource in owned:
                resource.close()

    app = FastAPI(title="playpulse collector", version="0.1.0", lifespan=lifespan)
    app.state.collector = collector
    for what, resource in (("stream", stream), ("quarantine", quarantine)):
        path = _path_of(resource)
        if path is not None:
            add_readiness_check(app, what, _file_check(what, path))
        else:  # an in-memory backend is as writable as the process is alive
            add_readiness_check(app, what, lambda: None)

    @app.post("/v1/events", summary="Send events (JSON array, NDJSON or one object; gzip ok)")
    async def post_events(request: Request) -> Response:
        started = time.perf_counter()
        response = await _post_events(request)
        status = str(response.status_code)
        metrics.requests.labels(status).inc()
        metrics.request_duration.labels(status).observe(time.perf_counter() - started)
        return response

    async def _post_events(request: Request) -> Response:
        if not _authorized(request, write_keys):
            return _error(
                401,
                "unauthorized",
                "a valid write key is required: Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer"},
            )
        received_at = datetime.now(UTC)
        body = b""
        try:
            body = await _read_body(request, settings.max_body_bytes)
            raws = split_events(body, settings.max_events_per_request)
            result = await collector.ingest(raws, received_at)
        except BodyError as exc:
            if exc.status == 400:
                await run_in_threadpool(collector.quarantine_body, body, exc, received_at)
            return _error(exc.status, exc.reason, str(exc))
        except BackpressureError as exc:
            retry_after = str(max(1, round(exc.retry_after_s)))
            return _error(429, "backpressure", str(exc), {"Retry-After": retry_after})
        except StreamError as exc:
            log.error("stream append failed: %s", exc)
            return _error(503, "stream_unavailable", str(exc), {"Retry-After": "1"})
        return JSONResponse(result.as_json())

    @app.get("/v1/schema", summary="JSON Schema of the event model")
    async def schema() -> dict[str, Any]:
        return event_json_schema()

    @app.get("/healthz", summary="Liveness: the collector process answers")
    async def healthz() -> dict[str, Any]:
        """Always 200 while the process answers; whether it can do its work is /readyz."""
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _retention_loop(stream: EventStream) -> None:
    while True:
        await asyncio.sleep(RETENTION_INTERVAL_S)
        try:
            deleted = await run_in_threadpool(stream.enforce_retention, datetime.now(UTC))
        except StreamError as exc:
            log.error("retention failed: %s", exc)
            continue
        if deleted:
            log.info("retention deleted %d records", deleted)


def create_app_from_env() -> FastAPI:
    """The collector app with settings from ``PLAYPULSE_*`` variables (for workers)."""
    return create_app(Settings())
