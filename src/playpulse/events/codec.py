"""Turn raw event bytes into validated, normalized events, and events back into bytes.

The collector, the quarantine replay and the importers all go through
:func:`validate_event`, so an event is accepted or rejected by the same rules wherever it
comes from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from playpulse.errors import EventValidationError
from playpulse.events.model import _COUNTRY, EVENT_TYPES, Event, EventBase

#: Largest accepted single event, as sent, in bytes.
MAX_EVENT_BYTES = 32 * 1024
#: Events may claim to have happened at most this far after they were received.
MAX_FUTURE = timedelta(hours=24)
#: Events before this instant are rejected (clock reset to the epoch, wrong unit).
EARLIEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=UTC)

_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()
# msgspec ends a message with " - at `$.a.b[0]`" when it knows where the problem is.
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<loc>[^`]*)`)?$", re.DOTALL)
_INVALID_TAG = re.compile(r"^Invalid value '(?P<tag>.*)'$", re.DOTALL)


def json_size(value: Any) -> int:
    """Size in bytes of ``value`` encoded as compact JSON."""
    return len(_encoder.encode(value))


def encode_event(event: EventBase) -> bytes:
    """Compact JSON of ``event`` (UTC times, absent fields left out)."""
    return _encoder.encode(event)


def _error(exc: msgspec.ValidationError | msgspec.DecodeError) -> dict[str, str]:
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any string
    msg, loc = match["msg"], (match["loc"] or "").lstrip(".")
    if loc == "event_type":
        tag = _INVALID_TAG.match(msg)
        if tag:
            msg = f"unknown event_type '{tag['tag']}'; expected one of: {', '.join(EVENT_TYPES)}"
    elif loc == "context.country" and msg.startswith("Invalid enum value"):
        # model.Country is a Literal for speed; say what the pattern it stands for said.
        msg = f"Expected `str` matching regex {_COUNTRY.pattern!r}"
    elif msg == "Object missing required field `event_type`":
        loc, msg = "event_type", "event_type is required"
    elif msg.startswith("Expected `datetime` with a timezone"):
        msg = "timestamp must carry a time zone, such as '2026-01-01T12:00:00Z'"
    elif not isinstance(exc, msgspec.ValidationError) and not loc:
        msg = f"not valid JSON: {msg}"
    return {"loc": loc or "event", "msg": msg}


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event: the decoded struct and its normalized JSON bytes, ready to append."""

    event: EventBase
    payload: bytes


def _reject(errors: list[dict[str, str]], reason: str = "invalid_event") -> EventValidationError:
    message = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
    return EventValidationError(message, errors, reason)


def _reason(exc: msgspec.DecodeError, error: dict[str, str]) -> str:
    if not isinstance(exc, msgspec.ValidationError):
        return "malformed_json"
    if error["msg"].startswith("unknown event_type"):
        return "unknown_event_type"
    return "invalid_event"


def validate_event(raw: bytes | str, received_at: datetime) -> Accepted:
    """Validate one event given as JSON text, as received at ``received_at`` (UTC-aware).

    Sets ``received_at`` and ``derived_at`` (see :class:`EventBase`) and returns the
    event with its normalized JSON (UTC times, no nulls).

    Raises :class:`EventValidationError` (``errors`` says where and why) when the event
    is larger than ``MAX_EVENT_BYTES``, is not valid JSON, does not match the model, or
    has ``occurred_at`` before 2000-01-01 or more than 24 h after ``received_at``.
    Raises ``ValueError`` if ``received_at`` is naive.
    """
    received_at = _utc(received_at)
    return _validate(raw, received_at, received_at + MAX_FUTURE)


def _utc(received_at: datetime) -> datetime:
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    # datetime.now(UTC) is the usual argument: no conversion needed then.
    return received_at if received_at.tzinfo is UTC else received_at.astimezone(UTC)


def validate_batch(
    raws: Sequence[bytes], received_at: datetime
) -> list[Accepted | EventValidationError]:
    """:func:`validate_event` for every event of one request (same ``received_at``),
    with the per-request work done once; each item is the accepted event or the error.
    """
    received_at = _utc(received_at)
    latest = received_at + MAX_FUTURE
    out: list[Accepted | EventValidationError] = []
    for raw in raws:
        try:
            out.append(_validate(raw, received_at, latest))
        except EventValidationError as exc:
            out.append(exc)
    return out


class _Recheck(Exception):
    """Raised in :func:`validate_records`' fast loop: redo this event the precise way."""


