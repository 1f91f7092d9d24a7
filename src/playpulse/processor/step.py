"""The processor's pure step: one poll's batches in, what to write out.

Processing a poll is ``plan -> load -> step`` until the step needs nothing more, then
write:

- :func:`step` is a coroutine (a generator). Each value it yields names state it needs
  from the real-time store: :class:`ReadStates` (state blobs by key), :class:`ReadDedup`
  (dedup keys' expiries) or :class:`ListStates` (state keys under a prefix). The driver
  loads that and sends the answer back in; what the step asks next may depend on what
  it was given (the event chunks of a play whose state it just read, the plays that may
  be final). When it needs nothing more it returns a :class:`StepResult`: the store
  batch, the lake rows, the quarantine entries and the stats.
- The step reads no clock and does no I/O: its result depends only on the records, the
  answers and :class:`Memory` (what the driver keeps in memory between polls: open
  plays and sessions per partition, open plays' decoded events and state machines).
  It updates ``memory`` in place to what it is after the poll (the driver hands it over
  and must not use it meanwhile).
- :func:`run_step` drives it from any answering function; :func:`step_on` runs it
  against plain mappings (no store at all, what the unit tests do).
  :class:`playpulse.processor.pipeline.Processor` is the driver on a real store.

What a poll decides (see :mod:`playpulse.processor.pipeline` for the whole picture):
decoding (undecodable records go to the quarantine), dropping duplicates within the
dedup window, marking events late against their user's watermark, rebuilding the plays
and sessions the poll touches and applying the difference of their contributions,
and the lake rows of events, finished plays and closed sessions.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import msgspec

from playpulse.errors import EventValidationError, StoreError
from playpulse.events.codec import decode_stored
from playpulse.events.model import CommerceEvent, EventBase, PlaybackEvent
from playpulse.lake.schema import play_row, session_row
from playpulse.processor import aggregate
from playpulse.processor import state as pstate
from playpulse.processor.plays import PlayBuilder, PlaySummary, is_closed, play_key
from playpulse.processor.sessions import Session, extend_sessions_us, sessionize_us
from playpulse.quarantine.store import Rejection
from playpulse.store.base import StoreBatch
from playpulse.stream.base import Batch, Record

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US = 86_400_000_000
_EPOCH_ORDINAL = _EPOCH.date().toordinal()
_PLAYING = frozenset(
    {
        "play_start",
        "resume",
        "heartbeat",
        "buffer_end",
        "seek",
        "speed_change",
        "chapter_change",
        "bookmark",
        "visibility_change",
        "buffer_start",
    }
)


class StepOptions(Protocol):
    """What the step needs of the processor's options
    (:class:`~playpulse.processor.pipeline.ProcessorOptions` has all of it; see there)."""

    @property
    def consumer(self) -> str: ...  # pragma: no cover - a protocol
    @property
    def deduplicate(self) -> bool: ...  # pragma: no cover - a protocol
    @property
    def dedup_window(self) -> timedelta: ...  # pragma: no cover - a protocol
    @property
    def allowed_lateness(self) -> timedelta: ...  # pragma: no cover - a protocol
    @property
    def idle_timeout(self) -> timedelta: ...  # pragma: no cover - a protocol
    @property
    def session_max_length(self) -> timedelta: ...  # pragma: no cover - a protocol
    @property
    def play_cache_size(self) -> int: ...  # pragma: no cover - a protocol


# -- what the step asks for -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadStates:
    """Read state blobs: answer ``dict[str, bytes]`` of those of ``keys`` that exist
    (:meth:`~playpulse.store.base.RealtimeStore.states`)."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadDedup:
    """Read dedup keys: answer ``dict[str, datetime]``, the expiry (UTC) of each of
    ``keys`` that is remembered (:meth:`~playpulse.store.base.RealtimeStore.dedup_expiries`)."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ListStates:
    """List state keys: answer ``list[str]``, every stored state key starting with
    ``prefix`` (:meth:`~playpulse.store.base.RealtimeStore.state_keys`)."""

    prefix: str


Read = ReadStates | ReadDedup | ListStates
#: The step: yields reads, is sent their answers, returns the result.
Step = Generator[Read, Any, "StepResult"]


@dataclass
class BatchStats:
    """What one batch did: events read, kept, duplicates dropped, late, quarantined."""

    read: int = 0
    processed: int = 0
    duplicates: int = 0
    late: int = 0
    quarantined: int = 0
    plays_finished: int = 0


@dataclass
class Memory:
    """What the driver keeps between polls and hands to the step (which updates it).

    - ``open_plays``: per partition, open play key -> its last event (us since the
      epoch, UTC);
    - ``open_sessions``: per partition, user with an open session -> the session's last
      event (us);
    - ``play_events``: ``PLAY#`` state key -> that open play's decoded events and state
      machine (at most ``play_cache_size``, least recently updated dropped first; a play
      not here is rebuilt from its stored events: same numbers, more CPU);
    - ``finalized_day``: per partition, the day (of the finalization horizon) last
      scanned for plays that can no longer change.
    """

    open_plays: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    open_sessions: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    play_events: dict[str, tuple[list[PlaybackEvent], PlayBuilder | None]] = field(
        default_factory=dict
    )
    finalized_day: dict[int, int] = field(default_factory=dict)


@dataclass
class StepResult:
    """What a poll writes.

    - ``batch``: the store batch (counters, sets, dedup keys, states, offsets);
    - ``event_rows``: the lake's ``events`` rows, ``(event, raw payload, partition,
      offset, late)`` (:func:`~playpulse.lake.schema.events_table`);
    - ``play_rows``, ``session_rows``: the lake's ``plays`` and ``sessions`` rows;
    - ``rejections``: records that could not be decoded, for the quarantine;
    - ``newest_received``: the newest receipt time (UTC) of the kept events, ``None``
      when none was kept;
    - ``stats``: the poll's counts.
    """

    batch: StoreBatch
    event_rows: list[tuple[EventBase, bytes, int, int, bool]] = field(default_factory=list)
    play_rows: list[dict[str, Any]] = field(default_factory=list)
    session_rows: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    newest_received: datetime | None = None
    stats: BatchStats = field(default_factory=BatchStats)


# -- running it -----------------------------------------------------------------------


def run_step(steps: Step, answer: Callable[[Read], Any]) -> StepResult:
    """Drive ``steps`` to its end, answering each read with ``answer(read)``."""
    try:
        read = next(steps)
        while True:
            read = steps.send(answer(read))
    except StopIteration as done:
        result: StepResult = done.value
        return result


def step_on(
    states: Mapping[str, bytes],
    dedup: Mapping[str, datetime],
    memory: Memory,
    batches: Sequence[Batch],
    options: StepOptions,
) -> StepResult:
    """:func:`step` against plain mappings: ``states`` (state key -> blob) and ``dedup``
    (dedup key -> expiry, UTC) stand for the store."""

    def answer(read: Read) -> Any:
        if isinstance(read, ReadStates):
            return {k: states[k] for k in read.keys if k in states}
        if isinstance(read, ReadDedup):
            return {k: dedup[k] for k in read.keys if k in dedup}
        return sorted(k for k in states if k.startswith(read.prefix))

    return run_step(step(memory, batches, options), answer)


def step(memory: Memory, batches: Sequence[Batch], options: StepOptions) -> Step:
    """Process the batches of one poll (at most one per partition; see the module
    docstring for the protocol). Raises :class:`ValueError` for two batches of one
    partition, :class:`~playpulse.errors.StoreError` when the answers lack the events of
    a play the state says exist."""
    if len({b.partition for b in batches}) != len(batches):
        raise ValueError("a step takes at most one batch per partition")
    out = StepResult(StoreBatch(options.consumer))
    for batch in batches:
        yield from _Partition(memory, options, batch, out).run()
    return out


_fingerprint_encoder = msgspec.json.Encoder()


def dedup_key(event: EventBase) -> str:
    """``event_id`` plus a hash of the event's content without the transport times
    (``sent_at``, ``received_at``, ``derived_at``), so a retried send is a duplicate
    but a different event that reuses an id is not.

    The hash is of the event's JSON with those three set to null. They are set on
    ``event`` itself for the encoding and restored right after (a copy of the struct
    runs its validation again: about a sixth more per event); do not share ``event``
    with another thread meanwhile."""
    sent, received, derived = event.sent_at, event.received_at, event.derived_at
    event.sent_at = event.received_at = event.derived_at = None
    try:
        data = _fingerprint_encoder.encode(event)
    finally:
        event.sent_at, event.received_at, event.derived_at = sent, received, derived
    return f"{event.event_id}:{hashlib.blake2b(data, digest_size=8).hexdigest()}"


def decode_records(
    records: Sequence[Record],
) -> tuple[list[tuple[Record, EventBase]], list[Rejection]]:
    """The records' events, and a quarantine entry for each record that cannot be
    decoded (origin ``stream/<partition>/<offset>``, so a redone batch adds it once)."""
    out = []
    rejections = []
    for record in records:
        try:
            out.append((record, decode_stored(record.value)))
        except EventValidationError as exc:
            rejections.append(
                Rejection(
                    record.value,
                    exc.reason,
                    exc.errors,
                    record.appended_at,
                    "processor",
                    origin=f"stream/{record.partition}/{record.offset}",
                )
            )
    return out, rejections


class _Partition:
    """One partition's batch of a step."""

    def __init__(self, memory: Memory, options: StepOptions, batch: Batch, out: StepResult) -> None:
        self.memory = memory
        self.options = options
        self.batch = batch
        self.out = out
        self.p = batch.partition

    def _user_watermarks(self, users: Iterable[str]) -> Generator[Read, Any, dict[str, int]]:
        keys = {u: pstate.user_watermark_key(u) for u in users}
        stored = yield ReadStates(tuple(keys.values()))
        return {u: int(stored[k]) for u, k in keys.items() if k in stored}

    def run(self) -> Generator[Read, Any, None]:
        """One partition's batch into ``out``."""
        opts = self.options
        batch = self.batch
        out = self.out
        p = self.p
        out.batch.offsets[p] = batch.next_offset
        out.stats.read += len(batch.records)
        # Two event-time clocks, both advanced in stream order only: the partition's
        # watermark closes idle plays; each user's watermark decides lateness and when
        # a user's plays and sessions are final.
        wm_key = pstate.watermark_key(p)
        wm_blob = (yield ReadStates((wm_key,))).get(wm_key)
        watermark = int(wm_blob) if wm_blob else None
        lateness_us = _us_delta(opts.allowed_lateness)

        decoded, rejections = decode_records(batch.records)
        out.rejections.extend(rejections)
        out.stats.quarantined += len(rejections)
        # EventBase.actor_id, inlined: a property call per event costs more than this.
        actors = [ev.user_id or ev.anonymous_id or "" for _, ev in decoded]
        user_wm = yield from self._user_watermarks(set(actors))
        keys: list[str | None] = (
            [dedup_key(ev) for _, ev in decoded] if opts.deduplicate else [None] * len(decoded)
        )
        # key -> until when (received_at) a copy of that event is a duplicate
        remembered: dict[str, datetime] = yield ReadDedup(tuple(k for k in keys if k is not None))
        plays: dict[str, list[tuple[bytes, PlaybackEvent]]] = defaultdict(list)
        user_times: dict[str, list[int]] = defaultdict(list)
        live: dict[str, tuple[int, bool, str | None]] = {}  # LiveState's fields
        commerce = aggregate._new()
        newest_received: datetime | None = None
        duplicates = kept = late_count = 0
        per_day: Counter[tuple[int, str]] = Counter()  # (UTC day since the epoch, type)
        dedup_window = opts.dedup_window
        dedup_out = out.batch.dedup
        event_rows = out.event_rows
        for (record, event), key, actor in zip(decoded, keys, actors, strict=True):
            received = event.received_at
            assert received is not None
            if key is not None:
                until = remembered.get(key)
                if until is not None and received <= until:
                    duplicates += 1
                    continue
                expiry = received + dedup_window
                remembered[key] = expiry
                dedup_out.append((key, expiry))
            occurred = _us(event.occurred_at)
            event_type = event.event_type
            actor_wm = user_wm.get(actor)
            if actor_wm is None:
                late = False
                user_wm[actor] = occurred
            else:
                late = occurred < actor_wm - lateness_us
                if occurred > actor_wm:
                    user_wm[actor] = occurred
            if watermark is None or occurred > watermark:
                watermark = occurred
            if newest_received is None or received > newest_received:
                newest_received = received
            event_rows.append((event, record.value, p, record.offset, late))
            kept += 1
            per_day[(occurred // _DAY_US, event_type)] += 1
            if late:
                late_count += 1
                continue
            if isinstance(event, PlaybackEvent):
                pkey = event.playback_id  # play_key's first choice, inlined
                plays[pkey if pkey is not None else play_key(event)].append((record.value, event))
                user_times[actor].append(occurred)
                current = live.get(actor)
                if current is None or occurred >= current[0]:
                    cid = event.content.content_id if event.content else None
                    if cid is None and current is not None:
                        cid = current[2]
                    live[actor] = (occurred, event_type in _PLAYING, cid)
            elif isinstance(event, CommerceEvent):
                aggregate.commerce_contribution(event, commerce)
        out.stats.duplicates += duplicates
        out.stats.processed += kept
        out.stats.late += late_count
        out.batch.add(
            "PIPELINE",
            "TOTAL",
            events=float(kept),
            late=float(late_count),
            duplicates=float(duplicates),
        )
        days = {d: date.fromordinal(_EPOCH_ORDINAL + d).isoformat() for d, _ in per_day}
        for (day, event_type), n in per_day.items():
            out.batch.add("PIPELINE", f"DAY#{days[day]}", **{f"events_{event_type}": float(n)})
        _merge(out.batch, commerce)
        if watermark is not None:
            out.batch.states[wm_key] = str(watermark).encode()
            for user, wm in user_wm.items():
                out.batch.states[pstate.user_watermark_key(user)] = str(wm).encode()
            yield from self._update_plays(plays, watermark, user_wm)
            yield from self._update_sessions(user_times, user_wm, watermark)
        yield from self._update_live(live)
        if newest_received is not None:
            # One value per partition (each partition's batches are serial); readers take
            # the maximum over partitions.
            out.batch.states[pstate.newest_received_key(p)] = str(_us(newest_received)).encode()
            if out.newest_received is None or newest_received > out.newest_received:
                out.newest_received = newest_received

    def _update_plays(
        self,
        new_events: dict[str, list[tuple[bytes, PlaybackEvent]]],
        watermark_us: int,
        user_wm: dict[str, int],
    ) -> Generator[Read, Any, None]:
        opts = self.options
        p = self.p
        out = self.out
        batch = self.batch
        idle_us = _us_delta(opts.idle_timeout)
        lateness_us = _us_delta(opts.allowed_lateness)
        margin_us = _us_delta(opts.allowed_lateness + timedelta(days=1))
        open_plays = self.memory.open_plays[p]
        # Plays with new events, and open plays the watermark has made idle.
        touched = set(new_events)
        touched.update(k for k, last in open_plays.items() if last < watermark_us - idle_us)
        if not touched:
            yield from self._finalize_plays(watermark_us, user_wm)
            return
        state_keys = {k: pstate.play_key(p, k) for k in touched}
        stored = yield ReadStates(tuple(state_keys.values()))
        now = _from_us(watermark_us)
        cache = self.memory.play_events
        closing: list[tuple[str, pstate.PlayState]] = []
        new_chunks: dict[str, list[bytes]] = {}  # chunk key -> raw events, written now
        for pkey in touched:
            skey = state_keys[pkey]
            blob = stored.get(skey)
            state = pstate.decode_play(pstate.unpack(blob)) if blob else pstate.PlayState([], [], 0)
            if not state.count:
                state.count = len(state.events)  # a state from before event chunks
            # Open plays stay in memory between batches: their decoded events and their
            # state machine, which takes events later than all it has in time
            # proportional to them (decoding and replaying every event of a play at
            # each batch made long plays quadratic).
            cached = cache.pop(skey, None)
            if cached is None or len(cached[0]) != state.count:
                chunk_keys = tuple(state.chunk_keys(p, pkey))
                chunks = (yield ReadStates(chunk_keys)) if chunk_keys else {}
                decoded = (decode_stored(raw) for raw in _raw_events(state, p, pkey, chunks))
                cached = ([e for e in decoded if isinstance(e, PlaybackEvent)], None)
            events, builder = cached
            added = new_events.get(pkey, [])
            if added:
                offset = batch.records[-1].offset
                chunk = pstate.chunk_key(p, pkey, offset)
                raws = [raw for raw, _ in added]
                out.batch.states[chunk] = pstate.encoder.encode(raws)
                new_chunks[chunk] = raws
                state.chunks.append(offset)
                state.count += len(added)
                events.extend(event for _, event in added)
            fresh = [event for _, event in added]
            if builder is not None and builder.can_extend(fresh):
                builder.extend(fresh)
            elif builder is None or fresh:
                builder = PlayBuilder.of(events, idle_timeout=opts.idle_timeout)
            summary = builder.summary(now)
            live = _is_live(events, summary, lateness_us)
            contribution = aggregate.play_contribution(summary) if live else {}
            if state.contribution:
                old = aggregate.from_rows(state.contribution)
                _merge(out.batch, aggregate.diff(contribution, old))
                rows = aggregate.to_rows(contribution)
            else:  # a new play (the common case of big batches): nothing to retract
                rows = _merge_nonzero(out.batch, contribution)
            if live:
                _add_listeners(summary, builder.days, out.batch)
            closed = is_closed(summary, now, opts.idle_timeout)
            changed = bool(added) or closed != state.closed
            if closed and changed:
                out.play_rows.append(play_row(summary, batch.records[-1].offset))
                out.stats.plays_finished += 1
            state.contribution = rows
            state.last_us = _us(summary.ended_at)
            state.closed = closed
            state.user = summary.user_id
            wm = user_wm.get(summary.user_id)
            if closed and wm is not None and state.last_us < wm - margin_us:
                # Final already (see _finalize_plays): no later event can change it, so
                # it keeps no state (history read in time order closes most plays so).
                open_plays.pop(pkey, None)
                cache.pop(skey, None)
                out.batch.states[skey] = None
                for key in state.chunk_keys(p, pkey):
                    out.batch.states[key] = None
            elif closed:
                open_plays.pop(pkey, None)
                if changed or state.chunks:
                    closing.append((pkey, state))
                else:
                    out.batch.states[skey] = pstate.pack(state, pstate.LEVEL_CLOSED)
            else:
                out.batch.states[skey] = pstate.pack(state, pstate.LEVEL_OPEN)
                open_plays[pkey] = state.last_us
                cache[skey] = (events, builder)
                while len(cache) > opts.play_cache_size:
                    # The least recently updated play: it is rebuilt from the store if
                    # it changes again.
                    del cache[next(iter(cache))]
        yield from self._fold_closed_plays(closing, new_chunks)
        yield from self._finalize_plays(watermark_us, user_wm)

    def _fold_closed_plays(
        self, closing: list[tuple[str, pstate.PlayState]], new_chunks: dict[str, list[bytes]]
    ) -> Generator[Read, Any, None]:
        """Write the states of plays that just closed with all their raw events inline
        (chunks folded in, then deleted) and compressed: what a late event needs to
        rebuild the play, in about a tenth of the space of the chunks. ``new_chunks``:
        the chunks this batch wrote (key -> raw events), taken as they are and dropped
        from the batch rather than deleted (no stored copy exists)."""
        if not closing:
            return
        p = self.p
        states = self.out.batch.states
        wanted = [k for pkey, st in closing for k in st.chunk_keys(p, pkey)]
        pending = {k: states[k] for k in wanted if k in states and k not in new_chunks}
        stored = yield ReadStates(
            tuple(k for k in wanted if k not in pending and k not in new_chunks)
        )
        for pkey, state in closing:
            raw = list(state.events)
            for key in state.chunk_keys(p, pkey):
                fresh = new_chunks.get(key)
                if fresh is not None:
                    raw.extend(fresh)
                    states.pop(key, None)
                    continue
                blob = pending.get(key) or stored.get(key)
                if blob is None:
                    raise StoreError(f"the events chunk {key} of a closed play is missing")
                raw.extend(pstate.decode_chunk(blob))
                states[key] = None
            state.events = raw
            state.chunks = []
            state.count = len(raw)
            states[pstate.play_key(p, pkey)] = pstate.pack(state, pstate.LEVEL_CLOSED)

    def _finalize_plays(
        self, watermark_us: int, user_wm: dict[str, int]
    ) -> Generator[Read, Any, None]:
        # A closed play whose user's watermark is past it by more than the allowed
        # lateness (plus a day) can no longer change: forget its state (its contribution
        # stays in the store).
        p = self.p
        states = self.out.batch.states
        margin = _us_delta(self.options.allowed_lateness + timedelta(days=1))
        # Open plays cannot be final, and a play this batch changed is not final either
        # (its stored state is the old one): skip them.
        open_plays = self.memory.open_plays[p]
        # Cheap most of the time: only scan when the partition's horizon passed a new day.
        day = (watermark_us - margin) // _DAY_US
        if self.memory.finalized_day.get(p) == day:
            return
        self.memory.finalized_day[p] = day
        listed: list[str] = yield ListStates(pstate.play_prefix(p))
        candidates = [
            key
            for key in listed
            if key not in states and pstate.split_key(key)[1] not in open_plays
        ]
        wms = dict(user_wm)
        # A few hundred states at a time: memory stays flat however many plays are kept.
        for start in range(0, len(candidates), pstate.SCAN_CHUNK):
            blobs = yield ReadStates(tuple(candidates[start : start + pstate.SCAN_CHUNK]))
            heads = [(key, pstate.decode_head(pstate.unpack(blob))) for key, blob in blobs.items()]
            wms.update((yield from self._user_watermarks({h.user for _, h in heads} - set(wms))))
            for key, head in heads:
                wm = wms.get(head.user)
                if head.closed and wm is not None and head.last_us < wm - margin:
                    states[key] = None
                    for chunk in head.chunks:
                        states[pstate.chunk_key(p, pstate.split_key(key)[1], chunk)] = None

    def _update_sessions(
        self, user_times: dict[str, list[int]], user_wm: dict[str, int], watermark_us: int
    ) -> Generator[Read, Any, None]:
        """Re-sessionize the users with new events, and those whose open session the
        partition watermark has made idle; write the sessions that closed or changed to
        the lake's ``sessions`` table and keep the open one in the store
        (:func:`~playpulse.processor.state.open_session_key`)."""
        opts = self.options
        p = self.p
        out = self.out
        margin = _us_delta(opts.allowed_lateness + timedelta(days=1))
        gap_us = _us_delta(opts.idle_timeout)
        open_sessions = self.memory.open_sessions[p]
        touched = set(user_times)
        touched.update(u for u, end in open_sessions.items() if end < watermark_us - gap_us)
        if not touched:
            return
        missing = touched - set(user_wm)
        if missing:
            user_wm = {**user_wm, **(yield from self._user_watermarks(missing))}
        keys = {u: pstate.session_key(p, u) for u in touched}
        stored = yield ReadStates(tuple(keys.values()))
        version = self.batch.records[-1].offset
        max_us = _us_delta(opts.session_max_length)
        for user in touched:
            horizon = user_wm[user] - margin if user in user_wm else watermark_us - margin
            blob = stored.get(keys[user])
            state = (
                pstate.decode_session(pstate.unpack(blob)) if blob else pstate.SessionState([], [])
            )
            new = sorted(user_times.get(user, []))
            if state.spans and (not new or new[0] >= state.times_us[-1]):
                # Later than everything so far (the usual case): extend the sessions.
                times = state.times_us + new
                spans = extend_sessions_us(state.spans, new, gap_us, max_us)
            else:  # out of order, a new user, or a state from before spans were kept
                times = sorted(state.times_us + new)
                spans = sessionize_us(times, gap_us, max_us)
            if not spans:
                out.batch.states[keys[user]] = None
                out.batch.states[pstate.open_session_key(p, user)] = None
                open_sessions.pop(user, None)
                continue
            sessions = [Session(_from_us(a), _from_us(b), n) for a, b, n in spans]
            old = aggregate.from_rows(state.contribution)
            new_total = aggregate.session_contribution(user, sessions)
            _merge(out.batch, aggregate.diff(new_total, old))
            # Every session but the last is closed (a later event started a new one); the
            # last closes once the partition's watermark is more than the gap past it.
            last_open = watermark_us - spans[-1][1] <= gap_us
            closed = spans[:-1] if last_open else spans
            _emit_sessions(user, closed, state.emitted, version, out.session_rows)
            okey = pstate.open_session_key(p, user)
            if last_open:
                out.batch.states[okey] = pstate.encoder.encode(spans[-1])
                open_sessions[user] = spans[-1][1]
            elif user in open_sessions or blob:
                out.batch.states[okey] = None
                open_sessions.pop(user, None)
            # Sessions that ended before the horizon are final: their contribution stays
            # in the store and their lake rows stand; drop them (and their times) from
            # the state.
            live = [s for s in spans if s[1] >= horizon]
            if live:
                cutoff = live[0][0]
                state.times_us = times[bisect_left(times, cutoff) :]
                state.spans = live
                state.contribution = aggregate.to_rows(
                    aggregate.session_contribution(user, sessions[len(spans) - len(live) :])
                )
                state.emitted = [list(s) for s in closed if s[0] >= cutoff]
                out.batch.states[keys[user]] = pstate.pack(state, pstate.LEVEL_OPEN)
            else:
                out.batch.states[keys[user]] = None

    def _update_live(
        self, live: dict[str, tuple[int, bool, str | None]]
    ) -> Generator[Read, Any, None]:
        if not live:
            return
        keys = {u: pstate.live_key(u) for u in live}
        stored = yield ReadStates(tuple(keys.values()))
        for user, (at_us, playing, content_id) in live.items():
            blob = stored.get(keys[user])
            if blob:
                old = pstate.decode_live(blob)
                if old.at_us > at_us:
                    continue
            state = pstate.LiveState(at_us, playing, content_id)
            self.out.batch.states[keys[user]] = pstate.encoder.encode(state)


def _raw_events(
    state: pstate.PlayState, partition: int, play: str, chunks: Mapping[str, bytes]
) -> list[bytes]:
    """All raw events of a play, in the order they were added: those inline in its
    state, then its chunks (``chunks`` answers its chunk keys)."""
    raw = list(state.events)
    for key in state.chunk_keys(partition, play):
        blob = chunks.get(key)
        if blob is None:
            raise StoreError(f"the events chunk {key} of an open play is missing")
        raw.extend(pstate.decode_chunk(blob))
    return raw


def _add_listeners(summary: PlaySummary, days: set[int], batch: StoreBatch) -> None:
    for day in (date.fromordinal(d).isoformat() for d in days):
        # Daily listeners count a play even when its content is unknown (a play
        # whose play_start never arrived).
        batch.members.add((f"LISTENERS#TOTAL#{day}", summary.user_id))
        if summary.content_id is not None:
            batch.members.add((f"LISTENERS#CONTENT#{summary.content_id}#{day}", summary.user_id))
        if summary.content_id is not None and summary.creator:
            batch.members.add((f"LISTENERS#CREATOR#{summary.creator}#{day}", summary.user_id))


def _emit_sessions(
    user: str,
    closed: list[tuple[int, int, int]],
    emitted: list[list[int]],
    version: int,
    rows: list[dict[str, Any]],
) -> None:
    # Lake rows are keyed by (user, start): write closed sessions that are new or
    # changed, and a tombstone for an emitted session that no longer exists as it
    # was written (merged with another by a late event, or open again).
    before = {s[0]: (s[1], s[2]) for s in emitted}
    now = {s[0]: (s[1], s[2]) for s in closed}
    for start, (end, count) in now.items():
        if before.get(start) != (end, count):
            rows.append(session_row(user, start, end, count, version))
    for start, (end, count) in before.items():
        if start not in now:
            rows.append(session_row(user, start, end, count, version, deleted=True))


def _is_live(events: Sequence[PlaybackEvent], summary: PlaySummary, lateness_us: int) -> bool:
    """Whether a play counts in the real-time store's counters: one of its events was
    received within the allowed lateness of the play's start. Others are history (an
    import of last year's listening): they reach the lake's plays and sessions, which
    every catalog query reads, but not the live counters."""
    started = _us(summary.started_at)
    return any(
        e.received_at is not None and _us(e.received_at) - started <= lateness_us for e in events
    )


_ONE_US = timedelta(microseconds=1)


def _us(t: datetime) -> int:
    return (t - _EPOCH) // _ONE_US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _us_delta(delta: timedelta) -> int:
    return delta // _ONE_US


def _merge(batch: StoreBatch, contribution: aggregate.Contribution) -> None:
    for (pk, sk), attrs in contribution.items():
        batch.add(pk, sk, **attrs)


def _merge_nonzero(batch: StoreBatch, contribution: aggregate.Contribution) -> list[list[object]]:
    """:func:`_merge` of ``diff(contribution, {})`` (the non-zero amounts only), and
    ``aggregate.to_rows(contribution)``, in one pass."""
    increments = batch.increments
    rows: list[list[object]] = []
    for item, attrs in contribution.items():
        # play_contribution leaves zero amounts out: its item dicts are kept as they are.
        nonzero = attrs if all(attrs.values()) else {n: v for n, v in attrs.items() if v}
        if nonzero:
            target = increments.get(item)
            if target is None:  # an item new to the batch: one copy (C) of its amounts
                increments[item] = defaultdict(float, nonzero)
            else:
                for name, value in nonzero.items():
                    target[name] += value
            rows.append([item[0], item[1], nonzero])
    return rows


__all__ = [
    "BatchStats",
    "ListStates",
    "Memory",
    "Read",
    "ReadDedup",
    "ReadStates",
    "Step",
    "StepOptions",
    "StepResult",
    "decode_records",
    "dedup_key",
    "run_step",
    "step",
    "step_on",
]
