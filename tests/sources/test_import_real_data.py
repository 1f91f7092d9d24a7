"""Import the real public exports under ``shared/data/real`` and check the figures
against an independent computation in plain ``json`` / ``csv`` over the same files.

The data is read where it lies (it must not be copied into the project); the tests are
skipped when it is absent. It is found at ``<repo>/../shared/data/real``, or at the path
in ``PLAYPULSE_REAL_DATA``.

Runtime: the processor handles a few hundred plays per second, and years of history
make it write one lake file per day and batch, so only the Spotify extended sets (9,497
rows, the core comparison) are processed in full. The other sources are mapped in full
(:func:`plan_import`, no data dir) and processed on their first rows.
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from playpulse.config import Settings
from playpulse.events.model import PlaybackEvent, PlayEnd
from playpulse.query.engine import connect
from playpulse.sources.importers import OtherExportError, import_paths, plan_import
from playpulse.stream.factory import open_stream
from playpulse.testing import play_totals, real_data_dir

REAL = real_data_dir()
pytestmark = pytest.mark.skipif(REAL is None, reason="the real data sets are not available")
EXTENDED_NAME = re.compile(r"^(endsong_\d+|Streaming_History_(Audio|Video)_[\w]+)\.json$")
SKIP_MS = 30_000


def real(*parts: str) -> Path:
    assert REAL is not None
    return REAL.joinpath(*parts)


def extended_files() -> list[Path]:
    """Every Spotify extended history file, chosen by name (not by the importer)."""
    assert REAL is not None
    folders = sorted([*REAL.glob("spotify-extended-*"), *REAL.glob("spotify-endsong-*")])
    return sorted(p for f in folders for p in f.rglob("*.json") if EXTENDED_NAME.match(p.name))


def load_json(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return rows


def distinct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with exact repeats removed (identical rows count once)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(json.dumps(row, sort_keys=True), row)
    return list(out.values())


def creator(row: dict[str, Any]) -> str | None:
    if row.get("spotify_track_uri") or row.get("master_metadata_track_name"):
        return row.get("master_metadata_album_artist_name")
    if row.get("spotify_episode_uri") or row.get("episode_name"):
        return row.get("episode_show_name")
    if row.get("audiobook_uri") or row.get("audiobook_title"):
        return row.get("audiobook_title")
    return None


def day_totals(settings: Settings, pk: str) -> dict[str, float]:
    """The play measures of every play (``TOTAL``) or one user's (``USER#<id>``), from
    the lake (imported history is not in the live counters)."""
    user = None if pk == "TOTAL" else pk.removeprefix("USER#")
    return play_totals(settings, user_id=user)


def creator_times(settings: Settings) -> dict[str, float]:
    """Playing time per creator, straight from the lake's plays files."""
    con = connect(settings)
    try:
        rows = con.execute(
            "SELECT creator, sum(s.playing_s) FROM (SELECT creator, unnest(segments) AS s "
            "FROM plays WHERE creator IS NOT NULL) GROUP BY creator"
        ).fetchall()
    finally:
        con.close()
    return {creator: float(v) for creator, v in rows}


