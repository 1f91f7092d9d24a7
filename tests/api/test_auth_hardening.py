"""Read-side hardening (#14 item 3): credential redaction on the decoded query string,
throttled wrong keys, signed and expiring session cookies, ``/metrics`` behind a key,
and the identity resolver that projects plug into.

Access-log, throttle and ``/metrics`` tests run against a real ``playpulse up``
(``keyed_server``; distinct clients through ``X-Forwarded-For``, which uvicorn honours
from 127.0.0.1 only); cookie and resolver tests run the same app (collector, read API,
dashboard) in process with Starlette's TestClient.
"""

from __future__ import annotations

import re
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote_plus

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from playpulse.api import mount_read_api
from playpulse.api.auth import (
    COOKIE_NAME,
    SECRET_FILE,
    Identity,
    LoginThrottle,
    MetricsGuard,
    ReadAuth,
    guard_metrics,
    key_subject,
    read_identity,
    redact_query,
    session_secret,
)
from playpulse.collector.app import create_app
from playpulse.config import Settings
from playpulse.dashboard import mount_dashboard

KEYS = ("key-alpha-0123456789", "key-beta-0123456789")


def _client() -> dict[str, str]:
    # A client address of its own for the server's throttle (uvicorn takes
    # X-Forwarded-For from 127.0.0.1), so tests sharing keyed_server do not add up.
    a, b, c = uuid.uuid4().bytes[:3]
    return {"X-Forwarded-For": f"10.{a}.{b}.{c}"}


# -- 1. credentials never reach the access log, however encoded -------------------------


def test_redact_query_decodes_names_as_starlette_does():
    cases = {
        "/v1/live?%6Bey=SECRET": "/v1/live?%6Bey=***",
        "/v1/live?k%65y=SECRET&a=1": "/v1/live?k%65y=***&a=1",
        "/v1/live?a=1&%6b%65%79=SECRET": "/v1/live?a=1&%6b%65%79=***",
        "/v1/live?key=SE%43RET": "/v1/live?key=***",
        "/v1/live?KEY=SECRET": "/v1/live?KEY=***",
        "/v1/live?ke%79+=SECRET": "/v1/live?ke%79+=***",
        "/metrics?token=SECRET": "/metrics?token=***",
        "/login?next=%2F%3Frange%3D7d%26key%3DSECRET": "/login?next=***",
        "/v1/live?a=1&b=2": "/v1/live?a=1&b=2",
        "/v1/live": "/v1/live",
        "/v1/live?keyless": "/v1/live?keyless",
    }
    for target, redacted in cases.items():
        assert redact_query(target) == redacted, target


def test_encoded_key_names_never_reach_the_access_log(keyed_server):
    base, key = keyed_server.base, keyed_server.read_keys[0]
    encoded_value = "".join(f"%{b:02X}" for b in key.encode())
    targets = [
        f"/v1/metrics?%6Bey={key}",
        f"/v1/metrics?k%65y={key}",
        f"/v1/metrics?%6b%65%79={encoded_value}",
        f"/v1/metrics?key={key[:-1]}%{ord(key[-1]):02X}",
        f"/v1/live?a=1&%6Bey={key}&b=2",
    ]
    for target in targets:
        # Starlette decodes the name, so each authenticates: it must be redacted too.
        response = httpx.get(base + target, headers=_client(), timeout=10)
        assert response.status_code == 200, (target, response.text)
    redirect = f"/login?next=%2F%3Fkey%3D{key}"
    assert httpx.get(base + redirect, headers=_client(), timeout=10).status_code == 200
    log = keyed_server.log.read_text()
    lines = [line for line in log.splitlines() if "GET /v1/" in line or "GET /login?" in line]
    assert any("/v1/metrics?%6Bey=*** " in line for line in lines), lines
    assert any("/v1/metrics?k%65y=*** " in line for line in lines), lines
    assert any("/v1/live?a=1&%6Bey=***&b=2 " in line for line in lines), lines
    assert any("/login?next=*** " in line for line in lines), lines
    for line in log.splitlines():
        assert key not in unquote_plus(unquote_plus(line)), line
    assert encoded_value not in log


