"""The Spotify poller (#16 item 3): ``playpulse spotify login`` / ``poll``.

- :mod:`.auth`: OAuth authorization code with PKCE (spotipy), the token 0600 in the data
  dir;
- :mod:`.tracker`: pure: successive "currently playing" answers -> playback events;
- :mod:`.poller`: the loop (204, 401 refresh, 429 Retry-After, network errors) and the
  recently-played backfill;
- :mod:`.cli`: ``spotify_app``, registered as ``playpulse spotify``.

spotipy is the ``spotify`` extra (``pip install playpulse[spotify]``): this package and
:mod:`.cli` import without it (the ``playpulse`` command must), :mod:`.auth` and
:mod:`.poller` need it; the names below from them are imported on first use.
"""

from __future__ import annotations

from typing import Any

from playpulse.sources.spotify_poll.tracker import PlaybackTracker, Snapshot, snapshot_of

_FROM_POLLER = (
    "LiveWindows",
    "PollStats",
    "SpotifyApiError",
    "SpotifyPoller",
    "client_sender",
    "recent_events",
    "spotify_client",
)

__all__ = ["PlaybackTracker", "Snapshot", "snapshot_of", *_FROM_POLLER]


def __getattr__(name: str) -> Any:
    if name in _FROM_POLLER:
        from playpulse.sources.spotify_poll import poller

        return getattr(poller, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
