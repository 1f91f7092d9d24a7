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

``plays`` and ``sessions`` name their key columns in their schema's metadata
(:data:`VERSION_KEY`); compaction keeps only the rows readers use.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from playpulse.events.model import EventBase
from playpulse.processor.plays import PlaySummary

TS = pa.timestamp("us", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Schema metadata naming a versioned table's key columns (comma-separated): rows carry
#: a ``version`` and readers keep the highest per key (and drop it when its ``deleted``
#: is set); compaction keeps only those rows (:meth:`LakeWriter.compact`).
VERSION_KEY = "playpulse.version_key"

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
        # Skip policies beside the 30-second ``skipped`` (docs/metrics.md): null where
        # the data cannot tell.
        ("skipped_by_source", pa.bool_()),
        ("qualified_listen", pa.bool_()),
    ],
    metadata={VERSION_KEY: "play_key"},
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
    ],
    metadata={VERSION_KEY: "user_id,started_at"},
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
_NESTED = {"context": _CONTEXT_FIELDS, "content": _CONTENT_FIELDS}
_PYTHON_COLUMNS = ("properties", "items", "late", "stream_partition", "stream_offset")
_DERIVED_COLUMNS = ("event_date", "actor_id")
_NESTED_NAMES = {n for fields in _NESTED.values() for n in fields}
# The stored JSON of an event (playpulse.events.codec.encode_event: UTC times, absent
# fields left out), as pyarrow's JSON reader parses it: nested objects as structs.
_PAYLOAD_SCHEMA = pa.schema(
    [
        *(
            (name, pa.struct([EVENTS_SCHEMA.field(n) for n in fields]))
            for name, fields in _NESTED.items()
        ),
        *(
            EVENTS_SCHEMA.field(n)
            for n in EVENTS_SCHEMA.names
            if n not in _NESTED_NAMES and n not in _PYTHON_COLUMNS and n not in _DERIVED_COLUMNS
        ),
    ]
)
# Top-level times are read as text and cast afterwards: the reader's own timestamp
# parsing cost about 0.3 us more per event (an eighth of the parse) for the same values.
_TIMES = [f.name for f in _PAYLOAD_SCHEMA if pa.types.is_timestamp(f.type)]
_PARSE = pa_json.ParseOptions(
    explicit_schema=pa.schema(
        [pa.field(f.name, pa.string()) if f.name in _TIMES else f for f in _PAYLOAD_SCHEMA]
    ),
    unexpected_field_behavior="ignore",
)


def parse_payloads(payloads: Sequence[bytes]) -> pa.Table:
    """Stored event payloads (:func:`playpulse.events.codec.validate_event`'s JSON, one
    per item) as one Arrow table of the lake's payload columns: the nested ``context``
    and ``content`` as structs, times as UTC timestamps (us), unknown fields ignored,
    in one pass of pyarrow's JSON reader on one thread. Raises
    :class:`pyarrow.ArrowInvalid` for a payload that is not an encoded event."""
    data = b"\n".join(payloads)
    parsed = pa_json.read_json(
        io.BytesIO(data),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1),
        parse_options=_PARSE,
    )
    for name in _TIMES:
        at = parsed.schema.get_field_index(name)
        parsed = parsed.set_column(at, _PAYLOAD_SCHEMA.field(name), pc.cast(parsed[name], TS))
    return parsed


def events_table(entries: Sequence[tuple[EventBase, bytes, int, int, bool]]) -> pa.Table:
    """The ``events`` rows of ``entries`` — (event, its stored JSON payload, stream
    partition, offset, late) — as an Arrow table with :data:`EVENTS_SCHEMA`.

    The payloads are parsed by pyarrow's JSON reader in one pass (about 4x less CPU
    than reading the fields of each event in Python); ``properties`` and ``items``
    (free-form, kept as JSON text) come from the decoded events. Raises
    :class:`pyarrow.ArrowInvalid` for a payload that is not an encoded event.
    """
    parsed = parse_payloads([e[1] for e in entries])
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name in ("context", "content"):
        nested = parsed[name].combine_chunks()
        for child in _NESTED[name]:
            columns[child] = pc.struct_field(nested, child)
    for name in _PAYLOAD_SCHEMA.names:
        if name not in _NESTED:
            columns[name] = parsed[name]
    # UTC date of occurred_at as YYYY-MM-DD (a cast: 15x cheaper than pc.strftime).
    columns["event_date"] = pc.cast(pc.cast(parsed["occurred_at"], pa.date32()), pa.string())
    columns["actor_id"] = pc.coalesce(parsed["user_id"], parsed["anonymous_id"])
    events = [e[0] for e in entries]
    columns["properties"] = pa.array(
        [json.dumps(e.properties) if e.properties else None for e in events], pa.string()
    )
    columns["items"] = pa.array([_items_json(e) for e in events], pa.string())
    columns["late"] = pa.array([e[4] for e in entries], pa.bool_())
    columns["stream_partition"] = pa.array([e[2] for e in entries], pa.int32())
    columns["stream_offset"] = pa.array([e[3] for e in entries], pa.int64())
    return pa.table([columns[n] for n in EVENTS_SCHEMA.names], schema=EVENTS_SCHEMA)


def event_row(event: EventBase, partition: int, offset: int, late: bool) -> dict[str, Any]:
    """One ``events`` row for ``event`` read at ``partition``/``offset``."""
    from playpulse.events.codec import encode_event

    table = events_table([(event, encode_event(event), partition, offset, late)])
    row: dict[str, Any] = table.to_pylist()[0]
    return row


def _items_json(event: EventBase) -> str | None:
    basket = getattr(event, "items", None)
    return json.dumps([_item(i) for i in basket]) if basket else None


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


_PAYLOAD_TOP = (
    "event_type",
    "event_id",
    "user_id",
    "anonymous_id",
    "session_id",
    "playback_id",
    "position_s",
    "from_position_s",
    "playback_rate",
    "reason",
    "vendor_id",
    "product_id",
    "order_id",
    "quantity",
    "amount_minor",
    "currency",
)
_PAYLOAD_TIMES = ("occurred_at", "sent_at", "received_at", "derived_at")
_encode_payload = msgspec.json.Encoder()


def payloads(events: pa.Table) -> Iterator[bytes]:
    """The stored JSON payload of each row of a lake ``events`` table: the event as
    :func:`~playpulse.events.codec.decode_stored` reads it. Fields the lake does not
    keep (an ``error`` event's ``error_code`` / ``error_message``) are left out; no
    metric reads them."""
    columns = {
        n: events[n].to_pylist()
        for n in (*_CONTEXT_FIELDS, *_CONTENT_FIELDS, *_PAYLOAD_TOP, "properties", "items")
    }
    times = {n: pc.cast(events[n], pa.int64()).to_pylist() for n in _PAYLOAD_TIMES}
    for i in range(events.num_rows):
        out: dict[str, Any] = {}
        for name in _PAYLOAD_TOP:
            value = columns[name][i]
            if value is not None:
                out[name] = value
        for name in _PAYLOAD_TIMES:
            us = times[name][i]
            if us is not None:
                out[name] = (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")
        context = {n: columns[n][i] for n in _CONTEXT_FIELDS if columns[n][i] is not None}
        if context:
            out["context"] = context
        content = {n: columns[n][i] for n in _CONTENT_FIELDS if columns[n][i] is not None}
        if content:
            out["content"] = content
        for name in ("properties", "items"):
            raw = columns[name][i]
            if raw is not None:
                out[name] = json.loads(raw)
        yield _encode_payload.encode(out)
