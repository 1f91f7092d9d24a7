"""The processor: stream micro-batches in, live aggregates and lake files out.

For each batch of one stream partition it

1. decodes the events (undecodable records go to the quarantine),
2. drops duplicates: an event whose ``event_id`` and content were already processed
   within the dedup window (a different event reusing an id is kept),
3. marks late events: ``occurred_at`` more than the allowed lateness behind the
   user's watermark (the newest ``occurred_at`` of that user's earlier events, in
   stream order),
4. rebuilds every play and user session the batch touches from all their events and
   applies the difference to the store (so out-of-order events land in the right
   buckets and nothing counts twice),
5. writes the events, and the plays that finished, to the lake,
6. commits aggregates, dedup keys, play and session state and the partition offset in
   one store transaction.

A crash anywhere loses nothing and counts nothing twice: the store holds the offsets of
the last applied batch, lake files past them are discarded at start, and the batch is
processed again. Every decision depends only on the events in stream order, never on
batch boundaries or the wall clock, so a re-run gives the same numbers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import msgspec
import pyarrow as pa

from playpulse.errors import ConfigError, EventValidationError, StoreError
from playpulse.events.codec import decode_stored
from playpulse.events.model import CommerceEvent, EventBase, PlaybackEvent
from playpulse.lake.schema import events_table, play_row, session_row
from playpulse.lake.writer import OffsetRange
from playpulse.processor import aggregate
from playpulse.processor import state as pstate
from playpulse.processor.plays import (
    PlayBuilder,
    PlaySummary,
    is_closed,
    play_key,
)
from playpulse.processor.sessions import Session, extend_sessions_us, sessionize_us
from playpulse.quarantine.store import QuarantineStore, Rejection
from playpulse.store.base import RealtimeStore, StoreBatch
from playpulse.stream.base import Batch, Consumer, EventStream, GroupConsumer

log = logging.getLogger("playpulse.processor")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Dedup keys are removed once they expired this long before the newest receipt.
_EXPIRY_MARGIN = timedelta(days=1)
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


@dataclass(frozen=True)
class ProcessorOptions:
    """How the processor behaves.

    - ``consumer``: name under which offsets are kept (store and stream group).
    - ``member``: this processor's name in the consumer group ``consumer`` when several
      processors share the stream's partitions (``playpulse up --processors N``);
      ``None`` (the default): this processor takes every partition, alone.
    - ``session_timeout``: a group member that has not polled for this long loses its
      partitions to the others (how soon a dead processor's partitions move).
    - ``batch_size``: records read per partition per poll.
    - ``max_poll_records``: records read per poll over all partitions (Kafka's
      ``max.poll.records``): each partition gets at most this divided by the number of
      partitions (and at most ``batch_size``), at least 1. A poll's events are in memory
      together, so this bounds the processor's memory when it catches up on a backlog.
    - ``deduplicate``: ``False`` when the input is known to hold each event once (a
      reprocess of the lake's events): no dedup keys are computed or kept.
    - ``dedup_window``: how long an event id is remembered (from its receipt): a copy
      received later than this after the kept event counts again.
    - ``allowed_lateness``: how far behind the watermark an event may be and still
      update aggregates; later events only reach the lake, counted as ``late``.
    - ``idle_timeout``: a play with no closing event is closed at its last event once
      the watermark is this far past it; also the session gap.
    - ``session_max_length``: sessions are cut at this length.
    - ``poll_interval``: :meth:`Processor.run` starts a poll at most this often while
      events keep arriving (bigger, cheaper batches; adds at most this to freshness).
    - ``play_cache_size``: most open plays whose decoded events and state machine stay
      in memory between batches (least recently updated dropped first); a play that
      is not cached is rebuilt from its events in the store when it changes (same
      numbers, more CPU). Bounds the processor's memory whatever the number of open
      plays.

    Raises :class:`~playpulse.errors.ConfigError` for a ``batch_size`` or
    ``max_poll_records`` below 1 or a negative ``play_cache_size``.
    """

    consumer: str = "processor"
    member: str | None = None
    session_timeout: timedelta = timedelta(seconds=6)
    batch_size: int = 5_000
    dedup_window: timedelta = timedelta(days=7)
    deduplicate: bool = True
    allowed_lateness: timedelta = timedelta(days=7)
    idle_timeout: timedelta = timedelta(minutes=30)
    session_max_length: timedelta = timedelta(hours=24)
    poll_interval: timedelta = timedelta(milliseconds=200)
    play_cache_size: int = 20_000
    max_poll_records: int = 5_000

    def __post_init__(self) -> None:
        if self.play_cache_size < 0:
            raise ConfigError(f"play_cache_size must be >= 0, got {self.play_cache_size}")
        if self.batch_size < 1 or self.max_poll_records < 1:
            raise ConfigError(
                f"batch_size and max_poll_records must be >= 1, got {self.batch_size} "
                f"and {self.max_poll_records}"
            )


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_fingerprint_encoder = msgspec.json.Encoder()


def dedup_key(event: EventBase) -> str:
    """``event_id`` plus a hash of the event's content without the transport times
    (``sent_at``, ``received_at``, ``derived_at``), so a retried send is a duplicate
    but a different event that reuses an id is not."""
    stripped = msgspec.structs.replace(event, sent_at=None, received_at=None, derived_at=None)
    digest = hashlib.blake2b(_fingerprint_encoder.encode(stripped), digest_size=8).hexdigest()
    return f"{event.event_id}:{digest}"


class LakeSink(Protocol):
    """Where the processor writes lake rows: a :class:`~playpulse.lake.LakeWriter`, or
    what a reprocess collects (:mod:`playpulse.processor.backfill`). ``schemas`` names
    the tables it takes (``events``, ``plays``, ``sessions``); the processor writes
    only those."""

    schemas: dict[str, pa.Schema]

    def discard_uncommitted(
        self, committed: Mapping[int, int], partitions: Collection[int] | None = None
    ) -> int:
        """Drop what was written for offsets at or past ``committed`` (of ``partitions``
        only, when given); how many files."""
        ...  # pragma: no cover - a protocol

    def write_table(
        self, table: str, arrow: pa.Table, *, ranges: Sequence[OffsetRange]
    ) -> list[Path]:
        """Write an Arrow table of ``table``'s schema, read from ``ranges``."""
        ...  # pragma: no cover - a protocol

    def write_rows(
        self, table: str, rows: Iterable[dict[str, Any]], *, ranges: Sequence[OffsetRange]
    ) -> list[Path]:
        """Write rows (dicts) of ``table``, read from ``ranges``."""
        ...  # pragma: no cover - a protocol


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
class _Work:
    batch: StoreBatch
    event_rows: list[tuple[EventBase, bytes, int, int, bool]] = field(default_factory=list)
    play_rows: list[dict[str, Any]] = field(default_factory=list)
    session_rows: list[dict[str, Any]] = field(default_factory=list)
    newest_received: datetime | None = None
    stats: BatchStats = field(default_factory=BatchStats)


class Processor:
    """Consumes ``stream`` into ``store`` and ``lake`` (see the module docstring).

    ``quarantine`` receives records that cannot be decoded. Call :meth:`start` once,
    then :meth:`process_available` or :meth:`run`, and :meth:`close` at the end.

    Alone (``options.member`` is ``None``) it takes every partition at :meth:`start`.
    As a member of a consumer group it takes the partitions the group gives it, as the
    group gives them (:meth:`on_assign`, :meth:`on_revoke`), and writes a batch's
    results only while it still owns its partitions: members that share one store and
    lake then give the results one processor would, whichever member processes a
    partition and however often they come and go.
    """

    def __init__(
        self,
        stream: EventStream,
        store: RealtimeStore,
        lake: LakeSink | None,
        quarantine: QuarantineStore,
        options: ProcessorOptions | None = None,
    ) -> None:
        self.stream = stream
        self.store = store
        self.lake = lake
        self.quarantine = quarantine
        self.options = options or ProcessorOptions()
        self._consumer: GroupConsumer = self._new_consumer()
        self._open_plays: dict[int, dict[str, int]] = defaultdict(dict)
        # Per partition, users with an open session -> the session's last event (us).
        self._open_sessions: dict[int, dict[str, int]] = defaultdict(dict)
        self._next_expiry: datetime | None = None
        # PLAY# state key -> that open play's decoded events and its state machine.
        self._play_events: dict[str, tuple[list[PlaybackEvent], PlayBuilder | None]] = {}
        # Per partition, the day (of the finalization horizon) last scanned for plays
        # that can no longer change.
        self._finalized_day: dict[int, int] = {}
        self._started = False

    def _new_consumer(self) -> GroupConsumer:
        opts = self.options
        if opts.member is None:
            return self.stream.consumer(opts.consumer)
        return self.stream.group_consumer(
            opts.consumer,
            opts.member,
            self,
            session_timeout_s=opts.session_timeout.total_seconds(),
        )

    def start(self) -> None:
        """Resume from the store's offsets; drop lake files of unapplied batches.

        Alone, it takes every partition now; a group member takes its partitions at
        its polls (:meth:`on_assign`)."""
        if self.options.member is None:
            partitions = [info.partition for info in self.stream.partitions()]
            for partition, offset in self.on_assign(partitions).items():
                assert isinstance(self._consumer, Consumer)
                self._consumer.seek(partition, offset)
        self._started = True

    def on_assign(self, partitions: list[int]) -> dict[int, int]:
        """Take ``partitions`` (a :class:`~playpulse.stream.base.RebalanceListener`
        callback): drop the lake files of their batches never applied, load their open
        plays and sessions, and return where to read each from (the store's offsets, or
        the oldest record retained)."""
        offsets = self.store.offsets(self.options.consumer)
        if self.lake is not None:
            dropped = self.lake.discard_uncommitted(offsets, partitions=partitions)
            if dropped:
                log.info("discarded %d lake files of batches never committed", dropped)
        for p in partitions:
            self._forget(p)
            keys = self.store.state_keys(pstate.play_prefix(p))
            for start in range(0, len(keys), pstate.SCAN_CHUNK):
                blobs = self.store.states(keys[start : start + pstate.SCAN_CHUNK])
                for key, blob in blobs.items():
                    head = pstate.decode_head(pstate.unpack(blob))
                    if not head.closed:
                        self._open_plays[p][pstate.split_key(key)[1]] = head.last_us
            prefix = pstate.open_session_key(p, "")
            for key, blob in self.store.states(self.store.state_keys(prefix)).items():
                self._open_sessions[p][pstate.split_key(key)[1]] = pstate.decode_open_session(blob)[
                    1
                ]
        infos = {info.partition: info for info in self.stream.partitions()}
        return {p: offsets.get(p, infos[p].start_offset) for p in partitions}

    def on_revoke(self, partitions: list[int]) -> None:
        """Give ``partitions`` up (a :class:`~playpulse.stream.base.RebalanceListener`
        callback): forget what is kept in memory of them (the store holds the rest)."""
        for p in partitions:
            self._forget(p)

    def _forget(self, p: int) -> None:
        self._open_plays.pop(p, None)
        self._open_sessions.pop(p, None)
        self._finalized_day.pop(p, None)
        prefix = pstate.play_prefix(p)
        for key in [k for k in self._play_events if k.startswith(prefix)]:
            del self._play_events[key]

    def reset(self) -> None:
        """Forget what is cached in memory and start again from the store (after
        something else rewrote it: :func:`playpulse.processor.backfill.reprocess`).
        A group member leaves the group and joins again."""
        self._consumer.close()
        self._open_plays.clear()
        self._open_sessions.clear()
        self._play_events.clear()
        self._finalized_day.clear()
        self._next_expiry = None
        self._started = False
        self._consumer = self._new_consumer()
        self.start()

    def assignment(self) -> list[int]:
        """The stream partitions this processor owns now."""
        return self._consumer.assignment()

    def close(self) -> None:
        """Leave the consumer group (its partitions go to the other members at once).
        The stream, store, lake and quarantine stay open: their owner closes them."""
        self._consumer.close()

    def process_available(self, max_batches: int | None = None) -> BatchStats:
        """Process what the stream holds now (up to ``max_batches`` polls); return totals."""
        if not self._started:
            self.start()
        total = BatchStats()
        polls = 0
        owned = len(self._consumer.assignment()) or self.stream.num_partitions
        share = self.options.max_poll_records // owned
        per_partition = max(1, min(self.options.batch_size, share))
        while max_batches is None or polls < max_batches:
            batches = self._consumer.poll(per_partition)
            polls += 1
            if not batches:
                break
            stats = self.process_batches(batches)
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(stats, name))
        return total

    def run(
        self,
        stop: threading.Event,
        idle_sleep_s: float = 0.05,
        between_polls: Callable[[], object] | None = None,
        between_polls_every_s: float = 1.0,
    ) -> None:
        """Process until ``stop`` is set, sleeping ``idle_sleep_s`` when caught up.

        ``between_polls``, if given, is what the runtime does between batches (apply
        pending backfills): called when caught up, and at least every
        ``between_polls_every_s`` seconds while events keep coming.

        Polls start at most every ``options.poll_interval`` (like a Kafka consumer's
        ``fetch.max.wait.ms``): under a steady trickle, each poll then takes what
        arrived meanwhile in one batch per partition, instead of many tiny batches whose
        fixed costs (a store transaction, lake files) would dominate."""
        if not self._started:
            self.start()
        interval_s = self.options.poll_interval.total_seconds()
        last_between = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            stats = self.process_available(max_batches=1)
            if between_polls is not None and (
                stats.read == 0 or started - last_between >= between_polls_every_s
            ):
                between_polls()
                last_between = time.monotonic()
            if stats.read == 0:
                stop.wait(idle_sleep_s)
            else:
                rest = interval_s - (time.monotonic() - started)
                if rest > 0:
                    stop.wait(rest)

    # -- one batch ------------------------------------------------------------------

    def process_batch(self, batch: Batch) -> BatchStats:
        """Process one partition's batch and commit it (see the module docstring)."""
        return self.process_batches([batch])

    def process_batches(self, batches: Sequence[Batch]) -> BatchStats:
        """Process the batches of one poll (at most one per partition) and commit them
        together: one file per lake table and date for all of them, one store
        transaction. Returns what they did, summed."""
        if len({b.partition for b in batches}) != len(batches):
            raise ValueError("process_batches takes at most one batch per partition")
        work = _Work(StoreBatch(self.options.consumer))
        for batch in batches:
            self._compute(batch, work)
        partitions = [b.partition for b in batches]
        if batches and not self._consumer.owns(partitions):
            return self._lost(partitions)
        written: list[Path] = []
        if self.lake is not None and batches:
            ranges = [(b.partition, b.records[0].offset, b.records[-1].offset) for b in batches]
            if work.event_rows and "events" in self.lake.schemas:
                written += self.lake.write_table(
                    "events", events_table(work.event_rows), ranges=ranges
                )
            for table, rows in (("plays", work.play_rows), ("sessions", work.session_rows)):
                if rows and table in self.lake.schemas:
                    written += self.lake.write_rows(table, rows, ranges=ranges)
        if written and self.options.member is not None and not self._consumer.owns(partitions):
            for path in written:  # another member owns them now: it writes them again
                path.unlink(missing_ok=True)
            return self._lost(partitions)
        self.store.apply(work.batch)
        if work.newest_received is not None:
            self._expire_dedup_keys(work.newest_received)
        for batch in batches:
            try:
                self._consumer.commit(batch)  # for lag monitoring; the store's offsets rule
            except Exception as exc:
                log.warning("could not commit the stream offset: %s", exc)
        return work.stats

    def _lost(self, partitions: list[int]) -> BatchStats:
        # This member stalled past its session timeout and another owns these
        # partitions now: write nothing, forget them (the next poll rebalances).
        log.warning(
            "partitions %s were given to another processor during this batch: not applied",
            partitions,
        )
        self.on_revoke(partitions)
        return BatchStats()

    def _expire_dedup_keys(self, newest_received: datetime) -> None:
        # A dedup key matters only to copies received before it expires; events come in
        # roughly in receipt order, so keys that expired a day before the newest receipt
        # can go (at most once per hour of receipts). Decisions do not depend on this.
        # The bound is the partition furthest behind: processors of a group (or one
        # catching up unevenly) may be days apart, and a partition behind can still meet
        # copies of its own events.
        if self._next_expiry is not None and newest_received < self._next_expiry:
            return
        slowest = pstate.slowest_newest_received_us(self.store)
        if slowest is None:
            return
        self.store.expire_dedup(_from_us(slowest) - _EXPIRY_MARGIN)
        self._next_expiry = newest_received + timedelta(hours=1)

    def _compute(self, batch: Batch, work: _Work) -> None:
        """One partition's batch into ``work`` (everything but writing it)."""
        opts = self.options
        p = batch.partition
        work.batch.offsets[p] = batch.next_offset
        work.stats.read += len(batch.records)
        # Two event-time clocks, both advanced in stream order only: the partition's
        # watermark closes idle plays; each user's watermark decides lateness and when
        # a user's plays and sessions are final.
        wm_key = pstate.watermark_key(p)
        wm_blob = self.store.states([wm_key]).get(wm_key)
        watermark = int(wm_blob) if wm_blob else None
        lateness_us = _us_delta(opts.allowed_lateness)

        decoded = self._decode(batch, work)
        user_wm = self._user_watermarks({ev.actor_id for _, ev in decoded})
        keys: list[str | None] = (
            [dedup_key(ev) for _, ev in decoded] if opts.deduplicate else [None] * len(decoded)
        )
        # key -> until when (received_at) a copy of that event is a duplicate
        remembered = self.store.dedup_expiries([k for k in keys if k is not None])
        plays: dict[str, list[tuple[bytes, PlaybackEvent]]] = defaultdict(list)
        user_times: dict[str, list[int]] = defaultdict(list)
        live: dict[str, pstate.LiveState] = {}
        commerce = aggregate._new()
        newest_received: datetime | None = None
        duplicates = kept = late_count = 0
        per_day: Counter[tuple[str, str]] = Counter()
        for (record, event), key in zip(decoded, keys, strict=True):
            assert event.received_at is not None
            if key is not None:
                until = remembered.get(key)
                if until is not None and event.received_at <= until:
                    duplicates += 1
                    continue
                remembered[key] = event.received_at + opts.dedup_window
                work.batch.dedup.append((key, remembered[key]))
            occurred = _us(event.occurred_at)
            actor_wm = user_wm.get(event.actor_id)
            late = actor_wm is not None and occurred < actor_wm - lateness_us
            user_wm[event.actor_id] = occurred if actor_wm is None else max(actor_wm, occurred)
            watermark = occurred if watermark is None else max(watermark, occurred)
            if newest_received is None or event.received_at > newest_received:
                newest_received = event.received_at
            work.event_rows.append((event, record.value, p, record.offset, late))
            kept += 1
            per_day[(event.occurred_at.date().isoformat(), event.event_type)] += 1
            if late:
                late_count += 1
                continue
            if isinstance(event, PlaybackEvent):
                plays[play_key(event)].append((record.value, event))
                user_times[event.actor_id].append(occurred)
                current = live.get(event.actor_id)
                if current is None or occurred >= current.at_us:
                    cid = event.content.content_id if event.content else None
                    if cid is None and current is not None:
                        cid = current.content_id
                    live[event.actor_id] = pstate.LiveState(
                        occurred, event.event_type in _PLAYING, cid
                    )
            elif isinstance(event, CommerceEvent):
                aggregate.commerce_contribution(event, commerce)
        work.stats.duplicates += duplicates
        work.stats.processed += kept
        work.stats.late += late_count
        work.batch.add(
            "PIPELINE",
            "TOTAL",
            events=float(kept),
            late=float(late_count),
            duplicates=float(duplicates),
        )
        for (day, event_type), n in per_day.items():
            work.batch.add("PIPELINE", f"DAY#{day}", **{f"events_{event_type}": float(n)})
        _merge(work.batch, commerce)
        if watermark is not None:
            work.batch.states[wm_key] = str(watermark).encode()
            for user, wm in user_wm.items():
                work.batch.states[pstate.user_watermark_key(user)] = str(wm).encode()
            self._update_plays(p, plays, watermark, user_wm, batch, work)
            self._update_sessions(p, user_times, user_wm, watermark, batch, work)
        self._update_live(live, work)
        if newest_received is not None:
            # One value per partition (each partition's batches are serial); readers take
            # the maximum over partitions.
            key = pstate.newest_received_key(p)
            work.batch.states[key] = str(_us(newest_received)).encode()
            if work.newest_received is None or newest_received > work.newest_received:
                work.newest_received = newest_received

    def _decode(self, batch: Batch, work: _Work) -> list[tuple[Any, EventBase]]:
        out = []
        rejections = []
        for record in batch.records:
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
        if rejections:
            self.quarantine.add(rejections)
            work.stats.quarantined += len(rejections)
        return out

    def _update_plays(
        self,
        p: int,
        new_events: dict[str, list[tuple[bytes, PlaybackEvent]]],
        watermark_us: int,
        user_wm: dict[str, int],
        batch: Batch,
        work: _Work,
    ) -> None:
        opts = self.options
        idle_us = _us_delta(opts.idle_timeout)
        lateness_us = _us_delta(opts.allowed_lateness)
        margin_us = _us_delta(opts.allowed_lateness + timedelta(days=1))
        open_plays = self._open_plays[p]
        # Plays with new events, and open plays the watermark has made idle.
        touched = set(new_events)
        touched.update(k for k, last in open_plays.items() if last < watermark_us - idle_us)
        if not touched:
            self._finalize_plays(p, watermark_us, user_wm, work)
            return
        state_keys = {k: pstate.play_key(p, k) for k in touched}
        stored = self.store.states(state_keys.values())
        now = _from_us(watermark_us)
        cache = self._play_events
        closing: list[tuple[str, pstate.PlayState]] = []
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
                decoded = (
                    decode_stored(raw) for raw in pstate.play_raw_events(self.store, state, skey)
                )
                cached = ([e for e in decoded if isinstance(e, PlaybackEvent)], None)
            events, builder = cached
            added = new_events.get(pkey, [])
            if added:
                offset = batch.records[-1].offset
                work.batch.states[pstate.chunk_key(p, pkey, offset)] = pstate.encoder.encode(
                    [raw for raw, _ in added]
                )
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
            _merge(
                work.batch, aggregate.diff(contribution, aggregate.from_rows(state.contribution))
            )
            if live:
                self._add_listeners(summary, builder.days, work)
            closed = is_closed(summary, now, opts.idle_timeout)
            changed = bool(added) or closed != state.closed
            if closed and changed:
                work.play_rows.append(play_row(summary, batch.records[-1].offset))
                work.stats.plays_finished += 1
            state.contribution = aggregate.to_rows(contribution)
            state.last_us = _us(summary.ended_at)
            state.closed = closed
            state.user = summary.user_id
            wm = user_wm.get(summary.user_id)
            if closed and wm is not None and state.last_us < wm - margin_us:
                # Final already (see _finalize_plays): no later event can change it, so
                # it keeps no state (history read in time order closes most plays so).
                open_plays.pop(pkey, None)
                cache.pop(skey, None)
                work.batch.states[skey] = None
                for key in state.chunk_keys(p, pkey):
                    work.batch.states[key] = None
            elif closed:
                open_plays.pop(pkey, None)
                if changed or state.chunks:
                    closing.append((pkey, state))
                else:
                    work.batch.states[skey] = pstate.pack(state, pstate.LEVEL_CLOSED)
            else:
                work.batch.states[skey] = pstate.pack(state, pstate.LEVEL_OPEN)
                open_plays[pkey] = state.last_us
                cache[skey] = (events, builder)
                while len(cache) > opts.play_cache_size:
                    # The least recently updated play: it is rebuilt from the store if
                    # it changes again.
                    del cache[next(iter(cache))]
        self._fold_closed_plays(p, closing, work)
        self._finalize_plays(p, watermark_us, user_wm, work)

    def _fold_closed_plays(
        self, p: int, closing: list[tuple[str, pstate.PlayState]], work: _Work
    ) -> None:
        """Write the states of plays that just closed with all their raw events inline
        (chunks folded in, then deleted) and compressed: what a late event needs to
        rebuild the play, in about a tenth of the space of the chunks."""
        if not closing:
            return
        wanted = [k for pkey, st in closing for k in st.chunk_keys(p, pkey)]
        pending = {k: work.batch.states[k] for k in wanted if k in work.batch.states}
        stored = self.store.states(k for k in wanted if k not in pending)
        for pkey, state in closing:
            raw = list(state.events)
            for key in state.chunk_keys(p, pkey):
                blob = pending.get(key) or stored.get(key)
                if blob is None:
                    raise StoreError(f"the events chunk {key} of a closed play is missing")
                raw.extend(pstate.decode_chunk(blob))
                work.batch.states[key] = None
            state.events = raw
            state.chunks = []
            state.count = len(raw)
            work.batch.states[pstate.play_key(p, pkey)] = pstate.pack(state, pstate.LEVEL_CLOSED)

    def _user_watermarks(self, users: Iterable[str]) -> dict[str, int]:
        keys = {u: pstate.user_watermark_key(u) for u in users}
        stored = self.store.states(keys.values())
        return {u: int(stored[k]) for u, k in keys.items() if k in stored}

    def _finalize_plays(
        self, p: int, watermark_us: int, user_wm: dict[str, int], work: _Work
    ) -> None:
        # A closed play whose user's watermark is past it by more than the allowed
        # lateness (plus a day) can no longer change: forget its state (its contribution
        # stays in the store).
        margin = _us_delta(self.options.allowed_lateness + timedelta(days=1))
        # Open plays cannot be final, and a play this batch changed is not final either
        # (its stored state is the old one): skip them.
        open_plays = self._open_plays[p]
        candidates = [
            key
            for key in self._closed_candidates(p, watermark_us - margin)
            if key not in work.batch.states and pstate.split_key(key)[1] not in open_plays
        ]
        wms = dict(user_wm)
        # A few hundred states at a time: memory stays flat however many plays are kept.
        for start in range(0, len(candidates), pstate.SCAN_CHUNK):
            blobs = self.store.states(candidates[start : start + pstate.SCAN_CHUNK])
            heads = [(key, pstate.decode_head(pstate.unpack(blob))) for key, blob in blobs.items()]
            wms.update(self._user_watermarks({h.user for _, h in heads} - set(wms)))
            for key, head in heads:
                wm = wms.get(head.user)
                if head.closed and wm is not None and head.last_us < wm - margin:
                    work.batch.states[key] = None
                    for chunk in head.chunks:
                        work.batch.states[pstate.chunk_key(p, pstate.split_key(key)[1], chunk)] = (
                            None
                        )

    def _closed_candidates(self, p: int, horizon: int) -> list[str]:
        # Cheap most of the time: only scan when the partition's horizon passed a new day.
        day = horizon // _us_delta(timedelta(days=1))
        if self._finalized_day.get(p) == day:
            return []
        self._finalized_day[p] = day
        return self.store.state_keys(pstate.play_prefix(p))

    def _add_listeners(self, summary: PlaySummary, days: set[int], work: _Work) -> None:
        for day in (date.fromordinal(d).isoformat() for d in days):
            # Daily listeners count a play even when its content is unknown (a play
            # whose play_start never arrived).
            work.batch.members.add((f"LISTENERS#TOTAL#{day}", summary.user_id))
            if summary.content_id is not None:
                work.batch.members.add(
                    (f"LISTENERS#CONTENT#{summary.content_id}#{day}", summary.user_id)
                )
            if summary.content_id is not None and summary.creator:
                work.batch.members.add(
                    (f"LISTENERS#CREATOR#{summary.creator}#{day}", summary.user_id)
                )

    def _update_sessions(
        self,
        p: int,
        user_times: dict[str, list[int]],
        user_wm: dict[str, int],
        watermark_us: int,
        batch: Batch,
        work: _Work,
    ) -> None:
        """Re-sessionize the users with new events, and those whose open session the
        partition watermark has made idle; write the sessions that closed or changed to
        the lake's ``sessions`` table and keep the open one in the store
        (:func:`~playpulse.processor.state.open_session_key`)."""
        opts = self.options
        margin = _us_delta(opts.allowed_lateness + timedelta(days=1))
        gap_us = _us_delta(opts.idle_timeout)
        open_sessions = self._open_sessions[p]
        touched = set(user_times)
        touched.update(u for u, end in open_sessions.items() if end < watermark_us - gap_us)
        if not touched:
            return
        missing = touched - set(user_wm)
        if missing:
            user_wm = {**user_wm, **self._user_watermarks(missing)}
        keys = {u: pstate.session_key(p, u) for u in touched}
        stored = self.store.states(keys.values())
        version = batch.records[-1].offset
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
                work.batch.states[keys[user]] = None
                work.batch.states[pstate.open_session_key(p, user)] = None
                open_sessions.pop(user, None)
                continue
            sessions = [Session(_from_us(a), _from_us(b), n) for a, b, n in spans]
            old = aggregate.from_rows(state.contribution)
            new_total = aggregate.session_contribution(user, sessions)
            _merge(work.batch, aggregate.diff(new_total, old))
            # Every session but the last is closed (a later event started a new one); the
            # last closes once the partition's watermark is more than the gap past it.
            last_open = watermark_us - spans[-1][1] <= gap_us
            closed = spans[:-1] if last_open else spans
            self._emit_sessions(user, closed, state.emitted, version, work)
            okey = pstate.open_session_key(p, user)
            if last_open:
                work.batch.states[okey] = pstate.encoder.encode(spans[-1])
                open_sessions[user] = spans[-1][1]
            elif user in open_sessions or blob:
                work.batch.states[okey] = None
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
                work.batch.states[keys[user]] = pstate.pack(state, pstate.LEVEL_OPEN)
            else:
                work.batch.states[keys[user]] = None

    @staticmethod
    def _emit_sessions(
        user: str,
        closed: list[tuple[int, int, int]],
        emitted: list[list[int]],
        version: int,
        work: _Work,
    ) -> None:
        # Lake rows are keyed by (user, start): write closed sessions that are new or
        # changed, and a tombstone for an emitted session that no longer exists as it
        # was written (merged with another by a late event, or open again).
        before = {s[0]: (s[1], s[2]) for s in emitted}
        now = {s[0]: (s[1], s[2]) for s in closed}
        for start, (end, count) in now.items():
            if before.get(start) != (end, count):
                work.session_rows.append(session_row(user, start, end, count, version))
        for start, (end, count) in before.items():
            if start not in now:
                work.session_rows.append(
                    session_row(user, start, end, count, version, deleted=True)
                )

    def _update_live(self, live: dict[str, pstate.LiveState], work: _Work) -> None:
        if not live:
            return
        keys = {u: pstate.live_key(u) for u in live}
        stored = self.store.states(keys.values())
        for user, state in live.items():
            blob = stored.get(keys[user])
            if blob:
                old = pstate.decode_live(blob)
                if old.at_us > state.at_us:
                    continue
            work.batch.states[keys[user]] = pstate.encoder.encode(state)


def _is_live(events: Sequence[PlaybackEvent], summary: PlaySummary, lateness_us: int) -> bool:
    """Whether a play counts in the real-time store's counters: one of its events was
    received within the allowed lateness of the play's start. Others are history (an
    import of last year's listening): they reach the lake's plays and sessions, which
    every catalog query reads, but not the live counters."""
    started = _us(summary.started_at)
    return any(
        e.received_at is not None and _us(e.received_at) - started <= lateness_us for e in events
    )


def _us_delta(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _merge(batch: StoreBatch, contribution: aggregate.Contribution) -> None:
    for (pk, sk), attrs in contribution.items():
        batch.add(pk, sk, **attrs)


__all__ = [
    "BatchStats",
    "LakeSink",
    "Processor",
    "ProcessorOptions",
    "Session",
    "dedup_key",
]
