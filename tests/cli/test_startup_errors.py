"""`playpulse up` and `collect` refuse a bad data dir with one line on stderr and exit
code 2, before any server starts: never a traceback, never a process left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from playpulse.config import Settings
from playpulse.service import processor_lock
from playpulse.testing import free_port, playpulse_server


def start(command: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``playpulse COMMAND --data-dir DATA_DIR`` on a free port; returns once it exits
    (a server that starts instead is a failure: the timeout ends the test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYPULSE_")}
    cmd = [sys.executable, "-m", "playpulse", command, "--data-dir", str(data_dir)]
    return subprocess.run(
        [*cmd, "--port", str(free_port())], capture_output=True, text=True, timeout=60, env=env
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", ["up", "collect"])
def test_a_data_dir_that_is_a_file(tmp_path: Path, command: str):
    path = tmp_path / "data"
    path.write_text("not a folder")
    assert_one_line_error(start(command, path), str(path), "is not a folder")
    assert path.read_text() == "not a folder"


def test_a_data_dir_that_cannot_be_created(tmp_path: Path):
    parent = tmp_path / "file"
    parent.write_text("x")
    path = parent / "data"
    assert_one_line_error(start("up", path), f"cannot create the data dir {path}")


def test_a_data_dir_that_is_not_writable(tmp_path: Path):
    path = tmp_path / "data"
    path.mkdir()
    path.chmod(0o500)
    if os.geteuid() == 0:  # root writes to any folder, but not to sysfs
        if not Path("/sys/kernel").is_dir():
            pytest.skip("root writes to any folder, and there is no /sys/kernel")
        path = Path("/sys/kernel")
    try:
        assert_one_line_error(start("up", path), str(path), "is not writable")
    finally:
        (tmp_path / "data").chmod(0o700)


def test_a_data_dir_another_up_holds(tmp_path: Path):
    path = tmp_path / "data"
    with processor_lock(Settings(data_dir=path)) as mine:
        assert mine  # as a running `playpulse up` holds it
        result = start("up", path)
    assert_one_line_error(result, f"another processor runs on {path}")
    assert not (path / "stream.db").exists()  # refused before the collector opened it


def test_collect_leaves_the_processor_lock_to_up_and_process(tmp_path: Path):
    path = tmp_path / "data"
    with playpulse_server("collect", path, tmp_path / "collect.log") as (_, proc):
        with processor_lock(Settings(data_dir=path)) as mine:
            assert mine
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
