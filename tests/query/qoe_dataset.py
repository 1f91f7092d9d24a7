"""A small data set with known answers for the quality-of-experience and yearly queries
(``qoe``, ``qoe_titles``, ``qoe_devices``, ``yearly_listeners``, ``yearly_top``,
``listening_clock``), fed through the real pipeline by ``dataset.py``'s ``build``.

Quality of experience, Tue 2026-03-10 (UTC), every play from a player unless said:

==== ==== ======= =============== =========================================== =========
play user content device          events                                       outcome
==== ==== ======= =============== =========================================== =========
q1   qa   x1      ios/mobile      start 10:00:00, stall 10:00:00-02 (startup   completed
                                  2 s), heartbeat 10:01:00, stall 10:01:10-13
                                  (one rebuffer, 3 s), end 10:02:00            watch 120
q2   qb   x1      web/desktop     start 11:00:00, stall 11:00:00-06 (startup   error
                                  6 s), heartbeat 11:00:30, error 11:01:00     watch 60
q3   qb   y1      web/desktop     start 12:00:00, heartbeat 12:00:30, end      stopped
                                  12:01:00 (startup 0)                         watch 60
q4   qc   y1      (none)          an import's play (``spotify_extended:...``   not a
                                  id): start 13:00, end 13:01                  player play
==== ==== ======= =============== =========================================== =========

So over q1..q3: startups 0, 2, 6 s (p50 = 2, p95 = 6, nearest rank); watch time 240 s,
rebuffering 3 s (ratio 0.0125), 1 rebuffer (15 per hour of watch time); one failure of 3.

Yearly, listener ``yy`` (each play 60 s unless said, artists A1..A3 with one title each):
2025-12-31 23:30 UTC A1 (first ever); 2026-01-02 10:00 and 14:00 A1; 2026-01-03 10:00
A1; 2026-01-05 10:00 A2; 2026-01-06 20:00 and 2026-01-07 20:00 A3 (300 s each).
In UTC: 2025 has one day (A1, new); 2026 has days 2, 3, 5, 6, 7 (longest streak 5..7,
3 days), 6 plays, 840 s, artists A1, A2, A3 (new: A2, A3). In Europe/Berlin (UTC+1) the
23:30 play is on 2026-01-01: no 2025; 2026 days 1, 2, 3, 5, 6, 7 (two 3-day streaks: the
first, 1..3, is reported), 7 plays, 900 s, 3 new artists.

Listener ``yt`` watched a removed YouTube video (``youtube:removed``, no title) on
2025-06-01.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playpulse.testing import load_module

_ds = load_module(Path(__file__).with_name("dataset.py"), "playpulse_tests_query_dataset")
ev = _ds.ev
build = _ds.build

X1 = {
    "content_id": "x1",
    "content_type": "video",
    "title": "Clip X",
    "creator": "Xena",
    "duration_s": 600,
}
Y1 = {
    "content_id": "y1",
    "content_type": "video",
    "title": "Clip Y",
    "creator": "Yuri",
    "duration_s": 600,
}
REMOVED = {"content_id": "youtube:removed", "content_type": "video"}
IOS = {"device_type": "mobile", "platform": "ios", "country": "DE"}
WEB = {"device_type": "desktop", "platform": "web", "country": "US"}


def _song(n: int) -> dict[str, Any]:
    return {
        "content_id": f"a{n}t",
        "content_type": "track",
        "title": f"Song {n}",
        "creator": f"A{n}",
        "duration_s": 400,
    }


def _play(
    pid: str, user: str, start: str, end: str, content: dict[str, Any], **extra: Any
) -> list[Any]:
    return [
        ev(
            f"{pid}-s",
            "play_start",
            start,
            user,
            playback_id=pid,
            content=content,
            position_s=0,
            **extra,
        ),
        ev(f"{pid}-e", "play_end", end, user, playback_id=pid, reason="stopped"),
    ]


ROWS: list[Any] = [
    # yearly: listener yy
    *_play("y-1", "yy", "2025-12-31T23:30:00", "2025-12-31T23:31:00", _song(1)),
    *_play("y-2", "yy", "2026-01-02T10:00:00", "2026-01-02T10:01:00", _song(1)),
    *_play("y-3", "yy", "2026-01-02T14:00:00", "2026-01-02T14:01:00", _song(1)),
    *_play("y-4", "yy", "2026-01-03T10:00:00", "2026-01-03T10:01:00", _song(1)),
    *_play("y-5", "yy", "2026-01-05T10:00:00", "2026-01-05T10:01:00", _song(2)),
    *_play("y-6", "yy", "2026-01-06T20:00:00", "2026-01-06T20:05:00", _song(3)),
    *_play("y-7", "yy", "2026-01-07T20:00:00", "2026-01-07T20:05:00", _song(3)),
    # the view of a removed YouTube video, as the importer names it (no title)
    *_play("yt-1", "yt", "2025-06-01T10:00:00", "2025-06-01T10:01:00", REMOVED),
    # q1: startup 2 s, one rebuffer of 3 s, completed
    ev(
        "q1-s",
        "play_start",
        "2026-03-10T10:00:00",
        "qa",
        playback_id="q1",
        content=X1,
        position_s=0,
        context=IOS,
    ),
    ev("q1-b1", "buffer_start", "2026-03-10T10:00:00", "qa", playback_id="q1"),
    ev("q1-b2", "buffer_end", "2026-03-10T10:00:02", "qa", playback_id="q1"),
    ev("q1-hb", "heartbeat", "2026-03-10T10:01:00", "qa", playback_id="q1", position_s=58),
    ev("q1-b3", "buffer_start", "2026-03-10T10:01:10", "qa", playback_id="q1"),
    ev("q1-b4", "buffer_end", "2026-03-10T10:01:13", "qa", playback_id="q1"),
    ev(
        "q1-e",
        "play_end",
        "2026-03-10T10:02:00",
        "qa",
        playback_id="q1",
        position_s=600,
        reason="completed",
    ),
    # q2: startup 6 s, then an error
    ev(
        "q2-s",
        "play_start",
        "2026-03-10T11:00:00",
        "qb",
        playback_id="q2",
        content=X1,
        position_s=0,
        context=WEB,
    ),
    ev("q2-b1", "buffer_start", "2026-03-10T11:00:00", "qb", playback_id="q2"),
    ev("q2-b2", "buffer_end", "2026-03-10T11:00:06", "qb", playback_id="q2"),
    ev("q2-hb", "heartbeat", "2026-03-10T11:00:30", "qb", playback_id="q2", position_s=24),
    ev("q2-x", "error", "2026-03-10T11:01:00", "qb", playback_id="q2", error_code="E42"),
    # q3: no buffering
    ev(
        "q3-s",
        "play_start",
        "2026-03-10T12:00:00",
        "qb",
        playback_id="q3",
        content=Y1,
        position_s=0,
        context=WEB,
    ),
    ev("q3-hb", "heartbeat", "2026-03-10T12:00:30", "qb", playback_id="q3", position_s=30),
    ev(
        "q3-e",
        "play_end",
        "2026-03-10T12:01:00",
        "qb",
        playback_id="q3",
        position_s=60,
        reason="stopped",
    ),
    # q4: an imported play (its id says so): no player, not counted in QoE
    *_play("spotify_extended:q4", "qc", "2026-03-10T13:00:00", "2026-03-10T13:01:00", Y1),
]
#: The clock for these answers (after every event).
NOW = _ds.at("2026-03-11T00:00:00")
