"""Pieces shared by the shape mappers: the per-event error, times, ids and text.

A *shape* is the JSON an existing pipeline already sends (an audiobook app's
``START_PLAYBACK``, a Spotify tracker's ``track_change``, a marketplace front end's
``trackUserInteraction``). Its mapper is a pure function: one payload (a decoded JSON
value) and the receive time in, the event model's JSON objects out (docs/events.md), or
:class:`ShapeError` saying which field of the payload cannot be mapped and why.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from playpulse.errors import EventValidationError

#: Quarantine reason (and rejected-events metric label) of a payload that cannot be mapped.
UNMAPPABLE = "unmappable_event"
#: Longest identifier of the event model; longer source ids are hashed.
MAX_ID_CHARS = 256
#: Longest display text of the event model (title, creator); longer text is cut.
MAX_TEXT_CHARS = 512
#: Epoch numbers at or above this are milliseconds (1e11 s is the year 5138).
_MS_FROM = 1e11


class ShapeError(EventValidationError):
    """One payload of a shape cannot be mapped to the event model.

    ``loc`` names the payload's field (``metadata.device_type``), ``msg`` what is wrong;
    ``errors`` is ``[{"loc": "<shape>.<loc>", "msg": msg}]`` and ``reason``
    :data:`UNMAPPABLE`, as the collector answers and quarantines it.
    """

    def __init__(self, shape: str, loc: str, msg: str) -> None:
        where = f"{shape}.{loc}" if loc else shape
        super().__init__(f"{where}: {msg}", [{"loc": where, "msg": msg}], UNMAPPABLE)
        self.loc = loc
        self.msg = msg


def as_object(shape: str, payload: Any) -> Mapping[str, Any]:
    """``payload`` when it is a JSON object; :class:`ShapeError` otherwise."""
    if not isinstance(payload, Mapping):
        raise ShapeError(shape, "", f"expected a JSON object, got {_kind(payload)}")
    return payload


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def identifier(shape: str, loc: str, value: Any, *, required: bool = True) -> str | None:
    """An id field (string, or an integer as its decimal digits): stripped, hashed to
    ``sha256:<hex>`` when longer than :data:`MAX_ID_CHARS`. ``None`` when absent and not
    ``required``; :class:`ShapeError` when required and absent, blank or another type."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ShapeError(shape, loc, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ShapeError(shape, loc, f"expected a string id, got {_kind(value)}")
    out = str(value).strip()
    if len(out) > MAX_ID_CHARS:
        out = "sha256:" + hashlib.sha256(out.encode()).hexdigest()
    return out


