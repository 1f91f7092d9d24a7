"""The browser SDK ``playpulse.js``, shipped in this package and served by ``playpulse up``.

:data:`SDK_PATH` is the file (plain JavaScript, no build step, no dependencies);
:func:`mount_sdk` adds ``GET /sdk/playpulse.js`` to an app, so pages load the SDK from
the playpulse they send to (no CDN: it works offline). docs/sdk-js.md documents the SDK.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response

__all__ = ["SDK_PATH", "SDK_URL_PATH", "mount_sdk", "sdk_source"]

#: The SDK's file in the installed package.
SDK_PATH = Path(__file__).resolve().parent / "playpulse.js"
#: Where :func:`mount_sdk` serves it.
SDK_URL_PATH = "/sdk/playpulse.js"
#: Browsers and proxies may reuse the file this long (seconds) before asking again with
#: ``If-None-Match``; an upgrade of playpulse changes the ETag.
SDK_MAX_AGE_S = 3600
_MEDIA_TYPE = "text/javascript; charset=utf-8"


@lru_cache(maxsize=1)
def sdk_source() -> tuple[bytes, str]:
    """The SDK's bytes and their strong ETag (``"sha256-<first 32 hex digits>"``).

    Raises :class:`FileNotFoundError` when the package was installed without the file.
    """
    data = SDK_PATH.read_bytes()
    return data, f'"sha256-{hashlib.sha256(data).hexdigest()[:32]}"'


def mount_sdk(app: FastAPI) -> None:
    """Serve the SDK at ``GET /sdk/playpulse.js`` (and ``HEAD``) on ``app``.

    The answer is ``text/javascript; charset=utf-8`` with ``Cache-Control: public,
    max-age=3600``, an ETag (``If-None-Match`` with it gets a 304 without a body),
    ``X-Content-Type-Options: nosniff`` and ``Access-Control-Allow-Origin: *`` (the file
    is public; any page may load it, also as a module or with ``integrity``). No key is
    needed. The file is read once, at the first request.
    """

    @app.api_route(
        SDK_URL_PATH,
        methods=["GET", "HEAD"],
        summary="The browser SDK playpulse.js",
        include_in_schema=False,
    )
    async def playpulse_js(request: Request) -> Response:
        data, etag = sdk_source()
        headers = {
            "Cache-Control": f"public, max-age={SDK_MAX_AGE_S}",
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
            "Access-Control-Allow-Origin": "*",
        }
        given = request.headers.get("if-none-match", "")
        if etag in {tag.strip().removeprefix("W/") for tag in given.split(",")}:
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else data
        response = Response(body, media_type=_MEDIA_TYPE, headers=headers)
        if request.method == "HEAD":
            response.headers["content-length"] = str(len(data))
        return response
