"""Google Takeout YouTube watch history (``watch-history.json``).

Source: a JSON array, newest first, one object per activity: ``header`` ("YouTube",
"YouTube Music"), ``title`` ("Watched <video title>"), ``titleUrl`` (the video URL),
``subtitles`` (``[{"name": channel, "url"}]``, missing when unknown), ``time`` (ISO 8601
UTC), ``products``, ``activityControls`` and sometimes ``description`` / ``details``.
There is no watch duration.

**One view = one play of a video with no playing time** (of unknown length: neither a
stream nor a skip): a lone ``play_start`` at ``time``
(:func:`~playpulse.sources.importers.base.view_event`). Content: ``content_id``
``youtube:<v>`` from the ``v=`` parameter (or a ``youtu.be/<v>`` path) of ``titleUrl``,
``content_type`` ``video``, ``title`` without the ``Watched`` prefix (left out when it
is only the URL), ``creator`` = the channel (first subtitle's name).

Entries that are not a view of a video, and how they are treated:

- **removed videos** ("Watched a video that has been removed", no ``titleUrl``): a view
  did happen, only the video is unknown, so it is imported as a view of content
  ``youtube:removed`` without title or channel;
- **ads** (``details`` naming Google Ads): skipped, counted as ``ad``;
- **anything else without a video URL** ("Visited YouTube Music", a link that is not a
  video): skipped, counted as ``not a video view``.

Skipped entries are counted per reason in the import result, never quarantined (they
are valid, just not views). **User**: the caller's ``user_id``, else ``youtube-user``.
**Identity**: the entry plus the user.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from playpulse.sources.importers.base import (
    InvalidRow,
    MapContext,
    RowIdentity,
    SkipRow,
    SourceRow,
    clean_content,
    ident,
    parse_iso_utc,
    require,
    text,
    view_event,
)

NAME = "youtube_watch_history"
DEFAULT_USER = "youtube-user"
REMOVED_ID = "youtube:removed"
_WATCHED = "Watched "
_REMOVED_TITLE = "Watched a video that has been removed"


def matches(first: Any) -> bool:
    """Whether a JSON array whose first element is ``first`` is this format."""
    return (
        isinstance(first, dict)
        and "time" in first
        and "title" in first
        and ("header" in first or "products" in first)
    )


def video_id(url: str) -> str | None:
    """The video id of a YouTube URL (``watch?v=<id>``, ``youtu.be/<id>``,
    ``/shorts/<id>``), else ``None``."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    values = parse_qs(parts.query).get("v")
    if values and values[0]:
        return values[0]
    host = parts.netloc.lower()
    segments = [s for s in parts.path.split("/") if s]
    if host.endswith("youtu.be") and segments:
        return segments[0]
    if len(segments) == 2 and segments[0] == "shorts":
        return segments[1]
    return None


def _is_ad(data: dict[str, Any]) -> bool:
    details = data.get("details")
    if not isinstance(details, list):
        return False
    return any(isinstance(d, dict) and "ads" in str(d.get("name", "")).lower() for d in details)


def map_row(row: SourceRow, ctx: MapContext) -> list[dict[str, Any]]:
    """The view event of one watch-history entry (see the module docstring)."""
    data = row.data
    if not isinstance(data, dict):
        raise InvalidRow("row", f"expected a JSON object, got {type(data).__name__}")
    at = parse_iso_utc(require(data, "time"), "time")
    raw_title = require(data, "title")
    if not isinstance(raw_title, str):
        raise InvalidRow("title", f"expected a string, got {type(raw_title).__name__}")
    if _is_ad(data):
        raise SkipRow("ad")
    url = data.get("titleUrl")
    title: str | None
    creator: str | None = None
    if isinstance(url, str) and url.strip():
        vid = video_id(url)
        if vid is None:
            raise SkipRow("not a video view")
        content_id = ident("youtube:", vid)
        title = raw_title[len(_WATCHED) :] if raw_title.startswith(_WATCHED) else raw_title
        title = text(title, "title")
        if title is not None and (
            title == url.strip() or title.startswith(("http://", "https://"))
        ):
            title = None
        subtitles = data.get("subtitles")
        if isinstance(subtitles, list) and subtitles and isinstance(subtitles[0], dict):
            creator = text(subtitles[0].get("name"), "subtitles[0].name")
    elif raw_title.strip() == _REMOVED_TITLE:
        content_id, title = REMOVED_ID, None
    else:
        raise SkipRow("not a video view")
    user = ctx.user_id or DEFAULT_USER
    content = clean_content(
        {"content_id": content_id, "content_type": "video", "title": title, "creator": creator}
    )
    header = data.get("header")
    properties = {"service": header[:64]} if isinstance(header, str) and header else None
    return [
        view_event(
            RowIdentity.of(NAME, {**data, "user": user}),
            actor={"user_id": user},
            content=content,
            at=at,
            properties=properties,
        )
    ]
