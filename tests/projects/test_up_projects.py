"""``playpulse projects create`` and ``playpulse up`` as a user runs them: two projects
on one port, each key reaching its own project's data only."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

from playpulse.testing import playpulse_server, run_cli


def _view(vendor: str) -> dict[str, str]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "product_view",
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "user_id": "same-user",
        "vendor_id": vendor,
        "product_id": "same-product",
    }


def test_up_serves_each_project_with_its_own_keys(tmp_path: Path) -> None:
    data = tmp_path / "data"
    keys = {}
    for name in ("radio", "books"):
        created = run_cli("--data-dir", str(data), "projects", "create", name, "--format", "json")
        assert created.returncode == 0, created.stderr
        keys[name] = json.loads(created.stdout)
        assert keys[name]["project"] == name
    listed = run_cli("--data-dir", str(data), "projects", "keys", "--format", "json")
    rows = json.loads(listed.stdout)
    assert len(rows) == 6
    assert not any(k["write_key"] in listed.stdout for k in keys.values())
    with playpulse_server("up", data, tmp_path / "up.log") as (url, _):
        for name, vendor in (("radio", "vendor-radio"), ("books", "vendor-books")):
            auth = {"Authorization": f"Bearer {keys[name]['write_key']}"}
            sent = httpx.post(f"{url}/v1/events", json=[_view(vendor)], headers=auth)
            assert sent.status_code == 200, sent.text
        seen: dict[str, set[str]] = {}
        deadline = time.monotonic() + 60
        while len(seen) < 2 or not all(seen.values()):
            assert time.monotonic() < deadline, seen
            for name in keys:
                auth = {"Authorization": f"Bearer {keys[name]['read_key']}"}
                rows = httpx.get(f"{url}/v1/metrics/funnel", headers=auth).json()["rows"]
                seen[name] = {r["vendor_id"] for r in rows}
            time.sleep(0.3)
        assert seen == {"radio": {"vendor-radio"}, "books": {"vendor-books"}}
    status = run_cli("--data-dir", str(data), "status", "--project", "books", "--format", "json")
    assert status.returncode == 0, status.stderr
    assert "vendor-radio" not in status.stdout
    assert (data / "projects" / "books" / "lake").is_dir()
