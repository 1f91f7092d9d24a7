"""The dashboard's readiness banner (js/health.js): what it says for each /readyz answer
(run in Node, when installed), and, in Chromium, that a failing processor shows it with
the processor's last error."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from playpulse.dashboard import STATIC_DIR
from playpulse.testing import playpulse_server

HEALTH_JS = STATIC_DIR / "js" / "health.js"


def run_node(program: str) -> Any:
    """Run health.js followed by ``program`` (an ES module) in Node; its last line of
    output, as JSON."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is missing")
    result = subprocess.run(
        [node, "--input-type=module"],
        input=HEALTH_JS.read_text() + "\n" + program,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def readiness_texts(cases: list[tuple[int, Any]]) -> list[str]:
    """``readinessText(status, body)`` of health.js for each case."""
    texts: list[str] = run_node(
        f"const cases = {json.dumps(cases)};\n"
        "console.log(JSON.stringify(cases.map(([s, b]) => readinessText(s, b))));\n"
    )
    return texts


def test_the_banner_names_every_failing_check_and_nothing_when_ready():
    failing = {
        "status": "not_ready",
        "checks": {
            "stream": {"ok": True},
            "processor": {"ok": False, "problem": "the processor is restarting; last error"},
            "store": {"ok": False, "problem": "the store x cannot be read"},
        },
    }
    ready, not_ready, odd, gone, old, signed_out = readiness_texts(
        [
            (200, {"status": "ready", "checks": {}}),
            (200, failing),
            (503, None),
            (0, None),
            (404, None),
            (401, None),
        ]
    )
    assert ready == ""
    assert not_ready.startswith("Not ready")
    assert "processor: the processor is restarting; last error" in not_ready
    assert "store: the store x cannot be read" in not_ready
    assert "stream" not in not_ready
    assert "readiness answered 503" in odd
    assert "not reachable" in gone
    assert old == ""
    assert signed_out == ""


def test_the_banner_says_what_is_degraded_while_ready():
    (text,) = readiness_texts(
        [
            (
                200,
                {
                    "status": "degraded",
                    "checks": {
                        "stream": {"ok": True},
                        "lake": {"ok": True, "degraded": "1 lake file(s) could not be read"},
                    },
                },
            )
        ]
    )
    assert text == "Degraded. lake: 1 lake file(s) could not be read"


WATCH = """
// A banner and the browser calls watchHealth uses, played through a sequence of
// /readyz answers: one check per timer.
const answers = ANSWERS;
const banner = { hidden: true, textContent: "" };
const seen = [];
let pending = null;
globalThis.fetch = async () => {
  const [status, body] = answers.shift();
  return { status, json: async () => body };
};
globalThis.setTimeout = (fn) => { pending = fn; };
watchHealth(banner);
for (let i = 0; ; i++) {
  await new Promise((resolve) => setImmediate(resolve));
  seen.push(banner.hidden ? null : banner.textContent);
  if (!answers.length) break;
  pending();
}
console.log(JSON.stringify(seen));
"""


def test_the_banner_shows_after_two_failing_checks_and_hides_on_the_first_ready():
    stuck = {"processor": {"ok": False, "problem": "stuck"}}
    failing = [200, {"status": "not_ready", "checks": stuck}]
    ready = [200, {"status": "ready", "checks": {}}]
    answers = [failing, failing, failing, ready, failing, ready]
    seen = run_node(WATCH.replace("ANSWERS", json.dumps(answers)))
    shown = "Not ready, the numbers below may be stale. processor: stuck"
    # A processor that is only starting (one failing check) does not flash the banner.
    assert seen == [None, shown, shown, None, None, None]


def test_a_failing_processor_shows_the_banner(tmp_path: Path, new_page: Any):
    from playwright.sync_api import expect

    data = tmp_path / "data"
    data.mkdir()
    (data / "store.db").write_bytes(b"not a database, garbage " * 8)
    env = {"PLAYPULSE_PROCESSOR_RESTART_DELAY_S": "0.5"}
    with playpulse_server("up", data, tmp_path / "up.log", env=env) as (url, _):
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz", timeout=5).status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        page = new_page()
        page.goto(url + "/")
        banner = page.locator("#health-banner")
        expect(banner).to_be_visible(timeout=20_000)
        expect(banner).to_contain_text("processor:")
        expect(banner).to_contain_text("not a database")
        # The read API's failing answers (5xx: the store is unreadable) are logged by the
        # browser; no script broke.
        assert [e for e in page.errors if not e.startswith("Failed to load resource")] == []


def test_dashboard_readiness_is_readyz_as_a_200_for_readers(tmp_path: Path):
    from fastapi.testclient import TestClient

    from playpulse.api.auth import ReadAuth
    from playpulse.collector.app import add_readiness_check, create_app
    from playpulse.config import Settings
    from playpulse.dashboard import mount_dashboard

    app = create_app(Settings(data_dir=tmp_path))
    mount_dashboard(app, ReadAuth([b"reader-key"]))
    add_readiness_check(app, "processor", lambda: "the processor is restarting")
    client = TestClient(app)  # no lifespan: checks and routes only
    assert client.get("/dashboard/readiness").status_code == 401
    readyz = client.get("/readyz")
    assert readyz.status_code == 503
    answer = client.get("/dashboard/readiness", headers={"Authorization": "Bearer reader-key"})
    assert answer.status_code == 200
    # /readyz's answer, plus the alerts firing now (none: this app evaluates no rules).
    assert answer.json() == {**readyz.json(), "alerts": []}
    assert answer.json()["checks"]["processor"] == {
        "ok": False,
        "problem": "the processor is restarting",
    }
