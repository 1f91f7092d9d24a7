"""Example tests for the event model and :func:`validate_event`.

Each test states one rule of the wire format (docs of ``playpulse.events.model`` and
``playpulse.events.codec``) and checks it on a concrete event.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playpulse.errors import EventValidationError
from playpulse.events import (
    COMMERCE_EVENT_TYPES,
    EVENT_CLASSES,
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    PLAYBACK_EVENT_TYPES,
    Accepted,
    CommerceEvent,
    PlaybackEvent,
    decode_stored,
    encode_event,
    event_json_schema,
    validate_event,
)
from playpulse.events.codec import validate_records
from playpulse.events.model import MAX_ID_CHARS, MAX_PROPERTIES_BYTES

RECEIVED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
OCCURRED = "2026-03-01T11:59:00Z"

#: The fields each event type needs beyond the envelope: a minimal valid event.
MINIMAL_FIELDS: dict[str, dict[str, Any]] = {
    "play_start": {"content": {"content_id": "c1"}},
    "heartbeat": {"playback_id": "p1"},
    "pause": {"playback_id": "p1"},
    "resume": {"playback_id": "p1"},
    "seek": {"playback_id": "p1", "from_position_s": 10.0, "position_s": 95.5},
    "play_end": {"playback_id": "p1", "reason": "completed"},
    "chapter_change": {"content": {"content_id": "c1", "chapter": 3}},
    "bookmark": {"playback_id": "p1", "position_s": 42.0},
    "speed_change": {"playback_id": "p1", "playback_rate": 1.5},
    "buffer_start": {"playback_id": "p1"},
    "buffer_end": {"playback_id": "p1"},
    "visibility_change": {"playback_id": "p1", "context": {"foreground": False}},
    "error": {"playback_id": "p1"},
    "product_view": {"product_id": "prod-1"},
    "vendor_view": {"vendor_id": "vendor-1"},
    "product_favorite": {"product_id": "prod-1"},
    "cart_add": {"product_id": "prod-1"},
    "order_created": {"order_id": "o1", "amount_minor": 1999, "currency": "EUR"},
    "order_completed": {"order_id": "o1", "amount_minor": 1999, "currency": "EUR"},
}

#: Fields each event type requires (removing one must reject the event).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "play_start": ("content",),
    "seek": ("from_position_s", "position_s"),
    "play_end": ("reason",),
    "chapter_change": ("content",),
    "bookmark": ("position_s",),
    "speed_change": ("playback_rate",),
    "visibility_change": ("context",),
    "product_view": ("product_id",),
    "vendor_view": ("vendor_id",),
    "product_favorite": ("product_id",),
    "cart_add": ("product_id",),
    "order_created": ("order_id",),
    "order_completed": ("order_id",),
}

CLASS_BY_TYPE = {str(c.__struct_config__.tag): c for c in EVENT_CLASSES}


def event(event_type: str, /, **fields: Any) -> dict[str, Any]:
    """A minimal valid event of ``event_type`` as a dict; ``fields`` override or add."""
    raw: dict[str, Any] = {
        "event_type": event_type,
        "event_id": "evt-1",
        "occurred_at": OCCURRED,
        "anonymous_id": "anon-1",
    }
    raw.update(MINIMAL_FIELDS[event_type])
    raw.update(fields)
    return raw


def accept(raw: dict[str, Any] | str | bytes, received_at: datetime = RECEIVED) -> Accepted:
    data = json.dumps(raw) if isinstance(raw, dict) else raw
    return validate_event(data, received_at)


def reject(raw: dict[str, Any] | str | bytes, received_at: datetime = RECEIVED) -> list[dict]:
    data = json.dumps(raw) if isinstance(raw, dict) else raw
    with pytest.raises(EventValidationError) as info:
        validate_event(data, received_at)
    errors = info.value.errors
    assert errors, "a rejection must say why"
    for error in errors:
        assert isinstance(error["loc"], str)
        assert error["loc"]
        assert isinstance(error["msg"], str)
        assert error["msg"]
    return errors


def assert_names(errors: list[dict], field: str) -> None:
    """The rejection points at ``field``, by location or by naming it in the message."""
    assert any(field in e["loc"] or field in e["msg"] for e in errors), errors


def payload_json(accepted: Accepted) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(accepted.payload)
    return loaded


def iso(value: datetime) -> str:
    return value.isoformat()


# --- every event type -------------------------------------------------------------------


def test_minimal_examples_cover_every_event_type() -> None:
    assert set(MINIMAL_FIELDS) == set(EVENT_TYPES)
    assert len(EVENT_TYPES) == 19
    assert set(PLAYBACK_EVENT_TYPES) | set(COMMERCE_EVENT_TYPES) == set(EVENT_TYPES)
    assert not set(PLAYBACK_EVENT_TYPES) & set(COMMERCE_EVENT_TYPES)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_minimal_event_of_every_type_is_accepted(event_type: str) -> None:
    accepted = accept(event(event_type))

    assert type(accepted.event) is CLASS_BY_TYPE[event_type]
    assert accepted.event.event_type == event_type
    assert accepted.event.is_playback == (event_type in PLAYBACK_EVENT_TYPES)
    expected_base = PlaybackEvent if event_type in PLAYBACK_EVENT_TYPES else CommerceEvent
    assert isinstance(accepted.event, expected_base)
    stored = payload_json(accepted)
    assert stored["event_type"] == event_type
    assert stored["event_id"] == "evt-1"
    assert stored["anonymous_id"] == "anon-1"
    for key, value in MINIMAL_FIELDS[event_type].items():
        assert stored[key] == value
    assert None not in stored.values(), "normalized JSON leaves absent fields out"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_str_and_bytes_input_give_the_same_payload(event_type: str) -> None:
    text = json.dumps(event(event_type))
    assert validate_event(text, RECEIVED).payload == validate_event(text.encode(), RECEIVED).payload


# --- required fields --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(t, f) for t, fields in REQUIRED_FIELDS.items() for f in fields],
)
def test_required_field_is_enforced(event_type: str, field: str) -> None:
    raw = event(event_type)
    if event_type in PLAYBACK_EVENT_TYPES:
        raw["playback_id"] = "p1"  # so the missing field is the only problem
    del raw[field]

    assert_names(reject(raw), field)


@pytest.mark.parametrize("reason", ["completed", "stopped", "next", "error"])
def test_play_end_accepts_each_reason(reason: str) -> None:
    assert accept(event("play_end", reason=reason)).event.reason == reason  # type: ignore[attr-defined]


@pytest.mark.parametrize("reason", ["paused", "", "COMPLETED", 1, None])
def test_play_end_rejects_other_reasons(reason: Any) -> None:
    errors = reject(event("play_end", reason=reason))
    assert [e["loc"] for e in errors] == ["reason"]


@pytest.mark.parametrize("rate", [0.0001, 0.5, 1, 16, 16.0])
def test_speed_change_accepts_rates_in_range(rate: float) -> None:
    accepted = accept(event("speed_change", playback_rate=rate))
    assert accepted.event.playback_rate == rate  # type: ignore[attr-defined]


@pytest.mark.parametrize("rate", [0, 0.0, -1.0, 16.000001, 17, "1.5", None])
def test_speed_change_rejects_rates_out_of_range(rate: Any) -> None:
    errors = reject(event("speed_change", playback_rate=rate))
    assert [e["loc"] for e in errors] == ["playback_rate"]


@pytest.mark.parametrize("foreground", [True, False])
def test_visibility_change_accepts_foreground(foreground: bool) -> None:
    accepted = accept(event("visibility_change", context={"foreground": foreground}))
    assert accepted.event.context is not None
    assert accepted.event.context.foreground is foreground


@pytest.mark.parametrize("context", [{}, {"foreground": None}, {"country": "DE"}])
def test_visibility_change_needs_context_foreground(context: dict[str, Any]) -> None:
    assert_names(reject(event("visibility_change", context=context)), "foreground")


def test_visibility_change_rejects_null_context() -> None:
    assert_names(reject(event("visibility_change", context=None)), "context")


def test_chapter_change_content_needs_content_id() -> None:
    errors = reject(event("chapter_change", content={"chapter": 2}))
    assert_names(errors, "content_id")


# --- actor and play identity -----------------------------------------------------------


@pytest.mark.parametrize("event_type", ["heartbeat", "product_view"])
def test_user_id_or_anonymous_id_is_required(event_type: str) -> None:
    raw = event(event_type)
    del raw["anonymous_id"]

    errors = reject(raw)
    assert_names(errors, "user_id")
    assert_names(errors, "anonymous_id")


def test_user_id_alone_is_enough_and_is_the_actor() -> None:
    raw = event("heartbeat", user_id="u-7")
    del raw["anonymous_id"]
    accepted = accept(raw)
    assert accepted.event.user_id == "u-7"
    assert accepted.event.anonymous_id is None
    assert accepted.event.actor_id == "u-7"


def test_actor_prefers_user_id_over_anonymous_id() -> None:
    assert accept(event("pause", user_id="u-7")).event.actor_id == "u-7"
    assert accept(event("pause")).event.actor_id == "anon-1"


@pytest.mark.parametrize("field", ["user_id", "anonymous_id", "event_id", "playback_id"])
def test_empty_identifiers_are_rejected(field: str) -> None:
    assert_names(reject(event("heartbeat", **{field: ""})), field)


def test_identifier_length_limit() -> None:
    accept(event("heartbeat", event_id="x" * MAX_ID_CHARS))
    errors = reject(event("heartbeat", event_id="x" * (MAX_ID_CHARS + 1)))
    assert [e["loc"] for e in errors] == ["event_id"]


PLAY_ID_OPTIONAL = [t for t in PLAYBACK_EVENT_TYPES if t not in ("play_start", "chapter_change")]


@pytest.mark.parametrize("event_type", PLAY_ID_OPTIONAL)
def test_playback_event_needs_playback_id_or_content(event_type: str) -> None:
    raw = event(event_type)
    del raw["playback_id"]
    errors = reject(raw)
    assert_names(errors, "playback_id")

    raw["content"] = {"content_id": "c9"}
    accepted = accept(raw)
    assert accepted.event.playback_id is None  # type: ignore[attr-defined]
    assert accepted.event.content.content_id == "c9"  # type: ignore[attr-defined]


@pytest.mark.parametrize("event_type", COMMERCE_EVENT_TYPES)
def test_commerce_events_do_not_take_playback_fields(event_type: str) -> None:
    assert_names(reject(event(event_type, playback_id="p1")), "playback_id")


# --- event_type and unknown fields -----------------------------------------------------


@pytest.mark.parametrize("bad", ["play", "Play_Start", "PLAY_START", "", "heartbeat "])
def test_unknown_event_type_lists_accepted_types(bad: str) -> None:
    errors = reject(event("heartbeat", event_type=bad))
    assert len(errors) == 1
    assert errors[0]["loc"] == "event_type"
    assert f"'{bad}'" in errors[0]["msg"]
    for event_type in EVENT_TYPES:
        assert event_type in errors[0]["msg"]


def test_missing_event_type_is_reported_at_event_type() -> None:
    raw = event("heartbeat")
    del raw["event_type"]
    errors = reject(raw)
    assert errors[0]["loc"] == "event_type"
    assert "required" in errors[0]["msg"]


@pytest.mark.parametrize("field", ["foo", "eventType", "user", "timestamp"])
def test_unknown_top_level_field_is_rejected(field: str) -> None:
    assert_names(reject(event("heartbeat", **{field: "x"})), field)


def test_unknown_nested_field_is_rejected() -> None:
    assert_names(reject(event("heartbeat", context={"colour": "red"})), "colour")
    assert_names(reject(event("play_start", content={"content_id": "c", "isbn": "1"})), "isbn")


def test_free_form_data_belongs_in_properties() -> None:
    props = {"colour": "red", "nested": {"list": [1, 2.5, None, True, "x"]}}
    accepted = accept(event("heartbeat", properties=props))
    assert accepted.event.properties == props
    assert payload_json(accepted)["properties"] == props


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"[]", b"null", b'"play_start"', b"42"])
def test_non_object_or_malformed_input_is_rejected_at_event(raw: bytes) -> None:
    errors = reject(raw)
    assert errors[0]["loc"] == "event"


# --- times -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["occurred_at", "sent_at"])
def test_naive_timestamp_needs_a_time_zone(field: str) -> None:
    errors = reject(event("heartbeat", **{field: "2026-03-01T11:00:00"}))
    assert errors[0]["loc"] == field
    assert "time zone" in errors[0]["msg"]


def test_occurred_at_with_offset_is_stored_in_utc() -> None:
    accepted = accept(event("heartbeat", occurred_at="2026-03-01T13:30:00+02:00"))

    assert payload_json(accepted)["occurred_at"] == "2026-03-01T11:30:00Z"
    assert accepted.event.occurred_at == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    assert accepted.event.occurred_at.utcoffset() == timedelta(0)


def test_negative_offset_crossing_midnight_is_stored_in_utc() -> None:
    accepted = accept(event("heartbeat", occurred_at="2026-02-28T23:15:30.5-05:00"))
    assert payload_json(accepted)["occurred_at"] == "2026-03-01T04:15:30.500000Z"


@pytest.mark.parametrize(
    "occurred_at",
    ["1999-12-31T23:59:59.999999Z", "2000-01-01T00:30:00+01:00", "1970-01-01T00:00:00Z"],
)
def test_occurred_at_before_2000_is_rejected(occurred_at: str) -> None:
    errors = reject(event("heartbeat", occurred_at=occurred_at))
    assert errors == [{"loc": "occurred_at", "msg": "occurred_at is before 2000-01-01"}]


@pytest.mark.parametrize("occurred_at", ["2000-01-01T00:00:00Z", "2000-01-01T01:00:00+01:00"])
def test_occurred_at_on_2000_01_01_is_accepted(occurred_at: str) -> None:
    accepted = accept(event("heartbeat", occurred_at=occurred_at))
    assert accepted.event.occurred_at == datetime(2000, 1, 1, tzinfo=UTC)


def test_occurred_at_exactly_24h_after_received_at_is_accepted() -> None:
    at = RECEIVED + timedelta(hours=24)
    accepted = accept(event("heartbeat", occurred_at=iso(at)))
    assert accepted.event.occurred_at == at


@pytest.mark.parametrize(
    "later", [timedelta(hours=24, microseconds=1), timedelta(hours=25), timedelta(days=400)]
)
def test_occurred_at_more_than_24h_after_received_at_is_rejected(later: timedelta) -> None:
    errors = reject(event("heartbeat", occurred_at=iso(RECEIVED + later)))
    assert [e["loc"] for e in errors] == ["occurred_at"]
    assert "24 h" in errors[0]["msg"]


def test_future_limit_compares_instants_not_wall_clocks() -> None:
    # 24 h after RECEIVED, written in +05:00: the same instant, so still accepted.
    at = (RECEIVED + timedelta(hours=24)).astimezone(timezone(timedelta(hours=5)))
    accept(event("heartbeat", occurred_at=iso(at)))
    reject(event("heartbeat", occurred_at=iso(at + timedelta(seconds=1))))


def test_received_at_is_set_by_the_server_and_overrides_the_client() -> None:
    raw = event(
        "heartbeat",
        received_at="2020-01-01T00:00:00Z",
        derived_at="2020-01-01T00:00:00Z",
    )
    accepted = accept(raw)

    assert accepted.event.received_at == RECEIVED
    assert accepted.event.derived_at == datetime(2026, 3, 1, 11, 59, tzinfo=UTC)
    stored = payload_json(accepted)
    assert stored["received_at"] == "2026-03-01T12:00:00Z"
    assert stored["derived_at"] == "2026-03-01T11:59:00Z"


def test_received_at_without_client_value_is_added() -> None:
    accepted = accept(event("pause"))
    assert payload_json(accepted)["received_at"] == "2026-03-01T12:00:00Z"


def test_received_at_argument_in_another_zone_is_stored_in_utc() -> None:
    berlin_noon = datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    accepted = accept(event("pause"), received_at=berlin_noon)
    assert payload_json(accepted)["received_at"] == "2026-03-01T12:00:00Z"
    assert accepted.event.received_at is not None
    assert accepted.event.received_at.utcoffset() == timedelta(0)


def test_naive_received_at_argument_raises_value_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_event(json.dumps(event("pause")), datetime(2026, 3, 1, 12, 0))  # noqa: DTZ001


def test_derived_at_corrects_a_skewed_client_clock() -> None:
    # The device clock runs 2 h 0 min 1.25 s behind: it says the event happened at 09:58
    # and the batch left at 10:00:00.25; the collector got it at 12:00:01.5 (true time).
    # The event happened 120.25 s before sending, so at 12:00:01.5 - 120.25 s.
    raw = event(
        "heartbeat",
        occurred_at="2026-03-01T09:58:00Z",
        sent_at="2026-03-01T12:00:00.250000+02:00",
    )
    received = datetime(2026, 3, 1, 12, 0, 1, 500000, tzinfo=UTC)
    accepted = accept(raw, received_at=received)

    assert accepted.event.derived_at == datetime(2026, 3, 1, 11, 58, 1, 250000, tzinfo=UTC)
    assert accepted.event.sent_at == datetime(2026, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)
    stored = payload_json(accepted)
    assert stored["derived_at"] == "2026-03-01T11:58:01.250000Z"
    assert stored["sent_at"] == "2026-03-01T10:00:00.250000Z"
    assert stored["occurred_at"] == "2026-03-01T09:58:00Z"  # the client value is kept


def test_derived_at_for_a_clock_running_ahead() -> None:
    # The client clock runs 3 h ahead; occurred_at is even "in the future" of received_at.
    raw = event("pause", occurred_at="2026-03-01T14:59:30Z", sent_at="2026-03-01T15:00:00Z")
    accepted = accept(raw)
    assert accepted.event.derived_at == RECEIVED - timedelta(seconds=30)


def test_derived_at_is_occurred_at_without_sent_at() -> None:
    accepted = accept(event("pause", occurred_at="2026-03-01T06:00:00-05:00"))
    assert accepted.event.sent_at is None
    assert accepted.event.derived_at == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert payload_json(accepted)["derived_at"] == "2026-03-01T11:00:00Z"
    assert "sent_at" not in payload_json(accepted)


# --- context, money, sizes -------------------------------------------------------------


@pytest.mark.parametrize("tz", ["Europe/Berlin", "UTC", "America/Argentina/Buenos_Aires"])
def test_iana_timezone_is_accepted(tz: str) -> None:
    accepted = accept(event("heartbeat", context={"timezone": tz}))
    assert accepted.event.context is not None
    assert accepted.event.context.timezone == tz


@pytest.mark.parametrize("tz", ["Mars/Olympus", "europe/berlin", "CEST+2", "+02:00", ""])
def test_invalid_iana_timezone_is_rejected(tz: str) -> None:
    errors = reject(event("heartbeat", context={"timezone": tz}))
    assert_names(errors, "timezone")
    assert f"'{tz}'" in errors[0]["msg"]


@pytest.mark.parametrize("country", ["de", "De", "DEU", "D", "D1", "", "ÄÖ"])
def test_country_must_be_two_uppercase_letters(country: str) -> None:
    errors = reject(event("heartbeat", context={"country": country}))
    assert [e["loc"] for e in errors] == ["context.country"]


def test_country_two_uppercase_letters_is_accepted() -> None:
    accepted = accept(event("heartbeat", context={"country": "DE"}))
    assert payload_json(accepted)["context"] == {"country": "DE"}


@pytest.mark.parametrize(
    "currency", ["eur", "EURO", "EU", "E1R", "€", "", "Eur", "EUR\n", "\nEUR", "EUR\r"]
)
def test_currency_must_be_iso_4217_shaped(currency: str) -> None:
    errors = reject(event("order_created", currency=currency))
    assert [e["loc"] for e in errors] == ["currency"]


_SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(event_json_schema())


@settings(max_examples=300, deadline=None)
@given(
    currency=st.one_of(
        st.text(max_size=5),
        st.text(alphabet="ABCXYZ\n\r ", min_size=2, max_size=5),
    )
)
def test_the_model_and_the_published_schema_agree_on_currency(currency: str) -> None:
    # The collector's fast path (validate_records) and validate_event, against the JSON
    # Schema of `playpulse schema`: all accept exactly three letters A-Z, nothing else
    # ("EUR\n" passed the model once: Python's `$` matches before a trailing newline).
    raw = json.dumps(event("order_completed", currency=currency)).encode()
    records, rejected = validate_records([raw], RECEIVED)
    valid_in_schema = _SCHEMA_VALIDATOR.is_valid(json.loads(raw))
    expected = re.fullmatch("[A-Z]{3}", currency) is not None
    assert (len(records) == 1) == expected
    assert valid_in_schema == expected
    if not expected:
        assert [e["loc"] for e in rejected[0][1].errors] == ["currency"]


@pytest.mark.parametrize("currency", ["EUR", "USD", "JPY"])
def test_iso_4217_currency_is_accepted(currency: str) -> None:
    accepted = accept(event("order_completed", currency=currency))
    assert accepted.event.currency == currency  # type: ignore[attr-defined]


@pytest.mark.parametrize("event_type", ["cart_add", "product_view", "vendor_view"])
def test_amount_minor_without_currency_is_rejected(event_type: str) -> None:
    errors = reject(event(event_type, amount_minor=500))
    assert_names(errors, "currency")

    accepted = accept(event(event_type, amount_minor=500, currency="USD"))
    assert accepted.event.amount_minor == 500  # type: ignore[attr-defined]


def test_negative_amount_is_rejected() -> None:
    assert_names(reject(event("order_created", amount_minor=-1)), "amount_minor")


def test_cart_add_quantity_defaults_to_one() -> None:
    accepted = accept(event("cart_add"))
    assert accepted.event.quantity == 1  # type: ignore[attr-defined]
    assert decode_stored(accepted.payload).quantity == 1  # type: ignore[attr-defined]


def test_line_items_are_validated_with_their_location() -> None:
    accepted = accept(event("order_created", items=[{"product_id": "a", "quantity": 2}]))
    assert accepted.event.items[0].quantity == 2  # type: ignore[attr-defined]

    errors = reject(event("order_created", items=[{"product_id": "a"}, {"quantity": 2}]))
    assert errors[0]["loc"].startswith("items[1]")
    assert_names(errors, "product_id")


def _properties_of_size(size: int) -> dict[str, str]:
    overhead = len(b'{"k":""}')
    props = {"k": "x" * (size - overhead)}
    assert len(json.dumps(props, separators=(",", ":")).encode()) == size
    return props


def test_properties_up_to_the_limit_are_accepted() -> None:
    props = _properties_of_size(MAX_PROPERTIES_BYTES)
    assert accept(event("heartbeat", properties=props)).event.properties == props


def test_properties_over_the_limit_are_rejected() -> None:
    errors = reject(event("heartbeat", properties=_properties_of_size(MAX_PROPERTIES_BYTES + 1)))
    assert_names(errors, "properties")
    assert str(MAX_PROPERTIES_BYTES + 1) in errors[0]["msg"]
    assert str(MAX_PROPERTIES_BYTES) in errors[0]["msg"]


def test_properties_size_is_measured_in_utf8_bytes() -> None:
    # 3000 euro signs are 3000 characters but 9000 bytes.
    errors = reject(event("heartbeat", properties={"k": "€" * 3000}))
    assert_names(errors, "properties")


def _padded(size: int) -> bytes:
    body = json.dumps(event("heartbeat")).encode()
    return body + b" " * (size - len(body))


def test_event_of_exactly_max_event_bytes_is_accepted() -> None:
    raw = _padded(MAX_EVENT_BYTES)
    assert len(raw) == MAX_EVENT_BYTES == 32 * 1024
    assert accept(raw).event.event_type == "heartbeat"


def test_event_larger_than_max_event_bytes_is_rejected_with_its_size() -> None:
    errors = reject(_padded(MAX_EVENT_BYTES + 1))
    assert errors == [{"loc": "event", "msg": "event is 32769 bytes; the limit is 32768"}]


def test_event_size_of_text_input_is_counted_in_utf8_bytes() -> None:
    # Fewer characters than the limit, but more bytes once encoded as UTF-8.
    title = "€" * 500
    body = json.dumps(
        event("play_start", content={"content_id": "c", "title": title}), ensure_ascii=False
    )
    text = body + " " * (MAX_EVENT_BYTES - 600 - len(body))
    assert len(text) < MAX_EVENT_BYTES < len(text.encode())

    errors = reject(text)
    assert errors[0]["msg"].startswith(f"event is {len(text.encode())} bytes")


def test_text_field_length_limit() -> None:
    accept(event("play_start", content={"content_id": "c", "title": "t" * 512}))
    errors = reject(event("play_start", content={"content_id": "c", "title": "t" * 513}))
    assert [e["loc"] for e in errors] == ["content.title"]


# --- stored events and schema ----------------------------------------------------------


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_decode_stored_round_trips_an_accepted_event(event_type: str) -> None:
    raw = event(
        event_type,
        sent_at="2026-03-01T13:59:30+02:00",
        user_id="u1",
        session_id="s1",
        properties={"a": [1, {"b": None}]},
    )
    accepted = accept(raw)

    stored = decode_stored(accepted.payload)
    assert stored == accepted.event
    assert type(stored) is type(accepted.event)
    assert encode_event(stored) == accepted.payload
    assert encode_event(accepted.event) == accepted.payload


def test_decode_stored_rejects_what_is_not_an_event() -> None:
    with pytest.raises(EventValidationError) as info:
        decode_stored(b'{"event_type": "heartbeat"}')
    assert info.value.errors[0]["loc"]
    with pytest.raises(EventValidationError):
        decode_stored(b"\x00garbage")


def test_json_schema_is_json_and_maps_every_event_type() -> None:
    schema = event_json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    discriminator = schema["discriminator"]
    assert discriminator["propertyName"] == "event_type"
    mapping = discriminator["mapping"]
    assert set(mapping) == set(EVENT_TYPES)
    for event_type, ref in mapping.items():
        assert ref.startswith("#/$defs/")
        definition = schema["$defs"][ref.removeprefix("#/$defs/")]
        assert definition["properties"]["event_type"] == {"enum": [event_type]}
        assert "event_type" in definition["required"]
    assert len(schema["anyOf"]) == len(EVENT_TYPES)


def test_json_schema_accepts_normalized_events_and_rejects_bad_ones() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = event_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    for event_type in EVENT_TYPES:
        validator.validate(payload_json(accept(event(event_type))))
    assert not validator.is_valid(event("seek", position_s=-1))
    assert not validator.is_valid(event("heartbeat", surprise=True))


@pytest.mark.parametrize("event_type", ["order_created", "order_completed"])
def test_orders_without_an_amount_are_accepted_but_an_amount_needs_a_currency(event_type):
    accepted = validate_event(
        json.dumps(event(event_type, amount_minor=None, currency=None)), RECEIVED
    )
    assert accepted.event.amount_minor is None
    without_currency = json.dumps(event(event_type, currency=None))
    with pytest.raises(EventValidationError, match="currency"):
        validate_event(without_currency, RECEIVED)
