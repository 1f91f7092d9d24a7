"""Every catalog query on the hand-computed data set of ``dataset.py``.

The expected rows are worked out by hand from the events (arithmetic in the comments).
Per play, from dataset.py (UTC; "playing" = playing time, by chapter or visibility):

==== ===== ======= ================== ======================================== ========
play user content started (UTC)      playing                                   outcome
==== ===== ======= ================== ======================================== ========
p1   u1    b1      Tue 17th 09:00:00  0-50 s ch1 (50) + 110-150 s ch1 (40)     stopped,
                                      + 150-190 s ch2 (40) = 130 s             furthest
                                                                               130
p2   u1    b1      Tue 17th 10:00:00  10:00-10:05 ch2 (300) + 10:05-10:10 ch3  furthest
                                      (300) = 600 s                            730
p3   u2    t1      Tue 17th 14:00:00  10 s                                     skipped
p4   u2    b1      Wed 18th 15:00:00  15:00-15:15 ch1 (900) + 15:15-15:18 ch3  completed
                                      (180) = 1080 s                           (3600)
p5   u3    v1      Thu 19th 18:00:00  fg 18:00-18:04 (240) + bg 18:04-18:10    furthest
                                      (360) + fg 18:10-18:12 (120) = 720 s     720
p6   u4    e1      Fri 20th 23:20:00  bg 23:20-24:00 (2400) + bg Sat 00:00-    furthest
                                      00:20 (1200) = 3600 s                    3600
p7   u1    b1      Mon 23rd 08:00:00  60 s (ch3)                               stopped
p8   u5    t1      Wed 25th 11:58:30  60 s, open (no play_end)                 open
p9   u6    v1      Wed 25th 11:58:59  41 s, then paused; open                  open
==== ===== ======= ================== ======================================== ========

Streams (>= 30 s): all but p3. Completed: p4 only. Skipped: p3 only (open plays never).
Sessions (30 min gap): u1 09:00:00-09:03:10 (190 s) and 10:00-10:10 (600 s) on the 17th,
08:00-08:01 (60 s) on the 23rd; u2 14:00:00-14:00:10 (10 s) on the 17th and 15:00-15:18
(1080 s) on the 18th; u3 18:00-18:12 (720 s); u4 Fri 23:20 - Sat 00:20 (3600 s); u5 60 s;
u6 41 s.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from pydantic import ValidationError

from playpulse.config import Settings
from playpulse.query import CATALOG, QueryError, QueryParams, run_query
from playpulse.testing import load_module


def _dataset() -> ModuleType:
    # dataset.py, as conftest.py loads it (tests is not a package: importlib import mode)
    return load_module(Path(__file__).with_name("dataset.py"), "playpulse_tests_query_dataset")


NOW, at, ev = _dataset().NOW, _dataset().at, _dataset().ev

WEEK = {"start": at("2026-11-16T00:00:00"), "end": at("2026-11-23T00:00:00")}
SAT_21 = {"start": at("2026-11-21T00:00:00"), "end": at("2026-11-22T00:00:00")}
BERLIN = "Europe/Berlin"


def run(settings: Settings, name: str, now: datetime = NOW, **params: Any) -> list[tuple]:
    """Run ``name``; check the table has exactly the catalog's columns; rows as tuples."""
    table = run_query(name, QueryParams(**params), settings, now=now)
    assert isinstance(table, pa.Table)
    assert table.column_names == list(CATALOG[name].columns)
    return [tuple(row.values()) for row in table.to_pylist()]


def approx(*rows: tuple) -> list[tuple]:
    """Expected rows, with every float compared to half a millisecond (answers round
    durations to milliseconds: playpulse.query.rounding; test_rounding.py checks that)."""
    return [
        tuple(pytest.approx(v, abs=5e-4) if isinstance(v, float) else v for v in row)
        for row in rows
    ]


def test_every_catalog_query_is_covered_here() -> None:
    # A new catalog entry must get its own hand-computed test in this module.
    assert set(CATALOG) == {
        "overview",
        "top_content",
        "top_creators",
        "hourly_engagement",
        "daily",
        "user_sessions",
        "devices",
        "countries",  # tests/query/test_qoe_yearly.py
        "chapters",
        "retention_curve",
        "watch_time_visibility",
        "funnel",
        "top_products",
        "vendor_daily",
        "cohorts",
        # quality of experience and yearly stats: tests/query/test_qoe_yearly.py
        "qoe",
        "qoe_titles",
        "qoe_devices",
        "yearly_listeners",
        "yearly_top",
        "listening_clock",
        # enrichment: tests/enrich/test_catalog.py
        "content_catalog",
        "similar_content",
        "genre_metrics",
        "mood_metrics",
        "live",
    }


