"""The read API's routes (all ``GET``, JSON unless said otherwise).

- ``/v1/metrics``: the catalog: every query's name, description and columns.
- ``/v1/metrics/{name}``: run one catalog query with ``from``, ``to``, ``tz``, ``limit``,
  ``content_id``, ``creator``, ``content_type``, ``vendor_id``; answers
  ``{"name", "params", "window", "columns", "rows"}``. Without ``from``/``to`` a query
  covers the data (:mod:`playpulse.query.window`); ``params.from``/``params.to`` are the
  window used and ``window`` says where each bound came from and where the data is.
- ``/v1/sessions/histogram``: session length distribution, same answer shape.
- ``/v1/live``: the live tiles now; ``/v1/live/stream``: the same as server-sent events.

Queries run in worker threads, at most :data:`QUERY_CONCURRENCY` at a time (they are
CPU-bound: more only slow each other and the live tiles down). Errors are
``{"error": {"code", "message"}}``: 404 ``unknown_query``, 422 ``invalid_params``, 400
``query_failed``, 401 ``unauthorized``, and 503 ``data_unavailable`` when the stored data
cannot be read (a corrupt ``store.db``, a data dir that is gone): a fault of the server's
data, not of the request, that ``playpulse status`` and ``GET /readyz`` describe.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import duckdb
import pyarrow as pa
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from playpulse.api import sessions
from playpulse.api.auth import ApiError, ReadAuth
from playpulse.api.encode import table_rows
from playpulse.api.live import LiveFeed
from playpulse.api.params import (
    OPENAPI_PARAMETERS,
    describe,
    parse_params,
    parse_whole_number,
    shown,
)
from playpulse.api.vendor import VENDOR_QUERIES, forbid_vendor, restrict, vendor_of
from playpulse.config import Settings
from playpulse.errors import PlaypulseError
from playpulse.query.catalog import CATALOG, QueryError, QueryParams, run_query
from playpulse.query.window import QueryWindow, resolve_window

log = logging.getLogger("playpulse.api")


class QueryInfo(BaseModel):
    """One catalog entry."""

    name: str
    description: str
    columns: list[str]
    path: str


class Catalog(BaseModel):
    """The catalog and the parameters every query accepts."""

    queries: list[QueryInfo]
    parameters: list[str]


class Window(BaseModel):
    """The window a query covered and where its bounds came from."""

    from_: str = Field(alias="from", description="Start (inclusive), UTC, ISO 8601.")
    to: str = Field(description="End (exclusive), UTC, ISO 8601.")
    from_source: Literal["request", "data", "default"] = Field(
        description="`request`: given; `data`: midnight (in `tz`) of the earliest event's "
        "day; `default`: no data (or none on that side of the given bound)."
    )
    to_source: Literal["request", "data", "default"] = Field(
        description="`data`: the midnight (in `tz`) after the newest event's day."
    )
    data_first: str | None = Field(
        description="The earliest play or shop event the metrics count (null: no data, or "
        "not looked up because both bounds were given)."
    )
    data_last: str | None = Field(description="The newest one (end of playing time).")


class MetricResult(BaseModel):
    """A query's answer: its name, resolved parameters, window, columns and rows."""

    name: str
    params: dict[str, Any] = Field(
        description="Resolved parameters: from/to (UTC, ISO; the window used), tz, limit, "
        "filters given."
    )
    window: Window
    columns: list[str]
    rows: list[dict[str, Any]] = Field(
        description="One object per row, keyed by column; dates and times as ISO strings."
    )


class ErrorBody(BaseModel):
    """``code`` (machine-readable) and ``message`` (what is wrong and how to fix it)."""

    code: str
    message: str


class ErrorResponse(BaseModel):
    """The shape of every error answer."""

    error: ErrorBody


class LiveSnapshot(BaseModel):
    """The live tiles."""

    at: str
    seq: int
    concurrent_listeners: int
    events_last_minute: int
    freshness_s: float | None
    quarantined: int
    top_content: list[dict[str, Any]]


#: Catalog queries and histograms computed at the same time; later ones wait their turn.
QUERY_CONCURRENCY = 2
#: Largest ``max_events`` of ``/v1/live/stream``.
MAX_STREAM_EVENTS = 1_000_000

_T = TypeVar("_T")

#: Failures of the stored data underneath a read (not of the request): answered 503.
DATA_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.Error,
    duckdb.Error,
    pa.ArrowException,
    OSError,
    PlaypulseError,
)
_UNAVAILABLE = {
    "model": ErrorResponse,
    "description": "The stored data cannot be read now (see `playpulse status`, /readyz).",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "A read key is configured and missing."},
    422: {"model": ErrorResponse, "description": "A parameter is wrong (the message says)."},
    503: _UNAVAILABLE,
}


async def reading(what: str, work: Awaitable[_T]) -> _T:
    """Await ``work`` (a read of ``what``); a failure of the stored data (one of
    :data:`DATA_ERRORS`, except :class:`QueryError`, the request's fault) becomes a 503
    ``data_unavailable`` :class:`ApiError` and is logged with its traceback."""
    try:
        return await work
    except QueryError:
        raise
    except DATA_ERRORS as exc:
        log.exception("reading %s failed", what)
        detail = f"{type(exc).__name__}: {exc}"
        if len(detail) > 300:
            detail = detail[:300] + "..."
        raise ApiError(
            503,
            "data_unavailable",
            f"the stored data of {what} cannot be read now ({detail}); `playpulse status` "
            "and GET /readyz say more",
        ) from None


