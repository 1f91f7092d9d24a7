"""`playpulse query` as a new user runs it: a history that ended months ago shows without
--from/--to; table output says the window, JSON and CSV stay machine-readable and give
the same digits every run (durations rounded to milliseconds)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import pytest

from playpulse.config import Settings
from playpulse.testing import load_module, run_cli

_dataset = load_module(
    Path(__file__).parent.parent / "query" / "dataset.py", "playpulse_tests_query_dataset"
)
ev = _dataset.ev


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``playpulse ARGS...`` with 400-column tables (every column of overview, unwrapped)."""
    return run_cli(*args, env={"COLUMNS": "400"}, timeout_s=120)


@pytest.fixture(scope="module")
def old_history(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Two plays in March 2025 (long before the clock): 100.5 s and 40.2501 s of playing."""
    track = {"content_id": "t9", "content_type": "track", "creator": "Old Band"}
    settings, _ = _dataset.build(
        tmp_path_factory.mktemp("old"),
        [
            ev("o1-start", "play_start", "2025-03-02T10:00:00", "old", playback_id="o1",
               content=track, position_s=0),
            ev("o1-end", "play_end", "2025-03-02T10:01:40.500000", "old", playback_id="o1",
               position_s=100.5, reason="stopped"),
            ev("o2-start", "play_start", "2025-03-04T21:00:00", "old", playback_id="o2",
               content=track, position_s=0),
            ev("o2-end", "play_end", "2025-03-04T21:00:40.250100", "old", playback_id="o2",
               position_s=40.2501, reason="stopped"),
        ],
    )  # fmt: skip
    return settings


#: The table cells of ``overview`` on ``old_history`` (the columns this test is about).
OVERVIEW_CELLS = {
    "plays": "2",
    "streams": "2",
    "listeners": "1",
    "listening_s": "140.75",
    "sessions": "2",
    "avg_session_s": "70.375",
    "completion_rate": "—",
    "completion_rate_plays": "0",
    "skip_rate": "0",
    "skip_rate_plays": "2",
}


def test_query_without_a_range_shows_a_history_that_ended_months_ago(
    old_history: Settings,
) -> None:
    table = run("query", "overview", "--data-dir", str(old_history.data_dir))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    # 100.5 + 40.2501 = 140.7501 s, rounded to milliseconds. The track has no duration, so
    # completion is unknown ("—", over 0 plays); both plays ended as streams: skip rate 0
    # over 2 plays.
    (header,) = [[c.strip() for c in line.split("┃")[1:-1]] for line in lines if "┃" in line]
    (cells,) = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]
    row = dict(zip(header, cells, strict=True))
    assert {name: row[name] for name in OVERVIEW_CELLS} == OVERVIEW_CELLS
    assert (
        lines[-1] == "window: 2025-03-02 UTC to 2025-03-05 UTC (covering the data; end exclusive)"
    )

    berlin = run(
        "query", "overview", "--tz", "Europe/Berlin", "--data-dir", str(old_history.data_dir)
    )
    assert berlin.stdout.splitlines()[-1] == (
        # Berlin's midnights (23:00 UTC the day before), said in Berlin's time.
        "window: 2025-03-02 Europe/Berlin to 2025-03-05 Europe/Berlin (covering the data; end "
        "exclusive)"
    )


def test_json_and_csv_have_no_window_line_and_the_same_digits_every_run(
    old_history: Settings,
) -> None:
    first = run("query", "overview", "--format", "json", "--data-dir", str(old_history.data_dir))
    second = run("query", "overview", "--format", "json", "--data-dir", str(old_history.data_dir))
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    (row,) = json.loads(first.stdout)  # nothing but the rows
    assert (row["plays"], row["listening_s"], row["avg_session_s"]) == (2, 140.75, 70.375)
    daily = run("query", "daily", "--format", "csv", "--data-dir", str(old_history.data_dir))
    rows = list(csv.DictReader(io.StringIO(daily.stdout)))
    assert [(r["date"], r["listening_s"]) for r in rows] == [
        ("2025-03-02", "100.5"),
        ("2025-03-04", "40.25"),
    ]
