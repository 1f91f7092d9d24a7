"""Data dirs for the enrichment tests: real imports of small Spotify histories."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from playpulse.config import Settings

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def spotify_row(ts: datetime, track: str, artist: str, album: str) -> dict[str, Any]:
    """One Spotify extended history row: a finished 3-minute play of ``track``."""
    return {
        "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ms_played": 180_000,
        "platform": "linux",
        "conn_country": "DE",
        "master_metadata_track_name": f"Song {track}",
        "master_metadata_album_artist_name": artist,
        "master_metadata_album_album_name": album,
        "spotify_track_uri": f"spotify:track:{track}",
        "reason_start": "clickrow",
        "reason_end": "trackdone",
        "skipped": False,
    }


def settings_for(root: Path) -> Settings:
    return Settings(data_dir=root, stream_url=None, store_url=None, lake_url=None)


@pytest.fixture
def listened(tmp_path: Path) -> Settings:
    """Three listeners, each with three daily sessions: days 1-2 play a, b, c; day 3
    plays a, d (4 minutes apart; sessions a day apart). ``d``'s album is renamed on day 3
    of the last listener (the catalog shows the newest). Imported with
    ``playpulse import``'s code."""
    from playpulse.sources.importers.runner import import_paths

    settings = settings_for(tmp_path / "data")
    for u in range(3):
        rows = []
        for day in range(3):
            t = T0 + timedelta(days=day, hours=u)
            for k, track in enumerate(["a", "b", "c"] if day < 2 else ["a", "d"]):
                album = "Album d v2" if (track == "d" and u == 2) else f"Album {track}"
                rows.append(spotify_row(t + timedelta(minutes=4 * (k + 1)), track, "Band", album))
        path = tmp_path / f"listener{u}.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
        import_paths([path], settings, user_id=f"listener{u}", progress=False)
    return settings