def create_read_router(settings: Settings, auth: ReadAuth, feed: LiveFeed) -> APIRouter:
    """The read API on ``settings``' data dir, guarded by ``auth``; live tiles from
    ``feed``."""

    def require_read_key(request: Request) -> None:
        auth.require(request)

    slots = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def compute(what: str, func: Callable[..., _T], *args: Any) -> _T:
        async with slots:
            return await reading(what, run_in_threadpool(func, *args))

    router = APIRouter(tags=["read"], dependencies=[Depends(require_read_key)])

    def _run_metric(name: str, params: QueryParams) -> tuple[QueryWindow, pa.Table]:
        window = resolve_window(params, settings)
        return window, run_query(name, window.params(params), settings)

    @router.get(
        "/v1/metrics",
        summary="List the metric catalog",
        response_model=Catalog,
        responses={401: _ERRORS[401]},
    )
    async def list_metrics(request: Request) -> Catalog:
        """Every catalog query with what it answers, its columns and its path, and the
        parameters the queries take (a vendor-scoped key sees its shop queries only)."""
        limited = vendor_of(request) is not None
        return Catalog(
            queries=[
                QueryInfo(
                    name=spec.name,
                    description=spec.description,
                    columns=list(spec.columns),
                    path=f"/v1/metrics/{spec.name}",
                )
                for spec in CATALOG.values()
                if not limited or spec.name in VENDOR_QUERIES
            ],
            parameters=[p["name"] for p in OPENAPI_PARAMETERS],
        )

    @router.get(
        "/v1/metrics/{name}",
        summary="Run a catalog query",
        description="Runs the named query of the catalog (see `GET /v1/metrics` and "
        "docs/metrics.md). Parameters a query does not use are ignored.",
        responses={
            200: {"model": MetricResult},
            404: {"model": ErrorResponse, "description": "No query of that name."},
            400: {"model": ErrorResponse, "description": "The query failed."},
            **_ERRORS,
        },
        openapi_extra={"parameters": OPENAPI_PARAMETERS},
    )
    async def get_metric(
        name: Annotated[
            str,
            Path(
                description="A query of the catalog (`GET /v1/metrics`).",
                json_schema_extra={"enum": list(CATALOG)},
            ),
        ],
        request: Request,
    ) -> JSONResponse:
        spec = CATALOG.get(name)
        if spec is None:
            raise ApiError(
                404,
                "unknown_query",
                f"unknown query {shown(name)}; known: {', '.join(sorted(CATALOG))}",
            )
        params = restrict(request, name, parse_params(request.query_params))
        try:
            window, table = await compute(f"query '{name}'", _run_metric, name, params)
        except QueryError as exc:
            raise ApiError(400, "query_failed", str(exc)) from None
        return JSONResponse(
            {
                "name": name,
                "params": describe(window.params(params)),
                "window": window.as_json(),
                "columns": list(spec.columns),
                "rows": table_rows(table),
            }
        )

    @router.get(
        "/v1/sessions/histogram",
        summary="Session length distribution",
        description=sessions.DESCRIPTION + " Uses `from`, `to` and `tz` only.",
        responses={
            200: {"model": MetricResult},
            400: {"model": ErrorResponse, "description": "The query failed."},
            **_ERRORS,
        },
        openapi_extra={"parameters": OPENAPI_PARAMETERS[:3]},
    )
    async def session_histogram(request: Request) -> JSONResponse:
        forbid_vendor(request, "sessions")
        params = parse_params(request.query_params)
        try:
            window, table = await compute(
                "the session histogram", sessions.session_histogram_in, params, settings
            )
        except QueryError as exc:
            raise ApiError(400, "query_failed", str(exc)) from None
        return JSONResponse(
            {
                "name": "session_lengths",
                "params": describe(window.params(params)),
                "window": window.as_json(),
                "columns": list(sessions.COLUMNS),
                "rows": table_rows(table),
            }
        )

    @router.get(
        "/v1/live",
        summary="Live tiles now",
        description="Concurrent listeners, events processed in the last minute, data "
        "freshness (age of the newest processed event's receipt, seconds), quarantined "
        "events and the content most listened to now.",
        response_model=LiveSnapshot,
        responses={401: _ERRORS[401], 503: _UNAVAILABLE},
    )
    async def live(request: Request) -> dict[str, Any]:
        forbid_vendor(request, "the live tiles")
        return await reading("the live tiles", feed.current())

    @router.get(
        "/v1/live/stream",
        summary="Live tiles as server-sent events",
        description="`text/event-stream`: an `event: live` whose `data` is the JSON of "
        "`GET /v1/live`, within about a second of new events and at least every 2 s. "
        "`max_events=N` ends the stream after N events (for scripts).",
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "The stream."},
            **_ERRORS,
        },
        openapi_extra={
            "parameters": [
                {
                    "name": "max_events",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_STREAM_EVENTS},
                }
            ]
        },
    )
    async def live_stream(request: Request) -> StreamingResponse:
        forbid_vendor(request, "the live tiles")
        raw = request.query_params.get("max_events")
        max_events = None
        if raw is not None:
            max_events = parse_whole_number("max_events", raw, 1, MAX_STREAM_EVENTS)
        return StreamingResponse(
            feed.events(max_events),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
