"""Every problem of a rejected event, not only the first.

The event model's decoder (msgspec, :mod:`playpulse.events.codec`) stops at the first
field it cannot accept, so a client fixing its events one error per round trip would
need as many requests as errors. :func:`with_every_error` completes a rejection with the
event's other problems: each field of the event's class (chosen by its ``event_type``)
is decoded on its own with the model's own type and constraints, recursing into nested
objects (``context``, ``content``, ``items``); required fields that are missing, unknown
fields, the checks the model makes on the whole object (``user_id`` or
``anonymous_id``; a known ``context.timezone``) and the time checks made after decoding
(``occurred_at`` and ``sent_at`` from 2000 on, at most 24 h after receipt) are listed
too. The messages are the decoder's own. The decoder's error stays first; each further
location is listed once, at most :data:`MAX_ERRORS` in all. Only rejected events pay
for this.
"""

from __future__ import annotations

import re
import types
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec

from playpulse.errors import EventValidationError
from playpulse.events.codec import EARLIEST_OCCURRED_AT, MAX_FUTURE
from playpulse.events.codec import _error as codec_error
from playpulse.events.model import Event

#: Most errors listed for one event (the first is the decoder's).
MAX_ERRORS = 20
#: Rejection reasons that come from the model's fields, where more problems may hide
#: (not malformed JSON, a too-large event or an unknown event type).
COMPLETED_REASONS = frozenset({"invalid_event", "occurred_at_out_of_range"})
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<loc>[^`]*)`)?$", re.DOTALL)
#: Fields the collector sets: whatever a client sends there is replaced, never refused.
_SET_BY_COLLECTOR = frozenset({"received_at", "derived_at"})


@lru_cache(maxsize=1)
def _classes() -> dict[str, type[msgspec.Struct]]:
    """The event class of each ``event_type``."""
    return {str(c.__struct_config__.tag): c for c in get_args(Event)}


def _bare(annotation: Any) -> Any:
    """``annotation`` without ``Annotated[...]`` around it."""
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _struct_of(annotation: Any) -> tuple[type[msgspec.Struct] | None, bool]:
    """``(struct class, is a list of it)`` of a field's type, ``(None, False)`` when the
    field is not an object of the model (or a list of them), nullable or not."""
    annotation = _bare(annotation)
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    for option in map(_bare, options or (annotation,)):
        if isinstance(option, type) and issubclass(option, msgspec.Struct):
            return option, False
        if get_origin(option) is list:
            (item,) = map(_bare, get_args(option) or (None,))
            if isinstance(item, type) and issubclass(item, msgspec.Struct):
                return item, True
    return None, False


def _join(prefix: str, loc: str) -> str:
    if not loc:
        return prefix or "event"
    if not prefix:
        return loc.lstrip(".")
    return prefix + (loc if loc.startswith("[") else "." + loc.lstrip("."))


def _decode_error(exc: msgspec.ValidationError, prefix: str) -> dict[str, str]:
    """The decoder's error for a value at ``prefix``, worded as the collector words it."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any string
    loc = _join(prefix, match["loc"] or "")
    # The collector's own wording of the message (codec._error), for the full location.
    error = codec_error(msgspec.ValidationError(f"{match['msg']} - at `$.{loc}`"))
    return {"loc": loc, "msg": error["msg"]}


def _struct_errors(cls: type[msgspec.Struct], data: Any, prefix: str) -> list[dict[str, str]]:
    """The problems of ``data`` (decoded JSON) as an object of ``cls``, at ``prefix``."""
    if not isinstance(data, dict):
        try:
            msgspec.json.decode(msgspec.json.encode(data), type=cls)
        except msgspec.ValidationError as exc:
            return [_decode_error(exc, prefix)]
        return []
    out: list[dict[str, str]] = []
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    tag_field = cls.__struct_config__.tag_field
    for name, value in data.items():
        if name == tag_field:
            continue
        where = _join(prefix, name)
        field = fields.get(name)
        if field is None:
            out.append({"loc": where, "msg": f"Object contains unknown field `{name}`"})
            continue
        if name in _SET_BY_COLLECTOR and not prefix:
            continue
        nested, many = _struct_of(field.type)
        if nested is not None and value is not None:
            if many and isinstance(value, list):
                for i, item in enumerate(value):
                    out.extend(_struct_errors(nested, item, f"{where}[{i}]"))
                continue
            if not many:
                out.extend(_struct_errors(nested, value, where))
                continue
        try:
            msgspec.json.decode(msgspec.json.encode(value), type=field.type)
        except msgspec.ValidationError as exc:
            out.append(_decode_error(exc, where))
    for name, field in fields.items():
        if field.required and name not in data:
            out.append({"loc": _join(prefix, name), "msg": f"{name} is required"})
    if not out:  # every field is fine: the checks on the whole object
        try:
            msgspec.json.decode(msgspec.json.encode(data), type=cls)
        except msgspec.ValidationError as exc:
            out.append(_decode_error(exc, prefix))
    return out


def _time_errors(data: dict[str, Any], received_at: datetime) -> list[dict[str, str]]:
    out = []
    latest = received_at + MAX_FUTURE
    for name in ("occurred_at", "sent_at"):
        value = data.get(name)
        if not isinstance(value, str):
            continue
        try:
            when = msgspec.json.decode(msgspec.json.encode(value), type=datetime)
        except msgspec.ValidationError:
            continue
        if when.tzinfo is None:
            continue
        if when < EARLIEST_OCCURRED_AT:
            out.append({"loc": name, "msg": f"{name} is before 2000-01-01"})
        elif when > latest:
            msg = f"{name} is more than 24 h after the collector received the event"
            out.append({"loc": name, "msg": msg})
    return out


def every_error(raw: bytes, first: dict[str, str], received_at: datetime) -> list[dict[str, str]]:
    """The problems of event ``raw`` (JSON bytes) beside ``first`` (the decoder's),
    ``first`` first, each location once, at most :data:`MAX_ERRORS`; ``[first]`` when
    ``raw`` is not a JSON object of a known event type."""
    try:
        data = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return [first]
    if not isinstance(data, dict):
        return [first]
    event_type = data.get("event_type")
    cls = _classes().get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        return [first]
    found = [*_struct_errors(cls, data, ""), *_time_errors(data, received_at)]
    if data.get("user_id") is None and data.get("anonymous_id") is None:
        found.append({"loc": "user_id", "msg": "one of user_id or anonymous_id is required"})
    out, seen = [first], {first["loc"]}
    for error in found:
        if error["loc"] not in seen and len(out) < MAX_ERRORS:
            seen.add(error["loc"])
            out.append(error)
    return out


def with_every_error(
    raw: bytes | msgspec.Raw, error: EventValidationError, received_at: datetime
) -> EventValidationError:
    """``error`` (the rejection of event ``raw``) with every other problem of the event
    listed after its first (:func:`every_error`); ``error`` itself when there are none
    or its reason is not a field's (:data:`COMPLETED_REASONS`)."""
    if error.reason not in COMPLETED_REASONS or not error.errors:
        return error
    try:
        errors = every_error(bytes(raw), error.errors[0], received_at)
    except Exception:  # listing more is a courtesy: never fail the rejection for it
        return error
    if len(errors) <= 1:
        return error
    message = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
    return EventValidationError(message, errors, error.reason)
