"""Shop steps a source cannot record are unknown (null), not 0 (issue 11, item 4).

DIGINETICA item views record product views only: an import of them answers favorites,
cart adds, orders, the rates built on them and revenue as null in ``funnel``,
``vendor_daily`` and ``top_products`` (docs/metrics.md, "What a shop source can tell"),
while a live shop that had no cart adds still answers 0. A small synthetic file and the
real one under ``shared/data/real`` (skipped when absent) are imported for real; live
events go through the collector's validation, the stream and the processor
(``dataset.ingest``). The CLI's JSON, CSV and table of the real import are checked here;
the synthetic file's are in tests/cli/test_shop_formats_unknown.py.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playpulse.config import Settings
from playpulse.query import QueryParams, run_query
from playpulse.query.catalog import CATALOG
from playpulse.sources.importers import import_paths, plan_import
from playpulse.testing import real_data_dir, run_cli

Ingest = Callable[[Path, Iterable[Any]], Settings]

# The steps a views-only source cannot tell, per query.
FUNNEL_UNKNOWN = (
    "favorites",
    "cart_adds",
    "orders",
    "completed_orders",
    "view_to_cart",
    "cart_to_order",
    "view_to_order",
    "priced_orders",
    "revenue_minor",
    "currency",
    "average_order_minor",
)
DAILY_UNKNOWN = (
    "favorites",
    "cart_adds",
    "orders",
    "completed_orders",
    "priced_orders",
    "revenue_minor",
    "currency",
)
PRODUCT_UNKNOWN = (
    "favorites",
    "cart_adds",
    "completed_orders",
    "priced_orders",
    "revenue_minor",
    "currency",
)

# Views of 2016-05-09 and 2016-05-10 (eventdate + timeframe ms, UTC); the last row
# repeats the one before exactly (one event). Products: 81766 x3, 31331 x1, 9654 x1.
DIGINETICA = (
    "sessionId;userId;itemId;timeframe;eventdate\n"
    "1;NA;81766;526309;2016-05-09\n"
    "1;NA;31331;1031018;2016-05-09\n"
    "2;7;81766;243569;2016-05-09\n"
    "3;7;9654;557559;2016-05-10\n"
    "3;7;81766;600000;2016-05-10\n"
    "3;7;81766;600000;2016-05-10\n"
)
MAY_2016 = {
    "start": datetime(2016, 5, 1, tzinfo=UTC),
    "end": datetime(2016, 6, 1, tzinfo=UTC),
    "limit": 100,
}


def rows_of(cfg: Settings, name: str, **params: Any) -> list[dict[str, Any]]:
    """Run catalog query ``name``; check its columns; rows as dicts."""
    table = run_query(name, QueryParams(**params), cfg)
    assert table.column_names == list(CATALOG[name].columns)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def import_views(data_dir: Path, text: str = DIGINETICA) -> Settings:
    """``text`` as a DIGINETICA file imported into ``data_dir``."""
    path = data_dir.parent / f"{data_dir.name}-train-item-views.csv"
    path.write_text(text, encoding="utf-8")
    cfg = Settings(data_dir=data_dir, num_partitions=8)
    result = import_paths([path], cfg, progress=False)
    assert result.rows_by_format == {"diginetica_item_views": text.count("\n") - 1}
    return cfg


def ev(event_id: str, event_type: str, occurred_at: str, **fields: Any) -> Any:
    """A live event (user ``u``) and when the collector received it (2 s later)."""
    event = {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": occurred_at + "Z",
        "user_id": fields.pop("user_id", "u"),
        **fields,
    }
    received = datetime.fromisoformat(occurred_at).replace(tzinfo=UTC) + timedelta(seconds=2)
    return event, received


def assert_unknown(row: dict[str, Any], columns: Iterable[str]) -> None:
    assert {c: row[c] for c in columns} == dict.fromkeys(columns), row


# -- the synthetic file -----------------------------------------------------------------


def test_a_views_only_import_answers_every_other_step_null(tmp_path: Path) -> None:
    cfg = import_views(tmp_path / "data")
    (shop,) = rows_of(cfg, "funnel", **MAY_2016)
    assert (shop["vendor_id"], shop["views"]) == (None, 5)
    assert_unknown(shop, FUNNEL_UNKNOWN)

    daily = rows_of(cfg, "vendor_daily", **MAY_2016)
    assert [(d["vendor_id"], d["date"], d["views"]) for d in daily] == [
        (None, date(2016, 5, 9), 3),
        (None, date(2016, 5, 10), 2),
    ]
    for day in daily:
        assert_unknown(day, DAILY_UNKNOWN)

    products = rows_of(cfg, "top_products", **MAY_2016)
    assert [(p["product_id"], p["views"]) for p in products] == [
        ("diginetica:81766", 3),
        ("diginetica:31331", 1),
        ("diginetica:9654", 1),
    ]
    for product in products:
        assert product["vendor_id"] is None
        assert_unknown(product, PRODUCT_UNKNOWN)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 9),
            st.one_of(st.just("NA"), st.just(""), st.integers(1, 99).map(str)),
            st.integers(1, 99_999),
            st.integers(0, 86_399_999),
            st.dates(date(2015, 1, 1), date(2017, 12, 31)),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_every_view_declares_that_its_source_records_views_only(
    rows: list[tuple[int, str, int, int, date]],
) -> None:
    # The parser's side: any valid row is one product view that says its source records
    # product views only (what the shop queries read to answer the other steps null).
    lines = [f"{s};{u};{i};{t};{d.isoformat()}" for s, u, i, t, d in rows]
    text = "session_id;user_id;item_id;timeframe;eventdate\n" + "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory() as folder:  # one file per example
        path = Path(folder) / "train-item-views.csv"
        path.write_text(text, encoding="utf-8")
        plan = plan_import([path])
    assert plan.result.rows_rejected == 0
    assert len(plan.events) == len(set(lines))
    for planned in plan.events:
        assert planned.event.event_type == "product_view"
        assert planned.event.properties == {"source_steps": ["product_view"]}


# -- live shops keep their zeros, mixed data dirs keep each row right ----------------------

# Vendor v1 on 2016-05-09: two views and a completed order of 1999 EUR, no cart add and
# no favorite (an order without a tracked cart add).
LIVE_V1 = [
    ev("v1-view-1", "product_view", "2016-05-09T10:00:00", product_id="p1", vendor_id="v1"),
    ev("v1-view-2", "product_view", "2016-05-09T10:01:00", product_id="p1", vendor_id="v1"),
    ev("v1-order", "order_completed", "2016-05-09T10:05:00", order_id="o1", product_id="p1",
       vendor_id="v1", amount_minor=1999, currency="EUR"),
]  # fmt: skip
# A live shop without a vendor on 2016-05-09: two views and one cart add, nothing else.
LIVE_NO_VENDOR = [
    ev("n-view-1", "product_view", "2016-05-09T11:00:00", product_id="p9", user_id="w"),
    ev("n-view-2", "product_view", "2016-05-09T11:01:00", product_id="p9", user_id="w"),
    ev("n-cart", "cart_add", "2016-05-09T11:02:00", product_id="p9", user_id="w"),
]


def live_funnel_v1(row: dict[str, Any]) -> None:
    """v1's funnel row: every step known, 0 where nothing happened."""
    assert {k: row[k] for k in ("views", "favorites", "cart_adds", "orders")} == {
        "views": 2,
        "favorites": 0,
        "cart_adds": 0,
        "orders": 1,
    }
    assert (row["completed_orders"], row["priced_orders"], row["revenue_minor"]) == (1, 1, 1999)
    assert (row["view_to_cart"], row["cart_to_order"], row["view_to_order"]) == (0.0, None, 0.5)


