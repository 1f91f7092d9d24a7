"""Property tests for :func:`validate_event` and :func:`decode_stored`.

- Whatever arrives, ``validate_event`` either accepts it or raises
  :class:`EventValidationError` with usable errors; nothing else escapes.
- Every event built from the documented model is accepted, is stored faithfully and in
  UTC, and reads back (``decode_stored``) as the same event.
- Validating a stored payload again changes nothing but the collector-set times.

Inputs that once crashed the codec are tested at the bottom; the
strategies above keep clear of those specific inputs (see the comments there).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playpulse.errors import EventValidationError
from playpulse.events import (
    COMMERCE_EVENT_TYPES,
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    PLAYBACK_EVENT_TYPES,
    Accepted,
    decode_stored,
    encode_event,
    validate_event,
)
from playpulse.events.codec import validate_batch, validate_records
from playpulse.events.model import (
    MAX_ID_CHARS,
    ContentType,
    DeviceType,
    NetworkType,
    iana_zones,
)

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
TIME_FIELDS = ("occurred_at", "sent_at", "received_at", "derived_at")

# --- strategies: arbitrary input -------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: json.dumps writes them as (invalid) tokens
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)

offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def utc_instants(low: datetime, high: datetime) -> st.SearchStrategy[datetime]:
    """UTC-aware instants in [low, high] (both UTC-aware)."""
    return st.datetimes(
        min_value=low.replace(tzinfo=None),
        max_value=high.replace(tzinfo=None),
        timezones=st.just(UTC),
    )


@st.composite
def rfc3339(draw: st.DrawFn, low: datetime, high: datetime) -> str:
    """An instant in [low, high] written with an arbitrary UTC offset (or ``Z``)."""
    instant = draw(utc_instants(low, high))
    text = instant.astimezone(draw(offsets)).isoformat()
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text[: -len("+00:00")] + "Z"
    return text


# Timestamps for the fuzzer: before 2000, far in the future, naive, or nonsense. Kept
# within 1900..2200; instants near year 1 / 9999 have their own tests at the bottom.
fuzz_timestamps = (
    rfc3339(datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))
    | utc_instants(datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)).map(
        lambda d: d.replace(tzinfo=None).isoformat()
    )
    | st.text(max_size=30)
)

# --- strategies: valid events ----------------------------------------------------------

small_ids = st.text(min_size=1, max_size=24)
event_ids = st.text(min_size=1, max_size=MAX_ID_CHARS)
short_text = st.text(max_size=64)
seconds = st.floats(min_value=0, max_value=1e9) | st.integers(min_value=0, max_value=10**9)
rates = st.floats(min_value=0, max_value=16, exclude_min=True) | st.integers(1, 16)
countries = st.from_regex(r"[A-Z]{2}", fullmatch=True)
currencies = st.from_regex(r"[A-Z]{3}", fullmatch=True)
zones = st.sampled_from(sorted(iana_zones()))

# Three levels of JSON (st.recursive is several times slower to draw from).
property_keys = st.text(max_size=10)
property_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
properties = st.dictionaries(
    property_keys,
    property_leaves
    | st.lists(property_leaves, max_size=4)
    | st.dictionaries(
        property_keys, property_leaves | st.lists(property_leaves, max_size=3), max_size=3
    ),
    max_size=5,
)


def context(foreground_required: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {
        "device_type": st.sampled_from(get_args(DeviceType)),
        "platform": short_text,
        "os": short_text,
        "app_version": short_text,
        "network_type": st.sampled_from(get_args(NetworkType)),
        "country": countries,
        "timezone": zones,
    }
    required: dict[str, st.SearchStrategy[Any]] = {}
    if foreground_required:
        required["foreground"] = st.booleans()
    else:
        optional["foreground"] = st.booleans()
    return st.fixed_dictionaries(required, optional=optional)


contents = st.fixed_dictionaries(
    {"content_id": small_ids},
    optional={
        "content_type": st.sampled_from(get_args(ContentType)),
        "title": short_text,
        "creator": short_text,
        "duration_s": st.floats(min_value=0, max_value=1e9, exclude_min=True),
        "chapter": st.integers(min_value=0, max_value=100_000),
        "chapter_title": short_text,
    },
)

line_items = st.fixed_dictionaries(
    {"product_id": small_ids},
    optional={
        "vendor_id": small_ids,
        "quantity": st.integers(min_value=1, max_value=1_000_000),
        "amount_minor": st.integers(min_value=0, max_value=10**15),
    },
)

#: Fields that are required for one event type (beyond what the base classes need).
TYPE_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "play_start": {"content": contents},
    "seek": {"from_position_s": seconds, "position_s": seconds},
    "play_end": {"reason": st.sampled_from(["completed", "stopped", "next", "error"])},
    "chapter_change": {"content": contents},
    "bookmark": {"position_s": seconds},
    "speed_change": {"playback_rate": rates},
    "visibility_change": {"context": context(foreground_required=True)},
    "error": {},
    "product_view": {"product_id": small_ids},
    "vendor_view": {"vendor_id": small_ids},
    "product_favorite": {"product_id": small_ids},
    "cart_add": {"product_id": small_ids},
    "order_created": {
        "order_id": small_ids,
        "amount_minor": st.integers(min_value=0, max_value=10**15),
        "currency": currencies,
    },
    "order_completed": {
        "order_id": small_ids,
        "amount_minor": st.integers(min_value=0, max_value=10**15),
        "currency": currencies,
    },
}

PLAYBACK_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "playback_id": small_ids,
    "content": contents,
    "position_s": seconds,
    "playback_rate": rates,
}
COMMERCE_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "vendor_id": small_ids,
    "product_id": small_ids,
    "order_id": small_ids,
    "quantity": st.integers(min_value=1, max_value=1_000_000),
    "items": st.lists(line_items, max_size=4),
}
ERROR_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "error_code": st.text(max_size=128),
    "error_message": st.text(max_size=200),
}


@st.composite
def valid_events(
    draw: st.DrawFn, event_types: st.SearchStrategy[str] = st.sampled_from(EVENT_TYPES)
) -> tuple[dict[str, Any], datetime]:
    """A valid event (of one of ``event_types``) as a dict, and when the collector gets it."""
    received_at = draw(
        utc_instants(datetime(2000, 1, 2, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    )
    event_type = draw(event_types)
    raw: dict[str, Any] = {
        "event_type": event_type,
        "event_id": draw(event_ids),
        "occurred_at": draw(rfc3339(EARLIEST, received_at + timedelta(hours=24))),
    }
    actor = draw(st.sampled_from(["user_id", "anonymous_id", "both"]))
    if actor in ("user_id", "both"):
        raw["user_id"] = draw(small_ids)
    if actor in ("anonymous_id", "both"):
        raw["anonymous_id"] = draw(small_ids)

    optional: dict[str, st.SearchStrategy[Any]] = {
        # sent_at has the same bounds as occurred_at (2000-01-01 .. received_at + 24 h).
        "sent_at": rfc3339(EARLIEST, received_at + timedelta(hours=24)),
        "session_id": small_ids,
        "context": context(),
        "properties": properties,
    }
    if event_type in PLAYBACK_EVENT_TYPES:
        optional |= PLAYBACK_OPTIONAL
    else:
        optional |= COMMERCE_OPTIONAL
        if draw(st.booleans()):
            optional["amount_minor"] = st.integers(min_value=0, max_value=10**15)
            raw["currency"] = draw(currencies)
    if event_type == "error":
        optional |= ERROR_OPTIONAL
    required = TYPE_FIELDS.get(event_type, {})
    for name in required:
        optional.pop(name, None)
    raw |= draw(st.fixed_dictionaries(required, optional=optional))

    if event_type in PLAYBACK_EVENT_TYPES and "playback_id" not in raw and "content" not in raw:
        raw["playback_id"] = draw(small_ids)
    # Optional top-level fields may also be sent as explicit nulls.
    for name in draw(st.sets(st.sampled_from(["session_id", "context", "properties"]))):
        if name not in raw and not (name == "context" and event_type == "visibility_change"):
            raw[name] = None
    return raw, received_at


def encode(raw: dict[str, Any], ascii_only: bool) -> bytes:
    return json.dumps(raw, ensure_ascii=ascii_only).encode()


def parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None
    return parsed


def expected_stored(raw: dict[str, Any]) -> dict[str, Any]:
    """What the normalized payload holds for the non-time fields of ``raw``."""
    expected = {k: v for k, v in raw.items() if v is not None and k not in TIME_FIELDS}
    if raw["event_type"] == "cart_add" and expected.get("quantity") == 1:
        del expected["quantity"]  # the default is left out
    if "items" in expected:
        expected["items"] = [
            {k: v for k, v in item.items() if not (k == "quantity" and v == 1)}
            for item in expected["items"]
        ]
    return expected


def assert_rejection_is_well_formed(exc: EventValidationError) -> None:
    assert str(exc)
    assert isinstance(exc.errors, list)
    assert exc.errors
    for error in exc.errors:
        assert set(error) == {"loc", "msg"}
        assert isinstance(error["loc"], str)
        assert error["loc"]
        assert isinstance(error["msg"], str)
        assert error["msg"]


def check_accepts_or_rejects_cleanly(
    data: bytes | str, received_at: datetime = RECEIVED
) -> Accepted | None:
    try:
        accepted = validate_event(data, received_at)
    except EventValidationError as exc:
        assert_rejection_is_well_formed(exc)
        return None
    # An input that was accepted must be a consistent, storable event.
    assert decode_stored(accepted.payload) == accepted.event
    assert encode_event(accepted.event) == accepted.payload
    return accepted


# --- (a) nothing but EventValidationError escapes --------------------------------------


@PROPERTY_SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_accepted_or_rejected_cleanly(data: bytes) -> None:
    check_accepts_or_rejects_cleanly(data)


@PROPERTY_SETTINGS
@given(st.text(max_size=2048))
def test_arbitrary_text_is_accepted_or_rejected_cleanly(text: str) -> None:
    check_accepts_or_rejects_cleanly(text)


@PROPERTY_SETTINGS
@given(json_values, st.booleans())
def test_arbitrary_json_values_are_accepted_or_rejected_cleanly(
    value: Any, ascii_only: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    check_accepts_or_rejects_cleanly(text)
    check_accepts_or_rejects_cleanly(text.encode())


ENVELOPE_FIELDS = ["event_type", "event_id", "occurred_at", "received_at", "derived_at"]
EVENT_FIELDS = sorted(
    {*ENVELOPE_FIELDS, "user_id", "anonymous_id", "sent_at", "session_id", "context"}
    | {"properties", "reason", "from_position_s", "amount_minor", "currency", "unknown_field"}
    | {*PLAYBACK_OPTIONAL, *COMMERCE_OPTIONAL, *ERROR_OPTIONAL}
)
fuzz_values = json_values | fuzz_timestamps | contents | context() | st.sampled_from(EVENT_TYPES)


@PROPERTY_SETTINGS
@given(
    valid_events(),
    st.lists(st.sampled_from(EVENT_FIELDS), max_size=4),
    st.dictionaries(st.sampled_from(EVENT_FIELDS), fuzz_values, max_size=4),
)
def test_damaged_valid_events_are_accepted_or_rejected_cleanly(
    built: tuple[dict[str, Any], datetime], dropped: list[str], replaced: dict[str, Any]
) -> None:
    """A valid event with fields removed or set to arbitrary values reaches deep checks."""
    raw, received_at = built
    for name in dropped:
        raw.pop(name, None)
    raw |= replaced
    data = json.dumps(raw)
    if len(data) > MAX_EVENT_BYTES:
        return
    check_accepts_or_rejects_cleanly(data, received_at)


@st.composite
def request_events(draw: st.DrawFn) -> bytes:
    """One event of a request body: valid, damaged, oversize or not JSON at all."""
    kind = draw(st.sampled_from(["valid", "valid", "damaged", "bytes", "large"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    raw, _ = draw(valid_events())
    if kind == "damaged":
        for name in draw(st.lists(st.sampled_from(EVENT_FIELDS), max_size=3)):
            raw.pop(name, None)
        raw |= draw(st.dictionaries(st.sampled_from(EVENT_FIELDS), fuzz_values, max_size=3))
    elif kind == "large":
        raw["properties"] = {"pad": "x" * MAX_EVENT_BYTES}
    return json.dumps(raw).encode()


@PROPERTY_SETTINGS
@given(
    st.lists(request_events(), max_size=12),
    utc_instants(datetime(2000, 1, 2, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)),
    st.booleans(),
)
def test_validate_records_accepts_and_rejects_exactly_what_validate_event_does(
    raws: list[bytes], received_at: datetime, as_raw_views: bool
) -> None:
    """The collector's fast path gives the same records, errors and reasons."""
    # The collector passes msgspec.Raw views into the body; importers pass bytes.
    views = (
        msgspec.json.decode(b"[" + b",".join(raws) + b"]", type=list[msgspec.Raw])
        if (as_raw_views and all(_is_json(r) for r in raws))
        else raws
    )

    records, rejected = validate_records(views, received_at)

    expected = validate_batch(raws, received_at)
    assert records == [
        (o.event.actor_id, o.payload) for o in expected if not isinstance(o, EventValidationError)
    ]
    assert [(i, e.errors, e.reason) for i, e in rejected] == [
        (i, o.errors, o.reason)
        for i, o in enumerate(expected)
        if isinstance(o, EventValidationError)
    ]


