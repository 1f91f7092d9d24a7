"""Quality of experience and yearly listener stats, on ``qoe_dataset.py``'s known answers
(the arithmetic is in that module's docstring)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from playpulse.config import Settings
from playpulse.query import CATALOG, QueryParams, run_query
from playpulse.query.catalog import IMPORTED_PLAY_FORMATS
from playpulse.sources.importers.detect import FORMATS
from playpulse.testing import load_module


def _data() -> ModuleType:
    return load_module(Path(__file__).with_name("qoe_dataset.py"), "playpulse_tests_qoe_dataset")


DATA = _data()
DAY = {"start": datetime(2026, 3, 10, tzinfo=UTC), "end": datetime(2026, 3, 11, tzinfo=UTC)}
YEARS = {"start": datetime(2025, 1, 1, tzinfo=UTC), "end": datetime(2027, 1, 1, tzinfo=UTC)}


@pytest.fixture(scope="module")
def qoe_lake(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings, stats = DATA.build(tmp_path_factory.mktemp("qoe"), DATA.ROWS)
    assert stats is not None
    assert stats.late == 0
    return settings


def _rows(settings: Settings, name: str, **params: Any) -> list[dict[str, Any]]:
    table = run_query(name, QueryParams(**params), settings, now=DATA.NOW)
    assert table.column_names == list(CATALOG[name].columns)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


QOE_ALL = {
    "plays": 3,
    "startup_p50_s": 2.0,
    "startup_p95_s": 6.0,
    "rebuffer_ratio": pytest.approx(3 / 240),
    "rebuffers_per_hour": pytest.approx(15.0),
    "failure_rate": pytest.approx(1 / 3),
    "failed_plays": 1,
    "watch_time_s": 240.0,
}


def test_qoe_over_player_plays(qoe_lake: Settings) -> None:
    assert _rows(qoe_lake, "qoe", **DAY) == [QOE_ALL]


def test_qoe_of_a_range_without_plays_is_unknown_not_zero(qoe_lake: Settings) -> None:
    empty = {"start": datetime(2026, 3, 12, tzinfo=UTC), "end": datetime(2026, 3, 13, tzinfo=UTC)}
    (row,) = _rows(qoe_lake, "qoe", **empty)
    assert (row["plays"], row["watch_time_s"]) == (0, 0)
    for column in ("startup_p50_s", "startup_p95_s", "rebuffer_ratio", "failure_rate"):
        assert row[column] is None, column


def test_qoe_titles(qoe_lake: Settings) -> None:
    rows = _rows(qoe_lake, "qoe_titles", **DAY)
    assert [(r["content_id"], r["title"], r["creator"], r["plays"]) for r in rows] == [
        ("x1", "Clip X", "Xena", 2),
        ("y1", "Clip Y", "Yuri", 1),  # q4 is an import's play
    ]
    x1, y1 = rows
    # x1: startups 2 and 6 (p50: rank 1 of 2; p95: rank 2), watch 180 s, 3 s rebuffering
    assert (x1["startup_p50_s"], x1["startup_p95_s"]) == (2.0, 6.0)
    assert x1["rebuffer_ratio"] == pytest.approx(3 / 180)
    assert x1["rebuffers_per_hour"] == pytest.approx(20.0)
    assert (x1["failure_rate"], x1["failed_plays"]) == (0.5, 1)
    assert (y1["startup_p50_s"], y1["rebuffer_ratio"], y1["failure_rate"]) == (0.0, 0.0, 0.0)
    assert _rows(qoe_lake, "qoe_titles", **DAY, limit=1) == rows[:1]
    assert [r["content_id"] for r in _rows(qoe_lake, "qoe_titles", **DAY, creator="Yuri")] == ["y1"]


def test_qoe_devices(qoe_lake: Settings) -> None:
    rows = _rows(qoe_lake, "qoe_devices", **DAY)
    assert [(r["platform"], r["device_type"], r["plays"]) for r in rows] == [
        ("web", "desktop", 2),
        ("ios", "mobile", 1),
    ]
    web, ios = rows
    assert (web["startup_p50_s"], web["startup_p95_s"], web["failure_rate"]) == (0.0, 6.0, 0.5)
    assert (ios["startup_p50_s"], ios["rebuffers_per_hour"]) == (2.0, pytest.approx(30.0))


def test_every_play_importer_is_excluded_from_qoe() -> None:
    # A new importer of plays must be added to IMPORTED_PLAY_FORMATS.
    shop = {"taobao_user_behavior", "diginetica_item_views"}
    assert set(IMPORTED_PLAY_FORMATS) == set(FORMATS) - shop


def _year(rows: list[dict[str, Any]], user: str = "yy") -> list[dict[str, Any]]:
    return [r for r in rows if r["user_id"] == user]


def test_yearly_listeners_utc(qoe_lake: Settings) -> None:
    assert _year(_rows(qoe_lake, "yearly_listeners", **YEARS, limit=100)) == [
        {"user_id": "yy", "year": 2025, "plays": 1, "listening_s": 60.0, "listening_days": 1,
         "artists": 1, "new_artists": 1, "longest_streak_days": 1,
         "streak_start": date(2025, 12, 31), "streak_end": date(2025, 12, 31)},
        {"user_id": "yy", "year": 2026, "plays": 6, "listening_s": 840.0, "listening_days": 5,
         "artists": 3, "new_artists": 2, "longest_streak_days": 3,
         "streak_start": date(2026, 1, 5), "streak_end": date(2026, 1, 7)},
    ]  # fmt: skip


def test_yearly_listeners_in_a_zone(qoe_lake: Settings) -> None:
    rows = _year(_rows(qoe_lake, "yearly_listeners", **YEARS, tz="Europe/Berlin", limit=100))
    assert rows == [
        {"user_id": "yy", "year": 2026, "plays": 7, "listening_s": 900.0, "listening_days": 6,
         "artists": 3, "new_artists": 3, "longest_streak_days": 3,
         "streak_start": date(2026, 1, 1), "streak_end": date(2026, 1, 3)},
    ]  # fmt: skip


def test_yearly_top_ranks_by_time_and_by_plays(qoe_lake: Settings) -> None:
    rows = [r for r in _year(_rows(qoe_lake, "yearly_top", **YEARS)) if r["year"] == 2026]
    artists = [
        (r["name"], r["plays"], r["listening_s"], r["rank_by_time"], r["rank_by_plays"])
        for r in rows
        if r["kind"] == "artist"
    ]
    assert artists == [("A3", 2, 600.0, 1, 2), ("A1", 3, 180.0, 2, 1), ("A2", 1, 60.0, 3, 3)]
    titles = [(r["content_id"], r["name"]) for r in rows if r["kind"] == "title"]
    assert titles == [("a3t", "Song 3"), ("a1t", "Song 1"), ("a2t", "Song 2")]
    top1 = _year(_rows(qoe_lake, "yearly_top", **YEARS, limit=1))
    assert {(r["year"], r["kind"], r["name"]) for r in top1} == {
        (2025, "artist", "A1"),
        (2025, "title", "Song 1"),
        (2026, "artist", "A3"),  # by time
        (2026, "artist", "A1"),  # by plays
        (2026, "title", "Song 3"),
        (2026, "title", "Song 1"),
    }


def test_listening_clock(qoe_lake: Settings) -> None:
    rows = [r for r in _year(_rows(qoe_lake, "listening_clock", **YEARS)) if r["year"] == 2026]
    assert [r["hour_of_day"] for r in rows] == list(range(24))
    busy = {r["hour_of_day"]: (r["plays"], r["listening_s"]) for r in rows if r["plays"]}
    assert busy == {10: (3, 180.0), 14: (1, 60.0), 20: (2, 600.0)}
    assert all(r["listening_s"] == 0 for r in rows if not r["plays"])


# -- Filters by listener, device, platform and country (the dashboard's click-through) ----
# Playing time on the 10th: q1 120 s - 2 s startup - 3 s rebuffering = 115 s (DE, ios
# mobile, qa); q2 54 s (11:00:06 to the error at 11:01:00) and q3 60 s (US, web desktop,
# qb); q4 60 s (no context: country, device and platform unknown; qc).


def _overview(settings: Settings, **filters: Any) -> tuple[int, float, int]:
    (row,) = _rows(settings, "overview", **DAY, **filters)
    return row["plays"], row["listening_s"], row["listeners"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, (4, 289.0, 3)),
        ({"country": "DE"}, (1, 115.0, 1)),
        ({"country": "US"}, (2, 114.0, 1)),
        ({"device_type": "desktop"}, (2, 114.0, 1)),
        ({"device_type": "unknown"}, (1, 60.0, 1)),
        ({"platform": "ios"}, (1, 115.0, 1)),
        ({"user_id": "qb"}, (2, 114.0, 1)),
        ({"user_id": "qb", "content_id": "y1"}, (1, 60.0, 1)),
        ({"country": "unknown"}, (1, 60.0, 1)),
        ({"country": "FR"}, (0, 0.0, 0)),
    ],
)
def test_filters_follow_a_click_on_a_breakdown(
    qoe_lake: Settings, filters: dict[str, str], expected: tuple[int, float, int]
) -> None:
    assert _overview(qoe_lake, **filters) == expected


def test_sessions_follow_the_listener_filter(qoe_lake: Settings) -> None:
    (qb,) = _rows(qoe_lake, "overview", **DAY, user_id="qb")
    (all_,) = _rows(qoe_lake, "overview", **DAY)
    assert (qb["sessions"], all_["sessions"]) == (2, 4)  # q2 and q3 are an hour apart
    rows = _rows(qoe_lake, "user_sessions", **DAY, user_id="qb")
    assert [(r["user_id"], r["sessions"]) for r in rows] == [("qb", 2)]


def test_countries(qoe_lake: Settings) -> None:
    assert _rows(qoe_lake, "countries", **DAY) == [
        {"country": "DE", "plays": 1, "listeners": 1, "listening_s": 115.0},
        {"country": "US", "plays": 2, "listeners": 1, "listening_s": 114.0},
        {"country": "unknown", "plays": 1, "listeners": 1, "listening_s": 60.0},
    ]
    assert _rows(qoe_lake, "countries", **DAY, device_type="desktop") == [
        {"country": "US", "plays": 2, "listeners": 1, "listening_s": 114.0},
    ]
