"""Turn successive "currently playing" answers of the Spotify Web API into playback events.

Pure: no I/O, no clock. :class:`PlaybackTracker` gets each observation (a
:class:`Snapshot`, or ``None`` for "nothing playing", HTTP 204) with the time it was made
and returns the events it implies, in time order:

- a new item (or the same item started over after reaching its end) -> ``play_end`` of
  the previous play and ``play_start`` of the new one, at the instant the new one
  started (``observed - progress``, never before the previous observation); the previous
  play ends ``completed`` when its position reached the end (within ``tolerance_s``),
  else ``next``;
- playing -> paused: ``pause`` at the instant the position says it stopped moving;
  paused -> playing: ``resume`` at the instant it started moving again;
- a position that moved other than the clock says (more than ``tolerance_s``): ``seek``
  from where it would be to where it is;
- playing on: a ``heartbeat`` once ``heartbeat_s`` passed since the play's last event;
- nothing playing any more: ``play_end`` (``completed`` at the end of the item when it
  would have reached it before this observation, else ``stopped``).

Time between two observations counts only as the processor counts it (from the events'
times), so a play is never credited with time no observation supports: a play first
seen mid-track starts where it was seen.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

#: Seconds between heartbeats of a play that is playing on.
HEARTBEAT_S = 30.0
#: How far (seconds) a position may differ from the clock's before it counts as a seek.
TOLERANCE_S = 3.0
#: Where the events say they come from (``properties.source``).
SOURCE = "spotify-poller"


@dataclass(frozen=True)
class Snapshot:
    """One "currently playing" answer about an item: ``item_id`` (its URI), the
    ``content`` object of the event model (content_id, content_type, title, creator,
    duration_s), its ``album`` (tracks), the position ``progress_s`` (seconds) and
    whether it ``is_playing``."""

    item_id: str
    content: Mapping[str, Any]
    progress_s: float
    is_playing: bool
    album: str | None = None

    @property
    def duration_s(self) -> float | None:
        """The item's length in seconds, when Spotify gave it."""
        value = self.content.get("duration_s")
        return float(value) if isinstance(value, int | float) and value > 0 else None


def snapshot_of(answer: Mapping[str, Any] | None) -> Snapshot | None:
    """The :class:`Snapshot` of a ``GET /v1/me/player/currently-playing`` JSON answer
    (``None`` for a 204, an ad, or an answer without an item)."""
    if not answer:
        return None
    item = answer.get("item")
    if not isinstance(item, Mapping) or not item.get("uri"):
        return None
    kind = answer.get("currently_playing_type") or item.get("type") or "track"
    content: dict[str, Any] = {"content_id": str(item["uri"])[:256]}
    name = item.get("name")
    if isinstance(name, str) and name.strip():
        content["title"] = name.strip()[:512]
    album = None
    if kind == "episode":
        content["content_type"] = "episode"
        show = item.get("show")
        if isinstance(show, Mapping) and isinstance(show.get("name"), str):
            content["creator"] = show["name"][:512]
    else:
        content["content_type"] = "track"
        artists = [a.get("name") for a in item.get("artists") or [] if isinstance(a, Mapping)]
        names = [a for a in artists if isinstance(a, str) and a]
        if names:
            content["creator"] = ", ".join(names)[:512]
        album_info = item.get("album")
        if isinstance(album_info, Mapping) and isinstance(album_info.get("name"), str):
            album = album_info["name"][:512]
    duration_ms = item.get("duration_ms")
    if isinstance(duration_ms, int | float) and duration_ms > 0:
        content["duration_s"] = duration_ms / 1000
    progress_ms = answer.get("progress_ms")
    progress = progress_ms / 1000 if isinstance(progress_ms, int | float) else 0.0
    return Snapshot(
        str(item["uri"]), content, max(0.0, progress), bool(answer.get("is_playing")), album
    )


@dataclass
class _Play:
    playback_id: str
    snap: Snapshot
    at: datetime  # of the last observation
    position_s: float  # at the last observation
    playing: bool
    last_event_at: datetime
    seq: int = 0

    def position_at(self, moment: datetime) -> float:
        """Where the playhead is at ``moment`` (not before the last observation), as the
        clock says: moving while playing, capped at the item's end."""
        moved = (moment - self.at).total_seconds() if self.playing else 0.0
        position = self.position_s + max(0.0, moved)
        duration = self.snap.duration_s
        return min(position, duration) if duration else position


def _s(value: float) -> float:
    return round(value, 3)