def _is_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    return True


# --- (b) valid events are accepted and stored faithfully -------------------------------


def test_every_event_type_has_a_valid_event_strategy() -> None:
    assert set(TYPE_FIELDS) | set(PLAYBACK_EVENT_TYPES) == set(EVENT_TYPES)
    assert set(TYPE_FIELDS) >= set(COMMERCE_EVENT_TYPES)


# Parametrized so every type is covered for sure: drawing the type inside the strategy
# leaves some types out of a 200-example run.
@pytest.mark.parametrize("event_type", EVENT_TYPES)
@settings(PROPERTY_SETTINGS, max_examples=15)
@given(data=st.data(), ascii_only=st.booleans())
def test_valid_events_are_accepted_and_round_trip(
    event_type: str, data: st.DataObject, ascii_only: bool
) -> None:
    raw, received_at = data.draw(valid_events(st.just(event_type)))
    body = encode(raw, ascii_only)
    assert len(body) <= MAX_EVENT_BYTES  # the strategy stays below the size limit

    accepted = validate_event(body, received_at)

    event = accepted.event
    assert event.event_type == raw["event_type"]
    assert event.is_playback == (raw["event_type"] in PLAYBACK_EVENT_TYPES)
    assert decode_stored(accepted.payload) == event
    assert encode_event(event) == accepted.payload

    stored = json.loads(accepted.payload)
    assert None not in stored.values()
    for name, value in expected_stored(raw).items():
        assert stored[name] == value, name
    assert set(stored) - set(TIME_FIELDS) == set(expected_stored(raw))

    occurred = parse_time(raw["occurred_at"])
    assert event.occurred_at == occurred
    assert event.received_at == received_at
    if raw.get("sent_at") is not None:
        sent = parse_time(raw["sent_at"])
        assert event.sent_at == sent
        # Snowplow's derived timestamp, never later than the receipt.
        assert event.derived_at == min(received_at, received_at - (sent - occurred))
    else:
        assert event.sent_at is None
        assert event.derived_at == occurred