# -- overview -------------------------------------------------------------------------


# Qualified listens (Last.fm's rule: duration > 30 s, played >= min(duration / 2, 240 s)):
# p1 130 s of b1 (3600 s, needs 240 s): no; p2 600 s: yes; p3 10 s of t1 (200 s, needs
# 100 s): no; p4 1080 s: yes; p5 720 s of v1: yes; p6 3600 s of e1: yes; p7 60 s: no;
# p8 (60 s of t1) and p9 (41 s of v1) are open and not yet qualified: cannot tell.
# No play_end of the data set carries a source's skip signal: source_skip_rate is null,
# over 0 plays. So the week's rates after skip_rate_plays are (source_skip_rate,
# source_skip_rate_plays, qualified_listen_rate, qualified_listen_rate_plays).
NO_SOURCE_SKIP = (None, 0)


def test_overview_week(lake: Settings) -> None:
    # plays started Mon 16th..Sun 22nd: p1..p6 = 6; streams: all but p3 (10 s) = 5;
    # listeners u1..u4 = 4; listening 130 + 600 + 10 + 1080 + 720 + 3600 = 6140 s;
    # sessions 190, 600, 10, 1080, 720, 3600 -> 6, avg 6200 / 6 = 1033.333 s;
    # completed p4 -> 1/6; skipped p3 -> 1/6; every play has a duration and positions and
    # has ended, so both rates are over all 6 plays; qualified listens p2, p4, p5, p6:
    # 4 of 6.
    assert run(lake, "overview", **WEEK) == approx(
        (6, 5, 4, 6140.0, 6, 6200 / 6, 1 / 6, 6, 1 / 6, 6, *NO_SOURCE_SKIP, 4 / 6, 6, 4)
    )


def test_overview_default_range_covers_the_data(lake: Settings) -> None:
    # No range: the data's days, [Tue 17th, Thu 26th) (test_window.py), hold every play:
    # p1..p9 = 9; streams: all but p3 = 8; listeners u1..u6 = 6; listening
    # 6140 + 60 (p7) + 60 (p8) + 41 (p9) = 6301 s;
    # sessions: the 6 above + u1's 60 s + u5's 60 s + u6's 41 s = 9, total
    # 6200 + 161 = 6361 s, avg 706.777 s; completed 1/9, skipped 1/9 (p8 and p9 are open
    # but already streams, so not skips: all 9 plays can tell); qualified 4 of p1..p7 (p8
    # and p9 cannot tell yet).
    assert run(lake, "overview") == approx(
        (9, 8, 6, 6301.0, 9, 6361 / 9, 1 / 9, 9, 1 / 9, 9, *NO_SOURCE_SKIP, 4 / 7, 7, 4)
    )


def test_overview_counts_a_play_by_its_start_and_time_by_its_segments(lake: Settings) -> None:
    # Range ends at Sat 21st 00:00: p6 (started Fri 23:20) counts as a play, but only its
    # playing time before midnight: 23:20-24:00 = 2400 s.
    # plays p1..p6 = 6, streams 5, listeners 4,
    # listening 130 + 600 + 10 + 1080 + 720 + 2400 = 4940 s; the 6 week sessions all
    # start before the 21st: avg 1033.333 s.
    rows = run(lake, "overview", start=WEEK["start"], end=at("2026-11-21T00:00:00"))
    assert rows == approx(
        (6, 5, 4, 4940.0, 6, 6200 / 6, 1 / 6, 6, 1 / 6, 6, *NO_SOURCE_SKIP, 4 / 6, 6, 4)
    )


def test_overview_range_start_cuts_a_play_across_midnight(lake: Settings) -> None:
    # Sat 21st: no play started (p6 began Fri 23:20), but p6 played 00:00-00:20 = 1200 s,
    # so u4 is a listener; no started plays -> no play tells a rate: null, over 0 plays.
    (row,) = run(lake, "overview", **SAT_21)
    assert row[:4] == (0, 0, 1, 1200.0)  # plays, streams, listeners, listening_s
    # every rate null over 0 plays; qualified_listens 0 (no play)
    assert row[6:] == (None, 0, None, 0, None, 0, None, 0, 0)


def test_overview_does_not_count_a_session_that_started_before_the_range(
    lake: Settings,
) -> None:
    (row,) = run(lake, "overview", **SAT_21)
    assert row[4:6] == (0, 0.0)  # sessions, avg_session_s


