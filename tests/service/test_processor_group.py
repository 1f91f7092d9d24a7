"""`playpulse up --processors 2`: two processor processes share the stream's partitions.

A real `up` on 127.0.0.1; events are appended to its stream as the collector (or
`playpulse import`) would. What must hold: every event is counted once whichever member
processes it; a member killed with SIGKILL loses its partitions to the other within
seconds and gets them back when `up` starts it again; an import's backfill (which
rewrites the store) is applied while both run; `playpulse status` shows every member.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from playpulse.config import Settings
from playpulse.service import ensure_processed
from playpulse.testing import load_module, play_totals, playpulse_server, write_spotify_history

service_tests = load_module(Path(__file__).with_name("test_service.py"), "pp_test_service")
append_views = service_tests.append_views
views = service_tests.views

#: How long a member may take to notice the other's death and take its partitions:
#: the 6 s session timeout, plus heartbeats and a slow machine.
TAKEOVER_S = 60.0
JSON = ("--format", "json")
DIR = ("--data-dir",)
ME = ("--user", "me")


def owners(settings: Settings) -> dict[int, str]:
    """Partition -> the member whose lease holds it now (from the stream's lease table)."""
    db = sqlite3.connect(f"file:{settings.stream_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            'SELECT partition, member FROM group_leases WHERE "group" = ? AND partition >= 0 '
            "AND expires_s >= ?",
            ("processor", time.time()),
        ).fetchall()
    finally:
        db.close()
    return {int(p): str(m) for p, m in rows}


def wait_for(what: str, check: Any, timeout_s: float = TAKEOVER_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.1)


def processor_children(pid: int) -> dict[str, psutil.Process]:
    """The `up` process's processor children by member name (``processor-<i>``)."""
    out = {}
    for child in psutil.Process(pid).children():
        cmdline = child.cmdline()
        if any("processor_spawn_main" in part for part in cmdline):
            out[f"processor-{cmdline[-1]}"] = child
    return out


def test_two_processors_share_the_partitions_and_survive_a_sigkill(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, num_partitions=8)
    # Restarted later than the session timeout (6 s), so that member 0 takes over first (a
    # member restarted sooner resumes its own partitions under its name).
    env = {"PLAYPULSE_NUM_PARTITIONS": "8", "PLAYPULSE_PROCESSOR_RESTART_DELAY_S": "15"}
    with playpulse_server("up", tmp_path, tmp_path / "up.log", "--processors", "2", env=env) as (
        _,
        proc,
    ):
        children = wait_for("two processor processes", lambda: processor_children(proc.pid))
        wait_for("two processor processes", lambda: len(processor_children(proc.pid)) == 2)
        children = processor_children(proc.pid)
        # Range assignment over the two members: four partitions each.
        shared = wait_for(
            "the partitions shared by both members",
            lambda: (o := owners(settings)) and len(set(o.values())) == 2 and len(o) == 8 and o,
        )
        assert sorted(p for p, m in shared.items() if m == "processor-0") == [0, 1, 2, 3]
        targets = append_views(settings, 200)
        assert ensure_processed(settings, targets, timeout_s=60) is None
        assert views(settings) == 200

        children["processor-1"].send_signal(signal.SIGKILL)  # as the OOM killer would
        # Member 0 takes member 1's partitions once its lease lapses; events meanwhile wait.
        wait_for(
            "member 0 owning every partition",
            lambda: (
                set(owners(settings).values()) == {"processor-0"} and len(owners(settings)) == 8
            ),
        )
        targets = append_views(settings, 150)
        assert ensure_processed(settings, targets, timeout_s=60) is None
        assert views(settings) == 350
        # `up` starts member 1 again (after the restart delay): it gets its share back.
        wait_for(
            "member 1 back with its partitions",
            lambda: (
                sorted(p for p, m in owners(settings).items() if m == "processor-1") == [4, 5, 6, 7]
            ),
        )
        targets = append_views(settings, 50)
        assert ensure_processed(settings, targets, timeout_s=60) is None
        assert views(settings) == 400

        status = subprocess.run(
            [sys.executable, "-m", "playpulse", "status", "--data-dir", str(tmp_path), *JSON],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "PLAYPULSE_NUM_PARTITIONS": "8"},
        )
        assert status.returncode == 0, status.stderr
        processor = json.loads(status.stdout)["processor"]
        assert set(processor["members"]) == {"processor-0", "processor-1"}
        assert processor["members"]["processor-1"]["restarts"] == 1
        assert "processor-0: " in processor["line"]
        assert "processor-1: " in processor["line"]


def test_an_import_is_applied_while_two_processors_run(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    history = write_spotify_history(
        tmp_path / "Streaming_History_Audio_2024.json",
        {f"t{i}": (f"2024-03-0{1 + i % 5}T10:{i:02d}:00Z", 200_000) for i in range(40)},
    )
    with playpulse_server("up", tmp_path, tmp_path / "up.log", "--processors", "2") as (_, proc):
        wait_for("two processor processes", lambda: len(processor_children(proc.pid)) == 2)
        targets = append_views(settings, 100)
        assert ensure_processed(settings, targets, timeout_s=60) is None
        done = subprocess.run(
            [sys.executable, "-m", "playpulse", "import", str(history), *DIR, str(tmp_path), *ME],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        # Live events after the backfill still reach the store, once each.
        targets = append_views(settings, 30)
        assert ensure_processed(settings, targets, timeout_s=60) is None
        assert views(settings) == 130
    assert play_totals(settings, user_id="me")["plays"] == 40
