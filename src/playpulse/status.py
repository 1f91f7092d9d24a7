"""What is in a data dir: distinct events in the lake, records in the stream per
partition, quarantine, consumer lag and loss.

Events and stream records differ: the stream keeps every append, so importing a file
again appends its records again (and retention deletes old records), while the lake holds
each event once (the processor drops the copies as duplicates)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from playpulse.config import Settings
from playpulse.errors import ConfigError, PlaypulseError
from playpulse.lake.factory import open_existing_lake
from playpulse.quarantine.store import QuarantineStore, open_quarantine
from playpulse.store.factory import open_store, store_exists
from playpulse.stream.base import EventStream, stream_health
from playpulse.stream.factory import open_stream

log = logging.getLogger("playpulse.status")


def data_dir_status(settings: Settings) -> dict[str, Any]:
    """The state of ``settings.data_dir`` as JSON-ready values::

        {"data_dir": str, "events_in_lake": int, "lake_files_unreadable": int,
         "first_event_at": str | None, "last_event_at": str | None,
         "duplicates_dropped": int | None,
         "late_events": int | None, "stream_records": int | None, "stream_bytes": int,
         "stream_max_bytes": int | None,
         "quarantined": int, "quarantined_by_reason": {reason: int},
         "quarantine": {"entries": int, "quarantined": int, "stored_bytes": int,
                        "max_bytes": int, "retention_days": float, "file_bytes": int,
                        "dropped": int, "dropped_by_reason": {reason: int},
                        "dropped_by_cause": {"max_bytes" | "retention": int}},
         "partitions": [{"partition": int, "newest_offset": int | None, "records": int | None}],
         "consumer_lag": {group: {"total": int, "partitions": {str(partition): int}}},
         "lost_records": {group: {"total": int, "partitions": {str(partition): int}}}}

    ``events_in_lake`` counts the distinct events the processor kept, each once (from
    the lake files' footers; late ones included, ``lake_files_unreadable`` counts those
    whose footer could not be read); ``first_event_at``/``last_event_at`` the span of
    their ``occurred_at`` (ISO 8601 UTC, late events included; ``None`` without events);
    ``duplicates_dropped`` and ``late_events`` are the
    processor's counts of records dropped as copies of an event already kept and of
    events kept but past the allowed lateness (``None`` before anything was processed).
    ``stream_records`` counts records retained in the stream, every append (a file
    imported twice appends its events twice), ``stream_bytes`` their bytes
    (bounded by ``stream_max_bytes``, ``None`` when unbounded); ``quarantined`` counts
    entries not yet replayed; ``quarantine.dropped`` counts entries dropped (over the cap
    or past retention) before they were replayed. ``consumer_lag`` counts records a
    group has not committed, including those deleted before it did; ``lost_records``
    counts, per group, records deleted (the stream over ``stream_max_bytes``) before the
    group committed them, since the stream was created. Raises
    :class:`~playpulse.errors.ConfigError` if the data dir holds no stream,
    :class:`~playpulse.errors.StreamError` or :class:`~playpulse.errors.QuarantineError`
    if the files cannot be opened.
    """
    if settings.stream_url is None and not settings.stream_path.exists():
        raise ConfigError(
            f"no playpulse data in {settings.data_dir}: start `playpulse collect` there "
            "or pass --data-dir"
        )
    stream = open_stream(settings)
    try:
        quarantine = open_quarantine(settings)
    except BaseException:
        stream.close()
        raise
    try:
        partitions = stream.partitions()
        health = stream_health(stream)
        lag: dict[str, dict[str, Any]] = {}
        lost: dict[str, dict[str, Any]] = {}
        for g in health.groups:
            for out, n in ((lag, g.lag), (lost, g.lost)):
                entry = out.setdefault(g.group, {"total": 0, "partitions": {}})
                # None (the broker's retention does not say): the total is None too.
                entry["total"] = None if n is None or entry["total"] is None else entry["total"] + n
                entry["partitions"][str(g.partition)] = n
        stats = quarantine.stats()
        in_lake, unreadable, span = lake_event_summary(settings)
        totals = processing_totals(settings)
        return {
            "data_dir": str(settings.data_dir),
            "events_in_lake": in_lake,
            "lake_files_unreadable": unreadable,
            "first_event_at": None if span is None else span[0].isoformat(),
            "last_event_at": None if span is None else span[1].isoformat(),
            "duplicates_dropped": totals.get("duplicates"),
            "late_events": totals.get("late"),
            "stream_records": health.records,
            "stream_bytes": health.stored_bytes,
            "stream_max_bytes": health.max_bytes,
            "quarantined": stats.quarantined,
            "quarantined_by_reason": quarantine.counts_by_reason(),
            "quarantine": stats.as_json(),
            "partitions": [
                {
                    "partition": p.partition,
                    "newest_offset": p.newest_offset,
                    "records": p.count if stream.dense_positions else None,
                }
                for p in partitions
            ],
            "consumer_lag": lag,
            "lost_records": lost,
        }
    finally:
        stream.close()
        quarantine.close()


def lake_event_count(settings: Settings) -> tuple[int, int]:
    """``(events, unreadable)``: the rows of the lake's live ``events`` files (each event
    the processor kept, once), read from the Parquet footers, and the number of files
    whose footer could not be read (left out; queries set them aside). Writes nothing."""
    events, unreadable, _ = lake_event_summary(settings)
    return events, unreadable


def lake_event_summary(settings: Settings) -> tuple[int, int, tuple[datetime, datetime] | None]:
    """``(events, unreadable, span)``: as :func:`lake_event_count`, plus the span of the
    events' ``occurred_at`` (UTC-aware, first and newest, late events included) from the
    footers' column statistics; ``None`` without events (or statistics)."""
    lake = open_existing_lake(settings)
    if lake is None:
        return 0, 0, None
    events = unreadable = 0
    first: datetime | None = None
    last: datetime | None = None
    for path in lake.live_files("events"):
        try:
            meta = lake.read_metadata(path)
        except FileNotFoundError:
            continue  # compacted away since listed
        except (pa.ArrowException, OSError):
            unreadable += 1
            continue
        events += meta.num_rows
        column = meta.schema.to_arrow_schema().get_field_index("occurred_at")
        for group in range(meta.num_row_groups) if column >= 0 else ():
            stats = meta.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                continue
            low, high = _utc(stats.min), _utc(stats.max)
            first = low if first is None else min(first, low)
            last = high if last is None else max(last, high)
    span = None if first is None or last is None else (first, last)
    return events, unreadable, span


