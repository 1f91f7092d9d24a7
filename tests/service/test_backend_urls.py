"""stream_url / store_url / lake_url: every component finds the stream, the store and the
lake where the settings say, and an unknown scheme is refused at startup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from playpulse.config import Settings
from playpulse.store.factory import open_store
from playpulse.store.sqlite import SQLiteStore
from playpulse.testing import run_cli, write_spotify_history

PLAYS = {"a": ("2024-01-10T12:03:00Z", 180_000), "b": ("2024-01-11T12:04:00Z", 240_000)}


@pytest.mark.parametrize(
    ("name", "url"),
    [("store_url", "redis://plays"), ("stream_url", "pulsar://events"), ("lake_url", "gs://b")],
)
def test_an_unknown_scheme_is_refused_with_the_known_ones(name: str, url: str) -> None:
    with pytest.raises(ValidationError, match="is not supported; known: "):
        Settings(**{name: url})


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("store_url", "dynamodb://plays"),
        ("stream_url", "kinesis://events"),
        ("lake_url", "s3://b/l"),
    ],
)
def test_the_aws_schemes_are_accepted(name: str, url: str) -> None:
    assert getattr(Settings(**{name: url}), name) == url


def test_a_url_without_a_path_is_refused() -> None:
    with pytest.raises(ValidationError, match="names no path"):
        Settings(store_url="sqlite://")


def test_the_store_factory_opens_the_store_url(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", store_url=f"sqlite://{tmp_path}/s.db")
    store = open_store(settings)
    try:
        assert isinstance(store, SQLiteStore)
        assert Path(store.path) == tmp_path / "s.db"
    finally:
        store.close()


def test_import_and_query_with_everything_outside_the_data_dir(tmp_path: Path) -> None:
    export = write_spotify_history(tmp_path / "Streaming_History_Audio_2024.json", PLAYS)
    elsewhere = tmp_path / "elsewhere"
    env = {
        "PLAYPULSE_DATA_DIR": str(tmp_path / "data"),
        "PLAYPULSE_STREAM_URL": f"sqlite://{elsewhere}/stream.db",
        "PLAYPULSE_STORE_URL": f"sqlite://{elsewhere}/store.db",
        "PLAYPULSE_LAKE_URL": f"file://{elsewhere}/lake",
    }
    elsewhere.mkdir()
    done = run_cli("import", str(export), "--user", "sam", env=env)
    assert done.returncode == 0, done.stderr
    out = run_cli("query", "overview", "--format", "json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["plays"] == 2
    assert (elsewhere / "store.db").exists()
    assert list((elsewhere / "lake").rglob("*.parquet"))
    assert not (tmp_path / "data" / "store.db").exists()
    assert not (tmp_path / "data" / "lake").exists()


def test_a_bad_url_in_the_environment_is_a_one_line_error(tmp_path: Path) -> None:
    done = run_cli(
        "status", env={"PLAYPULSE_DATA_DIR": str(tmp_path), "PLAYPULSE_STORE_URL": "x://y"}
    )
    assert done.returncode == 2
    assert "store_url" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_store_or_stream_that_is_no_sqlite_file_has_no_path() -> None:
    # Before, kinesis://NAME "was" the file ./NAME, and readers created SQLite files there.
    from playpulse.errors import ConfigError

    with pytest.raises(ConfigError, match="is not a SQLite file"):
        _ = Settings(stream_url="kinesis://events").stream_path
    with pytest.raises(ConfigError, match="is not a SQLite file"):
        _ = Settings(store_url="dynamodb://plays").store_path
    assert not Settings(store_url="dynamodb://plays").store_is_file
    assert Settings(store_url="sqlite:///tmp/s.db").store_is_file
