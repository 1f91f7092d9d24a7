"""Imports are backfills (issue #11, Deliver 1 and Done when), on a real export: whatever
the order of files and commands, the figures are those of importing everything at once.

The export is ``spotify-extended-mungeraiden/my_spotify_data`` of ``shared/data/real``
(11 files: Spotify basic music and podcast files and extended audio and video files of
one person, 17,475 rows, 2022-04 to 2026-04), read where it lies; the tests are skipped
when it is absent. Each way of importing goes into a data dir of its own, and every
catalog query but ``live`` (which reads the clock) must answer the same there as in the
data dir that imported the whole folder in one command, over one fixed window.

Before imports were backfills, importing the newest file first and then the folder left
about half the history out as "late", and one file at a time in name order lost the
video files' plays. (The renumbered Last.fm re-export and two people's exports are in
``test_import_real_data.py``.)
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from playpulse.config import Settings
from playpulse.query.catalog import QueryParams
from playpulse.sources.importers import import_paths
from playpulse.testing import assert_same_answers, catalog_answers, real_data_dir, run_cli

REAL = real_data_dir()
pytestmark = pytest.mark.skipif(REAL is None, reason="the real data sets are not available")

#: A window that holds the whole export (every catalog query but ``live`` is compared).
WINDOW = QueryParams(
    start=datetime(2000, 1, 1, tzinfo=UTC), end=datetime(2030, 1, 1, tzinfo=UTC), limit=10_000
)


def folder() -> Path:
    assert REAL is not None
    return REAL / "spotify-extended-mungeraiden" / "my_spotify_data"


def export_files() -> list[Path]:
    """The export's 11 history files, chosen by name (not by the importer)."""
    files = sorted(folder().rglob("*.json"))
    assert [p.name for p in files] == [
        "StreamingHistory_music_0.json",
        "StreamingHistory_music_1.json",
        "StreamingHistory_podcast_0.json",
        *(f"Streaming_History_Audio_{year}.json" for year in (2022, 2023, 2024)),
        *(f"Streaming_History_Video_{year}.json" for year in range(2022, 2027)),
    ]
    return files


def newest_file() -> Path:
    """The file whose newest row is the latest of the export (read in plain ``json``:
    extended rows end at ``ts``, basic rows at ``endTime``, both UTC)."""

    def latest(path: Path) -> datetime:
        rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        ends = [
            datetime.fromisoformat(r["ts"])
            if "ts" in r
            else datetime.fromisoformat(r["endTime"]).replace(tzinfo=UTC)
            for r in rows
        ]
        return max(ends)

    return max(export_files(), key=latest)


def distinct_rows() -> int:
    """The export's rows, exact repeats counted once (two rows of Video_2026 repeat)."""
    rows = {
        json.dumps(row, sort_keys=True)
        for path in export_files()
        for row in json.loads(path.read_text(encoding="utf-8"))
    }
    return len(rows)


def answers(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every catalog query's rows (but ``live``'s) over :data:`WINDOW`."""
    return catalog_answers(settings, WINDOW)


@pytest.fixture(scope="module")
def all_at_once(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """The answers after `playpulse import FOLDER` in one command: the reference."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("at-once") / "data")
    result = import_paths([folder()], settings, progress=False)
    assert result.rows_read == 17_475
    assert result.rows_rejected == 0
    reference = answers(settings)
    (overview,) = reference["overview"]
    assert overview["plays"] == distinct_rows()  # every distinct row is a play
    return reference


def test_newest_file_first_then_the_whole_folder_as_at_once(
    tmp_path: Path, all_at_once: dict[str, list[dict[str, Any]]]
) -> None:
    """Through the command line, as a user would: the newest file, then the folder."""
    data_dir = str(tmp_path / "data")
    first = run_cli("import", str(newest_file()), "--data-dir", data_dir, timeout_s=300)
    assert first.returncode == 0, first.stderr
    settings = Settings(data_dir=tmp_path / "data")
    partial = answers(settings)["overview"][0]["plays"]
    assert 0 < partial < all_at_once["overview"][0]["plays"]
    rest = run_cli("import", str(folder()), "--data-dir", data_dir, timeout_s=300)
    assert rest.returncode == 0, rest.stderr
    assert_same_answers(answers(settings), all_at_once)


def test_one_file_at_a_time_in_any_order_as_at_once(
    tmp_path: Path, all_at_once: dict[str, list[dict[str, Any]]]
) -> None:
    # Shuffled (newest first is the test above): each import reprocesses the data dir.
    files = sorted(export_files(), key=lambda p: p.name)
    random.Random(11).shuffle(files)
    settings = Settings(data_dir=tmp_path / "data")
    for path in files:
        import_paths([path], settings, progress=False)
    assert_same_answers(answers(settings), all_at_once)
