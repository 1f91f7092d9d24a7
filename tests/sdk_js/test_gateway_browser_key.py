"""playpulse.js, loaded from the projects gateway (``/sdk/playpulse.js``, open), on a
page of another origin, sending to the gateway with the project's browser key: batches
by CORS fetch (the key as a bearer token, after a preflight), what is pending at
``pagehide`` by ``sendBeacon`` to ``/v1/events?key=``. Both reach the project's stream;
the same page on an origin the project does not list gets nothing in."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from playpulse.config import Settings
from playpulse.projects import create_project, project_settings
from playpulse.projects.gateway import create_gateway_app
from playpulse.stream.factory import open_stream
from playpulse.testing import load_module, read_partition

_conftest = load_module(Path(__file__).with_name("conftest.py"), "playpulse_tests_sdk_js_cf2")

SHOP = """<!doctype html><html><head><title>shop</title>
<script>
// Every beacon, kept in sessionStorage: read after the page is gone.
const sendBeacon = navigator.sendBeacon.bind(navigator);
navigator.sendBeacon = (url, data) => {
  const sent = sendBeacon(url, data);
  const beacons = JSON.parse(sessionStorage.getItem("beacons") || "[]");
  beacons.push({url: String(url), data: String(data), sent});
  sessionStorage.setItem("beacons", JSON.stringify(beacons));
  return sent;
};
</script></head><body>shop</body></html>"""


def shop_app() -> FastAPI:
    """A shop's site: ``/shop`` and ``/bye``."""
    app = FastAPI()

    @app.get("/shop")
    async def shop() -> HTMLResponse:
        return HTMLResponse(SHOP)

    @app.get("/bye")
    async def bye() -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>bye</title>")

    return app


def stored(settings: Settings) -> list[dict[str, Any]]:
    """The events in the stream of ``settings``."""
    stream = open_stream(settings)
    try:
        return [
            json.loads(r.value)
            for p in range(len(stream.partitions()))
            for r in read_partition(stream, p)
        ]
    finally:
        stream.close()


def visit(browser: Any, origin: str, gateway: str, key: str, vendor: str) -> dict[str, Any]:
    """Open ``{origin}/shop``, send 3 product views by fetch and 2 left pending until the
    page is left; returns what the page saw (``fetched``: batches sent, ``beacons``)."""
    tab = next(t for t in browser.targets() if t["type"] == "page")
    page = browser.page(tab["targetId"])
    page.navigate(f"{origin}/shop")
    # The SDK from the gateway (open: no key), as a shop would load it.
    page.evaluate(
        f"""new Promise((resolve, reject) => {{
            const script = document.createElement("script");
            script.src = {gateway + "/sdk/playpulse.js"!r};
            script.onload = () => resolve(true);
            script.onerror = () => reject(new Error("the SDK did not load"));
            document.head.appendChild(script);
        }})""",
        await_promise=True,
    )
    page.evaluate(
        f"""playpulse.init({{host: {gateway!r}, writeKey: {key!r}, batchSize: 3,
            flushIntervalMs: 600000, maxRetries: 0}});
        ['a', 'b', 'c', 'd', 'e'].forEach(p => playpulse.track('product_view',
            {{product_id: p, vendor_id: {vendor!r}}})); true"""
    )
    page.wait_until("playpulse.pending() === 2")  # the first three went by fetch
    browser.pump(0.5)
    page.navigate(f"{origin}/bye")
    return {"beacons": page.evaluate("JSON.parse(sessionStorage.getItem('beacons') || '[]')")}


def test_the_sdk_with_a_browser_key_through_the_gateway(cdp: ModuleType, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with _conftest.serve(shop_app()) as shop:
        port = shop.rsplit(":", 1)[1]
        keys = create_project(settings, "web", [shop])
        project = project_settings(settings, "web")
        with _conftest.serve(create_gateway_app(settings)) as gateway, cdp.chromium() as browser:
            allowed = visit(browser, shop, gateway, keys.browser_key, "from-allowed")
            other = visit(
                browser, f"http://localhost:{port}", gateway, keys.browser_key, "from-other"
            )
            deadline = time.monotonic() + 30
            while len(stored(project)) < 5:
                assert time.monotonic() < deadline, stored(project)
                time.sleep(0.2)

    events = stored(project)
    assert sorted(e["product_id"] for e in events) == ["a", "b", "c", "d", "e"]
    assert {e["vendor_id"] for e in events} == {"from-allowed"}
    # The last two came by the beacon, to /v1/events?key= (a beacon cannot set headers).
    (beacon,) = allowed["beacons"]
    assert beacon["sent"] is True
    assert beacon["url"].startswith(f"{gateway}/v1/events?key=")
    assert [e["product_id"] for e in json.loads(beacon["data"])] == ["d", "e"]
    # From the other origin the beacon left the browser, but the gateway refused it.
    assert len(other["beacons"]) == 1
