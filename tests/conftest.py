"""Fixtures shared by more than one test folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from playpulse.stream.testing import unprivileged_dir


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder that the user ``nobody`` can reach (pytest's tmp_path is root's only), for
    read-only cases run with :func:`playpulse.stream.testing.run_unprivileged`."""
    with unprivileged_dir() as path:
        yield path
