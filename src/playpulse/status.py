"""What is in a data dir: stream size per partition, quarantine, consumer lag."""

from __future__ import annotations

from typing import Any

from playpulse.config import Settings
from playpulse.errors import ConfigError
from playpulse.quarantine.store import QuarantineStore
from playpulse.stream.factory import open_stream


def data_dir_status(settings: Settings) -> dict[str, Any]:
    """The state of ``settings.data_dir`` as JSON-ready values::

        {"data_dir": str, "events": int, "quarantined": int,
         "quarantined_by_reason": {reason: int},
         "partitions": [{"partition": int, "newest_offset": int | None, "events": int}],
         "consumer_lag": {group: {"total": int, "partitions": {str(partition): int}}}}

    ``events`` counts records retained in the stream; ``quarantined`` counts entries
    not yet replayed. Raises :class:`~playpulse.errors.ConfigError` if the data dir holds
    no stream.
    """
    if not settings.stream_path.exists():
        raise ConfigError(
            f"no playpulse data in {settings.data_dir}: start `playpulse collect` there "
            "or pass --data-dir"
        )
    stream = open_stream(settings)
    quarantine = QuarantineStore(settings.quarantine_path)
    try:
        partitions = stream.partitions()
        lag = {}
        for group in stream.groups():
            per_partition = stream.lag(group)
            lag[group] = {
                "total": sum(per_partition.values()),
                "partitions": {str(p): n for p, n in per_partition.items()},
            }
        return {
            "data_dir": str(settings.data_dir),
            "events": sum(p.count for p in partitions),
            "quarantined": quarantine.count(),
            "quarantined_by_reason": quarantine.counts_by_reason(),
            "partitions": [
                {"partition": p.partition, "newest_offset": p.newest_offset, "events": p.count}
                for p in partitions
            ],
            "consumer_lag": lag,
        }
    finally:
        stream.close()
        quarantine.close()
