"""The content catalog's routes (``GET``, JSON; read key as for the rest of the read API).

- ``/v1/content/{content_id}``: a title's catalog entry
  (:func:`playpulse.enrich.catalog.content_entry`): what the events say (title, creator,
  album, duration, chapters, plays), the imported metadata (genres, release date, ISRC,
  MusicBrainz ids), ``tags`` (genre and mood with confidence, provider and model) and
  ``similar_content`` (listeners also played, with ``score``, ``shared_sessions`` and
  ``shared_listeners``); ``?similar=N`` (0-100, default 10) similar titles.
- ``/v1/content/{content_id}/similar``: only ``{"content_id", "similar_content"}``.

404 ``unknown_content`` when the catalog does not know the id (or no enrichment ran
yet); 503 ``data_unavailable`` when the catalog file cannot be read. Mounted by the
app with ``app.include_router(create_enrich_router(settings))`` after
:func:`playpulse.api.mount_read_api` (which registers the error handler and the
``read_auth`` that :func:`~playpulse.api.auth.read_identity` checks).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from playpulse.api.auth import ApiError, read_identity
from playpulse.api.router import ErrorResponse
from playpulse.api.vendor import forbid_vendor
from playpulse.config import Settings
from playpulse.enrich.catalog import EnrichError, content_entry

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "The content catalog does not know the id."},
    401: {"model": ErrorResponse, "description": "A read key is configured and missing."},
    403: {"model": ErrorResponse, "description": "A vendor's key: not shop data."},
    422: {"model": ErrorResponse, "description": "A parameter is wrong (the message says)."},
    503: {"model": ErrorResponse, "description": "The catalog cannot be read now."},
}


def create_enrich_router(settings: Settings) -> APIRouter:
    """The content routes (module docstring) over ``settings``' data dir."""

    def not_a_vendor(request: Request) -> None:
        forbid_vendor(request, "the content catalog")

    router = APIRouter(
        tags=["content"], dependencies=[Depends(read_identity), Depends(not_a_vendor)]
    )

    async def entry(content_id: str, similar: int) -> dict[str, Any]:
        try:
            found = await run_in_threadpool(content_entry, settings, content_id, similar=similar)
        except EnrichError as exc:
            raise ApiError(503, "data_unavailable", str(exc)) from None
        if found is None:
            raise ApiError(
                404, "unknown_content", f"the content catalog does not know {content_id!r}"
            )
        return found

    @router.get(
        "/v1/content/{content_id}",
        summary="A title's catalog entry",
        description="What the events say of the title, its imported metadata, its genre "
        "and mood tags and the titles listeners also played (`similar`, 0-100).",
        responses=_RESPONSES,
    )
    async def get_content(
        content_id: str, similar: Annotated[int, Query(ge=0, le=100)] = 10
    ) -> dict[str, Any]:
        return await entry(content_id, similar)

    @router.get(
        "/v1/content/{content_id}/similar",
        summary="Listeners also played",
        description="The titles most often played in the same listening sessions as this "
        "one (cosine over session co-occurrence), with the sessions and listeners shared.",
        responses=_RESPONSES,
    )
    async def get_similar(
        content_id: str, limit: Annotated[int, Query(ge=1, le=100)] = 10
    ) -> dict[str, Any]:
        found = await entry(content_id, limit)
        return {"content_id": content_id, "similar_content": found["similar_content"]}

    return router