def text(shape: str, loc: str, value: Any) -> str | None:
    """Display text (title, artist): ``None`` when absent or blank, cut to
    :data:`MAX_TEXT_CHARS`; :class:`ShapeError` for a value that is not a string."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ShapeError(shape, loc, f"expected a string, got {_kind(value)}")
    return value.strip()[:MAX_TEXT_CHARS] or None


def number(
    shape: str, loc: str, value: Any, *, required: bool = False, minimum: float = 0.0
) -> float | None:
    """A finite number (or a numeric string) at least ``minimum``; ``None`` when absent
    and not ``required``; :class:`ShapeError` otherwise."""
    if value is None:
        if required:
            raise ShapeError(shape, loc, "is required")
        return None
    if isinstance(value, bool):
        raise ShapeError(shape, loc, f"expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ShapeError(shape, loc, f"expected a number, got {value!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ShapeError(shape, loc, f"expected a finite number, got {value!r}")
    if value < minimum:
        raise ShapeError(shape, loc, f"must be >= {minimum:g}, got {value!r}")
    return float(value)


def integer(shape: str, loc: str, value: Any, *, minimum: int = 0) -> int | None:
    """A whole number (``3``, ``3.0``, ``"3"``) at least ``minimum``, or ``None`` when
    absent; :class:`ShapeError` otherwise."""
    found = number(shape, loc, value, minimum=minimum)
    if found is None:
        return None
    if not found.is_integer():
        raise ShapeError(shape, loc, f"expected a whole number, got {value!r}")
    return int(found)


def timestamp(shape: str, loc: str, value: Any, *, required: bool = True) -> datetime | None:
    """A time as UTC: an ISO 8601 string with a zone (``2026-11-01T12:00:00Z``), or
    Unix epoch seconds as a number or numeric string (numbers of 1e11 and more are read as
    milliseconds). Naive ISO times are refused (their zone is unknown). ``None`` when
    absent and not ``required``; :class:`ShapeError` otherwise."""
    if value is None:
        if required:
            raise ShapeError(shape, loc, "is required")
        return None
    if isinstance(value, str):
        stripped = value.strip()
        try:
            epoch: float | None = float(stripped)
        except ValueError:
            epoch = None
        if epoch is None:
            try:
                parsed = datetime.fromisoformat(stripped)
            except ValueError:
                raise ShapeError(
                    shape, loc, f"{value!r} is neither ISO 8601 nor Unix seconds"
                ) from None
            if parsed.tzinfo is None:
                raise ShapeError(
                    shape, loc, f"{value!r} has no time zone (add Z or an offset such as +02:00)"
                )
            return parsed.astimezone(UTC)
        value = epoch
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ShapeError(shape, loc, f"expected an ISO 8601 time or Unix seconds, got {value!r}")
    seconds = value / 1000 if abs(value) >= _MS_FROM else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ShapeError(shape, loc, f"{value!r} is not a valid Unix time") from None


def iso(moment: datetime) -> str:
    """``moment`` (UTC-aware) as ISO 8601 with a ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def stable_id(shape: str, *parts: Any) -> str:
    """A deterministic event id: ``<shape>-`` + 32 hex digits of SHA-256 over the
    canonical JSON of ``parts``; the same payload sent twice gets the same id (the
    processor then counts it once)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return f"{shape}-{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


def random_id(shape: str) -> str:
    """A fresh event id for a payload that names no time and no id of its own."""
    return f"{shape}-{uuid.uuid4().hex}"


#: Device type spellings of other pipelines, lower-cased, mapped to the model's values.
DEVICE_TYPES: dict[str, str] = {
    **{v: v for v in ("mobile", "tablet", "desktop", "tv", "speaker", "car", "console")},
    **{v: v for v in ("wearable", "web", "other", "unknown")},
    "phone": "mobile",
    "smartphone": "mobile",
    "iphone": "mobile",
    "android": "mobile",
    "ios": "mobile",
    "ipad": "tablet",
    "computer": "desktop",
    "laptop": "desktop",
    "pc": "desktop",
    "mac": "desktop",
    "smart_tv": "tv",
    "smarttv": "tv",
    "browser": "web",
    "watch": "wearable",
    "smart_speaker": "speaker",
    "automobile": "car",
}
#: Network type spellings of other pipelines, lower-cased, mapped to the model's values.
NETWORK_TYPES: dict[str, str] = {
    **{v: v for v in ("wifi", "cellular", "ethernet", "offline", "other", "unknown")},
    "wi-fi": "wifi",
    "wlan": "wifi",
    "mobile": "cellular",
    "cell": "cellular",
    "2g": "cellular",
    "3g": "cellular",
    "4g": "cellular",
    "5g": "cellular",
    "lte": "cellular",
    "wired": "ethernet",
    "lan": "ethernet",
    "none": "offline",
}


def vocabulary(shape: str, loc: str, value: Any, known: Mapping[str, str]) -> str | None:
    """``value`` (a string) mapped through ``known`` case-insensitively (``-`` and ``_``
    and spaces alike); ``"other"`` for a spelling not in it; ``None`` when absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ShapeError(shape, loc, f"expected a string, got {_kind(value)}")
    key = value.strip().lower().replace(" ", "_")
    if not key:
        return None
    return known.get(key) or known.get(key.replace("_", "-")) or "other"
