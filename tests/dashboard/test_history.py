"""An imported history that ended months ago, in Debian's Chromium against a real
`playpulse up`: the dashboard opens on "All time", draws twelve years by month with
every year on the axis, ranks scrobbles by plays (their listening time is unknown), and
an empty range offers the range where the data is."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from playpulse.testing import real_data_dir

expect = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing: pip install playwright"
).expect
expect.set_options(timeout=20_000)

ARTISTS = ["Agnes Obel", "The Cure", "Travis", "Midlake", "Gravenhurst"]
YEARS = 12


def write_scrobbles(path: Path, end: datetime) -> tuple[Counter[str], datetime, datetime]:
    """A Last.fm scrobbles CSV (the lastfm.ghan.nl columns) of ``YEARS`` years up to
    ``end``: three scrobbles every 9 days about noon UTC (the same date in any zone a
    browser may be in), artists in fixed shares. Returns the scrobbles per artist and the
    first and last scrobble time."""
    per_artist: Counter[str] = Counter()
    t = (end - timedelta(days=365 * YEARS)).replace(hour=12, minute=0)
    first = last = t
    n = 0
    with path.open("w", newline="") as f:
        out = csv.writer(f, quoting=csv.QUOTE_ALL)
        out.writerow(
            [
                "uts",
                "utc_time",
                "artist",
                "artist_mbid",
                "album",
                "album_mbid",
                "track",
                "track_mbid",
            ]
        )
        while t <= end:
            for k in range(3):
                artist = ARTISTS[(n + k * k) % len(ARTISTS) if k else 0]
                at = t + timedelta(minutes=4 * k)
                out.writerow(
                    [
                        int(at.timestamp()),
                        at.strftime("%d %b %Y, %H:%M"),
                        artist,
                        "",
                        f"{artist} album",
                        "",
                        f"{artist} track {n % 7}",
                        "",
                    ]
                )
                per_artist[artist] += 1
                last = at
            n += 1
            t += timedelta(days=9)
    return per_artist, first, last


@pytest.fixture(scope="module")
def history(
    browser: Any, livedata: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, datetime, datetime, Counter[str]]]:
    """`playpulse up` on twelve years of imported scrobbles that ended 200 days ago;
    yields its base URL, the first and last scrobble time and the scrobbles per artist."""
    root = tmp_path_factory.mktemp("dashboard-history")
    end = (datetime.now(UTC) - timedelta(days=200)).replace(microsecond=0, second=0)
    export = root / "scrobbles.csv"
    per_artist, first, last = write_scrobbles(export, end)
    import_export(root / "data", export)
    with livedata.running_up(root / "data", log_path=root / "up.log") as base:
        yield base, first, last, per_artist


def import_export(data_dir: Path, export: Path) -> None:
    """``playpulse import EXPORT --user listener`` into ``data_dir``, as a reader would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYPULSE_")}
    done = subprocess.run(
        [sys.executable, "-m", "playpulse", "--data-dir", str(data_dir), "import",
         str(export), "--user", "listener"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


OPTION = """
name => {
  const chart = echarts.getInstanceByDom(document.querySelector(`[data-chart="${name}"]`));
  const o = chart.getOption();
  return {x: o.xAxis[0].data || null, xName: o.xAxis[0].name,
          y: o.yAxis[0].data || null,
          series: o.series.map(s => ({name: s.name,
            data: s.data.map(d => (d && typeof d === "object" ? d.value : d))}))};
}
"""


def settled(page: Any, names: list[str]) -> None:
    page.wait_for_function(
        """names => names.every(n => {
             const el = document.querySelector(`[data-chart="${n}"]`);
             return el && ["ready", "empty", "error"].includes(el.dataset.state);
           })""",
        arg=names,
        timeout=45_000,
    )
    for name in names:
        state = page.locator(f'[data-chart="{name}"]').get_attribute("data-state")
        assert state == "ready", (name, state, page.errors)


def test_a_history_that_ended_months_ago_opens_on_all_time_by_month(
    history: Any, new_page: Any, artifacts: Path
):
    base, first, end, per_artist = history
    page = new_page()
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(r"/\?range=all(&|$)"))
    expect(page.locator("#range")).to_have_value("all")
    settled(page, ["daily", "top_creators", "top_content"])
    expect(page.locator("#empty")).to_be_hidden()
    daily = page.evaluate(OPTION, "daily")
    years = {label[:4] for label in daily["x"]}
    assert years == {str(y) for y in range(first.year, end.year + 1)}, daily["x"]
    assert daily["x"][0] == first.strftime("%Y-%m")
    assert daily["x"][-1] == end.strftime("%Y-%m")
    assert daily["xName"] == "per month"
    assert daily["series"][0]["name"].startswith("Plays")
    assert sum(daily["series"][0]["data"]) == sum(per_artist.values())
    expect(page.locator("#daily-heading")).to_have_text(re.compile(r"^Plays per month"))
    # Scrobbles carry no listening time: the ranking counts plays, and says so.
    creators = page.evaluate(OPTION, "top_creators")
    expected = sorted(per_artist.items(), key=lambda kv: (-kv[1], kv[0]))
    assert creators["y"] == [artist for artist, _ in expected]
    assert creators["series"][0]["data"] == [plays for _, plays in expected]
    assert all(plays > 0 for plays in creators["series"][0]["data"])
    expect(page.locator("#top-creators-note")).to_have_text(re.compile(r"^by plays \("))
    expect(page.locator("#top-content-note")).to_have_text(re.compile(r"^by plays \("))
    expect(page.locator("#devices-note")).to_have_text(re.compile(r"^plays \("))
    page.wait_for_timeout(600)
    page.screenshot(path=str(artifacts / "history-all-time.png"), full_page=True)
    assert not page.errors, page.errors


def test_an_empty_range_offers_the_range_where_the_data_is(history: Any, new_page: Any):
    base, first, end, _ = history
    page = new_page()
    page.goto(base + "/?range=7d")  # a range the reader chose stays, empty or not
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#empty-title")).to_have_text("Nothing in this range")
    button = page.locator("#data-range")
    expect(button).to_be_visible()
    expect(button).to_contain_text(str(first.year))
    expect(button).to_contain_text(str(end.year))
    button.click()
    expect(page).to_have_url(
        re.compile(
            rf"range=custom&from={first.date().isoformat()}&to={end.date().isoformat()}(&|$)"
        )
    )
    settled(page, ["daily"])
    expect(page.locator("#empty")).to_be_hidden()
    # "All time" is offered too.
    page.goto(base + "/?range=30d")
    page.get_by_role("button", name="All time").click()
    expect(page).to_have_url(re.compile(r"/\?range=all(&|$)"))
    settled(page, ["daily"])
    assert not page.errors, page.errors


def test_a_title_of_the_history_opens_on_a_range_that_holds_it(history: Any, new_page: Any):
    base = history[0]
    page = new_page()
    page.goto(base + "/?range=all")
    link = page.locator("#titles-table .title-link").first
    expect(link).to_be_attached(timeout=45_000)
    content_id = link.get_attribute("data-content-id")
    page.goto(f"{base}/content/{content_id}")  # no range: the default, 7 days, is empty
    expect(page).to_have_url(re.compile(r"\?range=all(&|$)"))
    settled(page, ["content_daily"])
    daily = page.evaluate(OPTION, "content_daily")
    assert daily["xName"] == "per month"
    assert sum(daily["series"][0]["data"]) > 0
    expect(page.locator("#content-daily-heading")).to_have_text(re.compile(r"^Plays per month"))
    assert not page.errors, page.errors


def test_a_real_seven_year_spotify_history_by_month_with_listening_time(
    browser: Any, livedata: ModuleType, tmp_path: Path, new_page: Any
):
    real = real_data_dir()
    if real is None:
        pytest.skip("the real data sets are not available")
    export = real / "spotify-endsong-erickmay" / "endsong_1.json"  # 2014-05-25 to 2021-09-22
    import_export(tmp_path / "data", export)
    with livedata.running_up(tmp_path / "data", log_path=tmp_path / "up.log") as base:
        page = new_page()
        page.goto(base + "/?tz=UTC")
        expect(page).to_have_url(re.compile(r"[?&]range=all(&|$)"))
        settled(page, ["daily", "top_creators"])
        daily = page.evaluate(OPTION, "daily")
        assert daily["x"][0] == "2014-05"
        assert daily["x"][-1] == "2021-09"
        assert {label[:4] for label in daily["x"]} == {str(y) for y in range(2014, 2022)}
        assert daily["series"][0]["name"] == "Listening (h)"
        expect(page.locator("#daily-heading")).to_have_text("Listening time per month")
        # The months hold every day's listening time (bars are rounded to 0.1 h).
        rows = page.evaluate(
            "() => fetch('/v1/metrics/daily?from=1970-01-01T00:00:00Z"
            "&to=2100-01-01T00:00:00Z&tz=UTC').then(r => r.json()).then(b => b.rows)"
        )
        hours = sum(r["listening_s"] for r in rows) / 3600
        bars = [v for v in daily["series"][0]["data"] if v is not None]
        assert sum(bars) == pytest.approx(hours, abs=0.05 * len(bars))
        assert hours > 10
        expect(page.locator("#top-creators-note")).to_have_text("by listening time")
        creators = page.evaluate(OPTION, "top_creators")
        assert creators["xName"] == "h"
        assert creators["series"][0]["data"] == sorted(creators["series"][0]["data"], reverse=True)
        assert creators["series"][0]["data"][0] > 0
        assert not page.errors, page.errors
