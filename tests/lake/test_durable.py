"""Durable lake writes, orphan temporary files and corrupt files, on real files.

The fsync tests record the calls the writer makes to the operating system (``os.fsync``,
``os.replace``, ``os.unlink``, passed through to the real ones): a power loss cannot be
simulated here, but the order that makes a write survive one can be checked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from playpulse.lake import LakeWriter
from playpulse.lake.writer import CORRUPT_DIR, corrupt_files

SCHEMA = pa.schema(
    [("event_id", pa.string()), ("event_date", pa.string()), ("playing_s", pa.float64())]
)
DAY = "2026-11-21"


def rows(ids: list[str], date: str = DAY) -> list[dict[str, object]]:
    return [{"event_id": i, "event_date": date, "playing_s": float(len(i))} for i in ids]


def ids(writer: LakeWriter) -> list[str]:
    files = [str(p) for p in writer.live_files("events")]
    if not files:
        return []
    return [
        r[0]
        for r in duckdb.sql(
            f"SELECT event_id FROM read_parquet({files}, hive_partitioning = false) ORDER BY 1"
        ).fetchall()
    ]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync (by path), replace (by target) and unlink the writer makes, in order."""
    log: list[tuple[str, str]] = []
    fsync, replace, unlink = os.fsync, os.replace, os.unlink

    def spy_fsync(fd: int) -> None:
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def spy_replace(src: str, dst: str) -> None:
        replace(src, dst)
        log.append(("replace", os.path.realpath(dst)))

    def spy_unlink(path: str, *args: object, **kwargs: object) -> None:
        unlink(path, *args, **kwargs)  # type: ignore[arg-type]
        log.append(("unlink", os.path.realpath(path)))

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr(os, "unlink", spy_unlink)
    return log


def test_a_file_is_synced_before_its_rename_and_its_folders_after(tmp_path, calls):
    root = (tmp_path / "lake").resolve()
    writer = LakeWriter(root, {"events": SCHEMA})
    assert calls == [("fsync", str(tmp_path.resolve()))]  # the new lake folder, in its parent
    calls.clear()
    (path,) = writer.write("events", rows(["a"]), partition=0, first_offset=0, last_offset=0)
    day = path.parent
    (temp,) = [p for kind, p in calls if kind == "fsync" and p.endswith(".tmp")]
    assert Path(temp).name.startswith(f".{path.name}.{os.getpid()}-")
    assert calls == [
        ("fsync", str(root)),  # made events/
        ("fsync", str(root / "events")),  # made events/event_date=.../
        ("fsync", temp),  # the data, before the rename
        ("replace", str(path)),
        ("fsync", str(day)),  # the rename
    ]
    calls.clear()
    # A second file in the same folder: no folder is made, the rename is still synced.
    (second,) = writer.write("events", rows(["b"]), partition=0, first_offset=1, last_offset=1)
    assert [kind for kind, _ in calls] == ["fsync", "replace", "fsync"]
    assert calls[1:] == [("replace", str(second)), ("fsync", str(day))]


def test_a_compacted_file_is_on_disk_before_the_files_it_replaces_go(tmp_path, calls):
    writer = LakeWriter((tmp_path / "lake").resolve(), {"events": SCHEMA})
    sources = [
        writer.write("events", rows([f"e{i}"]), partition=0, first_offset=i, last_offset=i)[0]
        for i in range(3)
    ]
    calls.clear()
    assert writer.compact("events", {0: 3}) == 3
    day = str(sources[0].parent)
    kinds = [(kind, Path(p).name if kind != "fsync" or p != day else "DIR") for kind, p in calls]
    replaced = next(i for i, (kind, _) in enumerate(kinds) if kind == "replace")
    assert kinds[replaced][1].startswith("compacted-")
    assert kinds[replaced - 1][0] == "fsync"
    assert kinds[replaced - 1][1].endswith(".tmp")
    assert kinds[replaced + 1] == ("fsync", "DIR")
    unlinked = [name for kind, name in kinds[replaced + 2 :] if kind == "unlink"]
    assert sorted(unlinked) == sorted(p.name for p in sources)
    assert ids(writer) == ["e0", "e1", "e2"]


# A writer in a process of its own that stops between writing its temporary file and
# renaming it: "crash" dies there (the orphan a crash leaves), "hang" waits to be killed
# (a writer still at work, e.g. a `playpulse compact` beside the processor).
WRITER = """
import os, sys, time
import pyarrow as pa
from playpulse.lake import LakeWriter

def stop_before_rename(src, dst):
    if sys.argv[2] == "crash":
        os._exit(3)
    print("written", flush=True)
    time.sleep(120)

os.replace = stop_before_rename
schema = pa.schema([("event_id", pa.string()), ("event_date", pa.string()),
                    ("playing_s", pa.float64())])
LakeWriter(sys.argv[1], {"events": schema}).write(
    "events", [{"event_id": sys.argv[2], "event_date": "2026-11-21", "playing_s": 1.0}],
    partition=0, first_offset=int(sys.argv[3]), last_offset=int(sys.argv[3]))
"""


def temp_files(writer: LakeWriter) -> list[Path]:
    return sorted(writer.root.glob("*/event_date=*/.*.tmp"))


