"""Shared pieces of the importers: source rows, row errors, ids and event builders.

Every importer turns one *source row* (a JSON object of an array, or a CSV record) into
zero or more event dicts in the wire format of docs/events.md. The dicts are encoded and
checked with :func:`playpulse.events.codec.validate_event` by the runner, exactly as the
collector checks events.

**Identity.** An event's ``event_id`` is a hash of ``(format, identity, role)``:
``identity`` is the canonical JSON (sorted keys, no nulls) of what the row says once
personal fields are removed and units normalized, and ``role`` names the event within
the row (``start``, ``hb1``, ``hb2``, ..., ``end``, ``view``). So importing the same
file twice gives the same events (the processor drops them as duplicates), identical
rows give identical events, and rows that differ only in a dropped personal field (an IP
address) are the same row.

**Times** are UTC-aware ``datetime`` objects and are written as ISO 8601 with ``Z``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playpulse.errors import PlaypulseError

#: Longest ``title`` / ``creator`` / ``chapter_title`` kept (the model's ``Text`` limit);
#: longer values are cut, so an overlong name does not cost the whole play.
MAX_TEXT_CHARS = 512
#: Longest identifier (the model's ``Id`` limit); longer source ids are hashed.
MAX_ID_CHARS = 256
#: Spacing of the heartbeats of an imported play, in seconds of playing. The processor
#: counts nothing across a gap of more than 30 minutes, so a long play needs evidence
#: at least that often; 10 minutes leaves a wide margin.
HEARTBEAT_EVERY_S = 600
#: Fields never stored, hashed or quarantined (personal data in Spotify exports).
PERSONAL_FIELDS = frozenset(
    {
        "ip_addr",
        "ip_addr_decrypted",
        "user_agent",
        "user_agent_decrypted",
    }
)


class ImportFormatError(PlaypulseError):
    """A file cannot be imported as a whole: its format is unknown, or it is corrupt.

    ``path`` is the file; ``line`` the 1-based line of the problem when known (a JSON
    syntax error, undecodable bytes, a broken CSV record), else ``None``. The message
    names both.
    """

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class UnknownFormatError(ImportFormatError):
    """A file is readable but in none of the known formats (or holds no rows at all).

    Named files with an unknown format fail the import; inside a directory they are
    skipped and listed in the result (an export folder holds other files too).
    """


class SkipRow(Exception):
    """The row is valid but holds nothing to import (an ad, a "Visited" entry).

    ``reason`` is a short phrase; the runner counts skipped rows per reason.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidRow(Exception):
    """The row cannot be turned into events (a missing field, a value of the wrong type).

    ``loc`` names the source field, ``msg`` says what is wrong. The runner quarantines
    the row with its file and line.
    """

    def __init__(self, loc: str, msg: str) -> None:
        super().__init__(f"{loc}: {msg}")
        self.loc = loc
        self.msg = msg


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One row of a source file.

    ``line`` is the 1-based line where the row starts (a compact one-line JSON array has
    every row on line 1; ``index`` then tells them apart); ``index`` is the 0-based
    position of the row among the file's rows (array elements, or CSV data records after
    any header). ``data`` is the JSON object or the CSV fields.
    """

    path: Path
    line: int
    index: int
    data: Any


@dataclass(frozen=True, slots=True)
class MapContext:
    """What a row mapper needs besides the row.

    ``user_id`` is the caller's user for single-person exports (``None``: from the file
    or a default); ``path`` is the file (some formats take a hint from its name);
    ``timezone`` the listener's IANA zone given by the caller (``--tz``; ``None``: the
    mapper may take one from the row, see :mod:`.timezones`; the runner sets the caller's
    zone on every row's first event either way).
    """

    user_id: str | None
    path: Path
    hints: Mapping[str, Any] = field(default_factory=dict)
    timezone: str | None = None


def canonical(value: Any) -> str:
    """Canonical JSON of ``value``: sorted keys, no insignificant whitespace, ``None``
    values of objects left out (so an absent key and a null key are the same)."""
    return json.dumps(_drop_nulls(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def digest(*parts: str, length: int = 32) -> str:
    """Hex SHA-256 of ``parts`` (joined by a 0x1f unit separator), cut to ``length``."""
    h = hashlib.sha256("\x1f".join(parts).encode())
    return h.hexdigest()[:length]


@dataclass(frozen=True, slots=True)
class RowIdentity:
    """The identity of one row: its format and canonical content, hashed once.

    ``key`` is the row digest (128 bits, hex) used for ``playback_id`` and derived ids
    such as Taobao order ids.
    """

    fmt: str
    key: str

    @classmethod
    def of(cls, fmt: str, content: Any) -> RowIdentity:
        """The identity of a row of ``fmt`` whose normalized content is ``content``."""
        return cls(fmt, digest(fmt, canonical(content)))

    def event_id(self, role: str) -> str:
        """The id of the row's event with ``role`` (``start``, ``hb1``, ``end``, ...)."""
        return f"{self.fmt}-{digest(self.fmt, self.key, role)}"


def strip_personal(row: Any) -> Any:
    """``row`` without :data:`PERSONAL_FIELDS` (for hashing and quarantining)."""
    if isinstance(row, dict):
        return {k: v for k, v in row.items() if k not in PERSONAL_FIELDS}
    return row


