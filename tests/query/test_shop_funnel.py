"""The shop queries (``funnel``, ``top_products``, ``vendor_daily``) on shops without
vendors, with purchases as orders, and with more than one currency (issue 11, item 8).

Taobao UserBehavior files (a small synthetic one, and the real one under
``shared/data/real`` when present) are imported for real and their funnel is compared
with an independent count of each behaviour in the CSV. The other cases are events fed
through the collector's validation, the stream and the processor (``dataset.build``).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playpulse.config import Settings
from playpulse.query import QueryParams, run_query
from playpulse.query.catalog import CATALOG
from playpulse.sources.importers import import_paths, plan_import
from playpulse.testing import real_data_dir

Ingest = Callable[[Path, Iterable[Any]], Settings]

# All of 2017 (the Taobao data set's window, stray rows included).
YEAR_2017 = {
    "start": datetime(2017, 1, 1, tzinfo=UTC),
    "end": datetime(2018, 1, 1, tzinfo=UTC),
    "limit": 10_000,
}
BEHAVIOURS = {"pv": "views", "fav": "favorites", "cart": "cart_adds", "buy": "orders"}


def rows_of(settings_: Settings, name: str, **params: Any) -> list[dict[str, Any]]:
    """Run catalog query ``name``; check its columns; rows as dicts."""
    table = run_query(name, QueryParams(**params), settings_)
    assert table.column_names == list(CATALOG[name].columns)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def behaviour_counts(path: Path) -> Counter[str]:
    """Each behaviour's number of distinct rows in a Taobao CSV, read with ``csv`` (an
    identical row is one event: the importer's identity is the five fields)."""
    with path.open(newline="") as f:
        rows = {tuple(r) for r in csv.reader(f) if r and r[3] in BEHAVIOURS}
    return Counter(r[3] for r in rows)


def check_taobao_funnel(cfg: Settings, counts: Counter[str], rows: set[tuple[str, ...]]) -> None:
    """``funnel``, ``vendor_daily`` and ``top_products`` of an imported Taobao file agree
    with ``counts`` (behaviour -> rows) and ``rows`` (the distinct CSV rows)."""
    (shop,) = rows_of(cfg, "funnel", **YEAR_2017)
    assert shop["vendor_id"] is None  # no vendor in the log: one shop
    assert {k: shop[v] for k, v in BEHAVIOURS.items()} == {k: counts[k] for k in BEHAVIOURS}
    assert shop["completed_orders"] == counts["buy"]  # a purchase is a completed order
    assert shop["view_to_cart"] == pytest.approx(counts["cart"] / counts["pv"])
    assert shop["cart_to_order"] == pytest.approx(counts["buy"] / counts["cart"])
    assert shop["view_to_order"] == pytest.approx(counts["buy"] / counts["pv"])
    # The log has no prices: revenue is unknown, not 0.
    assert (shop["priced_orders"], shop["revenue_minor"], shop["currency"]) == (0, None, None)
    assert shop["average_order_minor"] is None

    daily = rows_of(cfg, "vendor_daily", **YEAR_2017)
    by_day = Counter(datetime.fromtimestamp(int(r[4]), UTC).date() for r in rows if r[3] == "pv")
    assert {d["date"]: d["views"] for d in daily if d["views"]} == by_day
    for column in ("views", "favorites", "cart_adds", "orders", "completed_orders"):
        assert sum(d[column] for d in daily) == shop[column], column
    assert all(d["vendor_id"] is None and d["currency"] is None for d in daily)

    products = rows_of(cfg, "top_products", **YEAR_2017)
    bought = Counter(f"taobao:{r[1]}" for r in rows if r[3] == "buy")
    assert {p["product_id"]: p["completed_orders"] for p in products if p["completed_orders"]} == (
        bought
    )
    assert sum(p["views"] for p in products) == counts["pv"]
    assert all(p["revenue_minor"] is None for p in products if p["completed_orders"])


# -- a small synthetic Taobao file --------------------------------------------------------

# Two users over two UTC days (1511544070 = 2017-11-24T17:21:10Z); user 1 views item 10
# twice, favours it, adds it to the cart and buys it twice; user 2 views item 20, buys
# it without a cart add, and repeats one row exactly (one event).
TAOBAO = (
    "1,10,100,pv,1511544070\n"
    "1,10,100,pv,1511544075\n"
    "1,10,100,fav,1511544080\n"
    "1,10,100,cart,1511544090\n"
    "1,10,100,buy,1511544100\n"
    "1,10,100,buy,1511630500\n"
    "2,20,200,pv,1511630400\n"
    "2,20,200,pv,1511630400\n"
    "2,20,200,buy,1511630460\n"
)


