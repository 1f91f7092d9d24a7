"""``playpulse.connect()`` / ``playpulse.query.connect(settings)``: the events, plays and
sessions views over the lake and the real-time store, on the data set of ``dataset.py``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType

import duckdb
import pytest

import playpulse
from playpulse.config import Settings
from playpulse.lake.schema import EVENTS_SCHEMA, PLAYS_SCHEMA
from playpulse.query import QueryParams, connect, run_query
from playpulse.testing import load_module


def _dataset() -> ModuleType:
    # dataset.py, as conftest.py loads it (tests is not a package: importlib import mode)
    return load_module(Path(__file__).with_name("dataset.py"), "playpulse_tests_query_dataset")


NOW, at, ev = _dataset().NOW, _dataset().at, _dataset().ev
SESSION_COLUMNS = ["user_id", "started_at", "ended_at", "events", "duration_s"]


def columns(con: duckdb.DuckDBPyConnection, view: str) -> list[str]:
    return [d[0] for d in con.execute(f"SELECT * FROM {view} LIMIT 0").description]


def test_views_and_their_columns(lake: Settings) -> None:
    con = connect(lake)
    try:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        assert {"events", "plays", "sessions"} <= views
        assert columns(con, "events") == EVENTS_SCHEMA.names
        assert columns(con, "plays") == PLAYS_SCHEMA.names
        assert columns(con, "sessions") == SESSION_COLUMNS
    finally:
        con.close()


def test_events_view_is_deduplicated_and_marks_late_events(lake: Settings) -> None:
    con = connect(lake)
    try:
        # 44 events appended, c1 twice: 43 kept.
        assert con.execute("SELECT count(*) FROM events").fetchone() == (43,)
        assert con.execute("SELECT count(*) FROM events WHERE event_id = 'c1'").fetchone() == (1,)
        # The first receipt of c1 is the one kept (10:00:02, not the retry at 10:05).
        assert con.execute("SELECT received_at FROM events WHERE event_id = 'c1'").fetchone() == (
            datetime(2026, 11, 19, 10, 0, 2, tzinfo=UTC),
        )
        late = con.execute("SELECT event_id FROM events WHERE late").fetchall()
        assert late == [("c15",)]
    finally:
        con.close()


def test_plays_view_holds_finished_plays_and_open_ones_from_the_store(lake: Settings) -> None:
    con = connect(lake)
    try:
        rows = con.execute(
            """SELECT play_key, user_id, content_id, end_reason, version >= 0 AS from_lake,
                      playing_time_s, completed, skipped, is_stream
               FROM plays ORDER BY play_key"""
        ).fetchall()
    finally:
        con.close()
    assert rows == [
        ("p1", "u1", "b1", "stopped", True, 130.0, False, False, True),  # 50 + 40 + 40
        ("p2", "u1", "b1", "stopped", True, 600.0, False, False, True),
        ("p3", "u2", "t1", "next", True, 10.0, False, True, False),  # skipped after 10 s
        ("p4", "u2", "b1", "completed", True, 1080.0, True, False, True),  # 900 + 180
        ("p5", "u3", "v1", "stopped", True, 720.0, False, False, True),
        ("p6", "u4", "e1", "stopped", True, 3600.0, False, False, True),
        ("p7", "u1", "b1", "stopped", True, 60.0, False, False, True),
        # Open: no play_end, last event seconds before NOW; from the store (version -1),
        # not skipped (not ended). p8: 11:58:30-11:59:30 = 60 s; p9: 11:58:59-11:59:40 = 41 s.
        ("p8", "u5", "t1", None, False, 60.0, False, False, True),
        ("p9", "u6", "v1", None, False, 41.0, False, False, True),
    ]


def test_sessions_view(lake: Settings) -> None:
    con = connect(lake)
    try:
        rows = con.execute("SELECT * FROM sessions ORDER BY user_id, started_at").fetchall()
    finally:
        con.close()
    # (user, first event, last event, playback events, seconds)
    assert rows == [
        ("u1", at("2026-11-17T09:00:00"), at("2026-11-17T09:03:10"), 5, 190.0),
        # 10:00:00 is 56:50 after 09:03:10: more than 30 minutes, a new session
        ("u1", at("2026-11-17T10:00:00"), at("2026-11-17T10:10:00"), 3, 600.0),
        ("u1", at("2026-11-23T08:00:00"), at("2026-11-23T08:01:00"), 2, 60.0),
        ("u2", at("2026-11-17T14:00:00"), at("2026-11-17T14:00:10"), 2, 10.0),
        ("u2", at("2026-11-18T15:00:00"), at("2026-11-18T15:18:00"), 4, 1080.0),
        ("u3", at("2026-11-19T18:00:00"), at("2026-11-19T18:12:00"), 4, 720.0),
        # across UTC midnight: one session (gaps of 25, 25 and 10 minutes)
        ("u4", at("2026-11-20T23:20:00"), at("2026-11-21T00:20:00"), 4, 3600.0),
        ("u5", at("2026-11-25T11:58:30"), at("2026-11-25T11:59:30"), 2, 60.0),
        ("u6", at("2026-11-25T11:58:59"), at("2026-11-25T11:59:40"), 2, 41.0),
    ]


def test_connect_limits_lake_files_by_date(lake: Settings) -> None:
    # Saturday 21st only: events from two days before (sessions of up to 24 h that start
    # on the 21st are rebuilt whole); plays from the day before (p6 started on the
    # 20th), plus the open plays, which the store always adds.
    con = connect(lake, since=date(2026, 11, 21), until=date(2026, 11, 21))
    try:
        events = con.execute("SELECT event_id FROM events ORDER BY event_id").fetchall()
        days = con.execute("SELECT DISTINCT occurred_at::DATE FROM events ORDER BY 1").fetchall()
        plays = con.execute("SELECT play_key FROM plays ORDER BY play_key").fetchall()
    finally:
        con.close()
    assert [d[0].isoformat() for d in days] == ["2026-11-19", "2026-11-20", "2026-11-21"]
    assert ("p6-end",) in events
    assert plays == [("p6",), ("p8",), ("p9",)]


def test_playpulse_connect(lake: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    con = playpulse.connect(str(lake.data_dir))
    assert isinstance(con, duckdb.DuckDBPyConnection)
    try:
        assert con.execute("SELECT count(*) FROM plays").fetchone() == (9,)
        assert con.execute("SELECT count(*) FROM sessions").fetchone() == (9,)
    finally:
        con.close()
    # Without an argument: PLAYPULSE_DATA_DIR.
    monkeypatch.setenv("PLAYPULSE_DATA_DIR", str(lake.data_dir))
    con = playpulse.connect()
    assert isinstance(con, duckdb.DuckDBPyConnection)
    try:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (43,)
    finally:
        con.close()


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_connect_on_no_data(tmp_path: Path, where: str) -> None:
    data_dir = tmp_path / "data"
    if where == "empty":
        data_dir.mkdir()
    con = connect(Settings(data_dir=data_dir))
    try:
        for view in ("events", "plays", "sessions"):
            assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
        assert columns(con, "plays") == PLAYS_SCHEMA.names
        assert columns(con, "sessions") == SESSION_COLUMNS
    finally:
        con.close()
    assert not data_dir.exists() or not any(data_dir.iterdir())  # reading wrote nothing


def test_an_open_play_is_replaced_by_its_finished_version(tmp_path: Path, ingest_into) -> None:
    start = ev("q-start", "play_start", "2026-11-25T11:59:00", "u9", playback_id="q",
               content={"content_id": "t9", "duration_s": 100}, position_s=0)  # fmt: skip
    end = ev("q-end", "play_end", "2026-11-25T11:59:45", "u9", playback_id="q",
             position_s=45, reason="stopped")  # fmt: skip
    query = "SELECT play_key, end_reason, version >= 0, playing_time_s, skipped FROM plays"

    settings = ingest_into(tmp_path, [start])
    con = connect(settings)
    try:
        # One event, no play_end: open, in the store only, no playing time counted yet.
        assert con.execute(query).fetchall() == [("q", None, False, 0.0, False)]
    finally:
        con.close()

    ingest_into(tmp_path, [end])
    con = connect(settings)
    try:
        # Ended 45 s later: one row (the lake's), no leftover open version.
        assert con.execute(query).fetchall() == [("q", "stopped", True, 45.0, False)]
    finally:
        con.close()
    day = QueryParams(start=at("2026-11-25T00:00:00"), end=at("2026-11-26T00:00:00"))
    (row,) = run_query("overview", day, settings, now=NOW).to_pylist()
    assert (row["plays"], row["streams"], row["listening_s"]) == (1, 1, 45.0)
