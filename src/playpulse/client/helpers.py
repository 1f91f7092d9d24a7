"""One method per event type: thin, typed wrappers over ``Client.track``.

Every helper takes the event's own fields as keyword arguments plus the envelope
keywords of :class:`Envelope` (``user_id``, ``anonymous_id``, ``session_id``,
``context``, ``properties``, ``event_id``, ``occurred_at``), queues the event and returns
its ``event_id``. Arguments left as ``None`` are not sent. Each raises ``ValueError``
exactly when :meth:`EventHelpers.track` does.

Units are in the names: ``*_s`` seconds (``position_s`` is the playhead in seconds of
content), ``playback_rate`` a speed multiplier (1.0 normal, 2.0 double, above 0 and at
most 16), ``amount_minor`` minor units of ``currency`` (1999 with ``"EUR"`` is 19.99 EUR).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypedDict, Unpack

import msgspec

from playpulse.events.model import Content, Context, LineItem

ContentLike = Mapping[str, Any] | Content
"""What is played: a :class:`~playpulse.events.model.Content` or a dict of its fields
(``content_id`` required; ``content_type``, ``title``, ``creator``, ``duration_s`` in
seconds, ``chapter``, ``chapter_title``)."""

ContextLike = Mapping[str, Any] | Context
"""Where it happened: a :class:`~playpulse.events.model.Context` or a dict of its fields
(``device_type``, ``platform``, ``os``, ``app_version``, ``network_type``, ``country``
ISO 3166-1 alpha-2, ``timezone`` IANA name, ``foreground``)."""

LineItemLike = Mapping[str, Any] | LineItem
"""One order line: a :class:`~playpulse.events.model.LineItem` or a dict of its fields
(``product_id`` required; ``vendor_id``, ``quantity``, ``amount_minor``)."""


class Envelope(TypedDict, total=False):
    """The envelope keywords every helper accepts (see :meth:`EventHelpers.track`)."""

    user_id: str | None
    anonymous_id: str | None
    session_id: str | None
    context: ContextLike | None
    properties: Mapping[str, Any] | None
    event_id: str | None
    occurred_at: datetime | None


class EventHelpers(ABC):
    """Playback and commerce helpers, all implemented with :meth:`track`."""

    @abstractmethod
    def track(
        self,
        event_type: str,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        session_id: str | None = None,
        context: ContextLike | None = None,
        properties: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        **fields: Any,
    ) -> str:
        """Queue one event of ``event_type``; return its ``event_id``."""

    # -- playback ---------------------------------------------------------------------

    def _playback(
        self,
        event_type: str,
        playback_id: str | None,
        content: ContentLike | None,
        position_s: float | None,
        playback_rate: float | None,
        envelope: Envelope,
        **fields: Any,
    ) -> str:
        return self.track(
            event_type,
            playback_id=playback_id,
            content=content,
            position_s=position_s,
            playback_rate=playback_rate,
            **fields,
            **envelope,
        )

    def play_start(
        self,
        *,
        content: ContentLike,
        playback_id: str | None = None,
        position_s: float | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """A play of ``content`` begins at ``position_s`` seconds (``play_start``).

        ``playback_id`` names this play until its ``play_end``; pass the same id to
        every later playback event of the play. ``playback_rate`` is the speed
        multiplier (1.0 normal).
        """
        return self._playback(
            "play_start", playback_id, content, position_s, playback_rate, envelope
        )

    def heartbeat(
        self,
        *,
        playback_id: str | None = None,
        content: ContentLike | None = None,
        position_s: float | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """Content is still playing, at ``position_s`` seconds (``heartbeat``).

        Send one every 10 to 30 seconds of playback. ``playback_id`` or ``content`` is
        required.
        """
        return self._playback(
            "heartbeat", playback_id, content, position_s, playback_rate, envelope
        )

    def pause(
        self,
        *,
        playback_id: str | None = None,
        content: ContentLike | None = None,
        position_s: float | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """The listener paused at ``position_s`` seconds (``pause``).

        ``playback_id`` or ``content`` is required.
        """
        return self._playback("pause", playback_id, content, position_s, playback_rate, envelope)

    def resume(
        self,
        *,
        playback_id: str | None = None,
        content: ContentLike | None = None,
        position_s: float | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """Playback resumed at ``position_s`` seconds after a pause (``resume``).

        ``playback_id`` or ``content`` is required.
        """
        return self._playback("resume", playback_id, content, position_s, playback_rate, envelope)

    def seek(
        self,
        *,
        from_position_s: float,
        position_s: float,
        playback_id: str | None = None,
        content: ContentLike | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """The playhead jumped from ``from_position_s`` to ``position_s`` seconds (``seek``).

        ``playback_id`` or ``content`` is required.
        """
        return self._playback(
            "seek",
            playback_id,
            content,
            position_s,
            playback_rate,
            envelope,
            from_position_s=from_position_s,
        )

    def play_end(
        self,
        *,
        reason: Literal["completed", "stopped", "next", "error"],
        playback_id: str | None = None,
        content: ContentLike | None = None,
        position_s: float | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """A play ended at ``position_s`` seconds (``play_end``).

        ``reason`` is ``completed`` (reached the end), ``stopped``, ``next`` (skipped to
        the next item) or ``error``. ``playback_id`` or ``content`` is required.
        """
        return self._playback(
            "play_end", playback_id, content, position_s, playback_rate, envelope, reason=reason
        )

    def chapter_change(
        self,
        *,
        content: ContentLike,
        playback_id: str | None = None,
        position_s: float | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """Playback entered another chapter (``chapter_change``).

        ``content["chapter"]`` is the new chapter number (0 for a prologue);
        ``position_s`` is the playhead in seconds from the start of the content.
        """
        return self._playback(
            "chapter_change", playback_id, content, position_s, playback_rate, envelope
        )

    def bookmark(
        self,
        *,
        position_s: float,
        playback_id: str | None = None,
        content: ContentLike | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """The listener saved a bookmark at ``position_s`` seconds (``bookmark``).

        ``playback_id`` or ``content`` is required.
        """
        return self._playback("bookmark", playback_id, content, position_s, playback_rate, envelope)

    def speed_change(
        self,
        *,
        playback_rate: float,
        playback_id: str | None = None,
        content: ContentLike | None = None,
        position_s: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """The speed changed to ``playback_rate`` (multiplier, 1.0 normal) (``speed_change``).

        ``position_s`` is the playhead in seconds. ``playback_id`` or ``content`` is
        required.
        """
        return self._playback(
            "speed_change", playback_id, content, position_s, playback_rate, envelope
        )

    def buffer_start(
        self,
        *,
        playback_id: str | None = None,
        content: ContentLike | None = None,
        position_s: float | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """Playback stalled waiting for data at ``position_s`` seconds (``buffer_start``).

        ``playback_id`` or ``content`` is required.
        """
        return self._playback(
            "buffer_start", playback_id, content, position_s, playback_rate, envelope
        )

    def buffer_end(
        self,
        *,
        playback_id: str | None = None,
        content: ContentLike | None = None,
        position_s: float | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """Playback continues after a stall, at ``position_s`` seconds (``buffer_end``).

        ``playback_id`` or ``content`` is required.
        """
        return self._playback(
            "buffer_end", playback_id, content, position_s, playback_rate, envelope
        )

    def visibility_change(
        self,
        *,
        foreground: bool,
        playback_id: str | None = None,
        content: ContentLike | None = None,
        position_s: float | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """The app went to the foreground (``True``) or background (``visibility_change``).

        ``foreground`` is written into ``context["foreground"]`` (merged with any
        ``context`` given). ``position_s`` is the playhead in seconds. ``playback_id``
        or ``content`` is required.
        """
        context = envelope.get("context")
        if context is None:
            envelope["context"] = {"foreground": foreground}
        elif isinstance(context, Context):
            envelope["context"] = msgspec.structs.replace(context, foreground=foreground)
        else:
            envelope["context"] = {**context, "foreground": foreground}
        return self._playback(
            "visibility_change", playback_id, content, position_s, playback_rate, envelope
        )

    def error(
        self,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        playback_id: str | None = None,
        content: ContentLike | None = None,
        position_s: float | None = None,
        playback_rate: float | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """The player failed at ``position_s`` seconds (event type ``error``).

        ``error_code`` (at most 128 characters) and ``error_message`` (at most 1024)
        describe the failure. ``playback_id`` or ``content`` is required.
        """
        return self._playback(
            "error",
            playback_id,
            content,
            position_s,
            playback_rate,
            envelope,
            error_code=error_code,
            error_message=error_message,
        )

    # -- commerce ---------------------------------------------------------------------

    def product_view(
        self,
        *,
        product_id: str,
        vendor_id: str | None = None,
        amount_minor: int | None = None,
        currency: str | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """A product page was viewed (``product_view``).

        ``amount_minor`` is the shown price in minor units of ``currency`` (ISO 4217,
        required with an amount).
        """
        return self.track(
            "product_view",
            product_id=product_id,
            vendor_id=vendor_id,
            amount_minor=amount_minor,
            currency=currency,
            **envelope,
        )

    def vendor_view(self, *, vendor_id: str, **envelope: Unpack[Envelope]) -> str:
        """A vendor (shop, publisher) page was viewed (``vendor_view``)."""
        return self.track("vendor_view", vendor_id=vendor_id, **envelope)

    def product_favorite(
        self, *, product_id: str, vendor_id: str | None = None, **envelope: Unpack[Envelope]
    ) -> str:
        """A product was added to the favorites (``product_favorite``)."""
        return self.track(
            "product_favorite", product_id=product_id, vendor_id=vendor_id, **envelope
        )

    def cart_add(
        self,
        *,
        product_id: str,
        quantity: int = 1,
        vendor_id: str | None = None,
        amount_minor: int | None = None,
        currency: str | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """``quantity`` units (1 to 1,000,000) of a product went into the cart (``cart_add``).

        ``amount_minor`` is the line total in minor units of ``currency`` (ISO 4217,
        required with an amount).
        """
        return self.track(
            "cart_add",
            product_id=product_id,
            quantity=quantity,
            vendor_id=vendor_id,
            amount_minor=amount_minor,
            currency=currency,
            **envelope,
        )

    def order_created(
        self,
        *,
        order_id: str,
        amount_minor: int,
        currency: str,
        items: Sequence[LineItemLike] | None = None,
        vendor_id: str | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """An order was placed (``order_created``).

        ``amount_minor`` is the order total in minor units of ``currency`` (ISO 4217,
        such as ``"EUR"``); ``items`` lists at most 500 order lines.
        """
        return self.track(
            "order_created",
            order_id=order_id,
            amount_minor=amount_minor,
            currency=currency,
            items=list(items) if items is not None else None,
            vendor_id=vendor_id,
            **envelope,
        )

    def order_completed(
        self,
        *,
        order_id: str,
        amount_minor: int,
        currency: str,
        items: Sequence[LineItemLike] | None = None,
        vendor_id: str | None = None,
        **envelope: Unpack[Envelope],
    ) -> str:
        """An order was paid and fulfilled (``order_completed``).

        ``amount_minor`` is the order total in minor units of ``currency`` (ISO 4217,
        such as ``"EUR"``); ``items`` lists at most 500 order lines.
        """
        return self.track(
            "order_completed",
            order_id=order_id,
            amount_minor=amount_minor,
            currency=currency,
            items=list(items) if items is not None else None,
            vendor_id=vendor_id,
            **envelope,
        )
