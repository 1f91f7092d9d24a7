"""The skip policies side by side in ``overview``, ``top_content`` and ``top_creators``
(docs/metrics.md: "Skip (30-second rule)", "Skip by the source's signal", "Qualified
listen"), on small exports imported through the real importer, CLI and processor.

Spotify extended rows (``ms_played``, ``skipped``, ``reason_end``) and what each policy
says of them:

==== ======= ========= ========= =========== ========== ===========
row  track   ms_played skipped   reason_end  < 30 s     source
==== ======= ========= ========= =========== ========== ===========
1    Alpha   10,000    true      fwdbtn      skip       skip
2    Alpha   200,000   true      endplay     no         skip (flag)
3    Beta    5,000     false     trackdone   skip       no (flag)
4    Beta    180,000   (absent)  fwdbtn      no         skip (button)
5    Beta    240,000   (absent)  trackdone   no         no
6    Gamma   60,000    (absent)  (absent)    no         unknown
==== ======= ========= ========= =========== ========== ===========

Plus one Spotify basic row (20 s: a skip by the rule; no source signal) and two Last.fm
scrobbles (qualified listens by the scrobbler; nothing else known). No row carries a
track duration, so no Spotify play can tell whether it is a qualified listen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from playpulse.cli import app


def spotify_row(n: int, track: str, ms: int, **signal: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ts": f"2024-03-01T10:{n:02d}:00Z",
        "platform": "ios",
        "ms_played": ms,
        "conn_country": "DE",
        "master_metadata_track_name": track,
        "master_metadata_album_artist_name": "Band A" if track != "Gamma" else "Band G",
        "master_metadata_album_album_name": "LP",
        "spotify_track_uri": f"spotify:track:{track.lower()}",
        "reason_start": "clickrow",
        "shuffle": False,
    }
    row.update(signal)
    return row


SPOTIFY_EXTENDED = [
    spotify_row(1, "Alpha", 10_000, skipped=True, reason_end="fwdbtn"),
    spotify_row(5, "Alpha", 200_000, skipped=True, reason_end="endplay"),
    spotify_row(10, "Beta", 5_000, skipped=False, reason_end="trackdone"),
    spotify_row(15, "Beta", 180_000, reason_end="fwdbtn"),
    spotify_row(20, "Beta", 240_000, reason_end="trackdone"),
    spotify_row(30, "Gamma", 60_000),
]
SPOTIFY_BASIC = [
    {
        "endTime": "2024-03-02 09:00",
        "artistName": "Band B",
        "trackName": "Delta",
        "msPlayed": 20_000,
    }
]
LASTFM = (
    "uts,utc_time,artist,artist_mbid,album,album_mbid,track,track_mbid\n"
    '"1720688852","11 Jul 2024, 09:07","The Cure","","Faith","","Primary",""\n'
    '"1720688656","11 Jul 2024, 09:04","The Cure","","Faith","","The Holy Hour",""\n'
)
POLICIES = (
    "skip_rate",
    "skip_rate_plays",
    "source_skip_rate",
    "source_skip_rate_plays",
    "qualified_listen_rate",
    "qualified_listen_rate_plays",
)


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("skip_policies")
    extended = root / "Streaming_History_Audio_2024.json"
    extended.write_text(json.dumps(SPOTIFY_EXTENDED), encoding="utf-8")
    basic = root / "StreamingHistory_music_0.json"
    basic.write_text(json.dumps(SPOTIFY_BASIC), encoding="utf-8")
    scrobbles = root / "scrobbles.csv"
    scrobbles.write_text(LASTFM, encoding="utf-8")
    data = root / "data"
    for path in (extended, basic, scrobbles):
        cli("import", str(path), "--user", "sam", "--data-dir", str(data))
    return data


def query(data_dir: Path, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        cli("query", name, "--limit", "50", "--format", "json", "--data-dir", str(data_dir))
    )
    return rows


def policies(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] for name in POLICIES)


def test_overview_reports_each_policy_over_the_plays_that_can_tell(data_dir: Path) -> None:
    (row,) = query(data_dir, "overview")
    assert row["plays"] == 9
    # 30-second rule: rows 1, 3 and the basic row, of the 7 Spotify plays (scrobbles have
    # no playing time). Source: rows 1, 2, 4 of the 5 extended rows with a signal.
    # Qualified: the 2 scrobbles; no Spotify play has a duration.
    assert policies(row) == (3 / 7, 7, 3 / 5, 5, 1.0, 2)
    assert row["qualified_listens"] == 2


def test_top_content_reports_each_policy_per_title(data_dir: Path) -> None:
    by_title = {r["title"]: policies(r) for r in query(data_dir, "top_content")}
    assert by_title == {
        "Alpha": (0.5, 2, 1.0, 2, None, 0),
        "Beta": (1 / 3, 3, 1 / 3, 3, None, 0),
        "Gamma": (0.0, 1, None, 0, None, 0),  # the source says nothing: unknown
        "Delta": (1.0, 1, None, 0, None, 0),  # Spotify basic has no skip signal
        "Primary": (None, 0, None, 0, 1.0, 1),
        "The Holy Hour": (None, 0, None, 0, 1.0, 1),
    }


def test_top_creators_reports_each_policy_per_creator(data_dir: Path) -> None:
    by_creator = {r["creator"]: r for r in query(data_dir, "top_creators")}
    assert {name: policies(r) for name, r in by_creator.items()} == {
        "Band A": (0.4, 5, 0.6, 5, None, 0),  # Alpha + Beta
        "Band G": (0.0, 1, None, 0, None, 0),
        "Band B": (1.0, 1, None, 0, None, 0),
        "The Cure": (None, 0, None, 0, 1.0, 2),
    }
    # Completion stays unknown for every source here (no durations, no positions).
    assert {(r["completion_rate"], r["completion_rate_plays"]) for r in by_creator.values()} == {
        (None, 0)
    }


def test_unknown_policies_read_as_a_dash_in_the_table(data_dir: Path) -> None:
    lines = cli("query", "top_creators", "--data-dir", str(data_dir)).splitlines()
    (header,) = [[c.strip() for c in line.split("┃")[1:-1]] for line in lines if "┃" in line]
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]
    cure = dict(zip(header, next(r for r in rows if r[0] == "The Cure"), strict=True))
    assert (cure["skip_rate"], cure["source_skip_rate"]) == ("—", "—")
    assert (cure["skip_rate_plays"], cure["source_skip_rate_plays"]) == ("0", "0")
    assert cure["qualified_listen_rate_plays"] == "2"
    csv_rows = cli("query", "overview", "--format", "csv", "--data-dir", str(data_dir))
    header_line, values_line = csv_rows.splitlines()[:2]
    overview = dict(zip(header_line.split(","), values_line.split(","), strict=True))
    assert overview["completion_rate"] == ""  # unknown: an empty cell
    assert overview["qualified_listens"] == "2"