def top(times: dict[str, float], n: int = 10) -> list[tuple[str, float]]:
    return sorted(times.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def stream_records(settings: Settings) -> int:
    stream = open_stream(settings)
    try:
        return sum(p.count for p in stream.partitions())
    finally:
        stream.close()


# -- Spotify extended: processed in full --------------------------------------------------


def test_spotify_extended_figures_match_an_independent_computation(tmp_path: Path) -> None:
    files = extended_files()
    assert len(files) == 11
    rows = distinct([row for path in files for row in load_json(path)])
    assert len(rows) == 9_495  # 9,497 rows, two exact repeats
    n = len(rows)
    expected_plays = n
    expected_time = sum(r["ms_played"] for r in rows) / 1000
    expected_skips = sum(1 for r in rows if r["ms_played"] < SKIP_MS)
    expected_completed = sum(1 for r in rows if r["reason_end"] == "trackdone")
    by_creator: Counter[str] = Counter()
    for r in rows:
        name = creator(r)
        if name:
            by_creator[name] += r["ms_played"] / 1000
    by_user = Counter(r.get("username") or "spotify-user" for r in rows)

    settings = Settings(data_dir=tmp_path / "data")
    result = import_paths(files, settings, progress=False)
    assert result.rows_read == 9_497
    assert result.rows_rejected == 0
    assert result.duplicate_rows == 2
    assert result.rows_by_format == {"spotify_extended": 9_497}

    total = day_totals(settings, "TOTAL")
    assert total["plays"] == expected_plays
    assert total["skipped"] == expected_skips
    assert total["streams"] == n - expected_skips
    assert total["completed"] == expected_completed
    assert total["playing_time_s"] == pytest.approx(expected_time, abs=1e-6 * n)
    for user, plays in by_user.items():
        assert day_totals(settings, f"USER#{user}")["plays"] == plays
    got = top(creator_times(settings))
    want = top(dict(by_creator))
    assert [name for name, _ in got] == [name for name, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a == pytest.approx(b, abs=1e-6 * n)

    cli = cli_figures(settings)
    assert cli["plays"] == expected_plays
    assert round(cli["skip_rate"] * cli["plays"]) == expected_skips
    assert cli["listening_s"] == pytest.approx(expected_time, abs=1e-6 * n)
    assert [c["creator"] for c in cli["top_creators"]] == [name for name, _ in want]
    for row, (_, seconds) in zip(cli["top_creators"], want, strict=True):
        assert row["listening_s"] == pytest.approx(seconds, abs=1e-6 * n)

    again = import_paths(files, settings, progress=False)
    assert again.events_appended == result.events_appended
    assert stream_records(settings) == 0  # history is not streamed
    assert (again.events_new, again.events_known) == (0, again.events_appended)
    assert again.processing is not None
    assert again.processing.processed == result.events_appended
    assert day_totals(settings, "TOTAL") == pytest.approx(total)
    again_top = top(creator_times(settings))
    assert [name for name, _ in again_top] == [name for name, _ in got]
    assert [t for _, t in again_top] == pytest.approx([t for _, t in got])
    after = cli_figures(settings)  # float sums may differ in the last bits (order)
    assert after["plays"] == cli["plays"]
    assert after["skip_rate"] == cli["skip_rate"]
    assert after["listening_s"] == pytest.approx(cli["listening_s"], abs=1e-6 * n)
    assert [c["creator"] for c in after["top_creators"]] == [
        c["creator"] for c in cli["top_creators"]
    ]


def cli_figures(settings: Settings) -> dict[str, Any]:
    """``playpulse query overview`` and ``top_creators --format json`` as a user runs them."""

    def query(*args: str) -> list[dict[str, Any]]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "playpulse",
                "query",
                *args,
                "--from",
                "2000-01-01",
                "--to",
                "2030-01-01",
                "--format",
                "json",
                "--data-dir",
                str(settings.data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    overview = query("overview")[0]
    overview["top_creators"] = query("top_creators", "--limit", "10")
    return overview


# -- other sources: mapped in full ------------------------------------------------------------


def _starts(events: list[Any]) -> list[PlaybackEvent]:
    return [e.event for e in events if e.event.event_type == "play_start"]


@pytest.mark.parametrize(
    "folder",
    [
        ("spotify-basic-lshatkin", "MyData"),
        ("spotify-basic-lshatkin", "dana_data"),
        ("spotify-extended-mungeraiden", "my_spotify_data", "Spotify Account Data"),
    ],
)
def test_spotify_basic_maps_every_row(folder: tuple[str, ...]) -> None:
    path = real(*folder)
    rows = distinct([r for f in sorted(path.glob("StreamingHistory*.json")) for r in load_json(f)])
    plan = plan_import([path], user_id="/".join(folder))
    assert plan.result.rows_rejected == 0
    assert set(plan.result.rows_by_format) == {"spotify_basic"}
    starts = _starts(plan.events)
    assert len(starts) == len(rows)
    ends = [e.event for e in plan.events if isinstance(e.event, PlayEnd)]
    assert sum(e.position_s or 0.0 for e in ends) == pytest.approx(
        sum(r["msPlayed"] for r in rows) / 1000, abs=1e-6 * len(rows)
    )
    assert Counter(e.occurred_at.strftime("%Y-%m-%d %H:%M") for e in ends) == Counter(
        r["endTime"] for r in rows
    )


def test_youtube_maps_every_view() -> None:
    path = real("youtube-watch-history-chuan-khuna")
    (file,) = path.rglob("watch-history.json")
    entries = load_json(file)
    views = [e for e in entries if e["title"].startswith("Watched ")]
    removed = [e for e in views if "titleUrl" not in e]
    video_ids = Counter(e["titleUrl"].split("v=", 1)[1] for e in views if "titleUrl" in e)
    plan = plan_import([path])
    assert plan.result.rows_read == len(entries)
    assert plan.result.rows_skipped == len(entries) - len(views) == 3
    assert plan.result.rows_rejected == 0
    starts = _starts(plan.events)
    assert len(starts) == len(plan.events) == len(views)
    ids = Counter(e.content.content_id for e in starts if e.content)
    assert ids.pop("youtube:removed") == len(removed)
    assert ids == Counter({f"youtube:{v}": n for v, n in video_ids.items()})
    assert sorted(e.occurred_at for e in starts) == sorted(
        datetime.fromisoformat(e["time"]).astimezone(UTC) for e in views
    )


def test_lastfm_maps_every_scrobble() -> None:
    path = real("lastfm-scrobbles-sachawheeler", "scrobbles.csv")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    plan = plan_import([path])
    assert plan.result.rows_rejected == 0
    starts = _starts(plan.events)
    assert len(starts) == len({tuple(r.values()) for r in rows}) == 11_622
    assert sorted(int(e.occurred_at.timestamp()) for e in starts) == sorted(
        int(r["uts"]) for r in rows
    )
    assert Counter(e.content.creator for e in starts if e.content) == Counter(
        r["artist"] for r in rows
    )


REMOVED_NEWEST = 25


def test_lastfm_renumbered_reexport_then_the_real_file_adds_exactly_the_removed_rows(
    tmp_path: Path, cfg: Settings
) -> None:
    """An older export with an index column (R ``write.csv``, as lastfmR writes it),
    missing the newest rows and so numbered differently, then the real file: exactly the
    removed rows are added."""
    src = real("lastfm-scrobbles-sachawheeler", "scrobbles.csv")
    with src.open(newline="", encoding="utf-8") as f:
        header, *records = list(csv.reader(f))
    assert len({tuple(r) for r in records}) == len(records)  # no repeats to muddle counts
    older = tmp_path / "older" / "scrobbles.csv"
    older.parent.mkdir()
    with older.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerow(["", *header])
        for n, record in enumerate(records[REMOVED_NEWEST:], start=1):
            writer.writerow([str(n), *record])
    older_ids = {p.event.event_id for p in plan_import([older], user_id="sacha").events}
    real_ids = {p.event.event_id for p in plan_import([src], user_id="sacha").events}
    assert older_ids < real_ids
    assert len(real_ids - older_ids) == REMOVED_NEWEST

    import_paths([older], cfg, user_id="sacha", progress=False)
    before = day_totals(cfg, "USER#sacha")["plays"]
    result = import_paths([src], cfg, user_id="sacha", progress=False)
    assert result.events_known == len(records) - REMOVED_NEWEST
    assert result.events_new == REMOVED_NEWEST
    assert day_totals(cfg, "USER#sacha")["plays"] - before == REMOVED_NEWEST
    assert before == len(records) - REMOVED_NEWEST


def test_taobao_maps_every_behavior() -> None:
    path = real("taobao-userbehavior-fattydelivery", "UserBehavior.csv")
    with path.open(newline="") as f:
        rows = {tuple(r) for r in csv.reader(f) if r}
    plan = plan_import([path])
    assert plan.result.rows_rejected == 0
    got = Counter(e.event.event_type for e in plan.events)
    want = Counter(r[3] for r in rows)
    assert got == {
        "product_view": want["pv"],
        "product_favorite": want["fav"],
        "cart_add": want["cart"],
        "order_completed": want["buy"],
    }
    assert want == {"pv": 3926, "cart": 190, "fav": 128, "buy": 77}


def test_diginetica_maps_every_view() -> None:
    path = real("diginetica-item-views-sr-gnn", "datasets", "sample_train-item-views.csv")
    with path.open(newline="") as f:
        rows = {tuple(r.values()) for r in csv.DictReader(f, delimiter=";")}
    plan = plan_import([path])
    assert plan.result.rows_rejected == 0
    assert len(plan.events) == len(rows) == 12_391
    anonymous = sum(1 for e in plan.events if e.event.user_id is None)
    assert anonymous == sum(1 for r in rows if r[1] == "NA") == 7_681


# -- other sources: processed on their first rows ---------------------------------------------

HEAD = 1000


def _head_json(src: Path, dst: Path) -> list[dict[str, Any]]:
    rows = load_json(src)[:HEAD]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(rows), encoding="utf-8")
    return rows


def _head_lines(src: Path, dst: Path, header: bool) -> list[str]:
    with src.open(encoding="utf-8", newline="") as f:
        lines = [line for _, line in zip(range(HEAD + int(header)), f, strict=False)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(lines), encoding="utf-8", newline="")
    return lines[int(header) :]


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def test_spotify_basic_head_is_processed(tmp_path: Path, cfg: Settings) -> None:
    rows: list[dict[str, Any]] = []
    for src in sorted(real("spotify-basic-lshatkin", "MyData").glob("*.json")):
        rows += _head_json(src, tmp_path / "in" / src.name)
    rows = distinct(rows)
    import_paths([tmp_path / "in"], cfg, progress=False)
    total = day_totals(cfg, "TOTAL")
    assert total["plays"] == len(rows)
    assert total["skipped"] == sum(1 for r in rows if r["msPlayed"] < SKIP_MS)
    assert total["playing_time_s"] == pytest.approx(
        sum(r["msPlayed"] for r in rows) / 1000, abs=1e-6 * len(rows)
    )


def test_youtube_head_is_processed(tmp_path: Path, cfg: Settings) -> None:
    (src,) = real("youtube-watch-history-chuan-khuna").rglob("watch-history.json")
    rows = _head_json(src, tmp_path / "watch-history.json")
    import_paths([tmp_path / "watch-history.json"], cfg, progress=False)
    total = day_totals(cfg, "TOTAL")
    assert total["plays"] == sum(1 for r in rows if r["title"].startswith("Watched "))
    assert total.get("playing_time_s", 0.0) == 0.0  # no durations in this format


def test_lastfm_head_is_processed(tmp_path: Path, cfg: Settings) -> None:
    src = real("lastfm-scrobbles-sachawheeler", "scrobbles.csv")
    lines = _head_lines(src, tmp_path / "scrobbles.csv", header=True)
    import_paths([tmp_path / "scrobbles.csv"], cfg, user_id="sacha", progress=False)
    total = day_totals(cfg, "USER#sacha")
    assert total["plays"] == len(set(lines)) == HEAD


def test_commerce_heads_are_processed(tmp_path: Path, cfg: Settings) -> None:
    taobao = _head_lines(
        real("taobao-userbehavior-fattydelivery", "UserBehavior.csv"), tmp_path / "ub.csv", False
    )
    views = _head_lines(
        real("diginetica-item-views-sr-gnn", "datasets", "sample_train-item-views.csv"),
        tmp_path / "views.csv",
        True,
    )
    result = import_paths([tmp_path / "ub.csv", tmp_path / "views.csv"], cfg, progress=False)
    assert result.rows_by_format == {"taobao_user_behavior": HEAD, "diginetica_item_views": HEAD}
    behaviors = Counter(line.strip().split(",")[3] for line in set(taobao))
    with sqlite3.connect(cfg.store_path) as db:
        shop = dict(
            db.execute(
                "SELECT attr, sum(value) FROM items WHERE pk = 'SHOP' GROUP BY attr"
            ).fetchall()
        )
    assert shop.get("views", 0) == behaviors["pv"] + len(set(views))
    assert shop.get("favorites", 0) == behaviors["fav"]
    assert shop.get("cart_adds", 0) == behaviors["cart"]
    assert shop.get("completed_orders", 0) == behaviors["buy"]
    assert not any(k.startswith("revenue_minor") for k in shop)


def test_two_peoples_exports_without_user_never_end_up_as_one_user(
    tmp_path: Path, cfg: Settings
) -> None:
    """Exports that name nobody (mungeraiden's 2024+ extended history, lshatkin's basic
    history): the second stops before writing and asks for --user. Exports that carry a
    username (nikitgoku, erickmay) land on their own users."""
    extended = real("spotify-extended-mungeraiden", "my_spotify_data")
    ext_src = extended / "Spotify Extended Streaming History" / "Streaming_History_Audio_2024.json"
    first = tmp_path / "alice" / "Spotify Extended Streaming History" / ext_src.name
    _head_json(ext_src, first)
    basic = tmp_path / "bob" / "StreamingHistory0.json"
    _head_json(real("spotify-basic-lshatkin", "MyData", "StreamingHistory0.json"), basic)
    import_paths([tmp_path / "alice"], cfg, progress=False)
    records = stream_records(cfg)
    with pytest.raises(OtherExportError, match="--user"):
        import_paths([basic], cfg, progress=False)
    assert stream_records(cfg) == records
    import_paths([basic], cfg, user_id="bob", progress=False)

    named = [
        real("spotify-extended-nikitgoku", "MyData", "Streaming_History_Audio_2023_1.json"),
        real("spotify-endsong-erickmay", "endsong_1.json"),
    ]
    for n, src in enumerate(named):
        _head_json(src, tmp_path / f"named{n}" / src.name)
        import_paths([tmp_path / f"named{n}"], cfg, progress=False)
    with sqlite3.connect(cfg.store_path) as db:
        users = {
            pk
            for (pk,) in db.execute(
                "SELECT DISTINCT pk FROM items WHERE substr(pk, 1, 5) = 'USER#'"
            )
        }
    assert users == {"USER#spotify-user", "USER#bob", "USER#listener1", "USER#listener2"}


def test_spotify_conn_country_gives_the_listener_zone_unless_tz_is_given() -> None:
    path = real("spotify-extended-nikitgoku", "MyData", "Streaming_History_Audio_2023_1.json")
    rows = load_json(path)
    assert {r["conn_country"] for r in rows} == {"GB"}
    plan = plan_import([path])
    assert plan.result.timezones_by_hint == {"Europe/London": len(distinct(rows))}
    assert plan.result.rows_without_timezone == 0
    us = real("spotify-endsong-erickmay", "endsong_1.json")  # US and CA: several zones each
    plan = plan_import([us])
    assert plan.result.timezones_by_hint == {}
    assert "--tz ZONE sets one" in plan.result.summary()
    plan = plan_import([us], timezone="America/Chicago")
    starts = _starts(plan.events)
    assert {e.context.timezone for e in starts if e.context} == {"America/Chicago"}
    assert len(starts) == len(distinct(load_json(us)))
