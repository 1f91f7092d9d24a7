"""``playpulse privacy export --user U`` (right of access) and the quarantine's raw
payload retention (issue #14, Deliver 4), on real data dirs."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.privacy.cli import privacy_app
from playpulse.quarantine.store import QuarantineStore, Rejection
from playpulse.service import ensure_processed
from playpulse.stream.factory import open_stream

START = datetime(2026, 3, 2, 9, tzinfo=UTC)


def heartbeat(user: str, n: int, *, anonymous: bool = False) -> tuple[str, bytes]:
    """A heartbeat of ``user`` (as anonymous id when ``anonymous``) at START + n min, as
    the collector stores it."""
    raw = {
        "event_type": "heartbeat",
        "event_id": f"hb-{len(user)}-{n}-{anonymous}",
        "occurred_at": (START + timedelta(minutes=n)).isoformat(),
        "anonymous_id" if anonymous else "user_id": user,
        "playback_id": f"play-{n}",
        "position_s": float(n),
    }
    accepted = validate_event(json.dumps(raw), START + timedelta(minutes=n, seconds=1))
    return accepted.event.actor_id, accepted.payload


def append(settings: Settings, records: list[tuple[str, bytes]]) -> None:
    stream = open_stream(settings)
    try:
        stream.append(records)
    finally:
        stream.close()


def test_export_gives_every_event_once_in_time_order(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    user, other = "ana", "bruno"
    processed = [heartbeat(user, n) for n in (5, 1, 3)] + [heartbeat(other, 2)]
    append(settings, processed)
    ensure_processed(settings)
    waiting = [heartbeat(user, 4), heartbeat(user, 0, anonymous=True), heartbeat(other, 6)]
    append(settings, [*waiting, heartbeat(user, 5)])  # resent: the same event again
    out = tmp_path / "ana.ndjson"
    runner = CliRunner()
    data = ["--data-dir", str(settings.data_dir)]
    done = runner.invoke(
        privacy_app, ["export", "--user", user, "--out", str(out), *data], catch_exceptions=False
    )
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["occurred_at"][11:16] for line in lines] == [
        "09:00",
        "09:01",
        "09:03",
        "09:04",
        "09:05",
    ]
    assert all(line.get("user_id", line.get("anonymous_id")) == user for line in lines)
    assert lines[0]["anonymous_id"] == user
    assert out.stat().st_mode & 0o777 == 0o600
    on_stdout = runner.invoke(privacy_app, ["export", "--user", user, *data])
    assert on_stdout.exit_code == 0, on_stdout.output
    assert on_stdout.stdout == out.read_text()
    nobody = runner.invoke(privacy_app, ["export", "--user", "nobody", *data])
    assert nobody.exit_code == 0
    assert nobody.stdout == ""


def test_raw_payloads_are_blanked_after_their_retention(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    settings = Settings(data_dir=tmp_path / "data", quarantine_raw_retention_days=2)
    with QuarantineStore.from_settings(settings) as quarantine:
        assert quarantine.raw_retention == timedelta(days=2)
        errors = [{"loc": "occurred_at", "msg": "missing"}]
        quarantine.add(
            [
                Rejection(b'{"user_id": "old"}', "invalid_event", errors, now - timedelta(days=3)),
                Rejection(b'{"user_id": "new"}', "invalid_event", errors, now - timedelta(days=1)),
                Rejection(b'{"user_id": "gone"}', "malformed", errors, now - timedelta(days=31)),
            ]
        )
        # An add checks the ages (at most once a minute): the 31-day-old entry goes, as
        # before, the 3-day-old one keeps its entry but not its payload.
        assert quarantine.stats().dropped_by_cause == {"retention": 1}
        entries = {e.reason: e for e in quarantine.list()}
        assert set(entries) == {"invalid_event"}
        by_raw = sorted(quarantine.list(), key=lambda e: e.received_at)
        old, new = by_raw
        assert old.raw == b""
        assert old.reason == "invalid_event"
        assert old.errors[0] == errors[0]
        assert old.errors[-1]["loc"] == "raw"
        assert "2 day(s)" in old.errors[-1]["msg"]
        assert new.raw == b'{"user_id": "new"}'
        assert new.errors == errors
        with sqlite3.connect(settings.quarantine_path) as db:
            (sizes,) = db.execute("SELECT sum(size_bytes) FROM quarantine").fetchone()
        assert quarantine.stats().stored_bytes == sizes  # the totals follow
        assert quarantine.blank_raw(now + timedelta(days=2)) == 1
        assert [e.raw for e in quarantine.list()] == [b"", b""]
    assert b'"old"' not in (settings.data_dir / "quarantine.db").read_bytes()
