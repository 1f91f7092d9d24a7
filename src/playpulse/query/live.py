"""The ``live`` query: what is happening now, from the real-time store and the lake."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from playpulse.config import Settings
from playpulse.processor.state import live_listeners, newest_received_us
from playpulse.store.factory import open_store, store_exists

#: A listener counts as concurrent when their newest playback event is this recent.
LIVE_WINDOW = timedelta(seconds=60)

LIVE_SCHEMA = pa.schema(
    [
        ("concurrent_listeners", pa.int64()),
        ("events_last_minute", pa.int64()),
        ("freshness_s", pa.float64()),
        (
            "top_content",
            pa.list_(pa.struct([("content_id", pa.string()), ("listeners", pa.int64())])),
        ),
    ]
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def live_table(settings: Settings, now: datetime) -> pa.Table:
    """One row: ``concurrent_listeners`` (users playing with an event in the last 60 s
    by event time), ``events_last_minute`` (events the processor took in, received in
    the last 60 s), ``freshness_s`` (age of the newest processed event's receipt; null
    before any) and ``top_content`` (content ids with most concurrent listeners, 10)."""
    from playpulse.query.engine import events_connection

    concurrent = 0
    playing: Counter[str] = Counter()
    freshness_s = None
    if store_exists(settings):
        store = open_store(settings)
        try:
            floor, ceiling = _us(now - LIVE_WINDOW), _us(now + timedelta(seconds=1))
            for listener in live_listeners(store):
                if listener.playing and floor <= listener.at_us <= ceiling:
                    concurrent += 1
                    if listener.content_id:
                        playing[listener.content_id] += 1
            newest = newest_received_us(store)
            if newest is not None:
                freshness_s = max(0.0, (_us(now) - newest) / 1_000_000)
        finally:
            store.close()
    # Events received now may have happened days ago (offline plays): read every file
    # and let Parquet statistics on received_at skip what cannot match.
    con = events_connection(settings)
    try:
        row = con.execute(
            "SELECT count(*) FROM events WHERE received_at >= $low AND received_at <= $high",
            {"low": now - LIVE_WINDOW, "high": now},
        ).fetchone()
    finally:
        con.close()
    top = [{"content_id": c, "listeners": n} for c, n in playing.most_common(10)]
    return pa.Table.from_pylist(
        [
            {
                "concurrent_listeners": concurrent,
                "events_last_minute": int(row[0]) if row else 0,
                "freshness_s": freshness_s,
                "top_content": top,
            }
        ],
        schema=LIVE_SCHEMA,
    )
