"""Long histories on the dashboard, in Node (when installed): daily charts bucket long
ranges by week or month instead of cutting them (js/buckets.js, js/charts.js), rankings
count plays where listening time is unknown, and the range to open on holds the data
(js/ranges.js)."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playpulse.dashboard import STATIC_DIR


@pytest.fixture(scope="module")
def js_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dashboard's modules beside a package.json that makes Node read them as ES
    modules (the browser does by the script tag)."""
    if shutil.which("node") is None:
        pytest.skip("node is missing")
    path = tmp_path_factory.mktemp("dashboard-js")
    for module in (STATIC_DIR / "js").glob("*.js"):
        shutil.copy(module, path / module.name)
    (path / "package.json").write_text('{"type": "module"}')
    return path


def run_js(js_dir: Path, program: str) -> Any:
    """Run ``program`` (an ES module beside the dashboard's modules; it prints one JSON
    value last) in Node; that value."""
    script = js_dir / "program.mjs"
    script.write_text(
        'import * as build from "./charts.js";\n'
        'import * as buckets from "./buckets.js";\n'
        'import * as ranges from "./ranges.js";\n'
        'import * as fmt from "./format.js";\n' + program
    )
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def daily_rows(first: date, last: date, every_days: int, listening_s: float | None) -> list[Any]:
    """Rows of the ``daily`` query: one day in ``every_days`` from ``first`` to ``last``."""
    rows = []
    day = first
    while day <= last:
        rows.append(
            {"date": day.isoformat(), "plays": 2, "listeners": 1, "listening_s": listening_s}
        )
        day += timedelta(days=every_days)
    return rows


def test_a_12_year_daily_range_shows_every_year_by_month(js_dir: Path):
    rows = daily_rows(date(2014, 5, 25), date(2026, 4, 20), 3, 1800.0)
    option, heading = run_js(
        js_dir,
        f"const rows = {json.dumps(rows)};\n"
        "console.log(JSON.stringify([build.daily(rows), build.dailyHeading(rows)]));\n",
    )
    labels = option["xAxis"]["data"]
    # Every month from May 2014 to April 2026, not the first 400 days.
    assert labels[0] == "2014-05"
    assert labels[-1] == "2026-04"
    assert len(labels) == 12 * 12
    assert {label[:4] for label in labels} == {str(y) for y in range(2014, 2027)}
    bars, line = option["series"]
    assert bars["name"] == "Listening (h)"
    assert len(bars["data"]) == len(labels)
    # Each month's bar is the sum of its days: 0.5 h per row, every 3rd day.
    assert sum(bars["data"]) == pytest.approx(len(rows) * 0.5, abs=0.05 * len(labels))
    assert line["name"] == "Listeners (peak day)"
    assert set(line["data"]) == {1}
    assert heading == "Listening time per month"


def test_the_grain_follows_the_range_length(js_dir: Path):
    cases = [
        ("2026-01-01", "2026-04-02"),  # 92 days
        ("2026-01-01", "2026-04-03"),  # 93 days
        ("2024-01-01", "2025-12-31"),  # 731 days
        ("2024-01-01", "2026-01-01"),  # 732 days
    ]
    grains = run_js(
        js_dir,
        f"const cases = {json.dumps(cases)};\n"
        "console.log(JSON.stringify(cases.map(([a, b]) => buckets.grainFor(a, b))));\n",
    )
    assert grains == ["day", "week", "week", "month"]


def test_weeks_start_on_monday_and_a_bucket_with_an_unknown_day_is_unknown(js_dir: Path):
    rows = [
        {"date": "2026-03-01", "plays": 1, "listeners": 1, "listening_s": 60},  # a Sunday
        {"date": "2026-03-02", "plays": 2, "listeners": 3, "listening_s": 120},  # Monday
        {"date": "2026-03-08", "plays": 4, "listeners": 2, "listening_s": None},  # Sunday
        {"date": "2026-06-30", "plays": 8, "listeners": 1, "listening_s": 30},
    ]
    result = run_js(
        js_dir,
        f"const rows = {json.dumps(rows)};\n"
        "const b = buckets.bucketRows(rows, "
        '{sum: ["plays", "listening_s"], max: ["listeners"]});\n'
        "console.log(JSON.stringify(b));\n",
    )
    assert result["grain"] == "week"
    keys = result["keys"]
    assert keys[:2] == ["2026-02-23", "2026-03-02"]
    assert keys[-1] == "2026-06-29"
    assert len(keys) == 19
    by_key = dict(zip(keys, result["values"], strict=True))
    assert by_key["2026-02-23"] == {"plays": 1, "listening_s": 60, "listeners": 1}
    # Monday to Sunday together; one day's time is unknown, so the week's is too.
    assert by_key["2026-03-02"] == {"plays": 6, "listening_s": None, "listeners": 3}
    assert by_key["2026-03-09"] == {"plays": 0, "listening_s": 0, "listeners": 0}


