"""The HTTP collector as an AWS Lambda handler: API Gateway HTTP API and Function URLs.

:func:`handler` runs the real collector app (:func:`playpulse.collector.app.create_app`)
through the Mangum ASGI adapter, so ``POST /v1/events`` behind API Gateway or a Function
URL validates, limits, answers and quarantines exactly as the HTTP collector does: the
same status codes, error bodies (``{"error": {"code", "message"}}``), write keys
(``Authorization: Bearer <key>``, ``PLAYPULSE_WRITE_KEYS``), limits
(``PLAYPULSE_MAX_BODY_BYTES``, ``PLAYPULSE_MAX_EVENTS_PER_REQUEST``), gzip bodies and
partial appends (503 ``stream_unavailable`` with ``stored`` / ``not_stored``). Events go to
the stream ``PLAYPULSE_STREAM_URL`` names (``kinesis://STREAM`` in a deployment).

Events: payload format 2.0 (HTTP API, Function URL) and 1.0 (HTTP API v1, REST API),
answered in the response shape of their format; only their HTTP request is read (see
:func:`normalize_event`). Bodies with ``isBase64Encoded`` are decoded (strictly: an
invalid one is a 400); header names are matched in any case; a named stage's prefix
(``/prod/v1/events``) is removed from the path. An event that is not an HTTP request is
answered 400 ``unsupported_event``; an unexpected failure 503 ``internal_error`` (never a
500, never an invocation error). A request larger than Lambda's payload limit (6 MB for
the event, so about 4.5 MB for a base64-encoded gzip body) is refused by API Gateway or
the Function URL before the handler sees it; keep ``PLAYPULSE_MAX_BODY_BYTES`` at or
below that to get the collector's own 413 instead.

Lifetime in a Lambda: one app per warm container, made on the first invocation (a failed
start, say the stream is unreachable, is answered 503 ``stream_unavailable`` and tried
again on the next). The handler opens the stream and quarantine itself and passes them
to ``create_app`` (so the app never closes them), and the ASGI lifespan is off: Mangum
would run the app's startup and shutdown around every invocation, and the lifespan's only
work, the retention loop, cannot run in a container that is frozen between invocations.
Nothing needs it: Kinesis keeps its own retention, and the quarantine enforces its bounds
on every add.

Quarantine: ``PLAYPULSE_DATA_DIR`` defaults to ``<tmp>/playpulse`` (``/tmp`` is the only
writable folder of a Lambda, and it is lost with the container), so every rejection is
also written where it lasts (:class:`LambdaQuarantine`):

- to S3, when ``PLAYPULSE_QUARANTINE_URL`` (``s3://BUCKET/PREFIX``) is set or
  ``PLAYPULSE_LAKE_URL`` is an ``s3://`` URL (then beside the lake:
  ``s3://BUCKET/a/lake`` -> ``s3://BUCKET/a/quarantine``; a lake at the bucket's root ->
  ``s3://BUCKET/_quarantine``, which Hive-style readers skip). One NDJSON object per
  request, ``PREFIX/source=collector/date=YYYY-MM-DD/HHMMSS-<uuid>.ndjson`` (the
  first rejection's source and receive date), a line per rejection
  (:data:`playpulse.aws.quarantine.S3_LINE_FIELDS`). The function's role needs
  ``s3:PutObject`` there. If S3 refuses, the request is answered 503
  ``quarantine_unavailable`` and nothing of it is appended (the HTTP collector's rule
  when its quarantine cannot write);
- always to the log (CloudWatch Logs in a Lambda): one line per rejection, logger
  ``playpulse.aws.collector``, with its reason, errors, event_id and size, and its raw
  bytes (base64) when there is no S3 location;
- to the SQLite quarantine in the data dir (what ``/metrics`` reports), best effort.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI

from playpulse.aws.quarantine import (
    LambdaQuarantine,
    S3QuarantineSink,
    lambda_settings,
    quarantine_url,
)
from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.errors import ConfigError, PlaypulseError, QuarantineError, StreamError
from playpulse.quarantine.store import (
    QuarantineStore,
)
from playpulse.stream.base import EventStream
from playpulse.stream.factory import open_stream

log = logging.getLogger("playpulse.aws.collector")

#: Response headers the Lambda answer leaves out: hop-by-hop headers that API Gateway and
#: Function URLs manage themselves.
EXCLUDED_RESPONSE_HEADERS = ("connection",)


class CollectorHandler:
    """A Lambda handler bound to one collector app (made on the first call, see the
    module docstring). ``settings`` default to :func:`lambda_settings`; ``stream`` and
    ``quarantine`` to those the settings name (they are then opened on the first call).
    Calling it with an event returns the HTTP response dict for that event's payload
    format (``statusCode``, ``headers``, ``body``, ``isBase64Encoded``)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        stream: EventStream | None = None,
        quarantine: QuarantineStore | None = None,
    ) -> None:
        self._settings = settings
        self._stream = stream
        self._quarantine = quarantine
        self._adapter: Any = None
        self.app: FastAPI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="collector-handler")
        self._owned: list[EventStream | QuarantineStore] = []
        #: The settings the app was made with (None before the first call).
        self.settings: Settings | None = None

    def _start(self) -> Any:
        from mangum import Mangum

        settings = self._settings or lambda_settings()
        quarantine = self._quarantine
        if quarantine is None:
            url = quarantine_url(settings)
            sink = S3QuarantineSink(url) if url else None
            quarantine = LambdaQuarantine.for_lambda(settings, sink)
            where = f"{url} (and the log)" if url else "the log only (no S3 location set)"
            log.info("collector handler: rejected events are kept in %s", where)
        opened: list[EventStream | QuarantineStore] = []
        if self._quarantine is None:
            opened.append(quarantine)
        try:
            stream = self._stream
            if stream is None:
                stream = open_stream(settings)
                opened.append(stream)
            if not settings.write_keys:
                log.warning("no write keys configured: anyone who reaches this function can send")
            app = create_app(settings, stream=stream, quarantine=quarantine)
        except BaseException:
            for resource in opened:
                resource.close()
            raise
        self._owned = opened
        self._loop = asyncio.new_event_loop()
        adapter = Mangum(app, lifespan="off")
        self.settings = settings
        self.app = app
        self._adapter = adapter
        return adapter

    def __call__(self, event: Any, context: Any = None) -> dict[str, Any]:
        """Answer one Lambda event (see the class docstring). Never raises."""
        version = event.get("version") if isinstance(event, dict) else None
        try:
            normalized = normalize_event(event)
        except _BadEvent as exc:
            log.warning("collector handler: %s", exc)
            return lambda_response(version, exc.status, exc.code, str(exc))
        except Exception as exc:  # a field of an unexpected type, say
            log.warning("collector handler: unreadable event: %r", exc)
            message = f"the event cannot be read as an HTTP request ({type(exc).__name__}: {exc})"
            return lambda_response(version, 400, "unsupported_event", message)
        try:
            adapter = self._adapter or self._start()
        except PlaypulseError as exc:
            code = "unavailable"
            if isinstance(exc, ConfigError):
                code = "misconfigured"
            elif isinstance(exc, StreamError):
                code = "stream_unavailable"
            elif isinstance(exc, QuarantineError):
                code = "quarantine_unavailable"
            log.error("collector handler could not start: %s", exc)
            message = f"the collector cannot start ({exc}); send the request again later"
            return lambda_response(version, 503, code, message, {"retry-after": "1"})
        except Exception as exc:
            log.exception("collector handler could not start")
            message = (
                f"the collector cannot start ({type(exc).__name__}); send the request again later"
            )
            return lambda_response(version, 503, "internal_error", message, {"retry-after": "1"})
        try:
            # The adapter runs the app on the event loop of the thread it is called on,
            # and takes a loop already running there (a caller's: an async framework,
            # Playwright's sync API) if there is one, which it cannot run again. So it is
            # called on a thread of the handler's own, whose loop is the handler's.
            response: dict[str, Any] = self._runner.submit(
                self._run, adapter, normalized, context
            ).result()
        except Exception as exc:
            log.exception("collector handler failed on a %s event", version or "1.0")
            message = (
                f"the collector failed unexpectedly ({type(exc).__name__}); "
                "nothing of this request was stored, send it again later"
            )
            return lambda_response(version, 503, "internal_error", message, {"retry-after": "1"})
        status = int(response.get("statusCode", 503))
        if status >= 500 and status != 503:  # an app route crashed: say so as the app does
            log.error("collector app answered %d; answering 503 internal_error", status)
            message = "the collector failed unexpectedly; send the request again later"
            return lambda_response(version, 503, "internal_error", message, {"retry-after": "1"})
        headers = dict(response.get("headers") or {})
        for excluded in EXCLUDED_RESPONSE_HEADERS:
            headers.pop(excluded, None)
        response["headers"] = headers
        if version != "2.0":  # the 1.0 (REST) response shape: no cookies field
            cookies = response.pop("cookies", None)
            response["multiValueHeaders"] = {"set-cookie": cookies} if cookies else {}
        return response

    def _run(self, adapter: Any, event: dict[str, Any], context: Any) -> dict[str, Any]:
        asyncio.set_event_loop(self._loop)
        return dict(adapter(event, context))

    def close(self) -> None:
        """Close the stream and quarantine the first call opened, and the event loop
        (for tests and tools; a Lambda container just ends). The next call starts
        again."""
        self._adapter = None
        self.app = None
        for resource in self._owned:
            resource.close()
        self._owned.clear()
        if self._loop is not None:
            self._runner.submit(asyncio.set_event_loop, None).result()
            self._loop.close()
            self._loop = None


