"""The HTTP collector: validates events, quarantines rejects, appends to the stream."""

from playpulse.collector.app import Collector, IngestResult, create_app

__all__ = ["Collector", "IngestResult", "create_app"]
