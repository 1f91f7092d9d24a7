"""playpulse: real-time engagement analytics for playback and interaction events."""

__version__ = "0.1.0"


def connect(data_dir: str | None = None) -> object:
    """A DuckDB connection with the ``events``, ``plays`` and ``sessions`` views over the
    data dir (default ``PLAYPULSE_DATA_DIR`` or ``./.playpulse``), for notebooks."""
    from playpulse.config import Settings
    from playpulse.query.engine import connect as _connect

    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    return _connect(settings)