def test_overview_range_edges_are_inclusive_start_exclusive_end(lake: Settings) -> None:
    # [Tue 09:00:00, 10:00:00): p1 starts exactly at the start (in), p2 exactly at the
    # end (out). p1: 130 s playing, a stream, u1's session 09:00:00-09:03:10 = 190 s.
    expected = approx((1, 1, 1, 130.0, 1, 190.0, 0.0, 1, 0.0, 1, *NO_SOURCE_SKIP, 0.0, 1, 0))
    utc = run(lake, "overview", start=at("2026-11-17T09:00:00"), end=at("2026-11-17T10:00:00"))
    assert utc == expected
    # The same instants given in Berlin time (UTC+1) are converted to UTC.
    berlin = ZoneInfo(BERLIN)
    local = run(
        lake,
        "overview",
        start=datetime(2026, 11, 17, 10, tzinfo=berlin),
        end=datetime(2026, 11, 17, 11, tzinfo=berlin),
    )
    assert local == expected


def test_overview_range_start_inside_an_hour_counts_the_part_inside(lake: Settings) -> None:
    # [Sat 00:10, Sun 00:00): p6 played 00:10-00:20 = 600 s inside; listener u4.
    (row,) = run(lake, "overview", start=at("2026-11-21T00:10:00"), end=SAT_21["end"])
    assert row[2:4] == (1, 600.0)


def test_overview_filters_plays_but_not_sessions(lake: Settings) -> None:
    # content_type=audiobook: p1, p2, p4 -> 3 plays, 3 streams, listeners u1, u2,
    # 130 + 600 + 1080 = 1810 s, completed p4 -> 1/3, skipped 0, qualified p2, p4 -> 2/3.
    # Sessions are per listener, not per title: the week's 6 sessions stay.
    rows = run(lake, "overview", content_type="audiobook", **WEEK)
    assert rows == approx(
        (3, 3, 2, 1810.0, 6, 6200 / 6, 1 / 3, 3, 0.0, 3, *NO_SOURCE_SKIP, 2 / 3, 3, 2)
    )
    # creator="Bea Band": p3 only, 10 s, skipped, not qualified.
    rows = run(lake, "overview", creator="Bea Band", **WEEK)
    assert rows == approx((1, 0, 1, 10.0, 6, 6200 / 6, 0.0, 1, 1.0, 1, *NO_SOURCE_SKIP, 0.0, 1, 0))


# -- top_content / top_creators -------------------------------------------------------


# e1: p6, 3600 s; b1: p1 + p2 + p4 = 130 + 600 + 1080 = 1810 s, listeners u1, u2,
# completed 1 of 3, qualified 2 of 3 (p2, p4); v1: p5 720 s, qualified; t1: p3 10 s,
# skipped 1 of 1, not qualified. By listening time.
E1_ROW = (
    "e1",
    "Night Talk",
    "Dan Show",
    "episode",
    1,
    1,
    3600.0,
    0.0,
    1,
    0.0,
    1,
    *NO_SOURCE_SKIP,
    1.0,
    1,
)
B1_ROW = (
    "b1",
    "The Long Road",
    "Ada Author",
    "audiobook",
    3,
    2,
    1810.0,
    1 / 3,
    3,
    0.0,
    3,
    *NO_SOURCE_SKIP,
    2 / 3,
    3,
)
V1_ROW = (
    "v1",
    "Big Match",
    "Cat Channel",
    "video",
    1,
    1,
    720.0,
    0.0,
    1,
    0.0,
    1,
    *NO_SOURCE_SKIP,
    1.0,
    1,
)
T1_ROW = ("t1", "Quick Song", "Bea Band", "track", 1, 1, 10.0, 0.0, 1, 1.0, 1,
          *NO_SOURCE_SKIP, 0.0, 1)  # fmt: skip


def test_top_content_week(lake: Settings) -> None:
    assert run(lake, "top_content", **WEEK) == approx(E1_ROW, B1_ROW, V1_ROW, T1_ROW)


def test_top_content_limit_and_filters(lake: Settings) -> None:
    assert run(lake, "top_content", limit=2, **WEEK) == approx(E1_ROW, B1_ROW)
    assert run(lake, "top_content", creator="Bea Band", **WEEK) == approx(T1_ROW)
    assert run(lake, "top_content", content_id="v1", **WEEK) == approx(V1_ROW)
    assert run(lake, "top_content", content_type="video", creator="Ada Author", **WEEK) == []


