"""Enrichment runs beside processing without changing it: the processor reads, keeps
and commits the same events at every poll, and the data dir answers the same, with the
enrichment runner working in the background on the same data dir (its tagging provider
failing all along)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from playpulse.config import Settings
from playpulse.enrich.catalog import open_catalog
from playpulse.enrich.providers import AnthropicTagger
from playpulse.enrich.runner import EnrichmentRunner
from playpulse.events.codec import validate_event
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor.pipeline import Processor, ProcessorOptions
from playpulse.quarantine.store import QuarantineStore
from playpulse.query.catalog import CATALOG
from playpulse.query.engine import events_connection
from playpulse.sources.simulator import SimulationConfig, simulate
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.memory import MemoryStream
from playpulse.testing import catalog_answers, free_port

#: The enrichment's queries (registered by tests/enrich/conftest.py, with their tables
#: loaded in every engine cache as in the service).
QUERIES = frozenset({"content_catalog", "similar_content", "genre_metrics", "mood_metrics"})
POLLS_BEFORE_WAITING = 3


def records() -> list[tuple[str, bytes]]:
    config = SimulationConfig(seed=11, users=40, tracks=60, audiobooks=10, max_events=2_500)
    out = []
    for sent in simulate(config):
        accepted = validate_event(json.dumps(sent.payload), sent.received_at)
        out.append((accepted.event.actor_id, accepted.payload))
    return out


def lake_events(settings: Settings) -> int:
    con = events_connection(settings)
    try:
        row = con.execute("SELECT count(*) FROM events").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def process(root: Path, data: list[tuple[str, bytes]], runner: bool) -> dict[str, Any]:
    """Process ``data`` poll by poll (200 records a poll); with ``runner``, an enrichment
    runner goes round after round meanwhile. Returns each poll's counts, the events the
    lake holds after each poll, the final answers and the runner."""
    settings = Settings(data_dir=root, stream_url=None, store_url=None, lake_url=None)
    root.mkdir(parents=True)
    stream = MemoryStream(num_partitions=4)
    for i in range(0, len(data), 500):
        stream.append(data[i : i + 500])
    store = SQLiteStore(settings.store_path)
    quarantine = QuarantineStore(settings.quarantine_path)
    enrichment = None
    if runner:
        # Nothing listens on this port: every tagging request fails (connection refused).
        failing = AnthropicTagger(
            api_key="sk-test",
            base_url=f"http://127.0.0.1:{free_port()}",
            attempts=2,
            max_wait_s=0.01,
            timeout_s=2.0,
        )
        enrichment = EnrichmentRunner(settings, provider=failing, interval_s=0.0, titles_per_s=50)
    polls: list[tuple[int, ...]] = []
    visible: list[int] = []
    try:
        processor = Processor(
            stream,
            store,
            LakeWriter(settings.lake_path, SCHEMAS),
            quarantine,
            ProcessorOptions(batch_size=50, max_poll_records=200),
        )
        if enrichment is not None:
            enrichment.start()
        while True:
            if enrichment is not None and len(polls) == POLLS_BEFORE_WAITING:
                # Go on only once the runner finished a round over part of the data.
                for _ in range(600):
                    if enrichment.rounds >= 1:
                        break
                    enrichment.wait(0.1)
            stats = processor.process_available(max_batches=1)
            if stats.read == 0:
                break
            polls.append(dataclasses.astuple(stats))
            visible.append(lake_events(settings))
        rounds_while_processing = enrichment.rounds if enrichment else 0
        processor.close()
    finally:
        if enrichment is not None:
            enrichment.stop()
        store.close()
        quarantine.close()
    answers = {k: v for k, v in catalog_answers(settings).items() if k not in QUERIES}
    return {
        "polls": polls,
        "visible": visible,
        "answers": answers,
        "runner": enrichment,
        "rounds": rounds_while_processing,
        "settings": settings,
    }


@pytest.mark.slow  # 10-25 s: the data processed twice, the runner busy beside it
def test_processing_unchanged_with_enrichment_running(tmp_path: Path) -> None:
    data = records()
    alone = process(tmp_path / "alone", data, runner=False)
    beside = process(tmp_path / "beside", data, runner=True)

    assert len(alone["polls"]) > POLLS_BEFORE_WAITING + 2
    # Throughput in counts: every poll read, kept, dropped and finished the same.
    assert beside["polls"] == alone["polls"]
    # Freshness in counts: after every poll the lake holds the same events.
    assert beside["visible"] == alone["visible"]
    assert sum(p[1] for p in alone["polls"]) == alone["visible"][-1] > 2_000
    # The data dir answers every other catalog query the same.
    assert beside["answers"] == alone["answers"]

    runner: EnrichmentRunner = beside["runner"]
    assert beside["rounds"] >= 1
    # The runner worked on the data; every tagging request failed without stopping it.
    assert runner.job_errors == {}
    assert runner.tags_failed > 0
    with open_catalog(beside["settings"], readonly=True) as db:
        assert db.execute("SELECT count(*) FROM seen").fetchone()[0] > 0
        assert db.execute("SELECT count(*) FROM tags").fetchone()[0] == 0
        jobs = {r["name"] for r in db.execute("SELECT name FROM jobs")}
    assert jobs == {"seen", "similar", "tags:anthropic"}
    assert set(CATALOG) >= QUERIES
