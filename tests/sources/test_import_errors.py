"""Import errors a user meets (#17), on truncated copies of real exports
(``shared/data/real``, skipped when absent) made in a temporary folder: a truncated file
is said to be truncated in a whole sentence, a corrupt file in a folder does not stop the
others, skipped files are named, and no progress bar is left above an error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from playpulse.sources.importers.base import ImportFormatError
from playpulse.sources.importers.reading import read_json_array
from playpulse.testing import real_data_dir, run_cli

REAL = real_data_dir()
needs_real = pytest.mark.skipif(REAL is None, reason="the real data sets are not available")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout_s=120)


def real_file(*parts: str) -> Path:
    assert REAL is not None
    return REAL.joinpath(*parts)


def truncated_spotify(folder: Path) -> Path:
    """The first half of erickmay's endsong_1.json (one line: cut inside a row)."""
    data = real_file("spotify-endsong-erickmay", "endsong_1.json").read_bytes()
    copy = folder / "endsong_1.json"
    copy.write_bytes(data[: len(data) // 2])
    return copy


def truncated_youtube(folder: Path) -> Path:
    """chuan-khuna's watch-history.json cut after the first byte of a multi-byte
    character, as a download cut short can leave it."""
    source = real_file(
        "youtube-watch-history-chuan-khuna",
        "Takeout",
        "YouTube and YouTube Music",
        "history",
        "watch-history.json",
    )
    data = source.read_bytes()
    cut = len(data) // 2
    while data[cut] < 0xC0:  # the lead byte of a multi-byte UTF-8 character
        cut += 1
    copy = folder / "watch-history.json"
    copy.write_bytes(data[: cut + 1])
    return copy


@needs_real
def test_a_truncated_spotify_file_is_said_to_be_truncated(tmp_path: Path) -> None:
    path = truncated_spotify(tmp_path)
    result = run("import", str(path), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    # One line, no progress bar left above it (a blank line where it was, at most).
    assert result.stderr.strip().splitlines() == [
        f"error: {path}, line 1: is truncated (a download or copy cut short?): it ends "
        "before the JSON array is closed"
    ]


@needs_real
def test_a_truncated_youtube_file_is_not_called_not_utf8(tmp_path: Path) -> None:
    path = truncated_youtube(tmp_path)
    result = run("import", str(path), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}, line ")
    assert line.endswith(
        ": is truncated (a download or copy cut short?): it ends in the middle of a character"
    )
    assert "UTF-8" not in line


def test_json_errors_are_whole_sentences(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    text = '[{"a": "x\x01y"}]'  # a control character inside a string
    with pytest.raises(ImportFormatError) as info:
        read_json_array(path, text)
    message = str(info.value)
    assert message == f"{path}, line 1: is not valid JSON: Invalid control character at column 10"


@needs_real
def test_a_folder_with_corrupt_files_imports_the_rest_and_names_every_problem(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    spotify = truncated_spotify(folder)
    youtube = truncated_youtube(folder)
    good = folder / "scrobbles.csv"
    lines = real_file("lastfm-scrobbles-sachawheeler", "scrobbles.csv").read_text("utf-8")
    good.write_text("\n".join(lines.splitlines()[:51]) + "\n", encoding="utf-8")  # 50 rows
    unknown = folder / "other.csv"
    unknown.write_text("a,b\n1,2\n", encoding="utf-8")
    data_dir = str(tmp_path / "data")

    result = run("import", str(folder), "--data-dir", data_dir)
    assert result.returncode == 2
    assert "imported 1 file(s), 50 rows (50 lastfm_scrobbles)" in result.stdout
    assert f"1 file(s) of unknown format skipped: {unknown}." in result.stdout
    assert "2 corrupt file(s) NOT imported (listed below)" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: not imported: {spotify}, line 1: is truncated (a download or copy cut "
        "short?): it ends before the JSON array is closed",
        f"error: not imported: {youtube}, line "
        + errors[1].split(", line ")[1].split(":")[0]
        + ": is truncated (a download or copy cut short?): it ends in the middle of a "
        "character",
    ]
    (row,) = json.loads(run("query", "overview", "--format", "json", "--data-dir", data_dir).stdout)
    assert row["plays"] == 50
