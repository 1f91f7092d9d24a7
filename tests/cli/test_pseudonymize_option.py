"""``playpulse import --pseudonymize-users``: the data dir keeps only a pseudonym of the
user id, and the queries still count the listener."""

from __future__ import annotations

import json
from pathlib import Path

from playpulse.testing import run_cli, write_spotify_history


def test_import_with_pseudonyms_keeps_no_clear_user_id(tmp_path: Path) -> None:
    history = write_spotify_history(
        tmp_path / "Streaming_History_Audio_2025.json",
        {"a": ("2025-03-01T10:00:00Z", 200_000), "b": ("2025-03-01T10:05:00Z", 180_000)},
    )
    data = tmp_path / "data"
    user = "alice@example.com"
    done = run_cli(
        "--data-dir", str(data), "import", str(history), "--user", user, "--pseudonymize-users"
    )
    assert done.returncode == 0, done.stderr
    overview = run_cli("--data-dir", str(data), "query", "overview", "--format", "json")
    assert json.loads(overview.stdout)[0]["listeners"] == 1
    for path in data.rglob("*"):
        if path.is_file():
            assert user.encode() not in path.read_bytes(), path
