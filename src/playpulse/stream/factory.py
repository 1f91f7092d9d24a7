"""Open the event stream that the settings name."""

from __future__ import annotations

from playpulse.config import Settings
from playpulse.stream.base import EventStream
from playpulse.stream.sqlite import SQLiteStream


def open_stream(settings: Settings) -> EventStream:
    """The embedded SQLite stream in ``settings.data_dir`` (the only backend so far).

    Raises :class:`~playpulse.errors.ConfigError` if the existing stream file has a
    different number of partitions than ``settings.num_partitions``, and
    :class:`~playpulse.errors.StreamError` if it cannot be opened.
    """
    return SQLiteStream(
        settings.stream_path,
        num_partitions=settings.num_partitions,
        retention=settings.retention,
        synchronous=settings.stream_synchronous,
        max_bytes=settings.stream_max_bytes,
    )
