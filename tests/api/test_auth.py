"""Read keys: separate from write keys; header, ``key`` parameter or dashboard cookie."""

from __future__ import annotations

import httpx
import pytest

from playpulse.api.auth import COOKIE_NAME, ReadAuth, key_subject

READ_PATHS = [
    "/v1/metrics",
    "/v1/metrics/overview",
    "/v1/sessions/histogram",
    "/v1/live",
    "/v1/live/stream?max_events=1",
]


@pytest.mark.parametrize("path", READ_PATHS)
def test_reads_need_a_read_key(keyed_server, path: str):
    base = keyed_server.base
    response = httpx.get(f"{base}{path}", timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"
    for key in keyed_server.read_keys:
        ok = httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert ok.status_code == 200, ok.text
    sep = "&" if "?" in path else "?"
    assert httpx.get(f"{base}{path}{sep}key={keyed_server.read_keys[0]}", timeout=10).is_success


def test_write_keys_and_read_keys_do_not_stand_in_for_each_other(keyed_server):
    base = keyed_server.base
    as_write = {"Authorization": f"Bearer {keyed_server.write_key}"}
    as_read = {"Authorization": f"Bearer {keyed_server.read_keys[0]}"}
    assert httpx.get(f"{base}/v1/metrics/overview", headers=as_write, timeout=10).status_code == 401
    assert httpx.post(f"{base}/v1/events", json=[], headers=as_read, timeout=10).status_code == 401
    assert httpx.post(f"{base}/v1/events", json=[], headers=as_write, timeout=10).status_code == 200


def test_wrong_keys_are_refused(keyed_server):
    base = keyed_server.base
    for headers in ({"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        assert httpx.get(f"{base}/v1/live", headers=headers, timeout=10).status_code == 401
    assert httpx.get(f"{base}/v1/live?key=nope", timeout=10).status_code == 401
    cookies = {COOKIE_NAME: "0" * 64}
    assert httpx.get(f"{base}/v1/live", cookies=cookies, timeout=10).status_code == 401
    # The cookie holds a signed subject, not the key.
    cookies = {COOKIE_NAME: keyed_server.read_keys[0]}
    assert httpx.get(f"{base}/v1/live", cookies=cookies, timeout=10).status_code == 401


def test_the_dashboard_signs_in_with_a_read_key(keyed_server):
    base = keyed_server.base
    with httpx.Client(base_url=base, timeout=10) as client:
        page = client.get("/content/book-1?range=30d")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Fcontent%2Fbook-1%3Frange%3D30d"
        form = client.get(page.headers["location"])
        assert form.status_code == 200
        assert 'value="/content/book-1?range=30d"' in form.text
        wrong = client.post("/login", data={"key": "nope", "next": "/"})
        assert wrong.status_code == 401
        assert "not a read key" in wrong.text
        assert COOKIE_NAME not in client.cookies
        signed = client.post(
            "/login", data={"key": keyed_server.read_keys[1], "next": "/content/book-1"}
        )
        assert signed.status_code == 303
        assert signed.headers["location"] == "/content/book-1"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert keyed_server.read_keys[1] not in cookie
        assert "max-age=43200" in cookie.lower()  # 12 h by default
        assert client.get("/").status_code == 200
        assert 'data-auth="keys"' in client.get("/").text
        assert client.get("/v1/metrics/overview").status_code == 200
        with client.stream("GET", "/v1/live/stream?max_events=1") as stream:
            assert stream.status_code == 200
        client.get("/logout")
        assert client.get("/v1/live").status_code == 401


def test_a_key_in_the_page_address_sets_the_cookie_once(keyed_server):
    base = keyed_server.base
    with httpx.Client(base_url=base, timeout=10) as client:
        response = client.get(f"/?range=30d&key={keyed_server.read_keys[0]}")
        assert response.status_code == 303
        assert response.headers["location"] == "/?range=30d"
        assert client.get("/?range=30d").status_code == 200


def test_login_redirects_only_inside_the_site(keyed_server):
    for target in ("//evil.example/", "https://evil.example/", "evil", "/\\evil.example"):
        response = httpx.post(
            f"{keyed_server.base}/login",
            data={"key": keyed_server.read_keys[0], "next": target},
            timeout=10,
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/"


def test_docs_and_assets_stay_open(keyed_server):
    base = keyed_server.base
    assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
    assert httpx.get(f"{base}/openapi.json", timeout=10).status_code == 200
    assert httpx.get(f"{base}/assets/js/app.js", timeout=10).status_code == 200


def test_keys_never_reach_the_access_log(keyed_server):
    base = keyed_server.base
    key = keyed_server.read_keys[0]
    assert httpx.get(f"{base}/v1/metrics?key={key}", timeout=10).status_code == 200
    assert httpx.get(f"{base}/?key={key}", timeout=10).status_code == 303
    httpx.post(f"{base}/login", data={"key": key}, timeout=10)
    log = keyed_server.log.read_text()
    assert "/v1/metrics?key=*** " in log
    for secret in (*keyed_server.read_keys, keyed_server.write_key):
        assert secret not in log


def test_read_auth_is_open_without_keys():
    assert ReadAuth([]).open
    assert not ReadAuth([b"k"]).open
    assert ReadAuth([b"k"]).valid_key("k")
    assert not ReadAuth([b"k"]).valid_key("")
    assert key_subject(b"k") != key_subject(b"l")
    assert key_subject(b"k") == key_subject(b"k")
    assert len(key_subject(b"k")) == len("key-") + 16
