"""One small, hand-written data set for the metric catalog, fed through the real pipeline.

Loaded by ``conftest.py`` and the test modules (``tests`` is not a package).

Every event below is written out with its timestamps; ``test_catalog.py`` computes each
query's expected rows from it by hand (the arithmetic is in the comments there). The
events go the way production events go: ``validate_event`` (as the collector receives
them) -> ``open_stream(settings).append`` (key = actor id) -> ``ensure_processed``,
which runs the processor into the real-time store and the Parquet lake.

The week is Monday 2026-11-16 .. Sunday 2026-11-22. In November Europe/Berlin is
UTC+1 and America/New_York UTC-5, Asia/Kolkata UTC+5:30 (no DST switch nearby).

Listeners (the stream has 8 partitions; partition = crc32(user) % 8):

- u1 (partition 6): Berlin, mobile/ios. Audiobook b1 (3600 s, chapters) twice on Tue
  17th, 56:50 apart (two sessions), once more on Mon 23rd; shopper at vendor v1.
- u2 (partition 4): New York, desktop/web. Track t1 skipped after 10 s (Tue 17th);
  audiobook b1 on Wed 18th, jumping to chapter 3 and completing it; shopper at v1.
- u3 (partition 2): Berlin, tablet/android. Video v1 played partly in the background
  (Thu 19th); shopper at v2 (late evening UTC: already Friday in Berlin), plus one
  product view that arrives 9.5 days late.
- u4 (partition 1): no time zone (UTC), a smart speaker without platform. Episode e1
  in the background from Fri 20th 23:20 to Sat 21st 00:20 UTC (across UTC midnight).
- u5 (partition 7), u6 (partition 5): listening right before ``NOW`` (the ``live``
  query); neither play has ended, so both stay open in the real-time store.

Shop: vendor v1 (products pa, pb; two paid orders in EUR; one product view sent twice, a
duplicate event) and vendor v2 (product pc; one order completed without an amount).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playpulse.config import Settings
from playpulse.events.codec import validate_event
from playpulse.processor.pipeline import BatchStats
from playpulse.service import ensure_processed
from playpulse.stream.factory import open_stream

#: The clock for the ``live`` query and for default time ranges.
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)

Event = dict[str, Any]
Row = tuple[Event, datetime]  # an event and when the collector received it


def at(text: str) -> datetime:
    """A UTC instant from ``'2026-11-17T09:00:00'``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ev(
    event_id: str,
    event_type: str,
    occurred_at: str,
    user: str,
    *,
    received: str | None = None,
    **fields: Any,
) -> Row:
    """An event dict with explicit times; received 2 s after it occurred unless given."""
    event: Event = {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": occurred_at + "Z",
        "user_id": user,
        **fields,
    }
    receipt = at(received) if received else at(occurred_at) + timedelta(seconds=2)
    return event, receipt


def content(base: Event, chapter: int | None = None) -> Event:
    return base if chapter is None else {**base, "chapter": chapter}


B1 = {
    "content_id": "b1",
    "content_type": "audiobook",
    "title": "The Long Road",
    "creator": "Ada Author",
    "duration_s": 3600,
}
T1 = {
    "content_id": "t1",
    "content_type": "track",
    "title": "Quick Song",
    "creator": "Bea Band",
    "duration_s": 200,
}
V1 = {
    "content_id": "v1",
    "content_type": "video",
    "title": "Big Match",
    "creator": "Cat Channel",
    "duration_s": 1200,
}
E1 = {
    "content_id": "e1",
    "content_type": "episode",
    "title": "Night Talk",
    "creator": "Dan Show",
    "duration_s": 4000,
}

U1_CTX = {"timezone": "Europe/Berlin", "device_type": "mobile", "platform": "ios", "country": "DE"}
U2_CTX = {
    "timezone": "America/New_York",
    "device_type": "desktop",
    "platform": "web",
    "country": "US",
}
U3_CTX = {
    "timezone": "Europe/Berlin",
    "device_type": "tablet",
    "platform": "android",
    "country": "DE",
    "foreground": True,
}
U4_CTX = {"device_type": "speaker", "foreground": False}  # no time zone, no platform
U5_CTX = {"timezone": "America/New_York", "device_type": "mobile", "platform": "android"}
U6_CTX = {"timezone": "Europe/Berlin", "device_type": "tv", "platform": "tizen"}


DUPLICATE_OF_C1 = ev(
    "c1",
    "product_view",
    "2026-11-19T10:00:00",
    "u1",
    received="2026-11-19T10:05:00",  # the client retried: same event, later receipt
    product_id="pa",
    vendor_id="v1",
)

