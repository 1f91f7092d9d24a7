"""``track`` and the helpers: local checks, and the wire format the collector reads."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest

from playpulse.client import Client
from playpulse.events import EVENT_TYPES, validate_event
from playpulse.events.model import Content, Context, LineItem

MakeClient = Callable[..., Client]
BOOK = {"content_id": "book-1", "content_type": "audiobook", "duration_s": 36000.0}


def test_naive_occurred_at_is_rejected(make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(ValueError, match="naive"):
        client.track("pause", user_id="u", playback_id="p", occurred_at=datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="naive"):
        client.pause(user_id="u", playback_id="p", occurred_at=datetime.now())  # noqa: DTZ005
    assert client.stats.queued == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: c.track("nope", user_id="u"), "unknown event_type 'nope'"),
        (lambda c: c.track("pause", playback_id="p"), "user_id or anonymous_id"),
        (lambda c: c.track("pause", user_id="", playback_id="p"), "user_id must be"),
        (lambda c: c.track("pause", user_id="u" * 257, playback_id="p"), "user_id must be"),
        (lambda c: c.track("pause", user_id=7, playback_id="p"), "user_id must be"),
        (lambda c: c.track("pause", user_id="u"), "playback_id or content"),
        (lambda c: c.track("pause", user_id="u", playback_id="p", positon_s=1), "positon_s"),
        (lambda c: c.track("pause", user_id="u", playback_id="p", sent_at=1), "sent_at"),
        (lambda c: c.track("play_start", user_id="u", playback_id="p"), "needs content"),
        (lambda c: c.track("order_created", user_id="u"), "needs order_id"),
        (lambda c: c.track("pause", user_id="u", playback_id="p", occurred_at="now"), "datetime"),
        (
            lambda c: c.track("pause", user_id="u", playback_id="p", properties={"o": object()}),
            "JSON-encodable",
        ),
        (
            lambda c: c.track("pause", user_id="u", playback_id="p", properties={"x": "y" * 9000}),
            "properties is",
        ),
        (
            lambda c: c.track("error", user_id="u", playback_id="p", error_message="y" * 40_000),
            "the limit is 32768",
        ),
    ],
)
def test_programmer_errors_raise_value_error_in_the_caller(
    make_client: MakeClient, call: Callable[[Client], Any], match: str
) -> None:
    client = make_client()
    with pytest.raises(ValueError, match=match):
        call(client)
    assert client.stats == type(client.stats)()


def test_track_returns_a_uuid4_or_the_given_event_id(make_client: MakeClient, stub: Any) -> None:
    client = make_client()
    generated = client.heartbeat(anonymous_id="a", playback_id="p", position_s=1.5)
    assert uuid.UUID(generated).version == 4
    assert client.heartbeat(anonymous_id="a", playback_id="p", event_id="mine") == "mine"
    assert client.flush(5)
    assert [e["event_id"] for e in stub.events] == [generated, "mine"]


def test_envelope_on_the_wire(make_client: MakeClient, stub: Any) -> None:
    client = make_client()
    plus2 = timezone(timedelta(hours=2))
    occurred = datetime(2026, 3, 1, 14, 0, tzinfo=plus2)
    before = datetime.now(UTC)
    client.track(
        "seek",
        user_id="u1",
        session_id="s1",
        context={"device_type": "mobile", "country": "DE"},
        properties={"source": "test", "n": [1, 2]},
        occurred_at=occurred,
        playback_id="p1",
        from_position_s=10.0,
        position_s=70.5,
        content=None,  # None values are left out
    )
    assert client.flush(5)
    (event,) = stub.events
    sent_at = datetime.fromisoformat(event.pop("sent_at"))
    assert before <= sent_at <= datetime.now(UTC)
    assert event == {
        "event_type": "seek",
        "event_id": event["event_id"],
        "occurred_at": "2026-03-01T12:00:00Z",
        "user_id": "u1",
        "session_id": "s1",
        "context": {"device_type": "mobile", "country": "DE"},
        "properties": {"source": "test", "n": [1, 2]},
        "playback_id": "p1",
        "from_position_s": 10.0,
        "position_s": 70.5,
    }


def test_default_occurred_at_is_now_in_utc(make_client: MakeClient, stub: Any) -> None:
    client = make_client()
    before = datetime.now(UTC)
    client.resume(user_id="u", playback_id="p")
    after = datetime.now(UTC)
    assert client.flush(5)
    occurred = datetime.fromisoformat(stub.events[0]["occurred_at"])
    assert occurred.utcoffset() == timedelta(0)
    assert before <= occurred <= after


def test_track_snapshots_its_arguments(make_client: MakeClient, stub: Any) -> None:
    client = make_client()
    props: dict[str, Any] = {"a": 1}
    client.track("pause", user_id="u", playback_id="p", properties=props)
    props["a"] = 2
    client.track(
        "pause", user_id="u", playback_id="p", properties=MappingProxyType({"frozen": True})
    )
    assert client.flush(5)
    assert [e["properties"] for e in stub.events] == [{"a": 1}, {"frozen": True}]


def _every_helper(client: Client) -> list[str]:
    """Call each helper once (structs and dicts mixed); return the event types sent."""
    who: dict[str, Any] = {"user_id": "u1", "session_id": "s1"}
    pb: dict[str, Any] = {"playback_id": "pb1", **who}
    client.play_start(content=BOOK, position_s=0.0, playback_rate=1.0, **pb)
    client.heartbeat(position_s=30.0, **pb)
    client.pause(position_s=31.0, **pb)
    client.resume(position_s=31.0, **pb)
    client.seek(from_position_s=31.0, position_s=120.0, **pb)
    client.chapter_change(content=Content(content_id="book-1", chapter=2), position_s=1800, **pb)
    client.bookmark(position_s=1900.5, **pb)
    client.speed_change(playback_rate=1.5, position_s=2000, **pb)
    client.buffer_start(position_s=2100, **pb)
    client.buffer_end(position_s=2100, **pb)
    client.visibility_change(foreground=False, context={"device_type": "mobile"}, **pb)
    client.visibility_change(foreground=True, context=Context(os="iOS"), **pb)
    client.visibility_change(foreground=True, **pb)
    client.error(error_code="E42", error_message="decoder failed", position_s=2200, **pb)
    client.play_end(reason="completed", position_s=36000, **pb)
    client.product_view(
        product_id="prod-1", vendor_id="v1", amount_minor=999, currency="EUR", **who
    )
    client.vendor_view(vendor_id="v1", anonymous_id="anon")
    client.product_favorite(product_id="prod-1", **who)
    client.cart_add(product_id="prod-1", quantity=2, amount_minor=1998, currency="EUR", **who)
    items = [{"product_id": "prod-1", "quantity": 2}, LineItem(product_id="prod-2")]
    client.order_created(order_id="o1", amount_minor=2997, currency="EUR", items=items, **who)
    client.order_completed(order_id="o1", amount_minor=2997, currency="EUR", **who)
    return [
        "play_start", "heartbeat", "pause", "resume", "seek", "chapter_change", "bookmark",
        "speed_change", "buffer_start", "buffer_end", "visibility_change",
        "visibility_change", "visibility_change", "error", "play_end", "product_view",
        "vendor_view", "product_favorite", "cart_add", "order_created", "order_completed",
    ]  # fmt: skip


def test_every_helper_sends_an_event_the_collector_codec_accepts(
    make_client: MakeClient, stub: Any
) -> None:
    client = make_client()
    expected = _every_helper(client)
    assert set(expected) == set(EVENT_TYPES)
    assert client.flush(5)
    events = stub.events
    assert [e["event_type"] for e in events] == expected
    now = datetime.now(UTC)
    for event in events:
        accepted = validate_event(json.dumps(event), now)  # raises if the collector would
        assert accepted.event.sent_at is not None
    foreground = [e["context"] for e in events if e["event_type"] == "visibility_change"]
    assert foreground == [
        {"device_type": "mobile", "foreground": False},
        {"os": "iOS", "foreground": True},
        {"foreground": True},
    ]
    assert events[0]["content"] == BOOK
    assert events[19]["items"] == [
        {"product_id": "prod-1", "quantity": 2},
        {"product_id": "prod-2"},
    ]


def test_the_write_key_never_shows(
    make_client: MakeClient, stub: Any, errors: Any, caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk_live_very_secret_key"
    stub.reply(stub.Reply(500), stub.Reply(401))
    with caplog.at_level(logging.DEBUG):
        client = make_client(write_key=key)
        client.pause(user_id="u", playback_id="p")
        assert client.flush(5) is False
        text = repr(client) + str(client.stats) + repr(client.options)
    assert "<redacted>" in repr(client)
    assert key not in text
    assert key not in caplog.text
    assert caplog.records  # the retry and the 401 were logged
    assert errors.reasons() == ["unauthorized"]
    assert key not in str(errors.items[0]) + repr(errors.items[0])
    assert stub.requests[0].headers["authorization"] == f"Bearer {key}"