@PROPERTY_SETTINGS
@given(valid_events(), st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)))
def test_validating_a_stored_payload_again_changes_only_collector_times(
    built: tuple[dict[str, Any], datetime], later: timedelta
) -> None:
    raw, received_at = built
    first = validate_event(json.dumps(raw), received_at)

    # Same receive time: the payload is a fixed point, byte for byte.
    assert validate_event(first.payload, received_at).payload == first.payload

    # Received again later (a replay): only received_at and derived_at move, together.
    again = validate_event(first.payload, received_at + later)
    assert again.event.received_at == received_at + later
    assert first.event.derived_at is not None
    if first.event.sent_at is not None:
        skew = first.event.sent_at - first.event.occurred_at
        expected = min(received_at + later, received_at + later - skew)
        assert again.event.derived_at == expected
    else:
        assert again.event.derived_at == first.event.occurred_at
    restored = msgspec.structs.replace(
        again.event, received_at=first.event.received_at, derived_at=first.event.derived_at
    )
    assert restored == first.event
    assert encode_event(restored) == first.payload


# --- (c) stored times are UTC ----------------------------------------------------------


@PROPERTY_SETTINGS
@given(valid_events())
def test_stored_times_are_utc_with_z(built: tuple[dict[str, Any], datetime]) -> None:
    raw, received_at = built
    accepted = validate_event(json.dumps(raw), received_at)
    stored = json.loads(accepted.payload)

    assert stored["occurred_at"].endswith("Z")
    assert parse_time(stored["occurred_at"]) == parse_time(raw["occurred_at"])
    for name in TIME_FIELDS:
        if name in stored:
            assert stored[name].endswith("Z"), name
        value = getattr(accepted.event, name)
        if value is not None:
            assert value.utcoffset() == timedelta(0), name
    assert {"received_at", "derived_at"} <= set(stored)


