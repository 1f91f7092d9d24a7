"""The Spotify poller (#16 item 3): ``playpulse spotify login`` / ``poll``.

- :mod:`.auth`: OAuth authorization code with PKCE (spotipy), the token 0600 in the data
  dir;
- :mod:`.tracker`: pure: successive "currently playing" answers -> playback events;
- :mod:`.poller`: the loop (204, 401 refresh, 429 Retry-After, network errors) and the
  recently-played backfill;
- :mod:`.cli`: ``spotify_app``, registered as ``playpulse spotify``.
"""

from playpulse.sources.spotify_poll.poller import (
    LiveWindows,
    PollStats,
    SpotifyApiError,
    SpotifyPoller,
    client_sender,
    recent_events,
    spotify_client,
)
from playpulse.sources.spotify_poll.tracker import PlaybackTracker, Snapshot, snapshot_of

__all__ = [
    "LiveWindows",
    "PlaybackTracker",
    "PollStats",
    "Snapshot",
    "SpotifyApiError",
    "SpotifyPoller",
    "client_sender",
    "recent_events",
    "snapshot_of",
    "spotify_client",
]
