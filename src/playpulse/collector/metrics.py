"""Prometheus metrics of the collector, in a registry of its own per app.

With several worker processes (``--workers``), ``PROMETHEUS_MULTIPROC_DIR`` is set and
each process writes its values there; :meth:`CollectorMetrics.exposition` then sums
them over every worker (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class CollectorMetrics:
    """The collector's counters and histograms (names follow Prometheus conventions).

    - ``playpulse_events_accepted_total``: events durably appended to the stream.
    - ``playpulse_events_rejected_total{reason}``: events quarantined, by reason code.
    - ``playpulse_requests_total{status}``: POST /v1/events requests by HTTP status.
    - ``playpulse_request_errors_total{code}``: POST /v1/events answers other than 200, by
      the ``error.code`` of the answer (``malformed_body``, ``body_too_large``,
      ``request_timeout``, ``stream_unavailable``, ...).
    - ``playpulse_request_duration_seconds{status}``: POST /v1/events latency.
    - ``playpulse_stream_append_duration_seconds``: time of one stream append.
    - ``playpulse_pending_events``: events waiting for the stream right now.
    - ``playpulse_stream_append_failed_records_total``: records an append reported not
      stored (a partition without a leader, a throttled shard, a failed write), counted
      at every attempt: a record that failed twice counts 2.
    - ``playpulse_stream_append_retries_total``: appends that sent again records an
      earlier append of the same request did not store.
    - ``playpulse_events_not_stored_total``: valid events still not stored after the
      retries, answered 503 (the client sends them again).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._shared: list[Any] = []
        self.accepted = Counter(
            "playpulse_events_accepted",
            "Events durably appended to the stream.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "playpulse_events_rejected",
            "Events rejected and quarantined, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.requests = Counter(
            "playpulse_requests",
            "POST /v1/events requests by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.request_errors = Counter(
            "playpulse_request_errors",
            "POST /v1/events answers other than 200, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "playpulse_request_duration_seconds",
            "POST /v1/events latency from first byte read to response, by HTTP status.",
            ["status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.append_duration = Histogram(
            "playpulse_stream_append_duration_seconds",
            "Duration of one durable append to the event stream.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.append_failed = Counter(
            "playpulse_stream_append_failed_records",
            "Records an append to the event stream reported not stored, at every attempt.",
            registry=self.registry,
        )
        self.append_retries = Counter(
            "playpulse_stream_append_retries",
            "Appends that sent again only the records an earlier append did not store.",
            registry=self.registry,
        )
        self.not_stored = Counter(
            "playpulse_events_not_stored",
            "Valid events not stored after the retries: their request was answered 503.",
            registry=self.registry,
        )
        self.pending = Gauge(
            "playpulse_pending_events",
            "Events waiting for the stream across in-flight requests.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def add_collector(self, collector: Any) -> None:
        """Also expose ``collector`` (a prometheus_client custom collector whose values
        are read from shared files at scrape time, such as
        :class:`playpulse.status.StorageMetrics`): such values are never summed over
        workers."""
        self.registry.register(collector)
        self._shared.append(collector)

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format (summed over workers when several)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            for collector in self._shared:
                registry.register(collector)
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