# -- 2. wrong keys are throttled per client ----------------------------------------------


def test_wrong_keys_are_throttled_per_client(keyed_server):
    base, key = keyed_server.base, keyed_server.read_keys[0]
    attacker, neighbour = _client(), _client()
    while neighbour == attacker:
        neighbour = _client()
    with httpx.Client(base_url=base, timeout=10, headers=attacker) as client:
        for guess in range(10):
            wrong = client.post("/login", data={"key": f"guess-{guess}", "next": "/"})
            assert wrong.status_code == 401
        throttled = client.post("/login", data={"key": f"guess-{guess + 1}", "next": "/"})
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert "Too many wrong keys" in throttled.text
        # Now even the right key is refused, by every way a key can come.
        assert client.post("/login", data={"key": key, "next": "/"}).status_code == 429
        bearer = client.get("/v1/metrics", headers={"Authorization": f"Bearer {key}"})
        assert bearer.status_code == 429
        assert bearer.json()["error"]["code"] == "too_many_attempts"
        assert "retry-after" in bearer.headers
        assert client.get(f"/v1/metrics?key={key}").status_code == 429
        assert client.get(f"/?key={key}").status_code == 429
        assert client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 429
        assert COOKIE_NAME not in client.cookies
    # Another address is not affected.
    other = httpx.post(f"{base}/login", data={"key": key}, headers=neighbour, timeout=10)
    assert other.status_code == 303


def test_bearer_guesses_are_throttled_too(keyed_server):
    headers = _client()
    codes = [
        httpx.get(
            f"{keyed_server.base}/v1/live",
            headers={**headers, "Authorization": f"Bearer guess-{i}"},
            timeout=10,
        ).status_code
        for i in range(12)
    ]
    assert codes == [401] * 10 + [429] * 2