def test_orphan_temp_files_go_at_start_but_a_live_writers_file_stays(tmp_path):
    writer = LakeWriter(tmp_path / "lake", {"events": SCHEMA})
    writer.write("events", rows(["a"]), partition=0, first_offset=0, last_offset=0)
    crashed = subprocess.Popen([sys.executable, "-c", WRITER, str(writer.root), "crash", "5"])
    assert crashed.wait() == 3
    (orphan,) = temp_files(writer)
    assert f".{crashed.pid}-" in orphan.name  # named by its (now dead) writer's pid
    live = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(writer.root), "hang", "9"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout is not None
        assert live.stdout.readline() == "written\n"
        (in_progress,) = [p for p in temp_files(writer) if p != orphan]
        assert f".{live.pid}-" in in_progress.name
        # Old orphans of any naming: one without a pid, last written two hours ago, goes;
        # a recent one without a pid (its writer may be at work) stays, as does one of
        # this process (its writer may be another thread).
        old = in_progress.with_name(f".p0000-o1-1.parquet.{'a' * 32}.tmp")
        recent = in_progress.with_name(f".p0000-o2-2.parquet.{'b' * 32}.tmp")
        mine = in_progress.with_name(f".p0000-o3-3.parquet.{os.getpid()}-{'c' * 32}.tmp")
        for p in (old, recent, mine):
            p.write_bytes(b"partial")
        two_hours_ago = time.time() - 7200
        os.utime(old, (two_hours_ago, two_hours_ago))

        # What a processor does at start (the committed file "a" stays).
        assert writer.discard_uncommitted({0: 1}) == 0
        assert temp_files(writer) == sorted([in_progress, recent, mine])
        assert ids(writer) == ["a"]
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
        if live.stdout is not None:
            live.stdout.close()
    # Its writer gone, the in-progress file is an orphan too.
    assert writer.remove_orphan_temp_files() == 1
    assert temp_files(writer) == sorted([recent, mine])
    assert writer.remove_orphan_temp_files(max_age_s=0) == 2


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_corrupt_files_are_moved_aside_reported_and_stop_nothing(tmp_path):
    writer = LakeWriter(tmp_path / "lake", {"events": SCHEMA})
    paths = [
        writer.write("events", rows([f"e{i}"]), partition=0, first_offset=i, last_offset=i)[0]
        for i in range(4)
    ]
    (multi,) = writer.write_rows("events", rows(["m"]), ranges=[(0, 4, 4), (1, 0, 0)])
    p1, p2 = paths[1], paths[2]
    truncate(p1)  # e1
    multi.write_bytes(os.urandom(300))  # its offset ranges are in its (lost) footer
    committed = {0: 5, 1: 1}

    # A processor starting: the file whose ranges cannot be read is moved aside.
    assert writer.discard_uncommitted(committed) == 0
    (aside,) = corrupt_files(writer.root)
    assert aside.original == f"events/event_date={DAY}/{multi.name}"
    assert aside.table == "events"
    assert aside.size_bytes == 300
    assert "magic bytes" in aside.reason
    assert aside.moved_at is not None
    assert aside.moved_at.tzinfo == UTC
    assert aside.moved_at <= datetime.now(UTC)
    assert aside.path.parent == writer.root / CORRUPT_DIR / "events" / f"event_date={DAY}"
    assert not multi.exists()

    # Compaction merges the readable files and moves the truncated one aside.
    assert writer.compact("events", committed) == 3
    assert [f.original for f in corrupt_files(writer.root)] == [
        aside.original,
        f"events/event_date={DAY}/{p1.name}",
    ]
    assert ids(writer) == ["e0", "e2", "e3"]
    assert not p1.exists()
    assert not p2.exists()

    # Readers never see the moved-aside files under the table's folder.
    glob = f"{writer.root}/events/*/*.parquet"
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall() == [(3,)]
    assert not list((writer.root / CORRUPT_DIR).rglob("*.parquet"))


def test_a_corrupt_compacted_file_gives_way_to_the_files_it_replaced(tmp_path):
    # A compacted file damaged while the files it replaced are still there (a crash
    # between the rename and the deletions, before lake writes were synced).
    writer = LakeWriter(tmp_path / "lake", {"events": SCHEMA})
    sources = [
        writer.write("events", rows([f"e{i}"]), partition=0, first_offset=i, last_offset=i)[0]
        for i in range(2)
    ]
    saved = {p.name: p.read_bytes() for p in sources}
    writer.compact("events", {0: 2})
    (compacted,) = writer.live_files("events")
    for name, data in saved.items():
        (compacted.parent / name).write_bytes(data)
    truncate(compacted)
    assert ids(writer) == ["e0", "e1"]
    (aside,) = corrupt_files(writer.root)
    assert aside.original.endswith(compacted.name)
    assert "magic bytes" in aside.reason
    # Compacting again works on what is left.
    assert writer.compact("events", {0: 2}) == 2
    assert ids(writer) == ["e0", "e1"]


def test_readable_checks_footers_and_unreadable_reason_says_why(tmp_path):
    writer = LakeWriter(tmp_path / "lake", {"events": SCHEMA})
    good, bad = (
        writer.write("events", rows([i]), partition=0, first_offset=n, last_offset=n)[0]
        for n, i in enumerate(["a", "b"])
    )
    assert writer.unreadable_reason(good) is None
    bad.write_bytes(b"")
    assert "0 bytes" in (writer.unreadable_reason(bad, full=False) or "")
    gone = good.with_name("p0009-o000000000001-000000000001.parquet")
    assert writer.unreadable_reason(gone) is None
    assert writer.readable([good, bad, gone]) == [good]
    assert [f.original.rsplit("/", 1)[1] for f in corrupt_files(writer.root)] == [bad.name]
    assert corrupt_files(tmp_path / "no-lake") == []