def test_a_live_shop_without_cart_adds_still_says_0(tmp_path: Path, ingest_into: Ingest) -> None:
    cfg = ingest_into(tmp_path / "data", LIVE_V1)
    (v1,) = rows_of(cfg, "funnel", **MAY_2016)
    assert v1["vendor_id"] == "v1"
    live_funnel_v1(v1)
    (day,) = rows_of(cfg, "vendor_daily", **MAY_2016)
    assert (day["favorites"], day["cart_adds"], day["orders"], day["completed_orders"]) == (
        0,
        0,
        1,
        1,
    )
    # Only views: every step known and 0, revenue 0 (nothing completed), rates 0.
    only_views = [e for e in LIVE_NO_VENDOR if e[0]["event_type"] == "product_view"]
    cfg = ingest_into(tmp_path / "views", only_views)
    (shop,) = rows_of(cfg, "funnel", **MAY_2016)
    assert (shop["views"], shop["cart_adds"], shop["orders"], shop["completed_orders"]) == (
        2,
        0,
        0,
        0,
    )
    assert (shop["view_to_cart"], shop["view_to_order"], shop["cart_to_order"]) == (0.0, 0.0, None)
    assert (shop["priced_orders"], shop["revenue_minor"]) == (0, 0)
    (product,) = rows_of(cfg, "top_products", **MAY_2016)
    assert (product["cart_adds"], product["completed_orders"], product["revenue_minor"]) == (
        0,
        0,
        0,
    )


