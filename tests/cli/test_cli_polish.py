"""The CLI's surface (#17): data printed as text, numbers never cut, the same refusals as
the read API in one line, reading commands on a data dir that does not exist, the
quarantine's reasons and replay's skips explained, --output, sql -f, the views `sql`
shows, BigQuery SQL and the data's span in `status`. A real ``playpulse`` process each
time, on a data dir made by a real import."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from starlette.datastructures import QueryParams as QueryString

from playpulse.api.auth import ApiError
from playpulse.api.params import parse_params
from playpulse.events.codec import validate_event
from playpulse.quarantine.store import QuarantineStore, Rejection
from playpulse.stream.sqlite import SQLiteStream
from playpulse.testing import run_cli

#: An artist whose name rich would read as markup ("[nZk]" vanished), and one that is.
BRACKETED = "SawanoHiroyuki[nZk]"
MARKUP = "[bold red]Danger[/]"
VIEWS = ["events", "plays", "segments", "sessions", "shop_events"]


def run(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    """``playpulse ARGS...`` in a terminal ``columns`` wide."""
    return run_cli(*args, env={"COLUMNS": str(columns)}, timeout_s=120)


def track(ts: str, artist: str, title: str, ms: int) -> dict[str, Any]:
    """A Spotify extended-history row (2024+ keys) of a music track."""
    return {
        "ts": ts,
        "platform": "ios",
        "ms_played": ms,
        "conn_country": "DE",
        "master_metadata_track_name": title,
        "master_metadata_album_artist_name": artist,
        "master_metadata_album_album_name": "Album",
        "spotify_track_uri": f"spotify:track:{title.replace(' ', '')}",
        "episode_name": None,
        "episode_show_name": None,
        "spotify_episode_uri": None,
        "audiobook_title": None,
        "audiobook_uri": None,
        "audiobook_chapter_uri": None,
        "audiobook_chapter_title": None,
        "reason_start": "clickrow",
        "reason_end": "trackdone",
        "shuffle": False,
        "skipped": False,
        "offline": False,
        "offline_timestamp": None,
        "incognito_mode": False,
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data dir holding three imported plays, two by :data:`BRACKETED`."""
    root = tmp_path_factory.mktemp("polish")
    export = root / "Streaming_History_Audio_2024.json"
    rows = [
        track("2024-03-01T10:00:00Z", BRACKETED, "Into the Sky", 200_000),
        track("2024-03-01T10:10:00Z", BRACKETED, "Before my body is dry", 180_500),
        track("2024-03-02T21:00:00Z", MARKUP, "Alarm", 123_456),
    ]
    export.write_text(json.dumps(rows), encoding="utf-8")
    target = str(root / "data")
    imported = run("import", str(export), "--user", "listener-1", "--data-dir", target)
    assert imported.returncode == 0, imported.stderr
    return target


def test_tables_print_brackets_as_text(data_dir: str) -> None:
    table = run("query", "top_creators", "--data-dir", data_dir)
    assert table.returncode == 0, table.stderr
    assert BRACKETED in table.stdout
    assert MARKUP in table.stdout
    literal = run("sql", "SELECT '[bold red]x[/]' AS a, ':smile:' AS b", "--data-dir", data_dir)
    assert "[bold red]x[/]" in literal.stdout
    assert ":smile:" in literal.stdout


def test_help_keeps_its_bracketed_notes() -> None:
    helped = " ".join(run("collect", "--help").stdout.split())
    assert "Port to bind [default 8000]." in helped
    assert "[env PLAYPULSE_DATA_DIR; default ./.playpulse]" in helped
    # Registered sub-commands too (their help is rendered by the same root).
    enrich = " ".join(run("enrich", "run", "--help").stdout.split())
    assert "[env PLAYPULSE_DATA_DIR; default ./.playpulse]" in enrich


def test_numbers_are_never_cut_at_80_columns(data_dir: str) -> None:
    rows = json.loads(
        run("query", "top_content", "--format", "json", "--data-dir", data_dir).stdout
    )
    table = run("query", "top_content", "--data-dir", data_dir, columns=80)
    assert table.returncode == 0, table.stderr
    assert "…" not in table.stdout
    numbers = [v for row in rows for v in row.values() if isinstance(v, int | float)]
    assert 180.5 in numbers
    cells = {c.strip() for line in table.stdout.splitlines() for c in line.split("│")}
    for number in numbers:
        shown = (
            f"{number:.4f}".rstrip("0").rstrip(".") if isinstance(number, float) else str(number)
        )
        assert shown in cells, shown
    wide = run(
        "sql",
        "SELECT 703387123456 AS listening_ms_total, 123456789.125 AS b, 42 AS c, 7 AS d, "
        "99999999 AS e, 31415926 AS f, 27182818 AS g, repeat('long title ', 20) AS title",
        "--data-dir",
        data_dir,
        columns=80,
    )
    for number in ("703387123456", "123456789.125", "99999999", "31415926", "27182818"):
        assert number in wide.stdout


