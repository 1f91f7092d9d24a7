"""``playpulse privacy export --user ID``: every event of one person, as NDJSON (the right
of access).

Events come from where playpulse keeps them: the lake's ``events`` table (everything
processed, live and imported), the stream's records the processor has not committed yet,
and imports waiting to be applied (pending backfills). An event held in several places is
given once (by ``event_id``, the lake's copy first). Lines are the events' stored JSON
(UTC times; what the collector accepted, with ``received_at`` / ``derived_at``), ordered by
``occurred_at`` then ``event_id``. Events rebuilt from the lake leave out the fields the
lake does not keep (an ``error`` event's ``error_code`` / ``error_message``).

A person is matched as by ``privacy delete``: the id given and, when the data dir has a
pseudonym secret, its ``u_`` / ``a_`` pseudonyms, as ``user_id`` or ``anonymous_id``.
Reading only: safe while ``playpulse up`` runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from playpulse.config import Settings
from playpulse.errors import ConfigError, EventValidationError
from playpulse.events.codec import decode_stored
from playpulse.events.model import EventBase
from playpulse.lake.factory import open_lake
from playpulse.lake.schema import EVENTS_SCHEMA, payloads
from playpulse.privacy.pseudonym import identities, needles


def _theirs(event: EventBase, ids: set[str]) -> bool:
    return event.user_id in ids or event.anonymous_id in ids


def _lake_events(settings: Settings, ids: set[str]) -> Iterator[bytes]:
    lake = open_lake(settings)
    value_set = pa.array(sorted(ids), pa.string())
    for path in lake.readable(lake.live_files("events")):
        arrow = lake.read_table(path, EVENTS_SCHEMA).replace_schema_metadata()
        mask = pc.or_(
            pc.is_in(arrow["user_id"], value_set=value_set),
            pc.is_in(arrow["anonymous_id"], value_set=value_set),
        )
        mask = pc.fill_null(mask, False)
        if pc.any(mask).as_py():
            yield from payloads(arrow.filter(mask))


def _stream_events(settings: Settings, ids: set[str]) -> Iterator[bytes]:
    from playpulse.processor.pipeline import ProcessorOptions
    from playpulse.store.factory import open_store
    from playpulse.stream.factory import open_stream

    forms = needles(ids)
    store = open_store(settings)
    try:
        committed = store.offsets(ProcessorOptions().consumer)
    finally:
        store.close()
    stream = open_stream(settings)
    try:
        for info in stream.partitions():
            offset = max(info.start_offset, committed.get(info.partition, 0))
            if offset >= info.end_offset:
                continue
            while records := stream.read(info.partition, offset, 1000):
                for record in records:
                    if record.key in ids or any(f in record.value for f in forms):
                        with contextlib.suppress(EventValidationError):
                            if _theirs(decode_stored(record.value), ids):
                                yield record.value
                offset = records[-1].offset + 1
    finally:
        stream.close()


def _pending_events(settings: Settings, ids: set[str]) -> Iterator[bytes]:
    from playpulse.processor.backfill import PENDING_SCHEMA, pending_backfills

    for path in pending_backfills(settings):
        with contextlib.suppress(FileNotFoundError):  # applied meanwhile: in the lake now
            table = pq.read_table(path, schema=PENDING_SCHEMA)
            for payload in table["payload"].to_pylist():
                with contextlib.suppress(EventValidationError):
                    if _theirs(decode_stored(payload), ids):
                        yield payload


def user_events(settings: Settings, user_id: str) -> list[bytes]:
    """Every event of person ``user_id`` in the data dir of ``settings`` (see the module
    docstring), as stored JSON, once each, in ``occurred_at`` then ``event_id`` order.
    Raises :class:`~playpulse.errors.ConfigError` for an empty id;
    :class:`~playpulse.errors.PlaypulseError` subclasses when the stream, store or lake
    cannot be read."""
    if not user_id:
        raise ConfigError("privacy export: --user must name an id")
    ids = identities(settings, user_id)
    seen: dict[str, tuple[datetime, str, bytes]] = {}
    for source in (_lake_events, _stream_events, _pending_events):
        for payload in source(settings, ids):
            event = decode_stored(payload)
            if event.event_id not in seen:
                seen[event.event_id] = (event.occurred_at, event.event_id, payload)
    return [payload for _, _, payload in sorted(seen.values())]


def export_user(settings: Settings, user_id: str, out: BinaryIO) -> int:
    """Write every event of ``user_id`` (:func:`user_events`) to ``out`` as NDJSON, one
    event a line; returns how many."""
    events = user_events(settings, user_id)
    for payload in events:
        out.write(payload.rstrip(b"\n") + b"\n")
    return len(events)
