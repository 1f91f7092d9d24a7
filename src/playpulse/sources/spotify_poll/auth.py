"""Spotify sign-in for the poller: OAuth authorization code with PKCE (no client secret),
the token kept 0600 in the data dir.

``playpulse spotify login`` runs spotipy's :class:`~spotipy.oauth2.SpotifyPKCE` flow once
(a browser page on Spotify, redirected back to a local ``redirect_uri``) and stores the
app's client id and redirect URI in ``<data_dir>/spotify/app.json`` and the token (with
its refresh token) in ``<data_dir>/spotify/token.json``; both files are created 0600 in
a 0700 folder, written atomically, and never logged. The poller refreshes the access
token with the refresh token when it expires or Spotify answers 401.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from spotipy.cache_handler import CacheHandler  # type: ignore[import-untyped,unused-ignore]
from spotipy.oauth2 import SpotifyPKCE  # type: ignore[import-untyped,unused-ignore]

from playpulse.config import Settings
from playpulse.errors import ConfigError

#: What the poller reads: the player, what plays now, and the recently played list.
SCOPES = "user-read-currently-playing user-read-playback-state user-read-recently-played"
#: Spotify's accounts service (its token endpoint is ``<ACCOUNTS_URL>/api/token``).
ACCOUNTS_URL = "https://accounts.spotify.com"


def spotify_dir(settings: Settings) -> Path:
    """``<data_dir>/spotify``, the poller's folder (created 0700 when missing)."""
    path = settings.data_dir / "spotify"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically, readable by the owner only (0600)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class TokenFile(CacheHandler):  # type: ignore[misc]
    """spotipy's token cache as a 0600 file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get_cached_token(self) -> dict[str, Any] | None:
        """The stored token, or ``None`` before the first login (or when unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def save_token_to_cache(self, token_info: dict[str, Any]) -> None:
        """Store ``token_info`` (access and refresh token, expiry) 0600."""
        write_private(self.path, token_info)


def save_app(settings: Settings, client_id: str, redirect_uri: str) -> None:
    """Remember the Spotify app's ``client_id`` and ``redirect_uri`` for the poller."""
    write_private(
        spotify_dir(settings) / "app.json", {"client_id": client_id, "redirect_uri": redirect_uri}
    )


def auth_manager(
    settings: Settings,
    *,
    client_id: str | None = None,
    redirect_uri: str | None = None,
    accounts_url: str = ACCOUNTS_URL,
    open_browser: bool = True,
) -> SpotifyPKCE:
    """The PKCE auth manager of the data dir: ``client_id``/``redirect_uri`` as given, else
    as saved by ``playpulse spotify login``; its token cache is ``token.json``;
    ``accounts_url`` replaces Spotify's accounts service (a test's fake). Raises
    :class:`~playpulse.errors.ConfigError` when no client id is known."""
    folder = spotify_dir(settings)
    saved: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads((folder / "app.json").read_text(encoding="utf-8"))
    client_id = client_id or saved.get("client_id")
    redirect_uri = redirect_uri or saved.get("redirect_uri") or "http://127.0.0.1:8888/callback"
    if not client_id:
        raise ConfigError(
            f"no Spotify app is known in {folder}: run `playpulse spotify login --client-id ID` "
            "(the client id of your app at developer.spotify.com)"
        )
    manager = SpotifyPKCE(
        client_id=client_id,
        redirect_uri=redirect_uri,
        scope=SCOPES,
        cache_handler=TokenFile(folder / "token.json"),
        open_browser=open_browser,
        requests_timeout=10,
    )
    base = accounts_url.rstrip("/")
    manager.OAUTH_AUTHORIZE_URL = f"{base}/authorize"
    manager.OAUTH_TOKEN_URL = f"{base}/api/token"
    return manager


def refresh(manager: SpotifyPKCE) -> None:
    """Get a new access token with the stored refresh token (after a 401). Raises
    :class:`~playpulse.errors.ConfigError` when there is none or Spotify refuses it (then
    ``playpulse spotify login`` is needed again)."""
    from spotipy.oauth2 import SpotifyOauthError  # type: ignore[import-untyped,unused-ignore]

    cached = manager.cache_handler.get_cached_token()
    token = cached.get("refresh_token") if isinstance(cached, dict) else None
    if not token:
        raise ConfigError("no Spotify refresh token is stored: run `playpulse spotify login`")
    try:
        manager.refresh_access_token(token)
    except SpotifyOauthError as exc:
        raise ConfigError(
            f"Spotify refused the refresh token ({exc.error}); run `playpulse spotify login`"
        ) from None
