"""``playpulse sql`` without file or network access (#14 item 3): the catalog's views answer
as before, while reading or writing a file, attaching a database, loading an extension,
exporting the database or setting the sandbox back off is refused with one clear line;
``--allow-files`` opts in. On the data set of ``dataset.py``, through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from playpulse.config import Settings
from playpulse.query.engine import connect
from playpulse.testing import run_cli

VIEWS = ("events", "plays", "segments", "sessions", "shop_events")


def sql(settings: Settings, statement: str, *options: str) -> tuple[int, str, str]:
    done = run_cli(
        "sql", "--data-dir", str(settings.data_dir), "--format", "json", *options, statement
    )
    return done.returncode, done.stdout, done.stderr


def rows(con: duckdb.DuckDBPyConnection, view: str) -> list[tuple[object, ...]]:
    return sorted(con.execute(f"SELECT * FROM {view}").fetchall(), key=repr)


def test_a_sandboxed_connection_answers_every_view_as_an_open_one(lake: Settings) -> None:
    open_con, sandboxed = connect(lake), connect(lake, sandbox=True)
    try:
        assert sandboxed.execute("SELECT current_setting('enable_external_access')").fetchone() == (
            False,
        )
        for view in VIEWS:
            assert rows(sandboxed, view) == rows(open_con, view), view
        assert sandboxed.execute("SELECT count(*) FROM events").fetchone() == (43,)
        # The events view reads Parquet: sandboxed, through pyarrow; DuckDB reaches no file.
        lake_file = next((lake.data_dir / "lake").rglob("*.parquet"))
        with pytest.raises(duckdb.PermissionException):
            sandboxed.execute(f"SELECT count(*) FROM read_parquet('{lake_file}')")
    finally:
        open_con.close()
        sandboxed.close()


def test_a_sandboxed_connection_refuses_files_and_settings(lake: Settings, tmp_path: Path) -> None:
    con = connect(lake, sandbox=True)
    try:
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_csv('/etc/passwd')")
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'")
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"ATTACH '{tmp_path / 'x.db'}'")
        for statement in ("SET enable_external_access = true", "SET lock_configuration = false"):
            with pytest.raises(duckdb.InvalidInputException, match="locked"):
                con.execute(statement)
    finally:
        con.close()
    assert list(tmp_path.iterdir()) == []


def test_an_empty_data_dir_is_sandboxed_too(tmp_path: Path) -> None:
    con = connect(Settings(data_dir=tmp_path / "nothing"), sandbox=True)
    try:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (0,)
        with pytest.raises(duckdb.PermissionException):
            con.execute("SELECT * FROM read_csv('/etc/passwd')")
    finally:
        con.close()


def test_a_shared_connection_cannot_be_sandboxed(lake: Settings) -> None:
    with pytest.raises(ValueError, match="shared"):
        connect(lake, shared=True, sandbox=True)


def test_the_command_answers_the_catalog_views(lake: Settings) -> None:
    code, out, err = sql(
        lake,
        "SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM plays) AS plays,"
        " (SELECT count(*) FROM sessions) AS sessions",
    )
    assert code == 0, err
    con = connect(lake)
    try:
        expected = con.execute(
            "SELECT (SELECT count(*) FROM plays), (SELECT count(*) FROM sessions)"
        ).fetchone()
    finally:
        con.close()
    assert expected is not None
    assert json.loads(out) == [{"events": 43, "plays": expected[0], "sessions": expected[1]}]
    assert expected[0] > 0
    assert expected[1] > 0


@pytest.mark.parametrize(
    ("statement", "created"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", None),
        ("COPY (SELECT 1) TO '{dir}/x.csv'", "x.csv"),
        ("ATTACH '{dir}/x.db' AS x", "x.db"),
        ("EXPORT DATABASE '{dir}/export'", "export"),
        ("INSTALL httpfs", None),
        ("SET enable_external_access = true", None),
    ],
)
def test_the_command_refuses_file_access_with_one_line(
    lake: Settings, tmp_path: Path, statement: str, created: str | None
) -> None:
    code, out, err = sql(lake, statement.format(dir=tmp_path))
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("error: SQL refused: ")
    assert "--allow-files" in line
    if created is not None:
        assert not (tmp_path / created).exists()
    assert list(tmp_path.iterdir()) == []


def test_allow_files_reads_a_csv(lake: Settings, tmp_path: Path) -> None:
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("name,plays\nada,3\nbob,5\n")
    statement = f"SELECT name, plays FROM read_csv('{csv_file}') ORDER BY name"

    code, _, err = sql(lake, statement)
    assert code == 2
    assert "SQL refused" in err

    code, out, err = sql(lake, statement, "--allow-files")
    assert code == 0, err
    assert json.loads(out) == [{"name": "ada", "plays": 3}, {"name": "bob", "plays": 5}]
    # The views answer with files allowed too.
    code, out, err = sql(lake, "SELECT count(*) AS n FROM events", "--allow-files")
    assert code == 0, err
    assert json.loads(out) == [{"n": 43}]


def test_a_plain_sql_error_is_not_called_a_refusal(lake: Settings) -> None:
    code, _, err = sql(lake, "SELECT no_such_column FROM plays")
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("error: SQL failed: ")
