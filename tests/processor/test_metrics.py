"""The processor's freshness histogram equals one observation per record, whether the
batch's records share a few append times (the SQLite stream) or each has its own
(Kafka, Kinesis)."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from playpulse.processor.metrics import FRESHNESS_BUCKETS, ProcessorMetrics
from playpulse.stream.base import Batch, Record

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _batch(ages_ms: list[int], partition: int = 0) -> Batch:
    # Equal ages share one datetime object, as records of one appended record batch do.
    times = {age: NOW - timedelta(milliseconds=age) for age in set(ages_ms)}
    records = [
        Record(partition, offset, "u", b"{}", times[age]) for offset, age in enumerate(ages_ms)
    ]
    return Batch(partition, records)


def _expected(ages_ms: list[int]) -> tuple[list[int], float]:
    counts = [0] * (len(FRESHNESS_BUCKETS) + 1)
    for age in ages_ms:
        counts[bisect.bisect_left(FRESHNESS_BUCKETS, age / 1000)] += 1
    return counts, sum(ages_ms) / 1000


@given(
    st.lists(st.sampled_from([0, 30, 100, 400, 1_500, 7_000, 70_000]), max_size=200),
    st.lists(st.integers(0, 4_000_000), max_size=40),
)
def test_freshness_counts_one_observation_per_record(shared: list[int], own: list[int]) -> None:
    metrics = ProcessorMetrics()
    metrics.committed([_batch(shared, 0), _batch(own, 1)], 0.01, now=NOW)
    counts, total = _expected(shared + own)
    assert metrics.freshness.counts == counts
    assert metrics.freshness.count == len(shared) + len(own)
    # Unix times near 1.8e9 s leave about 1e-6 s of float error per observation.
    assert metrics.freshness.sum == pytest.approx(total, abs=1e-5 * (1 + len(shared + own)))
    assert metrics.store_write.count == 1