# --- inputs that once escaped as something other than EventValidationError ------------

BASE = {
    "event_type": "heartbeat",
    "event_id": "evt-1",
    "occurred_at": "2026-03-01T11:00:00Z",
    "anonymous_id": "anon-1",
    "playback_id": "p1",
}


def assert_accepted_or_rejected(data: bytes | str) -> None:
    try:
        validate_event(data, RECEIVED)
    except EventValidationError as exc:
        assert_rejection_is_well_formed(exc)


def test_text_with_a_lone_surrogate_is_rejected_cleanly() -> None:
    assert_accepted_or_rejected(json.dumps(BASE, ensure_ascii=False)[:-1] + ', "x": "\ud800"}')


def test_invalid_utf8_inside_a_string_is_rejected_cleanly() -> None:
    data = json.dumps(BASE).encode().replace(b'"evt-1"', b'"caf\xe9"')  # Latin-1 bytes
    assert_accepted_or_rejected(data)


def test_deeply_nested_properties_are_rejected_cleanly() -> None:
    depth = 3000  # 6 KB: within MAX_PROPERTIES_BYTES and MAX_EVENT_BYTES
    data = json.dumps(BASE)[:-1] + ', "properties": {"x": ' + "[" * depth + "]" * depth + "}}"
    assert len(data) < MAX_EVENT_BYTES
    assert_accepted_or_rejected(data)


@pytest.mark.parametrize("occurred_at", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"])
def test_occurred_at_at_the_edge_of_datetime_range_is_rejected_cleanly(occurred_at: str) -> None:
    assert_accepted_or_rejected(json.dumps(BASE | {"occurred_at": occurred_at}))


def test_sent_at_far_in_the_future_is_rejected_cleanly() -> None:
    assert_accepted_or_rejected(json.dumps(BASE | {"sent_at": "9999-01-01T00:00:00Z"}))
