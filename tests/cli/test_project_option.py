"""``--project NAME`` (env ``PLAYPULSE_PROJECT``) on the reading commands ``query``, ``sql``,
``status`` and ``quarantine list/show`` (#14 item 1): two projects with the same user and
product ids, each command under one project shows only that project's rows; without it,
the data dir's own (single-project) data; an unknown project is a one-line error."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.projects import create_project, project_settings
from playpulse.quarantine.store import QuarantineStore, Rejection
from playpulse.service import ensure_processed
from playpulse.stream.factory import open_stream
from playpulse.testing import run_cli

#: Per project: its vendor and how many product views (same users and product in both).
PROJECTS = {"alpha": ("vendor-a", 3), "beta": ("vendor-b", 5)}


def fill(settings: Settings, vendor: str, views: int) -> str:
    """``views`` product views of ``vendor`` processed into ``settings``' data dir and one
    rejected event quarantined there; returns the rejected event's id."""
    now = datetime.now(UTC)
    stream = open_stream(settings)
    try:
        records = []
        for i in range(views):
            raw = {
                "event_id": str(uuid.uuid4()),
                "event_type": "product_view",
                "occurred_at": now.isoformat(),
                "user_id": f"u{i}",
                "product_id": "sku-1",
                "vendor_id": vendor,
            }
            accepted = validate_event(json.dumps(raw), now)
            records.append((accepted.event.actor_id, accepted.payload))
        stream.append(records)
    finally:
        stream.close()
    stats = ensure_processed(settings)
    assert stats is not None
    assert stats.processed == views
    rejected = str(uuid.uuid4())
    store = QuarantineStore(settings.quarantine_path)
    try:
        body = json.dumps({"event_id": rejected, "event_type": "teleport"}).encode()
        store.add([Rejection(body, "invalid_event", [], now, event_id=rejected)])
    finally:
        store.close()
    return rejected


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A data dir with projects alpha and beta, filled; the rejected event id of each."""
    data_dir = tmp_path_factory.mktemp("projects") / "data"
    settings = Settings(data_dir=data_dir)
    rejected = {}
    for name, (vendor, views) in PROJECTS.items():
        create_project(settings, name)
        rejected[name] = fill(project_settings(settings, name), vendor, views)
    return data_dir, rejected


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = run_cli("--data-dir", str(data_dir), *args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def funnel(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, int]:
    rows = json.loads(cli(data_dir, "query", "funnel", "--format", "json", *args, env=env))
    return {row["vendor_id"]: row["views"] for row in rows}


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_query_and_sql_show_only_the_projects_rows(root, name: str) -> None:
    data_dir, _ = root
    vendor, views = PROJECTS[name]
    assert funnel(data_dir, "--project", name) == {vendor: views}
    assert funnel(data_dir, env={"PLAYPULSE_PROJECT": name}) == {vendor: views}
    rows = json.loads(
        cli(
            data_dir,
            "sql",
            "--project",
            name,
            "--format",
            "json",
            "SELECT vendor_id, count(*) AS n FROM shop_events GROUP BY ALL",
        )
    )
    assert rows == [{"vendor_id": vendor, "n": views}]


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_status_and_quarantine_show_only_the_projects(root, name: str) -> None:
    data_dir, rejected = root
    _, views = PROJECTS[name]
    info = json.loads(cli(data_dir, "status", "--project", name, "--format", "json"))
    assert info["events_in_lake"] == views
    assert info["quarantined"] == 1
    listed = json.loads(cli(data_dir, "quarantine", "list", "--project", name, "--format", "json"))
    assert [e["event_id"] for e in listed] == [rejected[name]]
    shown = json.loads(cli(data_dir, "quarantine", "show", str(listed[0]["id"]), "--project", name))
    assert shown["event_id"] == rejected[name]
    assert rejected[name] in shown["raw"]


def test_without_a_project_the_data_dirs_own_data_answers(root) -> None:
    data_dir, _ = root
    assert funnel(data_dir) == {}
    assert json.loads(cli(data_dir, "quarantine", "list", "--format", "json")) == []


def test_an_unknown_project_is_a_one_line_error(root) -> None:
    data_dir, _ = root
    for args in (
        ("query", "funnel", "--project", "gamma"),
        ("sql", "SELECT 1", "--project", "gamma"),
        ("status", "--project", "gamma"),
        ("quarantine", "list", "--project", "gamma"),
    ):
        done = run_cli("--data-dir", str(data_dir), *args)
        assert done.returncode == 2, args
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: no project 'gamma'"), line
        assert "alpha, beta" in line
