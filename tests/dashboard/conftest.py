"""Fixtures for the dashboard tests: Debian's Chromium driven by Playwright for Python
against real `playpulse up` servers on 127.0.0.1.

The tests are skipped (with the reason) only when ``/usr/bin/chromium`` or the
``playwright`` package is missing; CI installs both (``apt-get install chromium``,
``pip install playwright``; never ``playwright install``). Screenshots go to
``$PLAYPULSE_TEST_ARTIFACTS`` or ``artifacts/dashboard/`` (git-ignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from playpulse.testing import load_module

REPO = Path(__file__).resolve().parents[2]

LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


def load_livedata() -> ModuleType:
    """tests/api/livedata.py as a module (``tests`` is not a package)."""
    return load_module(REPO / "tests" / "api" / "livedata.py", "playpulse_tests_api_livedata")


@pytest.fixture(scope="session")
def livedata() -> ModuleType:
    """The helpers shared with tests/api."""
    return load_livedata()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: ``$PLAYPULSE_TEST_ARTIFACTS`` or ``artifacts/dashboard``."""
    path = Path(os.environ.get("PLAYPULSE_TEST_ARTIFACTS") or REPO / "artifacts" / "dashboard")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Server:
    """A running `playpulse up`: its base URL and data dir."""

    base: str
    data_dir: Path


@pytest.fixture(scope="session")
def demo(
    browser: Any, livedata: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`playpulse up` on four days of simulated traffic ending an hour ago (the
    dashboard's default range, the last 7 days, covers it)."""
    root = tmp_path_factory.mktemp("dashboard-demo")
    livedata.load_demo(root / "data", users=120, days=4.0)
    with livedata.running_up(root / "data", log_path=root / "up.log") as base:
        yield Server(base, root / "data")


@pytest.fixture(scope="session")
def keyed_empty(
    browser: Any, livedata: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`playpulse up` with a read key (``dashboard-key``) on an empty data dir."""
    root = tmp_path_factory.mktemp("dashboard-empty")
    env = {"PLAYPULSE_READ_KEYS": "dashboard-key"}
    with livedata.running_up(root / "data", env=env, log_path=root / "up.log") as base:
        yield Server(base, root / "data")


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    """A factory of pages in fresh browser contexts (``new_page(viewport)``), each
    recording the URLs it requested (``page.requested``) and its script errors
    (``page.errors``); closed after the test."""
    contexts: list[Any] = []

    def make(viewport: dict[str, int] = LAPTOP) -> Any:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.requested = []
        page.errors = []
        page.on("request", lambda request: page.requested.append(request.url))
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on(
            "console",
            lambda message: page.errors.append(message.text) if message.type == "error" else None,
        )
        return page

    yield make
    for context in contexts:
        context.close()
