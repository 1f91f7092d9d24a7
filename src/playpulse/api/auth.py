"""Read keys: who may use the read API (``/v1/metrics``, ``/v1/sessions``, ``/v1/live``)
and the dashboard.

Read keys are separate from write keys (``Settings.read_keys``, env
``PLAYPULSE_READ_KEYS``, ``playpulse up --read-key``). With none configured, reads are
open to whoever can reach the bound address. With keys, a request is let in when it
carries one of them in any of three ways:

- ``Authorization: Bearer <key>`` (scripts, ``curl``);
- a ``key`` query parameter (clients that cannot set headers, such as a cross-origin
  ``EventSource``); it is redacted from uvicorn's access log;
- the dashboard cookie set by ``POST /login``. The cookie holds a token derived from the
  key (HMAC-SHA256), not the key itself; it is ``HttpOnly`` and ``SameSite=Strict``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Sequence

from fastapi import Request

from playpulse.config import Settings

#: Name of the dashboard's session cookie.
COOKIE_NAME = "playpulse_read"
#: How long the dashboard cookie lives (seconds): 30 days.
COOKIE_MAX_AGE_S = 30 * 24 * 3600
_TOKEN_CONTEXT = b"playpulse dashboard session v1"


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


def session_token(key: bytes) -> str:
    """The cookie value for read key ``key``: HMAC-SHA256 of a fixed context, hex.

    Deterministic, so cookies survive a restart; it unlocks only the read side, and the
    key itself never travels in a cookie.
    """
    return hmac.new(key, _TOKEN_CONTEXT, hashlib.sha256).hexdigest()


def _matches(given: bytes, accepted: Sequence[bytes]) -> bool:
    # Compare against every candidate so the time taken does not tell which one matched.
    return sum(hmac.compare_digest(given, candidate) for candidate in accepted) > 0


class ReadAuth:
    """Checks read keys on requests; open when no key is configured."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._keys = list(keys)
        self._tokens = [session_token(k).encode() for k in self._keys]

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadAuth:
        """The read keys of ``settings`` (``read_keys``)."""
        return cls([k.get_secret_value().encode() for k in settings.read_keys])

    @property
    def open(self) -> bool:
        """True when no read key is configured (reads need no key)."""
        return not self._keys

    def valid_key(self, key: str) -> bool:
        """Whether ``key`` is one of the read keys."""
        return bool(key) and _matches(key.encode(), self._keys)

    def allowed(self, request: Request) -> bool:
        """Whether ``request`` may read: open, or a key by header, ``key`` or cookie."""
        if self.open:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self.valid_key(token.strip())
        key = request.query_params.get("key")
        if key:
            return self.valid_key(key)
        cookie = request.cookies.get(COOKIE_NAME)
        return cookie is not None and _matches(cookie.encode(), self._tokens)

    def require(self, request: Request) -> None:
        """Raise a 401 :class:`ApiError` unless :meth:`allowed`."""
        if not self.allowed(request):
            raise ApiError(
                401,
                "unauthorized",
                "a valid read key is required: Authorization: Bearer <key>, ?key=<key>, "
                "or sign in to the dashboard at /login",
                {"WWW-Authenticate": "Bearer"},
            )


_KEY_IN_QUERY = re.compile(r"([?&]key=)[^&\s]*")


class RedactKeyFilter(logging.Filter):
    """Replaces the value of a ``key`` query parameter in uvicorn access-log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact; never drops a record."""
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "key=" in a for a in args):
            record.args = tuple(
                _KEY_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in args
            )
        return True


def install_log_redaction() -> None:
    """Add :class:`RedactKeyFilter` to the ``uvicorn.access`` logger (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactKeyFilter) for f in access.filters):
        access.addFilter(RedactKeyFilter())
