"""What is in a data dir: stream size per partition, quarantine, consumer lag and loss."""

from __future__ import annotations

from typing import Any

from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.quarantine.store import open_quarantine
from playpulse.stream.base import stream_health
from playpulse.stream.factory import open_stream


def data_dir_status(settings: Settings) -> dict[str, Any]:
    """The state of ``settings.data_dir`` as JSON-ready values::

        {"data_dir": str, "events": int, "stream_bytes": int,
         "stream_max_bytes": int | None,
         "quarantined": int, "quarantined_by_reason": {reason: int},
         "quarantine": {"entries": int, "quarantined": int, "stored_bytes": int,
                        "max_bytes": int, "retention_days": float, "file_bytes": int,
                        "dropped": int, "dropped_by_reason": {reason: int},
                        "dropped_by_cause": {"max_bytes" | "retention": int}},
         "partitions": [{"partition": int, "newest_offset": int | None, "events": int}],
         "consumer_lag": {group: {"total": int, "partitions": {str(partition): int}}},
         "lost_records": {group: {"total": int, "partitions": {str(partition): int}}}}

    ``events`` counts records retained in the stream, ``stream_bytes`` their bytes
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
    if not settings.stream_path.exists():
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
                entry["total"] += n
                entry["partitions"][str(g.partition)] = n
        stats = quarantine.stats()
        return {
            "data_dir": str(settings.data_dir),
            "events": sum(p.count for p in partitions),
            "stream_bytes": health.stored_bytes,
            "stream_max_bytes": health.max_bytes,
            "quarantined": stats.quarantined,
            "quarantined_by_reason": quarantine.counts_by_reason(),
            "quarantine": stats.as_json(),
            "partitions": [
                {"partition": p.partition, "newest_offset": p.newest_offset, "events": p.count}
                for p in partitions
            ],
            "consumer_lag": lag,
            "lost_records": lost,
        }
    finally:
        stream.close()
        quarantine.close()
