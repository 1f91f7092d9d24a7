"""Alibaba Taobao "UserBehavior" e-commerce log (Tianchi data set).

Source: CSV **without** a header (one with the header ``user_id,item_id,category_id,
behavior_type,timestamp`` is accepted too): ``user_id,item_id,category_id,behavior_type,
timestamp`` with anonymized integer ids, ``behavior_type`` one of ``pv`` (product page
view), ``fav`` (favourite), ``cart`` (add to cart), ``buy`` (purchase) and ``timestamp`` in
Unix seconds (an absolute instant; the data set's nominal window is China time).

**One row = one commerce event** at ``timestamp``:

========  =====================================================================
``pv``    ``product_view``
``fav``   ``product_favorite``
``cart``  ``cart_add`` (quantity 1)
``buy``   ``order_completed`` with ``order_id`` = ``taobao-order:`` + the row's
          hash, ``product_id``, quantity 1 and one line item, and **no amount**
          (the log has no prices; orders without an amount count as orders but add
          no revenue)
========  =====================================================================

Ids are prefixed so that several data sets can share a data dir: ``user_id``
``taobao:<user_id>``, ``product_id`` ``taobao:<item_id>``; the category goes to the
properties (``category_id``); there is no vendor. The caller's ``user_id`` is not used:
the data set has its own users. **Identity**: the five fields.

In the shop queries (docs/metrics.md, "Shop funnel") the log is one shop (``vendor_id``
null) whose funnel is ``pv`` → ``cart`` → ``buy``: each purchase is an order, placed and
completed, and its revenue is unknown (null), not 0.
"""

from __future__ import annotations

import re
from typing import Any

from playpulse.sources.importers.base import (
    InvalidRow,
    MapContext,
    RowIdentity,
    SourceRow,
    as_int,
    ident,
    iso,
    utc_from_unix,
)

NAME = "taobao_user_behavior"
DELIMITER = ","
COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
EVENT_TYPES = {
    "pv": "product_view",
    "fav": "product_favorite",
    "cart": "cart_add",
    "buy": "order_completed",
}
_DATA = re.compile(r"^\d+$")


def header_kind(fields: list[str]) -> str | None:
    """``"header"`` if ``fields`` is this format's header, ``"data"`` if it is a data row
    of it, else ``None``."""
    cleaned = [f.strip().lower() for f in fields]
    if tuple(cleaned) == COLUMNS:
        return "header"
    if (
        len(cleaned) == 5
        and all(_DATA.match(cleaned[i]) for i in (0, 1, 2, 4))
        and cleaned[3] in EVENT_TYPES
    ):
        return "data"
    return None


def map_row(row: SourceRow, ctx: MapContext) -> list[dict[str, Any]]:
    """The commerce event of one behavior row (see the module docstring)."""
    fields: list[str] = [f.strip() for f in row.data]
    if len(fields) != len(COLUMNS):
        raise InvalidRow("row", f"expected {len(COLUMNS)} fields, found {len(fields)}")
    user, item, category, behavior, timestamp = fields
    for loc, value in (("user_id", user), ("item_id", item)):
        if not value:
            raise InvalidRow(loc, "is required")
    event_type = EVENT_TYPES.get(behavior.lower())
    if event_type is None:
        raise InvalidRow(
            "behavior_type", f"expected one of {', '.join(EVENT_TYPES)}, got {behavior!r}"
        )
    at = utc_from_unix(as_int(timestamp, "timestamp"), "timestamp")
    identity = RowIdentity.of(NAME, fields)
    product = ident("taobao:", item)
    event: dict[str, Any] = {
        "event_type": event_type,
        "event_id": identity.event_id("event"),
        "occurred_at": iso(at),
        "user_id": ident("taobao:", user),
        "product_id": product,
    }
    if category:
        event["properties"] = {"category_id": category[:64]}
    if event_type == "cart_add":
        event["quantity"] = 1
    elif event_type == "order_completed":
        event["order_id"] = f"taobao-order:{identity.key}"
        event["quantity"] = 1
        event["items"] = [{"product_id": product, "quantity": 1}]
    return [event]
