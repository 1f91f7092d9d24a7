"""The enrichment on the dashboard, in Debian's Chromium against a real `playpulse up`:
a title page lists the titles played in the same sessions ("Listeners also played", with
the listeners they share, linked to their pages) and its genre; the overview shows
listening time per genre."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from playpulse.config import Settings
from playpulse.enrich.catalog import import_metadata, refresh_seen
from playpulse.enrich.similarity import refresh_similar
from playpulse.testing import load_module

_TESTS = Path(__file__).resolve().parents[1]
livedata = load_module(_TESTS / "api" / "livedata.py", "playpulse_tests_enrich_livedata")
expect = pytest.importorskip("playwright.sync_api", reason="playwright is missing").expect


def test_title_page_and_overview_show_the_enrichment(
    browser: Any, listened: Settings, tmp_path: Path
) -> None:
    refresh_seen(listened)
    refresh_similar(listened)
    meta = tmp_path / "meta.csv"
    meta.write_text("content_id,genres\nspotify:track:a,rock\nspotify:track:b,jazz\n")
    import_metadata(listened, meta)
    with livedata.running_up(listened.data_dir, log_path=tmp_path / "up.log") as base:
        context = browser.new_context()
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{base}/content/spotify%3Atrack%3Aa")
            similar = page.locator("#content-similar li")
            expect(similar.first).to_contain_text("Song b")
            expect(similar.first).to_contain_text("3 listeners in common")
            expect(page.locator("#content-tags")).to_contain_text("genre: rock")
            href = similar.first.locator("a").get_attribute("href")
            assert href is not None
            assert href.startswith("/content/spotify%3Atrack%3Ab")
            page.goto(f"{base}/")
            expect(page.locator("#labels-card")).to_be_visible()
            expect(page.locator("#labels-genres li").first).to_contain_text("rock")
            expect(page.locator("#labels-genres")).to_contain_text("jazz")
            assert errors == []
        finally:
            context.close()


def test_no_enrichment_no_card(browser: Any, listened: Settings, tmp_path: Path) -> None:
    # Never enriched: the title page shows no empty "Listeners also played" placeholder.
    with livedata.running_up(listened.data_dir, log_path=tmp_path / "up.log") as base:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{base}/content/spotify%3Atrack%3Aa")
            expect(page.locator("#content-title")).to_have_text("Song a")
            expect(page.locator("#content-daily-heading")).to_be_visible()
            page.wait_for_load_state("networkidle")
            expect(page.locator("#content-similar-card")).to_be_hidden()
            expect(page.locator("#labels-card")).to_be_hidden()
        finally:
            context.close()
