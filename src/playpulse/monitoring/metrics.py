"""Prometheus metrics of the whole pipeline, read at scrape time from the data dir.

The collector's own counters live in :class:`playpulse.collector.metrics.CollectorMetrics`;
the processors run in child processes of ``playpulse up`` and report through their status
files (:func:`playpulse.service.read_processor_status`) and the real-time store's running
totals. :class:`PipelineMetrics` turns those into metrics on the same ``/metrics``
(:func:`add_pipeline_metrics`), so one scrape sees every stage. Every value is read from
files, so it is never summed over collector workers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from playpulse.config import Settings
from playpulse.errors import PlaypulseError
from playpulse.stream.base import EventStream

log = logging.getLogger("playpulse.monitoring")

#: The consumer group of the processors (``ProcessorOptions().consumer``).
PROCESSOR_GROUP = "processor"

#: Lake listings are cached this long (a listing is one ``scandir`` per folder, or one
#: S3 LIST, per table).
LAKE_CACHE_S = 30.0

#: Metric name -> (type, help) of every metric :class:`PipelineMetrics` exposes.
PIPELINE_METRICS: dict[str, tuple[str, str]] = {
    "playpulse_processor_up": (
        "gauge",
        "1 when the processor member runs and its process is alive, else 0.",
    ),
    "playpulse_processor_restarts_total": (
        "counter",
        "Times `playpulse up` started the processor member again after it died.",
    ),
    "playpulse_processor_events_processed_total": (
        "counter",
        "Records the processor member read since its process started (resets at restart).",
    ),
    "playpulse_processor_last_progress_timestamp_seconds": (
        "gauge",
        "Unix time of the member's last poll that committed a batch or found it caught up.",
    ),
    "playpulse_processing_freshness_seconds": (
        "histogram",
        "Seconds from an event's append to the stream to its batch's commit to the store "
        "(visible to queries), per event.",
    ),
    "playpulse_store_write_duration_seconds": (
        "histogram",
        "Seconds of one store transaction of a processor batch.",
    ),
    "playpulse_events_kept_total": (
        "counter",
        "Distinct events the processors kept (the store's running total).",
    ),
    "playpulse_events_duplicates_dropped_total": (
        "counter",
        "Records the processors dropped as copies of an event already kept.",
    ),
    "playpulse_events_late_total": (
        "counter",
        "Events kept but past the allowed lateness (they reach only the lake).",
    ),
    "playpulse_freshness_seconds": (
        "gauge",
        "Age of the oldest event acknowledged but not yet processed (0 when caught up).",
    ),
    "playpulse_stream_retention_seconds": (
        "gauge",
        "How long the stream keeps records (retention_days).",
    ),
    "playpulse_lake_files": ("gauge", "Live Parquet files per lake table."),
    "playpulse_lake_bytes": ("gauge", "Bytes of the live Parquet files per lake table."),
    "playpulse_data_dir_free_bytes": (
        "gauge",
        "Bytes free for this process on the data dir's file system.",
    ),
    "playpulse_data_dir_capacity_bytes": (
        "gauge",
        "Size of the data dir's file system in bytes.",
    ),
}


def _family(name: str, labels: list[str] | None = None) -> Any:
    kind, text = PIPELINE_METRICS[name]
    if kind == "histogram":
        return HistogramMetricFamily(name, text, labels=labels)
    if kind == "counter":
        return CounterMetricFamily(name.removesuffix("_total"), text, labels=labels)
    return GaugeMetricFamily(name, text, labels=labels)


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _buckets(value: object) -> tuple[list[tuple[str, float]], float] | None:
    # A histogram of :meth:`playpulse.processor.metrics.Histogram.as_json` from a status
    # file (another process wrote it): (cumulative buckets with +Inf, sum), or None.
    if not isinstance(value, dict):
        return None
    bounds, counts, total = value.get("bounds"), value.get("counts"), value.get("sum")
    if (
        not isinstance(bounds, list)
        or not isinstance(counts, list)
        or len(counts) != len(bounds) + 1
        or not isinstance(total, int | float)
        or not all(isinstance(x, int | float) for x in [*bounds, *counts])
    ):
        return None
    les = [f"{float(b):g}" for b in bounds] + ["+Inf"]
    return [(le, float(n)) for le, n in zip(les, counts, strict=True)], float(total)


class PipelineMetrics(Collector):
    """The processors', the store's, the lake's and the data dir's metrics, read at each
    scrape (names and help in :data:`PIPELINE_METRICS`; docs/monitoring.md lists them).

    - processors: from the status files of ``playpulse up``'s members (labelled
      ``member``): up (no series before a processor reported), restarts, records
      processed, last progress, and the histograms of freshness and store write latency
      the member measured (:class:`playpulse.processor.metrics.ProcessorMetrics`, key
      ``metrics`` of the status file; absent until a member reports them);
    - the store's running totals: events kept, duplicates dropped, late events;
    - ``playpulse_freshness_seconds``: now minus the append time of the oldest record
      the processors have not committed, over every partition (one read of one record
      per lagging partition); 0 when caught up;
    - the lake's live files and bytes per table (listed at most every
      :data:`LAKE_CACHE_S` seconds), the stream's retention, the data dir's free space.

    A part that cannot be read is left out of that scrape (logged at debug level),
    never fails it. ``clock`` returns the current UTC time (tests). ``stream``: an open
    stream to read (the collector's; left open), else one is opened per scrape.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime] | None = None,
        stream: EventStream | None = None,
    ) -> None:
        self.settings = settings
        self.stream = stream
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._lake: tuple[float, list[tuple[str, int, int]]] | None = None

    def describe(self) -> list[Metric]:
        """No metrics up front: reading the files at registration is not wanted."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metrics, read now."""
        yield from self._processors()
        yield from self._totals()
        yield from self._freshness()
        retention = _family("playpulse_stream_retention_seconds")
        retention.add_metric([], self.settings.retention.total_seconds())
        yield retention
        yield from self._lake_metrics()
        yield from self._disk()

    def _processors(self) -> Iterator[Metric]:
        from playpulse.service import (
            pid_alive,
            read_processor_status,
            status_count,
            status_members,
        )

        up = _family("playpulse_processor_up", ["member"])
        restarts = _family("playpulse_processor_restarts_total", ["member"])
        processed = _family("playpulse_processor_events_processed_total", ["member"])
        progress = _family("playpulse_processor_last_progress_timestamp_seconds", ["member"])
        histograms = {
            key: _family(name, ["member"])
            for key, name in (
                ("freshness", "playpulse_processing_freshness_seconds"),
                ("store_write", "playpulse_store_write_duration_seconds"),
            )
        }
        for member in status_members(self.settings):
            status = read_processor_status(self.settings, member)
            name = f"processor-{member}"
            if status is None:  # no processor has reported here: no series (unknown)
                continue
            running = status.get("state") in ("running", "reprocessing", "starting")
            up.add_metric([name], 1.0 if running and pid_alive(status.get("pid")) else 0.0)
            restarts.add_metric([name], status_count(status.get("restarts")))
            processed.add_metric([name], status_count(status.get("processed")))
            at = _timestamp(status.get("progress_at"))
            if at is not None:
                progress.add_metric([name], at)
            measured = status.get("metrics")
            for key, family in histograms.items():
                value = measured.get(key) if isinstance(measured, dict) else None
                buckets = _buckets(value)
                if buckets is not None:
                    family.add_metric([name], buckets[0], buckets[1])
        yield from (up, restarts, processed, progress, *histograms.values())

    def _totals(self) -> Iterator[Metric]:
        from playpulse.status import processing_totals

        try:
            totals = processing_totals(self.settings)
        except (PlaypulseError, OSError) as exc:
            log.debug("store totals unavailable: %s", exc)
            return
        for name, key in (
            ("playpulse_events_kept_total", "events"),
            ("playpulse_events_duplicates_dropped_total", "duplicates"),
            ("playpulse_events_late_total", "late"),
        ):
            family = _family(name)
            family.add_metric([], totals.get(key, 0))
            yield family

    def _freshness(self) -> Iterator[Metric]:
        from playpulse.stream.factory import open_stream

        stream = self.stream
        if stream is None:
            if self.settings.stream_url is None and not self.settings.stream_path.exists():
                return
            try:
                stream = open_stream(self.settings)
            except (PlaypulseError, OSError) as exc:
                log.debug("stream unavailable for freshness: %s", exc)
                return
        try:
            oldest = oldest_waiting(stream, PROCESSOR_GROUP)
        except (PlaypulseError, OSError) as exc:
            log.debug("freshness unavailable: %s", exc)
            return
        finally:
            if stream is not self.stream:
                stream.close()
        family = _family("playpulse_freshness_seconds")
        age = 0.0 if oldest is None else (self._clock() - oldest).total_seconds()
        family.add_metric([], max(0.0, age))
        yield family

    def _lake_metrics(self) -> Iterator[Metric]:
        with self._lock:
            cached = self._lake
            if cached is None or time.monotonic() - cached[0] > LAKE_CACHE_S:
                try:
                    cached = (time.monotonic(), self._list_lake())
                except (PlaypulseError, OSError) as exc:
                    log.debug("lake unavailable for metrics: %s", exc)
                    return
                self._lake = cached
        files = _family("playpulse_lake_files", ["table"])
        size = _family("playpulse_lake_bytes", ["table"])
        for table, n, total in cached[1]:
            files.add_metric([table], n)
            size.add_metric([table], total)
        yield files
        yield size

    def _list_lake(self) -> list[tuple[str, int, int]]:
        from playpulse.lake.factory import open_existing_lake
        from playpulse.lake.schema import SCHEMAS

        lake = open_existing_lake(self.settings)
        out = []
        for table in SCHEMAS:
            stats = [] if lake is None else lake.live_stats(table)
            out.append((table, len(stats), sum(s[2] for s in stats)))
        return out

    def _disk(self) -> Iterator[Metric]:
        try:
            fs = os.statvfs(self.settings.data_dir)
        except OSError as exc:
            log.debug("data dir unavailable for metrics: %s", exc)
            return
        free = _family("playpulse_data_dir_free_bytes")
        free.add_metric([], fs.f_bavail * fs.f_frsize)
        capacity = _family("playpulse_data_dir_capacity_bytes")
        capacity.add_metric([], fs.f_blocks * fs.f_frsize)
        yield free
        yield capacity


