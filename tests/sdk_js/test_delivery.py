"""How playpulse.js delivers: loaded from ``/sdk/playpulse.js`` (:func:`mount_sdk`) in
Chromium, sending batches with a Bearer write key to the real collector app, retrying
after 503/429 (Retry-After) and 502, dropping what the collector refuses (401, invalid
events), and never throwing into the page.

Failures are injected by :class:`Faults`, an ASGI app in front of the collector that
answers planned statuses *instead of* passing a request on (as a proxy or load balancer
in trouble would); every other request reaches the collector, which stores the events in
a stream the test reads afterwards.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi.responses import HTMLResponse

from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.sdk_js import SDK_PATH, mount_sdk
from playpulse.stream.factory import open_stream
from playpulse.testing import load_module, read_partition

_conftest = load_module(Path(__file__).with_name("conftest.py"), "playpulse_tests_sdk_js_cf")
KEY = "sdk-test-write-key"

PLAYER = """<!doctype html><html><head><title>shop</title>
<script src="/sdk/playpulse.js"></script></head><body><audio id="a"></audio></body></html>"""


class Faults:
    """ASGI app in front of ``app``: records every ``POST /v1/events`` (monotonic time,
    Authorization, query string, event ids and types, answer status); while ``planned``
    holds ``(status, retry_after)`` pairs, answers the next request with one of them."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.planned: list[tuple[int, str | None]] = []
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/events" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        events = json.loads(body)
        record: dict[str, Any] = {
            "at": time.monotonic(),
            "authorization": headers.get("authorization"),
            "query": scope["query_string"].decode(),
            "ids": [e.get("event_id") for e in events],
            "types": [e.get("event_type") for e in events],
        }
        self.requests.append(record)
        if self.planned:
            status, retry_after = self.planned.pop(0)
            record["status"] = status
            extra = [(b"retry-after", retry_after.encode())] if retry_after else []
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), *extra],
                }
            )
            await send({"type": "http.response.body", "body": b'{"error": {}}'})
            return

        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            await send(message)

        await self.app(scope, replay, capture)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Faults, Any]]:
    """The real collector (write key :data:`KEY`) with the SDK mounted and a page at
    ``/player``, behind :class:`Faults`, on uvicorn: ``(base, faults, stream)``."""
    settings = Settings(data_dir=tmp_path / "data", write_keys=[KEY])
    stream = open_stream(settings)
    app = create_app(settings, stream=stream)
    mount_sdk(app)

    @app.get("/player")
    async def player() -> HTMLResponse:
        return HTMLResponse(PLAYER)

    faults = Faults(app)
    try:
        with _conftest.serve(faults) as base:
            yield base, faults, stream
    finally:
        stream.close()


@pytest.fixture
def page(cdp: ModuleType, site: tuple[str, Faults, Any]) -> Iterator[Any]:
    """A tab on ``/player`` with the SDK loaded from ``/sdk/playpulse.js``."""
    base = site[0]
    with cdp.chromium() as browser:
        tab = next(t for t in browser.targets() if t["type"] == "page")
        page = browser.page(tab["targetId"])
        page.navigate(f"{base}/player")
        page.wait_until("typeof playpulse === 'object' && !!playpulse.trackMedia")
        yield page


def stored_ids(stream: Any) -> list[str]:
    """The event ids in the stream, partition by partition."""
    ids: list[str] = []
    for partition in range(len(stream.partitions())):
        ids += [json.loads(r.value)["event_id"] for r in read_partition(stream, partition)]
    return ids


def wait_requests(page: Any, faults: Faults, n: int) -> None:
    """Until ``faults`` saw ``n`` requests, all answered, and nothing is pending."""
    deadline = time.monotonic() + 30
    while not (
        len(faults.requests) >= n
        and all("status" in r for r in faults.requests)
        and page.evaluate("playpulse.pending()") == 0
    ):
        assert time.monotonic() < deadline, faults.requests
        page.browser.pump(0.05)


def track_products(page: Any, *products: str) -> list[str]:
    """``playpulse.track("product_view", ...)`` for each product; the event ids."""
    ids: list[str] = page.evaluate(
        f"{json.dumps(products)}.map(p => playpulse.track('product_view', "
        "{product_id: p, vendor_id: 'v1'}))"
    )
    return ids


