"""A query without a range covers the data (playpulse.query.window), on the data set of
``dataset.py`` (first play Tue 17th 09:00 UTC; the open play p9 last played at Wed 25th
11:59:40 UTC; the late product view c15 of the 10th counts nowhere) and on a history that
ended months before the clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from playpulse.config import Settings
from playpulse.query import QueryError, QueryParams, run_query
from playpulse.query.window import DataExtent, QueryWindow, data_extent, resolve_window
from playpulse.testing import load_module

_dataset = load_module(Path(__file__).with_name("dataset.py"), "playpulse_tests_query_dataset")
at, ev, NOW = _dataset.at, _dataset.ev, _dataset.NOW

EXTENT = DataExtent(at("2026-11-17T09:00:00"), at("2026-11-25T11:59:40"))


def test_the_extent_runs_from_the_first_play_to_the_last_playing_time(lake: Settings) -> None:
    assert data_extent(lake) == EXTENT


def test_no_range_covers_the_data_s_days_in_utc(lake: Settings) -> None:
    window = resolve_window(QueryParams(), lake, NOW)
    assert window == QueryWindow(
        at("2026-11-17T00:00:00"), at("2026-11-26T00:00:00"), "data", "data", EXTENT
    )
    assert window.as_json() == {
        "from": "2026-11-17T00:00:00Z",
        "to": "2026-11-26T00:00:00Z",
        "from_source": "data",
        "to_source": "data",
        "data_first": "2026-11-17T09:00:00Z",
        "data_last": "2026-11-25T11:59:40Z",
    }
    assert window.describe() == (
        "2026-11-17 UTC to 2026-11-26 UTC (covering the data; end exclusive)"
    )


def test_no_range_covers_the_data_s_days_in_the_query_zone(lake: Settings) -> None:
    # Berlin is UTC+1 in November: its midnights are 23:00 UTC the day before.
    window = resolve_window(QueryParams(tz="Europe/Berlin"), lake, NOW)
    assert window.bounds == (at("2026-11-16T23:00:00"), at("2026-11-25T23:00:00"))
    # Kolkata (UTC+5:30): 09:00 UTC on the 17th is 14:30 there, 11:59:40 on the 25th 17:29.
    window = resolve_window(QueryParams(tz="Asia/Kolkata"), lake, NOW)
    assert window.bounds == (at("2026-11-16T18:30:00"), at("2026-11-25T18:30:00"))


def test_one_bound_given_the_other_covers_the_data(lake: Settings) -> None:
    window = resolve_window(QueryParams(start=at("2026-11-20T00:00:00")), lake, NOW)
    assert (window.start_source, window.end_source) == ("request", "data")
    assert window.bounds == (at("2026-11-20T00:00:00"), at("2026-11-26T00:00:00"))
    window = resolve_window(QueryParams(end=at("2026-11-19T00:00:00")), lake, NOW)
    assert (window.start_source, window.end_source) == ("data", "request")
    assert window.bounds == (at("2026-11-17T00:00:00"), at("2026-11-19T00:00:00"))


def test_a_bound_beyond_the_data_gets_a_day_of_default(lake: Settings) -> None:
    window = resolve_window(QueryParams(start=at("2027-03-01T00:00:00")), lake, NOW)
    assert window.bounds == (at("2027-03-01T00:00:00"), at("2027-03-02T00:00:00"))
    assert window.end_source == "default"
    window = resolve_window(QueryParams(end=at("2026-01-01T00:00:00")), lake, NOW)
    assert window.bounds == (at("2025-12-31T00:00:00"), at("2026-01-01T00:00:00"))
    assert window.start_source == "default"
    assert run_query("overview", QueryParams(start=at("2027-03-01T00:00:00")), lake)[
        "plays"
    ].to_pylist() == [0]


def test_a_given_range_is_used_as_given_without_reading_the_data(tmp_path: Path) -> None:
    params = QueryParams(start=at("2026-11-01T00:00:00"), end=at("2026-11-02T00:00:00"))
    window = resolve_window(params, Settings(data_dir=tmp_path / "never-created"), NOW)
    assert window == QueryWindow(params.start, params.end, "request", "request", None)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="is not before end"):
        resolve_window(QueryParams(start=params.end, end=params.start), Settings(), NOW)


def test_without_data_the_default_is_the_31_days_up_to_a_day_after_now(tmp_path: Path) -> None:
    window = resolve_window(QueryParams(), Settings(data_dir=tmp_path), NOW)
    assert window == QueryWindow(
        at("2026-10-26T12:00:00"), at("2026-11-26T12:00:00"), "default", "default", None
    )
    assert window.as_json()["data_first"] is None
    # ... and the query answers, empty.
    rows = run_query("overview", QueryParams(), Settings(data_dir=tmp_path), now=NOW).to_pylist()
    assert rows[0]["plays"] == 0
    assert rows[0]["listening_s"] == 0.0


def old_history(ingest_into: Callable[[Path, Iterable[Any]], Settings], path: Path) -> Settings:
    """Two plays in March 2025, 20 months before ``NOW``: 100.5 s and 40.25 s of playing."""
    track = {"content_id": "t9", "content_type": "track", "creator": "Old Band"}
    return ingest_into(
        path,
        [
            ev("o1-start", "play_start", "2025-03-02T10:00:00", "old", playback_id="o1",
               content=track, position_s=0),
            ev("o1-end", "play_end", "2025-03-02T10:01:40.500000", "old", playback_id="o1",
               position_s=100.5, reason="stopped"),
            ev("o2-start", "play_start", "2025-03-04T21:00:00", "old", playback_id="o2",
               content=track, position_s=0),
            ev("o2-end", "play_end", "2025-03-04T21:00:40.250000", "old", playback_id="o2",
               position_s=40.25, reason="stopped"),
        ],
    )  # fmt: skip


def test_a_history_that_ended_months_ago_answers_by_default(
    tmp_path: Path, ingest_into: Callable[[Path, Iterable[Any]], Settings]
) -> None:
    settings = old_history(ingest_into, tmp_path)
    (row,) = run_query("overview", QueryParams(), settings, now=NOW).to_pylist()
    assert (row["plays"], row["listening_s"]) == (2, 140.75)
    window = resolve_window(QueryParams(), settings, NOW)
    assert window.bounds == (at("2025-03-02T00:00:00"), at("2025-03-05T00:00:00"))
    # Explicit ranges are unchanged: the last 31 days before NOW hold nothing.
    recent = QueryParams(start=at("2026-10-25T00:00:00"), end=at("2026-11-25T00:00:00"))
    assert run_query("overview", recent, settings).to_pylist()[0]["plays"] == 0


def test_describe_says_where_each_bound_comes_from() -> None:
    window = QueryWindow(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 12, tzinfo=UTC), "request",
        "data", None,
    )  # fmt: skip
    assert window.describe() == (
        "2026-01-01 UTC to 2026-01-01T12:00:00Z (from as requested, to the data's; end exclusive)"
    )
