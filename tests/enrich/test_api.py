"""GET /v1/content/{id}: a title's catalog entry with listeners also played, behind the
read key."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from playpulse.api import mount_read_api
from playpulse.api.enrich import create_enrich_router
from playpulse.config import Settings
from playpulse.enrich.catalog import refresh_seen
from playpulse.enrich.similarity import refresh_similar


def client_for(settings: Settings) -> TestClient:
    app = FastAPI()
    mount_read_api(app, settings)
    app.include_router(create_enrich_router(settings))
    return TestClient(app)


def test_content_page_data(listened: Settings) -> None:
    settings = listened.model_copy(update={"read_keys": [SecretStr("reader-key")]})
    client = client_for(settings)
    assert client.get("/v1/content/spotify:track:a").status_code == 401
    auth = {"Authorization": "Bearer reader-key"}
    # Before any enrichment run the catalog does not know the title.
    missing = client.get("/v1/content/spotify:track:a", headers=auth)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_content"

    refresh_seen(settings)
    refresh_similar(settings)
    answer = client.get("/v1/content/spotify:track:a?similar=2", headers=auth)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["title"], body["creator"], body["album"], body["plays"]) == (
        "Song a",
        "Band",
        "Album a",
        9,
    )
    assert [s["content_id"] for s in body["similar_content"]] == [
        "spotify:track:b",
        "spotify:track:c",
    ]
    assert body["similar_content"][0]["shared_listeners"] == 3
    assert body["tags"] == {}

    similar = client.get("/v1/content/spotify:track:d/similar", headers=auth).json()
    assert similar == {
        "content_id": "spotify:track:d",
        "similar_content": [
            {
                "content_id": "spotify:track:a",
                "title": "Song a",
                "creator": "Band",
                "score": round(3 / (9 * 3) ** 0.5, 4),
                "shared_sessions": 3,
                "shared_listeners": 3,
            }
        ],
    }
    assert client.get("/v1/content/nope", headers=auth).status_code == 404
    assert client.get("/v1/content/x?similar=500", headers=auth).status_code == 422


def test_unreadable_catalog_is_503(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    path = settings.data_dir / "enrich" / "catalog.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database" * 100)
    answer = client_for(settings).get("/v1/content/x")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "data_unavailable"