class PlaybackTracker:
    """Follows one listener's player (see the module docstring).

    ``user_id`` goes on every event; ``heartbeat_s`` and ``tolerance_s`` as above.
    :meth:`observe` and :meth:`stop` return event objects of the event model with
    ``occurred_at`` as a UTC-aware ``datetime`` (:func:`as_json` makes them JSON).
    """

    def __init__(
        self, user_id: str, *, heartbeat_s: float = HEARTBEAT_S, tolerance_s: float = TOLERANCE_S
    ) -> None:
        self.user_id = user_id
        self.heartbeat_s = heartbeat_s
        self.tolerance_s = tolerance_s
        self._play: _Play | None = None

    @property
    def playing(self) -> bool:
        """Whether the current play (if any) was playing at the last observation."""
        return self._play is not None and self._play.playing

    def observe(self, snap: Snapshot | None, at: datetime) -> list[dict[str, Any]]:
        """The events implied by observation ``snap`` made at ``at`` (UTC-aware, later
        than the previous observation's); ``None`` means nothing is playing."""
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        play = self._play
        if play is not None and at < play.at:
            at = play.at  # a clock that went back: take it as no time passed
        if snap is None:
            return self.stop(at)
        if play is None:
            return self._start(snap, at, at, [])
        if snap.item_id != play.snap.item_id or self._started_over(play, snap, at):
            if snap.is_playing:
                boundary = max(play.at, at - timedelta(seconds=snap.progress_s))
            else:
                boundary = self._end_of(play, at)
            events = self._end(play, boundary, "next")
            return self._start(snap, boundary, at, events)
        return self._same_item(play, snap, at)

    def stop(self, at: datetime) -> list[dict[str, Any]]:
        """End the current play (nothing plays any more, or the poller stops) at ``at``:
        at the item's end when it would have reached it before ``at``."""
        play = self._play
        if play is None:
            return []
        self._play = None
        return self._end(play, self._end_of(play, at), "stopped")

    # -- helpers ---------------------------------------------------------------------

    def _end_of(self, play: _Play, at: datetime) -> datetime:
        duration = play.snap.duration_s
        if play.playing and duration:
            left = max(0.0, duration - play.position_s)
            return min(at, play.at + timedelta(seconds=left))
        return at

    def _started_over(self, play: _Play, snap: Snapshot, at: datetime) -> bool:
        duration = play.snap.duration_s
        if not duration or not play.playing:
            return False
        expected = play.position_at(at)
        return (
            expected >= duration - self.tolerance_s
            and snap.progress_s + self.tolerance_s < expected
        )

    def _event(
        self, play: _Play, kind: str, at: datetime, position: float, **fields: Any
    ) -> dict[str, Any]:
        play.seq += 1
        play.last_event_at = at
        digest = hashlib.sha256(f"{play.playback_id}\x1f{play.seq}".encode()).hexdigest()
        return {
            "event_type": kind,
            "event_id": f"spotify-poll-{digest[:32]}",
            "occurred_at": at,
            "user_id": self.user_id,
            "playback_id": play.playback_id,
            "position_s": _s(position),
            **fields,
        }

    def _start(
        self, snap: Snapshot, started: datetime, at: datetime, events: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        moved = (at - started).total_seconds() if snap.is_playing else 0.0
        position = max(0.0, snap.progress_s - moved)
        play = _Play(f"spotify:{uuid.uuid4().hex}", snap, started, position, True, started)
        properties: dict[str, Any] = {"source": SOURCE, "uri": snap.item_id}
        if snap.album:
            properties["album"] = snap.album
        events.append(
            self._event(
                play,
                "play_start",
                started,
                position,
                content=dict(snap.content),
                properties=properties,
            )
        )
        if not snap.is_playing:
            events.append(self._event(play, "pause", started, position))
            play.playing = False
        self._play = play
        play.at, play.position_s, play.playing = at, snap.progress_s, snap.is_playing
        return events

    def _end(self, play: _Play, at: datetime, reason: str) -> list[dict[str, Any]]:
        position = play.position_at(at)
        duration = play.snap.duration_s
        if duration and position >= duration - self.tolerance_s:
            reason = "completed"
        self._play = None
        return [self._event(play, "play_end", at, position, reason=reason)]

    def _same_item(self, play: _Play, snap: Snapshot, at: datetime) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        elapsed = (at - play.at).total_seconds()
        moved = snap.progress_s - play.position_s
        tol = self.tolerance_s
        if play.playing and snap.is_playing:
            expected = play.position_at(at)
            if abs(snap.progress_s - expected) > tol:
                events.append(
                    self._event(play, "seek", at, snap.progress_s, from_position_s=_s(expected))
                )
            elif (at - play.last_event_at).total_seconds() >= self.heartbeat_s:
                events.append(self._event(play, "heartbeat", at, snap.progress_s))
        elif play.playing:  # paused since the last observation
            if -tol <= moved <= elapsed + tol:
                paused = play.at + timedelta(seconds=min(max(moved, 0.0), elapsed))
                events.append(self._event(play, "pause", paused, snap.progress_s))
            else:  # sought too: where it paused is unknown; pause now, then the seek
                expected = play.position_at(at)
                events.append(self._event(play, "pause", at, expected))
                events.append(
                    self._event(play, "seek", at, snap.progress_s, from_position_s=_s(expected))
                )
        elif snap.is_playing:  # resumed since the last observation
            if -tol <= moved <= elapsed + tol:
                resumed = at - timedelta(seconds=min(max(moved, 0.0), elapsed))
                events.append(self._event(play, "resume", resumed, play.position_s))
            else:
                events.append(
                    self._event(
                        play, "seek", at, snap.progress_s, from_position_s=_s(play.position_s)
                    )
                )
                events.append(self._event(play, "resume", at, snap.progress_s))
        elif abs(moved) > tol:  # paused, and sought while paused
            events.append(
                self._event(play, "seek", at, snap.progress_s, from_position_s=_s(play.position_s))
            )
        play.at, play.position_s, play.playing, play.snap = (
            at,
            snap.progress_s,
            snap.is_playing,
            snap,
        )
        return events


def as_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """``event`` with ``occurred_at`` as ISO 8601 text (``Z``), for a JSON body."""
    out = dict(event)
    moment = out["occurred_at"]
    if isinstance(moment, datetime):
        out["occurred_at"] = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return out
