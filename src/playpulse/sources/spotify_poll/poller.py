"""The poll loop: ask Spotify what plays every few seconds, send what changed.

:class:`SpotifyPoller` calls ``GET /v1/me/player/currently-playing`` through spotipy
(a session without spotipy's own retries, so the loop decides), turns each answer into
events with a :class:`~.tracker.PlaybackTracker` and hands them to ``send``. It handles:

- 204 (nothing playing): the current play ends;
- 401: the access token is refreshed with the stored refresh token and the call made
  again once (a second 401, or a refused refresh, is a
  :class:`~playpulse.errors.ConfigError`: sign in again);
- 429: waits the ``Retry-After`` seconds Spotify asks for (at least the interval);
- network errors and 5xx: waits with exponential backoff (interval, 2x, 4x ... at most
  :data:`MAX_BACKOFF_S`), the tracker keeping its play: the next answer decides.

``backfill_recent`` maps ``GET /v1/me/player/recently-played`` (the last 50 tracks played
for 30 s or more) to plays of unknown length (a lone ``play_start`` each: counted as a
play, with no playing time, which nothing observed), leaving out those inside a window
in which the live poller was running (``live.json`` in the data dir's ``spotify``
folder), so a track is not counted twice; their event ids are hashes of user, track and
time, so a second backfill adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import spotipy  # type: ignore[import-untyped,unused-ignore]

from playpulse.errors import ConfigError, PlaypulseError
from playpulse.sources.spotify_poll.auth import refresh, write_private
from playpulse.sources.spotify_poll.tracker import SOURCE, PlaybackTracker, snapshot_of

log = logging.getLogger("playpulse.spotify")

#: Spotify's Web API.
API_URL = "https://api.spotify.com/v1/"
#: Seconds between polls.
INTERVAL_S = 5.0
#: Longest wait after network errors or 5xx, in seconds.
MAX_BACKOFF_S = 120.0
#: Longest ``Retry-After`` honoured, in seconds (a longer one is waited in pieces).
MAX_RETRY_AFTER_S = 3600.0
#: Polls this far apart still extend one live window, in seconds.
WINDOW_GAP_S = 120.0

Send = Callable[[list[dict[str, Any]]], None]


def spotify_client(manager: Any, api_url: str = API_URL, timeout_s: float = 10.0) -> Any:
    """A ``spotipy.Spotify`` on ``manager`` (:func:`.auth.auth_manager`) at ``api_url``
    (a test's fake), with a plain requests session: no retries of its own, no sleeping
    inside a call on a 429."""
    api = spotipy.Spotify(
        auth_manager=manager, requests_session=requests.Session(), requests_timeout=timeout_s
    )
    api.prefix = api_url.rstrip("/") + "/"
    return api


class SpotifyApiError(PlaypulseError):
    """A call to Spotify's Web API outside the poll loop failed (who is signed in, the
    recently played list): the message names the call and Spotify's answer."""