def test_right_keys_are_not_penalised(keyed_server):
    headers = _client()
    with httpx.Client(base_url=keyed_server.base, timeout=10, headers=headers) as client:
        for _ in range(15):
            assert client.post("/login", data={"key": keyed_server.read_keys[1]}).status_code == 303
        # A right key forgets the wrong ones before it.
        for round_ in range(3):
            for guess in range(9):
                assert client.post("/login", data={"key": f"{round_}-{guess}"}).status_code == 401
            assert client.post("/login", data={"key": keyed_server.read_keys[0]}).status_code == 303


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_forgets_after_its_window_and_stays_bounded():
    clock = _Clock()
    throttle = LoginThrottle(3, 60.0, max_clients=100, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("a") == 0
        throttle.failed("a")
        clock.now += 10
    assert throttle.retry_after("a") == pytest.approx(30.0)  # oldest at 1000, now 1030
    assert throttle.retry_after("b") == 0
    clock.now = 1060.0
    assert throttle.retry_after("a") == 0  # the oldest failure is a minute old
    throttle.failed("a")  # 1010, 1020, 1060
    assert throttle.retry_after("a") == pytest.approx(10.0)
    throttle.succeeded("a")
    assert throttle.retry_after("a") == 0
    for n in range(1000):
        throttle.failed(f"client-{n}")
    assert len(throttle) == 100
    assert throttle.retry_after("client-999") == 0  # one failure of three
    with pytest.raises(ValueError, match="must be positive"):
        LoginThrottle(0)


# -- 3. signed session cookies that expire -----------------------------------------------


def _app(data_dir: Path, keys: tuple[str, ...] = KEYS, **settings: Any) -> FastAPI:
    config = Settings(data_dir=data_dir, read_keys=",".join(keys), **settings)
    app = create_app(config)
    mount_dashboard(app, mount_read_api(app, config))
    return app


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    with TestClient(_app(data_dir), follow_redirects=False) as test_client:
        yield test_client


def _auth(app: Any) -> ReadAuth:
    auth = app.state.read_auth
    assert isinstance(auth, ReadAuth)
    return auth


def test_the_session_secret_is_made_once_and_private(data_dir: Path, client: TestClient):
    path = data_dir / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    assert len(first.strip()) == 64
    assert session_secret(data_dir) == first.strip()
    # Another server of the same data dir (a restart, a worker) signs with it too.
    with TestClient(_app(data_dir), follow_redirects=False) as second:
        signed = client.post("/login", data={"key": KEYS[0]})
        assert signed.status_code == 303
        second.cookies.set(COOKIE_NAME, client.cookies[COOKIE_NAME])
        assert second.get("/v1/metrics").status_code == 200
    assert path.read_bytes() == first


def test_the_cookie_is_a_signed_subject_with_a_lifetime(client: TestClient):
    signed = client.post("/login", data={"key": KEYS[0], "next": "/"})
    assert signed.status_code == 303
    header = signed.headers["set-cookie"]
    assert "max-age=43200" in header.lower()
    value = client.cookies[COOKIE_NAME]
    assert KEYS[0] not in value
    assert _auth(client.app).identity_from_cookie(value) == Identity(key_subject(KEYS[0].encode()))
    assert client.get("/v1/metrics").status_code == 200
    assert client.get("/").status_code == 200


def test_an_expired_cookie_is_refused(client: TestClient):
    auth = _auth(client.app)
    who = auth.identify(KEYS[0])
    assert who is not None
    now = datetime.now(UTC)
    fresh = auth.cookie_for(who, issued_at=now - timedelta(hours=11))
    expired = auth.cookie_for(who, issued_at=now - timedelta(hours=12, minutes=1))
    future = auth.cookie_for(who, issued_at=now + timedelta(hours=1))
    client.cookies.set(COOKIE_NAME, fresh)
    assert client.get("/v1/metrics").status_code == 200
    assert client.get("/").status_code == 200
    for value in (expired, future):
        client.cookies.set(COOKIE_NAME, value)
        api = client.get("/v1/metrics")
        assert api.status_code == 401
        assert api.json()["error"]["code"] == "unauthorized"
        page = client.get("/content/book-1")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Fcontent%2Fbook-1"
        assert client.get("/dashboard/readiness").status_code == 401


def test_a_real_server_refuses_an_expired_cookie(keyed_server):
    # Cookies made with the server's own secret (its data dir's session.secret): the
    # fresh one is let in, so the expired one is refused for its age alone.
    key = keyed_server.read_keys[0]
    secret = session_secret(keyed_server.log.parent / "data")
    auth = ReadAuth([key.encode()], secret=secret)
    who = auth.identify(key)
    assert who is not None
    now = datetime.now(UTC)
    for age, api_status, page_status in (
        (timedelta(hours=1), 200, 200),
        (timedelta(hours=13), 401, 303),
    ):
        cookie = {COOKIE_NAME: auth.cookie_for(who, issued_at=now - age)}
        with httpx.Client(base_url=keyed_server.base, timeout=10, cookies=cookie) as client:
            assert client.get("/v1/metrics").status_code == api_status, age
            assert client.get("/").status_code == page_status, age
            assert client.get("/metrics").status_code == api_status, age


def test_the_lifetime_is_a_setting(data_dir: Path):
    with TestClient(_app(data_dir, session_max_age_s=600), follow_redirects=False) as client:
        signed = client.post("/login", data={"key": KEYS[1]})
        assert "max-age=600" in signed.headers["set-cookie"].lower()
        assert "10 minutes" in client.get("/login").text
        auth = _auth(client.app)
        who = auth.identify(KEYS[1])
        assert who is not None
        old = auth.cookie_for(who, issued_at=datetime.now(UTC) - timedelta(minutes=11))
        client.cookies.clear()  # only the old cookie: not also the one /login just set
        client.cookies.set(COOKIE_NAME, old)
        assert client.get("/v1/metrics").status_code == 401


def test_a_tampered_cookie_is_refused(client: TestClient, data_dir: Path):
    auth = _auth(client.app)
    who = auth.identify(KEYS[0])
    assert who is not None
    good = auth.cookie_for(who)
    payload, stamp, signature = good.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    other_secret = ReadAuth([KEYS[0].encode()], secret=b"x" * 64).cookie_for(who)
    other_subject = auth.cookie_for(Identity("key-0000000000000000"))
    forged = ".".join([payload.swapcase(), stamp, signature])
    for value in (f"{payload}.{stamp}.{flipped}", other_secret, other_subject, forged, "x.y.z"):
        client.cookies.set(COOKIE_NAME, value)
        assert client.get("/v1/metrics").status_code == 401, value
        assert client.get("/").status_code == 303
    client.cookies.set(COOKIE_NAME, good)
    assert client.get("/v1/metrics").status_code == 200


def test_a_revoked_key_loses_its_cookies(data_dir: Path):
    with TestClient(_app(data_dir), follow_redirects=False) as before:
        assert before.post("/login", data={"key": KEYS[0]}).status_code == 303
        cookie_0 = before.cookies[COOKIE_NAME]
        assert before.post("/login", data={"key": KEYS[1]}).status_code == 303
        cookie_1 = before.cookies[COOKIE_NAME]
    # KEYS[0] removed from the read keys (same data dir, so the same secret).
    with TestClient(_app(data_dir, keys=(KEYS[1],)), follow_redirects=False) as after:
        after.cookies.set(COOKIE_NAME, cookie_0)
        assert after.get("/v1/metrics").status_code == 401
        assert after.get("/").status_code == 303
        after.cookies.set(COOKIE_NAME, cookie_1)
        assert after.get("/v1/metrics").status_code == 200


def test_a_key_in_a_page_address_is_throttled_like_a_login(data_dir: Path):
    app = _app(data_dir, login_failures_per_minute=2)
    with TestClient(app, follow_redirects=False, client=("192.0.2.9", 1234)) as client:
        for _ in range(2):
            page = client.get("/?range=7d&key=nope")
            assert page.status_code == 303
            assert page.headers["location"] == "/login?next=%2F%3Frange%3D7d"
        throttled = client.get(f"/?range=7d&key={KEYS[0]}")
        assert throttled.status_code == 429
        assert 'value="/?range=7d"' in throttled.text
        assert client.get("/dashboard/readiness", params={"key": KEYS[0]}).status_code == 429
    with TestClient(app, follow_redirects=False, client=("192.0.2.10", 1234)) as client:
        signed = client.get(f"/?range=7d&key={KEYS[0]}")
        assert signed.status_code == 303
        assert signed.headers["location"] == "/?range=7d"


# -- 4. /metrics behind a key -------------------------------------------------------------


def test_metrics_need_a_read_key_when_keys_are_set(keyed_server):
    base, key = keyed_server.base, keyed_server.read_keys[0]
    refused = httpx.get(f"{base}/metrics", headers=_client(), timeout=10)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"]["code"] == "unauthorized"
    assert "playpulse_" not in refused.text
    as_write = {**_client(), "Authorization": f"Bearer {keyed_server.write_key}"}
    assert httpx.get(f"{base}/metrics", headers=as_write, timeout=10).status_code == 401
    for headers, url in (
        ({"Authorization": f"Bearer {key}"}, f"{base}/metrics"),
        ({}, f"{base}/metrics?key={key}"),
    ):
        ok = httpx.get(url, headers={**_client(), **headers}, timeout=10)
        assert ok.status_code == 200
        assert re.search(r"^playpulse_\w+", ok.text, re.MULTILINE)
    with httpx.Client(base_url=base, timeout=10, headers=_client()) as browser:
        assert browser.post("/login", data={"key": key}).status_code == 303
        assert browser.get("/metrics").status_code == 200


def test_metrics_stay_open_without_keys(demo_server):
    response = httpx.get(f"{demo_server}/metrics", timeout=10)
    assert response.status_code == 200
    assert "playpulse_" in response.text


def test_the_metrics_token_opens_metrics_only(data_dir: Path):
    token = "scrape-token-0123456789"
    for keys in ((), KEYS):
        app = _app(data_dir / str(len(keys)), keys=keys, metrics_token=token)
        with TestClient(app, follow_redirects=False) as client:
            assert client.get("/metrics").status_code == 401
            wrong = client.get("/metrics", headers={"Authorization": "Bearer not-it"})
            assert wrong.status_code == 401
            scraped = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert scraped.status_code == 200
            assert "playpulse_" in scraped.text
            as_token = client.get("/v1/metrics", headers={"Authorization": f"Bearer {token}"})
            assert as_token.status_code == (200 if not keys else 401)
            if keys:
                as_key = client.get("/metrics", headers={"Authorization": f"Bearer {KEYS[0]}"})
                assert as_key.status_code == 200


def test_the_collector_alone_can_guard_its_metrics(data_dir: Path):
    # `playpulse collect` has no read API: guard_metrics is all it needs.
    settings = Settings(data_dir=data_dir, read_keys=KEYS[0])
    app = create_app(settings)
    guard_metrics(app, settings)
    guard_metrics(app, settings)  # once only
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {KEYS[0]}"})
        assert ok.status_code == 200
        assert "playpulse_" in ok.text
        assert client.get("/healthz").status_code == 200
    # With the read API mounted after it, one guard asks the read API's resolver.
    app = create_app(settings)
    guard_metrics(app, settings)
    auth = _VendorKeys([KEYS[0].encode()])
    mount_read_api(app, settings, auth)
    assert sum(m.cls is MetricsGuard for m in app.user_middleware) == 1
    with TestClient(app) as client:
        vendor = client.get("/metrics", headers={"Authorization": "Bearer vendor:v1"})
        assert vendor.status_code == 401
        assert client.get("/v1/metrics", headers={"Authorization": "Bearer vendor:v1"}).is_success


# -- 5. one resolver: projects and scoped keys plug in ------------------------------------


class _VendorKeys(ReadAuth):
    """Keys of a marketplace: ``vendor:<id>`` reads as that vendor only."""

    def identify(self, key: str) -> Identity | None:
        if key.startswith("vendor:"):
            return Identity(f"v-{key[7:]}", project="shop", vendor_id=key[7:])
        return super().identify(key)

    def resolve_subject(self, subject: str) -> Identity | None:
        if subject.startswith("v-"):
            return Identity(subject, project="shop", vendor_id=subject[2:])
        return super().resolve_subject(subject)


def test_a_resolver_subclass_decides_everything(data_dir: Path):
    settings = Settings(data_dir=data_dir, read_keys=KEYS[0])
    app = FastAPI()
    auth = _VendorKeys([KEYS[0].encode()], secret=lambda: session_secret(data_dir))
    mount_dashboard(app, mount_read_api(app, settings, auth))

    @app.get("/whoami")
    async def whoami(who: Annotated[Identity, Depends(read_identity)]) -> dict[str, Any]:
        return {"subject": who.subject, "project": who.project, "vendor_id": who.vendor_id}

    @app.get("/metrics")
    async def metrics() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(app, follow_redirects=False) as client:
        as_vendor = {"Authorization": "Bearer vendor:v7"}
        assert client.get("/whoami", headers=as_vendor).json() == {
            "subject": "v-v7",
            "project": "shop",
            "vendor_id": "v7",
        }
        assert client.get("/v1/metrics", headers=as_vendor).status_code == 200
        # A vendor's key does not see the server's own metrics; a server key does.
        assert client.get("/metrics", headers=as_vendor).status_code == 401
        as_server = {"Authorization": f"Bearer {KEYS[0]}"}
        assert client.get("/metrics", headers=as_server).status_code == 200
        assert client.get("/whoami", headers=as_server).json()["subject"] == key_subject(
            KEYS[0].encode()
        )
        # The cookie carries the subject; the subclass resolves it on every request.
        assert client.post("/login", data={"key": "vendor:v9"}).status_code == 303
        assert client.get("/whoami").json()["vendor_id"] == "v9"
        assert client.get("/whoami", headers={"Authorization": "Bearer nope"}).status_code == 401
