"""``pseudonymize_users`` (issue #14, Deliver 4): the collector and the importers store
keyed pseudonyms of user ids, never the ids; ``privacy export/delete --user`` take the
clear id. Real collector app, stream, processor, lake and quarantine."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.privacy import load_secret, pseudonym
from playpulse.privacy.cli import privacy_app
from playpulse.query.engine import connect
from playpulse.service import ensure_processed
from playpulse.sources.importers import import_paths
from playpulse.testing import write_spotify_history

USER = "alice@example.com"
OTHER = "bob@example.com"


def files_holding(root: Path, needle: bytes) -> list[str]:
    """Files under ``root`` holding ``needle`` (Parquet files also decompressed)."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if needle in path.read_bytes() or (
                name.endswith(".parquet")
                and needle.decode() in str(pq.read_table(path).to_pylist())
            ):
                found.append(str(path.relative_to(root)))
    return found


def plays(user: str, start: datetime, n: int) -> list[dict[str, Any]]:
    """``n`` finished plays of ``user``, five minutes apart, from ``start``."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        at = start + timedelta(minutes=5 * i)
        tag = f"{len(user)}-{i}"  # other ids must not hold the user id
        base = {"user_id": user, "playback_id": f"p{tag}"}
        out.append(
            {
                **base,
                "event_type": "play_start",
                "event_id": f"{tag}-s",
                "occurred_at": at.isoformat(),
                "content": {"content_id": f"track-{i}", "content_type": "track"},
            }
        )
        out.append(
            {
                **base,
                "event_type": "play_end",
                "event_id": f"{tag}-e",
                "occurred_at": (at + timedelta(minutes=3)).isoformat(),
                "position_s": 180.0,
                "reason": "completed",
            }
        )
    return out


def test_the_collector_stores_only_pseudonyms(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", pseudonymize_users=True)
    start = datetime.now(UTC) - timedelta(hours=2)
    invalid = {"event_type": "play_start", "event_id": "bad", "user_id": USER}  # no time
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/events", json=[*plays(USER, start, 3), invalid])
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 6
        answer = client.post(
            "/v1/events",
            json={
                "event_type": "heartbeat",
                "event_id": "anon",
                "anonymous_id": OTHER,
                "occurred_at": start.isoformat(),
                "playback_id": "x",
                "position_s": 1.0,
            },
        )
        assert answer.status_code == 200, answer.text
    ensure_processed(settings)

    secret = load_secret(settings, create=False)
    assert secret is not None
    secret_file = settings.data_dir / "privacy" / "secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert files_holding(settings.data_dir, USER.encode()) == []
    assert files_holding(settings.data_dir, OTHER.encode()) == []
    con = connect(settings)
    try:
        users = con.execute(
            "SELECT DISTINCT user_id FROM events WHERE user_id IS NOT NULL"
        ).fetchall()
        anonymous = con.execute(
            "SELECT DISTINCT anonymous_id FROM events WHERE anonymous_id IS NOT NULL"
        ).fetchall()
    finally:
        con.close()
    assert users == [(pseudonym(secret, USER),)]
    assert users[0][0].startswith("u_")
    assert len(users[0][0]) == 66
    assert anonymous == [(pseudonym(secret, OTHER, "a_"),)]

    # The clear id finds them.
    runner = CliRunner()
    data = ["--data-dir", str(settings.data_dir)]
    exported = runner.invoke(privacy_app, ["export", "--user", USER, *data], catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(lines) == 6
    assert {line["user_id"] for line in lines} == {pseudonym(secret, USER)}
    erased = runner.invoke(privacy_app, ["delete", "--user", USER, *data], catch_exceptions=False)
    assert erased.exit_code == 0, erased.output
    receipt = json.loads(erased.stdout)
    assert receipt["places"]["lake"]["rows_removed"]["events"] == 6
    assert receipt["places"]["quarantine"]["entries_removed"] == 1
    assert files_holding(settings.data_dir, pseudonym(secret, USER).encode()) == []


def test_imports_store_only_pseudonyms(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", pseudonymize_users=True)
    history = write_spotify_history(
        tmp_path / "Streaming_History_Audio_2024.json",
        {"a": ("2024-03-05T10:05:00Z", 240_000), "b": ("2024-03-05T10:10:00Z", 200_000)},
    )
    import_paths([history], settings, user_id=USER, progress=False)
    secret = load_secret(settings, create=False)
    assert secret is not None
    con = connect(settings)
    try:
        users = con.execute("SELECT DISTINCT user_id FROM events").fetchall()
    finally:
        con.close()
    assert users == [(pseudonym(secret, USER),)]
    assert files_holding(settings.data_dir, USER.encode()) == []
