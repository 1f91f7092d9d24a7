"""DIGINETICA item views (CIKM Cup 2016, ``train-item-views.csv``).

Source: ``;``-separated CSV with the header ``session_id;user_id;item_id;timeframe;
eventdate`` (the original spells it ``sessionId;userId;itemId;timeframe;eventdate``; both
are read, columns by name): ``user_id`` is ``NA`` (or empty) for anonymous sessions,
``timeframe`` is milliseconds since the start of the session and ``eventdate`` the
session's date (``YYYY-MM-DD``), with no time of day.

**One row = one** ``product_view`` of ``product_id`` ``diginetica:<item_id>``, with
``anonymous_id`` and ``session_id`` ``diginetica-session:<session_id>`` and, when the
session is not anonymous, ``user_id`` ``diginetica:<user_id>`` (ids are prefixed so that
several data sets can share a data dir).

**Time** (a choice, since the data has no clock time): ``occurred_at = eventdate
00:00:00 UTC + timeframe`` milliseconds. The UTC day is the session's date (for sessions
under a day, which all real ones are), and views keep their order and spacing within a
session; hour-of-day figures of this data set mean nothing. The caller's ``user_id`` is
not used. **Identity**: the row's fields by column name.

**What it can tell**: the data set records product views only, never favorites, cart adds
or orders, so each event says so: ``properties.source_steps = ["product_view"]`` (the
commerce event types its source records, :data:`SOURCE_STEPS`). The shop queries then
report favorites, cart adds, orders, the rates built on them and revenue as unknown (null),
not 0, for a vendor, day or product whose events all come from such a source
(docs/metrics.md, "Shop funnel", "What a shop source can tell").

The data set has no vendor: in the shop queries its views are one shop's (``vendor_id``
null).
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
    ident,
    iso,
)

NAME = "diginetica_item_views"
DELIMITER = ";"
COLUMNS = ("sessionid", "userid", "itemid", "timeframe", "eventdate")
#: The commerce event types this format records (``properties.source_steps`` of every
#: event): views only.
SOURCE_STEPS = ("product_view",)
#: Largest accepted ``timeframe``: 7 days in milliseconds.
MAX_TIMEFRAME_MS = 7 * 24 * 3600 * 1000


def header_of(fields: list[str]) -> list[str]:
    """Column names normalized (lower case, no underscores): ``session_id`` and
    ``sessionId`` are both ``sessionid``."""
    return [f.strip().lower().replace("_", "") for f in fields]


def matches_header(fields: list[str]) -> bool:
    """Whether a ``;``-separated first record ``fields`` is this format's header."""
    return sorted(header_of(fields)) == sorted(COLUMNS)


def map_row(row: SourceRow, ctx: MapContext) -> list[dict[str, Any]]:
    """The view event of one item-view row (see the module docstring).

    ``ctx.hints["columns"]`` holds the normalized header.
    """
    columns: list[str] = ctx.hints["columns"]
    fields: list[str] = row.data
    if len(fields) != len(columns):
        raise InvalidRow("row", f"expected {len(columns)} fields, found {len(fields)}")
    values = {c: v.strip() for c, v in zip(columns, fields, strict=True)}
    session, user, item = values["sessionid"], values["userid"], values["itemid"]
    if not session:
        raise InvalidRow("session_id", "is required")
    if not item:
        raise InvalidRow("item_id", "is required")
    timeframe = as_int(values["timeframe"], "timeframe")
    if not 0 <= timeframe <= MAX_TIMEFRAME_MS:
        raise InvalidRow("timeframe", f"must be 0 to {MAX_TIMEFRAME_MS} ms, got {timeframe}")
    try:
        day = datetime.strptime(values["eventdate"], "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRow(
            "eventdate", f"expected 'YYYY-MM-DD', got {values['eventdate']!r}"
        ) from None
    anonymous = ident("diginetica-session:", session)
    event: dict[str, Any] = {
        "event_type": "product_view",
        "event_id": RowIdentity.of(NAME, values).event_id("view"),
        "occurred_at": iso(day + timedelta(milliseconds=timeframe)),
        "anonymous_id": anonymous,
        "session_id": anonymous,
        "product_id": ident("diginetica:", item),
        "properties": {"source_steps": list(SOURCE_STEPS)},
    }
    if user and user.upper() != "NA":
        event["user_id"] = ident("diginetica:", user)
    return [event]
