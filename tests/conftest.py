"""Fixtures shared by more than one test folder."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from playpulse.stream.testing import unprivileged_dir


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder that the user ``nobody`` can reach (pytest's tmp_path is root's only), for
    read-only cases run with :func:`playpulse.stream.testing.run_unprivileged`."""
    with unprivileged_dir() as path:
        yield path


def _load_moto_server() -> ModuleType:
    """``moto_server.py`` as module ``moto_server`` (tests are not a package)."""
    if "moto_server" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "moto_server", Path(__file__).with_name("moto_server.py")
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["moto_server"] = module
        spec.loader.exec_module(module)
    return sys.modules["moto_server"]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Any]:
    """A moto server process on 127.0.0.1 for the whole session (one per xdist worker):
    ``.endpoint``, ``.env`` (the AWS variables that lead clients to it), ``.unique(prefix)``
    for resource names of a test's own. See ``tests/moto_server.py``."""
    server = _load_moto_server().MotoServer()
    yield server
    server.close()


@pytest.fixture
def aws_env(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The moto server, with this test's environment pointing every AWS client at it."""
    for name, value in moto_server.env.items():
        monkeypatch.setenv(name, value)
    return moto_server