def validate_records(
    raws: Sequence[bytes | msgspec.Raw], received_at: datetime
) -> tuple[list[tuple[str, bytes]], list[tuple[int, EventValidationError]]]:
    """:func:`validate_batch` for the collector's hot path, shaped for the stream.

    Returns ``(records, rejected)``: ``(actor_id, normalized JSON)`` of every valid event,
    in order, ready for :meth:`~playpulse.stream.base.EventStream.append`, and
    ``(index, error)`` of every invalid one. ``raws`` may be :class:`msgspec.Raw` views
    into the request body (no copies). Accepts and rejects exactly what
    :func:`validate_event` does, with the same errors: the loop below only handles
    events that pass; any event that fails a check there is validated again by the same
    code as :func:`validate_event`, which says precisely why it is rejected.
    """
    received_at = _utc(received_at)
    latest = received_at + MAX_FUTURE
    earliest = EARLIEST_OCCURRED_AT
    decode = _decoder.decode
    encode = _encoder.encode
    records: list[tuple[str, bytes]] = []
    rejected: list[tuple[int, EventValidationError]] = []
    for index, raw in enumerate(raws):
        try:
            if len(raw) > MAX_EVENT_BYTES:
                raise _Recheck
            event: EventBase = decode(raw)
            occurred_at = event.occurred_at
            sent_at = event.sent_at
            if occurred_at < earliest or occurred_at > latest:
                raise _Recheck
            event.received_at = received_at
            if sent_at is None:
                event.derived_at = occurred_at
            else:
                if sent_at < earliest or sent_at > latest:
                    raise _Recheck
                derived_at = received_at - (sent_at - occurred_at)
                event.derived_at = derived_at if derived_at < received_at else received_at
            records.append((event.user_id or event.anonymous_id or "", encode(event)))
        except Exception:  # every failure is examined again, precisely, below
            try:
                accepted = _validate(bytes(raw), received_at, latest)
            except EventValidationError as exc:
                rejected.append((index, exc))
            else:  # pragma: no cover - the fast loop rejects nothing that _validate accepts
                event = accepted.event
                records.append((event.user_id or event.anonymous_id or "", accepted.payload))
    return records, rejected


def _validate(raw: bytes | str, received_at: datetime, latest: datetime) -> Accepted:
    try:
        data = raw.encode() if isinstance(raw, str) else raw
    except UnicodeEncodeError as exc:
        msg = f"not valid UTF-8 text: {exc}"
        raise _reject([{"loc": "event", "msg": msg}], "malformed_json") from None
    if len(data) > MAX_EVENT_BYTES:
        msg = f"event is {len(data)} bytes; the limit is {MAX_EVENT_BYTES}"
        raise _reject([{"loc": "event", "msg": msg}], "event_too_large")
    try:
        event: EventBase = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        error = _error(exc)
        raise _reject([error], _reason(exc, error)) from None
    except UnicodeDecodeError as exc:
        raise _reject(
            [{"loc": "event", "msg": f"not valid UTF-8: {exc}"}], "malformed_json"
        ) from None
    except RecursionError:
        msg = "JSON is nested too deeply"
        raise _reject([{"loc": "event", "msg": msg}], "invalid_event") from None
    _check_time("occurred_at", event.occurred_at, latest)
    sent_at = event.sent_at
    event.received_at = received_at
    if sent_at is not None:
        _check_time("sent_at", sent_at, latest)
        # Snowplow's derived timestamp, never later than the moment of receipt.
        event.derived_at = min(received_at, received_at - (sent_at - event.occurred_at))
    else:
        event.derived_at = event.occurred_at
    return Accepted(event, _encoder.encode(event))


def _check_time(name: str, value: datetime, latest: datetime) -> None:
    if value < EARLIEST_OCCURRED_AT:
        msg = f"{name} is before 2000-01-01"
        raise _reject([{"loc": name, "msg": msg}], "occurred_at_out_of_range")
    if value > latest:
        msg = f"{name} is more than 24 h after the collector received the event"
        raise _reject([{"loc": name, "msg": msg}], "occurred_at_out_of_range")


def decode_stored(payload: bytes) -> EventBase:
    """Parse an event stored by :func:`validate_event` (already normalized).

    Raises :class:`EventValidationError` if the payload does not match the model.
    """
    try:
        event: EventBase = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        error = _error(exc)
        raise _reject([error], _reason(exc, error)) from None
    return event


def event_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of :data:`Event`, the whole wire format."""
    schema: dict[str, Any] = msgspec.json.schema(Event)
    # model.Country is a Literal of every match of _COUNTRY, for speed: show the pattern.
    schema["$defs"]["Context"]["properties"]["country"]["anyOf"][0] = {
        "type": "string",
        "pattern": _COUNTRY.pattern,
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "playpulse event"
    schema["description"] = (
        "One playpulse event. POST /v1/events takes a JSON array of these, NDJSON "
        "(one per line) or a single object. received_at and derived_at are set by the "
        "collector."
    )
    return schema
