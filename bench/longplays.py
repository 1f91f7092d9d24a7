"""Does a live play cost more per event the longer it runs? Small batches, long plays.

While ``playpulse up`` keeps up, each poll brings one or two new events per open play.
A processor that replays every event of a play at each batch then costs, per new
event, time proportional to the play's length: an audiobook with a heartbeat every
10 s has 360 events an hour. This measures the processor's CPU per event for plays of
increasing length under small batches; the cost per event should stay flat.

Workload per row: ``plays`` listeners, each one play (a ``play_start`` then a heartbeat
every 10 s, listeners interleaved in time as they would arrive), appended 200 events
per append to a fresh 8-partition stream; the real ``Processor`` (SQLite store +
Parquet lake) reads it with ``batch_size`` 25 records per partition per poll. The
shortest plays are the baseline of the same run.

    python bench/longplays.py        # alone; bench/process.py runs it too
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playpulse.events.codec import validate_event

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
HEARTBEAT_S = 10
BATCH_SIZE = 25
PLAYS = 100
LENGTHS = (30, 100, 300)


@dataclass
class LongPlayRun:
    """One row: plays of ``heartbeats`` heartbeats; ``cpu_s`` for ``events``."""

    heartbeats: int
    plays: int
    events: int
    cpu_s: float

    @property
    def us_per_event(self) -> float:
        return 1e6 * self.cpu_s / self.events


def long_play_records(plays: int, heartbeats: int) -> list[tuple[str, bytes]]:
    """``(actor_id, payload)`` of ``plays`` interleaved plays, validated as the
    collector would."""
    out = []
    for i in range(heartbeats + 1):
        at = T0 + timedelta(seconds=HEARTBEAT_S * i)
        for u in range(plays):
            event = {
                "event_id": str(uuid.uuid4()),
                "event_type": "play_start" if i == 0 else "heartbeat",
                "occurred_at": (at + timedelta(milliseconds=u)).isoformat(),
                "user_id": f"user-{u}",
                "playback_id": f"play-{u}",
                "position_s": float(HEARTBEAT_S * i),
                "content": {"content_id": f"book-{u % 20}", "duration_s": 36_000.0},
                "context": {"timezone": "Europe/Berlin", "device_type": "mobile"},
            }
            accepted = validate_event(json.dumps(event), at + timedelta(seconds=1))
            out.append((accepted.event.actor_id, accepted.payload))
    return out


def measure_long_plays(
    work_dir: Path, lengths: tuple[int, ...] = LENGTHS, plays: int = PLAYS
) -> list[LongPlayRun]:
    """One row per play length (in heartbeats), each on a fresh stream, store, lake."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from process import fill_stream, make_processor

    runs = []
    for heartbeats in lengths:
        root = work_dir / f"long-{heartbeats}"
        stream = fill_stream(root / "stream.db", long_play_records(plays, heartbeats), 200)
        setup = make_processor(stream, root, BATCH_SIZE)
        try:
            started = time.process_time()
            stats = setup.processor.process_available()
            cpu = time.process_time() - started
        finally:
            setup.close()
            stream.close()
        runs.append(LongPlayRun(heartbeats, plays, stats.read, cpu))
    return runs


def long_plays_table(runs: list[LongPlayRun]) -> str:
    """A Markdown table of ``runs``, each against the first (shortest plays)."""
    base = runs[0].us_per_event
    rows = [
        "| plays x events each | play length | events | CPU us per event | vs shortest |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        minutes = r.heartbeats * HEARTBEAT_S / 60
        rows.append(
            f"| {r.plays} x {r.heartbeats + 1} | {minutes:.0f} min | {r.events:,} |"
            f" {r.us_per_event:.0f} | {r.us_per_event / base:.2f}x |"
        )
    return "\n".join(rows)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="playpulse-bench-longplays-") as tmp:
        print(long_plays_table(measure_long_plays(Path(tmp))))


if __name__ == "__main__":
    main()
