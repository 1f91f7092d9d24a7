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
        assert stream.read(0, 7, 10) == []  # the last offset, erased
        assert stream.partitions()[0].end_offset == 8  # offsets are never reused
        assert stream.append([("bo", b"bo-8")])[0].offset == 8
        assert 0 < stream.stored_bytes() < before
        assert stream.erase(lambda key, value: key == "ana") == 0
        # Retention still deletes whole (now split) batches by age.
        assert stream.enforce_retention(datetime.now(UTC) + timedelta(days=30)) >= 3
    finally:
        stream.close()
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")
    assert b"ana-" not in path.read_bytes()
