"""Month partitions: backfills write one file a month, compaction folds past months'
days into one file of their month, and readers see every row once throughout."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from playpulse.errors import LakeError
from playpulse.lake import LakeWriter
from playpulse.lake.schema import VERSION_KEY
from playpulse.lake.writer import partition_days

SCHEMA = pa.schema(
    [("key", pa.string()), ("event_date", pa.string()), ("version", pa.int64())],
    metadata={VERSION_KEY: "key"},
)


def table(rows: list[tuple[str, str, int]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"key": k, "event_date": d, "version": v} for k, d, v in rows], schema=SCHEMA
    )


def newest(writer: LakeWriter) -> list[tuple[str, str, int]]:
    """What a reader of the versioned table sees: the highest version per key."""
    files = [str(p) for p in writer.live_files("plays")]
    return duckdb.sql(
        "SELECT key, arg_max(event_date, version), max(version) "
        f"FROM read_parquet({files}, hive_partitioning = false) GROUP BY key ORDER BY key"
    ).fetchall()


@pytest.fixture
def writer(tmp_path: Path) -> LakeWriter:
    return LakeWriter(tmp_path / "lake", {"plays": SCHEMA})


def test_a_backfill_writes_one_file_per_month_and_survives_discarding(writer):
    rows = [(f"k{d}", f"2024-0{m}-{d:02d}", -1) for m in (1, 3) for d in range(1, 29)]
    paths = writer.write_months("plays", table(rows), tag="abc-1")
    assert sorted(str(p.relative_to(writer.root)) for p in paths) == [
        "plays/event_month=2024-01/backfill-abc-1.parquet",
        "plays/event_month=2024-03/backfill-abc-1.parquet",
    ]
    writer.write_months("plays", table(rows), tag="abc-1")  # a retry replaces
    assert len(writer.live_files("plays")) == 2
    assert writer.discard_uncommitted({}) == 0  # not stream files: never discarded
    assert len(writer.live_files("plays")) == 2
    files = [str(p) for p in writer.live_files("plays")]
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet({files})").fetchall() == [(56,)]


def test_a_bad_tag_is_refused(writer):
    with pytest.raises(LakeError, match="lowercase"):
        writer.write_months("plays", table([("a", "2024-01-01", 0)]), tag="../x")


def test_compaction_folds_past_months_into_one_file_each_and_keeps_the_answer(writer):
    offset = 0
    for month in ("2024-01", "2024-02", "2024-03"):
        for day in range(1, 11):
            rows = [(f"{month}-{day}", f"{month}-{day:02d}", offset)]
            if day == 5:  # a newer version of an earlier key of the month
                rows.append((f"{month}-1", f"{month}-01", offset))
            writer.write_rows(
                "plays",
                table(rows).to_pylist(),
                ranges=[(0, offset, offset)],
            )
            offset += 1
    writer.write_months("plays", table([("old", "2024-01-20", -1)]), tag="b")
    before = newest(writer)
    assert len(writer.live_files("plays")) == 34  # 30 days, 3 rewrites of a day 1, a backfill
    merged = writer.compact("plays", {0: offset})
    after = writer.live_files("plays")
    # January and February: one file each; March (the newest month) keeps one per day.
    months = sorted(p.parent.name for p in after if p.parent.name.startswith("event_month"))
    assert months == ["event_month=2024-01", "event_month=2024-02"]
    assert len(after) == 2 + 10
    assert merged == 12 + 11 + 2
    assert newest(writer) == before
    assert writer.compact("plays", {0: offset}) == 0  # nothing left to merge


def test_uncommitted_days_stay_out_of_their_months_file(writer):
    writer.write_rows("plays", table([("a", "2024-01-01", 0)]).to_pylist(), ranges=[(0, 0, 0)])
    writer.write_rows("plays", table([("b", "2024-01-02", 1)]).to_pylist(), ranges=[(0, 1, 1)])
    writer.write_rows("plays", table([("c", "2024-02-01", 2)]).to_pylist(), ranges=[(0, 2, 2)])
    assert writer.compact("plays", {0: 1}) == 0  # only one committed file in January
    assert writer.compact("plays", {0: 3}) == 2
    assert [p.parent.name for p in writer.live_files("plays")] == [
        "event_date=2024-02-01",
        "event_month=2024-01",
    ]


def test_a_replaced_file_left_by_an_interrupted_compaction_is_not_read(writer, tmp_path):
    writer.write_rows("plays", table([("a", "2024-01-01", 0)]).to_pylist(), ranges=[(0, 0, 0)])
    writer.write_rows("plays", table([("b", "2024-01-02", 1)]).to_pylist(), ranges=[(0, 1, 1)])
    writer.write_rows("plays", table([("c", "2024-02-01", 2)]).to_pylist(), ranges=[(0, 2, 2)])
    kept = tmp_path / "kept"
    shutil.copytree(writer.root / "plays" / "event_date=2024-01-01", kept)
    writer.compact("plays", {0: 3})
    # As if the compaction stopped before deleting what it replaced:
    shutil.copytree(kept, writer.root / "plays" / "event_date=2024-01-01", dirs_exist_ok=True)
    assert [k for k, _, _ in newest(writer)] == ["a", "b", "c"]
    assert len(writer.live_files("plays")) == 2


def test_partition_days():
    assert [str(d) for d in partition_days("event_month=2024-02")] == ["2024-02-01", "2024-02-29"]
    assert [str(d) for d in partition_days("event_month=2024-12")] == ["2024-12-01", "2024-12-31"]
    assert [str(d) for d in partition_days("event_date=2024-02-03")] == ["2024-02-03"] * 2
    with pytest.raises(ValueError, match="not a lake partition folder"):
        partition_days("x=1")
