"""What the processor's status file says, read back as /readyz problems and as the
line `playpulse status` prints (no processes: status files written here)."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from playpulse.config import Settings
from playpulse.service import (
    STATUS_FILE,
    lake_problem,
    processor_problem,
    processor_status_line,
    read_processor_status,
    store_problem,
    write_processor_status,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def status(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "state": "running",
        "pid": os.getpid(),  # alive: this test process
        "started_at": (NOW - timedelta(minutes=5)).isoformat(),
        "progress_at": (NOW - timedelta(seconds=1)).isoformat(),
        "offsets": {"0": 10},
        "processed": 1234,
        "restarts": 0,
        "last_error": None,
        "exit_code": None,
        "next_start_at": None,
        "updated_at": NOW.isoformat(),
    }
    return {**base, **overrides}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, processor_stall_s=30)


def test_no_status_file(settings: Settings):
    assert read_processor_status(settings) is None
    assert processor_problem(settings, NOW) == "the processor has not reported yet"
    assert processor_status_line(settings, NOW) == "never run here by `playpulse up`"


def test_a_running_processor_is_ready(settings: Settings):
    assert write_processor_status(settings, status())
    assert read_processor_status(settings) == status()
    assert processor_problem(settings, NOW) is None
    line = processor_status_line(settings, NOW)
    assert line.startswith(f"running, pid {os.getpid()}, 1,234 events since")
    assert "last progress 1.0 s ago, 0 restart(s)" in line


def test_a_crash_loop_is_failing_with_its_last_error(settings: Settings):
    error = {"message": "DatabaseError: file is not a database", "at": NOW.isoformat()}
    write_processor_status(settings, status(state="restarting", restarts=3, last_error=error))
    problem = processor_problem(settings, NOW)
    assert problem is not None
    assert problem.startswith("the processor is restarting after 3 restart(s)")
    assert "DatabaseError: file is not a database" in problem
    line = processor_status_line(settings, NOW)
    assert line.startswith("FAILING: restarting after 3 restart(s)")
    assert f"last error at {NOW.isoformat()}: DatabaseError: file is not a database" in line


def test_a_processor_without_progress_is_stuck(settings: Settings):
    write_processor_status(settings, status(progress_at=(NOW - timedelta(minutes=2)).isoformat()))
    problem = processor_problem(settings, NOW)
    assert problem is not None
    assert problem.startswith("the processor made no progress for 120 s")
    assert processor_status_line(settings, NOW).startswith("STUCK: the processor made no")


def test_a_processor_applying_an_import_is_busy_not_stuck(settings: Settings):
    since = (NOW - timedelta(minutes=5)).isoformat()
    long_ago = (NOW - timedelta(minutes=6)).isoformat()
    write_processor_status(
        settings, status(state="reprocessing", reprocessing_since=since, progress_at=long_ago)
    )
    assert processor_problem(settings, NOW) is None  # ready: an import takes its time
    line = processor_status_line(settings, NOW)
    assert line.startswith(f"reprocessing since {since} (an import or `playpulse reprocess`")


def test_a_reprocessing_processor_whose_process_is_gone_is_a_problem(settings: Settings):
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    write_processor_status(settings, status(state="reprocessing", pid=child))
    assert processor_problem(settings, NOW) == f"the processor process {child} is gone"


def test_a_running_processor_whose_process_is_gone(settings: Settings):
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)  # a pid that no process has now
    write_processor_status(settings, status(pid=child))
    assert processor_problem(settings, NOW) == f"the processor process {child} is gone"
    assert processor_status_line(settings, NOW).startswith(f"not running: its process {child}")


def test_stopped(settings: Settings):
    write_processor_status(settings, status(state="stopped"))
    assert processor_problem(settings, NOW) == "the processor is stopped"
    assert processor_status_line(settings, NOW).startswith("stopped at")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
KEYS = sorted(status())


@hypothesis_settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=100).map(lambda b: b.decode("latin-1"))
    | st.dictionaries(st.sampled_from(KEYS), JSON).map(json.dumps)
)
def test_whatever_the_status_file_holds_the_readers_answer(
    tmp_path_factory: pytest.TempPathFactory, text: str
):
    settings = Settings(data_dir=tmp_path_factory.mktemp("status"), processor_stall_s=30)
    (settings.data_dir / STATUS_FILE).write_text(text, encoding="latin-1")
    got = read_processor_status(settings)
    assert got is None or isinstance(got, dict)
    assert isinstance(processor_status_line(settings, NOW), str)
    problem = processor_problem(settings, NOW)
    assert problem is None or isinstance(problem, str)


def test_store_and_lake_problems(settings: Settings):
    assert store_problem(settings) is None  # not created yet
    assert lake_problem(settings) is None
    con = sqlite3.connect(settings.store_path)
    con.execute("CREATE TABLE t (x)")
    con.close()
    assert store_problem(settings) is None
    with settings.store_path.open("r+b") as f:
        f.write(b"garbage!" * 12)
    problem = store_problem(settings)
    assert problem is not None
    assert str(settings.store_path) in problem
    assert "not a database" in problem
    settings.lake_path.write_text("a file where the lake's folder should be")
    problem = lake_problem(settings)
    assert problem is not None
    assert str(settings.lake_path) in problem


def test_store_and_lake_are_not_ready_when_the_data_dir_is_gone(tmp_path):
    settings = Settings(data_dir=tmp_path / "gone")
    for problem in (store_problem(settings), lake_problem(settings)):
        assert problem is not None
        assert "data dir" in problem
        assert "missing" in problem