def api_message(name: str, value: str) -> str:
    """The read API's 422 message for query parameter ``name`` = ``value``."""
    with pytest.raises(ApiError) as refused:
        parse_params(QueryString([(name, value)]))
    assert refused.value.status == 422
    return refused.value.message


@pytest.mark.parametrize(
    ("option", "name", "value"),
    [
        ("--content-type", "content_type", "song"),
        ("--tz", "tz", "utc"),
        ("--limit", "limit", "abc"),
        ("--limit", "limit", "0"),
        ("--from", "from", "yesterday"),
        ("--to", "to", "1960-01-01"),
    ],
)
def test_query_refuses_what_the_api_refuses_in_one_line(
    data_dir: str, option: str, name: str, value: str
) -> None:
    expected = "error: " + option + api_message(name, value)[len(name) :]
    refused = run("query", "top_content", option, value, "--data-dir", data_dir)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [expected]
    assert "Value error" not in refused.stderr


def test_creator_is_exact_and_case_sensitive_and_says_so(data_dir: str) -> None:
    # The API passes creator through unchanged to the same SQL: one rule on both sides.
    assert parse_params(QueryString([("creator", BRACKETED.lower())])).creator == (
        BRACKETED.lower()
    )
    exact = run(
        "query", "top_creators", "--creator", BRACKETED, "--format", "json", "--data-dir", data_dir
    )
    assert [r["creator"] for r in json.loads(exact.stdout)] == [BRACKETED]
    other_case = run(
        "query", "top_creators", "--creator", BRACKETED.lower(), "--data-dir", data_dir
    )
    assert other_case.returncode == 0
    assert "case-sensitive" in other_case.stderr
    assert BRACKETED.lower() in other_case.stderr


def test_usage_errors_are_one_line(data_dir: str) -> None:
    bad_int = run("quarantine", "list", "--limit", "abc", "--data-dir", data_dir)
    assert bad_int.returncode == 2
    (line,) = bad_int.stderr.splitlines()
    assert line.startswith("error: Invalid value for '--limit'")
    unknown = run("teleport")
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines() == [
        "error: No such command 'teleport'. (see `python -m playpulse --help`)"
    ]


def test_reading_a_data_dir_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    typo = tmp_path / "dataa"
    for args in (
        ("query", "overview"),
        ("sql", "SELECT count(*) FROM plays"),
        ("quarantine", "list"),
    ):
        result = run(*args, "--data-dir", str(typo))
        assert result.returncode == 2, args
        assert result.stderr.splitlines() == [
            f"error: data dir {typo} does not exist: check --data-dir or PLAYPULSE_DATA_DIR "
            "(`playpulse import`, `demo` or `up` put data there)"
        ]
    assert not typo.exists()


def test_quarantine_list_checks_the_reason(data_dir: str) -> None:
    unknown = run("quarantine", "list", "--reason", "nope", "--data-dir", data_dir)
    assert unknown.returncode == 2
    (line,) = unknown.stderr.splitlines()
    assert line.startswith("error: --reason: 'nope' is not a reason code; known: ")
    assert "invalid_event" in line
    assert "malformed_body" in line
    known = run("quarantine", "list", "--reason", "invalid_event", "--data-dir", data_dir)
    assert known.returncode == 0, known.stderr


