"""The quarantine store: bounded by size and age, drops counted, refuses writes it would
lose, migrates files from before the bounds. Real SQLite files in tmp_path."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playpulse.config import Settings
from playpulse.errors import QuarantineError
from playpulse.quarantine import QuarantineStore, Rejection, open_quarantine
from playpulse.quarantine import store as store_module
from playpulse.stream.testing import run_unprivileged

NOW = datetime.now(UTC)
MiB = 1024 * 1024


def rejection(
    size: int = 1000,
    reason: str = "invalid_event",
    received_at: datetime = NOW,
    event_id: str | None = None,
) -> Rejection:
    """A rejection whose raw payload is ``size`` bytes."""
    errors = [{"loc": "event", "msg": "bad"}]
    return Rejection(b"x" * size, reason, errors, received_at, "collector", event_id)


def all_entries(store: QuarantineStore) -> list:
    return store.list(status=None, limit=10**6)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "quarantine.db"


# --- the size cap ---------------------------------------------------------------------


def test_adding_past_the_cap_drops_the_oldest_and_counts_them(path):
    with QuarantineStore(path, max_bytes=MiB) as store:
        ids = [store.add([rejection(64 * 1024, reason=f"r{i % 2}")])[0] for i in range(40)]

        stats = store.stats()
        kept = [e.id for e in all_entries(store)]
        assert stats.stored_bytes <= MiB
        assert kept == ids[-len(kept) :]  # the newest stay, in order
        assert 10 < len(kept) < 16  # 64 KiB each, 1 MiB cap
        assert stats.entries == len(kept)
        assert stats.dropped == 40 - len(kept)
        assert stats.dropped_by_cause == {"max_bytes": 40 - len(kept)}
        assert sum(stats.dropped_by_reason.values()) == stats.dropped
        assert set(stats.dropped_by_reason) == {"r0", "r1"}
        assert stats.quarantined == len(kept)


def test_the_running_total_matches_the_entries(path):
    with QuarantineStore(path, max_bytes=MiB) as store:
        for i in range(30):
            store.add([rejection(i * 997 % 50_000, event_id=f"e{i}") for _ in range(3)])
        db = sqlite3.connect(path)
        try:
            total, n = db.execute("SELECT sum(size_bytes), count(*) FROM quarantine").fetchone()
        finally:
            db.close()
        stats = store.stats()
        assert (stats.stored_bytes, stats.entries) == (total, n)


def test_the_entries_of_one_add_are_kept_even_past_the_cap(path):
    with QuarantineStore(path, max_bytes=MiB) as store:
        store.add([rejection(1000)])
        ids = store.add([rejection(400 * 1024) for _ in range(3)])

        assert [e.id for e in all_entries(store)] == ids
        assert store.stats().dropped == 1


def test_replayed_entries_dropped_are_not_counted_as_dropped(path):
    with QuarantineStore(path, max_bytes=MiB) as store:
        [first] = store.add([rejection(600 * 1024)])
        store.mark_replayed([first], NOW)
        store.add([rejection(600 * 1024)])

        stats = store.stats()
        assert stats.entries == 1
        assert stats.dropped == 0


def test_the_file_stays_bounded_under_a_flood(path):
    with QuarantineStore(path, max_bytes=MiB) as store:
        for _ in range(400):  # 25 MiB offered in all
            store.add([rejection(64 * 1024)])
        stats = store.stats()

    # Freed pages are reused: the file is the cap plus pages of overhead, not 25 MiB.
    assert stats.stored_bytes <= MiB
    assert path.stat().st_size < 3 * MiB
    assert stats.dropped > 380


def test_drops_are_counted_in_the_file_across_restarts(path):
    with QuarantineStore(path, max_bytes=MiB) as store:
        for _ in range(20):
            store.add([rejection(100 * 1024)])
        before = store.stats()
    with QuarantineStore(path, max_bytes=MiB) as reopened:
        after = reopened.stats()
    assert before.dropped > 0
    assert (after.dropped_by_reason, after.entries, after.stored_bytes) == (
        before.dropped_by_reason,
        before.entries,
        before.stored_bytes,
    )


def test_a_lower_cap_applies_at_the_next_retention(path):
    with QuarantineStore(path, max_bytes=4 * MiB) as store:
        store.add([rejection(100 * 1024) for _ in range(20)])
    with QuarantineStore(path, max_bytes=MiB) as store:
        assert store.stats().stored_bytes > MiB
        dropped = store.enforce_retention(NOW)
        assert dropped > 0
        assert store.stats().stored_bytes <= MiB
        assert store.stats().dropped == dropped


# --- retention ----------------------------------------------------------------------


def test_entries_older_than_the_retention_are_dropped_and_counted(path):
    with QuarantineStore(path, retention=timedelta(days=365)) as store:
        old = store.add([rejection(received_at=NOW - timedelta(days=31), reason="old")] * 3)
        young = store.add([rejection(received_at=NOW - timedelta(days=29))])
    with QuarantineStore(path, retention=timedelta(days=30)) as store:
        assert len(all_entries(store)) == 4  # opening drops nothing

        assert store.enforce_retention(NOW) == 3
        assert [e.id for e in all_entries(store)] == young
        stats = store.stats()
        assert stats.dropped_by_reason == {"old": 3}
        assert stats.dropped_by_cause == {"retention": 3}
        with pytest.raises(QuarantineError, match=f"no quarantine entry with id {old[0]}"):
            store.get(old[0])
        assert store.enforce_retention(NOW) == 0


def test_add_drops_expired_entries_as_it_goes(path, monkeypatch):
    with QuarantineStore(path, retention=timedelta(days=1)) as store:
        store.add([rejection(received_at=NOW - timedelta(days=2))])
        # The age check runs at most every RETENTION_CHECK_INTERVAL_S; make it due now.
        monkeypatch.setattr(store, "_next_retention_check", 0.0)
        store.add([rejection()])

        assert store.stats().dropped_by_cause == {"retention": 1}
        assert len(all_entries(store)) == 1


def test_retention_gives_space_back_to_the_file_system(path):
    with QuarantineStore(path, retention=timedelta(days=365)) as store:
        store.add([rejection(64 * 1024, received_at=NOW - timedelta(days=2)) for _ in range(40)])
    with QuarantineStore(path, retention=timedelta(days=1)) as store:
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            full = db.execute("PRAGMA page_count").fetchone()[0]
            store.enforce_retention(NOW)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            emptied = db.execute("PRAGMA page_count").fetchone()[0]
        finally:
            db.close()
    assert emptied < full / 10


# --- settings -----------------------------------------------------------------------


def test_open_quarantine_takes_its_bounds_from_the_settings(tmp_path):
    settings = Settings(
        data_dir=tmp_path, quarantine_max_bytes=2 * MiB, quarantine_retention_days=3
    )
    with open_quarantine(settings) as store:
        assert store.max_bytes == 2 * MiB
        assert store.retention == timedelta(days=3)
        assert store.path == settings.quarantine_path
    defaults = Settings(data_dir=tmp_path)
    assert defaults.quarantine_max_bytes == store_module.DEFAULT_MAX_BYTES
    assert defaults.quarantine_retention == store_module.DEFAULT_RETENTION


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYPULSE_QUARANTINE_MAX_BYTES", str(5 * MiB))
    monkeypatch.setenv("PLAYPULSE_QUARANTINE_RETENTION_DAYS", "0.5")
    monkeypatch.setenv("PLAYPULSE_STREAM_MAX_BYTES", "123456")
    settings = Settings(data_dir=tmp_path)
    assert settings.quarantine_max_bytes == 5 * MiB
    assert settings.quarantine_retention == timedelta(hours=12)
    assert settings.stream_max_bytes == 123456
    # Worker processes get the same settings, and an unset limit stays unset.
    env = settings.to_env()
    assert env["PLAYPULSE_STREAM_MAX_BYTES"] == "123456"
    assert (
        "PLAYPULSE_STREAM_MAX_BYTES"
        not in Settings(data_dir=tmp_path, stream_max_bytes=None).to_env()
    )


@pytest.mark.parametrize("max_bytes", [0, -1])
def test_a_cap_below_one_byte_is_refused(path, max_bytes):
    with pytest.raises(QuarantineError, match="max_bytes"):
        QuarantineStore(path, max_bytes=max_bytes)


# --- model check --------------------------------------------------------------------

SIZES = st.lists(st.integers(0, 40_000), min_size=1, max_size=4)


@given(adds=st.lists(SIZES, min_size=1, max_size=25))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_model_the_newest_entries_that_fit_stay_and_the_rest_are_counted(tmp_path, adds):
    cap = 100_000
    path = tmp_path / f"q-{len(list(tmp_path.iterdir()))}.db"
    overhead = len(NOW.isoformat()) + len("collector") + len("invalid_event")
    overhead += len('[{"loc": "event", "msg": "bad"}]') + store_module.ENTRY_OVERHEAD_BYTES
    model: list[tuple[int, int]] = []  # (id, size)
    dropped = 0
    with QuarantineStore(path, max_bytes=cap) as store:
        for sizes in adds:
            ids = store.add([rejection(n) for n in sizes])
            new = [(i, n + overhead) for i, n in zip(ids, sizes, strict=True)]
            model.extend(new)
            total = sum(n for _, n in model)
            while total > cap and len(model) > len(new):
                total -= model.pop(0)[1]
                dropped += 1
            stats = store.stats()
            assert [e.id for e in all_entries(store)] == [i for i, _ in model]
            assert stats.stored_bytes == total
            assert stats.dropped == dropped


# --- writes it would lose are refused ------------------------------------------------------


def test_add_after_the_data_dir_was_deleted_raises_quarantine_error(tmp_path):
    data_dir = tmp_path / "data"
    with QuarantineStore(data_dir / "quarantine.db") as store:
        store.add([rejection()])
        shutil.rmtree(data_dir)

        with pytest.raises(QuarantineError, match=r"is gone.*deleted or moved"):
            store.add([rejection()])
        with pytest.raises(QuarantineError, match="is gone"):
            store.enforce_retention(NOW)
    assert not data_dir.exists()


def test_add_after_the_file_was_replaced_raises_quarantine_error(tmp_path):
    path = tmp_path / "quarantine.db"
    with QuarantineStore(path) as store:
        path.unlink()
        with (
            QuarantineStore(path),
            pytest.raises(QuarantineError, match="replaced by another file"),
        ):
            store.add([rejection()])


def test_a_data_dir_that_is_a_file_raises_quarantine_error(tmp_path):
    (tmp_path / "data").write_text("not a folder")

    with pytest.raises(QuarantineError, match="opening the quarantine"):
        QuarantineStore(tmp_path / "data" / "quarantine.db")


def test_a_read_only_data_dir_raises_quarantine_error(shared_dir):
    data_dir = shared_dir / "data"
    data_dir.mkdir()
    data_dir.chmod(0o555)

    result = run_unprivileged(lambda: QuarantineStore(data_dir / "quarantine.db").close())

    assert result.startswith("QuarantineError: opening the quarantine"), result


def test_a_read_only_quarantine_file_raises_quarantine_error(shared_dir):
    data_dir = shared_dir / "data"
    with QuarantineStore(data_dir / "quarantine.db") as store:
        store.add([rejection()])
    for file in data_dir.iterdir():
        file.chmod(0o444)
    data_dir.chmod(0o555)

    def add() -> None:
        with QuarantineStore(data_dir / "quarantine.db") as store:
            store.add([rejection()])

    result = run_unprivileged(add)

    assert result.startswith("QuarantineError: "), result
    assert "readonly" in result or "unable to open" in result, result


# --- files from before the bounds -----------------------------------------------------

_OLD_SCHEMA = """
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, source TEXT NOT NULL,
    reason TEXT NOT NULL, errors TEXT NOT NULL, event_id TEXT, raw BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'quarantined', replayed_at TEXT, origin TEXT UNIQUE
);
CREATE INDEX quarantine_status ON quarantine (status, id);
"""


def test_a_file_from_before_the_bounds_is_migrated_and_then_bounded(path):
    db = sqlite3.connect(path)
    db.executescript(_OLD_SCHEMA)
    db.executemany(
        "INSERT INTO quarantine (received_at, source, reason, errors, raw) "
        "VALUES (?, 'collector', 'malformed_body', '[]', ?)",
        [(NOW.isoformat(), b"y" * 200_000) for _ in range(10)],
    )
    db.commit()
    db.close()

    with QuarantineStore(path, max_bytes=MiB) as store:
        stats = store.stats()
        assert stats.entries == 10
        assert 2_000_000 < stats.stored_bytes < 2_010_000
        assert [e.raw for e in all_entries(store)] == [b"y" * 200_000] * 10
        store.add([rejection()])
        assert store.stats().stored_bytes <= MiB
        assert store.stats().dropped_by_reason == {"malformed_body": 5}
