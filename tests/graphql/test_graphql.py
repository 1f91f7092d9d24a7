"""``/graphql`` (#16 item 4) on a real collector app served by uvicorn on 127.0.0.1: the
``trackUserInteraction`` mutation ingested through the collector (write key, mapping,
quarantine, dedup) and ``getVendorAnalytics`` answered from the catalog after
processing (read key, days, weeks, top products)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.graphql import mount_graphql
from playpulse.quarantine.store import QuarantineStore
from playpulse.service import ensure_processed
from playpulse.testing import serve_app

WRITE, READ = "gql-write-key", "gql-read-key"
# Two days, a Sunday and the Monday after it (two ISO weeks), close enough to now for the
# processor's lateness rules.
MONDAY = (datetime.now(UTC) - timedelta(days=2)).date()
while MONDAY.weekday() != 0:
    MONDAY -= timedelta(days=1)
SUNDAY = MONDAY - timedelta(days=1)

TRACK = """
mutation Track($eventType: InteractionType!, $vendorId: ID, $customerId: ID,
               $productId: ID, $orderId: ID, $metadata: JSON) {
  trackUserInteraction(eventType: $eventType, vendorId: $vendorId, customerId: $customerId,
                       productId: $productId, orderId: $orderId, metadata: $metadata) {
    success eventId errors { loc msg }
  }
}"""
ANALYTICS = """
query Analytics($vendorId: ID!, $start: Date!, $end: Date!, $period: Period!) {
  getVendorAnalytics(vendorId: $vendorId, startDate: $start, endDate: $end, period: $period) {
    vendorId period
    summary { views favorites cartAdds orders completedOrders viewToCart
              revenue { currency revenueMinor pricedOrders } }
    dailyMetrics { date views cartAdds orders completedOrders
                   revenue { currency revenueMinor } }
    topProducts { productId views cartAdds completedOrders revenue { currency revenueMinor } }
  }
}"""


@contextlib.contextmanager
def served(settings: Settings) -> Iterator[str]:
    app = create_app(settings)
    mount_graphql(app, settings)
    with serve_app(app) as url:
        yield f"{url}/graphql"


def gql(url: str, query: str, key: str | None, **variables: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.post(
        url, json={"query": query, "variables": variables}, headers=headers, timeout=30
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def track(url: str, kind: str, day: date, hour: int, **fields: Any) -> dict[str, Any]:
    stamp = datetime(day.year, day.month, day.day, hour, tzinfo=UTC).isoformat()
    metadata = {"timestamp": stamp, **fields.pop("metadata", {})}
    body = gql(url, TRACK, WRITE, eventType=kind, customerId="c-1", metadata=metadata, **fields)
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["trackUserInteraction"]
    return result


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", write_keys=[WRITE], read_keys=[READ])


def test_interactions_tracked_over_graphql_answer_the_vendor_analytics(
    settings: Settings,
) -> None:
    shop = {"vendorId": "shop-7"}
    with served(settings) as url:
        refused = gql(url, TRACK, None, eventType="ProductView", productId="p", customerId="c")
        assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        views = [
            track(url, "ProductView", SUNDAY, 10, productId="p-1", **shop),
            track(url, "ProductView", SUNDAY, 11, productId="p-2", **shop),
            track(url, "ProductView", MONDAY, 9, productId="p-1", **shop),
        ]
        assert all(v["success"] and v["eventId"] for v in views)
        again = track(url, "ProductView", MONDAY, 9, productId="p-1", **shop)
        assert again["eventId"] == views[2]["eventId"]  # the same interaction, counted once
        track(url, "CartAdd", MONDAY, 10, productId="p-1", metadata={"quantity": 2}, **shop)
        track(url, "OrderCreated", MONDAY, 11, orderId="o-1", **shop)
        paid = {"amount": 59.5, "currency": "EUR"}
        track(
            url, "OrderCompleted", MONDAY, 12, orderId="o-1", productId="p-1", metadata=paid, **shop
        )
        track(url, "ProductView", MONDAY, 12, productId="p-9", vendorId="other-shop")
        bad = track(url, "CartAdd", MONDAY, 13, **shop)  # no productId
        assert bad == {
            "success": False,
            "eventId": None,
            "errors": [{"loc": "marketplace.productId", "msg": "is required"}],
        }
        invalid = gql(url, TRACK, WRITE, eventType="Refund", customerId="c")
        assert "errors" in invalid  # not an InteractionType: refused by GraphQL itself

        ensure_processed(settings)
        days = {"vendorId": "shop-7", "start": str(SUNDAY), "end": str(MONDAY)}
        denied = gql(url, ANALYTICS, None, period="DAY", **days)
        assert denied["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        daily = gql(url, ANALYTICS, READ, period="DAY", **days)["data"]["getVendorAnalytics"]
        weekly = gql(url, ANALYTICS, READ, period="WEEK", **days)["data"]["getVendorAnalytics"]

    summary = daily["summary"]
    assert (summary["views"], summary["cartAdds"], summary["orders"]) == (3, 1, 1)
    assert summary["completedOrders"] == 1
    assert summary["viewToCart"] == pytest.approx(1 / 3)
    assert summary["revenue"] == [{"currency": "EUR", "revenueMinor": 5950, "pricedOrders": 1}]
    assert [(d["date"], d["views"], d["cartAdds"]) for d in daily["dailyMetrics"]] == [
        (str(SUNDAY), 2, 0),
        (str(MONDAY), 1, 1),
    ]
    assert daily["dailyMetrics"][1]["revenue"] == [{"currency": "EUR", "revenueMinor": 5950}]
    # Sunday closes one ISO week and Monday opens the next.
    assert [(w["date"], w["views"]) for w in weekly["dailyMetrics"]] == [
        (str(SUNDAY - timedelta(days=6)), 2),
        (str(MONDAY), 1),
    ]
    top = daily["topProducts"]
    assert [p["productId"] for p in top] == ["p-1", "p-2"]  # completed orders, then views
    assert (top[0]["views"], top[0]["cartAdds"], top[0]["completedOrders"]) == (2, 1, 1)
    store = QuarantineStore(settings.quarantine_path)
    try:
        [entry] = store.list(limit=10)
    finally:
        store.close()
    assert entry.reason == "unmappable_event"
    assert b'"eventType":"CartAdd"' in entry.raw


def test_the_analytics_refuse_bad_input(settings: Settings) -> None:
    with served(settings) as url:
        backwards = gql(
            url, ANALYTICS, READ, vendorId="v", start="2026-02-02", end="2026-02-01", period="DAY"
        )
    assert backwards["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "before startDate" in backwards["errors"][0]["message"]
