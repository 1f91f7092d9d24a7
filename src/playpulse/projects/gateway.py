"""The HTTP front of a playpulse with projects: one port, every project's data apart.

:func:`create_gateway_app` returns an ASGI app that authenticates each request with a
project's key (:mod:`playpulse.projects.registry`) and hands it to that project's own app
(a full :func:`playpulse.service.create_service_app` on the project's data dir: collector,
processor group, read API, dashboard). A request never reaches another project's app,
so it can only read and write that project's files.

How a request is authenticated:

- ``POST /v1/events``: a write key (``Authorization: Bearer``), or the project's browser
  key, which is accepted only with an ``Origin`` on the project's list, as a bearer
  token, a ``key`` query parameter or an ``{"api_key": KEY, "events": [...]}`` body (the
  shape Amplitude's HTTP API uses; ``navigator.sendBeacon`` cannot set headers).
  Answers to browser-key requests carry ``Access-Control-Allow-Origin`` for that origin;
  ``OPTIONS /v1/events`` (CORS preflight) is answered for origins on any project's list.
- Everything else that shows data (read API, dashboard pages, ``/metrics``): a read key
  as a bearer token, a ``key`` query parameter, or the dashboard cookie set by
  ``POST /login`` (signed, expiring, naming the key by prefix, so revoking a key ends its
  sessions). A read key limited to a vendor reaches only that vendor's shop queries
  (enforced by the read API: :data:`VENDOR_STATE`).
- ``/graphql``: a write key for mutations, a read key (not vendor-scoped) for queries.
- ``/healthz``, ``/readyz`` (every project's checks), ``/v1/schema``, ``/assets/...``,
  ``/sdk/playpulse.js``, ``/login``, ``/logout``, the OpenAPI pages: no key (they show no
  data).

The project's app sees an internal key of this process in place of the caller's (its
own key checks pass), and never the caller's ``key`` query parameter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
from pydantic import SecretStr

from playpulse.api.auth import LoginThrottle, TooManyAttempts
from playpulse.api.vendor import VENDOR_STATE
from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.projects.registry import (
    KeyInfo,
    list_projects,
    project_settings,
    resolve_key,
    resolve_prefix,
)

__all__ = ["Gateway", "create_gateway_app", "serving_app"]

log = logging.getLogger("playpulse.projects")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_OPEN_PATHS = ("/healthz", "/v1/schema", "/favicon.ico", "/openapi.json", "/docs", "/redoc")
_PREFLIGHT_MAX_AGE_S = 600
_ALLOW_HEADERS = b"authorization, content-type, content-encoding"


class _Envelope(msgspec.Struct):
    api_key: str
    events: msgspec.Raw


_envelope = msgspec.json.Decoder(_Envelope)


@dataclass(frozen=True)
class _Caller:
    key: KeyInfo
    origins: tuple[str, ...]


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", [])}


def _bearer(headers: dict[bytes, bytes]) -> str | None:
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _query(scope: Scope) -> list[tuple[str, str]]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return parse_qsl(raw, keep_blank_values=True)


async def _json(send: Send, status: int, body: dict[str, Any], headers: Any = ()) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _error(send: Send, status: int, code: str, message: str, headers: Any = ()) -> None:
    await _json(send, status, {"error": {"code": code, "message": message}}, headers)


class Gateway:
    """The ASGI app of :func:`create_gateway_app`: ``apps`` maps each project name to its
    app; ``settings`` are the data dir's (where the registry is)."""

    def __init__(self, settings: Settings, apps: dict[str, AsgiApp], internal: Settings) -> None:
        self.settings = settings
        self.apps = apps
        self._write_header = b"Bearer " + internal.write_keys[0].get_secret_value().encode()
        self._read_header = b"Bearer " + internal.read_keys[0].get_secret_value().encode()
        self._stack: contextlib.AsyncExitStack | None = None
        self._sessions = _SessionCookies(settings)
        self._throttle = LoginThrottle(settings.login_failures_per_minute)

    # --- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``lifespan`` or ``http``)."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        stack = contextlib.AsyncExitStack()
        try:
            for app in self.apps.values():
                router = getattr(app, "router", None)
                if router is not None:
                    await stack.enter_async_context(router.lifespan_context(app))
        except BaseException as exc:
            await stack.aclose()
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        self._stack = stack
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await stack.aclose()
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._route(scope, receive, send)
        except TooManyAttempts as exc:
            await exc.response()(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/readyz":
            await self._readyz(send)
        elif (
            path in _OPEN_PATHS
            or path.startswith(("/assets/", "/sdk/"))
            or (path == "/login" and (method != "POST"))
        ):
            await self._forward(next(iter(self.apps)), scope, receive, send, None)
        elif path == "/login":
            await self._login(scope, receive, send)
        elif path == "/logout":
            await self._logout(send)
        elif path == "/v1/events":
            await self._events(scope, receive, send)
        elif path == "/graphql":
            await self._graphql(scope, receive, send)
        else:
            await self._read(scope, receive, send)

    async def _forward(
        self,
        project: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        authorization: bytes | None,
        state: dict[str, Any] | None = None,
    ) -> None:
        inner = dict(scope)
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"authorization"]
        if authorization is not None:
            headers.append((b"authorization", authorization))
        inner["headers"] = headers
        query = [(k, v) for k, v in _query(scope) if k != "key"]
        inner["query_string"] = urlencode(query).encode()
        inner["state"] = dict(state or {})
        await self.apps[project](inner, receive, send)

    # --- keys -------------------------------------------------------------------------

    def _check(self, scope: Scope, key: str) -> tuple[KeyInfo, tuple[str, ...]] | None:
        """``key``'s info and origins, counting a wrong key against the client
        (:class:`~playpulse.api.auth.LoginThrottle`): raises
        :class:`~playpulse.api.auth.TooManyAttempts` past the limit, a right key too."""
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self._throttle.retry_after(client)
        if wait > 0:
            raise TooManyAttempts(wait)
        found = resolve_key(self.settings, key)
        if found is None:
            self._throttle.failed(client)
        else:
            self._throttle.succeeded(client)
        return found

    # --- writes -----------------------------------------------------------------------

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        origin = headers.get(b"origin", b"").decode("latin-1")
        if scope["method"] == "OPTIONS":
            await self._preflight(headers, origin, send)
            return
        bearer = _bearer(headers)
        key = bearer or dict(_query(scope)).get("key")
        if key is None and scope["method"] == "POST":
            body = await _read_body(receive, self.settings.max_body_bytes)
            if body is None:
                await _error(
                    send,
                    413,
                    "body_too_large",
                    f"the body exceeds {self.settings.max_body_bytes} bytes",
                )
                return
            try:
                envelope = _envelope.decode(body)
            except msgspec.DecodeError:
                envelope = None
            if envelope is not None:
                key, body = envelope.api_key, bytes(envelope.events)
            receive = _replay(body, receive)
            scope = dict(scope)
            scope["headers"] = [
                (k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"
            ] + [(b"content-length", str(len(body)).encode())]
        found = self._check(scope, key) if key else None
        # A server write key only in the header: a key in a URL or body ends up in logs
        # and pages; only the publishable browser key may travel there.
        allowed = ("write", "browser") if bearer else ("browser",)
        if found is None or found[0].kind not in allowed:
            await _error(
                send,
                401,
                "unauthorized",
                "a valid write key is required: Authorization: Bearer <key> (browser keys "
                'also as ?key= or an {"api_key", "events"} body)',
                [(b"www-authenticate", b"Bearer")],
            )
            return
        info, origins = found
        if info.kind == "browser":
            if origin not in origins:
                await _error(
                    send,
                    403,
                    "origin_not_allowed",
                    f"this browser key is not accepted from origin {origin or '(none)'!r}; "
                    "allow it with `playpulse projects origins`",
                )
                return
            send = _with_cors(send, origin)
        await self._forward(info.project, scope, receive, send, self._write_header)

    async def _preflight(self, headers: dict[bytes, bytes], origin: str, send: Send) -> None:
        allowed = any(origin in p.origins for p in list_projects(self.settings))
        if not origin or not allowed:
            await _error(
                send, 403, "origin_not_allowed", f"origin {origin or '(none)'!r} is not allowed"
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    (b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"access-control-allow-methods", b"POST, OPTIONS"),
                    (
                        b"access-control-allow-headers",
                        b"authorization, content-type, content-encoding",
                    ),
                    (b"access-control-max-age", str(_PREFLIGHT_MAX_AGE_S).encode()),
                    (b"vary", b"Origin"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _graphql(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/graphql``: a write key's mutations, a read key's queries. A vendor-scoped
        read key is refused here: the GraphQL API's vendor analytics take any vendor id."""
        key = _bearer(_headers(scope))
        found = self._check(scope, key) if key else None
        if found is None or found[0].kind == "browser":
            await _error(
                send,
                401,
                "unauthorized",
                "a valid write key (mutations) or read key (queries) is required: "
                "Authorization: Bearer <key>",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        info = found[0]
        if info.vendor_id is not None:
            await _error(send, 403, "forbidden", "a vendor's key cannot use /graphql")
            return
        header = self._write_header if info.kind == "write" else self._read_header
        await self._forward(info.project, scope, receive, send, header)

    # --- reads ------------------------------------------------------------------------

    def _read_caller(self, scope: Scope) -> KeyInfo | None:
        headers = _headers(scope)
        key = _bearer(headers) or dict(_query(scope)).get("key")
        if key:
            found = self._check(scope, key)
            return found[0] if found is not None and found[0].kind == "read" else None
        prefix = self._sessions.read(headers.get(b"cookie", b"").decode("latin-1"))
        if prefix is None:
            return None
        info = resolve_prefix(self.settings, prefix)
        return info if info is not None and info.kind == "read" else None

    async def _read(self, scope: Scope, receive: Receive, send: Send) -> None:
        caller = self._read_caller(scope)
        page = scope["method"] == "GET" and not scope["path"].startswith(("/v1/", "/metrics"))
        if caller is None:
            if page and (scope["path"] == "/" or scope["path"].startswith("/content/")):
                target = urlencode({"next": scope["path"]})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 303,
                        "headers": [(b"location", f"/login?{target}".encode())],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return
            await _error(
                send,
                401,
                "unauthorized",
                "a valid read key is required: Authorization: Bearer <key>, ?key=<key>, "
                "or sign in to the dashboard at /login",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        if page and "key" in dict(_query(scope)):
            # A page opened with ?key=: sign in, then show the address without the key.
            query = urlencode([(k, v) for k, v in _query(scope) if k != "key"])
            location = scope["path"] + (f"?{query}" if query else "")
            await self._redirect_signed_in(send, caller, location)
            return
        state = {VENDOR_STATE: caller.vendor_id} if caller.vendor_id else {}
        if caller.vendor_id and scope["path"] == "/metrics":
            await _error(send, 403, "forbidden", "a vendor's key cannot read /metrics")
            return
        await self._forward(caller.project, scope, receive, send, self._read_header, state)

    # --- sign-in ----------------------------------------------------------------------

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive, 8 * 1024)
        form = dict(parse_qsl((body or b"").decode("utf-8", "replace")))
        next_path = form.get("next", "/")
        if not next_path.startswith("/") or next_path.startswith("//") or "\\" in next_path:
            next_path = "/"
        key = form.get("key", "").strip()
        found = self._check(scope, key) if key else None
        if found is None or found[0].kind != "read":
            await _error(send, 401, "unauthorized", "that is not a read key of this server")
            return
        await self._redirect_signed_in(send, found[0], next_path)

    async def _redirect_signed_in(self, send: Send, key: KeyInfo, location: str) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode()),
                    (b"set-cookie", self._sessions.cookie(key.prefix).encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _logout(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", b"/login"),
                    (b"set-cookie", self._sessions.clear().encode("latin-1")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _readyz(self, send: Send) -> None:
        from playpulse.collector.app import readiness_report

        reports = {}
        for name, app in self.apps.items():
            reports[name] = await readiness_report(app)  # type: ignore[arg-type]
        ready = all(r["status"] != "not_ready" for r in reports.values())
        status = "ready" if ready else "not_ready"
        await _json(send, 200 if ready else 503, {"status": status, "projects": reports})


class _SessionCookies:
    """The dashboard cookie in projects mode: the read key's prefix, signed and timestamped
    (itsdangerous) with the data dir's session secret
    (:func:`playpulse.api.auth.session_secret`), refused after ``session_max_age_s``."""

    NAME = "playpulse_session"

    def __init__(self, settings: Settings) -> None:
        from itsdangerous import URLSafeTimedSerializer

        from playpulse.api.auth import session_secret

        self.max_age_s = settings.session_max_age_s
        secret = session_secret(settings.data_dir)
        self._serializer = URLSafeTimedSerializer(secret, salt="playpulse projects session")

    def cookie(self, prefix: str) -> str:
        """The ``Set-Cookie`` value that signs in with the key listed under ``prefix``."""
        value = self._serializer.dumps(prefix)
        return f"{self.NAME}={value}; Max-Age={self.max_age_s}; Path=/; HttpOnly; SameSite=Strict"

    def clear(self) -> str:
        """The ``Set-Cookie`` value that signs out."""
        return f"{self.NAME}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"

    def read(self, cookie_header: str) -> str | None:
        """The key prefix a valid, unexpired cookie in ``cookie_header`` names, or None."""
        from http.cookies import CookieError, SimpleCookie

        from itsdangerous import BadSignature

        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie_header)
        except CookieError:
            return None
        morsel = jar.get(self.NAME)
        if morsel is None:
            return None
        try:
            value = self._serializer.loads(morsel.value, max_age=self.max_age_s)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _with_cors(send: Send, origin: str) -> Send:
    async def with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = [
                *message.get("headers", []),
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"vary", b"Origin"),
            ]
        await send(message)

    return with_cors


def create_gateway_app(
    settings: Settings, factory: Callable[[Settings], AsgiApp] | None = None
) -> Gateway:
    """The app serving every project of ``settings``' data dir on one port.

    ``factory`` builds a project's app from its settings (default:
    :func:`playpulse.service.create_service_app`, the collector with its processor group,
    the read API and the dashboard). Raises :class:`~playpulse.errors.ConfigError` when
    the data dir has no project."""
    projects = [p.name for p in list_projects(settings)]
    if not projects:
        raise ConfigError(f"no project in {settings.data_dir}: `playpulse projects create NAME`")
    if factory is None:
        from playpulse.service import create_service_app

        factory = create_service_app
        assert factory is not None
    internal = {
        "write_keys": [SecretStr(secrets.token_urlsafe(32))],
        "read_keys": [SecretStr(secrets.token_urlsafe(32))],
    }
    apps = {
        name: factory(project_settings(settings, name).model_copy(update=internal))
        for name in projects
    }
    inner = settings.model_copy(update=internal)
    return Gateway(settings, apps, inner)


def serving_app(settings: Settings, with_processor: bool) -> Gateway | None:
    """What ``playpulse up`` (``with_processor``) or ``playpulse collect`` serves when
    ``settings``' data dir has projects: the gateway over every project's app; ``None``
    when it has none (single-project mode: serve the data dir itself).

    Raises :class:`~playpulse.errors.ConfigError` with ``workers`` > 1 (a project's
    processors are started by its app's lifespan, once per process)."""
    if not list_projects(settings):
        return None
    if settings.workers > 1:
        raise ConfigError(
            "projects are served by one collector process: run without --workers "
            "(each project still gets its own processor group)"
        )
    if settings.write_keys or settings.read_keys:
        log.warning(
            "this data dir has projects: the --write-key/--read-key settings are not used; "
            "each project has its own keys (`playpulse projects keys`)"
        )
    if with_processor:
        return create_gateway_app(settings)
    from playpulse.collector.app import create_app

    return create_gateway_app(settings, lambda s: create_app(s))