def test_top_content_title_playing_across_the_range_start(lake: Settings) -> None:
    # Sat 21st: e1 has no play started but 1200 s (00:00-00:20) by listener u4; no play
    # started, so no play tells its rates: null, over 0 plays.
    rows = run(lake, "top_content", **SAT_21)
    assert rows == [
        ("e1", "Night Talk", "Dan Show", "episode", 0, 1, 1200.0)
        + (None, 0) * 4  # every rate null, over 0 plays
    ]


def test_top_creators_week(lake: Settings) -> None:
    # (creator, plays, listeners, listening_s, rates...), the same as top_content's: each
    # creator here has one title.
    expected = approx(*((row[2], *row[4:]) for row in (E1_ROW, B1_ROW, V1_ROW, T1_ROW)))
    assert run(lake, "top_creators", **WEEK) == expected
    assert run(lake, "top_creators", limit=1, **WEEK) == expected[:1]
    assert run(lake, "top_creators", content_type="track", **WEEK) == expected[3:]


# -- hourly_engagement ----------------------------------------------------------------


def grid(cells: dict[tuple[int, int], tuple[int, int, float]]) -> list[tuple]:
    """All 168 (day_of_week, hour) rows: ``cells`` as given, every other one zero."""
    return approx(*((d, h, *cells.get((d, h), (0, 0, 0.0))) for d in range(7) for h in range(24)))


def test_hourly_engagement_utc(lake: Settings) -> None:
    # (day 0 = Monday, UTC hour): (plays started, listeners, listening_s)
    assert run(lake, "hourly_engagement", **WEEK) == grid(
        {
            (1, 9): (1, 1, 130.0),  # p1 Tue 09:00
            (1, 10): (1, 1, 600.0),  # p2 Tue 10:00
            (1, 14): (1, 1, 10.0),  # p3 Tue 14:00
            (2, 15): (1, 1, 1080.0),  # p4 Wed 15:00
            (3, 18): (1, 1, 720.0),  # p5 Thu 18:00
            (4, 23): (1, 1, 2400.0),  # p6 Fri 23:20-24:00
            (5, 0): (0, 1, 1200.0),  # p6 Sat 00:00-00:20, started the day before
        }
    )


def test_hourly_engagement_berlin_shifts_every_cell_an_hour(lake: Settings) -> None:
    # Berlin = UTC+1: p6 starts Sat 00:20 local, so it moves to Saturday entirely:
    # 00:20-01:00 local = 2400 s, 01:00-01:20 local = 1200 s.
    assert run(lake, "hourly_engagement", tz=BERLIN, **WEEK) == grid(
        {
            (1, 10): (1, 1, 130.0),
            (1, 11): (1, 1, 600.0),
            (1, 15): (1, 1, 10.0),
            (2, 16): (1, 1, 1080.0),
            (3, 19): (1, 1, 720.0),
            (5, 0): (1, 1, 2400.0),
            (5, 1): (0, 1, 1200.0),
        }
    )


def test_hourly_engagement_filters(lake: Settings) -> None:
    rows = run(lake, "hourly_engagement", content_id="t1", **WEEK)
    assert rows == grid({(1, 14): (1, 1, 10.0)})


def test_hourly_engagement_half_hour_zone(lake: Settings) -> None:
    # p6 in IST: Sat 04:50-05:50 -> hour 4: 04:50-05:00 = 600 s; hour 5: 3000 s.
    rows = run(lake, "hourly_engagement", tz="Asia/Kolkata", content_id="e1", **WEEK)
    assert rows == grid({(5, 4): (1, 1, 600.0), (5, 5): (0, 1, 3000.0)})


# -- daily ----------------------------------------------------------------------------


def test_daily_utc(lake: Settings) -> None:
    # (date, plays, listeners, new_listeners, listening_s)
    assert run(lake, "daily", **WEEK) == approx(
        # p1, p2, p3; u1, u2 (both first seen); 130 + 600 + 10 = 740 s
        (date(2026, 11, 17), 3, 2, 2, 740.0),
        (date(2026, 11, 18), 1, 1, 0, 1080.0),  # p4 by u2 (seen on the 17th)
        (date(2026, 11, 19), 1, 1, 1, 720.0),  # p5, u3 new
        (date(2026, 11, 20), 1, 1, 1, 2400.0),  # p6 23:20-24:00, u4 new
        (date(2026, 11, 21), 0, 1, 0, 1200.0),  # p6 00:00-00:20, no play started
    )