def oldest_waiting(stream: EventStream, group: str) -> datetime | None:
    """The append time (UTC) of the oldest record of ``stream`` that ``group`` has not
    committed, over every partition, or ``None`` when the group is caught up everywhere
    (or has never committed and the stream is empty). Reads at most one record per
    partition with lag. Raises :class:`~playpulse.errors.StreamError` when the stream
    cannot be read."""
    from playpulse.errors import OffsetOutOfRangeError

    lag = stream.lag(group)
    oldest: datetime | None = None
    for info in stream.partitions():
        if lag.get(info.partition, 0) <= 0 or info.end_offset <= info.start_offset:
            continue
        committed = stream.committed(group, info.partition)
        offset = info.start_offset if committed is None else max(committed, info.start_offset)
        if offset >= info.end_offset:
            continue
        try:
            records = stream.read(info.partition, offset, 1)
        except OffsetOutOfRangeError:  # retention deleted it meanwhile: next scrape
            continue
        if records and (oldest is None or records[0].appended_at < oldest):
            oldest = records[0].appended_at
    return oldest


def add_pipeline_metrics(app: FastAPI, settings: Settings) -> PipelineMetrics:
    """Expose :class:`PipelineMetrics` of ``settings.data_dir`` on ``app``'s ``/metrics``
    (an app made by :func:`playpulse.collector.app.create_app`; it reads the collector's
    stream); once per app (a second call returns the first one's). Returns it."""
    existing = getattr(app.state, "pipeline_metrics", None)
    if isinstance(existing, PipelineMetrics):
        return existing
    collector = app.state.collector
    pipeline = PipelineMetrics(settings, stream=collector.stream)
    collector.metrics.add_collector(pipeline)
    app.state.pipeline_metrics = pipeline
    return pipeline
