"""Backfills and reprocessing: history into the lake, then everything derived recomputed.

The lake's ``events`` table holds every event playpulse kept; the lake's ``plays`` and
``sessions`` tables and the real-time store are derived from it. Live traffic is
derived incrementally by the :class:`~playpulse.processor.pipeline.Processor`, with
allowed lateness. Imported history is a *backfill*: it never passes through lateness,
and it can land before data already processed. So it is not streamed; instead

1. when a ``playpulse up`` holds the data dir's processor lock, :func:`stage_backfill`
   writes the events of an import to a pending file (``<data dir>/backfill/pending-
   <id>.parquet``: event id, stream key, occurred time, stored JSON payload) for it;
2. :func:`reprocess`, run by whoever holds the lock (``playpulse import`` itself, with
   its events in hand, or the running ``playpulse up``), adds the incoming and pending
   events that the lake does not hold yet (same ``event_id``: importers derive ids from
   a row's content, so the same row imported again is the same event) to the lake's
   ``events`` table as month files, then recomputes the ``plays`` and ``sessions``
   tables and the real-time store from all the lake's events, and deletes the pending
   files.

Recomputing processes the lake's events with the same processor, in one canonical order
(``occurred_at``, then play_start / others / play_end, then ``event_id``), into a memory
store, and swaps the result in: the store with :meth:`RealtimeStore.replace` (one
transaction), the derived tables by writing new month files and then deleting every
other file of those tables. The result depends only on the set of events in the lake,
so importing files in any order, one at a time or all at once, ends with the same
figures, and equals processing them from scratch in time order. Live events that were
late when they arrived (``late`` in the lake) stay late: they are not recomputed, and
are counted again as late. ``playpulse reprocess`` runs the same recomputation (also the
way to apply a changed metric rule).

Crash safety: pending files are deleted last, and a marker file
(``<data dir>/backfill/reprocessing``) lives while derived data is being swapped; while
either exists, :func:`reprocess_needed` says so, and the processor's start
(:func:`playpulse.service.ensure_processed`, ``playpulse up``) runs :func:`reprocess`
before anything else. Rows of the derived tables a reprocess writes carry a negative
``version`` that grows with each reprocess (:func:`reprocess_version`): it beats the rows
of earlier reprocesses (no key counts twice while the old files are being deleted, or
after a crash before that), and a later live update of a play or session (version = its
stream offset, >= 0) beats it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from playpulse._batch import gc_paused
from playpulse.config import Settings
from playpulse.errors import LakeError
from playpulse.events.codec import decode_stored
from playpulse.events.model import EventBase
from playpulse.lake.factory import open_lake
from playpulse.lake.schema import (
    EVENTS_SCHEMA,
    PLAYS_SCHEMA,
    SESSIONS_SCHEMA,
    events_table,
    payloads,
)
from playpulse.lake.writer import LakeWriter, OffsetRange, newest_versions
from playpulse.processor.pipeline import BatchStats, Processor, ProcessorOptions
from playpulse.store.base import StoreBatch
from playpulse.store.memory import MemoryStore
from playpulse.stream.base import partition_for_key
from playpulse.stream.memory import MemoryStream

log = logging.getLogger("playpulse.backfill")

#: Folder of the data dir holding pending backfills and the reprocessing marker.
BACKFILL_DIR = "backfill"
_MARKER = "reprocessing"
#: Records per append to the in-memory stream, and per processor poll.
_CHUNK = 50_000
PENDING_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("key", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("rank", pa.int8()),
        ("payload", pa.binary()),
    ]
)
_RANK = {"play_start": 0, "play_end": 2}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class ReprocessResult:
    """What :func:`reprocess` did: ``backfilled`` pending events added to the lake
    (``already_in_lake``: pending events the lake held already, left out),
    ``processing`` the processor's totals over every event recomputed, ``late_kept``
    live events that stay late, ``plays`` and ``sessions`` rows written, ``lake_files``
    written."""

    backfilled: int = 0
    already_in_lake: int = 0
    processing: BatchStats | None = None
    late_kept: int = 0
    plays: int = 0
    sessions: int = 0
    lake_files: int = 0


def backfill_dir(settings: Settings) -> Path:
    """``<data dir>/backfill``: pending backfill files and the reprocessing marker."""
    return settings.data_dir / BACKFILL_DIR


def pending_backfills(settings: Settings) -> list[Path]:
    """The pending backfill files of ``settings.data_dir``, oldest first."""
    folder = backfill_dir(settings)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("pending-*.parquet"), key=lambda p: (p.stat().st_mtime_ns, p.name))


def _pending_table(events: Sequence[tuple[EventBase, str, bytes]]) -> pa.Table:
    """``events`` — (validated event, stream key, stored JSON payload) — as a table of
    :data:`PENDING_SCHEMA`."""
    return pa.table(
        {
            "event_id": [e.event_id for e, _, _ in events],
            "key": [k for _, k, _ in events],
            "occurred_at": [e.occurred_at for e, _, _ in events],
            "rank": [_RANK.get(e.event_type, 1) for e, _, _ in events],
            "payload": [p for _, _, p in events],
        },
        schema=PENDING_SCHEMA,
    )


def reprocess_needed(settings: Settings) -> bool:
    """Whether pending backfills or erasure requests (``playpulse privacy delete``, see
    :func:`playpulse.privacy.erase.request_erasure`) wait, or a reprocess was
    interrupted."""
    from playpulse.privacy.erase import pending_erasures

    return (
        bool(pending_backfills(settings))
        or (backfill_dir(settings) / _MARKER).exists()
        or bool(pending_erasures(settings))
    )


def stage_backfill(
    settings: Settings, events: Sequence[tuple[EventBase, str, bytes]]
) -> Path | None:
    """Write ``events`` — (validated event, stream key, stored JSON payload) — as a
    pending backfill of ``settings.data_dir`` (see the module docstring); ``None`` when
    there are none. Raises :class:`~playpulse.errors.LakeError` when it cannot be
    written."""
    if not events:
        return None
    table = _pending_table(events)
    folder = backfill_dir(settings)
    path = folder / f"pending-{uuid.uuid4().hex}.parquet"
    tmp = folder / f".{path.name}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp, compression="lz4")  # read back at once: speed first
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LakeError(f"cannot write the pending backfill {path}: {exc}") from exc
    return path


def request_reprocess(settings: Settings, since: date | None, until: date | None) -> None:
    """Ask for a reprocess of the UTC days ``since`` to ``until`` (inclusive; ``None``:
    unbounded) of ``settings.data_dir``: the processor lock's holder runs it (the
    running ``playpulse up`` when idle, else the next import or ``playpulse
    reprocess``). Requests add up (the union of their windows)."""
    folder = backfill_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    window = _union(_requested(settings), (since, until))
    tmp = folder / f".{_MARKER}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps([None if d is None else d.isoformat() for d in window]))
    os.replace(tmp, folder / _MARKER)


def _requested(settings: Settings) -> tuple[date | None, date | None] | None:
    """The window of the pending request (``None``: none pending)."""
    try:
        raw = json.loads((backfill_dir(settings) / _MARKER).read_text() or "[null, null]")
        return (
            None if raw[0] is None else date.fromisoformat(raw[0]),
            None if raw[1] is None else date.fromisoformat(raw[1]),
        )
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, IndexError, OSError):
        return (None, None)  # unreadable: the whole history


def _union(
    a: tuple[date | None, date | None] | None, b: tuple[date | None, date | None]
) -> tuple[date | None, date | None]:
    if a is None:
        return b
    low = None if a[0] is None or b[0] is None else min(a[0], b[0])
    high = None if a[1] is None or b[1] is None else max(a[1], b[1])
    return low, high


def reprocess(
    settings: Settings,
    options: ProcessorOptions | None = None,
    *,
    since: date | None = None,
    until: date | None = None,
    workers: int | None = None,
    incoming: Sequence[tuple[EventBase, str, bytes]] = (),
) -> ReprocessResult:
    """Add the pending backfills to the lake and recompute the derived tables and the
    real-time store from the lake's events (see the module docstring).

    ``since`` / ``until`` (UTC days, inclusive; default: unbounded) limit which plays
    and sessions of the lake are replaced: those that started on those days. They are
    recomputed from every event (so those crossing the window's edges come out whole);
    the others stay as they are. Pending backfills and earlier unfinished requests widen
    the window (a backfill: to everything). The real-time store is always recomputed
    whole.

    Call it holding the data dir's processor lock
    (:func:`playpulse.service.processor_lock`), with no processor running on it.
    ``options``: the processor's (lateness, idle timeout, ...), default
    :class:`ProcessorOptions`. Raises :class:`~playpulse.errors.PlaypulseError`
    subclasses for lake, store and stream failures; an interrupted run is completed by
    the next one.

    ``workers``: processes that share the work, by stream partition (default: one per
    CPU for large reprocesses, see :data:`PARALLEL_MIN_EVENTS`); the result does not
    depend on it (but for the last bits of float sums). ``incoming``: events to backfill
    besides the pending files — (validated event, stream key, stored JSON payload), what
    an import holding the processor lock hands over without staging them: the marker
    written first makes a crash after they reached the lake end in a reprocess too.
    """
    with gc_paused():
        return _reprocess(settings, options, since, until, workers, incoming)


def _reprocess(
    settings: Settings,
    options: ProcessorOptions | None,
    since: date | None,
    until: date | None,
    workers: int | None,
    incoming: Sequence[tuple[EventBase, str, bytes]],
) -> ReprocessResult:
    """:func:`reprocess` (with the garbage collector paused)."""
    from playpulse.store.factory import open_store
    from playpulse.stream.factory import open_stream

    options = options or ProcessorOptions()
    result = ReprocessResult()
    folder = backfill_dir(settings)
    pending = pending_backfills(settings)
    backfill = bool(pending) or bool(incoming)
    window = (None, None) if backfill else _union(_requested(settings), (since, until))
    request_reprocess(settings, *window)
    lake = open_lake(settings)
    stream = open_stream(settings)
    try:
        num_partitions = len(stream.partitions())
    finally:
        stream.close()
    existing = _read_events(lake)
    new = _new_events(pending, incoming, existing, result)
    if new is not None:
        tag = hashlib.blake2b(
            "\n".join(sorted(new["event_id"].to_pylist())).encode(), digest_size=8
        ).hexdigest()
        decoded = {event.event_id: event for event, _, _ in incoming}
        rows = _events_rows(new, num_partitions, decoded)
        result.lake_files += len(lake.write_months("events", rows, tag=tag))
        result.backfilled = new.num_rows
    late = existing.filter(pc.fill_null(existing["late"], False)) if existing.num_rows else None
    result.late_kept = 0 if late is None else late.num_rows
    records = _records(existing, new)
    options = dataclasses.replace(
        options,
        consumer="reprocess",
        deduplicate=False,
        batch_size=_CHUNK,
        max_poll_records=_CHUNK * num_partitions,
    )
    groups = _partition_groups(records, num_partitions, workers or _workers(len(records)))
    del records
    if len(groups) == 1:
        outputs = [_compute(settings, options, num_partitions, groups[0])]
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(len(groups), mp_context=context) as pool:
            outputs = list(
                pool.map(
                    _compute,
                    *zip(*((settings, options, num_partitions, g) for g in groups), strict=True),
                )
            )
    snapshot = StoreBatch("reprocess")
    sink = _DerivedRows()
    result.processing = BatchStats()
    for output in outputs:
        for (pk, sk), attrs in output.increments.items():
            snapshot.add(pk, sk, **attrs)
        snapshot.members |= output.members
        snapshot.states.update(output.states)
        sink.plays.update(output.plays)
        sink.sessions.update(output.sessions)
        for name, value in vars(output.stats).items():
            setattr(result.processing, name, getattr(result.processing, name) + value)
    # The live consumer's offsets and dedup keys stay as they are (imported events are
    # deduplicated against the lake, by id).
    written = _write_derived(lake, sink, result, window)
    store = open_store(settings)
    try:
        _carry_over(store, snapshot, late)
        store.replace(snapshot)
    finally:
        store.close()
    _delete_other_files(lake, written)
    for path in pending:
        path.unlink(missing_ok=True)
    (folder / _MARKER).unlink(missing_ok=True)
    return result


#: Events from which a reprocess is worth spreading over several processes.
PARALLEL_MIN_EVENTS = 40_000


def _workers(events: int) -> int:
    """Processes for a reprocess of ``events`` events: one per CPU (at most 4) for
    large ones, else 1 (a process costs about half a second to start)."""
    if events < PARALLEL_MIN_EVENTS:
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def _partition_groups(
    records: list[tuple[str, bytes]], num_partitions: int, workers: int
) -> list[list[tuple[str, bytes]]]:
    """``records`` split into at most ``workers`` groups of whole stream partitions, of
    about equal size, each in the canonical order: the processor's state of a partition
    (its plays, sessions, watermarks) depends on that partition's records only, and
    every counter only adds up, so groups can be computed apart and summed."""
    by_partition: list[list[tuple[str, bytes]]] = [[] for _ in range(num_partitions)]
    for record in records:
        by_partition[partition_for_key(record[0], num_partitions)].append(record)
    groups: list[list[int]] = [[] for _ in range(max(1, min(workers, num_partitions)))]
    sizes = [0] * len(groups)
    for p in sorted(range(num_partitions), key=lambda p: -len(by_partition[p])):
        smallest = sizes.index(min(sizes))
        groups[smallest].append(p)
        sizes[smallest] += len(by_partition[p])
    out: list[list[tuple[str, bytes]]] = []
    for group in groups:
        merged = [r for p in group for r in by_partition[p]]
        if merged or not out:
            out.append(merged)
    return out


@dataclass
class _Output:
    """What one group's processing gives (picklable, from a worker process)."""

    increments: dict[tuple[str, str], dict[str, float]]
    members: set[tuple[str, str]]
    states: dict[str, bytes | None]
    plays: dict[str, dict[str, Any]]
    sessions: dict[tuple[str, datetime], dict[str, Any]]
    stats: BatchStats


def _compute(
    settings: Settings,
    options: ProcessorOptions,
    num_partitions: int,
    records: list[tuple[str, bytes]],
) -> _Output:
    """Process ``records`` (whole partitions, canonical order) into a memory store and
    memory rows: the work of one process of a reprocess."""
    from playpulse.quarantine.store import open_quarantine

    sink = _DerivedRows()
    memory = MemoryStore()
    quarantine = open_quarantine(settings)
    try:
        stream = MemoryStream(num_partitions=num_partitions, retention=timedelta(days=36_500))
        for start in range(0, len(records), _CHUNK):
            stream.append(records[start : start + _CHUNK])
        stats = Processor(stream, memory, sink, quarantine, options).process_available()
    finally:
        quarantine.close()
    snapshot = memory.snapshot("reprocess")
    return _Output(
        {key: dict(attrs) for key, attrs in snapshot.increments.items()},
        snapshot.members,
        snapshot.states,
        sink.plays,
        sink.sessions,
        stats,
    )


def _read_events(lake: LakeWriter) -> pa.Table:
    """Every row of the lake's ``events`` table (its live, readable files)."""
    files = lake.readable(lake.live_files("events"))
    if not files:
        return EVENTS_SCHEMA.empty_table()
    parts = [lake.read_table(f, EVENTS_SCHEMA).replace_schema_metadata() for f in files]
    return pa.concat_tables(parts)


def _new_events(
    pending: list[Path],
    incoming: Sequence[tuple[EventBase, str, bytes]],
    existing: pa.Table,
    result: ReprocessResult,
) -> pa.Table | None:
    """The pending and incoming events the lake does not hold (by ``event_id``), each
    once."""
    parts = [pq.read_table(p, schema=PENDING_SCHEMA) for p in pending]
    if incoming:
        parts.append(_pending_table(incoming))
    if not parts:
        return None
    table = pa.concat_tables(parts)
    ids = table["event_id"].combine_chunks()
    unique = pc.unique(ids)
    if len(unique) < len(ids):
        # The first row of each id (a later import of the same row is the same event).
        table = table.take(pc.index_in(unique, value_set=ids))
    known = pc.is_in(table["event_id"], value_set=existing["event_id"].combine_chunks())
    result.already_in_lake = int(pc.sum(known).as_py() or 0)
    table = table.filter(pc.invert(known))
    return table if table.num_rows else None


def _events_rows(new: pa.Table, num_partitions: int, decoded: Mapping[str, EventBase]) -> pa.Table:
    """The lake ``events`` rows of pending events (not late; no stream offset);
    ``decoded`` holds events already decoded, by id (the rest are decoded here)."""
    entries = []
    for event_id, key, payload in zip(
        new["event_id"].to_pylist(), new["key"].to_pylist(), new["payload"].to_pylist(), strict=True
    ):
        event = decoded.get(event_id) or decode_stored(payload)
        entries.append((event, payload, partition_for_key(key, num_partitions), None, False))
    return events_table(entries)  # type: ignore[arg-type]


def _records(existing: pa.Table, new: pa.Table | None) -> list[tuple[str, bytes]]:
    """(stream key, payload) of every event to recompute, in the canonical order."""
    rows: list[tuple[int, int, str, str, bytes]] = []
    if existing.num_rows:
        kept = existing.filter(pc.invert(pc.fill_null(existing["late"], False)))
        for event_id, key, occurred, kind, payload in zip(
            kept["event_id"].to_pylist(),
            kept["actor_id"].to_pylist(),
            _us_list(kept["occurred_at"]),
            kept["event_type"].to_pylist(),
            payloads(kept),
            strict=True,
        ):
            rows.append((occurred, _RANK.get(kind, 1), event_id, key, payload))
    if new is not None:
        for event_id, key, occurred, rank, payload in zip(
            new["event_id"].to_pylist(),
            new["key"].to_pylist(),
            _us_list(new["occurred_at"]),
            new["rank"].to_pylist(),
            new["payload"].to_pylist(),
            strict=True,
        ):
            rows.append((occurred, rank, event_id, key, payload))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [(key, payload) for _, _, _, key, payload in rows]


def _us_list(column: pa.ChunkedArray) -> list[int]:
    return pc.cast(column, pa.int64()).to_pylist()  # type: ignore[no-any-return]


class _DerivedRows:
    """A lake sink for the processor that keeps, in memory, the newest row of each
    play and session it writes (events are in the lake already)."""

    def __init__(self) -> None:
        self.schemas = {"plays": PLAYS_SCHEMA, "sessions": SESSIONS_SCHEMA}
        self.plays: dict[str, dict[str, Any]] = {}
        self.sessions: dict[tuple[str, datetime], dict[str, Any]] = {}

    def discard_uncommitted(
        self, committed: Mapping[int, int], partitions: Collection[int] | None = None
    ) -> int:
        """Nothing is written before the end: nothing to discard."""
        return 0

    def write_table(
        self, table: str, arrow: pa.Table, *, ranges: Sequence[OffsetRange]
    ) -> list[Path]:
        """Keep the rows of ``arrow`` (see :meth:`write_rows`)."""
        return self.write_rows(table, arrow.to_pylist(), ranges=ranges)

    def write_rows(
        self, table: str, rows: Iterable[dict[str, Any]], *, ranges: Sequence[OffsetRange]
    ) -> list[Path]:
        """Keep each row, replacing an earlier one of the same key (later batches have
        higher versions)."""
        for row in rows:
            if table == "plays":
                self.plays[row["play_key"]] = row
            elif table == "sessions":
                self.sessions[(row["user_id"], row["started_at"])] = row
        return []


def reprocess_version() -> int:
    """The ``version`` of the plays and sessions rows a reprocess writes now: negative
    (below every stream offset, so later live updates win) and growing with the wall
    clock (microseconds), so a later reprocess's rows beat an earlier one's."""
    return -(1 << 62) + time.time_ns() // 1000


def _write_derived(
    lake: LakeWriter,
    sink: _DerivedRows,
    result: ReprocessResult,
    window: tuple[date | None, date | None],
) -> set[Path]:
    """Write the plays and sessions as month files (version :func:`reprocess_version`):
    the recomputed ones that started in ``window`` (UTC days, inclusive), and the lake's
    current ones outside it. Returns the paths written."""
    tag = f"reprocess-{uuid.uuid4().hex[:16]}"
    version = reprocess_version()
    written: set[Path] = set()
    low = "0000-00-00" if window[0] is None else window[0].isoformat()
    high = "9999-99-99" if window[1] is None else window[1].isoformat()
    for table, rows, schema, key in (
        ("plays", list(sink.plays.values()), PLAYS_SCHEMA, ["play_key"]),
        (
            "sessions",
            [r for r in sink.sessions.values() if not r["deleted"]],
            SESSIONS_SCHEMA,
            ["user_id", "started_at"],
        ),
    ):
        rows = [r for r in rows if low <= r["event_date"] <= high]
        for row in rows:
            row["version"] = version
        arrow = pa.table(
            {n: pa.array([r[n] for r in rows], schema.field(n).type) for n in schema.names},
            schema=schema,
        )
        if window != (None, None):
            kept = _outside(lake, table, schema, key, low, high, version)
            arrow = pa.concat_tables([arrow, kept])
        if table == "plays":
            result.plays = arrow.num_rows
        else:
            result.sessions = arrow.num_rows
        if arrow.num_rows:
            paths = lake.write_months(table, arrow, tag=tag)
            written.update(paths)
            result.lake_files += len(paths)
    return written


def _outside(
    lake: LakeWriter,
    table: str,
    schema: pa.Schema,
    key: list[str],
    low: str,
    high: str,
    version: int,
) -> pa.Table:
    """The current rows of a derived ``table`` of the lake dated outside ``low`` to
    ``high`` (ISO days, inclusive), with ``version``."""
    files = lake.readable(lake.live_files(table))
    if not files:
        return schema.empty_table()
    rows = pa.concat_tables([lake.read_table(f, schema).replace_schema_metadata() for f in files])
    rows = newest_versions(rows, key)
    dates = rows["event_date"]
    outside = pc.or_(pc.less(dates, low), pc.greater(dates, high))
    rows = rows.filter(outside)
    return rows.set_column(
        rows.schema.get_field_index("version"),
        "version",
        pa.array([version] * rows.num_rows, pa.int64()),
    ).cast(schema)


def _delete_other_files(lake: LakeWriter, keep: set[Path]) -> None:
    """Delete every data file of the derived tables but ``keep`` (and empty folders)."""
    for table in ("plays", "sessions"):
        for path in lake.data_files(table):
            if path not in keep:
                lake.delete(path)
        if not lake.is_local:
            continue  # an object store has no folders to remove
        for folder in (lake.root / table).glob("*"):
            if folder.is_dir() and not any(folder.iterdir()):
                with contextlib.suppress(OSError):  # a writer put something there meanwhile
                    folder.rmdir()


def _carry_over(store: Any, snapshot: StoreBatch, late: pa.Table | None) -> None:
    """What recomputing cannot see, added to ``snapshot``: the duplicates the live
    processor dropped (counted in the store), and the live events that stay late (in
    the event totals and per-day counts, as the live processor counted them)."""
    duplicates = store.item("PIPELINE", "TOTAL").get("duplicates", 0.0)
    if duplicates:
        snapshot.add("PIPELINE", "TOTAL", duplicates=duplicates)
    if late is None or not late.num_rows:
        return
    snapshot.add("PIPELINE", "TOTAL", events=float(late.num_rows), late=float(late.num_rows))
    counts = late.group_by(["event_date", "event_type"]).aggregate([([], "count_all")])
    for day, kind, n in zip(
        counts["event_date"].to_pylist(),
        counts["event_type"].to_pylist(),
        counts["count_all"].to_pylist(),
        strict=True,
    ):
        snapshot.add("PIPELINE", f"DAY#{day}", **{f"events_{kind}": float(n)})


__all__ = [
    "BACKFILL_DIR",
    "ReprocessResult",
    "backfill_dir",
    "pending_backfills",
    "reprocess",
    "reprocess_needed",
    "reprocess_version",
    "request_reprocess",
    "stage_backfill",
]
