""":meth:`SQLiteStream.erase` (issue #14, Deliver 4): a person's records leave the
embedded stream; everybody else's keep their offsets and are read as before, across the
gaps; the erased bytes are not in the file."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playpulse.stream.sqlite import SQLiteStream
from playpulse.testing import read_partition


def test_erased_records_leave_gaps_that_reads_step_over(tmp_path: Path) -> None:
    path = tmp_path / "stream.db"
    stream = SQLiteStream(path, num_partitions=1)
    try:
        stream.append([("ana", b"ana-0"), ("bo", b"bo-1"), ("ana", b"ana-2"), ("bo", b"bo-3")])
        stream.append([("ana", b"ana-4"), ("ana", b"ana-5")])
        stream.append([("bo", b"bo-6"), ("ana", b"ana-7")])
        before = stream.stored_bytes()
        assert stream.erase(lambda key, value: key == "ana") == 5
        kept = read_partition(stream, 0)
        assert [(r.offset, r.value) for r in kept] == [(1, b"bo-1"), (3, b"bo-3"), (6, b"bo-6")]
        assert [r.offset for r in stream.read(0, 2, 10)] == [3, 6]  # from inside a gap
        assert [r.offset for r in stream.read(0, 4, 10)] == [6]  # a batch wholly erased
        assert stream.read(0, 7, 10) == []
        # The erased last record was read by nobody: its offset is given back.
        assert stream.partitions()[0].end_offset == 7
        assert stream.append([("bo", b"bo-7")])[0].offset == 7
        assert 0 < stream.stored_bytes() < before
        assert stream.erase(lambda key, value: key == "ana") == 0
        # Retention still deletes whole (now split) batches by age.
        assert stream.enforce_retention(datetime.now(UTC) + timedelta(days=30)) >= 3
    finally:
        stream.close()
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")
    assert b"ana-" not in path.read_bytes()


def test_offsets_a_consumer_reached_are_never_given_back(tmp_path: Path) -> None:
    """An erased tail stays counted when a group committed past it (here, or in the
    processor's store: ``floor``), so nobody's position is beyond the end."""
    stream = SQLiteStream(tmp_path / "stream.db", num_partitions=2)
    try:
        stream.append([("ana", b"a-0"), ("ana", b"a-1")])
        ana = stream.partition_for("ana")
        stream.commit("readers", ana, 1)
        assert stream.erase(lambda key, value: True) == 2
        assert stream.partitions()[ana].end_offset == 1
        stream.append([("ana", b"a-2"), ("ana", b"a-3")])
        assert stream.erase(lambda key, value: True, floor={ana: 3}) == 2
        assert stream.partitions()[ana].end_offset == 3
        assert stream.read(ana, 3, 10) == []
    finally:
        stream.close()
