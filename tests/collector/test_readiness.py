"""GET /readyz (readiness) and GET /healthz (liveness) of the collector."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from playpulse.collector.app import add_readiness_check, create_app
from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.stream.testing import run_unprivileged, unprivileged_dir


def test_readyz_is_ready_with_every_check_named(collector):
    response = httpx.get(f"{collector.url}/readyz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"stream": {"ok": True}, "quarantine": {"ok": True}},
    }


def test_deleted_stream_file_is_not_ready_but_alive(collector):
    collector.settings.stream_path.unlink()
    response = httpx.get(f"{collector.url}/readyz", timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["stream"]["ok"] is False
    assert str(collector.settings.stream_path) in body["checks"]["stream"]["problem"]
    assert body["checks"]["quarantine"] == {"ok": True}
    assert response.headers["retry-after"]
    assert httpx.get(f"{collector.url}/healthz", timeout=10).status_code == 200


def test_deleted_data_dir_is_not_ready_naming_the_folder(collector):
    shutil.rmtree(collector.settings.data_dir)
    body = httpx.get(f"{collector.url}/readyz", timeout=10).json()
    assert body["status"] == "not_ready"
    for name in ("stream", "quarantine"):
        assert "folder" in body["checks"][name]["problem"]
        assert str(collector.settings.data_dir) in body["checks"][name]["problem"]


def test_replaced_stream_file_is_not_ready(collector):
    path = collector.settings.stream_path
    path.rename(path.with_suffix(".old"))
    path.write_bytes(b"")
    problem = httpx.get(f"{collector.url}/readyz", timeout=10).json()["checks"]["stream"]
    assert problem["ok"] is False
    assert "replaced" in problem["problem"]


def test_read_only_stream_file_is_not_ready():
    # As the user nobody (root writes whatever the mode says), on files nobody owns: a
    # writable file is ready, the same file made read-only is not.
    with unprivileged_dir() as root:
        app = create_app(Settings(data_dir=root))
        collector = app.state.collector
        try:
            check = app.state.readiness_checks["stream"]
            for path in (root, *root.iterdir()):
                os.chown(path, 65534, 65534)

            def probe() -> None:
                raise RuntimeError(f"check says: {check()}")

            writable = run_unprivileged(probe)
            root.joinpath("stream.db").chmod(0o444)
            read_only = run_unprivileged(probe)
        finally:
            collector.stream.close()
            collector.quarantine.close()
    assert writable == "RuntimeError: check says: None"
    assert "not writable" in read_only
    assert "stream.db" in read_only


def _app(tmp_path: Path) -> FastAPI:
    return create_app(Settings(data_dir=tmp_path))


def test_added_checks_are_run_and_reported(tmp_path):
    app = _app(tmp_path)
    calls: list[str] = []

    def store_check() -> str | None:
        calls.append("store")
        return "store.db cannot be opened:\n  file is not a database"

    add_readiness_check(app, "store", store_check)
    add_readiness_check(app, "lake", lambda: None)
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["store"] == {
        "ok": False,
        "problem": "store.db cannot be opened: file is not a database",
    }
    assert checks["lake"] == {"ok": True}
    assert checks["stream"] == {"ok": True}
    assert calls == ["store"]


def test_a_check_that_raises_is_a_problem_not_a_500(tmp_path):
    app = _app(tmp_path)

    def broken() -> str | None:
        raise OSError("disk on fire")

    add_readiness_check(app, "broken", broken)
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broken"] == {
        "ok": False,
        "problem": "the check raised OSError: disk on fire",
    }


def test_a_slow_check_times_out(tmp_path, monkeypatch):
    import playpulse.collector.app as collector_app

    monkeypatch.setattr(collector_app, "READINESS_CHECK_TIMEOUT_S", 0.2)
    app = _app(tmp_path)

    def slow() -> str | None:
        time.sleep(1)
        return None

    add_readiness_check(app, "slow", slow)
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert "did not answer within 0.2 s" in response.json()["checks"]["slow"]["problem"]


def test_readiness_checks_work_on_any_app():
    app = FastAPI()
    add_readiness_check(app, "always", lambda: None)
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"always": {"ok": True}}}


def test_a_check_name_is_registered_once(tmp_path):
    app = _app(tmp_path)
    with pytest.raises(ConfigError, match="'stream' is already registered"):
        add_readiness_check(app, "stream", lambda: None)
    with pytest.raises(ConfigError, match="needs a name"):
        add_readiness_check(app, "", lambda: None)
