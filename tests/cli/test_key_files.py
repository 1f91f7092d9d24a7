"""Keys off the command line (#14 item 1): ``--write-key-file`` / ``--read-key-file`` (one
key per line, ``#`` comments) besides ``PLAYPULSE_WRITE_KEYS`` / ``PLAYPULSE_READ_KEYS``;
``--write-key`` / ``--read-key`` keep working with a warning that ``ps`` shows them."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from playpulse.cli import read_key_file
from playpulse.errors import ConfigError
from playpulse.testing import playpulse_server, run_cli


def event() -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "heartbeat",
        "occurred_at": datetime.now(UTC).isoformat(),
        "user_id": "u-1",
        "playback_id": "pb-1",
        "position_s": 1.0,
    }


def test_a_key_file_has_one_key_a_line_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# shop front, rotated 2026-12\n  key-one  \n\n   # old: key-zero\nkey-two\n")
    assert read_key_file(path) == ["key-one", "key-two"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "No such file"),
        (b"", "no key in it"),
        (b"# only a comment\n\n", "no key in it"),
        (b"\xff\xfe-not-utf8\n", "not UTF-8"),
    ],
)
def test_an_unusable_key_file_is_a_config_error_naming_the_file(
    tmp_path: Path, content: bytes | None, why: str
) -> None:
    path = tmp_path / "keys"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=why) as raised:
        read_key_file(path, "--read-key-file")
    assert str(raised.value).startswith(f"--read-key-file {path}: ")


def test_up_takes_keys_from_files_and_warns_about_keys_on_the_command_line(
    tmp_path: Path,
) -> None:
    write_key, read_key, argv_key = (secrets.token_urlsafe(16) for _ in range(3))
    write_file, read_file = tmp_path / "write-keys", tmp_path / "read-keys"
    write_file.write_text(f"# the app's key\n{write_key}\n")
    read_file.write_text(f"{read_key}\n")
    log = tmp_path / "up.log"
    args = ("--write-key-file", str(write_file), "--read-key-file", str(read_file))
    with playpulse_server("up", tmp_path / "data", log, *args, "--write-key", argv_key) as (
        url,
        _,
    ):

        def post(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.post(
                f"{url}/v1/events", json=[event()], headers=headers, timeout=10
            ).status_code

        assert post(write_key) == 200
        assert post(argv_key) == 200  # the command line's key still works
        assert post(read_key) == 401
        assert post("not-a-key") == 401
        overview = f"{url}/v1/metrics/overview"
        assert httpx.get(overview, timeout=10).status_code == 401
        headers = {"Authorization": f"Bearer {read_key}"}
        assert httpx.get(overview, headers=headers, timeout=10).status_code == 200
    text = log.read_text()
    assert "warning: --write-key on the command line is visible" in text
    assert "--read-key on the command line" not in text  # it came from a file
    for key in (write_key, read_key, argv_key):
        assert key not in text


def test_an_unusable_key_file_stops_up_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    done = run_cli("up", "--data-dir", str(tmp_path / "data"), "--write-key-file", str(missing))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --write-key-file {missing}: cannot read it (No such file or directory)"
    ]


def test_the_key_file_can_come_from_the_environment(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    done = run_cli(
        "collect",
        "--data-dir",
        str(tmp_path / "data"),
        env={"PLAYPULSE_WRITE_KEY_FILE": str(empty)},
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"error: --write-key-file {empty}: no key in it (one key per line, # comments)"
    )
