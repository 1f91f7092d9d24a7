"""The real-time store the settings name (``store_url``)."""

from __future__ import annotations

from playpulse.config import Settings
from playpulse.store.base import RealtimeStore
from playpulse.store.sqlite import SQLiteStore


def open_store(settings: Settings) -> RealtimeStore:
    """The real-time store of ``settings``: ``store_url`` (``sqlite:///path``), else the
    embedded SQLite file in ``settings.data_dir``, created if missing. The caller
    closes it. Raises :class:`~playpulse.errors.StoreError` when it cannot be opened."""
    return SQLiteStore(settings.store_path)


def store_exists(settings: Settings) -> bool:
    """Whether the store of ``settings`` holds anything yet (its file exists): readers
    check this to answer "nothing yet" without creating a store."""
    return settings.store_path.exists()
