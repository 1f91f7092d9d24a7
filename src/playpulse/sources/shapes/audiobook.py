"""Audiobook apps: one payload per player action.

Shape (fields other than these go to ``properties``, unchanged)::

    {"event_id": "e1", "user_id": "u1", "book_id": "b1",
     "event_type": "START_PLAYBACK" | "PAUSE" | "RESUME" | "END_PLAYBACK"
                 | "CHAPTER_CHANGE" | "BOOKMARK" | "SPEED_CHANGE",
     "timestamp": "2026-11-01T12:00:00Z" | 1793534400, "position": 120.5, "chapter": 3,
     "metadata": {"device_type": "phone", "app_version": "4.2.0", "network_type": "4g"}}

One payload is one event: ``play_start``, ``pause``, ``resume``, ``play_end``,
``chapter_change``, ``bookmark``, ``speed_change`` (docs/event-shapes.md has the table).
The events of one listen are grouped by user + book + device (the event model's
fallback play key) unless the payload names a ``session_id`` or ``playback_id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from playpulse.sources.shapes.common import (
    DEVICE_TYPES,
    NETWORK_TYPES,
    ShapeError,
    as_object,
    identifier,
    integer,
    iso,
    number,
    text,
    timestamp,
    vocabulary,
)

NAME = "audiobook"

#: The shape's event types and the event model's.
EVENT_TYPES: dict[str, str] = {
    "START_PLAYBACK": "play_start",
    "PAUSE": "pause",
    "RESUME": "resume",
    "END_PLAYBACK": "play_end",
    "CHAPTER_CHANGE": "chapter_change",
    "BOOKMARK": "bookmark",
    "SPEED_CHANGE": "speed_change",
}
#: ``play_end`` reasons an END_PLAYBACK may give in ``reason`` or ``metadata.reason``.
END_REASONS = ("completed", "stopped", "next", "error")
_KNOWN = {
    "event_id",
    "user_id",
    "book_id",
    "event_type",
    "timestamp",
    "position",
    "chapter",
    "metadata",
    "session_id",
    "playback_id",
    "speed",
    "playback_rate",
    "reason",
    "book_title",
    "title",
    "author",
    "duration",
}
_METADATA = {"device_type", "app_version", "network_type", "platform", "speed", "reason"}


def map_audiobook(payload: Any, received_at: datetime) -> list[dict[str, Any]]:
    """The event of one audiobook payload (see the module docstring), as a JSON object
    of the event model. ``received_at`` is unused (the payload's ``timestamp`` is
    required). Raises :class:`ShapeError` naming the field that cannot be mapped."""
    del received_at
    data = as_object(NAME, payload)
    kind = data.get("event_type")
    if not isinstance(kind, str) or kind.strip().upper() not in EVENT_TYPES:
        raise ShapeError(NAME, "event_type", f"{kind!r} is not one of {', '.join(EVENT_TYPES)}")
    kind = kind.strip().upper()
    meta_raw = data.get("metadata")
    if meta_raw is not None and not isinstance(meta_raw, dict):
        raise ShapeError(NAME, "metadata", "expected a JSON object")
    meta: dict[str, Any] = meta_raw or {}
    content: dict[str, Any] = {
        "content_id": identifier(NAME, "book_id", data.get("book_id")),
        "content_type": "audiobook",
    }
    for key, loc in (("title", "book_title"), ("title", "title"), ("creator", "author")):
        value = text(NAME, loc, data.get(loc))
        if value is not None:
            content.setdefault(key, value)
    duration = number(NAME, "duration", data.get("duration"))
    if duration:
        content["duration_s"] = duration
    chapter = integer(NAME, "chapter", data.get("chapter"))
    if chapter is not None:
        content["chapter"] = chapter
    event: dict[str, Any] = {
        "event_type": EVENT_TYPES[kind],
        "event_id": identifier(NAME, "event_id", data.get("event_id")),
        "occurred_at": iso(_required_time(data)),
        "user_id": identifier(NAME, "user_id", data.get("user_id")),
        "content": content,
    }
    play = identifier(NAME, "session_id", data.get("session_id"), required=False)
    play = identifier(NAME, "playback_id", data.get("playback_id"), required=False) or play
    if play is not None:
        event["playback_id"] = play
    position = number(NAME, "position", data.get("position"))
    if position is not None:
        event["position_s"] = position
    context = {
        "device_type": vocabulary(
            NAME, "metadata.device_type", meta.get("device_type"), DEVICE_TYPES
        ),
        "network_type": vocabulary(
            NAME, "metadata.network_type", meta.get("network_type"), NETWORK_TYPES
        ),
        "app_version": text(NAME, "metadata.app_version", meta.get("app_version")),
        "platform": text(NAME, "metadata.platform", meta.get("platform")),
    }
    context = {k: v[:64] if isinstance(v, str) else v for k, v in context.items() if v}
    if context:
        event["context"] = context
    if kind == "CHAPTER_CHANGE" and chapter is None:
        raise ShapeError(NAME, "chapter", "CHAPTER_CHANGE needs the new chapter number")
    if kind == "BOOKMARK" and position is None:
        raise ShapeError(NAME, "position", "BOOKMARK needs the position (seconds)")
    if kind == "SPEED_CHANGE":
        speed = data.get("speed", data.get("playback_rate", meta.get("speed")))
        rate = number(NAME, "speed", speed, required=True)
        if rate is None or not 0 < rate <= 16:
            raise ShapeError(NAME, "speed", f"must be above 0 and at most 16, got {speed!r}")
        event["playback_rate"] = rate
    if kind == "END_PLAYBACK":
        reason = data.get("reason", meta.get("reason", "stopped"))
        if reason not in END_REASONS:
            raise ShapeError(NAME, "reason", f"{reason!r} is not one of {', '.join(END_REASONS)}")
        event["reason"] = reason
    properties = {k: v for k, v in data.items() if k not in _KNOWN}
    properties.update({k: v for k, v in meta.items() if k not in _METADATA})
    if isinstance(meta.get("device_type"), str) and context.get("device_type") == "other":
        properties["device_type"] = meta["device_type"]
    if properties:
        event["properties"] = properties
    return [event]


def _required_time(data: Any) -> datetime:
    moment = timestamp(NAME, "timestamp", data.get("timestamp"))
    assert moment is not None  # required=True
    return moment
