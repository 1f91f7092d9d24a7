"""The Parquet lake writer on real files, read back with DuckDB."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from playpulse.errors import LakeError
from playpulse.lake import LakeWriter

SCHEMA = pa.schema(
    [("event_id", pa.string()), ("event_date", pa.string()), ("playing_s", pa.float64())]
)


def rows(ids: list[str], date: str = "2026-11-21") -> list[dict[str, object]]:
    return [{"event_id": i, "event_date": date, "playing_s": float(len(i))} for i in ids]


def read(writer: LakeWriter) -> list[tuple[str, str, float]]:
    files = [str(p) for p in writer.live_files("events")]
    if not files:
        return []
    return duckdb.sql(
        "SELECT event_id, event_date, playing_s "
        f"FROM read_parquet({files}, hive_partitioning = false) ORDER BY event_id"
    ).fetchall()


@pytest.fixture
def writer(tmp_path: Path) -> LakeWriter:
    return LakeWriter(tmp_path / "lake", {"events": SCHEMA})


def test_files_are_hive_partitioned_by_date_named_by_offsets_and_zstd(writer):
    paths = writer.write(
        "events",
        rows(["a"], "2026-11-20") + rows(["bb"], "2026-11-21"),
        partition=3,
        first_offset=10,
        last_offset=11,
    )
    names = sorted(str(p.relative_to(writer.root)) for p in paths)
    assert names == [
        "events/event_date=2026-11-20/p0003-o000000000010-000000000011.parquet",
        "events/event_date=2026-11-21/p0003-o000000000010-000000000011.parquet",
    ]
    meta = pq.ParquetFile(paths[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert read(writer) == [("a", "2026-11-20", 1.0), ("bb", "2026-11-21", 2.0)]


def test_a_retried_write_replaces_instead_of_duplicating(writer):
    for _ in range(3):
        writer.write("events", rows(["a", "b"]), partition=0, first_offset=0, last_offset=1)
    assert [r[0] for r in read(writer)] == ["a", "b"]
    assert not list(writer.root.rglob("*.tmp"))


def test_uncommitted_files_are_discarded_so_reprocessing_does_not_double_count(writer):
    writer.write("events", rows(["a"]), partition=0, first_offset=0, last_offset=0)
    # A batch written but never committed, then reprocessed with other boundaries.
    writer.write("events", rows(["b", "c"]), partition=0, first_offset=1, last_offset=2)
    assert writer.discard_uncommitted({0: 1}) == 1
    writer.write("events", rows(["b", "c", "d"]), partition=0, first_offset=1, last_offset=3)
    assert [r[0] for r in read(writer)] == ["a", "b", "c", "d"]


def test_compaction_merges_committed_files_without_changing_results(writer):
    for i in range(6):
        writer.write("events", rows([f"e{i}"]), partition=i % 2, first_offset=i, last_offset=i)
    writer.write("events", rows(["late"], "2026-11-01"), partition=0, first_offset=9, last_offset=9)
    before = read(writer)
    # Partition 1's offset 5 is not committed yet: it must stay a separate file.
    merged = writer.compact("events", {0: 10, 1: 5})
    assert merged == 5
    assert read(writer) == before
    day = writer.root / "events" / "event_date=2026-11-21"
    names = sorted(p.name for p in day.glob("*.parquet"))
    assert len(names) == 2
    assert names[0].startswith("compacted-")
    assert names[1] == "p0001-o000000000005-000000000005.parquet"
    # Compacting again folds the new file and the old compacted file into one.
    assert writer.compact("events", {0: 10, 1: 6}) == 2
    assert read(writer) == before
    assert len(list(day.glob("*.parquet"))) == 1


def test_interrupted_compaction_never_shows_rows_twice(writer, tmp_path):
    writer.write("events", rows(["a"]), partition=0, first_offset=0, last_offset=0)
    writer.write("events", rows(["b"]), partition=0, first_offset=1, last_offset=1)
    day = writer.root / "events" / "event_date=2026-11-21"
    saved = tmp_path / "saved"
    shutil.copytree(day, saved)
    writer.compact("events", {0: 2})
    # Simulate a crash after the merged file was written but before the sources went.
    for path in saved.iterdir():
        shutil.copy(path, day / path.name)
    assert len(list(day.glob("*.parquet"))) == 3
    assert [r[0] for r in read(writer)] == ["a", "b"]


def test_unknown_table_and_bad_rows_are_clear_errors(writer):
    with pytest.raises(LakeError, match="unknown lake table 'plays'"):
        writer.write("plays", rows(["a"]), partition=0, first_offset=0, last_offset=0)
    bad = [{"event_id": "a", "event_date": "2026-11-21", "playing_s": "lots"}]
    with pytest.raises(LakeError, match="do not fit its schema"):
        writer.write("events", bad, partition=0, first_offset=0, last_offset=0)


def test_a_poll_over_several_partitions_writes_one_file_named_by_its_ranges(writer):
    ranges = [(2, 40, 49), (0, 10, 19)]
    (path,) = writer.write_rows("events", rows(["a", "b"]), ranges=ranges)
    assert path.name.startswith("m-o000000000010-000000000049-")
    # The same ranges in any order name the same file: a retried poll replaces it.
    (again,) = writer.write_rows("events", rows(["a", "b"]), ranges=list(reversed(ranges)))
    assert again == path
    (f,) = writer.files("events")
    assert sorted(f.ranges) == sorted(ranges)
    assert read(writer) == [("a", "2026-11-21", 1.0), ("b", "2026-11-21", 1.0)]


def test_a_multi_partition_file_is_discarded_when_any_of_its_ranges_is_uncommitted(writer):
    writer.write_rows("events", rows(["a"]), ranges=[(0, 0, 9), (1, 0, 4)])
    writer.write_rows("events", rows(["b"]), ranges=[(0, 10, 19), (1, 5, 9)])
    # Partition 0 committed through 19, partition 1 only through 4: the second poll's
    # file is uncommitted as a whole (its store transaction never happened).
    assert writer.discard_uncommitted({0: 20, 1: 5}) == 1
    assert read(writer) == [("a", "2026-11-21", 1.0)]
    writer.write_rows("events", rows(["b"]), ranges=[(0, 10, 19), (1, 5, 9)])
    assert writer.compact("events", {0: 20, 1: 5}) == 0  # only one committed file
    assert writer.compact("events", {0: 20, 1: 10}) == 2
    assert read(writer) == [("a", "2026-11-21", 1.0), ("b", "2026-11-21", 1.0)]
    assert writer.files("events") == []  # only the compacted file is left


VERSIONED = pa.schema(
    [
        ("event_date", pa.string()),
        ("user_id", pa.string()),
        ("start", pa.int64()),
        ("events", pa.int64()),
        ("version", pa.int64()),
        ("deleted", pa.bool_()),
    ],
    metadata={"playpulse.version_key": "user_id,start"},
)


def session(user: str, start: int, events: int, version: int, deleted: bool = False):
    return {
        "event_date": "2026-11-21",
        "user_id": user,
        "start": start,
        "events": events,
        "version": version,
        "deleted": deleted,
    }


def current_sessions(writer: LakeWriter) -> set[tuple[str, int, int]]:
    # What readers see: the highest version per key, unless it is a tombstone.
    files = [str(p) for p in writer.live_files("sessions")]
    return set(
        duckdb.sql(
            "SELECT user_id, start, events FROM read_parquet($files) "
            "QUALIFY row_number() OVER (PARTITION BY user_id, start ORDER BY version DESC) = 1"
            " AND NOT deleted",
            params={"files": files},
        ).fetchall()
    )


def test_compacting_a_versioned_table_keeps_only_what_readers_see(tmp_path):
    writer = LakeWriter(tmp_path / "lake", {"sessions": VERSIONED})
    writer.write(
        "sessions",
        [session("u1", 0, 3, 1), session("u2", 0, 1, 1)],
        partition=0,
        first_offset=0,
        last_offset=1,
    )
    # u1's session grew (version 5); u2's was merged away (tombstone); u1 has a new one.
    writer.write(
        "sessions",
        [session("u1", 0, 4, 5), session("u2", 0, 1, 5, deleted=True)],
        partition=0,
        first_offset=2,
        last_offset=5,
    )
    writer.write("sessions", [session("u1", 100, 2, 7)], partition=0, first_offset=6, last_offset=7)
    # Not committed yet: a newer version in a file compaction must leave alone.
    writer.write("sessions", [session("u1", 100, 3, 9)], partition=0, first_offset=8, last_offset=9)
    before = current_sessions(writer)
    assert before == {("u1", 0, 4), ("u1", 100, 3)}
    assert writer.compact("sessions", {0: 8}) == 3
    assert current_sessions(writer) == before
    compacted = [p for p in writer.live_files("sessions") if p.name.startswith("compacted-")]
    rows = pq.read_table(compacted[0]).to_pylist()
    assert sorted((r["user_id"], r["start"], r["version"]) for r in rows) == [
        ("u1", 0, 5),
        ("u1", 100, 7),
    ]
