"""Event shapes of existing pipelines, accepted unchanged and mapped to the event model.

``POST /v1/events?schema=NAME`` (and ``playpulse import --schema NAME``) takes payloads
of shape ``NAME`` instead of playpulse events; docs/event-shapes.md has each shape's
mapping table and errors:

- ``audiobook``: an audiobook app's ``START_PLAYBACK`` ... ``SPEED_CHANGE``
  (:mod:`.audiobook`);
- ``spotify-tracker``: a Spotify tracker's ``track_change`` (:mod:`.spotify_tracker`);
- ``marketplace``: the arguments of the ``trackUserInteraction`` mutation
  (:mod:`.marketplace`; the GraphQL endpoint is :mod:`playpulse.graphql`);
- ``playpulse``: playpulse events as they are (for a bridge forwarding delivery records).

Records of a Kinesis or Firehose delivery are unwrapped first (:mod:`.delivery`). Each
payload maps to one or more events, or is rejected on its own with a
:class:`~.common.ShapeError` saying which field cannot be mapped; a payload some of whose
events are invalid is rejected as a whole. Rejected payloads are quarantined like
invalid events (reason ``unmappable_event``, or the event model's reason), the raw
payload kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from playpulse.collector.app import IngestResult
from playpulse.collector.body import MAX_EVENT_DEPTH, nesting_exceeds
from playpulse.errors import BackpressureError, BodyError, EventValidationError
from playpulse.events.codec import validate_event
from playpulse.sources.shapes.audiobook import map_audiobook
from playpulse.sources.shapes.common import UNMAPPABLE, ShapeError
from playpulse.sources.shapes.delivery import Payload, unwrap
from playpulse.sources.shapes.marketplace import map_marketplace
from playpulse.sources.shapes.spotify_tracker import map_spotify_tracker

if TYPE_CHECKING:
    from playpulse.collector.app import Collector
    from playpulse.privacy.pseudonym import UserPrivacy
    from playpulse.quarantine.store import Rejection

__all__ = [
    "SHAPES",
    "UNMAPPABLE",
    "MappedPayloads",
    "Payload",
    "ShapeError",
    "ShapedIngestResult",
    "ingest_shaped",
    "map_payload",
    "map_payloads",
    "shape_mapper",
    "unwrap",
]

#: A shape's mapper: one payload and the receive time (UTC-aware) in, event objects out;
#: raises :class:`ShapeError`.
Mapper = Callable[[Any, datetime], list[dict[str, Any]]]


def _playpulse(payload: Any, received_at: datetime) -> list[dict[str, Any]]:
    """A playpulse event as it is (validated later like every event)."""
    del received_at
    if not isinstance(payload, Mapping):
        raise ShapeError("playpulse", "", "expected a JSON object (one playpulse event)")
    return [dict(payload)]


#: Every shape by its ``schema`` name.
SHAPES: dict[str, Mapper] = {
    "audiobook": map_audiobook,
    "spotify-tracker": map_spotify_tracker,
    "marketplace": map_marketplace,
    "playpulse": _playpulse,
}

_encode = msgspec.json.Encoder().encode


def shape_mapper(name: str) -> Mapper:
    """The mapper of shape ``name``; raises :class:`~playpulse.errors.BodyError` (422,
    ``unknown_schema``) naming the known shapes for any other name."""
    mapper = SHAPES.get(name)
    if mapper is None:
        raise BodyError(
            f"schema {name[:64]!r} is not known; known: {', '.join(SHAPES)}",
            422,
            "unknown_schema",
        )
    return mapper


def map_payload(name: str, payload: Any, received_at: datetime) -> list[dict[str, Any]]:
    """The event objects (docs/events.md) of one ``payload`` (decoded JSON) of shape
    ``name``, received at ``received_at`` (UTC-aware). Pure. Raises :class:`ShapeError`
    when the payload cannot be mapped, :class:`~playpulse.errors.BodyError` for an
    unknown shape."""
    return shape_mapper(name)(payload, received_at)


@dataclass
class MappedPayloads:
    """Payloads mapped and validated: ``events`` (the event JSON of every accepted
    payload, in order), ``owners`` (the payload index of each event), ``rejected``
    (``{payload index: error}``) and ``payloads`` (all of them)."""

    payloads: list[Payload]
    events: list[bytes] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    rejected: dict[int, EventValidationError] = field(default_factory=dict)


def map_payloads(name: str, payloads: Sequence[Payload], received_at: datetime) -> MappedPayloads:
    """Map every payload with shape ``name`` and validate its events as the collector
    does (:func:`~playpulse.events.codec.validate_event`). A payload is accepted whole or
    rejected whole: the first error of its mapping or of one of its events (``loc``
    prefixed by the event type, such as ``play_end.position_s``)."""
    mapper = shape_mapper(name)
    out = MappedPayloads(list(payloads))
    for index, payload in enumerate(payloads):
        if payload.error is not None:
            out.rejected[index] = payload.error
            continue
        try:
            events = []
            for event in mapper(payload.value, received_at):
                raw = _encode(event)
                if nesting_exceeds(raw):
                    message = f"nests arrays or objects more than {MAX_EVENT_DEPTH} levels deep"
                    errors = [{"loc": str(event.get("event_type", "event")), "msg": message}]
                    raise EventValidationError(message, errors, "nesting_too_deep")
                try:
                    validate_event(raw, received_at)
                except EventValidationError as exc:
                    kind = event.get("event_type")
                    prefix = kind if isinstance(kind, str) else "event"
                    errors = [{"loc": f"{prefix}.{e['loc']}", "msg": e["msg"]} for e in exc.errors]
                    raise EventValidationError(str(exc), errors, exc.reason) from None
                events.append(raw)
        except EventValidationError as exc:
            out.rejected[index] = exc
            continue
        out.events.extend(events)
        out.owners.extend([index] * len(events))
    return out


@dataclass
class ShapedIngestResult(IngestResult):
    """Outcome of a body of shaped payloads: ``accepted`` payloads, ``events`` stored
    for them, and each rejected payload as ``{"index", "event_id", "errors"}`` (``index``
    counts payloads, delivery records unwrapped, from 0)."""

    events: int = 0

    def as_json(self) -> dict[str, Any]:
        """The response body of POST /v1/events?schema=NAME."""
        return {"accepted": self.accepted, "events": self.events, "rejected": self.rejected}


def _event_id(payload: Payload) -> str | None:
    value = payload.value
    if isinstance(value, Mapping):
        found = value.get("event_id", value.get("eventId"))
        if isinstance(found, str):
            return found[:256]
    return None


def rejections(
    mapped: MappedPayloads, name: str, received_at: datetime, scrub: Callable[[bytes], bytes]
) -> list[Rejection]:
    """The quarantine entries of ``mapped``'s rejected payloads: the raw payload (through
    ``scrub``, cut to the collector's bound), the reason and errors, plus an error entry
    naming the schema (and the record, for delivery records)."""
    from playpulse.collector.app import bounded_raw
    from playpulse.quarantine.store import Rejection

    out = []
    for index in sorted(mapped.rejected):
        error, payload = mapped.rejected[index], mapped.payloads[index]
        raw, note = bounded_raw(scrub(payload.raw))
        where = f"payload of schema {name}" + (f", {payload.where}" if payload.where else "")
        errors = [*error.errors, {"loc": "schema", "msg": where}, *note]
        out.append(
            Rejection(raw, error.reason, errors, received_at, "collector", _event_id(payload))
        )
    return out


async def ingest_shaped(
    collector: Collector,
    name: str,
    raws: Sequence[Any],
    received_at: datetime,
    max_payloads: int = 1000,
    max_bytes: int = 1 << 20,
) -> ShapedIngestResult:
    """Ingest the payloads of shape ``name`` in ``raws`` (the body's items, see
    :func:`~playpulse.collector.body.split_events`) through ``collector``: unwrap
    delivery records, map, quarantine the payloads that cannot be mapped, then
    :meth:`~playpulse.collector.app.Collector.ingest` the events of the others (its
    privacy hook, stream and retries). ``max_payloads``/``max_bytes`` bound what
    delivery records unwrap to. Raises :class:`~playpulse.errors.BodyError` (422
    ``unknown_schema``, 413 for a delivery over the bounds) and
    :class:`~playpulse.errors.BackpressureError` (too many events pending) before
    anything is stored,
    :class:`~playpulse.errors.QuarantineError` when the rejects cannot be stored, and
    what :meth:`Collector.ingest` raises (an ``EventsNotStoredError``'s indexes are then
    payload indexes)."""
    from starlette.concurrency import run_in_threadpool

    from playpulse.collector.app import APPEND_ATTEMPTS, EventsNotStoredError

    shape_mapper(name)
    payloads = unwrap(name, raws, max_payloads=max_payloads, max_bytes=max_bytes)
    mapped = map_payloads(name, payloads, received_at)
    if (
        mapped.events
        and collector.pending_events + len(mapped.events) > collector.max_pending_events
    ):
        raise BackpressureError(  # before the quarantine: a retry must not add entries twice
            f"{collector.pending_events} events are waiting for the stream; "
            f"the limit is {collector.max_pending_events}"
        )
    users = collector.users
    scrub: Callable[[bytes], bytes] = bytes if users is None else _scrubber(users, name)
    entries = rejections(mapped, name, received_at, scrub)
    if entries:
        await run_in_threadpool(collector.quarantine.add, entries)
        for entry in entries:
            collector.metrics.rejected.labels(entry.reason).inc()
    result = ShapedIngestResult()
    failed = dict(mapped.rejected)
    if mapped.events:
        try:
            inner: IngestResult = await collector.ingest(mapped.events, received_at)
        except EventsNotStoredError as exc:
            reasons: dict[int, str] = {}
            for index, why in exc.reasons.items():
                reasons.setdefault(mapped.owners[index], why)
            rejected = _merge(_report(mapped, failed), mapped.owners, exc.rejected)
            raise EventsNotStoredError(exc.stored, reasons, rejected, APPEND_ATTEMPTS) from exc
        for item in inner.rejected:
            owner = mapped.owners[int(item["index"])]
            failed.setdefault(owner, EventValidationError("", item["errors"]))
        result.events = sum(1 for owner in mapped.owners if owner not in failed)
    result.rejected = _report(mapped, failed)
    result.accepted = len(payloads) - len(failed)
    return result


def _scrubber(users: UserPrivacy, name: str) -> Callable[[bytes], bytes]:
    """The privacy hook's scrub of a rejected payload's raw JSON: ``user_id`` /
    ``anonymous_id`` as for events, and for ``marketplace`` its ``customerId`` and
    ``metadata.anonymousId`` too (pseudonymised when ``pseudonymize_users`` is on)."""
    if name != "marketplace":
        return users.scrub_raw

    def pseudonym(field: str, value: str) -> str:
        scrubbed = json.loads(users.scrub_raw(json.dumps({field: value}).encode()))
        return str(scrubbed[field])

    def scrub(raw: bytes) -> bytes:
        if not users.pseudonymize:
            return raw
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return raw
        if not isinstance(data, dict):
            return raw
        if isinstance(data.get("customerId"), str):
            data["customerId"] = pseudonym("user_id", data["customerId"])
        meta = data.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("anonymousId"), str):
            meta["anonymousId"] = pseudonym("anonymous_id", meta["anonymousId"])
        return json.dumps(data, separators=(",", ":")).encode()

    return scrub


def _report(
    mapped: MappedPayloads, failed: Mapping[int, EventValidationError]
) -> list[dict[str, Any]]:
    return [
        {"index": i, "event_id": _event_id(mapped.payloads[i]), "errors": failed[i].errors}
        for i in sorted(failed)
    ]


def _merge(
    report: list[dict[str, Any]], owners: Sequence[int], inner: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    seen = {int(item["index"]) for item in report}
    out = list(report)
    for item in inner:
        owner = owners[int(item["index"])]
        if owner not in seen:
            seen.add(owner)
            out.append({**item, "index": owner})
    return sorted(out, key=lambda item: int(item["index"]))
