"""``--project NAME`` (env ``PLAYPULSE_PROJECT``) on the reading commands ``query``, ``sql``,
``status`` and ``quarantine list/show`` (#14 item 1): two projects with the same user and
product ids, each command under one project shows only that project's rows; without it,
the data dir's own (single-project) data; an unknown project is a one-line error.
``sql --read-key-file`` runs as a project's read key: that project's data, or for a key
limited to a vendor only that vendor's shop events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.projects import ProjectKeys, create_project, issue_key, project_settings
from playpulse.quarantine.store import QuarantineStore, Rejection
from playpulse.service import ensure_processed
from playpulse.stream.factory import open_stream
from playpulse.testing import run_cli

#: Per project: product views per vendor (the same users, product and vendor-z in both).
PROJECTS = {"alpha": {"vendor-a": 3, "vendor-z": 2}, "beta": {"vendor-b": 5, "vendor-z": 4}}


def fill(settings: Settings, views: dict[str, int]) -> str:
    """``views`` (product views per vendor) processed into ``settings``' data dir and one
    rejected event quarantined there; returns the rejected event's id."""
    now = datetime.now(UTC)
    stream = open_stream(settings)
    try:
        records = []
        for vendor, n in views.items():
            for i in range(n):
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
    assert stats.processed == sum(views.values())
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
    for name, views in PROJECTS.items():
        KEYS[name] = create_project(settings, name)
        rejected[name] = fill(project_settings(settings, name), views)
    VENDOR_KEYS["alpha"] = issue_key(settings, "alpha", "read", vendor_id="vendor-z")
    return data_dir, rejected


#: The keys of each project (filled by the ``root`` fixture), and alpha's vendor-z key.
KEYS: dict[str, ProjectKeys] = {}
VENDOR_KEYS: dict[str, str] = {}


BY_VENDOR = "SELECT vendor_id, count(*) AS n FROM shop_events GROUP BY ALL"


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
    views = PROJECTS[name]
    assert funnel(data_dir, "--project", name) == views
    assert funnel(data_dir, env={"PLAYPULSE_PROJECT": name}) == views
    rows = json.loads(cli(data_dir, "sql", "--project", name, "--format", "json", BY_VENDOR))
    assert {row["vendor_id"]: row["n"] for row in rows} == views


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_status_and_quarantine_show_only_the_projects(root, name: str) -> None:
    data_dir, rejected = root
    info = json.loads(cli(data_dir, "status", "--project", name, "--format", "json"))
    assert info["events_in_lake"] == sum(PROJECTS[name].values())
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


def key_file(tmp_path: Path, key: str) -> str:
    path = tmp_path / "read-key"
    path.write_text(f"# a read key\n{key}\n")
    return str(path)


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_sql_with_a_project_read_key_reads_that_project(root, tmp_path: Path, name: str) -> None:
    data_dir, _ = root
    path = key_file(tmp_path, KEYS[name].read_key)
    rows = json.loads(cli(data_dir, "sql", "--read-key-file", path, "--format", "json", BY_VENDOR))
    assert {row["vendor_id"]: row["n"] for row in rows} == PROJECTS[name]
    # --project agrees with the key, or the command refuses.
    other = next(p for p in PROJECTS if p != name)
    assert cli(data_dir, "sql", "--read-key-file", path, "--project", name, "SELECT 1")
    done = run_cli(
        "--data-dir", str(data_dir), "sql", "--read-key-file", path, "--project", other, "SELECT 1"
    )
    assert done.returncode == 2
    assert f"not a read key of project '{other}'" in done.stderr


def test_sql_with_a_vendor_key_sees_only_that_vendors_rows(root, tmp_path: Path) -> None:
    data_dir, _ = root
    path = key_file(tmp_path, VENDOR_KEYS["alpha"])
    rows = json.loads(cli(data_dir, "sql", "--read-key-file", path, "--format", "json", BY_VENDOR))
    assert rows == [{"vendor_id": "vendor-z", "n": PROJECTS["alpha"]["vendor-z"]}]
    for statement, why in (
        ("SELECT count(*) FROM plays", "plays"),
        ("SELECT * FROM read_csv('/etc/passwd')", "SQL refused"),
    ):
        done = run_cli("--data-dir", str(data_dir), "sql", "--read-key-file", path, statement)
        assert done.returncode == 2
        assert why in done.stderr
    done = run_cli(
        "--data-dir", str(data_dir), "sql", "--read-key-file", path, "--allow-files", "SELECT 1"
    )
    assert done.returncode == 2
    assert "limited to vendor 'vendor-z'" in done.stderr


def test_sql_refuses_a_key_that_is_not_a_read_key(root, tmp_path: Path) -> None:
    data_dir, _ = root
    for key in (KEYS["alpha"].write_key, "pp_r_not-a-key"):
        path = key_file(tmp_path, key)
        done = run_cli("--data-dir", str(data_dir), "sql", "--read-key-file", path, "SELECT 1")
        assert done.returncode == 2
        [line] = done.stderr.strip().splitlines()
        assert "not a read key" in line
        assert key not in line