class _BadEvent(PlaypulseError):
    def __init__(self, message: str, status: int = 400, code: str = "unsupported_event") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def normalize_event(event: Any) -> dict[str, Any]:
    """The API Gateway / Function URL ``event`` as a clean payload 2.0 event that the
    adapter reads as the client sent it: method and path (a named stage's prefix
    removed), query string, header names in lower case with string values (1.0's
    ``multiValueHeaders`` joined with ``", "``), the body decoded (strict base64 when
    ``isBase64Encoded``) as bytes, ``content-length`` the body's real size. Other fields
    are left out.

    Raises ``_BadEvent`` (400) when ``event`` is not an HTTP request event of payload
    format 1.0 or 2.0 (a field missing or of the wrong type), or its base64 body is
    invalid.
    """
    if not isinstance(event, dict) or not isinstance(event.get("requestContext"), dict):
        raise _BadEvent(
            "the function was invoked with an event that is not an HTTP request from API "
            "Gateway or a Function URL (no requestContext)"
        )
    context = event["requestContext"]
    headers = _header_map(event.get("headers"), "headers")
    if event.get("version") == "2.0":
        http = context.get("http")
        if not isinstance(http, dict):
            raise _BadEvent("the 2.0 event has no requestContext.http")
        method, path = http.get("method"), http.get("path")
        query = event.get("rawQueryString")
        query = query if isinstance(query, str) else ""
        cookies = event.get("cookies")
        if isinstance(cookies, list) and cookies:
            headers["cookie"] = "; ".join(str(c) for c in cookies)
        source_ip = http.get("sourceIp")
    else:
        method, path = event.get("httpMethod"), event.get("path")
        for name, value in _header_map(event.get("multiValueHeaders"), "multiValueHeaders").items():
            headers[name] = value
        query = _query_string(event)
        identity = context.get("identity")
        source_ip = identity.get("sourceIp") if isinstance(identity, dict) else None
    if not isinstance(method, str) or not _METHOD.fullmatch(method):
        raise _BadEvent(f"the event's HTTP method is missing or not a method: {method!r:.40}")
    if not isinstance(path, str) or not path:
        raise _BadEvent("the event's path is missing or not a string")
    body = _body(event)
    headers.pop("transfer-encoding", None)
    headers["content-length"] = str(len(body))
    return {
        "version": "2.0",
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "http": {
                "method": method.upper(),
                "path": _without_stage(path if path.startswith("/") else "/" + path, context),
                "sourceIp": source_ip if isinstance(source_ip, str) else "0.0.0.0",
            },
        },
        "body": body,
        "isBase64Encoded": False,
    }


