"""The shop formats through the real `playpulse import` and `playpulse query` (issue #11,
Done when: "for every source format, the metrics its format cannot tell are null in JSON
and "—" in the table; a Taobao import's funnel shows views -> cart adds -> purchases with
the counts of each behaviour"). The play formats are in tests/sources/test_unknown_is_null.py;
the funnel's figures against the real Taobao file in tests/query/test_shop_funnel.py.

Neither Taobao UserBehavior nor DIGINETICA item views carries a vendor, a price or a
currency: `vendor_id`, `currency` and `average_order_minor` are unknown (null, "—", an
empty CSV cell), and so is `revenue_minor` of Taobao's purchases (docs/metrics.md, "Shop
funnel"). DIGINETICA records views only: its favorites, cart adds, orders, rates and
revenue are unknown too (the real file: tests/query/test_shop_unknown.py).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from typing import Any

import pytest

from playpulse.testing import run_cli

# 1511544070 = 2017-11-24T17:21:10Z. Views 3 (one row repeated exactly: one event),
# favorites 1, cart adds 2, purchases 3 (one without a cart add).
TAOBAO = (
    "1,10,100,pv,1511544070\n"
    "1,10,100,pv,1511544075\n"
    "1,10,100,fav,1511544080\n"
    "1,10,100,cart,1511544090\n"
    "1,10,100,buy,1511544100\n"
    "1,11,100,cart,1511544200\n"
    "1,11,100,buy,1511630500\n"
    "2,20,200,pv,1511630400\n"
    "2,20,200,pv,1511630400\n"
    "2,20,200,buy,1511630460\n"
)
TAOBAO_COUNTS = {"views": 3, "favorites": 1, "cart_adds": 2, "orders": 3, "completed_orders": 3}
# Four views in two sessions (one anonymous) on 2016-05-09.
DIGINETICA = (
    "sessionId;userId;itemId;timeframe;eventdate\n"
    "1;NA;81766;526309;2016-05-09\n"
    "1;NA;31331;1031018;2016-05-09\n"
    "2;7;32118;243569;2016-05-09\n"
    "2;7;9654;557559;2016-05-09\n"
)
UNKNOWN = ("vendor_id", "currency", "average_order_minor")
# What a views-only log (DIGINETICA) cannot tell besides.
VIEWS_ONLY_UNKNOWN = (
    "favorites",
    "cart_adds",
    "orders",
    "completed_orders",
    "view_to_cart",
    "cart_to_order",
    "view_to_order",
    "priced_orders",
    "revenue_minor",
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``playpulse ARGS...`` with tables wide enough for every funnel column."""
    result = run_cli(*args, env={"COLUMNS": "400"}, timeout_s=120)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Data dirs of the imported Taobao and DIGINETICA files, by format."""
    root = tmp_path_factory.mktemp("shop-formats")
    dirs = {}
    for fmt, name, text in (
        ("taobao", "UserBehavior.csv", TAOBAO),
        ("diginetica", "train-item-views.csv", DIGINETICA),
    ):
        path = root / name
        path.write_text(text, encoding="utf-8")
        dirs[fmt] = str(root / f"data-{fmt}")
        run("import", str(path), "--data-dir", dirs[fmt])
    return dirs


def funnel(data_dir: str) -> tuple[dict[str, Any], dict[str, str], dict[str, str], list[str]]:
    """``query funnel``'s one row as JSON, as CSV and as table cells, and the table's
    column names in order."""
    (as_json,) = json.loads(
        run("query", "funnel", "--format", "json", "--data-dir", data_dir).stdout
    )
    csv_text = run("query", "funnel", "--format", "csv", "--data-dir", data_dir).stdout
    (as_csv,) = list(csv.DictReader(io.StringIO(csv_text)))
    lines = run("query", "funnel", "--data-dir", data_dir).stdout.splitlines()
    (header,) = [[c.strip() for c in line.split("┃")[1:-1]] for line in lines if "┃" in line]
    (cells,) = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]
    return as_json, as_csv, dict(zip(header, cells, strict=True)), header


def test_a_taobao_funnel_shows_views_cart_adds_purchases_and_unknown_revenue(
    imported: dict[str, str],
) -> None:
    row, as_csv, table, header = funnel(imported["taobao"])
    # The steps in funnel order, each with its behaviour's count.
    steps = ["views", "cart_adds", "orders"]
    assert [c for c in header if c in steps] == steps
    assert {k: row[k] for k in TAOBAO_COUNTS} == TAOBAO_COUNTS
    assert {k: table[k] for k in TAOBAO_COUNTS} == {k: str(v) for k, v in TAOBAO_COUNTS.items()}
    assert (row["view_to_cart"], row["cart_to_order"]) == (pytest.approx(2 / 3), 1.5)
    # No prices in the log: 3 purchases of unknown amount, in no known currency.
    assert row["priced_orders"] == 0
    for name in (*UNKNOWN, "revenue_minor"):
        assert row[name] is None, name
        assert as_csv[name] == "", name
        assert table[name] == "—", name


def test_a_diginetica_import_is_one_shop_of_views_without_vendor_or_prices(
    imported: dict[str, str],
) -> None:
    row, as_csv, table, _ = funnel(imported["diginetica"])
    assert (row["views"], as_csv["views"], table["views"]) == (4, "4", "4")
    # The format records views only: every other step, the rates built on them and the
    # revenue are unknown, not 0 (docs/metrics.md, "What a shop source can tell").
    for name in (*UNKNOWN, *VIEWS_ONLY_UNKNOWN):
        assert row[name] is None, name
        assert as_csv[name] == "", name
        assert table[name] == "—", name
