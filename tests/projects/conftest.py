"""Fixtures for tests/projects: an ASGI app served by uvicorn on 127.0.0.1, and Debian's
Chromium (the dashboard tests' ``browser`` fixture)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from playpulse.testing import load_module

_dashboard = load_module(
    Path(__file__).resolve().parents[1] / "dashboard" / "conftest.py",
    "playpulse_tests_dashboard_conftest_for_projects",
)
browser = _dashboard.browser


@contextlib.contextmanager
def _serve(app: Any) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the server exited"
        assert time.monotonic() < deadline, "the server did not start within 30 s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@pytest.fixture(scope="session")
def serve() -> Callable[[Any], contextlib.AbstractContextManager[str]]:
    """``with serve(app) as url``: ``app`` on uvicorn at ``url`` (127.0.0.1, a free port)
    until the block ends (lifespan on; stops within 20 s)."""
    return _serve
