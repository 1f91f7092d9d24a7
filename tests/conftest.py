"""Fixtures shared by more than one test folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from playpulse.stream.testing import unprivileged_dir
from playpulse.testing import load_module

#: Debian's Chromium (Playwright cannot download browsers here) and how tests launch it.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, launched by Playwright (skips when either is missing).

    One per worker for every folder: a second Playwright (sync API) in the same process
    refuses to start inside the first one's event loop."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: pip install playwright")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder that the user ``nobody`` can reach (pytest's tmp_path is root's only), for
    read-only cases run with :func:`playpulse.stream.testing.run_unprivileged`."""
    with unprivileged_dir() as path:
        yield path


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Any]:
    """A moto server process on 127.0.0.1 for the whole session (one per xdist worker):
    ``.endpoint``, ``.env`` (the AWS variables that lead clients to it), ``.unique(prefix)``
    for resource names of a test's own. See ``tests/moto_server.py``."""
    module = load_module(Path(__file__).with_name("moto_server.py"), "moto_server")
    server = module.MotoServer()
    yield server
    server.close()


@pytest.fixture
def aws_env(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The moto server, with this test's environment pointing every AWS client at it."""
    for name, value in moto_server.env.items():
        monkeypatch.setenv(name, value)
    return moto_server
