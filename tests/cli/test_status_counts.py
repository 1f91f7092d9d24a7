"""`playpulse status` reports distinct events (in the lake) and stream records apart: a
file imported twice is in the lake once, and history never passes through the stream."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from playpulse.testing import run_cli

WATCH_HISTORY = [
    {
        "header": "YouTube",
        "title": f"Watched Video {i}",
        "titleUrl": f"https://www.youtube.com/watch?v=vid{i:08d}",
        "subtitles": [{"name": "Cat Channel", "url": "https://www.youtube.com/channel/UC1"}],
        "time": f"2021-01-0{i + 1}T10:00:00.000Z",
        "products": ["YouTube"],
        "activityControls": ["YouTube watch history"],
    }
    for i in range(3)
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``playpulse ARGS...`` with 200-column tables."""
    return run_cli(*args, env={"COLUMNS": "200"}, timeout_s=120)


def test_a_file_imported_twice_is_three_events_and_no_stream_records(tmp_path: Path) -> None:
    export = tmp_path / "watch-history.json"
    export.write_text(json.dumps(WATCH_HISTORY))
    data_dir = str(tmp_path / "data")
    outputs = []
    for _ in range(2):
        imported = run("import", str(export), "--data-dir", data_dir)
        assert imported.returncode == 0, imported.stderr
        outputs.append(imported.stdout + imported.stderr)
    assert "3 new events added to the lake (0 were there already)" in outputs[0]
    assert "0 new events added to the lake (3 were there already)" in outputs[1]

    info = json.loads(run("status", "--data-dir", data_dir, "--format", "json").stdout)
    assert info["events_in_lake"] == 3
    assert info["duplicates_dropped"] == 0  # of live traffic: none here
    assert info["late_events"] == 0
    assert info["lake_files_unreadable"] == 0
    assert info["stream_records"] == 0
    assert sum(p["records"] for p in info["partitions"]) == 0
    assert "events" not in info  # the old, ambiguous key

    table = run("status", "--data-dir", data_dir).stdout
    assert "events       3 distinct, in the lake (0 duplicate records dropped, 0 late)" in table
    assert "stream       0 records, every append" in table
    assert "stream records" in table  # the partition table's column