def api_call(what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``method(...)``, its failures raised as :class:`SpotifyApiError` naming ``what``
    (a :class:`~playpulse.errors.ConfigError` for 401 and 403: sign in again)."""
    try:
        return method(*args, **kwargs)
    except spotipy.SpotifyException as exc:
        if exc.http_status in (401, 403):
            raise ConfigError(
                f"Spotify refused {what} ({exc.http_status}): run `playpulse spotify login`"
            ) from None
        raise SpotifyApiError(
            f"Spotify answered {exc.http_status} to {what}: {_short(exc)}"
        ) from None
    except (requests.RequestException, OSError) as exc:
        raise SpotifyApiError(f"cannot reach Spotify for {what}: {_short(exc)}") from None


@dataclass
class PollStats:
    """What the loop met: ``polls`` answered, ``events`` sent, ``refreshes`` after a 401,
    ``rate_limited`` (429) and ``failures`` (network errors, 5xx)."""

    polls: int = 0
    events: int = 0
    refreshes: int = 0
    rate_limited: int = 0
    failures: int = 0


class LiveWindows:
    """The windows of time the live poller observed the player, kept in ``path`` (JSON,
    newest 500), so a backfill leaves out what it counted live."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.windows: list[list[float]] = []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self.windows = [[float(a), float(b)] for a, b in data.get("windows", [])]
        except (OSError, ValueError, TypeError, AttributeError):
            self.windows = []
        self._saved_at = 0.0

    def seen(self, at: datetime) -> None:
        """Record a successful poll at ``at``; saved at most once a minute."""
        t = at.timestamp()
        if self.windows and 0 <= t - self.windows[-1][1] <= WINDOW_GAP_S:
            self.windows[-1][1] = t
        else:
            self.windows.append([t, t])
        if t - self._saved_at >= 60:
            self.save()
            self._saved_at = t

    def save(self) -> None:
        """Write the windows (0600)."""
        write_private(self.path, {"windows": self.windows[-500:]})

    def covers(self, at: datetime, margin_s: float) -> bool:
        """Whether ``at`` is within ``margin_s`` of a window."""
        t = at.timestamp()
        return any(a - margin_s <= t <= b + margin_s for a, b in self.windows)


class SpotifyPoller:
    """Polls one listener's player (see the module docstring).

    ``api``: from :func:`spotify_client`; ``manager``: its auth manager (refreshed on a
    401); ``send``: gets each poll's events (objects of the event model, ``occurred_at``
    a UTC-aware datetime); ``user_id``: the events' user; ``clock``: the time of each
    observation (UTC-aware); ``windows``: where live windows are kept (none: not kept).
    """

    def __init__(
        self,
        api: Any,
        manager: Any,
        send: Send,
        user_id: str,
        *,
        interval_s: float = INTERVAL_S,
        heartbeat_s: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        windows: LiveWindows | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ConfigError(f"the poll interval must be above 0 s, got {interval_s}")
        self.api = api
        self.manager = manager
        self.send = send
        self.user_id = user_id
        self.interval_s = interval_s
        self.clock = clock
        self.windows = windows
        self.tracker = PlaybackTracker(user_id, heartbeat_s=heartbeat_s)
        self.stats = PollStats()
        self._failures = 0

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method(...)``, once more after refreshing the token on a 401."""
        try:
            return method(*args, **kwargs)
        except spotipy.SpotifyException as exc:
            if exc.http_status != 401:
                raise
        log.info("Spotify answered 401: refreshing the access token")
        refresh(self.manager)
        self.stats.refreshes += 1
        try:
            return method(*args, **kwargs)
        except spotipy.SpotifyException as exc:
            if exc.http_status == 401:
                raise ConfigError(
                    "Spotify refused a freshly refreshed token (401): run `playpulse spotify "
                    "login` again"
                ) from None
            raise

    def _emit(self, events: list[dict[str, Any]]) -> None:
        if events:
            self.send(events)
            self.stats.events += len(events)

    def poll_once(self) -> float:
        """One poll: ask, track, send. Returns the seconds to wait before the next one.
        Raises :class:`~playpulse.errors.ConfigError` when Spotify refuses the sign-in
        (401 after a refresh, 403)."""
        at = self.clock()
        try:
            answer = self._call(self.api.current_user_playing_track)
        except spotipy.SpotifyException as exc:
            return self._failed(exc.http_status, getattr(exc, "headers", None) or {}, exc)
        except (requests.RequestException, OSError) as exc:
            return self._failed(None, {}, exc)
        self._failures = 0
        self.stats.polls += 1
        self._emit(self.tracker.observe(snapshot_of(answer), at))
        if self.windows is not None:
            self.windows.seen(at)
        return self.interval_s

    def _failed(self, status: int | None, headers: Mapping[str, str], exc: Exception) -> float:
        if status == 429:
            self.stats.rate_limited += 1
            try:
                wait = float(headers.get("Retry-After", self.interval_s))
            except ValueError:
                wait = self.interval_s
            log.warning("Spotify asks to wait %.0f s (429)", wait)
            return min(max(wait, self.interval_s), MAX_RETRY_AFTER_S)
        if status == 403:
            raise ConfigError(
                "Spotify refused the request (403): the app lacks a scope; run `playpulse "
                "spotify login` again"
            ) from None
        if status is not None and status < 500 and status != 404:
            raise ConfigError(f"Spotify answered {status} to currently-playing: {exc}") from None
        self.stats.failures += 1
        self._failures += 1
        wait = min(self.interval_s * 2.0 ** (self._failures - 1), MAX_BACKOFF_S)
        log.warning("polling Spotify failed (%s); trying again in %.0f s", _short(exc), wait)
        return wait

    def stop(self) -> None:
        """End the play being tracked (as stopped now) and save the live windows."""
        self._emit(self.tracker.stop(self.clock()))
        if self.windows is not None:
            self.windows.save()

    def run(self, halt: threading.Event) -> None:
        """Poll until ``halt`` is set, then :meth:`stop`."""
        try:
            while not halt.is_set():
                halt.wait(self.poll_once())
        finally:
            self.stop()

    def backfill_recent(self, limit: int = 50) -> int:
        """Send the recently played tracks not seen live (see the module docstring);
        returns how many plays were sent. Raises :class:`SpotifyApiError` or
        :class:`~playpulse.errors.ConfigError` when Spotify does not answer."""
        answer = api_call(
            "recently-played", self._call, self.api.current_user_recently_played, limit=limit
        )
        events = recent_events(answer, self.user_id, self.windows)
        self._emit(events)
        return len(events)


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def recent_events(
    answer: Mapping[str, Any] | None, user_id: str, windows: LiveWindows | None = None
) -> list[dict[str, Any]]:
    """The ``play_start`` of every item of a ``GET /v1/me/player/recently-played``
    answer (oldest first) that no live window covers (within the track's length)."""
    out: list[dict[str, Any]] = []
    for item in (answer or {}).get("items") or []:
        if not isinstance(item, Mapping):
            continue
        snap = snapshot_of({"item": item.get("track"), "progress_ms": 0, "is_playing": False})
        played = item.get("played_at")
        if snap is None or not isinstance(played, str):
            continue
        try:
            at = datetime.fromisoformat(played.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            continue
        if windows is not None and windows.covers(at, snap.duration_s or 600.0):
            continue
        key = hashlib.sha256(f"{user_id}\x1f{snap.item_id}\x1f{played}".encode()).hexdigest()
        properties: dict[str, Any] = {"source": f"{SOURCE}/recently-played", "uri": snap.item_id}
        if snap.album:
            properties["album"] = snap.album
        out.append(
            {
                "event_type": "play_start",
                "event_id": f"spotify-recent-{key[:32]}",
                "occurred_at": at,
                "user_id": user_id,
                "playback_id": f"spotify-recent:{key[:32]}",
                "content": dict(snap.content),
                "properties": properties,
            }
        )
    out.sort(key=lambda e: e["occurred_at"])
    return out


def client_sender(client: Any) -> Send:
    """A ``send`` that queues each event on a :class:`playpulse.client.Client` (which
    batches, retries and reports failures)."""

    def send(events: list[dict[str, Any]]) -> None:
        for event in events:
            fields = dict(event)
            kind = fields.pop("event_type")
            client.track(kind, **fields)

    return send
