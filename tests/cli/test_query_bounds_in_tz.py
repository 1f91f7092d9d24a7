"""`playpulse query --from/--to` are read in `--tz` when it is given (issue #11, item 7):
`--from 2024-01-01 --to 2024-02-01 --tz Europe/Berlin` is Berlin's midnights; an explicit
offset or Z in a value wins; without --tz they are UTC. The table's window line says the
window in --tz.

A small Spotify extended history goes through the real `playpulse import`, processor and
lake; the queries run as a user runs them (`playpulse.testing.run_cli`).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from playpulse.testing import run_cli, write_spotify_history

# Three plays around the ends of January 2024 (Berlin is UTC+1 then); Spotify's `ts` is
# when a play ended, so each starts `ms_played` before it:
#   A 61 s from 2023-12-31T23:30Z = 2024-01-01 00:30 in Berlin: January in Berlin only
#   B 62 s from 2024-01-15T12:00Z: January everywhere
#   C 64 s from 2024-01-31T23:30Z = 2024-02-01 00:30 in Berlin: January in UTC only
PLAYS = {"A": ("2023-12-31T23:31:01Z", 61_000), "B": ("2024-01-15T12:01:02Z", 62_000),
         "C": ("2024-01-31T23:31:04Z", 64_000)}  # fmt: skip
SECONDS = {name: ms / 1000 for name, (_, ms) in PLAYS.items()}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``playpulse ARGS...`` with 200-column tables."""
    return run_cli(*args, env={"COLUMNS": "200"}, timeout_s=120)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data dir holding the three imported plays."""
    root = tmp_path_factory.mktemp("bounds-in-tz")
    export = write_spotify_history(root / "Streaming_History_Audio_2024.json", PLAYS)
    data = str(root / "data")
    imported = run("import", str(export), "--user", "sam", "--data-dir", data)
    assert imported.returncode == 0, imported.stderr
    return data


def overview(data_dir: str, *args: str) -> dict[str, Any]:
    """``query overview ARGS --format json``'s one row."""
    result = run("query", "overview", *args, "--format", "json", "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert isinstance(row, dict)
    return row


def window_line(data_dir: str, *args: str) -> str:
    """The last line of ``query overview ARGS``'s table output."""
    result = run("query", "overview", *args, "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


def played(*names: str) -> tuple[int, float]:
    """(plays, listening_s) of the named plays."""
    return len(names), round(sum(SECONDS[n] for n in names), 3)


def figures(row: dict[str, Any]) -> tuple[int, float]:
    return row["plays"], row["listening_s"]


JANUARY = ("--from", "2024-01-01", "--to", "2024-02-01")


def test_dates_without_tz_are_utc_midnights(data_dir: str) -> None:
    assert figures(overview(data_dir, *JANUARY)) == played("B", "C")
    assert window_line(data_dir, *JANUARY) == (
        "window: 2024-01-01 UTC to 2024-02-01 UTC (as requested; end exclusive)"
    )


def test_dates_with_tz_are_midnights_in_that_zone(data_dir: str) -> None:
    berlin = (*JANUARY, "--tz", "Europe/Berlin")
    assert figures(overview(data_dir, *berlin)) == played("A", "B")
    assert window_line(data_dir, *berlin) == (
        "window: 2024-01-01 Europe/Berlin to 2024-02-01 Europe/Berlin (as requested; end exclusive)"
    )
    # New York (UTC-5): its January runs 05:00Z to 05:00Z, so C (23:30Z on the 31st) is in.
    assert figures(overview(data_dir, *JANUARY, "--tz", "America/New_York")) == played("B", "C")


def test_an_offset_or_z_in_the_value_wins_over_tz(data_dir: str) -> None:
    utc_bounds = ("--from", "2024-01-01T00:00:00Z", "--to", "2024-02-01T00:00:00+00:00")
    assert figures(overview(data_dir, *utc_bounds, "--tz", "Europe/Berlin")) == played("B", "C")
    # The window line shows those instants in --tz.
    assert window_line(data_dir, *utc_bounds, "--tz", "Europe/Berlin") == (
        "window: 2024-01-01T01:00:00+01:00 to 2024-02-01T01:00:00+01:00 (as requested; end "
        "exclusive)"
    )
    # One bound in Berlin, the other with its own Z (and RFC 3339's lower-case t and z).
    mixed = ("--from", "2024-01-01", "--to", "2024-02-01t00:00:00z", "--tz", "Europe/Berlin")
    assert figures(overview(data_dir, *mixed)) == played("A", "B", "C")


def test_a_time_without_offset_is_wall_clock_time_in_tz(data_dir: str) -> None:
    # 00:45 in Berlin is after A started (00:30 there), 00:15 before.
    after_a = ("--from", "2024-01-01T00:45", "--to", "2024-02-01", "--tz", "Europe/Berlin")
    assert figures(overview(data_dir, *after_a)) == played("B")
    before_a = ("--from", "2024-01-01T00:15:00", "--to", "2024-02-01", "--tz", "Europe/Berlin")
    assert figures(overview(data_dir, *before_a)) == played("A", "B")
    assert window_line(data_dir, *before_a) == (
        "window: 2024-01-01T00:15:00+01:00 to 2024-02-01 Europe/Berlin (as requested; end "
        "exclusive)"
    )


def test_a_left_out_bound_still_covers_the_data_in_tz(data_dir: str) -> None:
    # Only --from, in Berlin: the end is the midnight (Berlin) after C's day there.
    row = overview(data_dir, "--from", "2024-01-01", "--tz", "Europe/Berlin")
    assert figures(row) == played("A", "B", "C")
    assert window_line(data_dir, "--from", "2024-01-01", "--tz", "Europe/Berlin") == (
        "window: 2024-01-01 Europe/Berlin to 2024-02-02 Europe/Berlin (from as requested, to "
        "the data's; end exclusive)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--from", "yesterday"),
            "error: --from: 'yesterday' is not a date (2026-11-01) or an ISO time "
            "(2026-11-01T08:00:00Z)",
        ),
        (("--to", "2024-13-01", "--tz", "Europe/Berlin"), "error: --to: '2024-13-01' is not"),
        (("--from", "2024-01-01", "--tz", "Mars/Olympus"), "error: --tz: 'Mars/Olympus' is"),
        (
            ("--from", "2024-02-01", "--to", "2024-01-01", "--tz", "Europe/Berlin"),
            "error: --from/--to: start",
        ),
    ],
)
def test_bad_bounds_say_which_and_why(data_dir: str, args: tuple[str, ...], message: str) -> None:
    result = run("query", "overview", *args, "--data-dir", data_dir)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr
