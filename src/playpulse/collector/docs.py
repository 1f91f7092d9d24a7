"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) that work offline.

FastAPI's own pages load Swagger UI, ReDoc, a favicon and Google Fonts from CDNs, so
they are blank without internet access (and leak every docs visit to those sites).
:func:`mount_docs` serves the same pages with the assets vendored in this package
(``docs_static/``: ``swagger-ui-dist`` and ``redoc`` from npm, unmodified; versions,
hashes and licenses in ``docs_static/VENDORED.md``) under :data:`ASSETS_PATH`. Nothing on
either page is requested from another origin: Swagger UI's online validator badge is
off, and the pages' Content-Security-Policy (:data:`DOCS_CSP`) allows this origin only,
which keeps ReDoc's "API docs by Redocly" logo (an image on a CDN, not optional) from
loading (the link stays). The pages describe the API and hold no data: they stay open,
as ``/openapi.json``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: The vendored files (``swagger-ui/``, ``redoc/``, ``favicon.svg``).
DOCS_STATIC = Path(__file__).with_name("docs_static")
#: Where :func:`mount_docs` serves :data:`DOCS_STATIC`.
ASSETS_PATH = "/docs-assets"
#: Only this origin (FastAPI's pages start the viewers with an inline script; ReDoc runs
#: its search in a worker made from a blob).
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def _own_origin_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


def mount_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at ``docs_url`` and ReDoc at ``redoc_url`` of ``app`` from the
    vendored assets, reading ``app.openapi_url``. Create ``app`` with ``docs_url=None``
    and ``redoc_url=None`` (FastAPI's CDN pages would take the paths first)."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return _own_origin_only(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{request.app.title} - API docs",
                swagger_js_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS_PATH}/favicon.svg",
                # No badge from validator.swagger.io: nothing leaves this server.
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return _own_origin_only(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{request.app.title} - API reference",
                redoc_js_url=f"{ASSETS_PATH}/redoc/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS_PATH}/favicon.svg",
                with_google_fonts=False,
            )
        )

    app.mount(ASSETS_PATH, StaticFiles(directory=DOCS_STATIC), name="docs-assets")
