"""Fixtures for tests/projects: an ASGI app served by uvicorn on 127.0.0.1, and Debian's
Chromium (the dashboard tests' ``browser`` fixture)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from playpulse.testing import load_module, serve_app

_dashboard = load_module(
    Path(__file__).resolve().parents[1] / "dashboard" / "conftest.py",
    "playpulse_tests_dashboard_conftest_for_projects",
)
browser = _dashboard.browser


@pytest.fixture(scope="session")
def serve() -> Callable[[Any], contextlib.AbstractContextManager[str]]:
    """``with serve(app) as url``: ``app`` on uvicorn at ``url`` (127.0.0.1, a free port)
    until the block ends (lifespan on; stops within 20 s)."""
    return serve_app
