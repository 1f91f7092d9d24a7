"""The project's error format for what FastAPI and Starlette answer themselves.

Every error playpulse answers is ``{"error": {"code": str, "message": str}}`` (the
``Error`` schema of the OpenAPI). Without :func:`add_error_handlers`, a path that does
not exist (404), a method a path does not take (405) and a request FastAPI refuses
before a route runs (422) would be answered ``{"detail": ...}``. Also here: which media
types ``POST /v1/events`` takes (:func:`unsupported_media_type`, answered 415).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

#: Media types ``POST /v1/events`` takes (any ``application/*+json`` too): JSON (one
#: event or an array), NDJSON under its usual names, and text/plain, what
#: ``navigator.sendBeacon`` sends a string as. A request without a Content-Type is read
#: as JSON.
EVENT_MEDIA_TYPES = (
    "application/json",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "text/plain",
)
#: Longest path or media type quoted back in a message, in characters.
SHOWN_CHARS = 120


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """``{"error": {"code", "message"}}`` with ``status`` (and ``headers``)."""
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _shown(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def unsupported_media_type(request: Request) -> str | None:
    """The one-line reason ``request`` (to ``POST /v1/events``) is answered 415, or None
    when its Content-Type is one of :data:`EVENT_MEDIA_TYPES`, an ``application/*+json``
    or absent (parameters such as ``charset`` are ignored)."""
    header = request.headers.get("content-type")
    if header is None or not header.strip():
        return None
    media = header.split(";", 1)[0].strip().lower()
    if media in EVENT_MEDIA_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return None
    return (
        f"Content-Type '{_shown(media)}' is not accepted: send events as application/json, "
        "application/x-ndjson or text/plain"
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - registered for it
        raise exc
    path = _shown(request.url.path)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        code = "not_found"
        message = f"nothing at {request.method} {path}; the API is described at /docs"
    elif exc.status_code == 405:
        allowed = headers.get("Allow") or headers.get("allow") or "none"
        code = "method_not_allowed"
        message = f"{request.method} is not allowed on {path}; allowed: {allowed}"
    else:
        code = f"http_{exc.status_code}"
        message = _shown(str(exc.detail)) or f"HTTP {exc.status_code}"
    return error_response(exc.status_code, code, message, headers or None)


async def _validation_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover - registered for it
        raise exc
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    message = _shown("; ".join(problems)) or "the request is invalid"
    return error_response(422, "invalid_request", message)


def add_error_handlers(app: FastAPI) -> None:
    """Answer 404, 405 (with ``Allow``), other HTTP errors Starlette raises and FastAPI's
    request validation errors (422) in the project's error format."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