def _utc(value: object) -> datetime:
    """A footer statistic of a timestamp column as a UTC-aware datetime."""
    if not isinstance(value, datetime):
        raise ConfigError(f"unexpected occurred_at statistic {value!r} in the lake")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def processing_totals(settings: Settings) -> dict[str, int]:
    """The processor's running totals in the real-time store: ``events`` kept,
    ``duplicates`` dropped, ``late`` (kept, counted by no metric); ``{}`` when there is
    no store yet."""
    if not store_exists(settings):
        return {}
    store = open_store(settings)
    try:
        totals = store.item("PIPELINE", "TOTAL")
    finally:
        store.close()
    if not totals:
        return {}
    # Counts that never grew are not stored (increments of 0 are skipped): they are 0.
    return {key: int(totals.get(key, 0)) for key in ("events", "duplicates", "late")}


class StorageMetrics(Collector):
    """Prometheus metrics read from the stream and the quarantine at each scrape.

    Register it in the registry that ``/metrics`` exposes (``registry.register(
    StorageMetrics(stream, quarantine))``; in multiprocess mode, in the registry built
    for each scrape): the values live in the files, so every process reports the same
    and they must not be summed over workers. Metrics:

    - ``playpulse_stream_lost_records_total{group, partition}``: records deleted (the
      stream over ``stream_max_bytes``) before the group committed them (a counter kept
      in the stream file);
    - ``playpulse_stream_lag_records{group, partition}``: records the group has not
      committed;
    - ``playpulse_stream_bytes`` and ``playpulse_stream_max_bytes`` (absent when
      unbounded): bytes of records retained and their limit;
    - ``playpulse_quarantine_entries``, ``playpulse_quarantine_bytes``,
      ``playpulse_quarantine_max_bytes``: entries stored, their bytes and the cap;
    - ``playpulse_quarantine_dropped_total{reason}``: entries dropped (over the cap or
      past retention) before they were replayed.

    A stream or quarantine that cannot be read leaves its metrics out of that scrape
    (logged), never fails it. ``quarantine`` may be ``None``.
    """

    def __init__(self, stream: EventStream, quarantine: QuarantineStore | None = None) -> None:
        self.stream = stream
        self.quarantine = quarantine

    def describe(self) -> list[Metric]:
        """No metrics up front: reading the files at registration is not wanted."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metrics, read now (a few small queries; no scan of records or entries)."""
        try:
            health = stream_health(self.stream)
        except PlaypulseError as exc:
            log.warning("stream metrics unavailable: %s", exc)
        else:
            lost = CounterMetricFamily(
                "playpulse_stream_lost_records",
                "Records retention deleted (stream over its size limit) before the consumer "
                "group committed them.",
                labels=["group", "partition"],
            )
            lag = GaugeMetricFamily(
                "playpulse_stream_lag_records",
                "Records the consumer group has not committed.",
                labels=["group", "partition"],
            )
            for g in health.groups:
                if g.lost is not None:
                    lost.add_metric([g.group, str(g.partition)], g.lost)
                lag.add_metric([g.group, str(g.partition)], g.lag)
            yield lost
            yield lag
            if health.stored_bytes is not None:  # a broker's retention: it does not say
                yield GaugeMetricFamily(
                    "playpulse_stream_bytes",
                    "Bytes of records retained.",
                    value=health.stored_bytes,
                )
            if health.max_bytes is not None:
                yield GaugeMetricFamily(
                    "playpulse_stream_max_bytes",
                    "Bytes of records past which retention deletes uncommitted records.",
                    value=health.max_bytes,
                )
        if self.quarantine is None:
            return
        try:
            stats = self.quarantine.stats()
        except PlaypulseError as exc:
            log.warning("quarantine metrics unavailable: %s", exc)
            return
        yield GaugeMetricFamily(
            "playpulse_quarantine_entries", "Entries in the quarantine.", value=stats.entries
        )
        yield GaugeMetricFamily(
            "playpulse_quarantine_bytes",
            "Bytes of the quarantine's entries, as its cap counts them.",
            value=stats.stored_bytes,
        )
        yield GaugeMetricFamily(
            "playpulse_quarantine_max_bytes",
            "The quarantine's cap on the bytes of its entries.",
            value=stats.max_bytes,
        )
        dropped = CounterMetricFamily(
            "playpulse_quarantine_dropped",
            "Quarantine entries dropped (over the cap or past retention) before replay.",
            labels=["reason"],
        )
        for reason, n in stats.dropped_by_reason.items():
            dropped.add_metric([reason], n)
        yield dropped
