"""Fixtures for the read API tests: demo data near now and real `playpulse up` servers.

``livedata.py`` (shared with tests/dashboard) makes the data and runs the servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from playpulse.testing import load_module


def load_livedata() -> ModuleType:
    """``livedata.py`` as a module (``tests`` is not a package; importlib import mode)."""
    return load_module(Path(__file__).with_name("livedata.py"), "playpulse_tests_api_livedata")


@pytest.fixture(scope="session")
def livedata() -> ModuleType:
    """The shared helpers."""
    return load_livedata()


@pytest.fixture(scope="session")
def demo_server(livedata: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`playpulse up` (no keys) on three days of simulated traffic, enriched (the content
    catalog and its similar titles, as `playpulse enrich run` makes them); its base URL."""
    from playpulse.config import Settings
    from playpulse.enrich.catalog import refresh_seen
    from playpulse.enrich.similarity import refresh_similar

    root = tmp_path_factory.mktemp("api-demo")
    livedata.load_demo(root / "data", users=60, days=3.0)
    settings = Settings(data_dir=root / "data")
    refresh_seen(settings)
    refresh_similar(settings)
    with livedata.running_up(root / "data", log_path=root / "up.log") as base:
        yield base


@dataclass(frozen=True)
class KeyedServer:
    """A server with keys: its base URL, log file, read keys and write key."""

    base: str
    log: Path
    read_keys: tuple[str, ...] = ("read-key-one", "read-key-two")
    write_key: str = "write-key-for-tests"


@pytest.fixture(scope="session")
def keyed_server(
    livedata: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KeyedServer]:
    """`playpulse up` with two read keys and a write key on an empty data dir, logging
    every request (``--access-log``)."""
    root = tmp_path_factory.mktemp("api-keyed")
    log = root / "up.log"
    spec = KeyedServer("", log)
    env = {
        "PLAYPULSE_READ_KEYS": ",".join(spec.read_keys),
        "PLAYPULSE_WRITE_KEYS": spec.write_key,
    }
    with livedata.running_up(root / "data", env=env, args=("--access-log",), log_path=log) as base:
        yield KeyedServer(base, log)
