"""A new user's path on a real export (``shared/data/real``, skipped when absent):
`playpulse import FOLDER`, then `playpulse query overview` with no options shows the
history, which ended years before the clock, and says the window it covered."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from playpulse.testing import real_data_dir, run_cli

REAL = real_data_dir()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``playpulse ARGS...`` with 200-column tables."""
    return run_cli(*args, env={"COLUMNS": "200"}, timeout_s=300)


@pytest.mark.skipif(REAL is None, reason="the real data sets are not available")
def test_import_then_query_overview_shows_a_history_from_2014_to_2021(tmp_path: Path) -> None:
    assert REAL is not None
    data_dir = str(tmp_path / "data")
    # 2,080 Spotify plays, 2014-05-25 .. 2021-09-22 (SOURCE.md of the folder).
    imported = run("import", str(REAL / "spotify-endsong-erickmay"), "--data-dir", data_dir)
    assert imported.returncode == 0, imported.stderr

    table = run("query", "overview", "--data-dir", data_dir)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[-1] == (
        "window: 2014-05-25 UTC to 2021-09-23 UTC (covering the data; end exclusive)"
    )
    (row,) = json.loads(run("query", "overview", "--format", "json", "--data-dir", data_dir).stdout)
    assert row["plays"] == 2080
    assert row["listening_s"] > 0
    assert round(row["listening_s"], 3) == row["listening_s"]
