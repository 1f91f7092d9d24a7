"""Projects behind one port (playpulse.projects.gateway), over real HTTP on 127.0.0.1:
two projects with the same user, content and vendor ids never see each other's rows; keys
of one kind do not open the other doors; browser keys only from their origins; a vendor's
read key sees only that vendor's shop metrics; the dashboard cookie expires with its key.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from playpulse.config import Settings
from playpulse.projects import (
    ProjectKeys,
    create_project,
    issue_key,
    project_settings,
    revoke_key,
)
from playpulse.projects.gateway import create_gateway_app
from playpulse.query.catalog import CATALOG, QueryParams, run_query

ORIGIN_A = "http://shop-a.test:8080"
ORIGIN_EVIL = "http://evil.test"


@dataclass
class Setup:
    url: str
    settings: Settings
    a: ProjectKeys
    b: ProjectKeys
    vendor_key: str


def _now(offset_s: float = 0) -> str:
    moment = datetime.now(UTC) - timedelta(hours=2) + timedelta(seconds=offset_s)
    return moment.isoformat().replace("+00:00", "Z")


def _plays(title: str, n: int) -> list[dict[str, Any]]:
    """``n`` plays of the same user and content, 60 s each, titled ``title``."""
    events = []
    content = {
        "content_id": "c1",
        "content_type": "track",
        "title": title,
        "creator": title,
        "duration_s": 60,
    }
    context = {"device_type": "mobile", "platform": "ios"}
    for i in range(n):
        playback = f"pb-{uuid.uuid4().hex[:8]}"
        for kind, at, position in (("play_start", i * 100, 0), ("play_end", i * 100 + 60, 60)):
            event = {
                "event_id": str(uuid.uuid4()),
                "event_type": kind,
                "occurred_at": _now(at),
                "user_id": "u1",
                "playback_id": playback,
                "position_s": position,
                "content": content,
                "context": context,
            }
            if kind == "play_end":
                event["reason"] = "completed"
            events.append(event)
    return events


def _shop(vendor: str, product: str, views: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "product_view",
            "occurred_at": _now(i),
            "user_id": "u1",
            "vendor_id": vendor,
            "product_id": product,
        }
        for i in range(views)
    ]


def _wait_processed(url: str, key: str, plays: int, views: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 60
    while True:
        overview = httpx.get(f"{url}/v1/metrics/overview", headers=headers, timeout=10).json()
        funnel = httpx.get(f"{url}/v1/metrics/funnel", headers=headers, timeout=10).json()
        got_plays = overview["rows"][0]["plays"] if overview["rows"] else 0
        got_views = sum(r["views"] or 0 for r in funnel["rows"])
        if got_plays == plays and got_views == views:
            return
        assert time.monotonic() < deadline, f"not processed: {overview} {funnel}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, serve: Any) -> Iterator[Setup]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("projects"))
    a = create_project(settings, "app-a", [ORIGIN_A])
    b = create_project(settings, "app-b", ["http://shop-b.test"])
    vendor_key = issue_key(settings, "app-a", "read", vendor_id="v1")
    with serve(create_gateway_app(settings)) as url:

        def post(key: str, events: list[dict[str, Any]], url: str = url) -> httpx.Response:
            auth = {"Authorization": f"Bearer {key}"}
            return httpx.post(f"{url}/v1/events", json=events, headers=auth)

        assert (
            post(
                a.write_key, _plays("Alpha Song", 3) + _shop("v1", "p1", 2) + _shop("v2", "p2", 4)
            ).json()["accepted"]
            == 12
        )
        assert (
            post(b.write_key, _plays("Bravo Song", 5) + _shop("v1", "p1", 7)).json()["accepted"]
            == 17
        )
        _wait_processed(url, a.read_key, 3, 6)
        _wait_processed(url, b.read_key, 5, 7)
        yield Setup(url, settings, a, b, vendor_key)


def _get(setup: Setup, path: str, key: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{setup.url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=20,
    )


def test_every_catalog_query_with_a_project_key_shows_only_that_project(setup: Setup) -> None:
    for project, keys, other_title in (("app-a", setup.a, "Bravo"), ("app-b", setup.b, "Alpha")):
        own = project_settings(setup.settings, project)
        for name in CATALOG:
            answer = _get(setup, f"/v1/metrics/{name}", keys.read_key)
            assert answer.status_code == 200, (name, answer.text)
            assert other_title not in answer.text, (project, name)
            params = QueryParams(
                **{k: v for k, v in answer.json()["params"].items() if k in ("tz",)}
            )
            expected = run_query(name, params, own)
            assert len(answer.json()["rows"]) == expected.num_rows, (project, name)
    a_overview = _get(setup, "/v1/metrics/overview", setup.a.read_key).json()["rows"][0]
    b_overview = _get(setup, "/v1/metrics/overview", setup.b.read_key).json()["rows"][0]
    assert (a_overview["plays"], b_overview["plays"]) == (3, 5)


def test_keys_open_only_their_own_door(setup: Setup) -> None:
    # A write key cannot read, a read key cannot write, a key of nothing does neither.
    assert _get(setup, "/v1/metrics/overview", setup.a.write_key).status_code == 401
    assert _get(setup, "/v1/metrics/overview", "pp_r_not-a-key").status_code == 401
    assert httpx.get(f"{setup.url}/v1/metrics/overview").status_code == 401
    refused = httpx.post(
        f"{setup.url}/v1/events",
        json=_plays("X", 1),
        headers={"Authorization": f"Bearer {setup.a.read_key}"},
    )
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    # /metrics (Prometheus) needs a read key too.
    assert httpx.get(f"{setup.url}/metrics").status_code == 401
    assert _get(setup, "/metrics", setup.a.read_key).status_code == 200
    # Pages send an anonymous visitor to sign in.
    page = httpx.get(f"{setup.url}/", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/login")


def test_browser_key_only_from_its_origins(setup: Setup) -> None:
    url = f"{setup.url}/v1/events"
    key = setup.a.browser_key
    ok = httpx.post(
        url, params={"key": key}, json=_shop("v9", "p9", 1), headers={"Origin": ORIGIN_A}
    )
    assert ok.status_code == 200, ok.text
    assert ok.headers["access-control-allow-origin"] == ORIGIN_A
    envelope = httpx.post(
        url,
        content=httpx.Request(
            "POST", url, json={"api_key": key, "events": _shop("v9", "p9", 2)}
        ).content,
        headers={"Origin": ORIGIN_A, "Content-Type": "text/plain;charset=UTF-8"},
    )
    assert envelope.status_code == 200, envelope.text
    assert envelope.json()["accepted"] == 2
    for origin in (ORIGIN_EVIL, "http://shop-b.test", None):
        headers = {"Origin": origin} if origin else {}
        refused = httpx.post(url, params={"key": key}, json=_shop("v9", "p9", 1), headers=headers)
        assert refused.status_code == 403, (origin, refused.text)
        assert refused.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in refused.headers
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = httpx.options(url, headers={**preflight, "Origin": ORIGIN_A})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ORIGIN_A
    assert httpx.options(url, headers={**preflight, "Origin": ORIGIN_EVIL}).status_code == 403
    # A server write key only in the header: never in a URL (logs) or a body.
    in_url = httpx.post(
        url,
        params={"key": setup.a.write_key},
        json=_shop("v9", "p9", 1),
        headers={"Origin": ORIGIN_A},
    )
    assert in_url.status_code == 401
    in_body = httpx.post(url, json={"api_key": setup.a.write_key, "events": _shop("v9", "p9", 1)})
    assert in_body.status_code == 401


def test_a_vendor_key_sees_only_its_vendor(setup: Setup) -> None:
    key = setup.vendor_key
    funnel = _get(setup, "/v1/metrics/funnel", key)
    assert funnel.status_code == 200, funnel.text
    assert [(r["vendor_id"], r["views"]) for r in funnel.json()["rows"]] == [("v1", 2)]
    products = _get(setup, "/v1/metrics/top_products", key).json()["rows"]
    assert {r["vendor_id"] for r in products} == {"v1"}
    assert _get(setup, "/v1/metrics/funnel", key, vendor_id="v2").status_code == 403
    for path in (
        "/v1/metrics/overview",
        "/v1/metrics/top_content",
        "/v1/live",
        "/v1/sessions/histogram",
        "/v1/content/c1",
        "/metrics",
    ):
        answer = _get(setup, path, key)
        assert answer.status_code == 403, (path, answer.text)
    listed = {q["name"] for q in _get(setup, "/v1/metrics", key).json()["queries"]}
    assert "overview" not in listed
    assert "funnel" in listed


def test_dashboard_cookie_is_signed_and_ends_with_its_key(setup: Setup) -> None:
    key = issue_key(setup.settings, "app-a", "read")
    with httpx.Client(base_url=setup.url) as client:
        signed_in = client.post("/login", data={"key": key, "next": "/"}, follow_redirects=False)
        assert signed_in.status_code == 303
        cookie = client.cookies.get("playpulse_session")
        assert cookie
        assert key not in cookie
        assert client.get("/v1/metrics/overview").json()["rows"][0]["plays"] == 3
        tampered = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
        client.cookies.set("playpulse_session", tampered)
        assert client.get("/v1/metrics/overview").status_code == 401
        client.cookies.set("playpulse_session", cookie)
        revoke_key(setup.settings, key[:12])
        assert client.get("/v1/metrics/overview").status_code == 401
    wrong = httpx.post(f"{setup.url}/login", data={"key": setup.a.write_key})
    assert wrong.status_code == 401


def test_project_data_dirs_are_apart(setup: Setup, tmp_path: Path) -> None:
    a_dir = project_settings(setup.settings, "app-a").data_dir
    b_dir = project_settings(setup.settings, "app-b").data_dir
    assert a_dir != b_dir
    for directory, other in ((a_dir, b"Bravo Song"), (b_dir, b"Alpha Song")):
        blobs = b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())
        assert other not in blobs


def test_sql_with_a_key_reaches_only_its_project_and_vendor(setup: Setup) -> None:
    import duckdb

    from playpulse.errors import ConfigError
    from playpulse.projects.sql import read_key_scope, vendor_connection
    from playpulse.query.engine import connect

    project, vendor = read_key_scope(setup.settings, setup.a.read_key)
    assert vendor is None
    assert project.data_dir == project_settings(setup.settings, "app-a").data_dir
    con = connect(project)
    try:
        titles = {r[0] for r in con.execute("SELECT DISTINCT title FROM plays").fetchall()}
    finally:
        con.close()
    assert titles == {"Alpha Song"}
    project, vendor = read_key_scope(setup.settings, setup.vendor_key)
    assert vendor == "v1"
    con = vendor_connection(project, vendor)
    try:
        tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        assert tables == {"shop_events"}
        rows = con.execute("SELECT vendor_id, count(*) FROM shop_events GROUP BY 1").fetchall()
        assert rows == [("v1", 2)]
        lake = project.data_dir / "lake"
        for statement in (
            f"SELECT * FROM read_parquet('{lake}/**/*.parquet')",
            "SET enable_external_access = true",
            f"ATTACH '{project.data_dir / 'x.db'}'",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(statement)
    finally:
        con.close()
    assert not (project.data_dir / "x.db").exists()
    for key in (setup.a.write_key, "pp_r_nothing", setup.b.browser_key):
        with pytest.raises(ConfigError, match="not a read key"):
            read_key_scope(setup.settings, key)


def test_wrong_keys_are_throttled_per_client(setup: Setup) -> None:
    # uvicorn takes the client address from X-Forwarded-For when the peer is 127.0.0.1.
    guesser = {"X-Forwarded-For": "10.9.9.9"}
    limit = setup.settings.login_failures_per_minute
    for n in range(limit):
        wrong = httpx.post(f"{setup.url}/login", data={"key": f"pp_r_guess{n}"}, headers=guesser)
        assert wrong.status_code == 401
    refused = httpx.post(f"{setup.url}/login", data={"key": setup.a.read_key}, headers=guesser)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    bearer = {**guesser, "Authorization": f"Bearer {setup.a.read_key}"}
    assert httpx.get(f"{setup.url}/v1/metrics", headers=bearer).status_code == 429
    # Another client is not held back by the guesser.
    assert _get(setup, "/v1/metrics", setup.a.read_key).status_code == 200


def test_sdk_is_open_and_graphql_takes_the_key_of_its_kind(setup: Setup) -> None:
    sdk = httpx.get(f"{setup.url}/sdk/playpulse.js")
    assert sdk.status_code == 200
    assert "javascript" in sdk.headers["content-type"]
    mutation = {
        "query": 'mutation { trackUserInteraction(eventType: ProductView, vendorId: "v7", '
        'customerId: "u1", productId: "p7") { success } }'
    }

    def graphql(key: str | None, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(f"{setup.url}/graphql", json=body, headers=headers, timeout=20)

    assert graphql(None, mutation).status_code == 401
    assert graphql(setup.vendor_key, mutation).status_code == 403
    done = graphql(setup.b.write_key, mutation)
    assert done.status_code == 200, done.text
    assert done.json()["data"]["trackUserInteraction"]["success"] is True
    refused = graphql(setup.b.read_key, mutation)
    assert refused.json()["errors"], refused.text
    assert not (refused.json().get("data") or {}).get("trackUserInteraction")
    # The event went to project B alone.
    deadline = time.monotonic() + 30
    while True:
        b_vendors = {
            r["vendor_id"]
            for r in _get(setup, "/v1/metrics/funnel", setup.b.read_key).json()["rows"]
        }
        if "v7" in b_vendors:
            break
        assert time.monotonic() < deadline, b_vendors
        time.sleep(0.3)
    a_vendors = {
        r["vendor_id"] for r in _get(setup, "/v1/metrics/funnel", setup.a.read_key).json()["rows"]
    }
    assert "v7" not in a_vendors