#: An HTTP method as the collector can route it.
_METHOD = re.compile(r"[A-Za-z]{1,16}")


def _header_map(value: object, what: str) -> dict[str, str]:
    """Headers (``{name: value}``, or 1.0's ``{name: [values]}``) with lower-case names
    and string values (a list joined with ``", "``); None values are left out."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _BadEvent(f"the event's {what} are not an object")
    out = {}
    for name, item in value.items():
        if item is None:
            continue
        if isinstance(item, list):
            item = ", ".join(str(v) for v in item if v is not None)
        out[str(name).lower()] = str(item)
    return out


def _query_string(event: dict[str, Any]) -> str:
    """The query string of a 1.0 event, from its (multi-value) query parameters."""
    for name in ("multiValueQueryStringParameters", "queryStringParameters"):
        params = event.get(name)
        if isinstance(params, dict) and params:
            pairs = [
                (str(key), str(v))
                for key, values in params.items()
                for v in (values if isinstance(values, list) else [values])
                if v is not None
            ]
            return urlencode(pairs)
    return ""


def _body(event: dict[str, Any]) -> bytes:
    """The body as the client sent it."""
    body = event.get("body")
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if not isinstance(body, str):
        raise _BadEvent("the event's body is not a string")
    if event.get("isBase64Encoded") is True:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _BadEvent(
                f"the event's body is marked isBase64Encoded but is not valid base64: {exc}",
                code="malformed_body",
            ) from None
    return body.encode("utf-8", "surrogatepass")  # any str, even a lone surrogate


def _without_stage(path: str, context: dict[str, Any]) -> str:
    """``path`` without the prefix ``/STAGE`` of a named stage (API Gateway keeps it)."""
    stage = context.get("stage")
    if not isinstance(stage, str) or stage in ("", "$default"):
        return path
    prefix = f"/{stage}"
    if path == prefix:
        return "/"
    if path.startswith(prefix + "/"):
        return path[len(prefix) :]
    return path


def lambda_response(
    version: object,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Lambda HTTP answer with the collector's error body ``{"error": {"code",
    "message"}}`` (for answers made before or around the app)."""
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", **(headers or {})},
        "body": json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")),
        "isBase64Encoded": False,
    } | ({"multiValueHeaders": {}} if version != "2.0" else {})


_HANDLER: CollectorHandler | None = None
_HANDLER_LOCK = threading.Lock()


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """The Lambda entry point (``playpulse.aws.collector_handler.handler``): the
    collector's answer to an API Gateway HTTP API or Function URL ``event``, as
    ``{"statusCode", "headers", "body", "isBase64Encoded"}``. The app is made on the
    first call from the ``PLAYPULSE_*`` variables (see :func:`lambda_settings`) and
    reused while the container is warm. Never raises."""
    global _HANDLER
    with _HANDLER_LOCK:
        if _HANDLER is None:
            _HANDLER = CollectorHandler()
        current = _HANDLER
    return current(event, context)
