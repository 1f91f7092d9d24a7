"""The processor: pure logic that turns events into plays, sessions and bucket keys.

- :mod:`playpulse.processor.plays`: rebuild one play and measure it
  (:func:`summarize_play`).
- :mod:`playpulse.processor.sessions`: listening sessions per user, batch and streaming.
- :mod:`playpulse.processor.buckets`: UTC/local date, hour and weekday bucket keys.
"""

from playpulse.processor.buckets import (
    day_of_week,
    local_date,
    local_hour,
    next_hour_boundary,
    split_at_hour_boundaries,
    utc_date,
    utc_hour,
    utc_hour_start,
)
from playpulse.processor.plays import (
    IDLE_TIMEOUT,
    PlaySegment,
    PlaySummary,
    is_closed,
    order_play_events,
    play_key,
    summarize_play,
)
from playpulse.processor.sessions import Session, SessionState, sessionize

__all__ = [
    "IDLE_TIMEOUT",
    "PlaySegment",
    "PlaySummary",
    "Session",
    "SessionState",
    "day_of_week",
    "is_closed",
    "local_date",
    "local_hour",
    "next_hour_boundary",
    "order_play_events",
    "play_key",
    "sessionize",
    "split_at_hour_boundaries",
    "summarize_play",
    "utc_date",
    "utc_hour",
    "utc_hour_start",
]
