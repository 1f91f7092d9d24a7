"""The event model: the JSON wire format every source sends and every stage reads.

An event is an *envelope* (identity, times, who, where) plus the fields of its
``event_type``. Playback events describe one *play* (``playback_id``) of one piece of
content; commerce events describe a shop interaction. :data:`Event` is the tagged union
of all event classes, keyed by ``event_type``.

Times are UTC-aware ``datetime`` objects: inputs must carry a zone (``Z`` or ``+02:00``)
and are converted to UTC; naive times are rejected. Units are in field names
(``position_s`` seconds, ``amount_minor`` minor currency units such as cents).

The classes are msgspec Structs rather than Pydantic models because validation is the
collector's hot path: on one 613-byte heartbeat, Pydantic v2 took 23 us to validate and
re-encode, msgspec 5.7 us (measured when the model was chosen; docs/benchmarks.md has
the collector's end-to-end figures).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from zoneinfo import available_timezones

from msgspec import Meta, Struct
from msgspec.json import Encoder as _JSONEncoder

#: Longest accepted identifier (event_id, user_id, content_id, ...), in characters.
MAX_ID_CHARS = 256
#: Largest accepted ``properties`` object, serialized as JSON, in bytes.
MAX_PROPERTIES_BYTES = 8 * 1024

Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS)]
Text = Annotated[str, Meta(max_length=512)]
Short = Annotated[str, Meta(max_length=64)]
Seconds = Annotated[float, Meta(ge=0, le=1e9)]
Rate = Annotated[float, Meta(gt=0, le=16)]
Count = Annotated[int, Meta(ge=1, le=1_000_000)]
AmountMinor = Annotated[int, Meta(ge=0, le=10**15)]
Timestamp = Annotated[datetime, Meta(tz=True)]
DeviceType = Literal[
    "mobile",
    "tablet",
    "desktop",
    "tv",
    "speaker",
    "car",
    "console",
    "wearable",
    "web",
    "other",
    "unknown",
]
NetworkType = Literal["wifi", "cellular", "ethernet", "offline", "other", "unknown"]
ContentType = Literal["audiobook", "track", "episode", "video"]

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# JSON Schema patterns (ECMA-262, where ``$`` is the end of the string). In Python, use
# them with ``fullmatch``: ``re``'s ``$`` also matches before a trailing newline.
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")

if TYPE_CHECKING:
    Country = str
else:
    # ``_COUNTRY`` as a Literal of all 676 two-letter strings: msgspec checks a Literal
    # with one hash lookup, while ``Meta(pattern=...)`` calls Python's ``re`` for every
    # event (0.5 of the 2.45 us it took to decode a heartbeat with a context). The JSON
    # Schema still shows the pattern (``codec.event_json_schema``) and the error says
    # the same as the pattern's (``codec._error``).
    Country = Literal[tuple(a + b for a in _UPPER for b in _UPPER)]


@lru_cache(maxsize=1)
def iana_zones() -> frozenset[str]:
    """Every IANA time zone name this machine knows (``Europe/Berlin``, ``UTC``, ...)."""
    return frozenset(available_timezones())


_ZONES = iana_zones()
_json_encode = _JSONEncoder().encode


class _Struct(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    # Unknown keys are an error: a typo must not silently lose a field.
    # Free-form data belongs in ``properties``.
    # gc=False: events are trees decoded from JSON and never form reference cycles, so
    # the cyclic GC need not track them (the collector decodes ~100k per second; tracking
    # them cost ~0.45 us per event and made GC passes more frequent).
    pass


class Context(_Struct, kw_only=True):
    """Where the event happened. Every field is optional.

    ``timezone`` is an IANA name (``Europe/Berlin``) used for local-time metrics;
    ``country`` is ISO 3166-1 alpha-2 (``DE``); ``foreground`` tells whether the app
    was visible (background playback has ``foreground=false``).
    """

    device_type: DeviceType | None = None
    platform: Short | None = None
    os: Short | None = None
    app_version: Short | None = None
    network_type: NetworkType | None = None
    country: Country | None = None
    timezone: Short | None = None
    foreground: bool | None = None

    def __post_init__(self) -> None:
        if self.timezone is not None and self.timezone not in _ZONES:
            raise ValueError(
                f"context.timezone '{self.timezone}' is not an IANA time zone name "
                "such as 'Europe/Berlin'"
            )


class Content(_Struct, kw_only=True):
    """What is being played.

    ``creator`` is the author (audiobook), artist (track), show (episode) or channel
    (video). ``duration_s`` is the full length in seconds; ``chapter`` is a chapter or
    part number (0 for a prologue).
    """

    content_id: Id
    content_type: ContentType | None = None
    title: Text | None = None
    creator: Text | None = None
    duration_s: Annotated[float, Meta(gt=0, le=1e9)] | None = None
    chapter: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    chapter_title: Text | None = None


class EventBase(_Struct, tag_field="event_type", kw_only=True):
    """The envelope every event carries.

    - ``event_type``: names the class (``play_start``, ``order_completed``, ...).
    - ``event_id``: client-generated unique id (a UUID is a good choice); the dedup key.
    - ``occurred_at``: client time the event happened; must carry a zone; stored in UTC.
    - ``sent_at``: client time the batch was sent (optional); enables ``derived_at``.
    - ``received_at``: set by the collector (any client value is replaced).
    - ``derived_at``: skew-corrected event time, set by the collector (Snowplow's
      ``derived_tstamp``): ``received_at - (sent_at - occurred_at)`` when ``sent_at`` is
      present, else ``occurred_at``.
    - ``user_id`` or ``anonymous_id``: at least one is required.
    - ``properties``: free-form JSON object of at most ``MAX_PROPERTIES_BYTES``.
    """

    event_id: Id
    occurred_at: Timestamp
    sent_at: Timestamp | None = None
    received_at: Timestamp | None = None
    derived_at: Timestamp | None = None
    user_id: Id | None = None
    anonymous_id: Id | None = None
    session_id: Id | None = None
    context: Context | None = None
    properties: dict[str, Any] | None = None

    #: True for playback events, False for commerce events.
    is_playback: ClassVar[bool] = False
    #: The ``event_type`` tag of the event's class (``"play_start"`` ...); empty on the
    #: untagged base classes. A class attribute, not a property: the processor reads it
    #: about three times per event.
    event_type: ClassVar[str] = ""

    def __post_init__(self) -> None:
        try:
            # msgspec decodes "Z" as timezone.utc already: convert only other offsets.
            if self.occurred_at.tzinfo is not UTC:
                self.occurred_at = self.occurred_at.astimezone(UTC)
            if self.sent_at is not None and self.sent_at.tzinfo is not UTC:
                self.sent_at = self.sent_at.astimezone(UTC)
        except OverflowError:
            raise ValueError("occurred_at or sent_at is outside the representable range") from None
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("one of user_id or anonymous_id is required")
        if self.properties:
            # codec.json_size, without importing codec here (an import cycle) on every call.
            size = len(_json_encode(self.properties))
            if size > MAX_PROPERTIES_BYTES:
                raise ValueError(
                    f"properties is {size} bytes as JSON; the limit is {MAX_PROPERTIES_BYTES}"
                )
        # The checks of the subclasses live here too, so msgspec makes one Python call per
        # event rather than a chain of super() calls (measured ~0.3 us per event).
        if isinstance(self, PlaybackEvent):
            if self.playback_id is None and self.content is None:
                raise ValueError("a playback event needs playback_id or content.content_id")
            if isinstance(self, VisibilityChange) and self.context.foreground is None:
                raise ValueError("visibility_change needs context.foreground (true or false)")
        elif (
            isinstance(self, CommerceEvent)
            and self.amount_minor is not None
            and self.currency is None
        ):
            raise ValueError("amount_minor needs a currency (ISO 4217, such as 'EUR')")

    @property
    def actor_id(self) -> str:
        """The id that identifies the person: ``user_id``, else ``anonymous_id``."""
        return self.user_id or self.anonymous_id or ""


class PlaybackEvent(EventBase, kw_only=True):
    """Fields shared by every playback event.

    ``playback_id`` names one play (from ``play_start`` to ``play_end``); when a client
    cannot provide one, the processor falls back to user + content + device.
    ``position_s`` is the playhead in seconds of content; ``playback_rate`` is the speed
    (1.0 normal, 2.0 double).
    """

    playback_id: Id | None = None
    content: Content | None = None
    position_s: Seconds | None = None
    playback_rate: Rate | None = None

    is_playback: ClassVar[bool] = True


class PlayStart(PlaybackEvent, tag="play_start", kw_only=True):
    """A play begins (``content`` is required)."""

    content: Content


class Heartbeat(PlaybackEvent, tag="heartbeat", kw_only=True):
    """Periodic confirmation that content is playing (typically every 10-30 s)."""


class Pause(PlaybackEvent, tag="pause", kw_only=True):
    """Playback paused by the listener."""


class Resume(PlaybackEvent, tag="resume", kw_only=True):
    """Playback resumed after a pause."""


class Seek(PlaybackEvent, tag="seek", kw_only=True):
    """The playhead jumped from ``from_position_s`` to ``position_s``."""

    from_position_s: Seconds
    position_s: Seconds


class PlayEnd(PlaybackEvent, tag="play_end", kw_only=True):
    """A play ended; ``reason`` is completed, stopped, next (skipped to next) or error."""

    reason: Literal["completed", "stopped", "next", "error"]


class ChapterChange(PlaybackEvent, tag="chapter_change", kw_only=True):
    """Playback entered another chapter (``content.chapter`` is the new one)."""

    content: Content


class Bookmark(PlaybackEvent, tag="bookmark", kw_only=True):
    """The listener saved a bookmark at ``position_s``."""

    position_s: Seconds


class SpeedChange(PlaybackEvent, tag="speed_change", kw_only=True):
    """The playback rate changed to ``playback_rate``."""

    playback_rate: Rate


class BufferStart(PlaybackEvent, tag="buffer_start", kw_only=True):
    """Playback stalled waiting for data (rebuffering)."""


class BufferEnd(PlaybackEvent, tag="buffer_end", kw_only=True):
    """Playback continues after a stall."""


class VisibilityChange(PlaybackEvent, tag="visibility_change", kw_only=True):
    """The app went to the foreground or background (``context.foreground`` is required)."""

    context: Context


class PlaybackError(PlaybackEvent, tag="error", kw_only=True):
    """The player failed; ``error_code`` and ``error_message`` describe it."""

    error_code: Annotated[str, Meta(max_length=128)] | None = None
    error_message: Annotated[str, Meta(max_length=1024)] | None = None


class LineItem(_Struct, kw_only=True):
    """One line of an order: ``quantity`` units of ``product_id`` for ``amount_minor``."""

    product_id: Id
    vendor_id: Id | None = None
    quantity: Count = 1
    amount_minor: AmountMinor | None = None


class CommerceEvent(EventBase, kw_only=True):
    """Fields shared by every commerce event.

    ``amount_minor`` is in minor units of ``currency`` (ISO 4217): 1999 EUR is 19.99 EUR.
    """

    vendor_id: Id | None = None
    product_id: Id | None = None
    order_id: Id | None = None
    quantity: Count | None = None
    amount_minor: AmountMinor | None = None
    # max_length too: msgspec tests ``pattern`` with Python's ``re.search``, whose ``$``
    # also matches before a trailing newline, so the pattern alone let "EUR\n" through
    # (JSON Schema's ECMA-262 ``$`` does not). The schema shows both, so every validator
    # agrees.
    currency: Annotated[str, Meta(pattern=_CURRENCY.pattern, max_length=3)] | None = None
    items: Annotated[list[LineItem], Meta(max_length=500)] | None = None


class ProductView(CommerceEvent, tag="product_view", kw_only=True):
    """A product page was viewed (``product_id`` is required)."""

    product_id: Id


class VendorView(CommerceEvent, tag="vendor_view", kw_only=True):
    """A vendor (shop, publisher) page was viewed (``vendor_id`` is required)."""

    vendor_id: Id


class ProductFavorite(CommerceEvent, tag="product_favorite", kw_only=True):
    """A product was added to favorites (``product_id`` is required)."""

    product_id: Id


class CartAdd(CommerceEvent, tag="cart_add", kw_only=True):
    """``quantity`` units of ``product_id`` went into the cart (quantity defaults to 1)."""

    product_id: Id
    quantity: Count = 1


class OrderCreated(CommerceEvent, tag="order_created", kw_only=True):
    """An order was placed (``order_id`` is required; ``amount_minor`` with ``currency``
    when the amount is known: imported shop logs often have none)."""

    order_id: Id


class OrderCompleted(CommerceEvent, tag="order_completed", kw_only=True):
    """An order was paid and fulfilled (``order_id`` is required; ``amount_minor`` with
    ``currency`` when known)."""

    order_id: Id


PLAYBACK_EVENT_CLASSES: tuple[type[PlaybackEvent], ...] = (
    PlayStart,
    Heartbeat,
    Pause,
    Resume,
    Seek,
    PlayEnd,
    ChapterChange,
    Bookmark,
    SpeedChange,
    BufferStart,
    BufferEnd,
    VisibilityChange,
    PlaybackError,
)
COMMERCE_EVENT_CLASSES: tuple[type[CommerceEvent], ...] = (
    ProductView,
    VendorView,
    ProductFavorite,
    CartAdd,
    OrderCreated,
    OrderCompleted,
)
EVENT_CLASSES: tuple[type[EventBase], ...] = PLAYBACK_EVENT_CLASSES + COMMERCE_EVENT_CLASSES
for _cls in EVENT_CLASSES:
    _cls.event_type = str(_cls.__struct_config__.tag)
del _cls

PLAYBACK_EVENT_TYPES: tuple[str, ...] = tuple(c.event_type for c in PLAYBACK_EVENT_CLASSES)
COMMERCE_EVENT_TYPES: tuple[str, ...] = tuple(c.event_type for c in COMMERCE_EVENT_CLASSES)
#: Every accepted ``event_type``, playback first.
EVENT_TYPES: tuple[str, ...] = PLAYBACK_EVENT_TYPES + COMMERCE_EVENT_TYPES

Event = (
    PlayStart
    | Heartbeat
    | Pause
    | Resume
    | Seek
    | PlayEnd
    | ChapterChange
    | Bookmark
    | SpeedChange
    | BufferStart
    | BufferEnd
    | VisibilityChange
    | PlaybackError
    | ProductView
    | VendorView
    | ProductFavorite
    | CartAdd
    | OrderCreated
    | OrderCompleted
)
"""Any event: the union of every event class, chosen by ``event_type``."""
