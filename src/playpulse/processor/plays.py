"""Rebuild one *play* from its playback events and measure it to the microsecond.

A play is one listening of one piece of content, from ``play_start`` to ``play_end``
(or until it goes idle). :func:`summarize_play` replays the play's events through a
small state machine and returns a :class:`PlaySummary`: playing time, watch time,
content time, startup and rebuffering, foreground/background split, furthest position,
completion, skip/stream, the skip by the source's own signal and the qualified listen
(Last.fm's rule), and the playing time cut into :class:`PlaySegment` pieces that
each lie within one UTC hour and one local hour, ready for per-hour/per-day aggregates by
event time.

Everything here is pure: no I/O, no clock reads. Time comes only from the events'
``occurred_at`` and from arguments (``now_event_time``, a watermark). The definitions
below are also written down, with sources, in ``docs/metrics.md``.

**Ordering.** Events are sorted by ``(occurred_at, EVENT_ORDER rank, event_id)``.
:data:`EVENT_ORDER` decides what happens when several events share an instant: the
play starts first; a heartbeat reports the state up to that instant before anything
changes it; state-neutral events (chapter, speed, visibility, seek, bookmark) come next;
then "stop" transitions before "start" transitions (``buffer_start`` before
``buffer_end``, ``pause`` before ``resume``), so a pause and a resume at the same instant
leave the play playing after a zero-length pause; ``error`` and ``play_end`` come last,
so nothing at the final instant reopens an ended play. ``event_id`` breaks remaining ties.

**Duplicates.** The caller is expected to pass deduplicated events (the stream dedups by
``event_id``). As a safeguard, events repeating an ``event_id`` are collapsed to one: the
earliest by ``(occurred_at, rank, encoded JSON)``, so the choice does not depend on input
order.

**State machine.** Two variables: the listener's *intent* (``stopped``, ``playing``,
``paused``; ``stopped`` before the first event) and whether the player is *stalled*
(buffering). Transitions at each event:

- ``play_start``, ``heartbeat``: intent = playing, stalled = no. A heartbeat is evidence
  that content is playing: while paused, stopped or buffering it means playback resumed
  (or the stall ended) at the heartbeat.
- ``resume``: intent = playing (a stall in progress continues).
- ``pause``: intent = paused if it was playing.
- ``play_end``, ``error``: intent = stopped, stalled = no; ``end_reason`` is the
  ``play_end`` reason, or ``"error"``; the source's skip signal is the ``play_end``'s
  (:func:`source_skip_signal`), none for ``error``. A later
  ``play_start``/``resume``/``heartbeat`` reopens the play and clears both.
- ``buffer_start``: stalled = yes (ignored while stopped). ``buffer_end``: stalled = no.
- ``seek``: moves the position (``from_position_s`` -> ``position_s``); state unchanged.
  The jump is never counted as time or content played. Seeks are instantaneous in this
  model; a stall after a seek shows up as buffering.
- ``speed_change`` (and any event carrying ``playback_rate``): sets the rate in force.
- ``visibility_change`` (and any event carrying ``context.foreground``): sets the
  foreground state. Before any report the foreground state is unknown, which counts as
  foreground.
- any event with ``content.chapter`` sets the current chapter; any ``position_s`` sets
  the position.

The effective state between two events is *playing* (intent playing, not stalled),
*buffering* (intent playing, stalled), *paused* or *stopped*.

**Counting time ("never count time without evidence").** Time is counted only over the
interval between two consecutive events of the play, in the state left by the first of
them; nothing is counted after the last event. An interval longer than ``idle_timeout``
counts nothing at all: the play was idle-closed at the earlier event, and the intent is
reset to stopped, so only a new ``play_start``/``resume``/``heartbeat`` restarts
counting. An interval of exactly ``idle_timeout`` still counts.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, Literal, TypeVar, cast

from playpulse.events.codec import encode_event
from playpulse.events.model import (
    PLAYBACK_EVENT_CLASSES,
    Content,
    PlaybackEvent,
    PlayEnd,
    Seek,
)
from playpulse.processor.buckets import split_at_hour_boundaries

__all__ = [
    "COMPLETION_RATIO",
    "EVENT_ORDER",
    "IDLE_TIMEOUT",
    "QUALIFIED_LISTEN_MIN_DURATION",
    "QUALIFIED_LISTEN_PLAYED",
    "QUALIFIED_LISTEN_SHARE",
    "SOURCE_SKIP_BUTTONS",
    "STREAM_THRESHOLD",
    "PlayBuilder",
    "PlaySegment",
    "PlaySummary",
    "is_closed",
    "order_play_events",
    "play_key",
    "source_skip_signal",
    "summarize_play",
]

#: Tie-break order of event types sharing an ``occurred_at`` (see the module docstring).
EVENT_ORDER: tuple[str, ...] = (
    "play_start",
    "heartbeat",
    "chapter_change",
    "speed_change",
    "visibility_change",
    "seek",
    "bookmark",
    "buffer_start",
    "buffer_end",
    "pause",
    "resume",
    "error",
    "play_end",
)
_RANK: dict[str, int] = {name: i for i, name in enumerate(EVENT_ORDER)}

#: Default gap after which a play is idle: an interval longer than this counts nothing.
IDLE_TIMEOUT = timedelta(minutes=30)
#: Playing time from which a play is a stream (Spotify counts a stream after 30 s).
STREAM_THRESHOLD = timedelta(seconds=30)
#: Share of ``duration_s`` the furthest position must reach for completion (95 %).
COMPLETION_RATIO = Fraction(95, 100)
#: Qualified listen (Last.fm's scrobble rule, also ListenBrainz's listen rule): content
#: longer than this ...
QUALIFIED_LISTEN_MIN_DURATION = timedelta(seconds=30)
#: ... played for at least this share of its duration ...
QUALIFIED_LISTEN_SHARE = Fraction(1, 2)
#: ... or for this long, whichever comes first.
QUALIFIED_LISTEN_PLAYED = timedelta(minutes=4)
#: ``play_end`` ``properties.reason_end`` values that say the listener skipped (Spotify's
#: forward and back buttons).
SOURCE_SKIP_BUTTONS = frozenset({"fwdbtn", "backbtn"})
#: ``reason_end`` values that say nothing of why playback ended.
_UNKNOWN_REASON_ENDS = frozenset({"", "unknown"})

_US_PER_S = 1_000_000
_STREAM_US = STREAM_THRESHOLD // timedelta(microseconds=1)
_QUALIFIED_MIN_US = QUALIFIED_LISTEN_MIN_DURATION // timedelta(microseconds=1)
_QUALIFIED_PLAYED_US = QUALIFIED_LISTEN_PLAYED // timedelta(microseconds=1)
_EVIDENCE = frozenset({"heartbeat", "buffer_end"})
_ONE_US = timedelta(microseconds=1)
_CONTENT_FIELDS = ("content_type", "title", "creator")
_CONTEXT_FIELDS = ("timezone", "device_type", "platform", "country")

_T = TypeVar("_T")
_Intent = Literal["stopped", "playing", "paused"]


def _micros(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _seconds(micros: int) -> float:
    return micros / _US_PER_S


@dataclass(frozen=True, slots=True)
class PlaySegment:
    """A piece of playing time within one UTC hour and one local hour.

    - ``start``, ``end``: UTC-aware instants, ``start < end``; ``[start, end)`` never
      crosses a UTC hour boundary nor a local hour boundary of the listener's time zone.
    - ``playing_s``: ``(end - start)`` in seconds (the piece is all playing time).
    - ``foreground``: whether the app was in the foreground (unknown counts as True).
    - ``chapter``: the chapter in force (``content.chapter``), or None if none reported.
    - ``rate``: the playback rate in force; content played is ``playing_s * rate``.
    """

    start: datetime
    end: datetime
    playing_s: float
    foreground: bool
    chapter: int | None
    rate: float

    @property
    def content_s(self) -> float:
        """Seconds of content played in this piece: ``playing_s * rate``."""
        return self.playing_s * self.rate


@dataclass(frozen=True, slots=True)
class PlaySummary:
    """Everything measured about one play. Times are UTC-aware; durations in seconds.

    Identity and descriptive fields (from the first event, in sort order, carrying each):
    ``play_key`` (see :func:`play_key`), ``playback_id``, ``user_id`` (the actor id:
    ``user_id`` else ``anonymous_id``), ``content_id``, ``content_type``, ``title``,
    ``creator``, ``duration_s``, ``device_type``, ``platform``, ``country``,
    ``timezone`` (IANA name; local segments fall back to UTC when None).

    Extent: ``started_at`` / ``ended_at`` are the first and last event's
    ``occurred_at``; ``event_count`` is the number of distinct events used.
    ``end_reason`` is the ``play_end`` reason (completed, stopped, next, error),
    ``"error"`` for an ``error`` event, ``"idle"`` when ``now_event_time`` was given and
    is more than ``idle_timeout`` after ``ended_at``, else None (the play is open).

    Time metrics (see the module docstring for the state machine):

    - ``playing_time_s``: wall time in the playing state (Mux "playing time": excludes
      paused, buffering and seeking time).
    - ``watch_time_s``: wall time in which the listener wanted playback (intent
      playing): playing + startup + rebuffering; excludes paused and stopped time. So
      ``watch_time_s == playing_time_s + startup_time_s + rebuffer_time_s`` (Mux "watch
      time": includes startup and rebuffering, excludes paused time).
    - ``content_time_s``: sum over playing intervals of length x playback rate (seconds
      of content heard).
    - ``playing_time_foreground_s`` + ``playing_time_background_s`` ==
      ``playing_time_s``.
    - ``startup_time_s``: buffering time of stalls whose ``buffer_start`` is at or before
      the first playing evidence (first ``heartbeat`` or ``buffer_end``), or at any time
      when there is no such evidence; 0 when startup reported no buffering.
    - ``rebuffer_count`` / ``rebuffer_time_s``: stalls starting after the first playing
      evidence that were entered while the listener wanted playback, and their buffering
      time.

    Position and outcome:

    - ``furthest_position_s``: max of every reported position (``position_s``, a seek's
      ``from_position_s`` and target) and of positions extrapolated over playing
      intervals (``position + seconds x rate``, capped at ``duration_s``); None if no
      position was ever reported.
    - ``chapters_reached``: sorted distinct ``content.chapter`` values seen.
    - ``completed``: ``furthest_position_s >= 0.95 x duration_s`` (exact rational
      comparison of the float values) or a ``play_end`` with reason ``completed``.
    - ``is_stream``: ``playing_time_s >= 30`` (Spotify counts a stream after 30 s).
    - ``skipped``: the play ended (``end_reason`` is not None, including ``"idle"``)
      with ``playing_time_s < 30`` and has more than one event. An open play is neither
      skipped nor (yet, below 30 s) a stream. A play of one event (a lone
      ``play_start``: how importers write a YouTube view or a Last.fm scrobble, whose
      length the export does not say) has no evidence of how long it played, so it is
      not a skip either. This is the *30-second rule*; the source's own verdict is
      ``skipped_by_source``.
    - ``skipped_by_source``: the skip signal of the ``play_end`` that ended the play
      (:func:`source_skip_signal` of its ``properties``: Spotify's ``skipped`` flag, else
      its ``reason_end`` in :data:`SOURCE_SKIP_BUTTONS`); None when the play has not
      ended by a ``play_end`` (open, ``error``, idle) or its ``play_end`` carries no
      signal (the SDK's own events, Spotify basic history).
    - ``qualified_listen``: Last.fm's scrobble rule (ListenBrainz's listen rule): content
      longer than 30 s (``duration_s > 30``) played for at least half its duration or
      4 minutes, whichever comes first (``playing_time_s >= min(duration_s / 2, 240)``,
      compared exactly). True for a play whose ``play_start`` carries
      ``properties.scrobbled = true`` (a Last.fm scrobble: the scrobbler applied the
      rule). Otherwise None when the play's playing time is unknown (a single event),
      its ``duration_s`` is unknown (or not positive), or it is open and has not yet
      qualified; False when ``duration_s <= 30`` or it ended without qualifying.
    - ``segments``: the playing time as :class:`PlaySegment` pieces, in time order;
      their ``playing_s`` sum to ``playing_time_s``.
    """

    play_key: str
    playback_id: str | None
    user_id: str
    content_id: str | None
    content_type: str | None
    title: str | None
    creator: str | None
    duration_s: float | None
    started_at: datetime
    ended_at: datetime
    end_reason: str | None
    playing_time_s: float
    watch_time_s: float
    content_time_s: float
    playing_time_foreground_s: float
    playing_time_background_s: float
    startup_time_s: float
    rebuffer_count: int
    rebuffer_time_s: float
    furthest_position_s: float | None
    chapters_reached: tuple[int, ...]
    completed: bool
    skipped: bool
    is_stream: bool
    skipped_by_source: bool | None
    qualified_listen: bool | None
    device_type: str | None
    platform: str | None
    country: str | None
    timezone: str | None
    segments: tuple[PlaySegment, ...]
    event_count: int


def play_key(event: PlaybackEvent) -> str:
    """The key grouping events into plays.

    ``playback_id`` when the event has one; otherwise the fallback
    ``f"{actor_id}|{content_id}|{device}"`` (user + content + device), where ``device``
    is ``context.device_type``, else ``context.platform``, else ``""``. The model
    guarantees an event without ``playback_id`` carries ``content``.
    """
    if event.playback_id is not None:
        return event.playback_id
    content_id = event.content.content_id if event.content is not None else ""
    ctx = event.context
    device = ""
    if ctx is not None:
        device = ctx.device_type or ctx.platform or ""
    return f"{event.actor_id}|{content_id}|{device}"


def _sort_key(event: PlaybackEvent) -> tuple[datetime, int, str]:
    return (event.occurred_at, _RANK.get(event.event_type, len(EVENT_ORDER)), event.event_id)


def _duplicate_rank(event: PlaybackEvent) -> tuple[datetime, int, bytes]:
    # Which of two events sharing an event_id to keep (computed only on a collision).
    occurred_at, rank, _ = _sort_key(event)
    return (occurred_at, rank, encode_event(event))


_PLAYBACK_CLASSES = frozenset(PLAYBACK_EVENT_CLASSES)
_TZINFO = operator.attrgetter("occurred_at.tzinfo")
_EVENT_ID = operator.attrgetter("event_id")
_OCCURRED = operator.attrgetter("occurred_at")


def order_play_events(events: Iterable[PlaybackEvent]) -> list[PlaybackEvent]:
    """Deduplicate by ``event_id`` and sort by ``(occurred_at, EVENT_ORDER rank, event_id)``.

    Of several events sharing an ``event_id`` the one with the smallest
    ``(occurred_at, rank, encoded JSON)`` is kept, so the result does not depend on the
    input order. Raises ``TypeError`` for a non-playback event and ``ValueError`` for a
    naive ``occurred_at``.
    """
    events = list(events)
    # The common case in C loops: playback events of our classes, aware times, no
    # repeated id, no two at the same instant (then occurred_at alone gives the order).
    if (
        set(map(type, events)) <= _PLAYBACK_CLASSES
        and None not in set(map(_TZINFO, events))
        and len(set(map(_EVENT_ID, events))) == len(events)
    ):
        ordered = sorted(events, key=_OCCURRED)
        if len(set(map(_OCCURRED, ordered))) == len(ordered):
            return ordered
        return sorted(ordered, key=_sort_key)
    kept: dict[str, PlaybackEvent] = {}
    for event in events:
        if not isinstance(event, PlaybackEvent):
            raise TypeError(f"expected a playback event, got {type(event).__name__}")
        if event.occurred_at.tzinfo is None:
            raise ValueError(f"event {event.event_id}: occurred_at must be timezone-aware")
        previous = kept.get(event.event_id)
        if previous is None or _duplicate_rank(event) < _duplicate_rank(previous):
            kept[event.event_id] = event
    return sorted(kept.values(), key=_sort_key)


def _first(values: Iterable[_T | None]) -> _T | None:
    for value in values:
        if value is not None:
            return value
    return None


@dataclass(slots=True)
class _Raw:
    """A raw playing interval before merging and hour splitting."""

    start: datetime
    end: datetime
    foreground: bool
    chapter: int | None
    rate: float


def _segments(merged: list[_Raw], tz: str | None) -> tuple[PlaySegment, ...]:
    """Merged playing runs cut at UTC and local hour boundaries."""
    out: list[PlaySegment] = []
    for run in merged:
        for start, end in split_at_hour_boundaries(run.start, run.end, tz):
            out.append(
                PlaySegment(
                    start=start,
                    end=end,
                    playing_s=_seconds(_micros(end - start)),
                    foreground=run.foreground,
                    chapter=run.chapter,
                    rate=run.rate,
                )
            )
    return tuple(out)


def source_skip_signal(properties: dict[str, Any] | None) -> bool | None:
    """The source's own verdict on whether a play was skipped, from its ``play_end``
    ``properties`` (how the Spotify extended importer carries the export's fields):

    - ``skipped`` when it is a boolean (Spotify's flag: the listener skipped to the next
      track);
    - else, when ``reason_end`` says why playback ended (a non-empty string other than
      ``unknown``), whether it is one of :data:`SOURCE_SKIP_BUTTONS` (``fwdbtn``,
      ``backbtn``: the listener pressed forward or back);
    - else None: the source says nothing.
    """
    if not properties:
        return None
    flag = properties.get("skipped")
    if isinstance(flag, bool):
        return flag
    reason = properties.get("reason_end")
    if isinstance(reason, str) and reason not in _UNKNOWN_REASON_ENDS:
        return reason in SOURCE_SKIP_BUTTONS
    return None


def _qualified_listen(
    scrobbled: bool, timed: bool, playing_us: int, duration: float | None, ended: bool
) -> bool | None:
    # See PlaySummary.qualified_listen.
    if scrobbled:
        return True
    if not timed or duration is None or duration <= 0:
        return None
    # Exact rational comparisons in integers (a float is num/den exactly; Fractions
    # gave the same answers at about ten times the cost).
    num, den = duration.as_integer_ratio()
    if num * _US_PER_S <= _QUALIFIED_MIN_US * den:
        return False
    share = QUALIFIED_LISTEN_SHARE
    # playing_us >= min(duration * share in us, _QUALIFIED_PLAYED_US)
    if (
        playing_us >= _QUALIFIED_PLAYED_US
        or playing_us * den * share.denominator >= num * _US_PER_S * share.numerator
    ):
        return True
    return False if ended else None


def _is_completed(furthest: float | None, duration: float | None) -> bool:
    if furthest is None or duration is None:
        return False
    # furthest >= COMPLETION_RATIO * duration, exactly, in integers.
    f_num, f_den = furthest.as_integer_ratio()
    d_num, d_den = duration.as_integer_ratio()
    ratio = COMPLETION_RATIO
    return f_num * d_den * ratio.denominator >= ratio.numerator * d_num * f_den


def _aware(t: datetime, name: str) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (UTC), got naive {t!r}")
    return t


def summarize_play(
    events: Sequence[PlaybackEvent],
    *,
    idle_timeout: timedelta = IDLE_TIMEOUT,
    now_event_time: datetime | None = None,
) -> PlaySummary:
    """Summarize the events of ONE play (any order) into a :class:`PlaySummary`.

    ``events``: the play's playback events (all sharing one :func:`play_key`), in any
    order; expected deduplicated, but repeated ``event_id`` values are collapsed (see
    :func:`order_play_events`). ``idle_timeout``: an interval between consecutive events
    longer than this counts nothing (exactly ``idle_timeout`` still counts).
    ``now_event_time``: optional event-time watermark; when given, an open play whose
    last event is more than ``idle_timeout`` before it gets ``end_reason="idle"``.

    The result depends only on the set of events, never on their input order. Raises
    ``ValueError`` for no events, naive times or a non-positive ``idle_timeout``, and
    ``TypeError`` for a non-playback event. See the module docstring for the state
    machine and :class:`PlaySummary` for each field's definition.
    """
    return PlayBuilder.of(events, idle_timeout=idle_timeout).summary(now_event_time)


class PlayBuilder:
    """The state machine of one play, fed its events in sort order, so that a play that
    grows by events later than all it has (the usual case while it is live) is measured
    again in time proportional to the new events, not to the whole play.

    :meth:`of` builds one from any events (sorted and deduplicated, as
    :func:`summarize_play` does, which is ``PlayBuilder.of(events).summary(now)``).
    :meth:`can_extend` says whether :meth:`extend` with some new events gives exactly
    what :meth:`of` with all the events would; when it does not (an event out of order,
    a repeated ``event_id``, or the first ``duration_s`` arriving after playing time was
    counted without it), build again with :meth:`of`. :meth:`summary` is cheap: it costs
    the play's segments, not its events.
    """

    __slots__ = (
        "_chapter",
        "_chapters",
        "_days",
        "_ended_completed",
        "_first",
        "_first_evidence",
        "_found",
        "_ids",
        "_last",
        "_last_key",
        "_merged",
        "_missing",
        "_previous",
        "_rate",
        "content_s",
        "duration_s",
        "end_reason",
        "fg_us",
        "foreground",
        "furthest",
        "idle_timeout",
        "intent",
        "playing_us",
        "position",
        "rebuffer_count",
        "rebuffer_us",
        "scrobbled",
        "source_skip",
        "stall_counted",
        "stall_is_startup",
        "stalled",
        "startup_us",
    )

    def __init__(self, idle_timeout: timedelta = IDLE_TIMEOUT) -> None:
        if idle_timeout <= timedelta(0):
            raise ValueError(f"idle_timeout must be positive, got {idle_timeout}")
        self.idle_timeout = idle_timeout
        self.duration_s: float | None = None
        self.intent: _Intent = "stopped"
        self.stalled = False
        self.stall_is_startup = True
        self.stall_counted = False
        self._rate = 1.0
        self.foreground: bool | None = None
        self._chapter: int | None = None
        self._chapters: set[int] = set()
        self.position: float | None = None
        self.furthest: float | None = None
        self.end_reason: str | None = None
        self._ended_completed = False
        # The skip signal of the play_end that ended the play (None while not ended by
        # one), and whether a play_start said the play was scrobbled.
        self.source_skip: bool | None = None
        self.scrobbled = False
        self.playing_us = self.fg_us = self.startup_us = self.rebuffer_us = 0
        self.content_s = 0.0
        self.rebuffer_count = 0
        self._merged: list[_Raw] = []
        self._previous: datetime | None = None
        self._first_evidence: datetime | None = None
        self._first: PlaybackEvent | None = None
        self._last: PlaybackEvent | None = None
        self._last_key: tuple[datetime, int, str] | None = None
        self._ids: set[str] = set()
        self._days: set[int] = set()
        # First non-None value of each descriptive field, in sort order, and the
        # fields without one yet.
        self._found: dict[str, object] = {}
        self._missing: list[str] = ["content", "playback_id", *_CONTENT_FIELDS, *_CONTEXT_FIELDS]

    @classmethod
    def of(
        cls, events: Iterable[PlaybackEvent], *, idle_timeout: timedelta = IDLE_TIMEOUT
    ) -> PlayBuilder:
        """A builder fed all of ``events`` (any order; see :func:`order_play_events`).
        Raises ``ValueError`` for no events, naive times or a non-positive
        ``idle_timeout``, and ``TypeError`` for a non-playback event."""
        builder = cls(idle_timeout)
        ordered = order_play_events(events)
        if not ordered:
            raise ValueError("summarize_play needs at least one event")
        # The first duration_s caps the playhead from the start, even when an earlier
        # event did not carry it.
        builder.duration_s = _first(e.content.duration_s for e in ordered if e.content)
        builder._feed(ordered)
        return builder

    @property
    def event_count(self) -> int:
        """Distinct events fed so far."""
        return len(self._ids)

    @property
    def days(self) -> set[int]:
        """The days (``date.toordinal()`` of ``occurred_at``, which is UTC) of the events
        fed so far."""
        return self._days

    def can_extend(self, events: Sequence[PlaybackEvent]) -> bool:
        """Whether :meth:`extend` with ``events`` is exact: each sorts after everything
        fed so far, no ``event_id`` repeats, and none brings the first ``duration_s``
        after playing time was counted."""
        if self._last_key is None:
            return False
        ids: set[str] = set()
        for event in events:
            if not isinstance(event, PlaybackEvent) or event.occurred_at.tzinfo is None:
                return False
            if _sort_key(event) <= self._last_key:
                return False
            if event.event_id in self._ids or event.event_id in ids:
                return False
            ids.add(event.event_id)
            if (
                self.duration_s is None
                and self.playing_us
                and event.content is not None
                and event.content.duration_s is not None
            ):
                return False
        return True

    def extend(self, events: Sequence[PlaybackEvent]) -> None:
        """Feed ``events``, which :meth:`can_extend` accepted (else ``ValueError``)."""
        if not self.can_extend(events):
            raise ValueError("these events cannot extend the play; build it again with of()")
        ordered = sorted(events, key=_sort_key)
        if self.duration_s is None:
            self.duration_s = _first(e.content.duration_s for e in ordered if e.content)
        self._feed(ordered)

    def _feed(self, ordered: Sequence[PlaybackEvent]) -> None:
        # The state lives in locals during the loop (attribute access on self in the
        # loop cost about twice as much) and is written back at the end.
        idle_timeout = self.idle_timeout
        zero = timedelta(0)
        duration_s = self.duration_s
        intent, stalled = self.intent, self.stalled
        stall_is_startup, stall_counted = self.stall_is_startup, self.stall_counted
        rate, foreground, chapter = self._rate, self.foreground, self._chapter
        position, furthest = self.position, self.furthest
        end_reason, ended_completed = self.end_reason, self._ended_completed
        source_skip, scrobbled = self.source_skip, self.scrobbled
        playing_us, fg_us = self.playing_us, self.fg_us
        startup_us, rebuffer_us = self.startup_us, self.rebuffer_us
        content_s, rebuffer_count = self.content_s, self.rebuffer_count
        previous, first_evidence = self._previous, self._first_evidence
        merged, chapters, ids, days = self._merged, self._chapters, self._ids, self._days
        describe = self._describe
        for event in ordered:
            t = event.occurred_at
            ids.add(event.event_id)
            days.add(t.toordinal())
            if self._missing:
                describe(event)
            kind = event.event_type
            if first_evidence is None and kind in _EVIDENCE:
                first_evidence = t
            # 1. Count the interval since the previous event in the state it left.
            if previous is not None:
                gap = t - previous
                if gap > idle_timeout:
                    intent, stalled = "stopped", False  # idle-closed at the previous event
                elif gap > zero and intent == "playing":
                    us = gap // _ONE_US
                    if stalled:
                        if stall_is_startup:
                            startup_us += us
                        else:
                            rebuffer_us += us
                    else:
                        playing_us += us
                        is_fg = foreground is not False
                        if is_fg:
                            fg_us += us
                        content_s += us * rate
                        last = merged[-1] if merged else None
                        if (
                            last is not None
                            and last.end == previous
                            and last.foreground == is_fg
                            and last.chapter == chapter
                            and last.rate == rate
                        ):
                            last.end = t
                        else:
                            merged.append(_Raw(previous, t, is_fg, chapter, rate))
                        if position is not None:
                            advanced = position + us / _US_PER_S * rate
                            if duration_s is not None:  # the playhead stops at the end
                                advanced = min(advanced, max(duration_s, position))
                            position = advanced
                            furthest = advanced if furthest is None else max(furthest, advanced)
            previous = t

            # 2. Apply the event's transition.
            if kind in ("play_start", "heartbeat"):
                intent, stalled, end_reason, source_skip = "playing", False, None, None
                if kind == "play_start" and event.properties and not scrobbled:
                    scrobbled = event.properties.get("scrobbled") is True
            elif kind == "resume":
                intent, end_reason, source_skip = "playing", None, None
            elif kind == "pause":
                if intent == "playing":
                    intent = "paused"
            elif kind in ("play_end", "error"):
                intent, stalled = "stopped", False
                if isinstance(event, PlayEnd):
                    end_reason = event.reason
                    source_skip = source_skip_signal(event.properties)
                else:
                    end_reason, source_skip = "error", None
                ended_completed = ended_completed or end_reason == "completed"
            elif kind == "buffer_start":
                if intent != "stopped" and not stalled:
                    stalled, stall_counted = True, False
                    # The first evidence of playing seen so far is the play's first one
                    # whenever it is at or before t (events come in sort order).
                    stall_is_startup = first_evidence is None or t <= first_evidence
            elif kind == "buffer_end":
                stalled = False
            if intent == "playing" and stalled and not stall_counted:
                stall_counted = True
                if not stall_is_startup:
                    rebuffer_count += 1

            # 3. Apply the event's reported fields.
            if event.playback_rate is not None:
                rate = event.playback_rate
            ctx, content = event.context, event.content
            if ctx is not None and ctx.foreground is not None:
                foreground = ctx.foreground
            if content is not None and content.chapter is not None:
                chapter = content.chapter
                chapters.add(chapter)
            if isinstance(event, Seek):
                jump = event.from_position_s
                furthest = jump if furthest is None else max(furthest, jump)
            if event.position_s is not None:
                position = event.position_s
                furthest = position if furthest is None else max(furthest, position)
        if ordered:
            if self._first is None:
                self._first = ordered[0]
            self._last = ordered[-1]
            self._last_key = _sort_key(ordered[-1])
        self.intent, self.stalled = intent, stalled
        self.stall_is_startup, self.stall_counted = stall_is_startup, stall_counted
        self._rate, self.foreground, self._chapter = rate, foreground, chapter
        self.position, self.furthest = position, furthest
        self.end_reason, self._ended_completed = end_reason, ended_completed
        self.source_skip, self.scrobbled = source_skip, scrobbled
        self.playing_us, self.fg_us = playing_us, fg_us
        self.startup_us, self.rebuffer_us = startup_us, rebuffer_us
        self.content_s, self.rebuffer_count = content_s, rebuffer_count
        self._previous, self._first_evidence = previous, first_evidence

    def _describe(self, event: PlaybackEvent) -> None:
        # Note the first non-None value of each descriptive field still missing.
        found = self._found
        content, ctx = event.content, event.context
        for name in list(self._missing):
            if name == "content":
                value: object = content
            elif name == "playback_id":
                value = event.playback_id
            elif name in _CONTENT_FIELDS:
                value = getattr(content, name) if content is not None else None
            else:
                value = getattr(ctx, name) if ctx is not None else None
            if value is not None:
                found[name] = value
                self._missing.remove(name)

    def summary(self, now_event_time: datetime | None = None) -> PlaySummary:
        """The play as measured so far (see :func:`summarize_play` for
        ``now_event_time``). Raises ``ValueError`` for a naive ``now_event_time`` or a
        builder fed no events."""
        if now_event_time is not None:
            _aware(now_event_time, "now_event_time")
        first, last = self._first, self._last
        if first is None or last is None:
            raise ValueError("summarize_play needs at least one event")
        end_reason = self.end_reason
        if (
            end_reason is None
            and now_event_time is not None
            and now_event_time - last.occurred_at > self.idle_timeout
        ):
            end_reason = "idle"
        described = ctx = self._found
        content = cast("Content | None", described.get("content"))
        timezone = cast("str | None", ctx.get("timezone"))
        playing_us = self.playing_us
        return PlaySummary(
            play_key=play_key(first),
            playback_id=cast("str | None", described.get("playback_id")),
            user_id=first.actor_id,
            content_id=content.content_id if content is not None else None,
            content_type=cast("str | None", described.get("content_type")),
            title=cast("str | None", described.get("title")),
            creator=cast("str | None", described.get("creator")),
            duration_s=self.duration_s,
            started_at=first.occurred_at,
            ended_at=last.occurred_at,
            end_reason=end_reason,
            playing_time_s=_seconds(playing_us),
            watch_time_s=_seconds(playing_us + self.startup_us + self.rebuffer_us),
            content_time_s=self.content_s / _US_PER_S,
            playing_time_foreground_s=_seconds(self.fg_us),
            playing_time_background_s=_seconds(playing_us - self.fg_us),
            startup_time_s=_seconds(self.startup_us),
            rebuffer_count=self.rebuffer_count,
            rebuffer_time_s=_seconds(self.rebuffer_us),
            furthest_position_s=self.furthest,
            chapters_reached=tuple(sorted(self._chapters)),
            completed=self._ended_completed or _is_completed(self.furthest, self.duration_s),
            skipped=end_reason is not None and playing_us < _STREAM_US and len(self._ids) > 1,
            is_stream=playing_us >= _STREAM_US,
            skipped_by_source=self.source_skip,
            qualified_listen=_qualified_listen(
                self.scrobbled,
                len(self._ids) > 1,
                playing_us,
                self.duration_s,
                end_reason is not None,
            ),
            device_type=cast("str | None", ctx.get("device_type")),
            platform=cast("str | None", ctx.get("platform")),
            country=cast("str | None", ctx.get("country")),
            timezone=timezone,
            segments=_segments(self._merged, timezone),
            event_count=len(self._ids),
        )


def is_closed(
    summary: PlaySummary, now_event_time: datetime, idle_timeout: timedelta = IDLE_TIMEOUT
) -> bool:
    """Whether a play is over as of the event-time watermark ``now_event_time``.

    True when the play ended (``end_reason`` set: ``play_end``, ``error`` or ``idle``) or
    when its last event is more than ``idle_timeout`` before ``now_event_time`` (exactly
    ``idle_timeout`` is still open: an event at that instant would continue the play).
    Raises ``ValueError`` for a naive ``now_event_time``.
    """
    _aware(now_event_time, "now_event_time")
    if summary.end_reason is not None:
        return True
    return now_event_time - summary.ended_at > idle_timeout
