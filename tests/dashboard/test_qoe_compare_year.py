"""#17's dashboard features in Chromium, on data with known answers (tests/query/
qoe_dataset.py, whose docstring has the arithmetic): the quality-of-experience section,
the previous period on the tiles and charts, the click-through filter of the
breakdowns, the year page; and /docs and /redoc rendering offline. Screenshots go to the
test artifacts (and to docs/ with PLAYPULSE_UPDATE_DOCS_SCREENSHOT=1)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from playpulse.testing import load_module

expect = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing: pip install playwright"
).expect
expect.set_options(timeout=20_000)

REPO = Path(__file__).resolve().parents[2]
DATA = load_module(REPO / "tests" / "query" / "qoe_dataset.py", "playpulse_tests_qoe_dataset")
QOE_DAY = "/?range=custom&from=2026-03-10&to=2026-03-10&tz=UTC"
SETTLED = """
names => names.every(name => {
  const el = document.querySelector(`[data-chart="${name}"]`);
  return el && ["ready", "empty", "error"].includes(el.dataset.state);
})
"""
SERIES = """
name => {
  const el = document.querySelector(`[data-chart="${name}"]`);
  const option = window.echarts.getInstanceByDom(el).getOption();
  const value = d => (d && typeof d === "object") ? d.value : d;
  return option.series.map(s => [s.name, s.data.map(value)]);
}
"""


@pytest.fixture(scope="module")
def known(
    browser: Any, livedata: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`playpulse up` on the data set with known answers; its base URL."""
    root = tmp_path_factory.mktemp("dashboard-known")
    DATA.build(root / "data", DATA.ROWS)
    with livedata.running_up(root / "data", log_path=root / "up.log") as base:
        yield base


def _tile(page: Any, section: str, key: str) -> Any:
    return page.locator(f"{section} [data-kpi='{key}']")


def _loaded(page: Any) -> None:
    page.wait_for_function("() => Number(document.body.dataset.loaded || 0) > 0", timeout=45_000)


def _shot(page: Any, artifacts: Path, name: str, part: str | None = None) -> None:
    """The page (or its element ``part``) as ``name``.png in the artifacts, and in docs/
    with PLAYPULSE_UPDATE_DOCS_SCREENSHOT=1."""
    paths = [artifacts / f"{name}.png"]
    if os.environ.get("PLAYPULSE_UPDATE_DOCS_SCREENSHOT") == "1":
        paths.append(REPO / "docs" / f"{name}.png")
    for path in paths:
        if part is None:
            page.screenshot(path=str(path), full_page=True)
        else:
            page.locator(part).screenshot(path=str(path))


def test_the_qoe_section_shows_the_known_answers(
    known: str, new_page: Any, artifacts: Path
) -> None:
    page = new_page()
    page.goto(known + QOE_DAY)
    p50 = _tile(page, "#qoe-kpis", "startup_p50_s")
    expect(p50).to_have_attribute("data-value", "2")
    expect(p50.locator("strong")).to_have_text("2 s")
    expect(_tile(page, "#qoe-kpis", "startup_p95_s").locator("strong")).to_have_text("6 s")
    expect(_tile(page, "#qoe-kpis", "rebuffer_ratio")).to_have_attribute("data-value", "0.0125")
    expect(_tile(page, "#qoe-kpis", "rebuffers_per_hour").locator("strong")).to_have_text("15 / h")
    expect(_tile(page, "#qoe-kpis", "failure_rate").locator("strong")).to_have_text("33.3 %")
    expect(_tile(page, "#qoe-kpis", "plays")).to_have_attribute("data-value", "3")
    # The previous day had no plays: the player plays are "new", the rates unknown.
    expect(_tile(page, "#qoe-kpis", "plays").locator(".delta")).to_have_text("▲ new")
    expect(_tile(page, "#qoe-kpis", "failure_rate").locator(".delta")).to_have_attribute(
        "data-direction", "unknown"
    )
    titles = page.locator("#qoe-titles-table tbody tr")
    expect(titles).to_have_count(2)
    expect(titles.nth(0)).to_contain_text("Clip X")
    # x1: 2 plays, p50 2 s, p95 6 s, rebuffering 3 s of 180 s, 20 per hour, 1 failure of 2
    expect(titles.nth(0).locator("td")).to_have_text(
        ["Clip X", "2", "2 s", "6 s", "1.7 %", "20 / h", "50 %"]
    )
    devices = page.locator("#qoe-devices-table tbody tr")
    expect(devices).to_have_count(2)
    expect(devices.nth(0)).to_have_attribute("data-device-type", "desktop")
    _loaded(page)
    _shot(page, artifacts, "dashboard-qoe", "#qoe")
    assert not page.errors, page.errors


