"""The dashboard that ``playpulse up`` serves at ``/``: static HTML, CSS and JavaScript.

Pages: ``/`` (overview) and ``/content/{content_id}`` (one title), both the same
``index.html``, which reads the read API (:mod:`playpulse.api`) and the live tiles'
server-sent events. ``/dashboard/readiness`` gives the page what ``/readyz`` knows (a
failing processor, an unreadable store...) for its banner, always as a 200. Assets,
including the vendored Apache ECharts, are served from the package at ``/assets/``:
nothing is loaded from another site, so the dashboard works offline (the
Content-Security-Policy allows only this origin).

With read keys configured, pages need the dashboard's session cookie: ``/login`` asks
for a read key and sets it; ``?key=<key>`` on any page does the same once (then
redirects to the address without it); ``/logout`` clears it. The cookie is signed and
expires (:mod:`playpulse.api.auth`); an expired, tampered or revoked one leads back to
``/login``. Wrong keys are throttled per client: past the limit ``/login`` answers 429
with ``Retry-After``. Assets stay open: they hold no data.
"""

from __future__ import annotations

import html
import re
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from playpulse.api.auth import (
    COOKIE_NAME,
    Identity,
    ReadAuth,
    TooManyAttempts,
    client_of,
)
from playpulse.collector.app import readiness_report

__all__ = ["STATIC_DIR", "create_dashboard_router", "mount_dashboard", "readiness"]

#: The dashboard's static files (``index.html``, ``app.js``, ``app.css``, ``vendor/``).
STATIC_DIR = Path(str(files("playpulse.dashboard").joinpath("static")))

#: Only this origin: no CDN, no inline scripts. Inline styles are needed by ECharts'
#: tooltips.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
_MAX_FORM_BYTES = 8 * 1024


def _page(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def _safe_next(value: str | None) -> str:
    # Only a path on this site: never another origin ("//host", "https://...").
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _without_key(request: Request) -> str:
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "key"]
    return request.url.path + (f"?{urlencode(rest)}" if rest else "")


def _set_cookie(response: Response, request: Request, auth: ReadAuth, who: Identity) -> None:
    response.set_cookie(
        COOKIE_NAME,
        auth.cookie_for(who),
        max_age=auth.session_max_age_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


_SLOT = re.compile(r"\{\{(\w+)\}\}")


def _fill(template: str, values: dict[str, str]) -> str:
    # One pass, so a value can never bring in another slot.
    return _SLOT.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _login_page(
    auth: ReadAuth,
    next_path: str,
    error: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    body = _fill(
        _page("login.html"),
        {
            "next": html.escape(next_path, quote=True),
            "error": f'<p class="login-error">{html.escape(error)}</p>' if error else "",
            "session": html.escape(_duration(auth.session_max_age_s)),
        },
    )
    return HTMLResponse(body, status, headers={**_HEADERS, **(headers or {})})


def _throttled(auth: ReadAuth, next_path: str, exc: TooManyAttempts) -> HTMLResponse:
    seconds = (exc.headers or {}).get("Retry-After", "60")
    message = f"Too many wrong keys from this address: try again in {seconds} s."
    return _login_page(auth, next_path, message, 429, exc.headers)


async def readiness(app: FastAPI) -> dict[str, Any]:
    """The readiness checks of ``app`` (those of ``GET /readyz``), run now: see
    :func:`playpulse.collector.app.readiness_report`."""
    return await readiness_report(app)


def create_dashboard_router(auth: ReadAuth) -> APIRouter:
    """The dashboard's pages and sign-in routes, guarded by ``auth``."""
    router = APIRouter(include_in_schema=False)

    def page(request: Request) -> Response:
        if not auth.open:
            target = _without_key(request)
            key = request.query_params.get("key")
            try:
                if key:  # sign in once, then the address without the key
                    who = auth.check_key(key, client_of(request))
                    if who is not None:
                        response: Response = RedirectResponse(target, 303)
                        _set_cookie(response, request, auth, who)
                        return response
                    allowed = False
                else:
                    allowed = auth.identify_request(request) is not None
            except TooManyAttempts as exc:
                return _throttled(auth, _safe_next(target), exc)
            if not allowed:
                return RedirectResponse(f"/login?{urlencode({'next': target})}", 303)
        body = _fill(_page("index.html"), {"auth": "open" if auth.open else "keys"})
        return HTMLResponse(body, headers=_HEADERS)

    @router.get("/")
    async def overview(request: Request) -> Response:
        return page(request)

    @router.get("/content/{content_id:path}")
    async def content(request: Request, content_id: str) -> Response:
        return page(request)

    @router.get("/dashboard/readiness")
    async def dashboard_readiness(request: Request) -> Response:
        # /readyz's answer as a 200 (a 503 would be a console error on every page),
        # for readers only: problems name paths and errors.
        try:
            allowed = auth.allowed(request)
        except TooManyAttempts as exc:
            return exc.response()
        if not allowed:
            return JSONResponse({"error": {"message": "a read key is required"}}, 401)
        report = await readiness(request.app)
        # The alerts firing now (#15), when the app evaluates alert rules (playpulse up).
        firing = getattr(request.app.state, "firing_alerts", None)
        report["alerts"] = await run_in_threadpool(firing) if firing is not None else []
        return JSONResponse(report, headers={"Cache-Control": "no-store"})

    @router.get("/login")
    async def login_form(request: Request) -> Response:
        next_path = _safe_next(request.query_params.get("next"))
        if auth.open:
            return RedirectResponse(next_path, 303)
        return _login_page(auth, next_path)

    @router.post("/login")
    async def login(request: Request) -> Response:
        body = await request.body()
        if len(body) > _MAX_FORM_BYTES:
            return _login_page(auth, "/", "The form is too large.", 413)
        form = parse_qs(body.decode("utf-8", "replace"))
        next_path = _safe_next((form.get("next") or ["/"])[0])
        key = (form.get("key") or [""])[0].strip()
        if auth.open:
            return RedirectResponse(next_path, 303)
        try:
            who = auth.check_key(key, client_of(request))
        except TooManyAttempts as exc:
            return _throttled(auth, next_path, exc)
        if who is None:
            return _login_page(auth, next_path, "That is not a read key of this server.", 401)
        response = RedirectResponse(next_path, 303)
        _set_cookie(response, request, auth, who)
        return response

    @router.get("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    return router


def mount_dashboard(app: FastAPI, auth: ReadAuth) -> None:
    """Serve the dashboard on ``app``: pages at ``/`` and ``/content/...``, assets at
    ``/assets``, sign-in at ``/login``."""
    app.include_router(create_dashboard_router(auth))
    app.mount("/assets", StaticFiles(directory=STATIC_DIR), name="dashboard-assets")
