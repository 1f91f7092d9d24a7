"""The read API: the metric catalog over HTTP, session lengths and live tiles.

:func:`mount_read_api` adds it to an app (``playpulse up`` does, next to the
collector); the routes are in :mod:`playpulse.api.router`, read-key checks (and the
guard of ``GET /metrics``) in :mod:`playpulse.api.auth`. OpenAPI docs stay at ``/docs``
(open: they describe the API, they hold no data).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from playpulse.api.auth import (
    ApiError,
    Identity,
    ReadAuth,
    guard_metrics,
    read_identity,
)
from playpulse.api.live import LiveFeed
from playpulse.api.router import create_read_router
from playpulse.config import Settings

__all__ = [
    "ApiError",
    "Identity",
    "LiveFeed",
    "ReadAuth",
    "create_read_router",
    "mount_read_api",
    "read_identity",
]

log = logging.getLogger("playpulse.api")


async def _api_error(_: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError only
        raise exc
    return exc.response()


def mount_read_api(app: FastAPI, settings: Settings, auth: ReadAuth | None = None) -> ReadAuth:
    """Add the read API to ``app`` and return its :class:`ReadAuth` (for the dashboard).

    ``auth`` defaults to :meth:`ReadAuth.from_settings` (read keys, session lifetime,
    metrics token, login throttle; the session secret of the data dir, made now when
    keys are configured: raises :class:`~playpulse.errors.ConfigError` when it cannot
    be). Registers the error handler of :class:`ApiError`, keeps ``auth`` as
    ``app.state.read_auth`` (for :func:`read_identity`) and the shared
    :class:`LiveFeed` as ``app.state.live_feed`` (its open streams end as soon as the
    server is asked to stop), guards ``GET /metrics`` (:class:`MetricsGuard`) and
    redacts credential query parameters from uvicorn's access log.
    """
    auth = auth or ReadAuth.from_settings(settings)
    if not auth.open:
        _ = auth.secret  # a data dir that cannot hold the secret fails at startup
    feed = LiveFeed(settings)
    app.state.live_feed = feed
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        async with inner(application) as state:
            feed.reopen()
            restore = feed.close_on_exit_signals()
            try:
                yield state
            finally:
                restore()
                feed.close()

    app.router.lifespan_context = lifespan
    app.state.read_auth = auth
    app.add_exception_handler(ApiError, _api_error)
    app.include_router(create_read_router(settings, auth, feed))
    guard_metrics(app, settings)  # app.state.read_auth is auth
    if auth.open:
        log.warning(
            "no read keys configured: anyone who can reach this address can read the "
            "metrics and the dashboard"
        )
    return auth
