"""docs/lake.md: its DuckDB views, run as written over a real data dir's lake (no
playpulse code in the way), answer as `playpulse sql`'s views do."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest

from playpulse.config import Settings
from playpulse.lake.schema import SCHEMAS
from playpulse.processor.state import open_sessions
from playpulse.query.engine import USER_VIEWS, connect
from playpulse.store.factory import open_store
from playpulse.testing import run_cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "lake.md"


def doc_views() -> str:
    """The SQL block between the doc's lake-views markers."""
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- lake-views: begin")[1].split("<!-- lake-views: end -->")[0]
    (sql,) = re.findall(r"```sql\n(.*?)```", block, flags=re.DOTALL)
    return str(sql)


def spotify_row(ts: str, title: str, ms: int) -> dict[str, Any]:
    return {
        "ts": ts,
        "platform": "android",
        "ms_played": ms,
        "conn_country": "FR",
        "master_metadata_track_name": title,
        "master_metadata_album_artist_name": "Artist",
        "master_metadata_album_album_name": "Album",
        "spotify_track_uri": f"spotify:track:{title}",
        "reason_start": "clickrow",
        "reason_end": "trackdone",
        "shuffle": False,
        "skipped": False,
        "offline": False,
        "incognito_mode": False,
    }


@pytest.fixture(scope="module")
def lake_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A data dir with imported plays over two days and Taobao shop events."""
    root = tmp_path_factory.mktemp("lakedoc")
    export = root / "Streaming_History_Audio_2024.json"
    rows = [
        spotify_row(f"2024-05-0{day}T{hour:02d}:00:00Z", f"t{day}{hour}", 150_000 + hour)
        for day in (1, 2, 6)
        for hour in (8, 9, 20)
    ]
    export.write_text(json.dumps(rows), encoding="utf-8")
    shop = root / "UserBehavior.csv"
    shop.write_text(
        "1,2268318,2520377,pv,1511544070\n1,2268318,2520377,cart,1511544090\n"
        "1,2268318,2520377,buy,1511544100\n2,1000,42,buy,1511544100\n",
        encoding="utf-8",
    )
    data_dir = root / "data"
    done = run_cli("import", str(export), str(shop), "--user", "u1", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    return Settings(data_dir=data_dir)


def test_every_lake_column_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for table, schema in SCHEMAS.items():
        assert f"**{table}**" in text
        for name in schema.names:
            assert f"`{name}`" in text, (table, name)


def test_the_duckdb_views_of_the_doc_answer_as_playpulse_sql(lake_settings: Settings) -> None:
    lake = str(lake_settings.data_dir / "lake")
    theirs = duckdb.connect()
    theirs.execute(doc_views().replace("LAKE", lake))
    ours = connect(lake_settings, views_only=True)
    # Float sums rounded: DuckDB adds rows in whatever order its threads read them
    # (1350.111 against 1350.1109999999999 in one CI run).
    checks = {
        "events": "SELECT count(*), count(DISTINCT event_id), min(occurred_at) FROM events",
        "plays": "SELECT count(*), round(sum(playing_time_s), 6), sum(completed::INT) FROM plays",
        "segments": "SELECT count(*), round(sum(playing_s), 6), min(start) FROM segments",
        "sessions": "SELECT count(*), round(sum(duration_s), 6), max(ended_at) FROM sessions",
        "shop_events": "SELECT count(*), sum(quantity), count(DISTINCT event_type) "
        "FROM shop_events",
    }
    assert sorted(checks) == sorted(USER_VIEWS)
    for view, sql in checks.items():
        expected = ours.sql(sql).fetchall()
        assert expected[0][0] > 0, view  # the data has rows of every view
        if view != "sessions":
            assert theirs.sql(sql).fetchall() == expected, view
    # Sessions: the lake holds the closed ones; playpulse adds those its processor still
    # holds open (the doc says so).
    store = open_store(lake_settings)
    try:
        still_open = {(user, start_us) for user, start_us, _, _ in open_sessions(store)}
    finally:
        store.close()
    keyed = "SELECT user_id, epoch_us(started_at), duration_s FROM sessions"
    lake_rows = set(theirs.sql(keyed).fetchall())
    all_rows = set(ours.sql(keyed).fetchall())
    assert still_open
    assert lake_rows < all_rows
    assert {(user, start) for user, start, _ in all_rows - lake_rows} == still_open
    # The same columns, in the same order, as playpulse sql's views.
    for view in USER_VIEWS:
        assert (
            theirs.sql(f"SELECT * FROM {view}").columns == ours.sql(f"SELECT * FROM {view}").columns
        ), view