def test_synthetic_taobao_funnel_counts_each_behaviour(tmp_path: Path) -> None:
    path = tmp_path / "UserBehavior.csv"
    path.write_text(TAOBAO, encoding="utf-8")
    cfg = Settings(data_dir=tmp_path / "data")
    import_paths([path], cfg, progress=False)
    counts = behaviour_counts(path)
    assert counts == {"pv": 3, "fav": 1, "cart": 1, "buy": 3}  # the repeated row once
    with path.open(newline="") as f:
        rows = {tuple(r) for r in csv.reader(f) if r}
    check_taobao_funnel(cfg, counts, rows)
    daily = rows_of(cfg, "vendor_daily", **YEAR_2017)
    assert [(d["date"], d["views"], d["orders"]) for d in daily] == [
        (date(2017, 11, 24), 2, 1),
        (date(2017, 11, 25), 1, 2),
    ]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 5),
            st.integers(1, 50),
            st.sampled_from(sorted(BEHAVIOURS)),
            st.integers(1_500_000_000, 1_600_000_000),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_taobao_rows_map_to_the_funnel_steps(
    tmp_path: Path, rows: list[tuple[int, int, str, int]]
) -> None:
    # The parser's side of the funnel: each behaviour maps to its step's event type, one
    # event per distinct row, purchases as order_completed with an order id of their own.
    path = tmp_path / "ub.csv"
    path.write_text("".join(f"{u},{i},7,{b},{t}\n" for u, i, b, t in rows), encoding="utf-8")
    plan = plan_import([path])
    assert plan.result.rows_rejected == 0
    steps = {
        "pv": "product_view",
        "fav": "product_favorite",
        "cart": "cart_add",
        "buy": "order_completed",
    }
    want = Counter(steps[behaviour] for _, _, behaviour, _ in set(rows))
    assert Counter(e.event.event_type for e in plan.events) == want
    orders = [e.event for e in plan.events if e.event.event_type == "order_completed"]
    assert len({getattr(o, "order_id", None) for o in orders}) == len(orders)


# -- the real Taobao file ------------------------------------------------------------------


def _real_taobao() -> Path | None:
    base = real_data_dir()
    path = None if base is None else base / "taobao-userbehavior-fattydelivery" / "UserBehavior.csv"
    return path if path is not None and path.is_file() else None


REAL_TAOBAO = _real_taobao()


@pytest.mark.skipif(REAL_TAOBAO is None, reason="the real data sets are not available")
def test_real_taobao_funnel_counts_each_behaviour(tmp_path: Path) -> None:
    assert REAL_TAOBAO is not None
    cfg = Settings(data_dir=tmp_path / "data")
    import_paths([REAL_TAOBAO], cfg, progress=False)
    counts = behaviour_counts(REAL_TAOBAO)
    assert counts == {"pv": 3926, "cart": 190, "fav": 128, "buy": 77}  # SOURCE.md
    with REAL_TAOBAO.open(newline="") as f:
        rows = {tuple(r) for r in csv.reader(f) if r}
    check_taobao_funnel(cfg, counts, rows)


# -- events without a vendor, and orders -------------------------------------------------

DAY = {
    "start": datetime(2026, 11, 19, tzinfo=UTC),
    "end": datetime(2026, 11, 20, tzinfo=UTC),
}


def ev(event_id: str, event_type: str, occurred_at: str, user: str, **fields: Any) -> Any:
    """An event as ``dataset.ev`` makes it (received 2 s after it occurred)."""
    event = {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": occurred_at + "Z",
        "user_id": user,
        **fields,
    }
    received = datetime.fromisoformat(occurred_at).replace(tzinfo=UTC) + timedelta(seconds=2)
    return event, received


VENDORLESS = [
    ev("n1", "product_view", "2026-11-19T10:00:00", "a", product_id="p1"),
    ev("n2", "product_view", "2026-11-19T10:01:00", "b", product_id="p1"),
    ev("n3", "product_favorite", "2026-11-19T10:02:00", "a", product_id="p1"),
    ev("n4", "cart_add", "2026-11-19T10:03:00", "a", product_id="p1", quantity=2),
    # o1: created and completed on the 19th, priced in EUR
    ev("n5", "order_created", "2026-11-19T10:04:00", "a", order_id="o1", product_id="p1",
       amount_minor=1000, currency="EUR"),
    ev("n6", "order_completed", "2026-11-19T10:05:00", "a", order_id="o1", product_id="p1",
       amount_minor=1000, currency="EUR"),
    # o2: a purchase only (as imported logs have it): an order and a completed order
    ev("n7", "order_completed", "2026-11-19T11:00:00", "b", order_id="o2", product_id="p1"),
    # o3: placed the 18th, completed the 19th: completed on the 19th, not placed again
    ev("n8", "order_created", "2026-11-18T09:00:00", "b", order_id="o3", product_id="p1"),
    ev("n9", "order_completed", "2026-11-19T09:00:00", "b", order_id="o3", product_id="p1"),
    # a shop with a vendor beside it
    ev("n10", "product_view", "2026-11-19T12:00:00", "c", product_id="p2", vendor_id="v1"),
]  # fmt: skip