def test_replay_says_why_it_skipped(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "quarantine.db")
    now = datetime.now(UTC)
    valid = {
        "event_id": "0f6a3c1e-6a44-4c55-9a2e-3e1b3e7d9a01",
        "event_type": "heartbeat",
        "occurred_at": now.isoformat(),
        "user_id": "u-1",
        "playback_id": "pb-1",
        "position_s": 1.0,
    }
    store.add(
        [
            Rejection(json.dumps(valid).encode(), "invalid_event", [], now, event_id="x"),
            Rejection(b"[,", "malformed_body", [], now, "collector"),
        ]
    )
    store.close()
    SQLiteStream(tmp_path / "stream.db", num_partitions=8).close()
    first = run("quarantine", "replay", "--all", "--data-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        "replayed 1, still failing 0, skipped 1 (1 a whole rejected request body, not one "
        "event (send it again, fixed): 2)"
    )
    again = run("quarantine", "replay", "1", "--data-dir", str(tmp_path))
    assert again.stdout.strip() == (
        "replayed 0, still failing 0, skipped 1 (1 already replayed: 1)"
    )


def test_query_output_files(data_dir: str, tmp_path: Path) -> None:
    rows = json.loads(
        run("query", "top_content", "--format", "json", "--data-dir", data_dir).stdout
    )
    assert len(rows) == 3
    for suffix in (".parquet", ".csv", ".json"):
        target = tmp_path / f"top{suffix}"
        written = run("query", "top_content", "--output", str(target), "--data-dir", data_dir)
        assert written.returncode == 0, written.stderr
        assert written.stdout == ""
        assert written.stderr.strip() == f"wrote 3 rows to {target}"
        if suffix == ".parquet":
            assert pq.read_table(target).to_pylist() == rows
        elif suffix == ".csv":
            read = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
            assert [r["title"] for r in read] == [r["title"] for r in rows]
            assert [float(r["listening_s"]) for r in read] == [r["listening_s"] for r in rows]
        else:
            assert json.loads(target.read_text(encoding="utf-8")) == rows
    refused = run("query", "top_content", "-o", str(tmp_path / "top.xlsx"), "--data-dir", data_dir)
    assert refused.returncode == 2
    assert "the extension must be one of .parquet, .csv, .json" in refused.stderr


def test_sql_from_a_file_and_only_the_documented_views(data_dir: str, tmp_path: Path) -> None:
    script = tmp_path / "plays.sql"
    script.write_text(
        "-- two statements: the last one's rows are printed\n"
        "SELECT 1 AS first;\nSELECT count(*) AS n FROM plays;\n",
        encoding="utf-8",
    )
    counted = run("sql", "-f", str(script), "--format", "json", "--data-dir", data_dir)
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == [{"n": 3}]
    both = run("sql", "SELECT 1", "-f", str(script), "--data-dir", data_dir)
    assert both.returncode == 2
    assert "one of the two" in both.stderr
    for extra in ((), ("--allow-files",)):
        tables = run("sql", "SHOW TABLES", "--format", "json", "--data-dir", data_dir, *extra)
        assert [r["name"] for r in json.loads(tables.stdout)] == VIEWS
        events = run("sql", "SELECT count(*) AS n FROM events", "--format", "json", *extra,
                     "--data-dir", data_dir)  # fmt: skip
        assert json.loads(events.stdout)[0]["n"] > 0
    hidden = run("sql", "SELECT * FROM c_plays", "--data-dir", data_dir)
    assert hidden.returncode == 2
    assert "c_plays does not exist" in hidden.stderr


def test_print_sql_in_bigquery_dialect() -> None:
    printed = run("query", "top_content", "--dialect", "bigquery", "--print-sql")
    assert printed.returncode == 0, printed.stderr
    assert "@limit" in printed.stdout or "@start" in printed.stdout
    alone = run("query", "top_content", "--print-sql")
    assert alone.returncode == 2
    assert "--dialect and --print-sql go together" in alone.stderr


def test_status_shows_the_span_of_the_data(data_dir: str) -> None:
    info = json.loads(run("status", "--format", "json", "--data-dir", data_dir).stdout)
    # occurred_at of a Spotify row is its end (ts) minus ms_played: the start of the play.
    assert info["first_event_at"] == "2024-03-01T09:56:40+00:00"
    assert info["last_event_at"] == "2024-03-02T21:00:00+00:00"
    table = run("status", "--data-dir", data_dir)
    assert "data from    2024-03-01 09:56:40 to 2024-03-02 21:00:00 (occurred_at, UTC)" in (
        table.stdout
    )


def test_status_shows_the_late_events(tmp_path: Path) -> None:
    # Two events of one user, in stream order: the second is 9 days behind the first,
    # past the allowed lateness (7 days): kept in the lake, counted late.
    now = datetime.now(UTC)
    stream = SQLiteStream(tmp_path / "stream.db", num_partitions=8)
    try:
        for days_ago, event_id in ((1, "9b0e6c1e-0000-4000-8000-000000000001"),
                                   (10, "9b0e6c1e-0000-4000-8000-000000000002")):  # fmt: skip
            raw = {
                "event_id": event_id,
                "event_type": "heartbeat",
                "occurred_at": (now - timedelta(days=days_ago)).isoformat(),
                "user_id": "u-late",
                "playback_id": f"pb-{days_ago}",
                "position_s": 5.0,
            }
            accepted = validate_event(json.dumps(raw), now)
            stream.append([(accepted.event.actor_id, accepted.payload)])
    finally:
        stream.close()
    processed = run("process", "--data-dir", str(tmp_path))
    assert processed.returncode == 0, processed.stderr
    assert ", 1 late," in processed.stdout
    table = run("status", "--data-dir", str(tmp_path))
    assert table.returncode == 0, table.stderr
    assert (
        "late events  1: kept in the lake (events.late), counted by no metric (over 7 days "
        "behind their user's newer events; docs/metrics.md)"
    ) in table.stdout
    first = (now - timedelta(days=10)).strftime("%Y-%m-%d %H:%M:%S")
    assert f"data from    {first} to " in table.stdout