def test_tiles_and_charts_compare_with_the_previous_period(known: str, new_page: Any) -> None:
    # 5..7 Jan: y-5 (60 s), y-6 and y-7 (300 s each); previous 3 days, 2..4 Jan: y-2, y-3,
    # y-4 (60 s each). Plays 3 and 3, listening 660 s and 180 s.
    page = new_page()
    page.goto(known + "/?range=custom&from=2026-01-05&to=2026-01-07&tz=UTC")
    plays = _tile(page, "#kpis", "plays")
    expect(plays).to_have_attribute("data-value", "3")
    expect(plays.locator(".delta")).to_have_text("■ ±0 %")
    listening = _tile(page, "#kpis", "listening_s").locator(".delta")
    expect(listening).to_have_text("▲ +266.7 %")
    expect(listening).to_have_attribute("data-good", "true")
    assert listening.get_attribute("title") == "previous period (2026-01-02 to 2026-01-04): 0.1 h"
    expect(page.locator("#compare-note")).to_contain_text("previous 3 days")
    page.wait_for_function(SETTLED, arg=["daily", "top_creators"], timeout=45_000)
    daily = dict(page.evaluate(SERIES, "daily"))
    # Hours per day: 5th 0.0 (60 s rounds to 0.0 h), 6th and 7th 0.1; before: 2nd 0.0 ...
    assert "Previous period" in daily
    assert len(daily["Previous period"]) == 3
    creators = dict(page.evaluate(SERIES, "top_creators"))
    assert "Previous period" in creators
    assert not page.errors, page.errors


def test_a_click_on_a_breakdown_filters_the_page(
    known: str, new_page: Any, artifacts: Path
) -> None:
    page = new_page()
    page.goto(known + QOE_DAY)
    plays = _tile(page, "#kpis", "plays")
    expect(plays).to_have_attribute("data-value", "4")
    # A country: only its plays (q2 and q3 in the US).
    page.locator("#countries-table tr[data-country='US']").click()
    expect(page).to_have_url(re.compile(r"[?&]country=US(&|$)"))
    expect(plays).to_have_attribute("data-value", "2")
    expect(page.locator("#chips .chip[data-filter='country']")).to_have_text("Country: US\u00d7")
    expect(page.locator("#countries-table tbody tr")).to_have_count(1)
    _shot(page, artifacts, "dashboard-filtered", "#overview-page")
    page.locator("#chips .chip[data-filter='country'] button").click()
    expect(plays).to_have_attribute("data-value", "4")
    expect(page.locator("#chips")).to_be_hidden()
    # A device of the QoE table: device type and platform (q1 on an iPhone).
    page.locator("#qoe-devices-table tr[data-device-type='mobile']").click()
    expect(plays).to_have_attribute("data-value", "1")
    expect(page.locator("#chips .chip")).to_have_count(2)
    assert "device=mobile" in page.url
    assert "platform=ios" in page.url
    # Reloading the address keeps the filters.
    page.reload()
    expect(plays).to_have_attribute("data-value", "1")
    for chip in ("device", "platform"):
        page.locator(f"#chips .chip[data-filter='{chip}'] button").click()
    expect(plays).to_have_attribute("data-value", "4")
    # A listener: qb's two plays.
    page.locator("#listeners-table tr[data-listener='qb']").click()
    expect(plays).to_have_attribute("data-value", "2")
    expect(_tile(page, "#kpis", "sessions")).to_have_attribute("data-value", "2")
    assert not page.errors, page.errors


def _ranking(page: Any, selector: str) -> list[str]:
    return page.locator(f"{selector} li").evaluate_all("items => items.map(i => i.dataset.name)")


