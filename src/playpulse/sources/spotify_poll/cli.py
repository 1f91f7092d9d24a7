"""``playpulse spotify login`` and ``playpulse spotify poll``.

Registered in the ``playpulse`` command as ``app.add_typer(spotify_app, name="spotify")``.
The data dir (where the token is kept) is ``--data-dir`` (here or before the command),
else ``PLAYPULSE_DATA_DIR``. Events go to a collector over HTTP (``--host``, default the
data dir's ``playpulse up`` address) with the Python SDK, which batches and retries:
the poller runs where the listener signs in to Spotify, not necessarily where the
collector runs, and the collector validates, quarantines and authenticates them as any
producer's.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from playpulse.config import Settings
from playpulse.errors import ConfigError

spotify_app = typer.Typer(
    help="Spotify: sign in (OAuth with PKCE) and poll what plays into playpulse events.",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where playpulse keeps its data and the Spotify token [env PLAYPULSE_DATA_DIR].",
        show_default=False,
    ),
]
AccountsUrl = Annotated[
    str, typer.Option("--accounts-url", hidden=True, help="Spotify's accounts service.")
]
ApiUrl = Annotated[str, typer.Option("--api-url", hidden=True, help="Spotify's Web API.")]


def _need_spotipy() -> None:
    """Raise :class:`~playpulse.errors.ConfigError` when spotipy is not installed."""
    try:
        import spotipy  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the Spotify poller needs spotipy: pip install 'playpulse[spotify]'"
        ) from None


def _settings(ctx: typer.Context, data_dir: Path | None) -> Settings:
    chosen = data_dir or ctx.find_root().params.get("data_dir")
    try:
        return Settings(data_dir=chosen) if chosen is not None else Settings()
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {exc.errors()[0]['msg']}") from None


@spotify_app.command()
def login(
    ctx: typer.Context,
    client_id: Annotated[
        str | None,
        typer.Option(
            "--client-id",
            help="Your Spotify app's client id (developer.spotify.com; no secret needed).",
        ),
    ] = None,
    redirect_uri: Annotated[
        str,
        typer.Option(
            "--redirect-uri", help="A redirect URI registered for the app (a local address)."
        ),
    ] = "http://127.0.0.1:8888/callback",
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open the sign-in page.")
    ] = True,
    data_dir: DataDir = None,
    accounts_url: AccountsUrl = "https://accounts.spotify.com",
) -> None:
    """Sign in to Spotify once (authorization code with PKCE); the token is kept 0600 in
    the data dir and refreshed by the poller."""
    _need_spotipy()
    from playpulse.sources.spotify_poll.auth import auth_manager, save_app

    settings = _settings(ctx, data_dir)
    manager = auth_manager(
        settings,
        client_id=client_id,
        redirect_uri=redirect_uri,
        accounts_url=accounts_url,
        open_browser=browser,
    )
    from spotipy.oauth2 import SpotifyOauthError  # type: ignore[import-untyped,unused-ignore]

    try:
        manager.get_access_token(check_cache=False)
    except SpotifyOauthError as exc:
        raise ConfigError(f"Spotify refused the sign-in: {exc.error}") from None
    save_app(settings, manager.client_id, manager.redirect_uri)
    typer.echo(f"signed in; the token is in {settings.data_dir / 'spotify' / 'token.json'}")


def _write_key(settings: Settings, key_file: Path | None) -> str | None:
    if key_file is not None:
        try:
            return key_file.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read the write key file {key_file}: {exc}") from None
    if os.environ.get("PLAYPULSE_WRITE_KEY"):
        return os.environ["PLAYPULSE_WRITE_KEY"]
    return settings.write_keys[0].get_secret_value() if settings.write_keys else None


@spotify_app.command()
def poll(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option("--host", help="The collector's URL [default http://HOST:PORT of up]."),
    ] = None,
    write_key_file: Annotated[
        Path | None,
        typer.Option(
            "--write-key-file",
            help="A file holding the write key [else env PLAYPULSE_WRITE_KEY, else the "
            "first of PLAYPULSE_WRITE_KEYS].",
        ),
    ] = None,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls.")] = 5.0,
    recent: Annotated[
        bool, typer.Option("--recent", help="First backfill the recently played tracks.")
    ] = False,
    user: Annotated[
        str | None,
        typer.Option("--user", help="The events' user id [default: your Spotify user id]."),
    ] = None,
    data_dir: DataDir = None,
    accounts_url: AccountsUrl = "https://accounts.spotify.com",
    api_url: ApiUrl = "https://api.spotify.com/v1/",
) -> None:
    """Poll what plays on Spotify every few seconds and send it as playback events
    (play_start, heartbeat, pause, resume, seek, play_end) until Ctrl-C."""
    _need_spotipy()
    from playpulse.client import Client
    from playpulse.sources.spotify_poll.auth import auth_manager, spotify_dir
    from playpulse.sources.spotify_poll.poller import (
        LiveWindows,
        SpotifyPoller,
        client_sender,
        spotify_client,
    )

    settings = _settings(ctx, data_dir)
    manager = auth_manager(settings, accounts_url=accounts_url, open_browser=False)
    if manager.cache_handler.get_cached_token() is None:
        raise ConfigError("not signed in to Spotify: run `playpulse spotify login` first")
    api = spotify_client(manager, api_url)
    user_id = user or _spotify_user(api)
    endpoint = host or f"http://{settings.host}:{settings.port}"
    halt = threading.Event()
    with Client(endpoint, _write_key(settings, write_key_file)) as client:
        poller = SpotifyPoller(
            api,
            manager,
            client_sender(client),
            user_id,
            interval_s=interval,
            windows=LiveWindows(spotify_dir(settings) / "live.json"),
        )
        if recent:
            typer.echo(f"backfilled {poller.backfill_recent()} recently played tracks")
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: halt.set())
        typer.echo(f"polling Spotify for {user_id} every {interval:g} s into {endpoint}")
        poller.run(halt)
    s = poller.stats
    typer.echo(
        f"stopped: {s.polls} polls, {s.events} events, {s.refreshes} token refreshes, "
        f"{s.rate_limited} rate limits, {s.failures} failures"
    )


def _spotify_user(api: Any) -> str:
    from playpulse.sources.spotify_poll.poller import api_call

    me = api_call("who is signed in (/v1/me)", api.me)
    user_id = me.get("id") if isinstance(me, dict) else None
    if not isinstance(user_id, str) or not user_id:
        raise ConfigError("Spotify did not say who is signed in; pass --user")
    return user_id
