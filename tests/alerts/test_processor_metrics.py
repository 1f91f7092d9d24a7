"""A processor's freshness and store write histograms, measured by a real processor and
exposed by PipelineMetrics from its status file."""

from __future__ import annotations

import os
import random

from prometheus_client import CollectorRegistry, generate_latest

from playpulse.alerts.samples import parse_exposition
from playpulse.config import Settings
from playpulse.monitoring.metrics import PipelineMetrics
from playpulse.processor.metrics import FRESHNESS_BUCKETS, Histogram
from playpulse.service import close_processor, open_processor, write_processor_status
from playpulse.stream.factory import open_stream


def test_observe_ages_counts_as_one_observation_each() -> None:
    rng = random.Random(5)
    now = 1_800_000_000.0
    born = sorted(
        now - rng.choice([0.0, 0.05, 1.0, 4000.0, -1.0]) * rng.random() for _ in range(500)
    )
    born += [now - b for b in FRESHNESS_BUCKETS]  # exactly on the bounds: le is inclusive
    born.sort()
    fast, plain = Histogram(FRESHNESS_BUCKETS), Histogram(FRESHNESS_BUCKETS)
    fast.observe_ages(born, now)
    for t in born:
        plain.observe(now - t)
    assert fast.counts == plain.counts
    assert fast.count == plain.count == len(born)
    assert abs(fast.sum - plain.sum) < 1e-3
    assert fast.as_json()["counts"][-1] == len(born)


def test_a_real_processor_measures_and_pipeline_metrics_expose(tmp_path: object) -> None:
    settings = Settings(data_dir=tmp_path, num_partitions=2)  # type: ignore[arg-type]
    stream = open_stream(settings)
    try:
        stream.append([(f"user-{i}", b'{"not": "an event"}') for i in range(40)])
    finally:
        stream.close()
    processor = open_processor(settings)
    try:
        stats = processor.process_available()
        measured = processor.metrics
    finally:
        close_processor(processor)
    assert stats.read == 40
    assert measured.freshness.count == 40  # every record committed, quarantined or not
    assert measured.store_write.count >= 1
    assert measured.freshness.sum > 0
    status = {"state": "running", "pid": os.getpid(), "restarts": 0}
    write_processor_status(settings, {**status, "metrics": measured.as_json()})
    registry = CollectorRegistry()
    registry.register(PipelineMetrics(settings))
    samples = parse_exposition(generate_latest(registry).decode())
    count = {
        labels["member"]: v for labels, v in samples["playpulse_processing_freshness_seconds_count"]
    }
    assert count == {"processor-0": 40.0}
    buckets = samples["playpulse_store_write_duration_seconds_bucket"]
    assert [v for labels, v in buckets if labels["le"] == "+Inf"] == [
        float(measured.store_write.count)
    ]
    # A status file written by another hand: a malformed histogram is left out.
    write_processor_status(settings, {**status, "metrics": {"freshness": {"bounds": "x"}}})
    samples = parse_exposition(generate_latest(registry).decode())
    assert "playpulse_processing_freshness_seconds_count" not in samples
