"""The event model and its codec: what an event is, and how raw JSON becomes one."""

from playpulse.events.codec import (
    MAX_EVENT_BYTES,
    Accepted,
    decode_stored,
    encode_event,
    event_json_schema,
    validate_event,
)
from playpulse.events.model import (
    COMMERCE_EVENT_TYPES,
    EVENT_CLASSES,
    EVENT_TYPES,
    PLAYBACK_EVENT_TYPES,
    CommerceEvent,
    Content,
    Context,
    Event,
    EventBase,
    PlaybackEvent,
)

__all__ = [
    "COMMERCE_EVENT_TYPES",
    "EVENT_CLASSES",
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "PLAYBACK_EVENT_TYPES",
    "Accepted",
    "CommerceEvent",
    "Content",
    "Context",
    "Event",
    "EventBase",
    "PlaybackEvent",
    "decode_stored",
    "encode_event",
    "event_json_schema",
    "validate_event",
]
