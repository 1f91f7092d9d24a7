"""Fixtures for the real-time store tests.

``store_factory`` is parametrized over every store backend, so each test that uses it
runs once per backend (the contract in ``test_contract.py``). To put a new backend under
the contract, add one entry to ``BACKENDS``: a function that builds a fresh, empty store
from a directory it may use.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from playpulse.store import MemoryStore, RealtimeStore, SQLiteStore


class StoreFactory(Protocol):
    """Builds a fresh, empty store of one backend; the fixture closes it afterwards."""

    def __call__(self) -> RealtimeStore: ...


_Builder = Callable[[pytest.FixtureRequest, Path], RealtimeStore]


def _sqlite(request: pytest.FixtureRequest, directory: Path) -> RealtimeStore:
    # A real file (not ":memory:"): the WAL, locking and reopening paths are the real ones.
    return SQLiteStore(directory / "store.db")


def _memory(request: pytest.FixtureRequest, directory: Path) -> RealtimeStore:
    return MemoryStore()


def _dynamodb(request: pytest.FixtureRequest, directory: Path) -> RealtimeStore:
    # A fresh table of its own on the session's moto server (shared by a worker's tests).
    from playpulse.store.dynamodb import DynamoDBStore

    server: Any = request.getfixturevalue("moto_server")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    return DynamoDBStore(server.unique("store"), create=True)


BACKENDS: dict[str, _Builder] = {
    "sqlite": _sqlite,
    "memory": _memory,
    "dynamodb": _dynamodb,
}

# Contract cases a backend cannot keep by design (backend, parameter value) -> why.
NOT_APPLICABLE: dict[tuple[str, str], str] = {}


@pytest.fixture(params=sorted(BACKENDS))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of fresh stores of one backend (the test runs once per backend).

    Every call builds a new, independent store (for SQLite a new file under
    ``tmp_path``); all of them are closed when the test ends.
    """
    callspec = getattr(request.node, "callspec", None)
    for (backend, case), reason in NOT_APPLICABLE.items():
        if backend == request.param and callspec is not None and case in callspec.params.values():
            pytest.skip(reason)
    build = BACKENDS[request.param]
    counter = itertools.count()
    made: list[RealtimeStore] = []

    def factory() -> RealtimeStore:
        directory = tmp_path / f"store-{next(counter)}"
        directory.mkdir()
        store = build(request, directory)
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> RealtimeStore:
    """A fresh, empty store of each backend."""
    return store_factory()
