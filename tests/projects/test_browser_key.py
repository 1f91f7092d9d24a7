"""A project's browser key from a real browser (Debian's Chromium): ``navigator.sendBeacon``
and a CORS ``fetch`` are accepted from a page of an allowed origin and refused from a page
of any other origin."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from playpulse.config import Settings
from playpulse.projects import create_project
from playpulse.projects.gateway import create_gateway_app

_PAGE = b"<!doctype html><title>shop</title><p>shop page</p>"


def _views(vendor: str, n: int) -> list[dict[str, Any]]:
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    return [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "product_view",
            "occurred_at": at,
            "user_id": "visitor-1",
            "vendor_id": vendor,
            "product_id": "p1",
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def page_server() -> Iterator[int]:
    """A plain page on 127.0.0.1 (the same page is another origin as ``localhost``)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(_PAGE)))
            self.end_headers()
            self.wfile.write(_PAGE)

        def log_message(self, *args: Any) -> None:
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _views_by_vendor(url: str, read_key: str) -> dict[str, int]:
    answer = httpx.get(
        f"{url}/v1/metrics/funnel", headers={"Authorization": f"Bearer {read_key}"}, timeout=20
    )
    answer.raise_for_status()
    return {row["vendor_id"]: row["views"] for row in answer.json()["rows"]}


def test_send_beacon_and_cors_fetch_only_from_allowed_origins(
    browser: Any,
    serve: Any,
    page_server: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = Settings(data_dir=tmp_path_factory.mktemp("browser-key"))
    allowed = f"http://127.0.0.1:{page_server}"
    keys = create_project(settings, "web", [allowed])
    with serve(create_gateway_app(settings)) as url:
        context = browser.new_context()
        try:
            page = context.new_page()
            sent = {}
            for origin, vendor in (
                (allowed, "from-allowed"),
                (f"http://localhost:{page_server}", "from-other"),
            ):
                page.goto(f"{origin}/")
                beacon = page.evaluate(
                    """([url, key, events]) => navigator.sendBeacon(
                        url + "/v1/events?key=" + encodeURIComponent(key),
                        new Blob([JSON.stringify(events)], {type: "text/plain"}))""",
                    [url, keys.browser_key, _views(vendor, 2)],
                )
                body = json.dumps({"api_key": keys.browser_key, "events": _views(vendor, 3)})
                fetched = page.evaluate(
                    """async ([url, body]) => {
                        try {
                            const r = await fetch(url + "/v1/events", {method: "POST", body,
                                headers: {"Content-Type": "application/json"}});
                            return {status: r.status, body: await r.json()};
                        } catch (e) { return {error: String(e)}; }
                    }""",
                    [url, body],
                )
                sent[vendor] = (beacon, fetched)
        finally:
            context.close()
        # The allowed page's fetch got its answer (CORS let it read it); the other
        # page's fetch failed in the browser (no CORS answer to its preflight).
        assert sent["from-allowed"][1]["status"] == 200, sent
        assert sent["from-allowed"][1]["body"]["accepted"] == 3
        assert "error" in sent["from-other"][1], sent
        deadline = time.monotonic() + 60
        while _views_by_vendor(url, keys.read_key).get("from-allowed") != 5:
            assert time.monotonic() < deadline, _views_by_vendor(url, keys.read_key)
            time.sleep(0.3)
        # Give a refused beacon every chance to have been counted: it never is.
        time.sleep(1.0)
        views = _views_by_vendor(url, keys.read_key)
        assert views == {"from-allowed": 5}, views
