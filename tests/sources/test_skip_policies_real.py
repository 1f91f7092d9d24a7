"""The two skip rates on a real Spotify extended export (``shared/data/real``, read in
place; skipped when absent): the 30-second rule and Spotify's own signal disagree, and
each equals an independent computation from the export's rows.

erickmay's ``endsong_1.json`` (2014-2021, 2,080 rows) is the 2021-era generation: its
``skipped`` flag is null on most rows, so the source's verdict comes mostly from
``reason_end`` (``fwdbtn``/``backbtn``), the fallback of docs/metrics.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from playpulse.cli import app
from playpulse.testing import real_data_dir

REAL = real_data_dir()
pytestmark = pytest.mark.skipif(REAL is None, reason="the real data sets are not available")


def source_says(row: dict[str, Any]) -> bool | None:
    """Spotify's verdict, computed here from the raw row: the flag, else the buttons."""
    if isinstance(row.get("skipped"), bool):
        return bool(row["skipped"])
    reason = row.get("reason_end")
    if isinstance(reason, str) and reason not in ("", "unknown"):
        return reason in ("fwdbtn", "backbtn")
    return None


def test_the_two_skip_rates_of_a_real_export_differ_and_each_is_exact(tmp_path: Path) -> None:
    assert REAL is not None
    path = REAL / "spotify-endsong-erickmay" / "endsong_1.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    rule = [row["ms_played"] < 30_000 for row in rows]
    signal = [s for s in map(source_says, rows) if s is not None]

    runner = CliRunner()
    data_dir = str(tmp_path / "data")
    imported = runner.invoke(app, ["import", str(path), "--user", "erick", "--data-dir", data_dir])
    assert imported.exit_code == 0, imported.output
    out = runner.invoke(app, ["query", "overview", "--format", "json", "--data-dir", data_dir])
    assert out.exit_code == 0, out.output
    (overview,) = json.loads(out.output)

    assert overview["plays"] == len(rows) == 2080
    assert (overview["skip_rate"], overview["skip_rate_plays"]) == (sum(rule) / len(rule), 2080)
    assert overview["source_skip_rate"] == sum(signal) / len(signal)
    assert overview["source_skip_rate_plays"] == len(signal) == 2079  # one says "unknown"
    # 23.0 % by the 30-second rule, 12.4 % by Spotify's signal: not the same quantity.
    assert overview["skip_rate"] - overview["source_skip_rate"] > 0.10
    # No track duration in a Spotify export: whether a play is a qualified listen is
    # unknown, never 0.
    assert (overview["qualified_listen_rate"], overview["qualified_listen_rate_plays"]) == (
        None,
        0,
    )
    assert overview["qualified_listens"] is None
