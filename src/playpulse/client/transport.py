"""Wire helpers of the client: request bodies, backoff, ``Retry-After`` and answers.

Pure functions, no I/O, so that each rule is tested on its own.
"""

from __future__ import annotations

import gzip
import json
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()

#: Bytes that ``sent_at`` adds to one event: ``,"sent_at":"2026-01-01T00:00:00.000000Z"``.
SENT_AT_OVERHEAD = len(b',"sent_at":""') + len(b"2026-01-01T00:00:00.000000Z")

#: Statuses worth sending the same request again for (after a wait).
RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


def sent_at_suffix(sent_at: datetime) -> bytes:
    """The bytes that close an event object with ``sent_at`` (UTC-aware) in it.

    ``payload[:-1] + sent_at_suffix(t)`` turns the JSON object ``payload`` (without a
    ``sent_at`` key) into the same object with ``"sent_at": t``.
    """
    return b',"sent_at":' + _encoder.encode(sent_at.astimezone(UTC)) + b"}"


def build_body(payloads: Sequence[bytes], sent_at: datetime, *, compress: bool) -> bytes:
    """The request body for ``payloads`` (JSON objects, each without ``sent_at``).

    Returns a JSON array of the objects, each with ``sent_at`` added, gzip-compressed
    when ``compress`` is true.
    """
    suffix = sent_at_suffix(sent_at)
    body = b"[" + b",".join(p[:-1] + suffix for p in payloads) + b"]"
    if compress:
        # mtime=0: the same batch gives the same bytes; level 5 trades a little size
        # for speed on the client's background thread.
        return gzip.compress(body, compresslevel=5, mtime=0)
    return body


def backoff_delay(
    retry: int, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first retry).

    Exponential with "equal jitter": the cap ``min(max_s, base_s * 2 ** (retry - 1))``
    is split into a fixed half and a random half, so the wait is between half the cap
    and the cap, and clients that failed together do not retry together.
    """
    if retry < 1:
        raise ValueError(f"retry is {retry}; it counts from 1")
    cap = min(max_s, math.ldexp(base_s, min(retry - 1, 62)))
    jitter = rng.uniform(0, cap / 2) if rng is not None else random.uniform(0, cap / 2)
    return cap / 2 + jitter


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or ``None`` if unusable.

    Accepts delta-seconds (``"2"``, also ``"0.5"``) and an HTTP date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``, measured from ``now``, a UTC-aware time that
    defaults to the current time). Negative waits become 0.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def parse_rejections(body: bytes, batch_size: int) -> list[dict[str, Any]]:
    """The ``rejected`` entries of a 200 answer to a request of ``batch_size`` events.

    Keeps only well-formed entries (a dict with an int ``index`` inside the batch),
    one per index. An unreadable body yields ``[]`` (the 200 says the batch was taken).
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    raw = data.get("rejected") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        return []
    seen: set[int] = set()
    out: list[dict[str, Any]] = []
    for entry in raw:
        if not isinstance(entry, dict):
            continue
        index = entry.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            continue
        if 0 <= index < batch_size and index not in seen:
            seen.add(index)
            out.append(entry)
    return out
