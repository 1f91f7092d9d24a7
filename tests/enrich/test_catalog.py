"""The content catalog: titles from the lake, imported metadata, the catalog queries
joining them, title entries and the BigQuery SQL."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlglot

from playpulse.config import Settings
from playpulse.enrich.catalog import (
    EnrichError,
    catalog_path,
    content_entry,
    import_metadata,
    open_catalog,
    refresh_seen,
)
from playpulse.enrich.similarity import refresh_similar
from playpulse.query.catalog import CATALOG, QueryParams, run_query

WINDOW = QueryParams(
    start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 6, 1, tzinfo=UTC), limit=100
)
MBID = "5b11f4ce-a62d-471e-81fc-a69a8278c7da"


def rows(name: str, settings: Settings, **params: object) -> list[dict[str, object]]:
    answer: list[dict[str, object]] = run_query(
        name, WINDOW.model_copy(update=params), settings
    ).to_pylist()
    return answer


def test_queries_answer_empty_without_a_catalog(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "none")
    for name in ("content_catalog", "similar_content", "genre_metrics", "mood_metrics"):
        assert name in CATALOG
        assert rows(name, settings) == []
    assert content_entry(settings, "x") is None
    assert not catalog_path(settings).exists()


def test_catalog_from_events_metadata_and_similar(listened: Settings, tmp_path: Path) -> None:
    # Before any job: the played titles, without what the catalog adds.
    before = rows("content_catalog", listened)
    assert [(r["content_id"], r["title"], r["plays"]) for r in before][:1] == [
        ("spotify:track:a", None, 9)
    ]
    assert rows("similar_content", listened) == []
    # The engine's cache reloads the catalog's tables once the file changed.
    assert refresh_seen(listened) == 4
    assert refresh_similar(listened) == 8  # a-b, a-c, b-c, a-d both ways
    meta = tmp_path / "meta.csv"
    meta.write_text(
        "content_id,genres,release_date,isrc,musicbrainz_recording_id\n"
        f"spotify:track:a,rock;indie,2021-05-07,us-rc1-21-00001,{MBID.upper()}\n"
        "spotify:track:z,jazz,,,\n",
        encoding="utf-8",
    )
    assert import_metadata(listened, meta).rows == 2

    catalog = {r["content_id"]: r for r in rows("content_catalog", listened)}
    a = catalog["spotify:track:a"]
    assert (a["title"], a["creator"], a["album"], a["content_type"]) == (
        "Song a",
        "Band",
        "Album a",
        "track",
    )
    assert json.loads(str(a["genres"])) == ["rock", "indie"]
    assert (a["genre"], a["genre_confidence"], a["genre_source"]) == ("rock", 1.0, "imported")
    assert (a["release_date"], a["isrc"], a["musicbrainz_recording_id"]) == (
        "2021-05-07",
        "USRC12100001",
        MBID,
    )
    assert (a["plays"], a["listeners"], a["listening_s"]) == (9, 3, 9 * 180.0)
    # The newest album name of d (listener2 plays last on day 3) wins.
    assert catalog["spotify:track:d"]["album"] == "Album d v2"
    # Imported only: in the catalog, not played.
    assert catalog["spotify:track:z"]["plays"] == 0
    assert catalog["spotify:track:z"]["title"] is None
    assert [r["content_id"] for r in rows("content_catalog", listened, content_id="x")] == []

    similar = rows("similar_content", listened, content_id="spotify:track:a")
    assert [r["similar_content_id"] for r in similar] == [
        "spotify:track:b",
        "spotify:track:c",
        "spotify:track:d",
    ]
    # a in 9 sessions, b in 6, both in 6 of them, by all 3 listeners.
    assert similar[0]["score"] == pytest.approx(6 / math.sqrt(54))
    assert (similar[0]["shared_sessions"], similar[0]["shared_listeners"]) == (6, 3)
    assert similar[0]["title"] == "Song b"

    genres = {r["genre"]: r for r in rows("genre_metrics", listened)}
    assert genres["rock"]["plays"] == 9
    assert genres["unknown"]["titles"] == 3
    assert genres["unknown"]["listening_s"] == pytest.approx(15 * 180.0)

    entry = content_entry(listened, "spotify:track:a", similar=2)
    assert entry is not None
    assert entry["genres"] == ["rock", "indie"]
    assert [s["content_id"] for s in entry["similar_content"]] == [
        "spotify:track:b",
        "spotify:track:c",
    ]
    assert entry["similar_content"][0]["shared_listeners"] == 3


def test_metadata_json_and_errors(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    good = tmp_path / "meta.json"
    good.write_text(json.dumps({"items": [{"content_id": "x", "genres": ["pop"]}]}))
    assert import_metadata(settings, good).rows == 1
    # A later import fills fields and keeps the ones it leaves out.
    more = tmp_path / "more.json"
    more.write_text(json.dumps([{"content_id": "x", "release_date": "2020-01-02"}]))
    import_metadata(settings, more)
    with open_catalog(settings, readonly=True) as db:
        row = db.execute("SELECT genres, release_date FROM meta").fetchone()
    assert tuple(row) == ('["pop"]', "2020-01-02")

    cases = {
        "bad_isrc.csv": ("content_id,isrc\ny,NOPE\n", "row 2: isrc 'NOPE' is not an ISRC"),
        "unknown.csv": ("content_id,bpm\ny,120\n", "unknown field(s) bpm"),
        "no_id.json": ('[{"genres": ["pop"]}]', "row 1: content_id is missing"),
        "date.json": ('[{"content_id": "y", "release_date": "May 2020"}]', "YYYY-MM-DD"),
        "mbid.json": ('[{"content_id": "y", "musicbrainz_release_id": "12"}]', "MusicBrainz"),
        "broken.json": ("[{", "not JSON"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(EnrichError, match=message.replace("(", r"\(").replace(")", r"\)")):
            import_metadata(settings, path)
    with pytest.raises(EnrichError, match="cannot read metadata file"):
        import_metadata(settings, tmp_path / "missing.csv")
    # Nothing of the refused files was stored.
    with open_catalog(settings, readonly=True) as db:
        assert [r[0] for r in db.execute("SELECT content_id FROM meta")] == ["x"]


#: Shop queries use DuckDB list operators (list_has_any) that sqlglot writes as `&&`,
#: which BigQuery does not have (docs/enrichment.md, "BigQuery").
NOT_BIGQUERY = {"funnel", "top_products", "vendor_daily"}


def test_bigquery_sql_of_every_catalog_query() -> None:
    from playpulse.query.catalog_enrich import bigquery_sql

    for name, spec in CATALOG.items():
        if not spec.sql.strip():
            continue
        sql = bigquery_sql(name)
        if name not in NOT_BIGQUERY:
            parsed = sqlglot.parse_one(sql, read="bigquery")  # BigQuery sqlglot can read
            assert parsed is not None, name
        assert "$" not in sql.replace("'$", "")  # parameters are @name
        assert "epoch_us" not in sql.lower()
    sql = bigquery_sql("content_catalog")
    assert "@start" in sql
    assert "UNIX_MICROS" in sql
    assert "plays_current AS" in sql
    assert "FROM enrich_seen" in sql
    assert "QUALIFY" in sql
    assert "`end`" in sql
    with pytest.raises(Exception, match="unknown query"):
        bigquery_sql("nope")
    with pytest.raises(Exception, match="no SQL"):
        bigquery_sql("live")