def test_daily_berlin_moves_the_play_across_utc_midnight_to_saturday(lake: Settings) -> None:
    # In Berlin p6 runs Sat 00:20-01:20 local: one day, 2400 + 1200 = 3600 s.
    assert run(lake, "daily", tz=BERLIN, **WEEK) == approx(
        (date(2026, 11, 17), 3, 2, 2, 740.0),
        (date(2026, 11, 18), 1, 1, 0, 1080.0),
        (date(2026, 11, 19), 1, 1, 1, 720.0),
        (date(2026, 11, 21), 1, 1, 1, 3600.0),
    )


def test_daily_counts_open_plays_from_the_store(lake: Settings) -> None:
    # Wed 25th: p8 (u5, 60 s) and p9 (u6, 41 s) have no play_end yet: 2 plays, 2 new
    # listeners, 101 s.
    rows = run(lake, "daily", start=at("2026-11-25T00:00:00"), end=at("2026-11-26T00:00:00"))
    assert rows == approx((date(2026, 11, 25), 2, 2, 2, 101.0))


def test_daily_new_listeners_looks_at_the_whole_history(lake: Settings) -> None:
    rows = run(lake, "daily", start=at("2026-11-23T00:00:00"), end=at("2026-11-24T00:00:00"))
    assert rows == approx((date(2026, 11, 23), 1, 1, 0, 60.0))  # p7: 60 s, u1 not new


# -- user_sessions --------------------------------------------------------------------


def test_user_sessions_week(lake: Settings) -> None:
    # (user, sessions, avg_session_s, listening_s), by listening time:
    # u4 3600; u2 10 + 1080 = 1090 (sessions 10 s, 1080 s -> avg 545);
    # u1 130 + 600 = 730 (sessions 190 s, 600 s -> avg 395); u3 720.
    expected = approx(
        ("u4", 1, 3600.0, 3600.0),
        ("u2", 2, 545.0, 1090.0),
        ("u1", 2, 395.0, 730.0),
        ("u3", 1, 720.0, 720.0),
    )
    assert run(lake, "user_sessions", **WEEK) == expected
    assert run(lake, "user_sessions", limit=3, **WEEK) == expected[:3]


def test_user_sessions_range_start_inside_a_session(lake: Settings) -> None:
    # Sat 21st: u4 listened 1200 s but started no session that day.
    assert run(lake, "user_sessions", **SAT_21) == approx(("u4", 0, 0.0, 1200.0))


# -- devices --------------------------------------------------------------------------


def test_devices_week(lake: Settings) -> None:
    # (platform, device_type, plays, listeners, listening_s); u4's speaker reports no
    # platform -> 'unknown'.
    assert run(lake, "devices", **WEEK) == approx(
        ("unknown", "speaker", 1, 1, 3600.0),  # p6
        ("web", "desktop", 2, 1, 1090.0),  # p3 10 + p4 1080
        ("ios", "mobile", 2, 1, 730.0),  # p1 130 + p2 600
        ("android", "tablet", 1, 1, 720.0),  # p5
    )
    assert run(lake, "devices", content_id="b1", **WEEK) == approx(
        ("web", "desktop", 1, 1, 1080.0), ("ios", "mobile", 2, 1, 730.0)
    )


# -- chapters -------------------------------------------------------------------------


def test_chapters_week(lake: Settings) -> None:
    # b1 starters: u1, u2 = 2. Reached: p1 {1, 2}, p2 {2, 3}, p4 {1, 3}.
    # ch1: u1, u2 -> 2/2; 90 (p1: 50 + 40) + 900 (p4) = 990 s
    # ch2: u1 -> 1/2; 40 (p1) + 300 (p2) = 340 s
    # ch3: u1, u2 -> 2/2; 300 (p2) + 180 (p4) = 480 s
    assert run(lake, "chapters", **WEEK) == approx(
        ("b1", 1, 2, 990.0, 1.0),
        ("b1", 2, 1, 340.0, 0.5),
        ("b1", 3, 2, 480.0, 1.0),
    )


def test_chapters_one_day(lake: Settings) -> None:
    # Tue 17th: only u1's p1 and p2 -> 1 starter who reached chapters 1, 2, 3;
    # ch1 50 + 40 = 90 s (p1), ch2 40 (p1) + 300 (p2) = 340 s, ch3 300 s (p2).
    rows = run(lake, "chapters", start=at("2026-11-17T00:00:00"), end=at("2026-11-18T00:00:00"))
    assert rows == approx(
        ("b1", 1, 1, 90.0, 1.0), ("b1", 2, 1, 340.0, 1.0), ("b1", 3, 1, 300.0, 1.0)
    )
    assert run(lake, "chapters", content_type="video", **WEEK) == []


