"""The skip policies of one play beside the 30-second rule (docs/metrics.md): the source's
own skip signal (``skipped_by_source``) and Last.fm's qualified listen
(``qualified_listen``), with their exact edges. Null (None) where the play cannot tell.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playpulse.events.model import Event, PlaybackEvent
from playpulse.processor.plays import SOURCE_SKIP_BUTTONS, source_skip_signal, summarize_play

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
US = 1e-6
_ids = itertools.count()


def ev(kind: str, at: float, **fields: Any) -> PlaybackEvent:
    """A playback event of play ``p1`` at ``T0 + at`` seconds."""
    data: dict[str, Any] = {
        "event_type": kind,
        "event_id": f"s{next(_ids):06d}",
        "occurred_at": (T0 + timedelta(seconds=at)).isoformat(),
        "user_id": "u1",
        "playback_id": "p1",
    }
    if kind == "play_end":
        data["reason"] = "stopped"
    data.update(fields)
    event = msgspec.convert(data, type=Event)
    assert isinstance(event, PlaybackEvent)
    return event


def start(duration_s: float | None = 200.0, **fields: Any) -> PlaybackEvent:
    content: dict[str, Any] = {"content_id": "t1", "content_type": "track"}
    if duration_s is not None:
        content["duration_s"] = duration_s
    return ev("play_start", 0, content=content, **fields)


# --- the source's signal --------------------------------------------------------------


@pytest.mark.parametrize(
    ("properties", "signal"),
    [
        ({"skipped": True}, True),
        ({"skipped": False}, False),
        # The flag is Spotify's verdict: it wins over the buttons (both disagree in real
        # exports: skipped false with fwdbtn, skipped true with endplay).
        ({"skipped": False, "reason_end": "fwdbtn"}, False),
        ({"skipped": True, "reason_end": "endplay"}, True),
        # Without the flag (2021-era endsong: often null), the buttons say it.
        ({"reason_end": "fwdbtn"}, True),
        ({"reason_end": "backbtn"}, True),
        ({"reason_end": "trackdone"}, False),
        ({"reason_end": "endplay"}, False),
        ({"reason_end": "logout"}, False),
        # Nothing said: unknown.
        ({"reason_end": "unknown"}, None),
        ({"reason_end": ""}, None),
        ({"skipped": None, "reason_end": None}, None),
        ({"skipped": "true"}, None),  # not a boolean: not Spotify's flag
        ({"album": "Faith"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_source_skip_signal(properties: dict[str, Any] | None, signal: bool | None) -> None:
    assert source_skip_signal(properties) is signal


@settings(deadline=None)  # no timing: a loaded machine must not fail it
@given(
    st.dictionaries(
        st.sampled_from(["skipped", "reason_end", "shuffle", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12)),
    )
)
def test_source_skip_signal_reads_any_properties(properties: dict[str, Any]) -> None:
    # Whatever a client put in properties: never an error, and the rule of the docstring.
    signal = source_skip_signal(properties)
    flag, reason = properties.get("skipped"), properties.get("reason_end")
    if isinstance(flag, bool):
        assert signal is flag
    elif isinstance(reason, str) and reason not in ("", "unknown"):
        assert signal is (reason in SOURCE_SKIP_BUTTONS)
    else:
        assert signal is None


def test_skipped_by_source_comes_from_the_play_end_that_ended_the_play() -> None:
    skip = {"properties": {"skipped": True, "reason_end": "fwdbtn"}}
    ended = summarize_play([start(), ev("play_end", 50, **skip)])
    # 50 s played: not a skip by the 30-second rule, a skip by Spotify's own flag.
    assert (ended.skipped, ended.skipped_by_source) == (False, True)
    done = summarize_play([start(), ev("play_end", 10, properties={"reason_end": "trackdone"})])
    assert (done.skipped, done.skipped_by_source) == (True, False)


def test_skipped_by_source_is_unknown_without_a_signal() -> None:
    # A play_end without properties (the SDK's own events, Spotify basic history).
    assert summarize_play([start(), ev("play_end", 10)]).skipped_by_source is None
    # An open play, an error, a play that went idle.
    assert summarize_play([start(), ev("heartbeat", 10)]).skipped_by_source is None
    assert summarize_play([start(), ev("error", 10)]).skipped_by_source is None
    idle = summarize_play([start(), ev("heartbeat", 10)], now_event_time=T0 + timedelta(hours=1))
    assert (idle.end_reason, idle.skipped_by_source) == ("idle", None)
    # A lone play_start (a YouTube view, a Last.fm scrobble).
    assert summarize_play([start()]).skipped_by_source is None


def test_a_reopened_play_forgets_the_earlier_signal() -> None:
    skip = {"properties": {"skipped": True}}
    reopened = summarize_play([start(), ev("play_end", 10, **skip), ev("resume", 20)])
    assert (reopened.end_reason, reopened.skipped_by_source) == (None, None)
    ended_again = [start(), ev("play_end", 10, **skip), ev("resume", 20)]
    ended_again.append(ev("play_end", 30, properties={"skipped": False}))
    assert summarize_play(ended_again).skipped_by_source is False
    errored = summarize_play([start(), ev("play_end", 10, **skip), ev("error", 11)])
    assert (errored.end_reason, errored.skipped_by_source) == ("error", None)


# --- qualified listen (Last.fm / ListenBrainz) ---------------------------------------


def qualified(duration_s: float | None, played_s: float, *, ended: bool = True) -> bool | None:
    """``qualified_listen`` of a play of content ``duration_s`` long, ``played_s`` played."""
    events = [start(duration_s), ev("heartbeat", played_s)]
    if ended:
        events.append(ev("play_end", played_s))
    return summarize_play(events).qualified_listen


@pytest.mark.parametrize(
    ("duration_s", "played_s", "expected"),
    [
        # Half the track, for tracks up to 8 minutes: 100 s of a 200 s track.
        (200.0, 100.0, True),
        (200.0, 100.0 - US, False),
        (200.0, 200.0, True),
        # 4 minutes, for longer tracks: 240 s of a 1000 s track.
        (1000.0, 240.0, True),
        (1000.0, 240.0 - US, False),
        (480.0, 240.0, True),  # both thresholds at once
        (480.0, 240.0 - US, False),
        # The track must be longer than 30 s: a 30 s track never qualifies.
        (30.0, 30.0, False),
        (math.nextafter(30.0, math.inf), 15.000001, True),
        (20.0, 20.0, False),
        # Unknown length: cannot tell.
        (None, 600.0, None),
    ],
)
def test_qualified_listen_edges(
    duration_s: float | None, played_s: float, expected: bool | None
) -> None:
    assert qualified(duration_s, played_s) is expected


def test_an_open_play_qualifies_once_it_has_played_enough() -> None:
    assert qualified(200.0, 60.0, ended=False) is None  # may still reach 100 s
    assert qualified(200.0, 100.0, ended=False) is True
    assert qualified(30.0, 10.0, ended=False) is False  # never can


def test_qualified_listen_counts_playing_time_not_paused_time() -> None:
    events = [start(200.0), ev("pause", 60), ev("resume", 600), ev("play_end", 639)]
    s = summarize_play(events)
    assert (s.playing_time_s, s.qualified_listen) == (99.0, False)


def test_a_scrobble_is_a_qualified_listen() -> None:
    # A lone play_start (the Last.fm importer's scrobble) has no length; the scrobbler
    # applied Last.fm's rule, so the play says scrobbled: true.
    scrobble = summarize_play([start(None, properties={"scrobbled": True, "album": "Faith"})])
    assert (scrobble.qualified_listen, scrobble.skipped, scrobble.is_stream) == (True, False, False)
    # A view without that word: nothing known.
    assert summarize_play([start(None)]).qualified_listen is None
    assert summarize_play([start(200.0)]).qualified_listen is None
    assert summarize_play([start(None, properties={"scrobbled": "yes"})]).qualified_listen is None
