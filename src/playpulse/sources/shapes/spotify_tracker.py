"""Spotify trackers: one payload per finished (or skipped) track.

Shape (fields other than these go to the ``play_end`` properties, unchanged)::

    {"event_type": "track_change", "track_name": "Song", "status": "COMPLETED" | "SKIPPED",
     "duration_listened": 184.2, "timestamp": 1793534400, "user_id": "u1",
     "artist": "Band", "album": "Album", "track_id": "spotify:track:...",
     "track_duration": 201.0}

``timestamp`` is when the track changed, i.e. when listening to this track *ended*
(Unix seconds, or ISO 8601 with a zone); ``duration_listened`` is in seconds (the
``_ms`` spelling ``duration_listened_ms`` is read as milliseconds). ``artist``,
``album``, ``track_id`` (or ``track_uri``) and ``track_duration`` (seconds) are optional.

One payload is one play, as the Spotify importers map one history row
(:func:`~playpulse.sources.importers.base.play_events`): ``play_start`` at
``timestamp - duration_listened`` (position 0), a ``heartbeat`` every 10 minutes of
playing, ``play_end`` at ``timestamp`` with position ``duration_listened`` and reason
``completed`` (COMPLETED) or ``next`` (SKIPPED), its properties saying ``skipped`` (the
source's own skip signal). So the play's playing time is exactly ``duration_listened``.
Event ids are hashes of the payload's user, time, track and status: the same payload
sent twice is counted once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from playpulse.sources.importers.base import RowIdentity, play_events
from playpulse.sources.shapes.common import (
    ShapeError,
    as_object,
    identifier,
    number,
    text,
    timestamp,
)

NAME = "spotify-tracker"
#: The shape's statuses: the ``play_end`` reason and whether the listener skipped.
STATUSES: dict[str, tuple[str, bool]] = {
    "COMPLETED": ("completed", False),
    "SKIPPED": ("next", True),
}
_KNOWN = {
    "event_type",
    "track_name",
    "status",
    "duration_listened",
    "duration_listened_ms",
    "timestamp",
    "user_id",
    "artist",
    "artist_name",
    "album",
    "album_name",
    "track_id",
    "track_uri",
    "track_duration",
}


def map_spotify_tracker(payload: Any, received_at: datetime) -> list[dict[str, Any]]:
    """The events of one Spotify tracker payload (see the module docstring): a
    ``play_start``, heartbeats when longer than 10 minutes, a ``play_end``.
    ``received_at`` is unused. Raises :class:`ShapeError` naming the field that cannot be
    mapped."""
    del received_at
    data = as_object(NAME, payload)
    kind = data.get("event_type")
    if kind != "track_change":
        raise ShapeError(NAME, "event_type", f"{kind!r} is not 'track_change'")
    status = data.get("status")
    if not isinstance(status, str) or status.strip().upper() not in STATUSES:
        raise ShapeError(NAME, "status", f"{status!r} is not one of {', '.join(STATUSES)}")
    reason, skipped = STATUSES[status.strip().upper()]
    title = text(NAME, "track_name", data.get("track_name"))
    if title is None:
        raise ShapeError(NAME, "track_name", "is required")
    user = identifier(NAME, "user_id", data.get("user_id"))
    ended = timestamp(NAME, "timestamp", data.get("timestamp"))
    assert ended is not None  # required
    assert user is not None  # required
    if data.get("duration_listened_ms") is not None:
        ms = number(NAME, "duration_listened_ms", data.get("duration_listened_ms"), required=True)
        listened_ms = round(ms or 0.0)
    else:
        seconds = number(NAME, "duration_listened", data.get("duration_listened"), required=True)
        listened_ms = round((seconds or 0.0) * 1000)
    track = identifier(NAME, "track_id", data.get("track_id"), required=False)
    track = track or identifier(NAME, "track_uri", data.get("track_uri"), required=False)
    artist = text(NAME, "artist", data.get("artist", data.get("artist_name")))
    content: dict[str, Any] = {
        "content_id": track or identifier(NAME, "track_name", f"track:{artist or ''}:{title}"),
        "content_type": "track",
        "title": title,
    }
    if artist is not None:
        content["creator"] = artist
    duration = number(NAME, "track_duration", data.get("track_duration"))
    if duration:
        content["duration_s"] = duration
    album = text(NAME, "album", data.get("album", data.get("album_name")))
    identity = RowIdentity.of(
        NAME, {"user": user, "at": ended.isoformat(), "track": content, "status": reason}
    )
    extra = {k: v for k, v in data.items() if k not in _KNOWN}
    start_properties = {"album": album} if album is not None else None
    return play_events(
        identity,
        actor={"user_id": user},
        content=content,
        start=ended - timedelta(milliseconds=listened_ms),
        played_ms=listened_ms,
        reason=reason,
        start_properties=start_properties,
        end_properties={**extra, "skipped": skipped, "status": status.strip().upper()},
    )