# -- retention_curve ------------------------------------------------------------------


def curve(content_id: str, share: Any) -> list[tuple]:
    return [(content_id, pct, share(pct)) for pct in range(101)]


def test_retention_curve_week(lake: Settings) -> None:
    # Titles by plays: b1 (3), then e1, t1, v1 (1 each, by id); limit 2 -> b1, e1.
    # b1 furthest: p1 130/3600 = 3.6 %, p2 730/3600 = 20.3 %, p4 3600/3600 = 100 %:
    #   0..3 % -> 3/3, 4..20 % -> 2/3, 21..100 % -> 1/3.
    # e1: p6 3600/4000 = 90 %: 0..90 % -> 1, 91..100 % -> 0.
    b1 = curve("b1", lambda pct: 1.0 if pct <= 3 else 2 / 3 if pct <= 20 else 1 / 3)
    e1 = curve("e1", lambda pct: 1.0 if pct <= 90 else 0.0)
    assert run(lake, "retention_curve", limit=2, **WEEK) == approx(*b1, *e1)


def test_retention_curve_filter(lake: Settings) -> None:
    # v1: p5 720/1200 = 60 %; t1: p3 10/200 = 5 %.
    v1 = curve("v1", lambda pct: 1.0 if pct <= 60 else 0.0)
    assert run(lake, "retention_curve", content_type="video", **WEEK) == approx(*v1)
    t1 = curve("t1", lambda pct: 1.0 if pct <= 5 else 0.0)
    assert run(lake, "retention_curve", creator="Bea Band", **WEEK) == approx(*t1)


# -- watch_time_visibility ------------------------------------------------------------


def test_watch_time_visibility_week(lake: Settings) -> None:
    # (creator, date, foreground_s, background_s), by date, background desc, creator.
    # Unknown visibility counts as foreground (p1..p4).
    rows = run(lake, "watch_time_visibility", **WEEK)
    assert [r for r in rows if r[0] != "Dan Show"] == approx(
        ("Ada Author", date(2026, 11, 17), 730.0, 0.0),  # p1 130 + p2 600
        ("Bea Band", date(2026, 11, 17), 10.0, 0.0),  # p3
        ("Ada Author", date(2026, 11, 18), 1080.0, 0.0),  # p4
        ("Cat Channel", date(2026, 11, 19), 360.0, 360.0),  # p5: 240 + 120 fg, 360 bg
    )
    # p6 (Dan Show) was all background: 2400 s on the 20th, 1200 s on the 21st.
    assert [(r[0], r[1], r[3]) for r in rows if r[0] == "Dan Show"] == approx(
        ("Dan Show", date(2026, 11, 20), 2400.0), ("Dan Show", date(2026, 11, 21), 1200.0)
    )


def test_watch_time_visibility_all_background_is_zero_foreground(lake: Settings) -> None:
    rows = run(lake, "watch_time_visibility", creator="Dan Show", **WEEK)
    assert rows == approx(
        ("Dan Show", date(2026, 11, 20), 0.0, 2400.0),
        ("Dan Show", date(2026, 11, 21), 0.0, 1200.0),
    )


def test_watch_time_visibility_berlin_and_filter(lake: Settings) -> None:
    rows = run(lake, "watch_time_visibility", content_id="v1", tz=BERLIN, **WEEK)
    assert rows == approx(("Cat Channel", date(2026, 11, 19), 360.0, 360.0))
    # In Berlin p6 is Saturday only: 3600 s in the background.
    rows = run(lake, "watch_time_visibility", content_id="e1", tz=BERLIN, **WEEK)
    assert [(r[0], r[1], r[3]) for r in rows] == approx(("Dan Show", date(2026, 11, 21), 3600.0))


# -- funnel / top_products / vendor_daily ---------------------------------------------

# (vendor, views, favorites, cart adds, orders, completed, view_to_cart, cart_to_order,
# view_to_order, priced orders, revenue_minor, currency, average_order_minor)
# v1: views c1 (sent twice, counted once), c2, c3 = 3; cart adds c4, c5 = 2; orders c6,
# c8 = 2; completed c7, c9 = 2; 2/3, 2/2, 2/3; revenue 1999 + 3998 = 5997 EUR,
# average 5997 / 2 = 2998.5.
V1_FUNNEL = ("v1", 3, 0, 2, 2, 2, 2 / 3, 1.0, 2 / 3, 2, 5997, "EUR", 2998.5)
# v2: c10, c12, c13, c14 -> 1 each, rates 1; c14 has no amount: revenue unknown (null).
V2_FUNNEL = ("v2", 1, 0, 1, 1, 1, 1.0, 1.0, 1.0, 0, None, None, None)