#: The whole data set, in stream order.
DATASET: list[Row] = [
    # --- u1, Tue 17th: audiobook b1, play p1 (09:00:00 .. 09:03:10) ------------------
    # playing 0-50 s (ch 1), paused 50-110 s, playing 110-150 s (ch 1), 150-190 s (ch 2)
    ev("p1-start", "play_start", "2026-11-17T09:00:00", "u1", playback_id="p1",
       content=content(B1, 1), position_s=0, context=U1_CTX),
    ev("p1-pause", "pause", "2026-11-17T09:00:50", "u1", playback_id="p1", position_s=50),
    ev("p1-resume", "resume", "2026-11-17T09:01:50", "u1", playback_id="p1", position_s=50),
    ev("p1-ch2", "chapter_change", "2026-11-17T09:02:30", "u1", playback_id="p1",
       content=content(B1, 2), position_s=90),
    ev("p1-end", "play_end", "2026-11-17T09:03:10", "u1", playback_id="p1", position_s=130,
       reason="stopped"),
    # --- u1, Tue 17th 10:00, 56:50 after p1 ended (a new session): play p2 ----------------
    # playing 10:00-10:05 (ch 2, 300 s), 10:05-10:10 (ch 3, 300 s)
    ev("p2-start", "play_start", "2026-11-17T10:00:00", "u1", playback_id="p2",
       content=content(B1, 2), position_s=130, context=U1_CTX),
    ev("p2-ch3", "chapter_change", "2026-11-17T10:05:00", "u1", playback_id="p2",
       content=content(B1, 3), position_s=430),
    ev("p2-end", "play_end", "2026-11-17T10:10:00", "u1", playback_id="p2", position_s=730,
       reason="stopped"),
    # --- u2, Tue 17th 14:00 UTC (09:00 in New York): track t1 skipped after 10 s -----------
    ev("p3-start", "play_start", "2026-11-17T14:00:00", "u2", playback_id="p3", content=T1,
       position_s=0, context=U2_CTX),
    ev("p3-end", "play_end", "2026-11-17T14:00:10", "u2", playback_id="p3", position_s=10,
       reason="next"),
    # --- u2, Wed 18th 15:00: b1 chapter 1 for 900 s, jump to chapter 3, completed ---------
    ev("p4-start", "play_start", "2026-11-18T15:00:00", "u2", playback_id="p4",
       content=content(B1, 1), position_s=0, context=U2_CTX),
    ev("p4-ch3", "chapter_change", "2026-11-18T15:15:00", "u2", playback_id="p4",
       content=content(B1, 3), position_s=3420),
    ev("p4-seek", "seek", "2026-11-18T15:15:00", "u2", playback_id="p4",
       from_position_s=900, position_s=3420),
    ev("p4-end", "play_end", "2026-11-18T15:18:00", "u2", playback_id="p4", position_s=3600,
       reason="completed"),
    # --- u3, Thu 19th 18:00: video v1, background 18:04-18:10 -----------------------------
    ev("p5-start", "play_start", "2026-11-19T18:00:00", "u3", playback_id="p5", content=V1,
       position_s=0, context=U3_CTX),
    ev("p5-bg", "visibility_change", "2026-11-19T18:04:00", "u3", playback_id="p5",
       context={"foreground": False}),
    ev("p5-fg", "visibility_change", "2026-11-19T18:10:00", "u3", playback_id="p5",
       context={"foreground": True}),
    ev("p5-end", "play_end", "2026-11-19T18:12:00", "u3", playback_id="p5", position_s=720,
       reason="stopped"),
    # --- u4, Fri 20th 23:20 .. Sat 21st 00:20 UTC: episode e1, all in the background ------
    ev("p6-start", "play_start", "2026-11-20T23:20:00", "u4", playback_id="p6", content=E1,
       position_s=0, context=U4_CTX),
    ev("p6-hb1", "heartbeat", "2026-11-20T23:45:00", "u4", playback_id="p6", position_s=1500),
    ev("p6-hb2", "heartbeat", "2026-11-21T00:10:00", "u4", playback_id="p6", position_s=3000),
    ev("p6-end", "play_end", "2026-11-21T00:20:00", "u4", playback_id="p6", position_s=3600,
       reason="stopped"),
    # --- shop, vendor v1 (Thu 19th / Fri 20th) ------------------------------------------
    ev("c1", "product_view", "2026-11-19T10:00:00", "u1", product_id="pa", vendor_id="v1"),
    DUPLICATE_OF_C1,
    ev("c2", "product_view", "2026-11-19T10:05:00", "u2", product_id="pa", vendor_id="v1"),
    ev("c3", "product_view", "2026-11-19T10:06:00", "u2", product_id="pb", vendor_id="v1"),
    ev("c4", "cart_add", "2026-11-19T10:10:00", "u1", product_id="pa", vendor_id="v1",
       quantity=1),
    ev("c5", "cart_add", "2026-11-19T10:11:00", "u2", product_id="pa", vendor_id="v1",
       quantity=2),
    ev("c6", "order_created", "2026-11-19T10:15:00", "u1", order_id="o1", product_id="pa",
       vendor_id="v1", amount_minor=1999, currency="EUR"),
    ev("c7", "order_completed", "2026-11-19T10:16:00", "u1", order_id="o1",
       product_id="pa", vendor_id="v1", amount_minor=1999, currency="EUR"),
    ev("c8", "order_created", "2026-11-19T10:20:00", "u2", order_id="o2", product_id="pa",
       vendor_id="v1", amount_minor=3998, currency="EUR"),
    ev("c9", "order_completed", "2026-11-20T09:00:00", "u2", order_id="o2",
       product_id="pa", vendor_id="v1", amount_minor=3998, currency="EUR"),
    # --- shop, vendor v2 (Thu 19th 23:30 UTC = Fri 20th 00:30 in Berlin) -------------------
    ev("c10", "product_view", "2026-11-19T23:30:00", "u3", product_id="pc", vendor_id="v2"),
    ev("c11", "vendor_view", "2026-11-19T23:31:00", "u3", vendor_id="v2"),
    ev("c12", "cart_add", "2026-11-19T23:35:00", "u3", product_id="pc", vendor_id="v2"),
    ev("c13", "order_created", "2026-11-19T23:40:00", "u3", order_id="o3", product_id="pc",
       vendor_id="v2", amount_minor=500, currency="EUR"),
    # completed without an amount (as imported shop logs come): no revenue
    ev("c14", "order_completed", "2026-11-19T23:41:00", "u3", order_id="o3",
       product_id="pc", vendor_id="v2"),
    # 9.5 days behind u3's watermark (23:41 on the 19th): late, counted by no metric
    ev("c15", "product_view", "2026-11-10T12:00:00", "u3", received="2026-11-21T09:00:00",
       product_id="pc", vendor_id="v2"),
    # --- u1, Mon 23rd: b1 once more (cohort week 1) ---------------------------------------
    ev("p7-start", "play_start", "2026-11-23T08:00:00", "u1", playback_id="p7",
       content=content(B1, 3), position_s=730, context=U1_CTX),
    ev("p7-end", "play_end", "2026-11-23T08:01:00", "u1", playback_id="p7", position_s=790,
       reason="stopped"),
    # --- right before NOW (Wed 25th 12:00:00): two open plays -----------------------------
    ev("p8-start", "play_start", "2026-11-25T11:58:30", "u5", playback_id="p8", content=T1,
       position_s=0, context=U5_CTX, received="2026-11-25T11:58:31"),
    ev("p8-hb", "heartbeat", "2026-11-25T11:59:30", "u5", playback_id="p8", position_s=60,
       received="2026-11-25T11:59:31"),
    ev("p9-start", "play_start", "2026-11-25T11:58:59", "u6", playback_id="p9", content=V1,
       position_s=0, context=U6_CTX, received="2026-11-25T11:59:00"),
    ev("p9-pause", "pause", "2026-11-25T11:59:40", "u6", playback_id="p9", position_s=41,
       received="2026-11-25T11:59:41"),
]  # fmt: skip


def ingest(settings: Settings, rows: Iterable[Row]) -> BatchStats | None:
    """Validate ``rows`` as the collector does, append them to the stream and process."""
    records = []
    for event, received in rows:
        accepted = validate_event(json.dumps(event), received)
        records.append((accepted.event.actor_id, accepted.payload))
    stream = open_stream(settings)
    try:
        stream.append(records)
    finally:
        stream.close()
    return ensure_processed(settings)


def settings_for(data_dir: Path) -> Settings:
    """Settings of a test data dir (8 stream partitions, whatever the environment says)."""
    return Settings(data_dir=data_dir, num_partitions=8)


def build(data_dir: Path, rows: Iterable[Row] = DATASET) -> tuple[Settings, BatchStats | None]:
    """Ingest ``rows`` (default: the data set) into ``data_dir``."""
    settings = settings_for(data_dir)
    return settings, ingest(settings, rows)
