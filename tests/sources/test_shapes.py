"""Event shapes of existing pipelines (#16 item 4), end to end: the documented example
payloads of each shape POSTed to a real collector over HTTP on 127.0.0.1
(``/v1/events?schema=NAME``), processed, and the catalog's answers asserted; payloads
that cannot be mapped answered per payload and quarantined with their raw JSON; Kinesis
and Firehose delivery records unwrapped; ``import --schema`` through
:func:`playpulse.sources.importers.shaped.import_shaped`.

The examples are those of docs/event-shapes.md, at times an hour or two before now (the
processor's lateness rules apply to them as to any event).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.quarantine.store import QuarantineStore
from playpulse.query.catalog import QueryParams, run_query
from playpulse.service import ensure_processed
from playpulse.sources.importers.shaped import import_shaped
from playpulse.sources.shapes import ShapeError, map_payload
from playpulse.testing import serve_app

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=2)
KEY = "shape-test-write-key"


@contextlib.contextmanager
def collector(settings: Settings) -> Iterator[str]:
    """A collector app of ``settings`` on uvicorn at 127.0.0.1 (a free port) until the
    block ends."""
    with serve_app(create_app(settings)) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", write_keys=[KEY])


def post(url: str, schema: str, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {KEY}", **kwargs.pop("headers", {})}
    return httpx.post(
        f"{url}/v1/events",
        params={"schema": schema},
        content=content,
        headers=headers,
        timeout=30,
        **kwargs,
    )


def query(settings: Settings, name: str, **params: Any) -> list[dict[str, Any]]:
    window = QueryParams(start=NOW - timedelta(days=2), end=NOW + timedelta(days=1), **params)
    return list(run_query(name, window, settings).to_pylist())


def quarantined(settings: Settings) -> list[Any]:
    store = QuarantineStore(settings.quarantine_path)
    try:
        return list(store.list(limit=100))
    finally:
        store.close()


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


# -- audiobook ---------------------------------------------------------------------------

META = {"device_type": "phone", "app_version": "4.2.0", "network_type": "wifi"}


def audiobook(n: int, kind: str, seconds: float, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"ab-{n}",
        "user_id": "reader-1",
        "book_id": "book-42",
        "event_type": kind,
        "timestamp": at(seconds),
        "metadata": META,
        **fields,
    }


AUDIOBOOK_LISTEN = [
    audiobook(1, "START_PLAYBACK", 0, position=0, chapter=1),
    audiobook(2, "CHAPTER_CHANGE", 600, position=600, chapter=2),
    audiobook(3, "PAUSE", 900, position=900, chapter=2),
    audiobook(4, "RESUME", 1000, position=900, chapter=2),
    audiobook(5, "SPEED_CHANGE", 1100, position=1000, chapter=2, speed=1.5),
    audiobook(6, "BOOKMARK", 1200, position=1150, chapter=2),
    audiobook(7, "END_PLAYBACK", 1500, position=1600, chapter=2),
]


def test_audiobook_listen_counts_its_playing_time_chapters_and_rejects_what_cannot_map(
    settings: Settings,
) -> None:
    bad_kind = audiobook(8, "REWIND", 1600, position=10)
    no_position = {**audiobook(9, "BOOKMARK", 1600), "position": None}
    with collector(settings) as url:
        answer = post(url, "audiobook", [*AUDIOBOOK_LISTEN, bad_kind, no_position])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == 7
    assert body["events"] == 7
    assert [(r["index"], r["event_id"]) for r in body["rejected"]] == [(7, "ab-8"), (8, "ab-9")]
    assert body["rejected"][0]["errors"][0]["loc"] == "audiobook.event_type"
    assert "REWIND" in body["rejected"][0]["errors"][0]["msg"]
    assert body["rejected"][1]["errors"] == [
        {"loc": "audiobook.position", "msg": "BOOKMARK needs the position (seconds)"}
    ]
    entries = quarantined(settings)
    assert sorted(e.event_id for e in entries) == ["ab-8", "ab-9"]
    assert {e.reason for e in entries} == {"unmappable_event"}
    kept = {e.event_id: json.loads(e.raw) for e in entries}
    assert kept["ab-8"] == bad_kind  # the payload as sent
    ensure_processed(settings)
    [top] = query(settings, "top_content")
    # Playing from 0 to the pause at 900 s, and from the resume at 1000 s to the end at 1500 s.
    assert (top["content_id"], top["content_type"], top["plays"]) == ("book-42", "audiobook", 1)
    assert top["listening_s"] == pytest.approx(900 + 500)
    chapters = {r["chapter"]: r for r in query(settings, "chapters")}
    assert chapters[1]["listening_s"] == pytest.approx(600)
    assert chapters[2]["listening_s"] == pytest.approx(300 + 500)
    [device] = query(settings, "devices")
    assert device["device_type"] == "mobile"


# -- Spotify tracker -------------------------------------------------------------------


def track(name: str, status: str, listened: float, ended_s: float) -> dict[str, Any]:
    return {
        "event_type": "track_change",
        "track_name": name,
        "status": status,
        "duration_listened": listened,
        "timestamp": int((T0 + timedelta(seconds=ended_s)).timestamp()),
        "user_id": "listener-7",
        "artist": "The Band",
    }


def test_spotify_tracker_payloads_are_plays_with_their_time_and_skips(settings: Settings) -> None:
    plays = [
        track("Opening", "COMPLETED", 200, 200),
        track("Too Long Intro", "SKIPPED", 12, 212),
        track("Epic", "COMPLETED", 2400, 2612),  # 40 minutes: heartbeats keep it counted
    ]
    with collector(settings) as url:
        first = post(url, "spotify-tracker", plays)
        again = post(url, "spotify-tracker", plays[0])  # sent twice: counted once
        wrong = post(url, "spotify-tracker", {**plays[1], "status": "PAUSED"})
    assert first.json() == {"accepted": 3, "events": 2 + 2 + 5, "rejected": []}
    assert again.json()["accepted"] == 1
    [error] = wrong.json()["rejected"]
    assert error["errors"][0]["loc"] == "spotify-tracker.status"
    ensure_processed(settings)
    rows = {r["title"]: r for r in query(settings, "top_content")}
    assert {t: (r["plays"], r["listening_s"]) for t, r in rows.items()} == {
        "Opening": (1, pytest.approx(200)),
        "Too Long Intro": (1, pytest.approx(12)),
        "Epic": (1, pytest.approx(2400)),
    }
    assert rows["Epic"]["creator"] == "The Band"
    [overview] = query(settings, "overview")
    assert overview["plays"] == 3
    assert overview["listening_s"] == pytest.approx(2612)
    # The 30-second rule and the tracker's own SKIPPED agree here: one skip of three.
    assert overview["skip_rate"] == pytest.approx(1 / 3)
    assert overview["source_skip_rate"] == pytest.approx(1 / 3)
    assert overview["source_skip_rate_plays"] == 3


def test_delivery_records_unwrap_to_their_payloads(settings: Settings) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    a, b, c = (track(n, "COMPLETED", 60, 60 * (i + 1)) for i, n in enumerate("ABC"))
    firehose = {
        "requestId": "ed4acda5-034f-9f42-bba1-f29aea6d7d8f",
        "timestamp": int(NOW.timestamp() * 1000),
        # Firehose concatenates records: two payloads in one record, NDJSON.
        "records": [{"data": b64(f"{json.dumps(a)}\n{json.dumps(b)}".encode())}],
    }
    lambda_event = {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "listener-7",
                    "sequenceNumber": "4959",
                    "data": b64(gzip.compress(json.dumps(c).encode())),
                    "approximateArrivalTimestamp": NOW.timestamp(),
                },
                "eventSource": "aws:kinesis",
                "eventID": "shardId-000000000000:4959",
            },
            {"kinesis": {"data": "not base64!"}, "eventSource": "aws:kinesis"},
        ]
    }
    with collector(settings) as url:
        one = post(url, "spotify-tracker", firehose)
        two = post(url, "spotify-tracker", lambda_event)
        empty = post(url, "spotify-tracker", {**firehose, "records": []})
    assert one.json() == {"accepted": 2, "events": 4, "rejected": []}
    assert empty.json() == {"accepted": 0, "events": 0, "rejected": []}
    assert two.json()["accepted"] == 1
    [bad] = two.json()["rejected"]
    assert bad["index"] == 1
    assert bad["errors"] == [{"loc": "spotify-tracker.records[1].data", "msg": "is not base64"}]
    ensure_processed(settings)
    assert {r["title"] for r in query(settings, "top_content")} == {"A", "B", "C"}


# -- marketplace -----------------------------------------------------------------------


def interaction(kind: str, seconds: float, **fields: Any) -> dict[str, Any]:
    metadata = {"timestamp": at(seconds), **fields.pop("metadata", {})}
    return {
        "eventType": kind,
        "vendorId": "shop-1",
        "customerId": "c-9",
        **fields,
        "metadata": metadata,
    }


def test_marketplace_interactions_make_the_vendor_funnel(settings: Settings) -> None:
    payloads = [
        interaction("VendorView", 0),
        interaction("ProductView", 10, productId="p-1"),
        interaction("ProductView", 20, productId="p-2"),
        interaction("ProductFavorite", 30, productId="p-1"),
        interaction("CartAdd", 40, productId="p-1", metadata={"quantity": 2}),
        interaction("OrderCreated", 50, orderId="o-1"),
        interaction(
            "OrderCompleted",
            60,
            orderId="o-1",
            productId="p-1",
            metadata={"amount": "39.98", "currency": "EUR", "coupon": "WINTER"},
        ),
        interaction("CartAdd", 70),  # no productId
        interaction("OrderCompleted", 80, orderId="o-2", metadata={"amount": 5}),  # no currency
    ]
    with collector(settings) as url:
        answer = post(url, "marketplace", payloads)
    body = answer.json()
    assert body["accepted"] == 7
    assert [(r["index"], r["errors"][0]["loc"]) for r in body["rejected"]] == [
        (7, "marketplace.productId"),
        (8, "marketplace.metadata.currency"),
    ]
    ensure_processed(settings)
    [funnel] = query(settings, "funnel")
    assert funnel["vendor_id"] == "shop-1"
    assert (funnel["views"], funnel["favorites"], funnel["cart_adds"]) == (2, 1, 1)
    assert (funnel["orders"], funnel["completed_orders"]) == (1, 1)
    assert (funnel["revenue_minor"], funnel["currency"]) == (3998, "EUR")
    top = {r["product_id"]: r for r in query(settings, "top_products")}
    assert top["p-1"]["views"] == 1
    assert top["p-1"]["cart_adds"] == 1


def test_an_unknown_schema_is_refused_and_nothing_is_stored(settings: Settings) -> None:
    with collector(settings) as url:
        answer = post(url, "kafka-connect", [{"a": 1}])
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "unknown_schema"
    assert "audiobook, spotify-tracker, marketplace" in answer.json()["error"]["message"]
    assert quarantined(settings) == []


def test_a_write_key_is_needed_as_for_any_event(settings: Settings) -> None:
    with collector(settings) as url:
        answer = httpx.post(
            f"{url}/v1/events?schema=audiobook", json=AUDIOBOOK_LISTEN[:1], timeout=30
        )
    assert answer.status_code == 401


# -- mappers on their own -------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({**AUDIOBOOK_LISTEN[0], "timestamp": "2026-11-01T12:00:00"}, "timestamp"),
        ({**AUDIOBOOK_LISTEN[0], "book_id": ""}, "book_id"),
        ({**AUDIOBOOK_LISTEN[4], "speed": 0}, "speed"),
        ({**AUDIOBOOK_LISTEN[1], "chapter": None}, "chapter"),
        ({**AUDIOBOOK_LISTEN[0], "metadata": "phone"}, "metadata"),
        ({**AUDIOBOOK_LISTEN[6], "reason": "finished"}, "reason"),
        ([AUDIOBOOK_LISTEN[0]], ""),
    ],
)
def test_audiobook_errors_name_the_field(payload: Any, loc: str) -> None:
    with pytest.raises(ShapeError) as caught:
        map_payload("audiobook", payload, NOW)
    assert caught.value.loc == loc
    assert caught.value.errors[0]["loc"] == f"audiobook.{loc}" if loc else "audiobook"


def test_timestamps_in_epoch_seconds_and_milliseconds_agree() -> None:
    seconds = map_payload("audiobook", {**AUDIOBOOK_LISTEN[0], "timestamp": 1793534400}, NOW)
    millis = map_payload("audiobook", {**AUDIOBOOK_LISTEN[0], "timestamp": 1793534400000}, NOW)
    assert seconds[0]["occurred_at"] == millis[0]["occurred_at"] == "2026-11-01T12:00:00Z"


def test_marketplace_without_a_time_is_received_now_with_a_fresh_id() -> None:
    payload = {"eventType": "ProductView", "productId": "p", "customerId": "c"}
    one, two = (map_payload("marketplace", payload, NOW)[0] for _ in range(2))
    assert one["occurred_at"] == NOW.isoformat().replace("+00:00", "Z")
    assert one["event_id"] != two["event_id"]
    yen = map_payload(
        "marketplace",
        {
            **payload,
            "eventType": "OrderCompleted",
            "orderId": "o",
            "metadata": {"price": 1200, "currency": "JPY"},
        },
        NOW,
    )[0]
    assert (yen["amount_minor"], yen["currency"]) == (1200, "JPY")


# -- import --schema -------------------------------------------------------------------


def test_import_schema_backfills_a_file_of_payloads(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "audiobook-events.ndjson"
    bad = audiobook(9, "CHAPTER_CHANGE", 1600)  # no chapter
    path.write_text("\n".join(json.dumps(p) for p in [*AUDIOBOOK_LISTEN, bad]) + "\n")
    result = import_shaped([path], settings, "audiobook", timezone="Europe/Berlin")
    assert (result.rows_read, result.rows_rejected, result.events_appended) == (8, 1, 7)
    assert result.rows_without_timezone == 0
    assert "Europe/Berlin (--tz)" in result.summary()
    assert result.rejected[0].index == 7
    assert result.rejected[0].quarantine_id is not None
    [top] = query(settings, "top_content")
    assert top["listening_s"] == pytest.approx(1400)
    again = import_shaped([path], settings, "audiobook", timezone="Europe/Berlin")
    assert again.events_known == 7  # the same payloads: nothing new
    assert len(quarantined(settings)) == 1  # the same bad payload is kept once


def test_a_payload_with_one_invalid_event_is_rejected_whole(settings: Settings) -> None:
    # Listening ends 10 s after 2000-01-01: its play_start would be in 1999, which the
    # event model refuses; its valid play_end must not be stored alone.
    early = {**track("Y2K", "COMPLETED", 20, 0), "timestamp": "2000-01-01T00:00:10Z"}
    with collector(settings) as url:
        answer = post(url, "spotify-tracker", [early, track("Fine", "COMPLETED", 60, 60)])
    body = answer.json()
    assert (body["accepted"], body["events"]) == (1, 2)
    [rejected] = body["rejected"]
    assert rejected["index"] == 0
    assert rejected["errors"][0]["loc"] == "play_start.occurred_at"
    [entry] = quarantined(settings)
    assert entry.reason == "occurred_at_out_of_range"
    assert json.loads(entry.raw) == early
    ensure_processed(settings)
    assert set(titles_of(settings)) == {"Fine"}


def titles_of(settings: Settings) -> list[str]:
    window = QueryParams(start=datetime(1999, 1, 1, tzinfo=UTC), end=NOW + timedelta(days=1))
    return [r["title"] for r in run_query("top_content", window, settings).to_pylist()]


def test_pseudonymised_data_dirs_keep_no_customer_id(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", write_keys=[KEY], pseudonymize_users=True)
    good = interaction("ProductView", 0, productId="p-1", customerId="alice@example.com")
    bad = interaction("CartAdd", 1, customerId="alice@example.com")  # no productId
    with collector(settings) as url:
        body = post(url, "marketplace", [good, bad]).json()
    assert body["accepted"] == 1
    [entry] = quarantined(settings)
    assert b"alice@example.com" not in entry.raw
    assert json.loads(entry.raw)["customerId"].startswith("u_")
    stored = [p.read_bytes() for p in settings.data_dir.glob("stream.db*")]
    assert stored
    assert all(b"alice@example.com" not in data for data in stored)
    assert any(b"product_view" in data for data in stored)  # the event is there