def test_funnel_week(lake: Settings) -> None:
    assert run(lake, "funnel", **WEEK) == approx(V1_FUNNEL, V2_FUNNEL)
    assert run(lake, "funnel", vendor_id="v2", **WEEK) == approx(V2_FUNNEL)


def test_funnel_ignores_late_events(lake: Settings) -> None:
    # c15 (a v2 product view on the 10th) arrived 9.5 days behind u3's watermark: late.
    rows = run(lake, "funnel", start=at("2026-11-09T00:00:00"), end=WEEK["end"])
    assert rows == approx(V1_FUNNEL, V2_FUNNEL)
    rows = run(lake, "funnel", start=at("2026-11-10T00:00:00"), end=at("2026-11-11T00:00:00"))
    assert rows == []


def test_top_products_week(lake: Settings) -> None:
    # (product, vendor, views, favorites, cart_adds, completed, priced, revenue_minor,
    # currency); by completed orders, then views, then id: pa 2, pc 1, pb 0.
    expected = approx(
        ("pa", "v1", 2, 0, 2, 2, 2, 5997, "EUR"),  # views c1, c2; carts c4, c5; c7 + c9
        ("pc", "v2", 1, 0, 1, 1, 0, None, None),  # c10, c12, c14 (no amount: unknown)
        ("pb", "v1", 1, 0, 0, 0, 0, 0, None),  # view c3
    )
    assert run(lake, "top_products", **WEEK) == expected
    assert run(lake, "top_products", limit=2, **WEEK) == expected[:2]
    assert run(lake, "top_products", vendor_id="v2", **WEEK) == expected[1:2]


def test_vendor_daily_utc_and_berlin(lake: Settings) -> None:
    # (vendor, date, views, favorites, cart_adds, orders, completed, priced,
    # revenue_minor, currency)
    utc = [
        ("v1", date(2026, 11, 19), 3, 0, 2, 2, 1, 1, 1999, "EUR"),  # c1-c8; c7 paid 1999
        ("v1", date(2026, 11, 20), 0, 0, 0, 0, 1, 1, 3998, "EUR"),  # c9 at 09:00
        # c10-c14 at 23:30-23:41 UTC; c14 completed without an amount: revenue unknown
        ("v2", date(2026, 11, 19), 1, 0, 1, 1, 1, 0, None, None),
    ]
    assert run(lake, "vendor_daily", **WEEK) == utc
    # Berlin: v2's 23:30-23:41 UTC is Fri 00:30-00:41 local; v1's 10:xx/09:00 UTC stay.
    berlin = [*utc[:2], ("v2", date(2026, 11, 20), 1, 0, 1, 1, 1, 0, None, None)]
    assert run(lake, "vendor_daily", tz=BERLIN, **WEEK) == berlin
    assert run(lake, "vendor_daily", vendor_id="v1", **WEEK) == utc[:2]


# -- cohorts --------------------------------------------------------------------------


def test_cohorts_week(lake: Settings) -> None:
    # First plays: u1, u2 (Tue 17th), u3 (Thu), u4 (Fri 23:20 UTC, Sat 00:20 Berlin): all
    # in the week of Mon 16th -> 4 users; week 1 (23rd..): u1 (p7) -> 1/4.
    expected = approx(
        (date(2026, 11, 16), 0, 4, 4, 1.0),
        (date(2026, 11, 16), 1, 4, 1, 0.25),
    )
    assert run(lake, "cohorts", **WEEK) == expected
    assert run(lake, "cohorts", tz=BERLIN, **WEEK) == expected


def test_cohorts_first_play_is_the_first_ever(lake: Settings) -> None:
    # Week of Mon 23rd: new listeners u5, u6 (open plays on the 25th) -> 2 users.
    rows = run(lake, "cohorts", start=at("2026-11-23T00:00:00"), end=at("2026-11-30T00:00:00"))
    assert rows == approx((date(2026, 11, 23), 0, 2, 2, 1.0))


# -- live -----------------------------------------------------------------------------