def test_the_year_page(known: str, new_page: Any, artifacts: Path) -> None:
    page = new_page()
    page.goto(known + "/?view=year&tz=UTC")  # the newest year, its top listener: 2026, yy
    expect(page.locator("#year-title")).to_have_text("2026 in review: yy")
    kpis = "#year-kpis"
    expect(_tile(page, kpis, "plays")).to_have_attribute("data-value", "6")
    expect(_tile(page, kpis, "listening_s")).to_have_attribute("data-value", "840")
    expect(_tile(page, kpis, "listening_days")).to_have_attribute("data-value", "5")
    expect(_tile(page, kpis, "artists")).to_have_attribute("data-value", "3")
    expect(_tile(page, kpis, "new_artists")).to_have_attribute("data-value", "2")
    expect(_tile(page, kpis, "longest_streak_days")).to_have_attribute("data-value", "3")
    expect(page.locator("#year-streak")).to_have_text("Longest streak: 3 days (5 Jan \u2013 7 Jan)")
    # Against 2025 (one play, one day).
    expect(_tile(page, kpis, "plays").locator(".delta")).to_have_text("▲ +500 %")
    expect(page.locator("#year-artists-time li")).to_have_count(3)
    assert _ranking(page, "#year-artists-time") == ["A3", "A1", "A2"]
    assert _ranking(page, "#year-artists-plays") == ["A1", "A3", "A2"]
    assert _ranking(page, "#year-titles-time") == ["Song 3", "Song 1", "Song 2"]
    expect(page.locator("#clock-note")).to_have_attribute("data-peak-hour", "20")
    page.wait_for_function(SETTLED, arg=["year_clock"], timeout=45_000)
    (series,) = page.evaluate(SERIES, "year_clock")
    hours = series[1]
    assert len(hours) == 24
    assert [h for h, v in enumerate(hours) if v] == [10, 14, 20]
    assert "year=2026" in page.url
    assert "listener=yy" in page.url
    _loaded(page)
    _shot(page, artifacts, "dashboard-year")
    # In Berlin, the New Year's Eve play is 2026's: a 3-day streak from 1 Jan, 3 new artists.
    page.goto(known + "/?view=year&tz=Europe%2FBerlin&year=2026&listener=yy")
    expect(page.locator("#year-streak")).to_have_text("Longest streak: 3 days (1 Jan \u2013 3 Jan)")
    expect(_tile(page, kpis, "new_artists")).to_have_attribute("data-value", "3")
    # Choosing 2025 in the page: one play.
    page.goto(known + "/?view=year&tz=UTC&listener=yy")
    page.locator("#year-year").select_option("2025")
    expect(page.locator("#year-title")).to_have_text("2025 in review: yy")
    expect(_tile(page, kpis, "plays")).to_have_attribute("data-value", "1")
    assert not page.errors, page.errors


@pytest.mark.parametrize(
    ("path", "rendered"),
    [("/docs", ".swagger-ui .opblock-summary-path"), ("/redoc", "[role='search'], .menu-content")],
)
def test_the_api_docs_render_offline(known: str, browser: Any, path: str, rendered: str) -> None:
    context = browser.new_context()
    foreign: list[str] = []

    def only_local(route: Any) -> None:
        url = route.request.url
        if url.startswith(known + "/") or url.startswith("data:") or url.startswith("blob:"):
            route.continue_()
        else:
            foreign.append(url)
            route.abort()

    context.route("**/*", only_local)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(known + path)
        expect(page.locator(rendered).first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("/v1/events").first).to_be_visible()
        assert not foreign, f"requests that would leave 127.0.0.1: {foreign}"
        assert not errors, errors
    finally:
        context.close()


def test_title_pages_without_plays_tracks_and_removed_videos(known: str, new_page: Any) -> None:
    page = new_page()
    # A title with no plays in the range: its name (from all time), no 0 % figures.
    page.goto(known + "/content/x1?range=custom&from=2026-01-05&to=2026-01-07&tz=UTC")
    expect(page.locator("#content-title")).to_have_text("Clip X")
    expect(page.locator("#content-meta")).to_contain_text("no plays of this title in this range")
    _loaded(page)
    expect(page.locator("#content-kpis .kpi")).to_have_count(0)
    # A music track: no chapter placeholder.
    page.goto(known + "/content/a1t?range=custom&from=2026-01-01&to=2026-01-07&tz=UTC")
    expect(page.locator("#content-title")).to_have_text("Song 1")
    _loaded(page)
    expect(page.locator("#content-chapters-card")).to_be_hidden()
    expect(_tile(page, "#content-kpis", "plays")).to_have_attribute("data-value", "3")
    # The importer's removed YouTube video has no title: named as such, not by its id.
    page.goto(
        known + "/content/youtube%3Aremoved?range=custom&from=2025-06-01&to=2025-06-01&tz=UTC"
    )
    expect(page.locator("#content-title")).to_have_text("Removed video (YouTube)")
    page.goto(known + "/?range=custom&from=2025-06-01&to=2025-06-01&tz=UTC")
    expect(page.locator("#titles-table tbody tr a")).to_have_text(["Removed video (YouTube)"])
    assert not page.errors, page.errors


