"""Arrow schemas of the lake tables, and the functions that fill their rows.

- ``events``: every accepted, deduplicated event, flattened (one column per field;
  ``properties`` and ``items`` as JSON text), with its stream partition and offset and a
  ``late`` flag.
- ``plays``: one row per version of a finished play (a play changed by a late event is
  written again with a higher ``version``; readers keep the highest version per
  ``play_key``), with its playing ``segments`` (each within one UTC hour and one local
  hour) so queries can split playing time by any hour, day or time zone.
- ``sessions``: listening sessions that have closed (no event for longer than the
  session gap), keyed by ``user_id`` + ``started_at``; a session changed by a late event
  is written again with a higher ``version``, and one that no longer exists gets a row
  with ``deleted`` set. Readers keep the highest version per key. Sessions still open
  live in the real-time store.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from playpulse.events.model import CommerceEvent, EventBase, PlaybackEvent
from playpulse.processor.plays import PlaySummary

TS = pa.timestamp("us", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EVENTS_SCHEMA = pa.schema(
    [
        ("event_date", pa.string()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("occurred_at", TS),
        ("received_at", TS),
        ("derived_at", TS),
        ("sent_at", TS),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("actor_id", pa.string()),
        ("session_id", pa.string()),
        ("device_type", pa.string()),
        ("platform", pa.string()),
        ("os", pa.string()),
        ("app_version", pa.string()),
        ("network_type", pa.string()),
        ("country", pa.string()),
        ("timezone", pa.string()),
        ("foreground", pa.bool_()),
        ("playback_id", pa.string()),
        ("content_id", pa.string()),
        ("content_type", pa.string()),
        ("title", pa.string()),
        ("creator", pa.string()),
        ("duration_s", pa.float64()),
        ("chapter", pa.int64()),
        ("chapter_title", pa.string()),
        ("position_s", pa.float64()),
        ("from_position_s", pa.float64()),
        ("playback_rate", pa.float64()),
        ("reason", pa.string()),
        ("vendor_id", pa.string()),
        ("product_id", pa.string()),
        ("order_id", pa.string()),
        ("quantity", pa.int64()),
        ("amount_minor", pa.int64()),
        ("currency", pa.string()),
        ("items", pa.string()),
        ("properties", pa.string()),
        ("late", pa.bool_()),
        ("stream_partition", pa.int32()),
        ("stream_offset", pa.int64()),
    ]
)

PLAYS_SCHEMA = pa.schema(
    [
        ("event_date", pa.string()),
        ("play_key", pa.string()),
        ("version", pa.int64()),
        ("playback_id", pa.string()),
        ("user_id", pa.string()),
        ("content_id", pa.string()),
        ("content_type", pa.string()),
        ("title", pa.string()),
        ("creator", pa.string()),
        ("duration_s", pa.float64()),
        ("started_at", TS),
        ("ended_at", TS),
        ("end_reason", pa.string()),
        ("playing_time_s", pa.float64()),
        ("watch_time_s", pa.float64()),
        ("content_time_s", pa.float64()),
        ("playing_time_foreground_s", pa.float64()),
        ("playing_time_background_s", pa.float64()),
        ("startup_time_s", pa.float64()),
        ("rebuffer_count", pa.int64()),
        ("rebuffer_time_s", pa.float64()),
        ("furthest_position_s", pa.float64()),
        ("chapters_reached", pa.list_(pa.int64())),
        ("completed", pa.bool_()),
        ("skipped", pa.bool_()),
        ("is_stream", pa.bool_()),
        ("device_type", pa.string()),
        ("platform", pa.string()),
        ("country", pa.string()),
        ("timezone", pa.string()),
        ("event_count", pa.int64()),
        (
            "segments",
            pa.list_(
                pa.struct(
                    [
                        ("start", TS),
                        ("end", TS),
                        ("playing_s", pa.float64()),
                        ("foreground", pa.bool_()),
                        ("chapter", pa.int64()),
                        ("rate", pa.float64()),
                    ]
                )
            ),
        ),
    ]
)

SESSIONS_SCHEMA = pa.schema(
    [
        ("event_date", pa.string()),
        ("user_id", pa.string()),
        ("started_at", TS),
        ("ended_at", TS),
        ("events", pa.int64()),
        ("duration_s", pa.float64()),
        ("version", pa.int64()),
        ("deleted", pa.bool_()),
    ]
)

SCHEMAS = {"events": EVENTS_SCHEMA, "plays": PLAYS_SCHEMA, "sessions": SESSIONS_SCHEMA}


_CONTEXT_FIELDS = (
    "device_type",
    "platform",
    "os",
    "app_version",
    "network_type",
    "country",
    "timezone",
    "foreground",
)
_CONTENT_FIELDS = (
    "content_id",
    "content_type",
    "title",
    "creator",
    "duration_s",
    "chapter",
    "chapter_title",
)
_PLAYBACK_FIELDS = ("playback_id", "position_s", "playback_rate", "from_position_s", "reason")
_COMMERCE_FIELDS = ("vendor_id", "product_id", "order_id", "quantity", "amount_minor", "currency")


def events_table(entries: list[tuple[EventBase, int, int, bool]]) -> pa.Table:
    """The ``events`` rows of ``entries`` — (event, stream partition, offset, late) —
    as an Arrow table with :data:`EVENTS_SCHEMA`, built column by column (the same rows
    as :func:`event_row`, several times faster for a batch)."""
    cols: dict[str, list[Any]] = {name: [] for name in EVENTS_SCHEMA.names}
    nones = [None] * len(entries)
    for name in (*_CONTEXT_FIELDS, *_CONTENT_FIELDS, *_PLAYBACK_FIELDS, *_COMMERCE_FIELDS):
        cols[name] = list(nones)
    cols["items"] = list(nones)
    for i, (event, partition, offset, late) in enumerate(entries):
        cols["event_date"].append(event.occurred_at.date().isoformat())
        cols["event_id"].append(event.event_id)
        cols["event_type"].append(event.event_type)
        cols["occurred_at"].append(event.occurred_at)
        cols["received_at"].append(event.received_at)
        cols["derived_at"].append(event.derived_at)
        cols["sent_at"].append(event.sent_at)
        cols["user_id"].append(event.user_id)
        cols["anonymous_id"].append(event.anonymous_id)
        cols["actor_id"].append(event.actor_id)
        cols["session_id"].append(event.session_id)
        cols["properties"].append(json.dumps(event.properties) if event.properties else None)
        cols["late"].append(late)
        cols["stream_partition"].append(partition)
        cols["stream_offset"].append(offset)
        ctx = event.context
        if ctx is not None:
            for name in _CONTEXT_FIELDS:
                cols[name][i] = getattr(ctx, name)
        if isinstance(event, PlaybackEvent):
            for name in _PLAYBACK_FIELDS:
                cols[name][i] = getattr(event, name, None)
            c = event.content
            if c is not None:
                for name in _CONTENT_FIELDS:
                    cols[name][i] = getattr(c, name)
        elif isinstance(event, CommerceEvent):
            for name in _COMMERCE_FIELDS:
                cols[name][i] = getattr(event, name)
            if event.items:
                cols["items"][i] = json.dumps([_item(item) for item in event.items])
    return pa.table(
        [pa.array(cols[f.name], type=f.type) for f in EVENTS_SCHEMA], schema=EVENTS_SCHEMA
    )


def event_row(event: EventBase, partition: int, offset: int, late: bool) -> dict[str, Any]:
    """One ``events`` row for ``event`` read at ``partition``/``offset``."""
    row: dict[str, Any] = events_table([(event, partition, offset, late)]).to_pylist()[0]
    return row


def _item(item: Any) -> dict[str, Any]:
    return {
        "product_id": item.product_id,
        "vendor_id": item.vendor_id,
        "quantity": item.quantity,
        "amount_minor": item.amount_minor,
    }


def session_row(
    user_id: str, start_us: int, end_us: int, events: int, version: int, deleted: bool = False
) -> dict[str, Any]:
    """One ``sessions`` row: user ``user_id``'s session from ``start_us`` to ``end_us``
    (microseconds since the epoch, UTC) with ``events`` events, dated by its start (UTC).

    Rows are keyed by (``user_id``, ``started_at``); readers keep the highest ``version``
    per key and drop the key when that row is ``deleted`` (a tombstone).
    """
    started = _EPOCH + timedelta(microseconds=start_us)
    return {
        "event_date": started.date().isoformat(),
        "user_id": user_id,
        "started_at": started,
        "ended_at": _EPOCH + timedelta(microseconds=end_us),
        "events": events,
        "duration_s": (end_us - start_us) / 1_000_000,
        "version": version,
        "deleted": deleted,
    }


def play_row(play: PlaySummary, version: int) -> dict[str, Any]:
    """One ``plays`` row for ``play`` (dated by its start, UTC)."""
    row = {name: getattr(play, name, None) for name in PLAYS_SCHEMA.names}
    row["event_date"] = play.started_at.date().isoformat()
    row["version"] = version
    row["chapters_reached"] = list(play.chapters_reached)
    row["segments"] = [
        {
            "start": seg.start,
            "end": seg.end,
            "playing_s": seg.playing_s,
            "foreground": seg.foreground,
            "chapter": seg.chapter,
            "rate": seg.rate,
        }
        for seg in play.segments
    ]
    return row
