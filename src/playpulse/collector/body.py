"""Split a POST /v1/events body into the raw JSON of each event.

Accepted bodies (any Content-Type, including ``text/plain`` from ``navigator.sendBeacon``):

- a JSON array of event objects;
- NDJSON: one event object per line (blank lines ignored);
- a single JSON object (one event).

Each element is returned as its raw JSON so that every event is validated, sized and, if
rejected, quarantined on its own. A malformed array or gzip stream fails the whole body.
"""

from __future__ import annotations

import zlib

import msgspec

from playpulse.errors import BodyError

#: The raw JSON of one event: bytes, or a :class:`msgspec.Raw` view into the body (array
#: elements are not copied; ``bytes(raw)`` makes a copy where one is needed).
RawEvent = bytes | msgspec.Raw

_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_raw_one = msgspec.json.Decoder(msgspec.Raw)
_WHITESPACE = b" \t\r\n"


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress a gzip body, refusing to inflate past ``max_bytes``.

    Raises :class:`BodyError` 413 when the result is larger than ``max_bytes`` and 400
    when ``data`` is not a complete gzip stream.
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise BodyError(f"body is not valid gzip: {exc}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise BodyError(
            f"decompressed body is larger than {max_bytes} bytes", 413, "body_too_large"
        )
    if not inflater.eof:
        raise BodyError("body is not valid gzip: the stream is truncated")
    return out


def _where(exc: msgspec.DecodeError, text: bytes) -> str:
    message = str(exc)
    if "truncated" in message:
        return f"{message} (the body ends at byte {len(text)} before the JSON is complete)"
    return message


def split_events(body: bytes, max_events: int) -> list[RawEvent]:
    """The raw JSON of each event in ``body`` (see the module docstring).

    Raises :class:`BodyError` 400 when the body is empty, not an array, object or NDJSON,
    or a malformed array (the message says at which byte); 413 when it holds more than
    ``max_events`` events.
    """
    text = body.strip(_WHITESPACE)
    if not text:
        raise BodyError("body is empty; send a JSON array, NDJSON or one JSON object")
    first = text[:1]
    items: list[RawEvent]
    if first == b"[":
        try:
            items = list(_raw_list.decode(text))
        except msgspec.DecodeError as exc:
            raise BodyError(f"body is not a valid JSON array: {_where(exc, text)}") from None
    elif first == b"{":
        try:
            items = [bytes(_raw_one.decode(text))]
        except msgspec.DecodeError as exc:
            # Not one object: NDJSON. A bad line is one rejected event, not a bad body;
            # a body of one line that is not JSON is a malformed body.
            items = [line for line in text.split(b"\n") if line.strip(_WHITESPACE)]
            if len(items) == 1:
                raise BodyError(f"body is not valid JSON: {_where(exc, text)}") from None
    else:
        raise BodyError(
            "body must be a JSON array of events, NDJSON or one JSON object "
            f"(it starts with {first!r})"
        )
    if len(items) > max_events:
        raise BodyError(
            f"body holds {len(items)} events; the limit is {max_events} per request",
            413,
            "too_many_events",
        )
    return items
