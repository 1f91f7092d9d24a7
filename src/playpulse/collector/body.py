"""Split a POST /v1/events body into the raw JSON of each event.

Accepted bodies (any Content-Type, including ``text/plain`` from ``navigator.sendBeacon``):

- a JSON array of event objects;
- NDJSON: one event object per line (blank lines ignored);
- a single JSON object (one event).

Each element is returned as its raw JSON so that every event is validated, sized and, if
rejected, quarantined on its own. A malformed array or gzip stream fails the whole body.

Limits that keep a hostile body from costing more than its size: a gzip body inflates to
at most ``max_body_bytes`` over all its members, and nothing may follow the last member;
an event may nest at most :data:`MAX_EVENT_DEPTH` levels deep (see
:func:`nesting_exceeds`); a body nested so deep that it cannot even be split into events
is a 400 (``nesting_too_deep``), never a ``RecursionError``.
"""

from __future__ import annotations

import re
import zlib

import msgspec

from playpulse.errors import BodyError

#: The raw JSON of one event: bytes, or a :class:`msgspec.Raw` view into the body (array
#: elements are not copied; ``bytes(raw)`` makes a copy where one is needed).
RawEvent = bytes | msgspec.Raw

_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_raw_one = msgspec.json.Decoder(msgspec.Raw)
_WHITESPACE = b" \t\r\n"
_GZIP_MAGIC = b"\x1f\x8b"
_FIRST_PIECE_BYTES = 1024
_MAX_PIECE_BYTES = 1024 * 1024

#: How many levels an event may nest, the event object itself being level 1 (its
#: ``context`` is level 2, a list in its ``properties`` level 3). Well below Python's
#: recursion limit, so that no later decode of a stored event can hit it.
MAX_EVENT_DEPTH = 32

#: A JSON string (possessive, so no backtracking on long strings).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
#: Keeps only brackets, with objects' braces mapped to brackets.
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress a gzip body of one or more members, refusing to inflate past ``max_bytes``.

    Every member is read (RFC 1952 allows several, concatenated). Raises
    :class:`BodyError` 413 when the members inflate to more than ``max_bytes`` in total,
    and 400 when ``data`` is not a complete gzip stream or bytes that are not a gzip
    member follow the last one (the message says at which byte).
    """
    out: list[bytes] = []
    size = 0
    view = memoryview(data)
    position = 0  # of the next byte of ``data`` to inflate
    while True:
        member_at = position
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        # Feed a member in growing pieces: what follows it (``unused_data``) is then a
        # copy of one piece, not of the rest of the body, so many small members stay cheap.
        piece = _FIRST_PIECE_BYTES
        while not inflater.eof:
            if position >= len(data):
                raise BodyError(
                    f"body is not valid gzip: the member at byte {member_at} is truncated "
                    f"(the body ends at byte {len(data)})"
                )
            fed = view[position : position + piece]
            position += len(fed)
            piece = min(piece * 2, _MAX_PIECE_BYTES)
            try:
                chunk = inflater.decompress(fed, max_bytes - size + 1)
            except zlib.error as exc:
                raise BodyError(
                    f"body is not valid gzip in the member at byte {member_at}: {exc}"
                ) from None
            size += len(chunk)
            if size > max_bytes or inflater.unconsumed_tail:
                raise BodyError(
                    f"decompressed body is larger than {max_bytes} bytes", 413, "body_too_large"
                )
            out.append(chunk)
        position -= len(inflater.unused_data)
        if position == len(data):
            return b"".join(out)
        if data[position : position + 2] != _GZIP_MAGIC:
            raise BodyError(
                f"body has {len(data) - position} bytes after the end of its gzip stream, "
                f"from byte {position}; send only gzip members"
            )


def nesting_exceeds(document: bytes, limit: int = MAX_EVENT_DEPTH) -> bool:
    """Whether the JSON ``document`` nests arrays and objects more than ``limit`` deep.

    ``document`` must be valid JSON (an event the decoder accepted): the answer is
    exact then. Cheap for the common case: a document with at most ``limit`` opening
    brackets is answered by two counts; otherwise its strings are removed and innermost
    bracket pairs are peeled off ``limit`` times, all at C speed (about ``limit`` passes
    over the document's brackets).
    """
    if document.count(b"[") + document.count(b"{") <= limit:
        return False
    # Brackets inside strings were counted above; the skeleton has none of them.
    skeleton = _STRING.sub(b"", document).translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(limit):
        if not skeleton:
            return False
        skeleton = skeleton.replace(b"[]", b"")
    return bool(skeleton)


def _where(exc: msgspec.DecodeError, text: bytes) -> str:
    message = str(exc)
    if "truncated" in message:
        return f"{message} (the body ends at byte {len(text)} before the JSON is complete)"
    return message


def split_events(body: bytes, max_events: int) -> list[RawEvent]:
    """The raw JSON of each event in ``body`` (see the module docstring).

    Raises :class:`BodyError` 400 when the body is empty, not an array, object or NDJSON,
    a malformed array (the message says at which byte) or nested too deep to be split
    into events (reason ``nesting_too_deep``; events nested deeper than
    :data:`MAX_EVENT_DEPTH` but splittable are rejected one by one by the collector);
    413 when it holds more than ``max_events`` events.
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
        except RecursionError:
            raise BodyError(
                "body nests arrays or objects too deep to be read; an event may nest at "
                f"most {MAX_EVENT_DEPTH} levels",
                reason="nesting_too_deep",
            ) from None
    elif first == b"{":
        try:
            items = [bytes(_raw_one.decode(text))]
        except RecursionError:
            # Too deep to read here; as one event (or NDJSON lines) each is rejected on
            # its own by validation, with the others accepted.
            items = [line for line in text.split(b"\n") if line.strip(_WHITESPACE)]
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
