"""Real-time store backends behind one interface (see :mod:`playpulse.store.base`)."""

from playpulse.store.base import RealtimeStore, StoreBatch
from playpulse.store.memory import MemoryStore
from playpulse.store.sqlite import SQLiteStore

__all__ = ["MemoryStore", "RealtimeStore", "SQLiteStore", "StoreBatch"]
