"""Spotify *basic* streaming history (Account Data: ``StreamingHistory0.json``,
``StreamingHistory_music_N.json``, ``StreamingHistory_podcast_N.json``).

Source: a JSON array of ``{"endTime": "YYYY-MM-DD HH:MM", "artistName", "trackName",
"msPlayed"}`` (music, and podcasts in older exports) or ``{"endTime", "podcastName",
"episodeName", "msPlayed"}`` (podcast files of newer exports). ``endTime`` is the minute
playback ended, in UTC per Spotify, without a zone designator or seconds; it is read as
UTC (a time with seconds, ``YYYY-MM-DD HH:MM:SS``, is accepted too).

**One row = one play**, shaped like the extended format's (see
:mod:`~playpulse.sources.importers.spotify_extended`): ``play_start`` at ``endTime -
msPlayed``, heartbeats every 10 minutes of playing, ``play_end`` at ``endTime`` with
reason ``stopped`` (the basic format does not say why playback ended).

**Content**: no ids in this format, so ``content_id`` is ``spotify-basic:`` + a hash of
(creator, title). Creator is ``artistName`` or ``podcastName``, title ``trackName`` or
``episodeName``: an older file's podcast row (show as artist) gets the same id as the
same episode in a newer podcast file. ``content_type`` is ``episode`` for podcast rows,
``track`` for rows of a ``..._music_N.json`` file, and left out otherwise (older files mix
podcasts into music indistinguishably).

**User**: the caller's ``user_id``, else ``spotify-user`` (the format names nobody).
**Identity**: the row plus the user.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from playpulse.sources.importers.base import (
    InvalidRow,
    MapContext,
    RowIdentity,
    SourceRow,
    as_int,
    clean_content,
    digest,
    play_events,
    require,
    text,
)

NAME = "spotify_basic"
DEFAULT_USER = "spotify-user"
#: Longest accepted play, in milliseconds (a week).
MAX_MS_PLAYED = 7 * 24 * 3600 * 1000


def matches(first: Any) -> bool:
    """Whether a JSON array whose first element is ``first`` is this format."""
    return isinstance(first, dict) and "endTime" in first and "msPlayed" in first


def parse_end_time(value: Any) -> datetime:
    """``YYYY-MM-DD HH:MM`` (or with ``:SS``), read as UTC."""
    if isinstance(value, str):
        for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"):
            try:
                return datetime.strptime(value.strip(), fmt).replace(tzinfo=UTC)
            except ValueError:
                continue
    raise InvalidRow("endTime", f"expected 'YYYY-MM-DD HH:MM', got {value!r}")


def map_row(row: SourceRow, ctx: MapContext) -> list[dict[str, Any]]:
    """The events of one basic-history row (see the module docstring)."""
    data = row.data
    if not isinstance(data, dict):
        raise InvalidRow("row", f"expected a JSON object, got {type(data).__name__}")
    end = parse_end_time(require(data, "endTime"))
    played_ms = as_int(require(data, "msPlayed"), "msPlayed")
    if not 0 <= played_ms <= MAX_MS_PLAYED:
        raise InvalidRow("msPlayed", f"must be 0 to {MAX_MS_PLAYED}, got {played_ms}")
    if "podcastName" in data or "episodeName" in data:
        creator = text(data.get("podcastName"), "podcastName")
        title = text(data.get("episodeName"), "episodeName")
        content_type: str | None = "episode"
    else:
        creator = text(data.get("artistName"), "artistName")
        title = text(data.get("trackName"), "trackName")
        content_type = "track" if "music" in ctx.path.name.lower() else None
    user = ctx.user_id or DEFAULT_USER
    content = clean_content(
        {
            "content_id": f"spotify-basic:{digest(creator or '', title or '')}",
            "content_type": content_type,
            "title": title,
            "creator": creator,
        }
    )
    return play_events(
        RowIdentity.of(NAME, {**data, "user": user}),
        actor={"user_id": user},
        content=content,
        start=end - timedelta(milliseconds=played_ms),
        played_ms=played_ms,
        reason="stopped",
    )
