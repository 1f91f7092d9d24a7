"""The SQLite stream under faults: a data dir deleted, moved, replaced or read-only, a
size limit that loses records (kept across restarts), and files from older versions."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from playpulse.config import Settings
from playpulse.errors import BackpressureError, StreamError
from playpulse.status import data_dir_status
from playpulse.stream import SQLiteStream
from playpulse.stream.factory import open_stream
from playpulse.stream.testing import run_unprivileged

FAR_FUTURE = timedelta(days=365 * 100)


# --- writes that would be lost are refused ------------------------------------------------


def test_append_after_the_data_dir_was_deleted_raises_stream_error(tmp_path):
    data_dir = tmp_path / "data"
    with SQLiteStream(data_dir / "stream.db", num_partitions=2) as stream:
        stream.append([("user-1", b"before")])
        shutil.rmtree(data_dir)

        for _ in range(3):  # every append, not only the first
            with pytest.raises(StreamError, match=r"is gone.*deleted or moved"):
                stream.append([("user-1", b"lost?")])
        with pytest.raises(StreamError, match="is gone"):
            stream.append_offsets([("user-1", b"lost?")])
        with pytest.raises(StreamError, match="is gone"):
            stream.commit("g", 0, 0)
    # Nothing recreated the file behind the stream's back (not even its checkpointer).
    assert not data_dir.exists()


def test_append_after_the_data_dir_was_moved_raises_stream_error(tmp_path):
    with SQLiteStream(tmp_path / "data" / "stream.db", num_partitions=2) as stream:
        (tmp_path / "data").rename(tmp_path / "moved")

        with pytest.raises(StreamError, match="deleted or moved"):
            stream.append([("user-1", b"v")])


def test_append_after_the_file_was_replaced_raises_stream_error(tmp_path):
    path = tmp_path / "stream.db"
    with SQLiteStream(path, num_partitions=2) as stream:
        stream.append([("user-1", b"v")])
        path.unlink()
        with SQLiteStream(path, num_partitions=2) as other:  # a new file at the same path
            other.append([("user-2", b"w")])

            with pytest.raises(StreamError, match="replaced by another file"):
                stream.append([("user-1", b"v")])
            assert sum(info.count for info in other.partitions()) == 1


def test_opening_in_a_read_only_data_dir_raises_stream_error(shared_dir):
    data_dir = shared_dir / "data"
    data_dir.mkdir()
    data_dir.chmod(0o555)

    def open_it() -> None:
        SQLiteStream(data_dir / "stream.db", num_partitions=2).close()

    result = run_unprivileged(open_it)

    assert result.startswith("StreamError: cannot open the stream"), result
    assert str(data_dir / "stream.db") in result


def test_a_read_only_stream_file_raises_stream_error_not_backpressure(shared_dir):
    data_dir = shared_dir / "data"
    with SQLiteStream(data_dir / "stream.db", num_partitions=2) as stream:
        stream.append([("user-1", b"v")])
    for path in data_dir.iterdir():
        path.chmod(0o444)
    data_dir.chmod(0o555)

    def append() -> None:
        with SQLiteStream(data_dir / "stream.db", num_partitions=2) as stream:
            stream.append([("user-1", b"v")])

    result = run_unprivileged(append)

    assert result.startswith("StreamError: "), result
    assert "readonly" in result or "unable to open" in result, result
    assert not result.startswith(BackpressureError.__name__)


def test_a_data_dir_that_is_a_file_raises_stream_error(tmp_path):
    (tmp_path / "data").write_text("not a folder")

    with pytest.raises(StreamError, match="cannot open the stream"):
        SQLiteStream(tmp_path / "data" / "stream.db")


# --- the size limit, lost records, kept across restarts ------------------------------------


def test_lost_records_and_stored_bytes_survive_a_restart(tmp_path):
    path = tmp_path / "stream.db"
    with SQLiteStream(path, num_partitions=2, max_bytes=0) as stream:
        stream.append([(f"user-{i}", b"x" * 100) for i in range(10)])
        stream.commit("processor", 0, 1)
        assert stream.enforce_retention(datetime.now(UTC)) == 10
        lost = stream.lost("processor")
        stream.append([("user-1", b"after")])
        stored = stream.stored_bytes()
    assert sum(lost.values()) == 9
    assert stored > 0

    with SQLiteStream(path, num_partitions=2) as reopened:
        assert reopened.lost("processor") == lost
        assert reopened.stored_bytes() == stored
        assert reopened.max_bytes is None


def test_open_stream_takes_the_size_limit_from_the_settings(tmp_path):
    settings = Settings(data_dir=tmp_path, num_partitions=2, stream_max_bytes=1234)
    with open_stream(settings) as stream:
        assert stream.max_bytes == 1234
    assert Settings(data_dir=tmp_path).stream_max_bytes is None


def test_status_reports_lost_records_and_stream_bytes(tmp_path):
    settings = Settings(data_dir=tmp_path, num_partitions=2, stream_max_bytes=0)
    with open_stream(settings) as stream:
        stream.append([(f"user-{i}", b"x" * 100) for i in range(10)])
        for partition in range(2):
            stream.commit("processor", partition, 0)
        stream.enforce_retention(datetime.now(UTC))

    info = data_dir_status(settings)

    assert info["stream_bytes"] == 0
    assert info["stream_max_bytes"] == 0
    assert info["lost_records"]["processor"]["total"] == 10
    assert sum(info["lost_records"]["processor"]["partitions"].values()) == 10
    # Lag still says the processor has not committed them.
    assert info["consumer_lag"]["processor"]["total"] == 10


# --- files from before the size limit ----------------------------------------------------

_OLD_SCHEMA = """
CREATE TABLE stream_meta (name TEXT PRIMARY KEY, num_partitions INTEGER NOT NULL);
CREATE TABLE partitions (
    partition INTEGER PRIMARY KEY, start_offset INTEGER NOT NULL, end_offset INTEGER NOT NULL
);
CREATE TABLE record_batches (
    partition INTEGER NOT NULL, base_offset INTEGER NOT NULL, record_count INTEGER NOT NULL,
    appended_at_us INTEGER NOT NULL, records BLOB NOT NULL, UNIQUE (partition, base_offset)
);
CREATE TABLE group_offsets (
    "group" TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
    PRIMARY KEY ("group", partition)
) WITHOUT ROWID;
"""


def test_a_file_from_before_the_size_limit_is_migrated(tmp_path):
    path = tmp_path / "stream.db"
    db = sqlite3.connect(path)
    db.executescript(_OLD_SCHEMA)
    db.execute("INSERT INTO stream_meta VALUES ('events', 2)")
    db.execute("INSERT INTO partitions VALUES (0, 0, 3), (1, 0, 0)")
    blob = msgspec.msgpack.encode([("k", b"a" * 50), ("k", b"b"), ("k", b"c")])
    db.execute("INSERT INTO record_batches VALUES (0, 0, 3, 1, ?)", (blob,))
    db.execute("INSERT INTO group_offsets VALUES ('processor', 0, 1)")
    db.commit()
    db.close()

    with SQLiteStream(path, num_partitions=2) as stream:
        assert stream.stored_bytes() == len(blob)
        assert stream.lost("processor") == {0: 0, 1: 0}
        assert [r.value for r in stream.read(0, 0, 10)] == [b"a" * 50, b"b", b"c"]
        stream.max_bytes = 0
        assert stream.enforce_retention(datetime(2026, 1, 1, tzinfo=UTC)) == 3
        assert stream.lost("processor") == {0: 2, 1: 0}
        assert stream.stored_bytes() == 0