def iso(t: datetime) -> str:
    """``t`` (UTC-aware) as ISO 8601 with microseconds when needed and a ``Z``."""
    if t.tzinfo is None:
        raise ValueError("naive datetime")
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def text(value: Any, loc: str) -> str | None:
    """A display string (title, creator): ``None`` when null or blank, cut to
    :data:`MAX_TEXT_CHARS`. Raises :class:`InvalidRow` for a non-string."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRow(loc, f"expected a string, got {type(value).__name__}")
    value = value.strip()
    return value[:MAX_TEXT_CHARS] or None


def ident(prefix: str, value: str) -> str:
    """``prefix + value`` as an identifier; hashed when it would exceed
    :data:`MAX_ID_CHARS`."""
    out = f"{prefix}{value}"
    if len(out) > MAX_ID_CHARS:
        out = f"{prefix}sha256:{digest(value, length=64)}"
    return out


def require(data: Mapping[str, Any], key: str) -> Any:
    """``data[key]``, or :class:`InvalidRow` when the key is missing or null."""
    value = data.get(key)
    if value is None:
        raise InvalidRow(key, "is required")
    return value


def as_int(value: Any, loc: str) -> int:
    """``value`` as an int (a JSON integer, or a string of digits); rejects floats with a
    fraction, booleans and anything else with :class:`InvalidRow`."""
    if isinstance(value, bool):
        raise InvalidRow(loc, f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise InvalidRow(loc, f"expected an integer, got {value!r}")


def utc_from_unix(seconds: int, loc: str) -> datetime:
    """Unix seconds as a UTC datetime; :class:`InvalidRow` when out of range."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidRow(loc, f"{seconds} is not a valid Unix time in seconds") from None


def parse_iso_utc(value: Any, loc: str) -> datetime:
    """An ISO 8601 time *with* a zone (``2021-09-21T19:38:59Z``) as UTC.

    Raises :class:`InvalidRow` for anything else, naive times included.
    """
    if not isinstance(value, str):
        raise InvalidRow(loc, f"expected an ISO 8601 time string, got {value!r}")
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRow(loc, f"{value!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise InvalidRow(loc, f"{value!r} has no time zone")
    return t.astimezone(UTC)


def play_events(
    ident_: RowIdentity,
    *,
    actor: Mapping[str, str],
    content: Mapping[str, Any],
    start: datetime,
    played_ms: int,
    reason: str,
    context: Mapping[str, Any] | None = None,
    start_properties: Mapping[str, Any] | None = None,
    end_properties: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The events of one play of known length: ``play_start`` at ``start`` (position 0),
    a ``heartbeat`` every :data:`HEARTBEAT_EVERY_S` seconds of playing (position = time
    played), and ``play_end`` at ``start + played_ms`` with ``reason`` and the final
    position. The play's playing time is therefore exactly ``played_ms / 1000`` s.

    ``actor`` holds ``user_id`` and/or ``anonymous_id``; ``content`` and ``context`` go
    on ``play_start`` only (the processor takes them from the play's first event).
    """
    if played_ms < 0:
        raise InvalidRow("ms_played", f"must be >= 0, got {played_ms}")
    playback_id = f"{ident_.fmt}:{ident_.key}"
    base: dict[str, Any] = {**actor, "playback_id": playback_id}
    first: dict[str, Any] = {
        "event_type": "play_start",
        "event_id": ident_.event_id("start"),
        "occurred_at": iso(start),
        **base,
        "content": dict(content),
        "position_s": 0.0,
    }
    if context:
        first["context"] = dict(context)
    if start_properties:
        first["properties"] = dict(start_properties)
    out = [first]
    step_ms = HEARTBEAT_EVERY_S * 1000
    for k, at_ms in enumerate(range(step_ms, played_ms, step_ms), start=1):
        out.append(
            {
                "event_type": "heartbeat",
                "event_id": ident_.event_id(f"hb{k}"),
                "occurred_at": iso(start + timedelta(milliseconds=at_ms)),
                **base,
                "position_s": at_ms / 1000,
            }
        )
    last: dict[str, Any] = {
        "event_type": "play_end",
        "event_id": ident_.event_id("end"),
        "occurred_at": iso(start + timedelta(milliseconds=played_ms)),
        **base,
        "position_s": played_ms / 1000,
        "reason": reason,
    }
    if end_properties:
        last["properties"] = dict(end_properties)
    out.append(last)
    return out


def view_event(
    ident_: RowIdentity,
    *,
    actor: Mapping[str, str],
    content: Mapping[str, Any],
    at: datetime,
    context: Mapping[str, Any] | None = None,
    properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A lone ``play_start`` at ``at`` for a play of unknown length (a YouTube view, a
    Last.fm scrobble). It has no position and no playing time: the processor counts the
    play, and counts no time for it."""
    out: dict[str, Any] = {
        "event_type": "play_start",
        "event_id": ident_.event_id("view"),
        "occurred_at": iso(at),
        **actor,
        "playback_id": f"{ident_.fmt}:{ident_.key}",
        "content": dict(content),
    }
    if context:
        out["context"] = dict(context)
    if properties:
        out["properties"] = dict(properties)
    return out


def clean_content(content: Mapping[str, Any]) -> dict[str, Any]:
    """``content`` without null values."""
    return {k: v for k, v in content.items() if v is not None}
