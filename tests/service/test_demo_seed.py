"""``playpulse demo``: one seed, one data set (#17). Two runs into fresh data dirs answer
every catalog query the same; a data dir that holds events is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from playpulse.config import Settings
from playpulse.demo import demo_anchor, run_demo
from playpulse.errors import PlaypulseError
from playpulse.query import QueryParams
from playpulse.testing import assert_same_answers, catalog_answers

ANCHOR = datetime(2026, 11, 20, tzinfo=UTC)
EVENTS = 1500


def _demo(path: Path) -> Settings:
    settings = Settings(data_dir=path)
    run_demo(settings, events=EVENTS, seed=7, anchor=ANCHOR, timeout_s=120)
    return settings


def test_the_same_seed_twice_into_fresh_dirs_answers_the_same(tmp_path: Path) -> None:
    first = _demo(tmp_path / "a")
    second = _demo(tmp_path / "b")
    params = QueryParams(
        start=ANCHOR - timedelta(days=40), end=ANCHOR + timedelta(days=2), limit=10_000
    )
    answers = catalog_answers(first, params)
    assert answers["overview"][0]["plays"] > 50  # the comparison means something
    assert_same_answers(catalog_answers(second, params), answers)
    # Another seed is other data.
    other = Settings(data_dir=tmp_path / "c")
    run_demo(other, events=EVENTS, seed=8, anchor=ANCHOR, timeout_s=120)
    assert catalog_answers(other, params)["overview"] != answers["overview"]
    # A data dir that holds events is refused, with what to do.
    with pytest.raises(PlaypulseError, match=r"already holds [\d,]+ events.*new --data-dir"):
        run_demo(first, events=EVENTS, seed=7, anchor=ANCHOR)
    assert_same_answers(catalog_answers(first, params), answers)  # and left as it was


def test_the_anchor_is_the_start_of_the_utc_day() -> None:
    assert demo_anchor(datetime(2026, 3, 9, 23, 59, tzinfo=UTC)) == datetime(2026, 3, 9, tzinfo=UTC)
    berlin = datetime(2026, 3, 10, 0, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin"))
    assert demo_anchor(berlin) == datetime(2026, 3, 10, tzinfo=UTC)
