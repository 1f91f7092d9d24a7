"""Listening sessions: a user's events grouped by inactivity gaps, in batch or streaming.

A *session* is a maximal run of one user's events in which

- consecutive events are at most ``gap`` apart (default 30 minutes: the session times
  out after 30 minutes of inactivity, Google Analytics' convention), and
- every event is less than ``max_length`` after the session's first event (default
  24 hours: a session is capped at 24 h, so an always-on device does not make one
  endless session).

Exact edges (``gap`` = 30 min): an event 29:59.999 or exactly 30:00 after the previous
event continues the session; an event 30:00.000001 or more after it starts a new one.
An event exactly ``max_length`` after the session's first event starts a new session,
so ``end - start < max_length`` always holds.

A session's ``start`` and ``end`` are the times of its first and last event (a
one-event session has ``start == end``); nothing is added after the last event: time is
never counted without evidence.

:func:`sessionize` is the batch form (any order in, sorted sessions out);
:class:`SessionState` is the incremental form for a streaming processor, one per user,
which gives the same sessions as :func:`sessionize` for input in time order. This
mirrors bytewax's session windows (a window closes after a gap without events), with the
gap edge and the length cap made explicit.

All times are UTC-aware ``datetime`` objects; naive times raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "SESSION_GAP",
    "SESSION_MAX_LENGTH",
    "Session",
    "SessionState",
    "extend_sessions_us",
    "sessionize",
    "sessionize_us",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Inactivity after which a session times out (Google Analytics' default).
SESSION_GAP = timedelta(minutes=30)
#: Longest session: an event this long after the session's first event starts a new one.
SESSION_MAX_LENGTH = timedelta(hours=24)


def _aware(t: datetime, name: str = "time") -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime (UTC), got naive {t!r}")
    return t.astimezone(UTC)


def _check_params(gap: timedelta, max_length: timedelta) -> None:
    if gap <= timedelta(0):
        raise ValueError(f"gap must be positive, got {gap}")
    if max_length <= timedelta(0):
        raise ValueError(f"max_length must be positive, got {max_length}")


@dataclass(frozen=True, slots=True)
class Session:
    """One listening session of one user.

    - ``start``: time of the session's first event (UTC-aware).
    - ``end``: time of its last event (UTC-aware), ``start <= end < start + max_length``.
    - ``event_count``: number of events (times) in the session, >= 1; equal times each
      count.
    """

    start: datetime
    end: datetime
    event_count: int

    @property
    def duration(self) -> timedelta:
        """``end - start``: zero for a one-event session."""
        return self.end - self.start


def _continues(session: Session, t: datetime, gap: timedelta, max_length: timedelta) -> bool:
    """Whether an event at ``t >= session.end`` belongs to ``session``."""
    return t - session.end <= gap and t - session.start < max_length


def sessionize(
    times: Iterable[datetime],
    *,
    gap: timedelta = SESSION_GAP,
    max_length: timedelta = SESSION_MAX_LENGTH,
) -> list[Session]:
    """Group one user's event times into sessions, sorted by start.

    ``times`` may be in any order (they are sorted first) and may repeat. A new session
    starts at an event more than ``gap`` after the previous event, or at least
    ``max_length`` after the current session's first event; see the module docstring for
    the exact edges. Returns ``[]`` for no times. Raises ``ValueError`` for a naive time
    or a non-positive ``gap``/``max_length``.
    """
    _check_params(gap, max_length)
    one = timedelta(microseconds=1)
    ordered = sorted((_aware(t) - _EPOCH) // one for t in times)
    return [
        Session(_EPOCH + start * one, _EPOCH + end * one, count)
        for start, end, count in sessionize_us(ordered, gap // one, max_length // one)
    ]


def sessionize_us(
    sorted_times_us: Sequence[int], gap_us: int, max_length_us: int
) -> list[tuple[int, int, int]]:
    """:func:`sessionize` on integer times: ``sorted_times_us`` (microseconds since the
    epoch, ascending) -> ``(start_us, end_us, event_count)`` per session, in order;
    the same edges as :func:`sessionize` (``gap_us``, ``max_length_us`` > 0). Raises
    ``ValueError`` for times out of order."""
    return extend_sessions_us([], sorted_times_us, gap_us, max_length_us)


def extend_sessions_us(
    sessions: Sequence[tuple[int, int, int]],
    later_times_us: Sequence[int],
    gap_us: int,
    max_length_us: int,
) -> list[tuple[int, int, int]]:
    """The sessions of some times plus ``later_times_us``, from the sessions alone.

    ``sessions``: :func:`sessionize_us` of some times; ``later_times_us``: ascending,
    none before the last session's end. The result equals :func:`sessionize_us` of all
    the times together (the sessionization is a left fold whose state is the last
    session), at a cost proportional to the new times. Raises ``ValueError`` for a
    time before the last session's end.
    """
    if not later_times_us:
        return list(sessions)
    # The fold's state: the last session (for no sessions yet, an empty one at the
    # first time, which that time opens).
    if sessions:
        out = list(sessions[:-1])
        start, end, count = sessions[-1]
    else:
        out, (start, end, count) = [], (later_times_us[0], later_times_us[0], 0)
    for t in later_times_us:
        if t < end:
            raise ValueError(f"time {t} is before the last session's end {end}")
        if count and (t - end > gap_us or t - start >= max_length_us):
            out.append((start, end, count))
            start, count = t, 0
        end = t
        count += 1
    out.append((start, end, count))
    return out


class SessionState:
    """The open session of ONE user, updated event by event (streaming sessionization).

    Keep one ``SessionState`` per user (for example in a ``dict[user_id, SessionState]``).
    Feed the user's event times in time order with :meth:`add`; it returns the session
    that the new event closed, if any. Call :meth:`close_before` when the event-time
    watermark advances (no event earlier than the watermark is expected any more) to
    close the open session once no future event can join it, and :meth:`flush` at the
    end of the input. For in-order input the sessions emitted, in order, are exactly
    those of :func:`sessionize` with the same ``gap`` and ``max_length``.

    Out of order: a time earlier than the open session's last event but not before its
    first is absorbed (``event_count`` + 1, bounds unchanged). A time before the open
    session's first event raises ``ValueError``: the state cannot rebuild sessions it no
    longer holds, so a processor must send such late events through :func:`sessionize`
    over the user's stored events instead. After a session was closed, the state keeps
    no memory of it.
    """

    __slots__ = ("_open", "gap", "max_length")

    def __init__(
        self, *, gap: timedelta = SESSION_GAP, max_length: timedelta = SESSION_MAX_LENGTH
    ) -> None:
        _check_params(gap, max_length)
        self.gap = gap
        self.max_length = max_length
        self._open: Session | None = None

    @property
    def open_session(self) -> Session | None:
        """The session still open (may grow with the next event), or None."""
        return self._open

    def add(self, time: datetime) -> list[Session]:
        """Add one event at ``time``; return the sessions this closed (0 or 1 of them).

        Raises ``ValueError`` for a naive time or a time before the open session's start.
        """
        t = _aware(time)
        current = self._open
        if current is None:
            self._open = Session(t, t, 1)
            return []
        if t < current.start:
            raise ValueError(
                f"event at {t.isoformat()} is before the open session's start "
                f"{current.start.isoformat()}; re-sessionize the user's events with sessionize()"
            )
        if t <= current.end:
            self._open = Session(current.start, current.end, current.event_count + 1)
            return []
        if _continues(current, t, self.gap, self.max_length):
            self._open = Session(current.start, t, current.event_count + 1)
            return []
        self._open = Session(t, t, 1)
        return [current]

    def close_before(self, watermark: datetime) -> list[Session]:
        """Close the open session if no event at or after ``watermark`` could join it.

        ``watermark`` promises that every later event has ``time >= watermark``. The open
        session is closed (returned and forgotten) when ``watermark - end > gap`` or
        ``watermark - start >= max_length``; otherwise it stays open and ``[]`` is
        returned. Raises ``ValueError`` for a naive watermark.
        """
        w = _aware(watermark, "watermark")
        current = self._open
        if current is None:
            return []
        if w - current.end > self.gap or w - current.start >= self.max_length:
            self._open = None
            return [current]
        return []

    def flush(self) -> list[Session]:
        """Close and return the open session regardless of time (end of input)."""
        current, self._open = self._open, None
        return [] if current is None else [current]
