"""Fixtures for the query tests: the data set of ``dataset.py``, processed once per module."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from playpulse.config import Settings
from playpulse.testing import load_module


def load_dataset() -> ModuleType:
    """``dataset.py`` as a module (``tests`` is not a package; importlib import mode)."""
    return load_module(Path(__file__).with_name("dataset.py"), "playpulse_tests_query_dataset")


@pytest.fixture(scope="module")
def dataset() -> ModuleType:
    """``dataset.py`` (events, helpers ``at``/``ev``, ``ingest``, ``settings_for``)."""
    return load_dataset()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The data set processed once per test module; the settings of its data dir."""
    settings, stats = load_dataset().build(tmp_path_factory.mktemp("lake"))
    assert stats is not None
    # 44 events: one duplicate dropped, one late (kept in the lake, counted nowhere).
    assert (stats.read, stats.processed, stats.duplicates, stats.late) == (44, 43, 1, 1)
    return settings


@pytest.fixture
def ingest_into() -> Callable[[Path, Iterable[Any]], Settings]:
    """For small one-off data dirs: ``ingest_into(path, rows) -> settings``."""

    def run(path: Path, rows: Iterable[Any]) -> Settings:
        settings, _ = load_dataset().build(path, rows)
        return settings

    return run
