"""Unknown is null (issue #11, item 4): what an export's format cannot tell is null in
``playpulse query overview`` (JSON ``null``, "—" in the table), never 0; rates are over
the plays that can tell, with their number beside them (docs/metrics.md, "What each
source can tell").

Small synthetic exports go through the real importer (``playpulse import``), processor
and lake, then the real ``playpulse query`` command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from playpulse.cli import app

# A 12.345 s play ended by the next button (a skip) and a 200 s play of a whole track.
SPOTIFY_EXTENDED = [
    {
        "ts": "2024-03-01T10:00:12Z",
        "ms_played": 12_345,
        "platform": "windows",
        "conn_country": "GB",
        "master_metadata_track_name": "Short Visit",
        "master_metadata_album_artist_name": "Band A",
        "master_metadata_album_album_name": "First",
        "spotify_track_uri": "spotify:track:a1",
        "reason_start": "clickrow",
        "reason_end": "fwdbtn",
        "skipped": True,
    },
    {
        "ts": "2024-03-01T10:03:40Z",
        "ms_played": 200_000,
        "platform": "windows",
        "conn_country": "GB",
        "master_metadata_track_name": "Whole Song",
        "master_metadata_album_artist_name": "Band A",
        "master_metadata_album_album_name": "First",
        "spotify_track_uri": "spotify:track:a2",
        "reason_start": "fwdbtn",
        "reason_end": "trackdone",
        "skipped": False,
    },
]
# 160.954 s and 10 s of playing; the basic format has no track duration.
SPOTIFY_BASIC = [
    {"endTime": "2025-01-24 00:23", "artistName": "Gorillaz", "trackName": "Kansas",
     "msPlayed": 160_954},
    {"endTime": "2025-01-24 00:30", "artistName": "Gorillaz", "trackName": "Stylo",
     "msPlayed": 10_000},
]  # fmt: skip
YOUTUBE = [
    {
        "header": "YouTube",
        "title": f"Watched Video {n}",
        "titleUrl": f"https://www.youtube.com/watch?v=vid{n}",
        "subtitles": [{"name": "Chan", "url": "https://www.youtube.com/channel/UC1"}],
        "time": f"2021-12-30T17:0{n}:00Z",
        "products": ["YouTube"],
        "activityControls": ["YouTube watch history"],
    }
    for n in (1, 2)
]
LASTFM = (
    "uts,utc_time,artist,artist_mbid,album,album_mbid,track,track_mbid\n"
    '"1720688852","11 Jul 2024, 09:07","The Cure","","Faith","","Primary",""\n'
    '"1720688656","11 Jul 2024, 09:04","The Cure","","Faith","","The Holy Hour",""\n'
)

# What overview answers per format: (streams, listening_s, completion_rate,
# completion_rate_plays, skip_rate, skip_rate_plays), each over 2 plays.
SPOTIFY_EXTENDED_FIGURES = (1, 212.345, None, 0, 0.5, 2)
EXPECTED = {
    "spotify_extended": SPOTIFY_EXTENDED_FIGURES,
    "spotify_basic": (1, 170.954, None, 0, 0.5, 2),
    "youtube": (None, None, None, 0, None, 0),
    "lastfm": (None, None, None, 0, None, 0),
}
FIGURES = (
    "streams",
    "listening_s",
    "completion_rate",
    "completion_rate_plays",
    "skip_rate",
    "skip_rate_plays",
)


def write_export(folder: Path, fmt: str) -> Path:
    """A two-play export of ``fmt`` in ``folder``, named as the service names it."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "spotify_extended":
        path = folder / "Streaming_History_Audio_2024.json"
        path.write_text(json.dumps(SPOTIFY_EXTENDED), encoding="utf-8")
    elif fmt == "spotify_basic":
        path = folder / "StreamingHistory_music_0.json"
        path.write_text(json.dumps(SPOTIFY_BASIC), encoding="utf-8")
    elif fmt == "youtube":
        path = folder / "watch-history.json"
        path.write_text(json.dumps(YOUTUBE), encoding="utf-8")
    else:
        path = folder / "scrobbles.csv"
        path.write_text(LASTFM, encoding="utf-8")
    return path


def cli(*args: str) -> str:
    # Wide enough for overview's 15 columns with their whole names.
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return result.output


def import_exports(tmp_path: Path, *fmts: str) -> Path:
    data_dir = tmp_path / "data"
    for fmt in fmts:
        path = write_export(tmp_path / fmt, fmt)
        cli("import", str(path), "--user", "sam", "--data-dir", str(data_dir))
    return data_dir


def overview_json(data_dir: Path) -> dict[str, Any]:
    (row,) = json.loads(cli("query", "overview", "--format", "json", "--data-dir", str(data_dir)))
    assert isinstance(row, dict)
    return row


