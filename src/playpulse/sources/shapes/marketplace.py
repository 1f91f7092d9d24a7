"""Marketplace front ends: the arguments of the ``trackUserInteraction`` GraphQL mutation.

Shape (the same object at ``POST /v1/events?schema=marketplace`` and as the mutation's
arguments at ``/graphql``)::

    {"eventType": "ProductView" | "ProductFavorite" | "CartAdd" | "VendorView"
                | "OrderCreated" | "OrderCompleted",
     "vendorId": "v1", "customerId": "c1", "productId": "p1", "orderId": "o1",
     "metadata": {"timestamp": "2026-11-01T12:00:00Z", "quantity": 2,
                  "amount": "19.99", "currency": "EUR", "sessionId": "s1", ...}}

One payload is one commerce event (``product_view``, ``product_favorite``, ``cart_add``,
``vendor_view``, ``order_created``, ``order_completed``). ``metadata`` is optional;
what it holds besides the keys read here, and any other top-level field, goes to
``properties`` unchanged.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from playpulse.sources.shapes.common import (
    ShapeError,
    as_object,
    identifier,
    integer,
    iso,
    random_id,
    stable_id,
    timestamp,
)

NAME = "marketplace"

#: The shape's event types, the event model's, and the field each one requires.
EVENT_TYPES: dict[str, tuple[str, str | None]] = {
    "ProductView": ("product_view", "productId"),
    "ProductFavorite": ("product_favorite", "productId"),
    "CartAdd": ("cart_add", "productId"),
    "VendorView": ("vendor_view", "vendorId"),
    "OrderCreated": ("order_created", "orderId"),
    "OrderCompleted": ("order_completed", "orderId"),
}
#: Currencies whose minor unit is not a hundredth (ISO 4217 exponents); others have 2.
MINOR_DIGITS: dict[str, int] = {
    **dict.fromkeys(("JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF", "PYG"), 0),
    **dict.fromkeys(("BHD", "KWD", "OMR", "JOD", "TND", "LYD", "IQD"), 3),
}
_TIME_KEYS = ("timestamp", "occurredAt", "occurred_at")
_ID_KEYS = ("eventId", "event_id")
_AMOUNT_KEYS = ("amount", "total", "totalAmount", "price")
_ARGUMENTS = {"eventType", "vendorId", "customerId", "productId", "orderId", "metadata"}
_READ = {
    *_TIME_KEYS,
    *_ID_KEYS,
    *_AMOUNT_KEYS,
    "amountMinor",
    "amount_minor",
    "currency",
    "quantity",
    "sessionId",
    "session_id",
    "anonymousId",
    "anonymous_id",
}


def map_marketplace(payload: Any, received_at: datetime) -> list[dict[str, Any]]:
    """The commerce event of one ``trackUserInteraction`` payload (see the module
    docstring). It happened at ``metadata.timestamp`` when given, else at
    ``received_at`` (UTC-aware). Its ``event_id`` is ``metadata.eventId`` when given,
    else a hash of the payload when it names its time (a resent payload counts once),
    else a fresh random id. Raises :class:`ShapeError` naming the field that cannot be
    mapped."""
    data = as_object(NAME, payload)
    kind = data.get("eventType")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise ShapeError(NAME, "eventType", f"{kind!r} is not one of {', '.join(EVENT_TYPES)}")
    event_type, needed = EVENT_TYPES[kind]
    meta_raw = data.get("metadata")
    if meta_raw is not None and not isinstance(meta_raw, dict):
        raise ShapeError(NAME, "metadata", "expected a JSON object")
    meta: dict[str, Any] = meta_raw or {}
    event: dict[str, Any] = {"event_type": event_type}
    for field, key in (
        ("vendor_id", "vendorId"),
        ("product_id", "productId"),
        ("order_id", "orderId"),
    ):
        value = identifier(NAME, key, data.get(key), required=key == needed)
        if value is not None:
            event[field] = value
    customer = identifier(NAME, "customerId", data.get("customerId"), required=False)
    anonymous = identifier(
        NAME,
        "metadata.anonymousId",
        meta.get("anonymousId", meta.get("anonymous_id")),
        required=False,
    )
    if customer is None and anonymous is None:
        raise ShapeError(NAME, "customerId", "is required (or metadata.anonymousId)")
    if customer is not None:
        event["user_id"] = customer
    if anonymous is not None:
        event["anonymous_id"] = anonymous
    session = identifier(
        NAME, "metadata.sessionId", meta.get("sessionId", meta.get("session_id")), required=False
    )
    if session is not None:
        event["session_id"] = session
    raw_time = next((meta[k] for k in _TIME_KEYS if meta.get(k) is not None), None)
    moment = timestamp(NAME, "metadata.timestamp", raw_time, required=False)
    event["occurred_at"] = iso(moment or received_at)
    quantity = integer(NAME, "metadata.quantity", meta.get("quantity"), minimum=1)
    if quantity is not None:
        event["quantity"] = quantity
    _amount(meta, event)
    given_id = next((meta[k] for k in _ID_KEYS if meta.get(k) is not None), None)
    if given_id is not None:
        event["event_id"] = identifier(NAME, "metadata.eventId", given_id)
    elif moment is not None:
        event["event_id"] = stable_id(NAME, dict(data))
    else:
        event["event_id"] = random_id(NAME)
    properties = {k: v for k, v in data.items() if k not in _ARGUMENTS}
    properties.update((k, v) for k, v in meta.items() if k not in _READ)
    if properties:
        event["properties"] = properties
    return [event]


def _amount(meta: dict[str, Any], event: dict[str, Any]) -> None:
    """Set ``amount_minor`` and ``currency`` from ``metadata``: ``amountMinor`` (whole
    minor units) or ``amount``/``total``/``totalAmount``/``price`` (major units, a number
    or decimal string, converted with the currency's minor digits)."""
    currency = meta.get("currency")
    if currency is not None:
        if not isinstance(currency, str) or len(currency.strip()) != 3:
            raise ShapeError(NAME, "metadata.currency", f"{currency!r} is not an ISO 4217 code")
        currency = currency.strip().upper()
        event["currency"] = currency
    minor = meta.get("amountMinor", meta.get("amount_minor"))
    if minor is not None:
        event["amount_minor"] = integer(NAME, "metadata.amountMinor", minor)
    else:
        key = next((k for k in _AMOUNT_KEYS if meta.get(k) is not None), None)
        if key is None:
            return
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ShapeError(NAME, f"metadata.{key}", f"expected a number, got {value!r}")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ShapeError(NAME, f"metadata.{key}", f"{value!r} is not a number") from None
        if not amount.is_finite() or amount < 0:
            raise ShapeError(NAME, f"metadata.{key}", f"must be a number >= 0, got {value!r}")
        if currency is None:
            raise ShapeError(NAME, "metadata.currency", f"metadata.{key} needs a currency")
        scaled = amount.scaleb(MINOR_DIGITS.get(currency, 2))
        if scaled != scaled.to_integral_value():
            raise ShapeError(
                NAME, f"metadata.{key}", f"{value!r} has more decimals than {currency} has"
            )
        event["amount_minor"] = int(scaled)
    if currency is None:
        raise ShapeError(NAME, "metadata.currency", "an amount needs a currency")
