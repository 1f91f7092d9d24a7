"""Event stream backends behind one interface (see :mod:`playpulse.stream.base`)."""

from playpulse.stream.base import (
    Appended,
    Batch,
    Consumer,
    EventStream,
    PartitionInfo,
    Record,
    StreamHealth,
    partition_for_key,
    stream_health,
)
from playpulse.stream.memory import MemoryStream
from playpulse.stream.sqlite import SQLiteStream

__all__ = [
    "Appended",
    "Batch",
    "Consumer",
    "EventStream",
    "MemoryStream",
    "PartitionInfo",
    "Record",
    "SQLiteStream",
    "StreamHealth",
    "partition_for_key",
    "stream_health",
]