def test_a_mixed_data_dir_keeps_each_row_right(tmp_path: Path, ingest_into: Ingest) -> None:
    # Live v1 first, then the DIGINETICA views (a backfill into the same data dir).
    cfg = ingest_into(tmp_path / "data", LIVE_V1)
    import_views(tmp_path / "data")
    v1, shop = rows_of(cfg, "funnel", **MAY_2016)  # v1 has a completed order: ranked first
    assert (v1["vendor_id"], shop["vendor_id"]) == ("v1", None)
    live_funnel_v1(v1)
    assert shop["views"] == 5
    assert_unknown(shop, FUNNEL_UNKNOWN)

    daily = rows_of(cfg, "vendor_daily", **MAY_2016)
    assert [
        (d["vendor_id"], d["date"], d["views"], d["cart_adds"], d["orders"]) for d in daily
    ] == [
        ("v1", date(2016, 5, 9), 2, 0, 1),
        (None, date(2016, 5, 9), 3, None, None),
        (None, date(2016, 5, 10), 2, None, None),
    ]
    assert daily[0]["revenue_minor"] == 1999
    for day in daily[1:]:
        assert_unknown(day, DAILY_UNKNOWN)

    products = {p["product_id"]: p for p in rows_of(cfg, "top_products", **MAY_2016)}
    assert next(iter(products)) == "p1"  # the one product with a completed order
    assert (products["p1"]["views"], products["p1"]["cart_adds"]) == (2, 0)
    assert products["p1"]["revenue_minor"] == 1999
    assert products["diginetica:81766"]["views"] == 3
    assert_unknown(products["diginetica:81766"], PRODUCT_UNKNOWN)


def test_a_shop_fed_by_a_views_only_source_and_a_live_one_counts_what_can_tell(
    tmp_path: Path, ingest_into: Ingest
) -> None:
    # The vendor-null shop holds DIGINETICA's 5 views and a live shop's 2 views and 1 cart
    # add: the live source tells every step, so each count is known (the views of both,
    # the live cart add, 0 favorites and orders), and each rate is over the events of the
    # sources that tell both of its steps: 1 cart add over the 2 live views, not over 7.
    cfg = ingest_into(tmp_path / "data", LIVE_NO_VENDOR)
    import_views(tmp_path / "data")
    (shop,) = rows_of(cfg, "funnel", **MAY_2016)
    counts = ("views", "favorites", "cart_adds", "orders", "completed_orders")
    assert {k: shop[k] for k in counts} == {
        "views": 7,
        "favorites": 0,
        "cart_adds": 1,
        "orders": 0,
        "completed_orders": 0,
    }
    assert (shop["view_to_cart"], shop["cart_to_order"], shop["view_to_order"]) == (0.5, 0.0, 0.0)
    assert (shop["priced_orders"], shop["revenue_minor"]) == (0, 0)
    # Days and products stay apart: the 10th holds DIGINETICA's views only.
    daily = {d["date"]: d for d in rows_of(cfg, "vendor_daily", **MAY_2016)}
    assert (daily[date(2016, 5, 9)]["views"], daily[date(2016, 5, 9)]["cart_adds"]) == (5, 1)
    assert daily[date(2016, 5, 10)]["views"] == 2
    assert_unknown(daily[date(2016, 5, 10)], DAILY_UNKNOWN)
    products = {p["product_id"]: p for p in rows_of(cfg, "top_products", **MAY_2016)}
    assert (products["p9"]["views"], products["p9"]["cart_adds"]) == (2, 1)
    assert_unknown(products["diginetica:9654"], PRODUCT_UNKNOWN)


