"""A shop data set that records only views (DIGINETICA), in Debian's Chromium against a
real `playpulse up`: the funnel draws the views and names the steps the data cannot tell
with "—" instead of drawing them as 0."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

expect = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing: pip install playwright"
).expect
expect.set_options(timeout=20_000)

FUNNEL = """
() => {
  const chart = echarts.getInstanceByDom(document.querySelector('[data-chart="funnel"]'));
  const o = chart.getOption();
  return {data: o.series[0].data.map(d => [d.name, d.value]),
          note: (o.graphic && o.graphic[0] && o.graphic[0].elements
                 && o.graphic[0].elements.length) ? o.graphic[0].elements[0].style.text : null};
}
"""


@pytest.fixture(scope="module")
def views_only(
    browser: Any, livedata: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`playpulse up` on 12 item views (3 sessions) imported from a DIGINETICA file."""
    root = tmp_path_factory.mktemp("dashboard-shop-unknown")
    day = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    lines = ["session_id;user_id;item_id;timeframe;eventdate"]
    for session in range(3):
        for k in range(4):
            lines.append(f"{session + 1};NA;{100 + k};{k * 60_000};{day}")
    export = root / "train-item-views.csv"
    export.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYPULSE_")}
    done = subprocess.run(
        [sys.executable, "-m", "playpulse", "--data-dir", str(root / "data"), "import",
         str(export)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with livedata.running_up(root / "data", log_path=root / "up.log") as base:
        yield base


def test_the_funnel_names_the_steps_a_views_only_data_set_cannot_tell(
    views_only: str, new_page: Any
):
    page = new_page()
    page.goto(views_only + "/?range=30d")
    page.wait_for_function(
        """() => { const el = document.querySelector('[data-chart="funnel"]');
                   return el && ["ready", "empty", "error"].includes(el.dataset.state); }""",
        timeout=45_000,
    )
    assert page.locator('[data-chart="funnel"]').get_attribute("data-state") == "ready"
    funnel = page.evaluate(FUNNEL)
    assert funnel["data"] == [["Product views", 12]]
    assert funnel["note"] == ("Not in this data: Added to cart — · Orders — · Completed orders —")
    assert not page.errors, page.errors
