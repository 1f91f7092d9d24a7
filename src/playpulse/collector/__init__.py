"""The HTTP collector: validates events, quarantines rejects, appends to the stream."""

from playpulse.collector.app import Collector, IngestResult, add_readiness_check, create_app

__all__ = ["Collector", "IngestResult", "add_readiness_check", "create_app"]
