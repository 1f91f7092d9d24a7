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

The decisions (1-4, and what 5 and 6 write) are the pure step of
:mod:`playpulse.processor.step`, which names the state it needs and reads no clock;
:class:`Processor` is its driver: it polls the stream, loads what the step asks for
from the store, keeps the step's in-memory state between polls, and writes the
results (quarantine, lake, one store transaction).

A crash anywhere loses nothing and counts nothing twice: the store holds the offsets of
the last applied batch, lake files past them are discarded at start, and the batch is
processed again. Every decision depends only on the events in stream order, never on
batch boundaries or the wall clock, so a re-run gives the same numbers.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from playpulse.errors import ConfigError
from playpulse.events.model import PlaybackEvent
from playpulse.lake.schema import events_table
from playpulse.lake.writer import OffsetRange
from playpulse.processor import state as pstate
from playpulse.processor.metrics import ProcessorMetrics
from playpulse.processor.plays import PlayBuilder
from playpulse.processor.sessions import Session
from playpulse.processor.step import (
    BatchStats,
    Memory,
    Read,
    ReadDedup,
    ReadStates,
    dedup_key,
    run_step,
    step,
)
from playpulse.quarantine.store import QuarantineStore
from playpulse.store.base import RealtimeStore
from playpulse.stream.base import Batch, Consumer, EventStream, GroupConsumer

log = logging.getLogger("playpulse.processor")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Dedup keys are removed once they expired this long before the newest receipt.
_EXPIRY_MARGIN = timedelta(days=1)


#: Python's cyclic garbage collector thresholds (generations 0, 1, 2) while a poll is
#: processed, instead of the default (700, 10, 10). A poll allocates hundreds of
#: thousands of short-lived objects (decoded events, rows, contributions), none in
#: cycles (a collection after the benchmark's polls finds nothing to free); with the
#: default thresholds they set off a full collection, which walks every long-lived
#: object, every few polls. Measured with bench/process.py's workload at batch 5,000:
#: the default thresholds cost 15 to 25 % more CPU; (50,000, 50, 50) spent 0.15 s of
#: garbage collection per 100,000 events, (1,000,000, 50, 50) 0.08 s (a poll of up to
#: ``max_poll_records`` rarely allocates a million containers that outlive it).
GC_THRESHOLDS = (1_000_000, 50, 50)

#: How often :meth:`Processor.run` asks the store to keep its states alive while caught
#: up (:meth:`~playpulse.store.base.RealtimeStore.keep_states_alive`; DynamoDB's state
#: packs would expire after 8 days without a batch), starting when it is first idle.
KEEP_ALIVE_EVERY = timedelta(hours=1)
_gc_lock = threading.Lock()
_gc_users = 0
_gc_before: tuple[int, int, int] = (700, 10, 10)


@contextlib.contextmanager
def processing_gc() -> Iterator[None]:
    """Run the block with :data:`GC_THRESHOLDS`, then restore the thresholds found when
    the first of the blocks running at the same time (processors in threads) began.
    Reference counting frees what is not in a cycle as before; cyclic garbage waits
    for a later collection."""
    global _gc_users, _gc_before
    with _gc_lock:
        if _gc_users == 0:
            _gc_before = gc.get_threshold()
            gc.set_threshold(*GC_THRESHOLDS)
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_before)


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
        #: Freshness and store write latency of this processor's commits (#15).
        self.metrics = ProcessorMetrics()
        if lake is not None:
            # pyarrow imports pandas (when installed) on its first pa.array: 0.3-0.4 s of
            # CPU, paid here at start rather than by the first batch's freshness.
            pa.array([], pa.string())

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
            # The read too: a poll's records would otherwise set off collections (at
            # the default thresholds) that move them to the oldest generation, which
            # the next full collection walks.
            with processing_gc():
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

        When caught up, it also asks the store to keep its states alive, at most every
        :data:`KEEP_ALIVE_EVERY`.

        Polls start at most every ``options.poll_interval`` (like a Kafka consumer's
        ``fetch.max.wait.ms``): under a steady trickle, each poll then takes what
        arrived meanwhile in one batch per partition, instead of many tiny batches whose
        fixed costs (a store transaction, lake files) would dominate."""
        if not self._started:
            self.start()
        interval_s = self.options.poll_interval.total_seconds()
        last_between = time.monotonic()
        next_keep_alive = last_between
        while not stop.is_set():
            started = time.monotonic()
            stats = self.process_available(max_batches=1)
            if between_polls is not None and (
                stats.read == 0 or started - last_between >= between_polls_every_s
            ):
                between_polls()
                last_between = time.monotonic()
            if stats.read == 0 and started >= next_keep_alive:
                next_keep_alive = started + KEEP_ALIVE_EVERY.total_seconds()
                self._keep_states_alive()
            if stats.read == 0:
                stop.wait(idle_sleep_s)
            else:
                rest = interval_s - (time.monotonic() - started)
                if rest > 0:
                    stop.wait(rest)

    def _keep_states_alive(self) -> None:
        """The store's :meth:`~RealtimeStore.keep_states_alive`; a failure is logged (the
        next turn, :data:`KEEP_ALIVE_EVERY` later, tries again)."""
        try:
            carried = self.store.keep_states_alive()
        except Exception:
            log.exception("keeping the store's states alive failed; trying again later")
            return
        if carried:
            log.info("kept %d states alive (carried forward while no batch came)", carried)

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
        memory = Memory(
            self._open_plays, self._open_sessions, self._play_events, self._finalized_day
        )
        work = run_step(step(memory, batches, self.options), self._load)
        partitions = [b.partition for b in batches]
        if batches and not self._consumer.owns(partitions):
            return self._lost(partitions)
        if work.rejections:
            self.quarantine.add(work.rejections)
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
        write_started = time.perf_counter()
        self.store.apply(work.batch)
        self.metrics.committed(batches, time.perf_counter() - write_started)
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

    def _load(self, read: Read) -> Any:
        """Answer one of the step's reads from the store (see :mod:`.step`)."""
        if isinstance(read, ReadStates):
            return self.store.states(read.keys) if read.keys else {}
        if isinstance(read, ReadDedup):
            return self.store.dedup_expiries(read.keys) if read.keys else {}
        return self.store.state_keys(read.prefix)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


__all__ = [
    "GC_THRESHOLDS",
    "BatchStats",
    "LakeSink",
    "Processor",
    "ProcessorOptions",
    "Session",
    "dedup_key",
    "processing_gc",
]