def test_a_live_event_may_declare_its_source_and_a_malformed_declaration_is_ignored(
    tmp_path: Path, ingest_into: Ingest
) -> None:
    # A client forwarding a views-only feed says so like the importer; a source_steps
    # that is not an array declares nothing (the source then tells every step).
    events = [
        ev("a", "product_view", "2016-05-09T10:00:00", product_id="p1", vendor_id="feed",
           properties={"source_steps": ["product_view"]}),
        ev("b", "product_view", "2016-05-09T10:00:00", product_id="p1", vendor_id="odd",
           properties={"source_steps": "product_view"}),
    ]  # fmt: skip
    cfg = ingest_into(tmp_path / "data", events)
    by_vendor = {r["vendor_id"]: r for r in rows_of(cfg, "funnel", **MAY_2016)}
    assert by_vendor["feed"]["views"] == 1
    assert_unknown(by_vendor["feed"], FUNNEL_UNKNOWN)
    assert (by_vendor["odd"]["views"], by_vendor["odd"]["cart_adds"]) == (1, 0)
    assert by_vendor["odd"]["view_to_cart"] == 0.0


# -- the real file ---------------------------------------------------------------------


def _real_views() -> Path | None:
    base = real_data_dir()
    path = (
        None
        if base is None
        else base / "diginetica-item-views-sr-gnn" / "datasets" / "sample_train-item-views.csv"
    )
    return path if path is not None and path.is_file() else None


REAL_VIEWS = _real_views()
ALL_2016 = {"start": datetime(2016, 1, 1, tzinfo=UTC), "end": datetime(2017, 1, 1, tzinfo=UTC)}


def cli(*args: str) -> str:
    result = run_cli(*args, env={"COLUMNS": "400"}, timeout_s=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(REAL_VIEWS is None, reason="the real data sets are not available")
def test_the_real_diginetica_file_answers_views_and_nothing_else(tmp_path: Path) -> None:
    assert REAL_VIEWS is not None
    with REAL_VIEWS.open(newline="") as f:
        rows = {tuple(r.values()) for r in csv.DictReader(f, delimiter=";")}
    assert len(rows) == 12_391  # SOURCE.md
    data_dir = str(tmp_path / "data")
    cli("import", str(REAL_VIEWS), "--data-dir", data_dir)
    cfg = Settings(data_dir=Path(data_dir))

    (shop,) = rows_of(cfg, "funnel", **ALL_2016)
    assert shop["views"] == len(rows)
    assert_unknown(shop, FUNNEL_UNKNOWN)

    by_day = Counter(date.fromisoformat(r[4]) for r in rows)
    daily = rows_of(cfg, "vendor_daily", **ALL_2016)
    assert {d["date"]: d["views"] for d in daily} == by_day
    for day in daily:
        assert_unknown(day, DAILY_UNKNOWN)

    by_product = Counter(f"diginetica:{r[2]}" for r in rows)
    top = sorted(by_product.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    products = rows_of(cfg, "top_products", limit=20, **ALL_2016)
    assert [(p["product_id"], p["views"]) for p in products] == top
    for product in products:
        assert_unknown(product, PRODUCT_UNKNOWN)

    # The command line: JSON null, an empty CSV cell, "—" in the table.
    (as_json,) = json.loads(cli("query", "funnel", "--format", "json", "--data-dir", data_dir))
    assert as_json["views"] == len(rows)
    assert_unknown(as_json, FUNNEL_UNKNOWN)
    text = cli("query", "funnel", "--format", "csv", "--data-dir", data_dir)
    (as_csv,) = list(csv.DictReader(io.StringIO(text)))
    assert as_csv["views"] == str(len(rows))
    assert {c: as_csv[c] for c in FUNNEL_UNKNOWN} == dict.fromkeys(FUNNEL_UNKNOWN, "")
    lines = cli("query", "funnel", "--data-dir", data_dir).splitlines()
    (header,) = [[c.strip() for c in line.split("┃")[1:-1]] for line in lines if "┃" in line]
    (cells,) = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]
    table = dict(zip(header, cells, strict=True))
    assert table["views"] == str(len(rows))
    assert {c: table[c] for c in FUNNEL_UNKNOWN} == dict.fromkeys(FUNNEL_UNKNOWN, "—")
