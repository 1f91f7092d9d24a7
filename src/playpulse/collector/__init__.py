"""The HTTP collector: validates events, quarantines rejects, appends to the stream."""

from playpulse.collector.app import (
    Collector,
    Degraded,
    EventsNotStoredError,
    IngestResult,
    add_readiness_check,
    create_app,
    readiness_report,
)

__all__ = [
    "Collector",
    "Degraded",
    "EventsNotStoredError",
    "IngestResult",
    "add_readiness_check",
    "create_app",
    "readiness_report",
]
