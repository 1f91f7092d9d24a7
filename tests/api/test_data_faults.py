"""The read API when the stored data cannot be read: a 503 in the API's error shape that
says what failed, never a bare 500 (issue #10)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from playpulse.api import mount_read_api
from playpulse.config import Settings

READS = ("/v1/metrics/overview", "/v1/metrics/live", "/v1/sessions/histogram", "/v1/live")


@pytest.fixture
def read_api_on(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    """The read API (as `playpulse up` mounts it) on an empty data dir in ``tmp_path``."""
    data = tmp_path / "data"
    data.mkdir()
    app = FastAPI()
    mount_read_api(app, Settings(data_dir=data))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, data


def test_reads_of_an_empty_data_dir_answer_200(read_api_on: tuple[TestClient, Path]) -> None:
    client, _ = read_api_on
    for path in READS:
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize("path", READS)
def test_a_corrupt_store_is_a_503_saying_so(
    read_api_on: tuple[TestClient, Path], path: str
) -> None:
    client, data = read_api_on
    (data / "store.db").write_bytes(b"not a database, " * 512)
    response = client.get(path)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "data_unavailable"
    assert "cannot be read now" in error["message"]
    assert "file is not a database" in error["message"]
    if path != "/v1/live":  # takes no parameters
        # A wrong parameter is still the client's fault, whatever the data.
        assert client.get(path, params={"limit": "²"}).status_code == 422
