"""Fixtures for tests/projects: an ASGI app served by uvicorn on 127.0.0.1 (Debian's
Chromium is the root conftest's ``browser``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from playpulse.testing import serve_app


@pytest.fixture(scope="session")
def serve() -> Callable[[Any], contextlib.AbstractContextManager[str]]:
    """``with serve(app) as url``: ``app`` on uvicorn at ``url`` (127.0.0.1, a free port)
    until the block ends (lifespan on; stops within 20 s)."""
    return serve_app