def test_static_history_is_not_flagged_late_and_the_grid_has_no_empty_column(
    known: str, new_page: Any
) -> None:
    page = new_page()
    page.goto(known + QOE_DAY)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "open", timeout=15_000)
    # Months-old events and nothing arriving: old by nature, not late (not orange).
    freshness = page.locator("#tile-freshness")
    expect(freshness.locator(".tile-note")).to_have_text(
        "newest event; no events in the last minute"
    )
    expect(freshness).not_to_have_class(re.compile(r"\bstale\b"))
    _loaded(page)
    # Two columns on a laptop: Top content and Top creators fill their row together.
    grid = page.locator("#overview-page > .grid").bounding_box()
    content = page.locator("[data-chart='top_content']").locator("xpath=..").bounding_box()
    creators = page.locator("[data-chart='top_creators']").locator("xpath=..").bounding_box()
    assert None not in (grid, content, creators)
    assert abs(content["x"] - grid["x"]) < 2
    assert abs((creators["x"] + creators["width"]) - (grid["x"] + grid["width"])) < 2
    assert abs(content["y"] - creators["y"]) < 2


def test_every_comparable_chart_draws_the_previous_period(known: str, new_page: Any) -> None:
    # 2..7 Jan (6 days) against 27 Dec..1 Jan: the New Year's Eve play (60 s) is in the
    # previous period.
    page = new_page()
    # (Song 1, a1t, was played then too: its retention curve has a previous one.)
    page.goto(known + "/?range=custom&from=2026-01-02&to=2026-01-07&tz=UTC&title=a1t")
    charts = [
        "daily",
        "top_content",
        "top_creators",
        "sessions",
        "rates",
        "visibility",
        "retention",
    ]
    page.wait_for_function(SETTLED, arg=charts, timeout=45_000)
    for name in charts:
        series = dict(page.evaluate(SERIES, name))
        assert "Previous period" in series, (name, list(series))
    sessions = dict(page.evaluate(SERIES, "sessions"))
    assert sum(sessions["Previous period"]) == 1  # the one session of 31 Dec
    assert sum(sessions["Sessions"]) == 6
    assert not page.errors, page.errors


def test_a_click_on_the_devices_chart_filters_by_that_device(known: str, new_page: Any) -> None:
    # On the 10th the inner ring holds mobile (q1, 115 s), desktop (q2 and q3, 114 s) and
    # unknown (q4, 60 s), largest first, clockwise from 12 o'clock: mobile spans the
    # first 143 degrees, so 45 degrees on the inner ring is mobile.
    page = new_page()
    page.goto(known + QOE_DAY)
    page.wait_for_function(SETTLED, arg=["devices"], timeout=45_000)
    chart = page.locator("[data-chart='devices']")
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(300)  # the chart's entry animation
    box = chart.bounding_box()
    assert box is not None
    radius = min(box["width"], box["height"]) / 2 * 0.38
    x = box["x"] + box["width"] / 2 + radius * 0.7071
    y = box["y"] + box["height"] / 2 - radius * 0.7071
    page.mouse.click(x, y)
    expect(page.locator("#chips .chip[data-filter='device']")).to_have_text("Device: mobile\u00d7")
    expect(_tile(page, "#kpis", "plays")).to_have_attribute("data-value", "1")
    assert not page.errors, page.errors


TEXT_FITS = """
() => {
  const select = document.querySelector("#tz");
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = getComputedStyle(select).font;
  return [ctx.measureText(select.selectedOptions[0].text).width, select.clientWidth];
}
"""


@pytest.mark.parametrize("width", [1366, 390])
def test_a_long_time_zone_name_is_not_cut(known: str, new_page: Any, width: int) -> None:
    page = new_page({"width": width, "height": 900})
    page.goto(known + QOE_DAY.replace("tz=UTC", "tz=America%2FArgentina%2FComodRivadavia"))
    _loaded(page)
    text, room = page.evaluate(TEXT_FITS)
    assert room >= text, (text, room)


def test_the_devices_donut_hides_labels_that_would_overlap(known: str, new_page: Any) -> None:
    page = new_page()
    page.goto(known + QOE_DAY)
    page.wait_for_function(SETTLED, arg=["devices"], timeout=45_000)
    layout = page.evaluate(
        """() => {
          const el = document.querySelector("[data-chart='devices']");
          const series = window.echarts.getInstanceByDom(el).getOption().series[0];
          return [series.labelLayout, series.label.minAngle];
        }"""
    )
    assert layout[0] == {"hideOverlap": True}
    assert layout[1] >= 20