def test_live_now(lake: Settings) -> None:
    # NOW = 12:00:00. Newest playback event per user within [11:59:00, 12:00:00]:
    # u5 heartbeat 11:59:30 (playing) -> concurrent; u6 pause 11:59:40 -> not playing.
    # Received in [11:59:00, 12:00:00]: p9-start (11:59:00, the edge), p8-hb (11:59:31),
    # p9-pause (11:59:41) -> 3; p8-start (11:58:31) is older.
    ((concurrent, last_minute, _freshness, top),) = run(lake, "live")
    assert (concurrent, last_minute) == (1, 3)
    assert top == [{"content_id": "t1", "listeners": 1}]
    # The time range and filters do not apply to "now".
    assert run(lake, "live", **WEEK)[0][:2] == (1, 3)


def test_live_later(lake: Settings) -> None:
    # Ten minutes later nothing is recent; the newest receipt (11:59:41) is 619 s old.
    ((concurrent, last_minute, freshness_s, top),) = run(lake, "live", NOW + timedelta(minutes=10))
    assert (concurrent, last_minute, top) == (0, 0, [])
    assert freshness_s == pytest.approx(619.0, abs=1e-6)


def test_live_freshness_is_the_age_of_the_newest_receipt(lake: Settings) -> None:
    # The newest receipt is u6's pause (11:59:41, stream partition 5), not u5's heartbeat
    # (11:59:31) in partition 7, which the processor handles last: 12:00:00 - 11:59:41.
    ((_, _, freshness_s, _),) = run(lake, "live")
    assert freshness_s == pytest.approx(19.0, abs=1e-6)


def test_live_events_last_minute_counts_by_receipt(tmp_path: Path, ingest_into) -> None:
    settings = ingest_into(
        tmp_path,
        [
            ev("old", "product_view", "2026-11-23T10:00:00", "u7",
               received="2026-11-25T11:59:50", product_id="pa"),
        ],
    )  # fmt: skip
    # Received 11:59:50, inside [11:59:00, 12:00:00]; it happened on Mon 23rd.
    ((_, last_minute, _, _),) = run(settings, "live")
    assert last_minute == 1


# -- empty data dir, errors -----------------------------------------------------------

EMPTY = {
    "overview": [(0, 0, 0, 0.0, 0, 0.0, None, 0, None, 0, None, 0, None, 0, 0)],
    "hourly_engagement": [(d, h, 0, 0, 0.0) for d in range(7) for h in range(24)],
    "live": [(0, 0, None, [])],
    # quality of experience: no player plays, every measure unknown (docs/metrics.md)
    "qoe": [(0, None, None, None, None, None, 0, 0.0)],
}


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_empty_data_dir(tmp_path: Path, name: str) -> None:
    # Every query answers with its columns and no rows (or zeros), no error.
    rows = run(Settings(data_dir=tmp_path), name, **WEEK)
    assert rows == EMPTY.get(name, [])


@pytest.mark.parametrize("name", ["overview", "top_content", "live"])
def test_missing_data_dir(tmp_path: Path, name: str) -> None:
    rows = run(Settings(data_dir=tmp_path / "never-created"), name, **WEEK)
    assert rows == EMPTY.get(name, [])
    assert not (tmp_path / "never-created").exists()


def test_unknown_query_name(lake: Settings) -> None:
    with pytest.raises(QueryError, match=r"^unknown query 'nope'; known: chapters, cohorts"):
        run_query("nope", settings=lake)


def test_start_not_before_end(lake: Settings) -> None:
    params = QueryParams(start=WEEK["end"], end=WEEK["start"])
    with pytest.raises(QueryError, match=r"start 2026-11-23T00:00:00\+00:00 is not before end"):
        run_query("overview", params, lake)
    params = QueryParams(start=WEEK["start"], end=WEEK["start"])  # empty range
    with pytest.raises(QueryError, match="is not before end"):
        run_query("top_content", params, lake)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": datetime(2026, 11, 16)}, "must carry a time zone"),  # noqa: DTZ001
        ({"end": datetime(2026, 11, 23)}, "must carry a time zone"),  # noqa: DTZ001
        ({"tz": "Mars/Olympus"}, "'Mars/Olympus' is not an IANA time zone"),
        ({"tz": "CEST"}, "is not an IANA time zone"),
        ({"limit": 0}, "greater than or equal to 1"),
        ({"limit": 10_001}, "less than or equal to 10000"),
        ({"content": "b1"}, "Extra inputs are not permitted"),
        ({"start": "yesterday"}, "start"),
    ],
)
def test_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        QueryParams(**params)
