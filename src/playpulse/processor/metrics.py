"""What a processor measures about itself: end-to-end freshness (a record's append to the
stream -> its batch committed to the store, where queries see it) and store write
latency, as histograms of plain numbers.

The processor runs in a child process of ``playpulse up``; it has no ``/metrics`` of its
own. :meth:`ProcessorMetrics.as_json` is what its status file carries (key
``metrics``), and :class:`playpulse.monitoring.PipelineMetrics` exposes it as Prometheus
histograms (``playpulse_processing_freshness_seconds``,
``playpulse_store_write_duration_seconds``). The counts start at 0 with each process
(Prometheus treats that as a counter reset).
"""

from __future__ import annotations

import bisect
import math
import operator
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from playpulse.stream.base import Batch

_appended_at = operator.attrgetter("appended_at")

#: Upper bounds (seconds) of the freshness histogram's buckets.
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)

#: Upper bounds (seconds) of the store write latency histogram's buckets.
STORE_WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Observations counted per bucket (``bounds`` ascending, plus +Inf), with their
    sum and count, like a Prometheus histogram."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        """Count ``n`` observations of ``value``."""
        self.counts[bisect.bisect_left(self.bounds, value)] += n
        self.sum += value * n
        self.count += n

    def observe_ages(self, born: Sequence[float], now: float) -> None:
        """Count the ages ``now - t`` of the times ``born`` (Unix seconds, ascending):
        one binary search per bucket, not one per observation."""
        if not born:
            return
        below = 0
        for i, bound in enumerate(self.bounds):
            # Ages <= bound are the times >= now - bound.
            upto = len(born) - bisect.bisect_left(born, now - bound)
            self.counts[i] += upto - below
            below = upto
        self.counts[-1] += len(born) - below
        self.sum += len(born) * now - math.fsum(born)
        self.count += len(born)

    def as_json(self) -> dict[str, Any]:
        """``{"bounds": [...], "counts": [... cumulative, +Inf last], "sum", "count"}``."""
        cumulative = []
        running = 0
        for n in self.counts:
            running += n
            cumulative.append(running)
        return {
            "bounds": list(self.bounds),
            "counts": cumulative,
            "sum": self.sum,
            "count": self.count,
        }


class ProcessorMetrics:
    """A processor's histograms: ``freshness`` (seconds from a record's append to its
    batch's commit, one observation per record) and ``store_write`` (seconds of one
    store transaction)."""

    def __init__(self) -> None:
        self.freshness = Histogram(FRESHNESS_BUCKETS)
        self.store_write = Histogram(STORE_WRITE_BUCKETS)

    def committed(
        self, batches: Sequence[Batch], write_s: float, now: datetime | None = None
    ) -> None:
        """Record a store commit of ``batches`` that took ``write_s`` seconds, visible
        at ``now`` (default: the clock)."""
        self.store_write.observe(write_s)
        at = (now or datetime.now(UTC)).timestamp()
        for batch in batches:
            # Records appended together share one appended_at: counted per distinct time
            # (a C loop), one observation each, when they are few (the SQLite stream's
            # record batches); else sorted for observe_ages' binary searches (linear
            # timsort: records come in offset order).
            per_time = Counter(map(_appended_at, batch.records))
            if len(per_time) * 8 <= len(batch.records):
                for appended, n in per_time.items():
                    self.freshness.observe(at - appended.timestamp(), n)
            else:
                born = sorted(r.appended_at.timestamp() for r in batch.records)
                self.freshness.observe_ages(born, at)

    def as_json(self) -> dict[str, Any]:
        """The histograms as JSON-ready values (for the status file)."""
        return {"freshness": self.freshness.as_json(), "store_write": self.store_write.as_json()}
