"""``playpulse privacy delete --user U`` (issue #14, Deliver 4 and the erasure test of
Done when), on real data dirs (SQLite stream, store and quarantine, Parquet lake), run
through the ``privacy`` command's typer app:

- afterwards every catalog query equals a fresh data dir fed the same events without
  U's, and no file of the data dir holds U's id (byte search, and every lake row read
  back decompressed); the receipt lists every place and does not hold the id;
- the same when U's events are still unprocessed in the stream, and when U has an open
  play;
- ``--suppress``: a later event of U is refused by the collector, without the id stored.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from typer.testing import CliRunner

from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.privacy.cli import privacy_app
from playpulse.quarantine.store import QuarantineStore, Rejection
from playpulse.service import ensure_processed
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.stream.factory import open_stream
from playpulse.testing import assert_same_answers, catalog_answers

Records = list[tuple[str, bytes]]


def simulated(seed: int = 5, events: int = 1_500) -> Records:
    """Simulated live traffic as the collector stores it: (stream key, payload), in
    receive order; nothing late (an erased user's events may not decide whose are)."""
    config = SimulationConfig(
        seed=seed,
        users=12,
        duration=timedelta(days=2),
        late_rate=0.0,
        very_late_rate=0.0,
        anonymous_share=0.0,
        max_events=events,
    )
    out = []
    for sent in simulate(config):
        accepted = validate_event(json.dumps(sent.payload), sent.received_at)
        out.append((accepted.event.actor_id, accepted.payload))
    return out


def busiest_user(records: Records) -> str:
    counts: dict[str, int] = {}
    for key, _ in records:
        counts[key] = counts.get(key, 0) + 1
    return max(sorted(counts), key=lambda k: counts[k])


def open_play(user: str, at: datetime) -> Records:
    """A play of ``user`` started at ``at`` with a heartbeat, never ended."""
    out = []
    for n, (kind, extra) in enumerate(
        (
            ("play_start", {"content": {"content_id": "book-open", "content_type": "audiobook"}}),
            ("heartbeat", {"position_s": 30.0}),
        )
    ):
        raw = {
            "event_type": kind,
            "event_id": f"open-{user}-{n}",
            "occurred_at": (at + timedelta(seconds=30 * n)).isoformat(),
            "user_id": user,
            "playback_id": f"open-play-{user}",
            **extra,
        }
        accepted = validate_event(json.dumps(raw), at + timedelta(seconds=30 * n))
        out.append((accepted.event.actor_id, accepted.payload))
    return out


def append(settings: Settings, records: Records) -> None:
    stream = open_stream(settings)
    try:
        for start in range(0, len(records), 500):
            stream.append(records[start : start + 500])
    finally:
        stream.close()


def delete(settings: Settings, user: str, *extra: str) -> dict[str, Any]:
    """``playpulse privacy delete --user USER``; the receipt it prints."""
    done = CliRunner().invoke(
        privacy_app,
        ["delete", "--user", user, "--data-dir", str(settings.data_dir), *extra],
        catch_exceptions=False,
    )
    assert done.exit_code == 0, done.output
    receipt: dict[str, Any] = json.loads(done.stdout)
    return receipt


def files_holding(root: Path, needle: bytes) -> list[str]:
    """Files under ``root`` whose bytes hold ``needle``, and Parquet files with a row
    holding it once decompressed."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            data = path.read_bytes()
            if needle in data:
                found.append(str(path.relative_to(root)))
            elif name.endswith(".parquet") and needle.decode() in str(
                pq.read_table(path).to_pylist()
            ):
                found.append(f"{path.relative_to(root)} (decompressed)")
    return found


def fresh(tmp_path: Path, name: str, batches: list[Records]) -> Settings:
    """A data dir fed ``batches`` (each appended, then processed)."""
    settings = Settings(data_dir=tmp_path / name)
    for records in batches:
        append(settings, records)
        ensure_processed(settings)
    return settings


def check_erased(receipt: dict[str, Any], erased: Settings, want: Settings, user: str) -> None:
    """What every erasure test checks: the same answers as ``want``'s, no file holding the
    id, a receipt listing every place, without the id."""
    assert_same_answers(catalog_answers(erased), catalog_answers(want))
    assert files_holding(erased.data_dir, user.encode()) == []
    places = receipt["places"]
    assert set(places) >= {"stream", "lake", "store", "quarantine"}
    assert places["stream"]["records_removed"] > 0
    assert places["lake"]["rows_removed"]["events"] > 0
    assert places["lake"]["files_rewritten"]
    for entry in places["lake"]["files_rewritten"]:
        assert entry["sha256_before"] != entry["sha256_after"]
    for name in ("stream", "store", "quarantine"):
        assert places[name]["vacuumed"], name
        assert places[name]["wal_truncated"], name
    assert places["store"]["dedup_keys_removed"] > 0
    assert receipt["verification"]["files_holding_the_id"] == []
    path = Path(receipt["path"])
    assert path.parent == erased.data_dir / "privacy" / "receipts"
    assert user not in path.name
    assert user.encode() not in path.read_bytes()
    assert json.loads(path.read_text())["subject"] == receipt["subject"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_erasure_equals_a_fresh_run_without_the_user(tmp_path: Path) -> None:
    records = simulated()
    user = busiest_user(records)
    theirs = [r for r in records if r[0] == user]
    others = [r for r in records if r[0] != user]
    assert len(theirs) > 50
    data = fresh(tmp_path, "data", [records])
    quarantine = QuarantineStore.from_settings(data)
    try:  # a rejected event of theirs, and one of somebody else
        quarantine.add(
            [
                Rejection(
                    b'{"user_id": "%s", "x": 1}' % user.encode(),
                    "invalid_event",
                    [],
                    datetime.now(UTC),
                ),
                Rejection(b'{"user_id": "other", "x": 1}', "invalid_event", [], datetime.now(UTC)),
            ]
        )
    finally:
        quarantine.close()

    receipt = delete(data, user)

    check_erased(receipt, data, fresh(tmp_path, "without", [others]), user)
    assert receipt["places"]["stream"]["records_removed"] == len(theirs)
    assert receipt["places"]["quarantine"]["entries_removed"] == 1
    with QuarantineStore.from_settings(data) as quarantine:
        assert [e.raw for e in quarantine.list()] == [b'{"user_id": "other", "x": 1}']
    # The data dir goes on: new events are processed as in the fresh one.
    later = simulated(seed=6, events=300)
    later = [r for r in later if r[0] != user]
    append(data, later)
    ensure_processed(data)
    assert_same_answers(
        catalog_answers(data), catalog_answers(fresh(tmp_path, "later", [others, later]))
    )


def test_erasure_of_events_still_in_the_stream_and_an_open_play(tmp_path: Path) -> None:
    records = simulated(seed=7)
    user = busiest_user(records)
    newest = max(json.loads(p)["occurred_at"] for _, p in records)
    tail = open_play(user, datetime.fromisoformat(newest) - timedelta(minutes=2))
    half = len(records) // 2
    data = fresh(tmp_path, "data", [records[:half]])
    append(data, records[half:] + tail)  # not processed: U's newest events wait
    receipt = delete(data, user)

    others = [r for r in records if r[0] != user]
    want = fresh(tmp_path, "without", [others[: len(others) // 2], others[len(others) // 2 :]])
    check_erased(receipt, data, want, user)
    assert receipt["processed_first"]["stream_records_processed"] == len(records) - half + 2
    assert receipt["places"]["store"]["open_plays_removed"] == 1


def test_an_open_play_alone_is_erased(tmp_path: Path) -> None:
    """U's only events are an open play: the store's state held them, not the lake's
    plays; afterwards the open plays are the fresh run's."""
    records = simulated(seed=8, events=600)
    newest = datetime.fromisoformat(max(json.loads(p)["occurred_at"] for _, p in records))
    user = "erase-me@example.com"
    data = fresh(tmp_path, "data", [records + open_play(user, newest - timedelta(minutes=1))])
    receipt = delete(data, user)
    check_erased(receipt, data, fresh(tmp_path, "without", [records]), user)
    assert receipt["places"]["store"]["open_plays_removed"] == 1


def test_suppressed_user_is_refused_later(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from playpulse.collector.app import create_app

    records = simulated(seed=9, events=400)
    user = busiest_user(records)
    data = fresh(tmp_path, "data", [records])
    receipt = delete(data, user, "--suppress")
    assert receipt["suppressed"] is True
    event = {
        "event_type": "heartbeat",
        "event_id": "after-erasure",
        "occurred_at": datetime.now(UTC).isoformat(),
        "user_id": user,
        "playback_id": "p-after",
        "position_s": 1.0,
    }
    with TestClient(create_app(data)) as client:
        answer = client.post(
            "/v1/events", json=[event, {**event, "user_id": "someone-else", "event_id": "other"}]
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [0]
    assert files_holding(data.data_dir, user.encode()) == []


def test_a_running_processor_applies_the_erasure(tmp_path: Path) -> None:
    """With a processor running on the data dir (as in ``playpulse up``), ``privacy
    delete`` hands the erasure to it, as imports and ``reprocess`` do, and prints its
    receipt; the processor goes on from the recomputed store (later events counted as
    in a fresh run)."""
    from playpulse.privacy.erase import pending_erasures
    from playpulse.service import ProcessorThread, open_processor, processor_lock

    records = simulated(seed=10, events=900)
    user = busiest_user(records)
    others = [r for r in records if r[0] != user]
    data = Settings(data_dir=tmp_path / "data")
    append(data, records[:600])
    with processor_lock(data) as mine:
        assert mine
        worker = ProcessorThread(open_processor(data), data)
        worker.start()
        try:
            append(data, records[600:])
            ensure_processed(data)
            receipt = delete(data, user)
            assert pending_erasures(data) == []
            later = [r for r in simulated(seed=12, events=300) if r[0] != user]
            append(data, later)
            ensure_processed(data)
            want = fresh(tmp_path, "without", [others, later])
            assert_same_answers(catalog_answers(data), catalog_answers(want))
        finally:
            worker.stop()
    assert worker.error is None
    assert receipt["places"]["stream"]["records_removed"] == len(records) - len(others)
    assert receipt["verification"]["lake_rows_holding_the_id"] == 0
    assert files_holding(data.data_dir, user.encode()) == []


def test_erasure_in_one_project_leaves_the_others(tmp_path: Path) -> None:
    """Two projects with the same user id: `--project a` erases them from a only."""
    from playpulse.projects import project_settings
    from playpulse.projects.registry import create_project

    root = Settings(data_dir=tmp_path / "root")
    records = simulated(seed=11, events=300)
    user = busiest_user(records)
    for name in ("a", "b"):
        create_project(root, name)
        append(project_settings(root, name), records)
        ensure_processed(project_settings(root, name))
    done = CliRunner().invoke(
        privacy_app,
        ["delete", "--user", user, "--project", "a", "--data-dir", str(root.data_dir)],
        catch_exceptions=False,
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["project"] == "a"
    a, b = project_settings(root, "a"), project_settings(root, "b")
    assert files_holding(a.data_dir, user.encode()) == []
    assert files_holding(b.data_dir, user.encode()) != []
    others = [r for r in records if r[0] != user]
    assert_same_answers(catalog_answers(a), catalog_answers(fresh(tmp_path, "want", [others])))


def test_an_imported_history_is_erased_with_its_import_records(tmp_path: Path) -> None:
    """A single-person export imported without --user (its default user): the lake's
    rows and the import registry's records of it go."""
    from playpulse.sources.importers import import_paths
    from playpulse.testing import write_spotify_history

    data = Settings(data_dir=tmp_path / "data")
    (tmp_path / "export").mkdir()
    history = write_spotify_history(
        tmp_path / "export" / "Streaming_History_Audio_2024.json",
        {f"t{i}": (f"2024-03-0{1 + i % 5}T10:{i:02d}:00Z", 200_000) for i in range(10)},
    )
    import_paths([history], data, progress=False)
    user = "spotify-user"
    assert files_holding(data.data_dir, user.encode())
    receipt = delete(data, user)
    assert receipt["places"]["imports"]["rows_removed"] > 0
    assert receipt["places"]["lake"]["rows_removed"]["events"] == 20
    assert files_holding(data.data_dir, user.encode()) == []
    assert catalog_answers(data) == catalog_answers(Settings(data_dir=tmp_path / "empty"))