def test_events_without_vendor_are_one_shop(tmp_path: Path, ingest_into: Ingest) -> None:
    cfg = ingest_into(tmp_path, VENDORLESS)
    funnel = rows_of(cfg, "funnel", **DAY)
    # (vendor, views, favorites, cart adds, orders, completed, priced, revenue, currency):
    # orders o1 and o2 placed on the 19th; o1, o2, o3 completed on the 19th, only o1 priced.
    assert [
        tuple(r[k] for k in ("vendor_id", "views", "favorites", "cart_adds", "orders"))
        + tuple(r[k] for k in ("completed_orders", "priced_orders", "revenue_minor", "currency"))
        for r in funnel
    ] == [(None, 2, 1, 1, 2, 3, 1, 1000, "EUR"), ("v1", 1, 0, 0, 0, 0, 0, 0, None)]
    assert funnel[0]["view_to_cart"] == 0.5
    assert funnel[0]["cart_to_order"] == 2.0
    assert funnel[0]["average_order_minor"] == 1000.0

    daily = rows_of(cfg, "vendor_daily", start=DAY["start"].replace(day=18), end=DAY["end"])
    assert [(r["vendor_id"], r["date"], r["orders"], r["completed_orders"]) for r in daily] == [
        ("v1", date(2026, 11, 19), 0, 0),
        (None, date(2026, 11, 18), 1, 0),  # o3 placed
        (None, date(2026, 11, 19), 2, 3),
    ]
    (p1,) = [r for r in rows_of(cfg, "top_products", **DAY) if r["product_id"] == "p1"]
    assert (p1["vendor_id"], p1["views"], p1["completed_orders"]) == (None, 2, 3)
    assert (p1["priced_orders"], p1["revenue_minor"], p1["currency"]) == (1, 1000, "EUR")
    # Filtering by a vendor leaves the vendor-less shop out.
    assert [r["vendor_id"] for r in rows_of(cfg, "funnel", vendor_id="v1", **DAY)] == ["v1"]


# -- two currencies ----------------------------------------------------------------------

TWO_CURRENCIES = [
    ev("m1", "product_view", "2026-11-19T10:00:00", "a", product_id="p1", vendor_id="v1"),
    ev("m2", "product_view", "2026-11-19T10:00:00", "b", product_id="p1", vendor_id="v1"),
    ev("m3", "cart_add", "2026-11-19T10:01:00", "a", product_id="p1", vendor_id="v1"),
    ev("m4", "order_completed", "2026-11-19T10:02:00", "a", order_id="e1", product_id="p1",
       vendor_id="v1", amount_minor=1999, currency="EUR"),
    ev("m5", "order_completed", "2026-11-19T10:03:00", "b", order_id="e2", product_id="p1",
       vendor_id="v1", amount_minor=501, currency="EUR"),
    ev("m6", "order_completed", "2026-11-19T10:04:00", "c", order_id="u1", product_id="p1",
       vendor_id="v1", amount_minor=700, currency="USD"),
    ev("m7", "order_completed", "2026-11-19T10:05:00", "d", order_id="j1", product_id="p1",
       vendor_id="v1", amount_minor=30000, currency="JPY"),
]  # fmt: skip


def test_two_currencies_are_never_summed(tmp_path: Path, ingest_into: Ingest) -> None:
    cfg = ingest_into(tmp_path, TWO_CURRENCIES)
    revenue = {"EUR": (2, 2500), "JPY": (1, 30000), "USD": (1, 700)}
    funnel = rows_of(cfg, "funnel", **DAY)
    # One row per currency; the vendor's counts repeat on each; revenue is per currency.
    assert {r["currency"]: (r["priced_orders"], r["revenue_minor"]) for r in funnel} == revenue
    assert len(funnel) == 3
    assert {
        (r["vendor_id"], r["views"], r["cart_adds"], r["completed_orders"]) for r in funnel
    } == {("v1", 2, 1, 4)}
    assert {r["currency"]: r["average_order_minor"] for r in funnel} == {
        "EUR": 1250.0,
        "JPY": 30000.0,
        "USD": 700.0,
    }
    products = rows_of(cfg, "top_products", **DAY)
    assert {r["currency"]: (r["priced_orders"], r["revenue_minor"]) for r in products} == revenue
    daily = rows_of(cfg, "vendor_daily", **DAY)
    assert {r["currency"]: (r["priced_orders"], r["revenue_minor"]) for r in daily} == revenue
    # No figure anywhere is a sum over currencies.
    mixed = {2500 + 700, 2500 + 30000, 700 + 30000, 2500 + 700 + 30000}
    for row in [*funnel, *products, *daily]:
        assert row["revenue_minor"] not in mixed
