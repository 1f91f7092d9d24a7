"""Read keys: who may use the read API (``/v1/metrics``, ``/v1/sessions``, ``/v1/live``),
the dashboard and ``GET /metrics``.

Read keys are separate from write keys (``Settings.read_keys``, env
``PLAYPULSE_READ_KEYS``, ``playpulse up --read-key``). With none configured, reads are
open to whoever can reach the bound address. With keys, a request is let in when it
carries one of them in any of three ways:

- ``Authorization: Bearer <key>`` (scripts, ``curl``);
- a ``key`` query parameter (clients that cannot set headers, such as a cross-origin
  ``EventSource``); it is redacted from uvicorn's access log, however its name or value
  is percent-encoded (:class:`RedactKeyFilter`);
- the dashboard's session cookie set by ``POST /login``: the *subject* of the key's
  :class:`Identity` (never the key), signed with a secret kept in the data dir
  (``session.secret``, mode 0600, made once) and timestamped. It expires after
  ``Settings.session_max_age_s`` (default 12 h); a tampered or expired cookie is refused
  (401 on the API, a redirect to ``/login`` on pages), and so is the cookie of a key that
  is no longer configured: the subject is resolved again on every request
  (:meth:`ReadAuth.resolve_subject`). The cookie is ``HttpOnly``, ``SameSite=Strict``.

Every decision goes through one resolver, :class:`ReadAuth`: :meth:`ReadAuth.identify`
(a key), :meth:`ReadAuth.resolve_subject` (a cookie's subject) and
:meth:`ReadAuth.identify_request` (a request). Subclasses (projects, vendor-scoped keys)
override ``identify``, ``resolve_subject`` and ``open``; routes get the caller's
:class:`Identity` from :func:`read_identity` (a FastAPI dependency) or
``request.state.read_identity``.

Wrong keys are throttled per client address (:class:`LoginThrottle`; the address uvicorn
reports, which honours ``X-Forwarded-For`` from trusted proxies only): after
``Settings.login_failures_per_minute`` wrong keys within a minute (by ``/login``, a
``?key=``, or a Bearer header), every key of that client is refused with 429 and
``Retry-After`` until the oldest failure is a minute old. Right keys are never counted.
The count is kept per server process.

``GET /metrics`` (Prometheus) is guarded by :class:`MetricsGuard`: open when no read key
and no ``Settings.metrics_token`` is configured; otherwise it needs the metrics token or
a read key that sees the whole server (:meth:`ReadAuth.sees_server_metrics`), by header,
``?key=`` or cookie.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote_plus

from fastapi import Request
from fastapi.responses import JSONResponse
from itsdangerous import BadSignature, TimestampSigner
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from playpulse.config import Settings
from playpulse.errors import ConfigError

log = logging.getLogger("playpulse.api")

#: Name of the dashboard's session cookie.
COOKIE_NAME = "playpulse_read"
#: Default lifetime of a dashboard session (seconds): 12 hours.
DEFAULT_SESSION_MAX_AGE_S = 12 * 3600
#: Default number of wrong keys a client may try per minute.
DEFAULT_LOGIN_FAILURES_PER_MINUTE = 10
#: The session secret's file in the data dir.
SECRET_FILE = "session.secret"
#: Query parameter names (decoded, lower-cased) containing any of these are credentials:
#: their values never reach the access log.
CREDENTIAL_WORDS = ("key", "token", "secret", "password", "passwd", "auth", "credential")

_SALT = b"playpulse dashboard session v2"
_SUBJECT_CONTEXT = b"playpulse read key subject v1\x00"


@dataclass(frozen=True)
class Identity:
    """Who a request reads as.

    - ``subject``: a stable id of the credential (what the session cookie holds, signed);
      never the key itself.
    - ``project``: the project the identity may read (``None``: the server's data, as
      with ``Settings.read_keys``).
    - ``vendor_id``: the only vendor whose figures it may see (``None``: every vendor).
    """

    subject: str
    project: str | None = None
    vendor_id: str | None = None


#: The identity of every request when no read key is configured.
OPEN_IDENTITY = Identity("open")


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``.

    Registered on the app by :func:`playpulse.api.mount_read_api`; the same shape as the
    collector's errors.
    """

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> JSONResponse:
        """This error as its JSON response."""
        return JSONResponse(
            {"error": {"code": self.code, "message": self.message}},
            self.status,
            headers=self.headers,
        )


