"""The data dir is private (#14 item 3): every directory playpulse creates in it is 0700 and
every file 0600 (SQLite files with their -wal/-shm, lake Parquet, status files, the
quarantine, locks, the projects registry, the collector workers' metrics), and an
existing data dir open to others is tightened to 0700. Real commands in processes of
their own; nothing in the data dir is written by the test process."""

from __future__ import annotations

import json
import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from playpulse.config import Settings
from playpulse.filemodes import PRIVATE_UMASK, private_umask, secure_data_dir
from playpulse.stream.factory import open_stream
from playpulse.testing import playpulse_server, run_cli


def modes(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root`` (itself included): relative path -> (kind, mode)."""
    found = {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
        found[str(path.relative_to(root))] = (kind, stat.S_IMODE(info.st_mode))
    return found


def assert_private(root: Path) -> dict[str, tuple[str, int]]:
    found = modes(root)
    wrong = {
        name: f"{kind} {mode:04o}"
        for name, (kind, mode) in found.items()
        if mode != (0o700 if kind == "dir" else 0o600)
    }
    assert wrong == {}
    return found


def event(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "heartbeat",
        "occurred_at": datetime.now(UTC).isoformat(),
        "user_id": "u-1",
        "playback_id": "pb-1",
        "position_s": 12.5,
    }
    base.update(overrides)
    return base


def test_a_demo_data_dir_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = run_cli("demo", "--events", "300", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr

    found = assert_private(data_dir)
    names = set(found)
    assert {"stream.db", "store.db", "quarantine.db", "processor.lock"} <= names
    assert any(name.endswith(".parquet") for name in names)


def test_a_running_service_with_workers_and_quarantine_keeps_it_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with playpulse_server("up", data_dir, tmp_path / "up.log", "--workers", "2") as (url, _):
        sent = httpx.post(
            f"{url}/v1/events", json=[event(), event(), event(event_type="teleport")], timeout=10
        )
        assert sent.json()["accepted"] == 2, sent.text
        processed = run_cli("process", "--data-dir", str(data_dir))
        assert processed.returncode == 0, processed.stderr
        status = run_cli("status", "--data-dir", str(data_dir), "--format", "json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["quarantined"] == 1
        # While it runs: the SQLite files' -wal/-shm, the workers' metrics, status files.
        running = assert_private(data_dir)
    after = assert_private(data_dir)
    names = set(running) | set(after)
    assert any(name.endswith("-wal") for name in names)
    assert any(name.startswith("prometheus") for name in names)
    assert any(name.endswith(".parquet") for name in names)


def test_a_project_served_by_up_keeps_it_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = run_cli("--data-dir", str(data_dir), "projects", "create", "shop", "--format", "json")
    assert created.returncode == 0, created.stderr
    write_key = json.loads(created.stdout)["write_key"]
    with playpulse_server("up", data_dir, tmp_path / "up.log") as (url, _):
        auth = {"Authorization": f"Bearer {write_key}"}
        sent = httpx.post(f"{url}/v1/events", json=[event()], headers=auth, timeout=10)
        assert sent.json()["accepted"] == 1, sent.text
        running = assert_private(data_dir)
    after = assert_private(data_dir)
    assert any(name.startswith("projects/shop/") for name in set(running) | set(after))


def test_an_existing_data_dir_open_to_others_is_tightened(tmp_path: Path) -> None:
    # A data dir as an older playpulse left it (umask 022): 0755, its stream 0644.
    data_dir = tmp_path / "old"
    before = os.umask(0o022)
    try:
        open_stream(Settings(data_dir=data_dir)).close()
    finally:
        os.umask(before)
    assert modes(data_dir)["."] == ("dir", 0o755)
    assert modes(data_dir)["stream.db"] == ("file", 0o644)

    done = run_cli("status", "--data-dir", str(data_dir), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # quietly: scripts read stderr
    # The directory shuts others out; the file keeps its mode (unreachable now).
    assert modes(data_dir)["."] == ("dir", 0o700)
    assert modes(data_dir)["stream.db"] == ("file", 0o644)


def test_secure_data_dir_leaves_missing_private_and_foreign_dirs(tmp_path: Path) -> None:
    assert secure_data_dir(tmp_path / "missing") is None
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    assert secure_data_dir(private) is None
    assert stat.S_IMODE(private.stat().st_mode) == 0o700

    if os.getuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    foreign.chmod(0o755)
    os.chown(foreign, 65534, 65534)
    warning = secure_data_dir(foreign)
    assert warning is not None
    assert "another user" in warning
    assert str(foreign) in warning
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o755


def test_private_umask_sets_and_returns_the_previous_one() -> None:
    before = private_umask()
    try:
        assert os.umask(PRIVATE_UMASK) == PRIVATE_UMASK
    finally:
        os.umask(before)
