"""Stream retention against the real processor: what it has processed may go, what it
has not stays (the processor commits its progress to the stream's consumer group)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from playpulse.events.codec import validate_event
from playpulse.lake.schema import SCHEMAS
from playpulse.lake.writer import LakeWriter
from playpulse.processor.pipeline import Processor, ProcessorOptions
from playpulse.quarantine.store import QuarantineStore
from playpulse.store.sqlite import SQLiteStore
from playpulse.stream.sqlite import SQLiteStream

FAR_FUTURE = timedelta(days=365 * 100)
RECEIVED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def events(users: range) -> list[tuple[str, bytes]]:
    out = []
    for n in users:
        raw = {
            "event_id": f"e{n}",
            "event_type": "play_start",
            "occurred_at": (RECEIVED - timedelta(minutes=5)).isoformat(),
            "user_id": f"u{n}",
            "playback_id": f"p{n}",
            "position_s": 0,
            "content": {"content_id": "book-1", "content_type": "audiobook"},
            "context": {"device_type": "mobile", "platform": "ios"},
        }
        accepted = validate_event(json.dumps(raw), RECEIVED)
        out.append((accepted.event.actor_id, accepted.payload))
    return out


def test_retention_deletes_only_what_the_processor_has_processed(tmp_path):
    stream = SQLiteStream(tmp_path / "stream.db", num_partitions=4)
    store = SQLiteStore(tmp_path / "store.db")
    quarantine = QuarantineStore(tmp_path / "quarantine.db")
    try:
        options = ProcessorOptions()
        processor = Processor(stream, store, LakeWriter(tmp_path / "lake", SCHEMAS), quarantine)
        stream.append(events(range(40)))
        processor.process_available()
        stream.append(events(range(40, 55)))  # not processed yet

        deleted = stream.enforce_retention(datetime.now(UTC) + FAR_FUTURE)

        assert deleted == 40
        assert sum(stream.lag(options.consumer).values()) == 15
        assert sum(info.count for info in stream.partitions()) == 15
        # The stream's group offsets follow the store's, which the processor resumes from.
        assert {p: stream.committed(options.consumer, p) for p in range(4)} == store.offsets(
            options.consumer
        )
        assert sum(stream.lost(options.consumer).values()) == 0
        # The next run processes exactly the 15 that retention kept.
        assert processor.process_available().read == 15
    finally:
        stream.close()
        store.close()
        quarantine.close()