class TooManyAttempts(ApiError):
    """429: this client gave too many wrong keys lately; ``retry_after_s`` until the next
    try is heard (also the ``Retry-After`` header, whole seconds, at least 1)."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(
            429,
            "too_many_attempts",
            f"too many wrong keys from this address; try again in {seconds} s",
            {"Retry-After": str(seconds)},
        )


def key_subject(key: bytes) -> str:
    """The subject of a configured read key: ``key-`` and 16 hex digits of a SHA-256 of
    the key (stable across restarts; not enough to find a random key back)."""
    return "key-" + hashlib.sha256(_SUBJECT_CONTEXT + key).hexdigest()[:16]


def session_secret(data_dir: Path) -> bytes:
    """The secret that signs session cookies: ``data_dir/session.secret`` (64 hex
    digits), created once with mode 0600 (atomically: concurrent workers agree on one).

    Raises :class:`~playpulse.errors.ConfigError` when it cannot be made or read, or is
    too short to be a secret.
    """
    path = data_dir / SECRET_FILE
    try:
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, temp = tempfile.mkstemp(dir=data_dir, prefix=".session.secret.")  # 0600
            try:
                with os.fdopen(fd, "w", encoding="ascii") as out:
                    out.write(secrets.token_hex(32) + "\n")
                os.link(temp, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            finally:
                os.unlink(temp)
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        secret = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"session secret {path}: cannot create or read it ({exc})") from None
    if len(secret) < 32:
        raise ConfigError(
            f"session secret {path} is too short ({len(secret)} characters, 32 at least): "
            "delete it to have a new one made (signed-in browsers sign in again)"
        )
    return secret.encode("ascii")


class LoginThrottle:
    """Counts wrong keys per client; refuses a client's keys after ``max_failures`` of
    them within ``window_s`` seconds, until the oldest is ``window_s`` old.

    Memory is bounded: at most ``max_failures`` times for each of the ``max_clients``
    clients seen most recently (older ones are forgotten). Thread-safe. ``clock`` is
    monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        max_failures: int = DEFAULT_LOGIN_FAILURES_PER_MINUTE,
        window_s: float = 60.0,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window_s <= 0 or max_clients < 1:
            raise ValueError("max_failures, window_s and max_clients must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Clients with failures remembered."""
        return len(self._failures)

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try a key again; 0 when it may now."""
        with self._lock:
            times = self._failures.get(client)
            if times is None or len(times) < self.max_failures:
                return 0.0
            return max(0.0, times[0] + self.window_s - self._clock())

    def failed(self, client: str) -> None:
        """Count a wrong key of ``client``."""
        with self._lock:
            times = self._failures.pop(client, None)
            if times is None:
                times = deque(maxlen=self.max_failures)
            times.append(self._clock())
            self._failures[client] = times  # the most recent last
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """A right key of ``client``: forget its failures."""
        with self._lock:
            self._failures.pop(client, None)


def client_of(request: Request) -> str:
    """The client address the throttle counts by (``"unknown"`` when there is none)."""
    return request.client.host if request.client else "unknown"


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def presented_key(request: Request) -> str | None:
    """The read key ``request`` presents: its Bearer token, else its ``key`` query
    parameter (decoded, as Starlette decodes it), else ``None``."""
    token = bearer_token(request)
    if token is not None:
        return token
    return request.query_params.get("key") or None


class _StampedSigner(TimestampSigner):
    # A TimestampSigner whose time can be given (cookies issued in the past, for tests).
    stamp: int | None = None

    def get_timestamp(self) -> int:
        return super().get_timestamp() if self.stamp is None else self.stamp


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ReadAuth:
    """Decides who may read; open when no read key is configured.

    ``keys``: the accepted read keys (each one's :class:`Identity` has subject
    :func:`key_subject`, no project, no vendor). ``secret``: the cookie signing secret,
    or a function giving it (called once, when first needed; default: a random secret of
    this process, so cookies do not survive a restart). ``session_max_age_s``: how long
    a session cookie is accepted. ``metrics_token``: a token that opens ``/metrics``
    only. ``throttle``: counts wrong keys per client (default: a :class:`LoginThrottle`
    of 10 a minute).
    """

    def __init__(
        self,
        keys: Sequence[bytes],
        *,
        secret: bytes | Callable[[], bytes] | None = None,
        session_max_age_s: int = DEFAULT_SESSION_MAX_AGE_S,
        metrics_token: bytes | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self._keys = [(key, Identity(key_subject(key))) for key in keys]
        self._by_subject = {identity.subject: identity for _, identity in self._keys}
        self._secret_source = secret
        self._secret: bytes | None = secret if isinstance(secret, bytes) else None
        self.session_max_age_s = int(session_max_age_s)
        self.metrics_token = metrics_token or None
        self.throttle = throttle if throttle is not None else LoginThrottle()

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadAuth:
        """The read keys, session lifetime, metrics token and throttle of ``settings``;
        the secret of ``settings.data_dir`` (:func:`session_secret`)."""
        token = settings.metrics_token
        return cls(
            [k.get_secret_value().encode() for k in settings.read_keys],
            secret=lambda: session_secret(settings.data_dir),
            session_max_age_s=settings.session_max_age_s,
            metrics_token=token.get_secret_value().encode() if token else None,
            throttle=LoginThrottle(settings.login_failures_per_minute, 60.0),
        )

    # -- the resolver (override these for projects and scoped keys) -------------------

    @property
    def open(self) -> bool:
        """True when no read key is configured (reads need no key)."""
        return not self._keys

    def identify(self, key: str) -> Identity | None:
        """The identity of read key ``key``, or ``None`` when it is not one.

        Compares against every key, so the time taken does not tell which one matched.
        """
        if not key:
            return None
        given = key.encode()
        found = None
        for candidate, identity in self._keys:
            if hmac.compare_digest(given, candidate):
                found = identity
        return found

    def resolve_subject(self, subject: str) -> Identity | None:
        """The identity whose subject is ``subject`` *now* (``None`` when its key was
        removed): what a session cookie is checked against on every request."""
        return self._by_subject.get(subject)

    def sees_server_metrics(self, identity: Identity) -> bool:
        """Whether ``identity`` may read the server's own metrics (``/metrics``): only
        identities of the whole server (no project, no vendor)."""
        return identity.project is None and identity.vendor_id is None

    # -- requests ---------------------------------------------------------------------

    def check_key(self, key: str, client: str) -> Identity | None:
        """:meth:`identify` ``key`` for ``client``, throttled: raises
        :class:`TooManyAttempts` (429) while ``client`` is refused; counts a wrong key
        against it."""
        wait = self.throttle.retry_after(client)
        if wait > 0:
            raise TooManyAttempts(wait)
        identity = self.identify(key)
        if identity is None:
            self.throttle.failed(client)
        else:
            self.throttle.succeeded(client)
        return identity

    def identify_request(self, request: Request) -> Identity | None:
        """Who ``request`` reads as: :data:`OPEN_IDENTITY` when open; else the identity
        of its key (Bearer header, else ``?key=``; throttled, see :meth:`check_key`), else
        of its session cookie; ``None`` when it has no valid credential.

        Raises :class:`TooManyAttempts` for a key from a client being refused.
        """
        if self.open:
            return OPEN_IDENTITY
        key = presented_key(request)
        if key is not None:
            return self.check_key(key, client_of(request))
        cookie = request.cookies.get(COOKIE_NAME)
        return self.identity_from_cookie(cookie) if cookie else None

    def allowed(self, request: Request) -> bool:
        """Whether ``request`` may read (see :meth:`identify_request`)."""
        return self.identify_request(request) is not None

    def valid_key(self, key: str) -> bool:
        """Whether ``key`` is a read key (not throttled; see :meth:`check_key`)."""
        return self.identify(key) is not None

    def require(self, request: Request) -> Identity:
        """The caller's identity, also kept as ``request.state.read_identity``; raises a
        401 :class:`ApiError` without a valid credential, 429 :class:`TooManyAttempts`
        while the client is throttled."""
        identity = self.identify_request(request)
        if identity is None:
            raise ApiError(
                401,
                "unauthorized",
                "a valid read key is required: Authorization: Bearer <key>, ?key=<key>, "
                "or sign in to the dashboard at /login",
                {"WWW-Authenticate": "Bearer"},
            )
        request.state.read_identity = identity
        return identity

    # -- session cookies --------------------------------------------------------------

    @property
    def secret(self) -> bytes:
        """The cookie signing secret (made or read on first use; may raise
        :class:`~playpulse.errors.ConfigError`)."""
        if self._secret is None:
            source = self._secret_source
            self._secret = source() if callable(source) else secrets.token_bytes(32)
        return self._secret

    def _signer(self, issued_at: float | None = None) -> _StampedSigner:
        signer = _StampedSigner(self.secret, salt=_SALT, digest_method=hashlib.sha256)
        signer.stamp = None if issued_at is None else int(issued_at)
        return signer

    def cookie_for(self, identity: Identity, *, issued_at: datetime | None = None) -> str:
        """The session cookie value of ``identity``: its subject, timestamped (now, or
        ``issued_at``) and signed. Holds no key."""
        stamp = issued_at.timestamp() if issued_at is not None else None
        return self._signer(stamp).sign(_b64(identity.subject.encode())).decode("ascii")

    def identity_from_cookie(self, value: str) -> Identity | None:
        """The identity of a session cookie value, or ``None`` when it is tampered with,
        older than ``session_max_age_s`` (or stamped in the future), or its subject no
        longer resolves."""
        try:
            payload = self._signer().unsign(value, max_age=self.session_max_age_s)
            subject = _unb64(payload.decode("ascii")).decode("utf-8")
        except (BadSignature, UnicodeError, binascii.Error, ValueError):
            return None
        return self.resolve_subject(subject)

    # -- /metrics ---------------------------------------------------------------------

    def may_read_metrics(self, request: Request) -> bool:
        """Whether ``request`` may read ``GET /metrics``: open without read keys and
        metrics token; else the metrics token as Bearer, or an identity that
        :meth:`sees_server_metrics`. Raises :class:`TooManyAttempts` like
        :meth:`identify_request`."""
        token = bearer_token(request)
        if self.metrics_token is not None and token is not None:
            client = client_of(request)
            wait = self.throttle.retry_after(client)
            if wait > 0:
                raise TooManyAttempts(wait)
            if hmac.compare_digest(token.encode(), self.metrics_token):
                self.throttle.succeeded(client)
                return True
            if self.open:  # else the token is tried as a read key below, and counted
                self.throttle.failed(client)
                return False
        if self.open:
            return self.metrics_token is None
        identity = self.identify_request(request)
        return identity is not None and self.sees_server_metrics(identity)


def read_identity(request: Request) -> Identity:
    """FastAPI dependency: the caller's :class:`Identity` (``Depends(read_identity)``),
    from ``request.state.read_identity`` when a guard set it, else checked now by the
    app's ``app.state.read_auth``. Raises 401/429 :class:`ApiError` like
    :meth:`ReadAuth.require`."""
    identity = getattr(request.state, "read_identity", None)
    if isinstance(identity, Identity):
        return identity
    auth: ReadAuth = request.app.state.read_auth
    return auth.require(request)


class MetricsGuard:
    """ASGI middleware: ``GET /metrics`` only for :meth:`ReadAuth.may_read_metrics`,
    else 401 (or 429) as ``{"error": {"code", "message"}}``.

    ``auth``: the :class:`ReadAuth` to ask; default: the app's ``app.state.read_auth``
    at each request (so :func:`playpulse.api.mount_read_api` can replace it).
    """

    def __init__(self, app: ASGIApp, auth: ReadAuth | None = None, path: str = "/metrics") -> None:
        self.app = app
        self.auth = auth
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a refused ``/metrics`` request; pass everything else on."""
        if scope["type"] == "http" and scope["path"].rstrip("/") == self.path:
            request = Request(scope)
            auth = self.auth or request.app.state.read_auth
            try:
                allowed = auth.may_read_metrics(request)
            except ApiError as exc:
                await exc.response()(scope, receive, send)
                return
            if not allowed:
                refused = ApiError(
                    401,
                    "unauthorized",
                    "/metrics needs the metrics token or a read key of the whole server: "
                    "Authorization: Bearer <token>",
                    {"WWW-Authenticate": "Bearer"},
                )
                await refused.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guard_metrics(app: Starlette, settings: Settings) -> None:
    """Put ``GET /metrics`` of ``app`` behind the read keys and ``metrics_token`` of
    ``settings`` (:class:`MetricsGuard`, installed once) and redact credentials from the
    access log (:func:`install_log_redaction`).

    Uses ``app.state.read_auth`` when set (:func:`playpulse.api.mount_read_api` sets it),
    else sets it to :meth:`ReadAuth.from_settings`. Call before the app serves (Starlette
    refuses middleware after). For the collector alone (``playpulse collect``), whose
    ``/metrics`` has no read API next to it.
    """
    if getattr(app.state, "read_auth", None) is None:
        app.state.read_auth = ReadAuth.from_settings(settings)
    if not getattr(app.state, "metrics_guarded", False):
        app.add_middleware(MetricsGuard)
        app.state.metrics_guarded = True
    install_log_redaction()


def _is_credential(name: str) -> bool:
    lowered = name.strip().lower()
    return any(word in lowered for word in CREDENTIAL_WORDS)


def redact_query(target: str) -> str:
    """``target`` (a request target, ``/path?query``) with the values of credential
    parameters replaced by ``***``.

    Names are decoded as Starlette decodes them (``%6Bey``, ``k%65y`` and ``ke+y`` are
    looked at as ``key``, ``key`` and ``ke y``); a parameter whose decoded value holds a
    credential parameter itself (``next=/?key=...``) is replaced whole.
    """
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if eq and _is_credential(unquote_plus(name)):
            part = f"{name}=***"
        elif eq and "=" in (decoded := unquote_plus(value)):
            inner = decoded if "?" in decoded else "?" + decoded
            if redact_query(inner) != inner:
                part = f"{name}=***"
        parts.append(part)
    return f"{path}?{'&'.join(parts)}"


class RedactKeyFilter(logging.Filter):
    """Replaces the values of credential query parameters (``key``, ``token``... however
    encoded: :func:`redact_query`) in uvicorn access-log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact; never drops a record."""
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "?" in a for a in args):
            record.args = tuple(
                redact_query(a) if isinstance(a, str) and "?" in a else a for a in args
            )
        return True


def install_log_redaction() -> None:
    """Add :class:`RedactKeyFilter` to the ``uvicorn.access`` logger (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactKeyFilter) for f in access.filters):
        access.addFilter(RedactKeyFilter())
