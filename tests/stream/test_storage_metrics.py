"""The Prometheus metrics read from the stream and the quarantine at each scrape."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from playpulse.quarantine import QuarantineStore, Rejection
from playpulse.status import StorageMetrics
from playpulse.stream import SQLiteStream


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_lost_records_lag_and_quarantine_drops_are_exposed(tmp_path):
    stream = SQLiteStream(tmp_path / "stream.db", num_partitions=2, max_bytes=0)
    quarantine = QuarantineStore(tmp_path / "quarantine.db", max_bytes=1024 * 1024)
    try:
        stream.append([(f"user-{i}", b"v") for i in range(9)])
        stream.commit("processor", 0, 0)
        stream.commit("processor", 1, 0)
        stream.enforce_retention(datetime.now(UTC))
        stream.append([("user-1", b"new")])
        now = datetime.now(UTC)
        for _ in range(20):
            quarantine.add([Rejection(b"x" * 100_000, "malformed_body", [], now)])
        registry = CollectorRegistry()
        registry.register(StorageMetrics(stream, quarantine))

        got = samples(registry)

        lost = {k: v for k, v in got.items() if k[0] == "playpulse_stream_lost_records_total"}
        assert sum(lost.values()) == 9
        assert len(lost) == 2  # one per partition of the group
        lag = sum(v for k, v in got.items() if k[0] == "playpulse_stream_lag_records")
        assert lag == 9 + 1
        assert got[("playpulse_stream_max_bytes", ())] == 0
        assert got[("playpulse_stream_bytes", ())] == stream.stored_bytes() > 0
        stats = quarantine.stats()
        assert got[("playpulse_quarantine_entries", ())] == stats.entries
        assert got[("playpulse_quarantine_bytes", ())] == stats.stored_bytes
        assert got[("playpulse_quarantine_max_bytes", ())] == 1024 * 1024
        key = ("playpulse_quarantine_dropped_total", (("reason", "malformed_body"),))
        assert got[key] == stats.dropped > 0
    finally:
        stream.close()
        quarantine.close()


def test_an_unreadable_stream_leaves_its_metrics_out_but_the_scrape_works(tmp_path):
    stream = SQLiteStream(tmp_path / "data" / "stream.db", num_partitions=2)
    stream.close()  # a closed connection: every read raises
    quarantine = QuarantineStore(tmp_path / "quarantine.db")
    try:
        registry = CollectorRegistry()
        registry.register(StorageMetrics(stream, quarantine))
        shutil.rmtree(tmp_path / "data")

        got = samples(registry)

        assert not any(name.startswith("playpulse_stream_") for name, _ in got)
        assert got[("playpulse_quarantine_entries", ())] == 0
    finally:
        quarantine.close()
