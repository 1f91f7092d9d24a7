"""``playpulse import --schema NAME``: files of another pipeline's payloads, imported.

Each file holds payloads of shape ``NAME`` (:mod:`playpulse.sources.shapes`): a JSON
array, NDJSON (one payload a line) or one JSON object, Kinesis/Firehose delivery records
unwrapped. Every payload is mapped and validated as ``POST /v1/events?schema=NAME``
does; one that cannot be mapped is quarantined (``source="import"``, with its file and
payload index; its ``origin`` a hash of the payload, so importing it again keeps one
entry). The events of the others are backfilled as history, as every import is
(:func:`~playpulse.service.apply_import`): when :func:`import_shaped` returns, every
query answers with them. Payloads that map to deterministic ids (audiobook ``event_id``,
Spotify tracker payloads, marketplace payloads with a time) import idempotently.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from playpulse.config import Settings
from playpulse.errors import BodyError
from playpulse.events.codec import validate_event
from playpulse.events.model import EventBase
from playpulse.quarantine.store import Rejection, open_quarantine
from playpulse.sources.importers.base import ImportFormatError, digest
from playpulse.sources.importers.runner import FileResult, ImportResult, RejectedRow, collect_files
from playpulse.sources.importers.timezones import check_zone
from playpulse.sources.shapes import map_payloads, shape_mapper, unwrap
from playpulse.sources.shapes.delivery import Payload

#: Most payloads one file may hold.
MAX_PAYLOADS_PER_FILE = 10_000_000
#: Most bytes a gzip-compressed delivery record may inflate to.
MAX_RECORD_BYTES = 64 * 1024 * 1024


def read_payloads(path: Path, schema: str) -> list[Payload]:
    """The payloads of file ``path`` (see the module docstring), delivery records
    unwrapped. Raises :class:`~playpulse.sources.importers.ImportFormatError` when the
    file cannot be read or split into payloads."""
    from playpulse.collector.body import split_events

    try:
        body = path.read_bytes()
        raws = split_events(body, MAX_PAYLOADS_PER_FILE)
        return unwrap(schema, raws, max_payloads=MAX_PAYLOADS_PER_FILE, max_bytes=MAX_RECORD_BYTES)
    except OSError as exc:
        raise ImportFormatError(path, f"cannot be read: {exc.strerror or exc}") from None
    except BodyError as exc:
        raise ImportFormatError(path, f"is not {schema} payloads: {exc}") from None


def import_shaped(
    paths: Sequence[Path],
    settings: Settings,
    schema: str,
    *,
    timezone: str | None = None,
    received_at: datetime | None = None,
) -> ImportResult:
    """Import the files ``paths`` holding payloads of shape ``schema`` into
    ``settings.data_dir``; returns once they are processed. Folders are walked for
    ``*.json`` and ``*.csv`` as :func:`~playpulse.sources.importers.collect_files` does
    (name other files, such as ``.ndjson``, directly).

    ``timezone``: the listeners' IANA zone (``--tz``), set as ``context.timezone`` on
    every imported event that has none. The result counts payloads as rows
    (``rows_by_format`` under ``schema:NAME``; ``rows_without_timezone`` those whose
    events name no zone) and events repeated byte for byte as ``duplicate_rows``.
    Raises :class:`~playpulse.errors.BodyError` (``unknown_schema``) for an unknown
    shape and :class:`~playpulse.sources.importers.ImportFormatError` for a file that is
    not payloads, both before anything is written;
    :class:`~playpulse.errors.QuarantineError` when rejects cannot be stored.
    """
    from playpulse.privacy.pseudonym import pseudonymize_events
    from playpulse.service import apply_import

    started = time.monotonic()
    shape_mapper(schema)
    when = received_at or datetime.now(UTC)
    fmt = f"schema:{schema}"
    result = ImportResult(timezone=None if timezone is None else check_zone(timezone))
    events: list[tuple[EventBase, str, bytes]] = []
    entries: list[Rejection] = []
    seen: set[bytes] = set()
    files = [(path, read_payloads(path, schema)) for path, _ in collect_files(paths)]
    for path, payloads in files:
        mapped = map_payloads(schema, payloads, when)
        fr = FileResult(path, fmt, rows=len(payloads), rejected=len(mapped.rejected))
        result.files.append(fr)
        for index in sorted(mapped.rejected):
            error, payload = mapped.rejected[index], mapped.payloads[index]
            where = f"{path}, payload {index}" + (f" ({payload.where})" if payload.where else "")
            errors = [*error.errors, {"loc": "source", "msg": where}]
            origin = f"import:{fmt}:{digest(fmt, payload.raw.decode('utf-8', 'replace'))}"
            entries.append(
                Rejection(payload.raw, error.reason, errors, when, "import", None, origin)
            )
            message = "; ".join(f"{e['loc']}: {e['msg']}" for e in error.errors)
            result.rejected.append(RejectedRow(path, 1, index, error.reason, message))
        zoneless: set[int] = set()
        for raw, owner in zip(mapped.events, mapped.owners, strict=True):
            raw = _with_zone(raw, result.timezone)
            if raw in seen:
                fr.duplicates += 1
                continue
            seen.add(raw)
            ok = validate_event(raw, when)  # passes: map_payloads validated it
            events.append((ok.event, ok.event.actor_id, ok.payload))
            fr.events += 1
            if ok.event.context is None or ok.event.context.timezone is None:
                zoneless.add(owner)
        result.rows_without_timezone += len(zoneless)
    result.rows_read = sum(f.rows for f in result.files)
    result.rows_rejected = sum(f.rejected for f in result.files)
    result.duplicate_rows = sum(f.duplicates for f in result.files)
    result.events_appended = len(events)
    result.rows_by_format = {fmt: result.rows_read} if result.files else {}
    result.events_by_format = {fmt: len(events)} if events else {}
    if entries:
        store = open_quarantine(settings)
        try:
            ids = store.add(entries)
        finally:
            store.close()
        result.rejected = [
            dataclasses.replace(r, quarantine_id=qid)
            for r, qid in zip(result.rejected, ids, strict=True)
        ]
    done = apply_import(settings, pseudonymize_events(settings, events))
    if done is not None:
        result.processing = done.processing
        result.events_new = done.backfilled
        result.events_known = done.already_in_lake
    result.seconds = time.monotonic() - started
    return result


def _with_zone(raw: bytes, zone: str | None) -> bytes:
    """Event JSON ``raw`` with ``context.timezone`` set to ``zone`` when it has none."""
    if zone is None:
        return raw
    event = msgspec.json.decode(raw)
    context = event.setdefault("context", {})
    if context.get("timezone") is None:
        context["timezone"] = zone
    return msgspec.json.encode(event)