def test_the_server_serves_the_sdk_with_cache_headers(site: tuple[str, Faults, Any]) -> None:
    base = site[0]
    response = httpx.get(f"{base}/sdk/playpulse.js")
    assert response.status_code == 200
    assert response.content == SDK_PATH.read_bytes()
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["x-content-type-options"] == "nosniff"
    etag = response.headers["etag"]
    again = httpx.get(f"{base}/sdk/playpulse.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    other = httpx.get(f"{base}/sdk/playpulse.js", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200
    head = httpx.head(f"{base}/sdk/playpulse.js")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(SDK_PATH.read_bytes())


def test_batches_retry_after_503_429_and_502_then_arrive_once(
    page: Any, site: tuple[str, Faults, Any]
) -> None:
    base, faults, stream = site
    page.evaluate(
        f"playpulse.init({{host: {base!r}, writeKey: {KEY!r}, batchSize: 3, "
        "flushIntervalMs: 600000, minBackoffMs: 200})"
    )
    faults.planned = [(503, "1"), (429, "1"), (502, None)]
    ids = track_products(page, "p1", "p2", "p3")  # a full batch goes at once
    wait_requests(page, faults, 4)

    assert [r["status"] for r in faults.requests] == [503, 429, 502, 200]
    assert all(r["ids"] == ids for r in faults.requests)
    assert {r["authorization"] for r in faults.requests} == {f"Bearer {KEY}"}
    assert {r["query"] for r in faults.requests} == {""}  # the key is never in the URL
    at = [r["at"] for r in faults.requests]
    # Retry-After: 1 was waited for (a lower bound: a slow machine only waits longer).
    assert at[1] - at[0] >= 0.9
    assert at[2] - at[1] >= 0.9
    assert stored_ids(stream) == ids


def test_what_the_collector_refuses_is_dropped_not_retried(
    page: Any, site: tuple[str, Faults, Any]
) -> None:
    base, faults, stream = site
    page.evaluate(
        f"playpulse.init({{host: {base!r}, writeKey: 'not-the-key', batchSize: 3, "
        "flushIntervalMs: 600000})"
    )
    refused = track_products(page, "p1", "p2", "p3")
    wait_requests(page, faults, 1)
    assert faults.requests[0]["status"] == 401

    page.evaluate(
        f"playpulse.init({{host: {base!r}, writeKey: {KEY!r}, batchSize: 3, "
        "flushIntervalMs: 600000})"
    )
    # One invalid event (a play_start without content) in a batch of three: the
    # collector takes the other two and answers 200; nothing is sent again.
    good = track_products(page, "p4", "p5")
    bad = page.evaluate("playpulse.track('play_start', {playback_id: 'x'})")
    wait_requests(page, faults, 2)
    assert [r["status"] for r in faults.requests] == [401, 200]
    assert faults.requests[1]["ids"] == [*good, bad]
    assert stored_ids(stream) == good
    assert not set(refused) & set(stored_ids(stream))


def test_nothing_the_page_does_makes_the_sdk_throw(page: Any) -> None:
    page.call("Runtime.enable")
    calls = [
        "playpulse.track('product_view', {product_id: 'before-init'})",
        "playpulse.trackMedia(document.getElementById('a'), {contentId: 'x'})",
        "playpulse.init(null)",
        "playpulse.init({host: 'http://127.0.0.1:9', batchSize: 'many'})",
        "playpulse.track()",
        "playpulse.track(42)",
        "playpulse.track('product_view', null)",
        "playpulse.trackMedia(null)",
        "playpulse.trackMedia(document.body)",
        "playpulse.trackMedia({addEventListener: 1, currentTime: 0})",
        "playpulse.identify({toString() { throw new Error('no'); }})",
        "playpulse.flush()",
    ]
    for call in calls:
        page.evaluate(call)  # raises CDPError if anything reaches the page
    # A tracker on an element with a broken playbackRate getter still follows it.
    tracker = page.evaluate(
        """(() => {
        const a = document.getElementById('a');
        Object.defineProperty(a, 'playbackRate', {get() { throw new Error('broken'); }});
        const t = playpulse.trackMedia(a, {contentId: 'broken'});
        a.dispatchEvent(new Event('play'));
        a.dispatchEvent(new Event('ratechange'));
        return typeof t.detach;
        })()"""
    )
    assert tracker == "function"
    page.browser.pump(0.3)
    assert not page.events("Runtime.exceptionThrown")


def test_buffering_ending_and_the_next_play_of_an_element(
    page: Any, site: tuple[str, Faults, Any]
) -> None:
    base, faults, _ = site
    wav = _conftest.wav_bytes(1.0)
    page.evaluate(
        f"""playpulse.init({{host: {base!r}, writeKey: {KEY!r}, flushIntervalMs: 50}});
        document.getElementById('a').src =
            'data:audio/wav;base64,' + {json.dumps(base64.b64encode(wav).decode())};
        window.tracker = playpulse.trackMedia(
            document.getElementById('a'), {{contentId: 'one-second'}}); true"""
    )
    page.wait_until("document.getElementById('a').readyState >= 3")
    page.evaluate("document.getElementById('a').play()", await_promise=True)
    first = page.evaluate("tracker.playbackId()")
    # A stall as Chromium reports one: waiting, then playing when data came.
    page.evaluate(
        "document.getElementById('a').dispatchEvent(new Event('waiting'));"
        "document.getElementById('a').dispatchEvent(new Event('playing')); true"
    )
    page.wait_until("document.getElementById('a').ended")
    page.wait_until("tracker.playbackId() === null")
    page.evaluate("document.getElementById('a').play()", await_promise=True)  # again
    second = page.evaluate("tracker.playbackId()")
    page.evaluate("tracker.detach()")
    page.wait_until("playpulse.pending() === 0")
    wait_requests(page, faults, 1)

    sent = [t for r in faults.requests for t in r["types"]]
    assert all(r["status"] == 200 for r in faults.requests)
    assert second
    assert second != first
    assert sent[:4] == ["play_start", "buffer_start", "buffer_end", "play_end"]  # completed
    # The next play (Chromium may stall while it goes back to the start: startup).
    assert [t for t in sent[4:] if not t.startswith("buffer_")] == ["play_start", "play_end"]