@settings(max_examples=30, deadline=None)
@given(
    days=st.lists(
        st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
        min_size=1,
        max_size=40,
        unique=True,
    ),
    plays=st.integers(min_value=0, max_value=10_000),
)
def test_buckets_hold_every_day_once(js_dir: Path, days: list[date], plays: int):
    rows = [{"date": d.isoformat(), "plays": plays + i} for i, d in enumerate(days)]
    result = run_js(
        js_dir,
        f"const rows = {json.dumps(rows)};\n"
        'const b = buckets.bucketRows(rows, {sum: ["plays"]});\n'
        "const home = rows.map((r) => b.keys.indexOf(buckets.bucketStart(r.date, b.grain)));\n"
        "console.log(JSON.stringify({b, home}));\n",
    )
    b = result["b"]
    assert sum(v["plays"] for v in b["values"]) == sum(r["plays"] for r in rows)
    assert all(i >= 0 for i in result["home"])
    assert b["keys"] == sorted(b["keys"])
    assert len(set(b["keys"])) == len(b["keys"])
    span = (max(days) - min(days)).days + 1
    assert len(b["keys"]) <= max(92, span // 7 + 2, span // 28 + 2)


def scrobbles(listening_s: float | None) -> list[dict[str, Any]]:
    return [
        {"creator": "The Cure", "plays": 12, "listeners": 1, "listening_s": listening_s},
        {"creator": "Agnes Obel", "plays": 371, "listeners": 1, "listening_s": listening_s},
        {"creator": "Travis", "plays": 144, "listeners": 1, "listening_s": listening_s},
    ]


RANKING = """
const ranked = build.ranked(rows);
const option = build.topCreators(ranked);
console.log(JSON.stringify({
  note: build.rankingNote(rows, "creators"),
  axis: option.xAxis.name,
  series: option.series[0].name,
  labels: option.yAxis.data,
  values: option.series[0].data.map((d) => d.value),
  tooltip: option.series[0].data.map((d) => option.tooltip.formatter({data: d})),
}));
"""


def test_a_ranking_of_scrobbles_counts_plays_not_0_h(js_dir: Path):
    unknown = run_js(js_dir, f"const rows = {json.dumps(scrobbles(None))};\n{RANKING}")
    assert unknown["note"] == "by plays (listening time unknown)"
    assert unknown["axis"] == "plays"
    assert unknown["series"] == "Plays (listening time unknown)"
    assert unknown["labels"] == ["Agnes Obel", "Travis", "The Cure"]
    assert unknown["values"] == [371, 144, 12]
    assert "— · 371 plays" in unknown["tooltip"][0]  # unknown time is "—", never "0 h"
    # An API that still answers 0 for what it cannot tell: plays all the same.
    zero = run_js(js_dir, f"const rows = {json.dumps(scrobbles(0))};\n{RANKING}")
    assert zero["values"] == [371, 144, 12]
    assert zero["note"] == "by plays (no listening time recorded)"


def test_a_ranking_with_known_times_is_by_listening_time(js_dir: Path):
    rows = [
        {"creator": "A", "plays": 1, "listeners": 1, "listening_s": 7200},
        {"creator": "B", "plays": 50, "listeners": 1, "listening_s": 3600},
    ]
    known = run_js(js_dir, f"const rows = {json.dumps(rows)};\n{RANKING}")
    assert known["note"] == "by listening time"
    assert known["labels"] == ["A", "B"]
    assert known["values"] == [2, 1]
    mixed = [*rows, {"creator": "C", "plays": 20, "listeners": 1, "listening_s": None}]
    result = run_js(js_dir, f"const rows = {json.dumps(mixed)};\n{RANKING}")
    assert result["note"] == "by plays (listening time unknown for 1 of 3 creators)"
    assert result["labels"] == ["B", "C", "A"]
    assert result["values"] == [50, 20, 1]


def test_unknown_values_read_as_a_dash_never_zero(js_dir: Path):
    texts = run_js(
        js_dir,
        "console.log(JSON.stringify([fmt.hours(null), fmt.count(null), fmt.percent(null),"
        " fmt.duration(undefined), fmt.hours(0), fmt.hours(5400)]));\n",
    )
    assert texts[:4] == ["—"] * 4
    assert texts[4] == "0 h"
    assert texts[5].endswith(" h")
    assert texts[5].startswith("1")


def test_the_opening_range_is_the_shortest_that_holds_the_last_day(js_dir: Path):
    today = "2026-12-04"
    cases = [
        {"first": "2026-11-30", "last": "2026-12-03"},
        {"first": "2026-10-01", "last": "2026-11-20"},
        {"first": "2026-06-01", "last": "2026-09-10"},
        {"first": "2014-05-25", "last": "2026-04-20"},  # a history that ended months ago
        None,
    ]
    ranges = run_js(
        js_dir,
        f"const cases = {json.dumps(cases)};\n"
        f"console.log(JSON.stringify(cases.map((e) => ranges.openingRange(e, {today!r}))));\n",
    )
    assert ranges == ["7d", "30d", "90d", "all", None]


def test_the_extent_is_the_first_and_last_day_with_data(js_dir: Path):
    rows = [
        {"date": "2014-05-25", "plays": 0, "listeners": 0, "listening_s": 0},
        {"date": "2014-05-26", "plays": 3, "listeners": 1, "listening_s": None},
        {"date": "2026-04-20", "plays": 1, "listeners": 1, "listening_s": 40},
    ]
    extent, none, text = run_js(
        js_dir,
        f"const rows = {json.dumps(rows)};\n"
        "const e = ranges.extentOf(rows);\n"
        "console.log(JSON.stringify([e, ranges.extentOf([]), ranges.extentText(e)]));\n",
    )
    assert extent == {"first": "2014-05-26", "last": "2026-04-20"}
    assert none is None
    assert text == "26 May 2014 \u2013 20 Apr 2026"


def test_the_heatmap_of_scrobbles_shows_plays(js_dir: Path):
    cells = [
        {"day_of_week": d, "hour_of_day": hr, "plays": 0, "listeners": 0, "listening_s": 0}
        for d in range(7)
        for hr in range(24)
    ]
    cells[30] = {**cells[30], "plays": 9, "listeners": 1}
    measure, values = run_js(
        js_dir,
        f"const rows = {json.dumps(cells)};\n"
        "const o = build.heatmap(rows);\n"
        "console.log(JSON.stringify([build.heatmapMeasure(rows),"
        " o.series[0].data.map((d) => d[2])]));\n",
    )
    assert measure == "plays"
    assert values[30] == 9
    assert sum(values) == 9


def test_foreground_and_background_over_three_years_are_summed_per_month(js_dir: Path):
    rows = [
        {"creator": c, "date": d, "foreground_s": 3600, "background_s": 1800}
        for c in ("A", "B")
        for d in ("2023-01-05", "2023-01-20", "2025-12-31")
    ]
    option, heading = run_js(
        js_dir,
        f"const rows = {json.dumps(rows)};\n"
        "console.log(JSON.stringify([build.visibility(rows), build.visibilityHeading(rows)]));\n",
    )
    assert heading == "playing time per month"
    labels = option["xAxis"]["data"]
    assert labels[0] == "2023-01"
    assert labels[-1] == "2025-12"
    assert len(labels) == 36
    foreground, background = option["series"]
    assert foreground["data"][0] == 4  # two creators on two days, 1 h each
    assert background["data"][0] == 2
    assert foreground["data"][-1] == 2
    assert sum(foreground["data"][1:-1]) == 0
