"""The Parquet lake on S3 (moto in server mode): the same layout, names, compaction,
discarding and setting aside as a local lake, through pyarrow's S3 filesystem."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from playpulse.aws.clients import client
from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.lake import LakeWriter, corrupt_files, lake_exists, open_lake
from playpulse.lake.factory import s3_filesystem, s3_root
from playpulse.lake.schema import VERSION_KEY
from playpulse.lake.writer import SINGLE_PUT_BYTES

EVENTS = pa.schema(
    [("event_id", pa.string()), ("event_date", pa.string()), ("playing_s", pa.float64())]
)
SESSIONS = pa.schema(
    [
        ("event_date", pa.string()),
        ("user_id", pa.string()),
        ("version", pa.int64()),
        ("deleted", pa.bool_()),
    ],
    metadata={VERSION_KEY: "user_id"},
)
SCHEMAS = {"events": EVENTS, "sessions": SESSIONS}


def rows(ids: list[str], date: str = "2026-11-21") -> list[dict[str, object]]:
    return [{"event_id": i, "event_date": date, "playing_s": float(len(i))} for i in ids]


def read(lake: LakeWriter, table: str = "events") -> list[tuple[Any, ...]]:
    """Every row of the live files of ``table``, sorted."""
    parts = [lake.read_table(p, lake.schemas[table]) for p in lake.live_files(table)]
    if not parts:
        return []
    return sorted(tuple(r.values()) for r in pa.concat_tables(parts).to_pylist())


def keys(bucket: str, prefix: str = "") -> list[str]:
    """The object keys of ``bucket`` under ``prefix``, as S3 lists them, less the empty
    folder markers pyarrow leaves where it deleted a folder's last file (a local lake
    keeps its empty folders too)."""
    s3 = client("s3")
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in found if not o["Key"].endswith("/"))


@pytest.fixture
def bucket(aws_env: Any) -> str:
    name = aws_env.unique("lake")
    client("s3").create_bucket(Bucket=name)
    return str(name)


@pytest.fixture
def lake(bucket: str) -> LakeWriter:
    return LakeWriter(s3_root(f"s3://{bucket}/data/lake"), SCHEMAS, filesystem=s3_filesystem())


def test_open_lake_picks_s3_for_an_s3_url_and_the_folder_otherwise(bucket, tmp_path):
    settings = Settings(data_dir=tmp_path, lake_url=f"s3://{bucket}/data/lake/")
    on_s3 = open_lake(settings)
    assert not on_s3.is_local
    assert on_s3.root == Path(bucket, "data", "lake")
    assert on_s3.location == f"s3://{bucket}/data/lake"
    assert settings.lake_location == f"s3://{bucket}/data/lake"
    assert lake_exists(settings)
    assert not lake_exists(Settings(data_dir=tmp_path, lake_url="s3://no-such-bucket-x1/l"))
    with pytest.raises(ConfigError, match="S3"):
        _ = settings.lake_path
    with pytest.raises(ConfigError, match="names no bucket"):
        s3_root("s3:///lake")
    local = open_lake(Settings(data_dir=tmp_path))
    assert local.is_local
    assert local.root == tmp_path / "lake"


def test_files_land_in_the_hive_layout_with_deterministic_names(lake, bucket):
    paths = lake.write(
        "events",
        rows(["a"], "2026-11-20") + rows(["bb"], "2026-11-21"),
        partition=3,
        first_offset=10,
        last_offset=11,
    )
    expected = [
        "data/lake/events/event_date=2026-11-20/p0003-o000000000010-000000000011.parquet",
        "data/lake/events/event_date=2026-11-21/p0003-o000000000010-000000000011.parquet",
    ]
    assert keys(bucket) == expected
    assert sorted(str(p) for p in paths) == [f"{bucket}/{k}" for k in expected]
    assert lake.read_metadata(paths[0]).row_group(0).column(0).compression == "ZSTD"
    assert read(lake) == [("a", "2026-11-20", 1.0), ("bb", "2026-11-21", 2.0)]
    # Several partitions' ranges: one m-... file, its ranges in the footer.
    (multi,) = lake.write_rows("events", rows(["c"]), ranges=[(1, 5, 6), (0, 7, 9)])
    assert multi.name.startswith("m-o000000000005-000000000009-")
    assert {f.ranges for f in lake.files("events") if f.path == multi} == {((0, 7, 9), (1, 5, 6))}


def test_a_retried_write_replaces_the_object_instead_of_adding_rows(lake, bucket):
    for _ in range(3):
        lake.write("events", rows(["a", "b"]), partition=0, first_offset=0, last_offset=1)
    assert read(lake) == [("a", "2026-11-21", 1.0), ("b", "2026-11-21", 1.0)]
    assert len(keys(bucket)) == 1
    assert lake.remove_orphan_temp_files() == 0  # one PUT per file: no temporary objects


def test_discard_uncommitted_deletes_the_objects_of_uncommitted_batches(lake, bucket):
    lake.write("events", rows(["a"]), partition=0, first_offset=0, last_offset=0)
    lake.write("events", rows(["b", "c"]), partition=0, first_offset=1, last_offset=2)
    lake.write("events", rows(["x"]), partition=1, first_offset=0, last_offset=0)
    # Partition 1 is not this processor's: only partition 0's uncommitted file goes.
    assert lake.discard_uncommitted({0: 1}, partitions={0}) == 1
    lake.write("events", rows(["b", "c", "d"]), partition=0, first_offset=1, last_offset=3)
    assert [r[0] for r in read(lake)] == ["a", "b", "c", "d", "x"]
    assert lake.discard_uncommitted({0: 4}) == 1  # partition 1: nothing committed
    assert [r[0] for r in read(lake)] == ["a", "b", "c", "d"]


def write_history(lake: LakeWriter) -> None:
    """The same writes, for a local and an S3 lake: two months of events and versioned
    sessions over two partitions, some not yet committed."""
    offset = 0
    for day in ("2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"):
        for p in (0, 1):
            ids = [f"{day}-{p}-{i}" for i in range(3)]
            lake.write(
                "events", rows(ids, day), partition=p, first_offset=offset, last_offset=offset + 2
            )
            versions = [
                {"event_date": day, "user_id": f"u{p}", "version": offset, "deleted": False},
                {
                    "event_date": day,
                    "user_id": f"v{p}",
                    "version": offset,
                    "deleted": day.endswith("2"),
                },
            ]
            lake.write(
                "sessions", versions, partition=p, first_offset=offset, last_offset=offset + 2
            )
        offset += 3
    lake.write_months("events", pa.Table.from_pylist(rows(["old"], "2026-09-09"), EVENTS), tag="t1")


def test_compaction_on_s3_keeps_the_same_rows_as_on_a_local_lake(lake, bucket, tmp_path):
    local = LakeWriter(tmp_path / "lake", SCHEMAS)
    write_history(local)
    write_history(lake)
    committed = {0: 9, 1: 12}  # partition 0's last batch is not committed
    before = {t: read(lake, t) for t in SCHEMAS}
    assert before == {t: read(local, t) for t in SCHEMAS}
    merged = {t: lake.compact(t, committed) for t in SCHEMAS}
    assert merged == {t: local.compact(t, committed) for t in SCHEMAS}
    assert merged["events"] > 0
    assert merged["sessions"] > 0
    after = {t: read(lake, t) for t in SCHEMAS}
    assert after == {t: read(local, t) for t in SCHEMAS}
    assert after["events"] == before["events"]
    # Versioned rows no reader uses are dropped alike: fewer rows, same newest versions.
    assert len(after["sessions"]) < len(before["sessions"])

    def layout(w: LakeWriter) -> list[tuple[str, str]]:
        return sorted(
            (p.parent.name, "compacted" if p.name.startswith("compacted-") else p.name)
            for t in SCHEMAS
            for p in w.live_files(t)
        )

    assert layout(lake) == layout(local)
    assert ("event_month=2026-10", "compacted") in layout(lake)
    # Nothing left behind but live files: the replaced objects were deleted.
    live = {str(p) for t in SCHEMAS for p in lake.live_files(t)}
    assert {f"{bucket}/{k}" for k in keys(bucket)} == live
    # The uncommitted batch is still its own file, so discarding it still works.
    assert lake.discard_uncommitted(committed) == 2
    assert lake.discard_uncommitted(committed) == 0


def test_an_interrupted_compaction_never_double_counts(lake, bucket):
    for i in range(3):
        lake.write("events", rows([f"e{i}"]), partition=0, first_offset=i, last_offset=i)
    source = lake.live_files("events")[0]
    data = lake.read_table(source)
    assert lake.compact("events", {0: 3}) == 3
    # As if interrupted before the deletes: a replaced file is back beside the merged one.
    lake.write_table("events", data, ranges=[(0, 0, 0)])
    assert len(keys(bucket)) == 2
    assert [r[0] for r in read(lake)] == ["e0", "e1", "e2"]
    assert source not in lake.live_files("events")  # the merged file names it
    assert lake.compact("events", {0: 3}) == 0  # as on a local lake: not merged twice
    assert [r[0] for r in read(lake)] == ["e0", "e1", "e2"]


def test_a_corrupt_object_is_set_aside_and_the_rest_still_answer(lake, bucket):
    lake.write("events", rows(["a"]), partition=0, first_offset=0, last_offset=0)
    lake.write("events", rows(["b"]), partition=0, first_offset=1, last_offset=1)
    bad_key = "data/lake/events/event_date=2026-11-21/p0000-o000000000002-000000000002.parquet"
    client("s3").put_object(Bucket=bucket, Key=bad_key, Body=b"not parquet at all")
    assert len(lake.live_files("events")) == 3
    good = lake.readable(lake.live_files("events"))
    assert [p.name for p in good] == [
        "p0000-o000000000000-000000000000.parquet",
        "p0000-o000000000001-000000000001.parquet",
    ]
    assert bad_key not in keys(bucket)
    (aside,) = corrupt_files(lake)
    assert aside.original == "events/event_date=2026-11-21/p0000-o000000000002-000000000002.parquet"
    assert aside.table == "events"
    assert aside.size_bytes == len(b"not parquet at all")
    assert aside.moved_at is not None
    assert "Parquet" in aside.reason or "parquet" in aside.reason
    assert str(aside.path).startswith(f"{bucket}/data/lake/_corrupt/events/event_date=2026-11-21/")
    assert [r[0] for r in read(lake)] == ["a", "b"]
    # Compaction and discarding skip nothing they should not: the rest merge as usual.
    assert lake.compact("events", {0: 3}) == 2
    assert [r[0] for r in read(lake)] == ["a", "b"]
    assert lake.unreadable_reason(lake.live_files("events")[0]) is None


def test_backfill_month_files_and_deleting_them(lake, bucket):
    history = pa.Table.from_pylist(
        rows(["x"], "2026-08-03") + rows(["y"], "2026-09-04") + rows(["z"], "2026-09-05"), EVENTS
    )
    written = lake.write_months("events", history, tag="import-1")
    assert sorted(str(p.relative_to(lake.root)) for p in written) == [
        "events/event_month=2026-08/backfill-import-1.parquet",
        "events/event_month=2026-09/backfill-import-1.parquet",
    ]
    assert lake.write_months("events", history, tag="import-1") == written  # replaces
    assert [r[0] for r in read(lake)] == ["x", "y", "z"]
    assert lake.discard_uncommitted({}) == 0  # no offset ranges: never discarded
    assert lake.data_files("events") == sorted(written)
    assert lake.delete(written[0])
    assert not lake.delete(written[0])
    assert [r[0] for r in read(lake)] == ["y", "z"]
    stamp = lake.stat(written[1])
    assert stamp is not None
    assert stamp[1] > 0
    assert lake.stat(written[0]) is None


@pytest.mark.parametrize("rows_count", [300_000, 1_000_000])
def test_small_and_large_files_go_up_whole(lake, bucket, rows_count):
    # Random doubles do not compress: about 2.4 MB (one PutObject from pyarrow) and 8 MB
    # (above SINGLE_PUT_BYTES: one PutObject through boto3, not a multipart upload).
    rng = random.Random(rows_count)
    values = [rng.random() for _ in range(rows_count)]
    table = pa.table(
        {
            "event_id": pa.array([None] * rows_count, pa.string()),
            "event_date": pa.array(["2026-11-21"] * rows_count),
            "playing_s": values,
        },
        schema=EVENTS,
    )
    (path,) = lake.write_table("events", table, ranges=[(0, 0, rows_count - 1)])
    size = client("s3").head_object(Bucket=bucket, Key=str(path.relative_to(bucket)))
    assert (size["ContentLength"] > SINGLE_PUT_BYTES) == (rows_count > 500_000)
    back = lake.read_table(path)
    assert back["playing_s"].to_pylist() == values