def overview_table(data_dir: Path) -> dict[str, str]:
    """The table output's one row, as column -> cell text."""
    lines = cli("query", "overview", "--data-dir", str(data_dir)).splitlines()
    (header,) = [[c.strip() for c in line.split("┃")[1:-1]] for line in lines if "┃" in line]
    (values,) = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]
    return dict(zip(header, values, strict=True))


@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_what_a_format_cannot_tell_is_null_never_zero(tmp_path: Path, fmt: str) -> None:
    data_dir = import_exports(tmp_path, fmt)
    row = overview_json(data_dir)
    assert row["plays"] == 2
    assert tuple(row[name] for name in FIGURES) == EXPECTED[fmt]
    table = overview_table(data_dir)
    for name, value in zip(FIGURES, EXPECTED[fmt], strict=True):
        if value is None:
            assert table[name] == "—", name
        else:
            assert table[name] not in ("—", ""), name
    assert table["plays"] == "2"


def test_a_mixed_history_has_rates_over_the_plays_that_can_tell(tmp_path: Path) -> None:
    # 2 Spotify plays (known time, unknown completion) + 2 Last.fm scrobbles (nothing
    # known but the play): 4 plays; streams, time and skip rate come from the 2 Spotify
    # plays only, and say so (skip_rate_plays = 2); no play tells completion.
    data_dir = import_exports(tmp_path, "spotify_extended", "lastfm")
    row = overview_json(data_dir)
    assert row["plays"] == 4
    assert tuple(row[name] for name in FIGURES) == SPOTIFY_EXTENDED_FIGURES

    top = json.loads(cli("query", "top_content", "--format", "json", "--data-dir", str(data_dir)))
    by_title = {r["title"]: r for r in top}
    assert by_title["Whole Song"]["listening_s"] == 200.0
    assert by_title["Short Visit"]["skip_rate"] == 1.0
    assert by_title["Short Visit"]["skip_rate_plays"] == 1
    scrobbled = by_title["Primary"]
    assert (scrobbled["plays"], scrobbled["listening_s"]) == (1, None)
    assert (scrobbled["skip_rate"], scrobbled["skip_rate_plays"]) == (None, 0)
    assert (scrobbled["completion_rate"], scrobbled["completion_rate_plays"]) == (None, 0)
    # Titles with unknown time rank after every title with a known time.
    assert [r["listening_s"] is None for r in top] == [False, False, True, True]

    creators = json.loads(
        cli("query", "top_creators", "--format", "json", "--data-dir", str(data_dir))
    )
    assert [(r["creator"], r["plays"], r["listening_s"]) for r in creators] == [
        ("Band A", 2, 212.345),
        ("The Cure", 2, None),
    ]
    csv_out = cli("query", "top_creators", "--format", "csv", "--data-dir", str(data_dir))
    # creator, plays, listeners, listening_s (unknown: an empty cell), then the rates and
    # their plays: only the qualified-listen rate is known (2 scrobbles, both qualified).
    assert csv_out.splitlines()[-1] == "The Cure,2,1,,,0,,0,,0,1.0,2"


def test_time_series_and_listeners_show_unknown_time_where_plays_cannot_tell(
    tmp_path: Path,
) -> None:
    # Spotify plays on 2024-03-01 (known time), Last.fm scrobbles on 2024-07-11 (unknown).
    data_dir = import_exports(tmp_path, "spotify_extended", "lastfm")

    def query(name: str, *args: str) -> list[dict[str, Any]]:
        out = cli("query", name, *args, "--format", "json", "--data-dir", str(data_dir))
        rows: list[dict[str, Any]] = json.loads(out)
        return rows

    daily = query("daily", "--from", "2024-03-01", "--to", "2024-07-12")
    assert [(r["date"], r["plays"], r["listening_s"]) for r in daily] == [
        ("2024-03-01", 2, 212.345),
        ("2024-07-11", 2, None),
    ]
    hourly = query("hourly_engagement", "--from", "2024-07-11", "--to", "2024-07-12")
    # Thursday 09:00 UTC holds both scrobbles: unknown time; the other 167 cells hold no
    # play and no time: 0.
    played = [r for r in hourly if r["plays"]]
    assert [(r["day_of_week"], r["hour_of_day"], r["listening_s"]) for r in played] == [
        (3, 9, None)
    ]
    assert {r["listening_s"] for r in hourly if not r["plays"]} == {0.0}
    devices = query("devices", "--from", "2024-07-11", "--to", "2024-07-12")
    assert [(r["plays"], r["listening_s"]) for r in devices] == [(2, None)]
    (listener,) = query("user_sessions", "--from", "2024-07-11", "--to", "2024-07-12")
    assert (listener["user_id"], listener["listening_s"]) == ("sam", None)
    (listener,) = query("user_sessions", "--from", "2024-03-01", "--to", "2024-07-12")
    assert (listener["user_id"], listener["listening_s"]) == ("sam", 212.345)
