"""Lake files written before a column existed still answer: the column is null there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from playpulse.config import Settings
from playpulse.lake.schema import PLAYS_SCHEMA, SESSIONS_SCHEMA
from playpulse.query.catalog import QueryParams, run_query

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
NEW_COLUMNS = ("skipped_by_source", "qualified_listen")


def old_plays() -> pa.Table:
    """Two plays as a lake file from before the skip-policy columns."""
    rows = []
    for i in range(2):
        start = T0 + timedelta(hours=i)
        row = {name: None for name in PLAYS_SCHEMA.names}
        row.update(
            event_date="2024-03-01",
            play_key=f"u:{i}",
            version=3,
            user_id="u",
            content_id=f"c{i}",
            started_at=start,
            ended_at=start + timedelta(seconds=40),
            playing_time_s=40.0,
            is_stream=True,
            skipped=False,
            completed=False,
            chapters_reached=[],
            event_count=2,
            segments=[
                {
                    "start": start,
                    "end": start + timedelta(seconds=40),
                    "playing_s": 40.0,
                    "foreground": None,
                    "chapter": None,
                    "rate": 1.0,
                }
            ],
        )
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=PLAYS_SCHEMA)
    return table.drop_columns(list(NEW_COLUMNS))


def test_plays_files_without_newer_columns_answer_with_null(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    folder = settings.lake_path / "plays" / "event_date=2024-03-01"
    folder.mkdir(parents=True)
    old = old_plays()
    assert not set(NEW_COLUMNS) & set(old.column_names)
    pq.write_table(old, folder / "p0000-o000000000000-000000000003.parquet")
    sessions = settings.lake_path / "sessions" / "event_date=2024-03-01"
    sessions.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "event_date": "2024-03-01",
                    "user_id": "u",
                    "started_at": T0,
                    "ended_at": T0 + timedelta(hours=1, seconds=40),
                    "events": 4,
                    "duration_s": 3640.0,
                    "version": 3,
                    "deleted": False,
                }
            ],
            schema=SESSIONS_SCHEMA,
        ),
        sessions / "p0000-o000000000000-000000000003.parquet",
    )
    params = QueryParams(
        start=datetime(2024, 3, 1, tzinfo=UTC), end=datetime(2024, 3, 2, tzinfo=UTC)
    )
    (row,) = run_query("overview", params, settings).to_pylist()
    assert row["plays"] == 2
    assert row["sessions"] == 1
    assert row["source_skip_rate"] is None
    assert row["qualified_listen_rate"] is None
