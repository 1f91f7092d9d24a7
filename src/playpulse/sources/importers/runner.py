"""Run an import: files -> rows -> validated events -> stream -> processed.

:func:`import_paths` is what ``playpulse import`` calls. Steps:

1. **Collect files**: named files as given; directories walked recursively for
   ``*.json`` / ``*.csv`` (hidden entries left out), each file once, in path order.
2. **Load** every file and detect its format from its content
   (:mod:`~playpulse.sources.importers.detect`). A corrupt file, or a *named* file in no
   known format, stops the import before anything is appended; unknown files found in a
   directory are skipped and listed.
3. **Map** every row to events and validate each with
   :func:`~playpulse.events.codec.validate_event`, as the collector does
   (``received_at`` = the import's start, UTC). A row that cannot be mapped, or one of
   whose events is invalid, is quarantined as a whole (``source="import"``, raw = the
   row as JSON without personal fields, errors naming the file and line) and counted;
   its quarantine ``origin`` is a hash of its content (:func:`quarantine_origin`), so the
   same bad row imported again is kept once.
   Rows that repeat an earlier row of the import are sent once.
4. **Backfill**: an import is history, not live traffic: it is not streamed and no
   lateness applies to it. :func:`~playpulse.service.apply_import` adds the events the
   lake does not hold yet to its ``events`` table (month files) and recomputes plays,
   sessions and the real-time store from all the lake's events — here when no
   ``playpulse up`` runs on the data dir, else by staging them for it and waiting until
   it has — and compacts the lake. When
   :func:`import_paths` returns, every query answers with the imported events.

The figures depend only on which events the data dir holds: importing files in any
order, one at a time or all at once, gives the same answers, and importing the same
files again adds nothing (``ImportResult.events_known``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from playpulse._batch import gc_paused
from playpulse.config import Settings
from playpulse.errors import EventValidationError
from playpulse.events.codec import validate_event
from playpulse.events.model import EventBase
from playpulse.processor.pipeline import BatchStats
from playpulse.quarantine.store import Rejection, open_quarantine
from playpulse.sources.importers import lastfm, spotify_basic, spotify_extended, youtube
from playpulse.sources.importers.base import (
    ImportFormatError,
    InvalidRow,
    MapContext,
    SkipRow,
    SourceRow,
    UnknownFormatError,
    canonical,
    digest,
    strip_personal,
)
from playpulse.sources.importers.detect import MAPPERS, LoadedFile, load_file
from playpulse.sources.importers.exports import (
    ExportFingerprint,
    ExportRegistry,
    export_root,
    row_key,
)
from playpulse.sources.importers.timezones import check_zone

#: The users of exports that name nobody, imported without ``--user`` (see
#: :mod:`.exports`).
DEFAULT_USERS = frozenset(
    {
        spotify_extended.DEFAULT_USER,
        spotify_basic.DEFAULT_USER,
        youtube.DEFAULT_USER,
        lastfm.DEFAULT_USER,
    }
)
#: File name suffixes picked up when walking a directory.
SUFFIXES = (".json", ".csv")
#: Quarantine reason for a row that cannot be turned into events at all.
INVALID_ROW = "invalid_row"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RANK = {"play_start": 0, "heartbeat": 1, "play_end": 3}
_encode = msgspec.json.Encoder()


@dataclass
class FileResult:
    """What one file gave: its format, rows read, events appended, rows rejected
    (quarantined), skipped (valid but nothing to import) and repeated (identical to an
    earlier row of the import)."""

    path: Path
    format: str
    rows: int = 0
    events: int = 0
    rejected: int = 0
    skipped: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class RejectedRow:
    """A quarantined row: where it is (1-based ``line``, 0-based ``index`` among the
    file's rows), the quarantine ``reason`` and ``message``, and its quarantine id."""

    path: Path
    line: int
    index: int
    reason: str
    message: str
    quarantine_id: int | None = None


#: How many skipped files :meth:`ImportResult.summary` names.
SHOWN_FILES = 10


@dataclass
class ImportResult:
    """What an import did.

    - ``files``: per imported file; ``skipped_files``: ``(path, why)`` for unknown files
      met while walking a directory; ``failed_files``: ``(path, error message)`` for
      corrupt files (truncated, not UTF-8, broken JSON or CSV), left out while the others
      are imported.
    - ``rows_read``, ``events_appended``, ``rows_rejected`` (quarantined, listed in
      ``rejected`` with file and line), ``rows_skipped`` (by reason in
      ``skipped_by_reason``), ``duplicate_rows``.
    - ``rows_by_format`` / ``events_by_format``: counts per format name.
    - ``seconds``: wall time of the whole import, processing included.
    - ``events_new``: imported events the data dir did not hold, now in the lake;
      ``events_known``: imported events it held already (the same rows imported before),
      left out. Both ``None`` when a running ``playpulse up`` applied the import.
    - ``processing``: the totals of the recomputation that followed (over every event of
      the data dir, see :mod:`playpulse.processor.backfill`), ``None`` when a running
      ``playpulse up`` did it.
    - ``timezone``: the listener's zone given by the caller (``--tz``), set on every
      imported row; without it ``timezones_by_hint`` counts the rows per zone taken from
      the export's own hint (Spotify ``conn_country``, :mod:`.timezones`) and
      ``rows_without_timezone`` the imported rows left without a zone.
    """

    files: list[FileResult] = field(default_factory=list)
    skipped_files: list[tuple[Path, str]] = field(default_factory=list)
    failed_files: list[tuple[Path, str]] = field(default_factory=list)
    rows_read: int = 0
    events_appended: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0
    duplicate_rows: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    rows_by_format: dict[str, int] = field(default_factory=dict)
    events_by_format: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    processing: BatchStats | None = None
    events_new: int | None = None
    events_known: int | None = None
    timezone: str | None = None
    timezones_by_hint: dict[str, int] = field(default_factory=dict)
    rows_without_timezone: int = 0

    def summary(self) -> str:
        """A one-paragraph, human-readable account (for the CLI)."""
        formats = ", ".join(f"{n:,} {name}" for name, n in sorted(self.rows_by_format.items()))
        parts = [
            f"imported {len(self.files)} file(s), {self.rows_read:,} rows ({formats or 'none'})",
            f"{self.events_appended:,} events appended",
            f"{self.rows_rejected:,} rows quarantined",
            f"{self.rows_skipped:,} skipped",
            f"{self.duplicate_rows:,} repeated rows sent once",
            f"in {self.seconds:.1f} s",
        ]
        text = "; ".join(parts)
        if self.processing is not None:
            text += (
                f". {self.events_new or 0:,} new events added to the lake "
                f"({self.events_known or 0:,} were there already); figures recomputed from "
                f"{self.processing.processed:,} events"
            )
        else:
            text += ". The running processor added them and recomputed the figures"
        if self.skipped_files:
            names = ", ".join(str(p) for p, _ in self.skipped_files[:SHOWN_FILES])
            more = len(self.skipped_files) - SHOWN_FILES
            text += f". {len(self.skipped_files)} file(s) of unknown format skipped: {names}"
            text += f" and {more} more" if more > 0 else ""
        if self.failed_files:
            text += f". {len(self.failed_files)} corrupt file(s) NOT imported (listed below)"
        return text + ". " + self.timezone_note()

    def timezone_note(self) -> str:
        """Where the imported rows' listener time zone came from, in one sentence."""
        if self.timezone is not None:
            return f"Listener time zone: {self.timezone} (--tz), for every imported row"
        parts = []
        if self.timezones_by_hint:
            zones = ", ".join(
                f"{zone} for {n:,} rows"
                for zone, n in sorted(self.timezones_by_hint.items(), key=lambda kv: -kv[1])
            )
            parts.append(f"Listener time zone from the export's country (conn_country): {zones}")
        if self.rows_without_timezone:
            parts.append(
                f"{self.rows_without_timezone:,} rows have no listener time zone (the export "
                "has none, or a country with several); --tz ZONE sets one"
            )
        return "; ".join(parts) or "No rows imported"

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values."""
        return {
            "files": [
                {
                    "path": str(f.path),
                    "format": f.format,
                    "rows": f.rows,
                    "events": f.events,
                    "rejected": f.rejected,
                    "skipped": f.skipped,
                    "duplicates": f.duplicates,
                }
                for f in self.files
            ],
            "skipped_files": [{"path": str(p), "why": why} for p, why in self.skipped_files],
            "failed_files": [{"path": str(p), "error": why} for p, why in self.failed_files],
            "rows_read": self.rows_read,
            "events_appended": self.events_appended,
            "rows_rejected": self.rows_rejected,
            "rows_skipped": self.rows_skipped,
            "duplicate_rows": self.duplicate_rows,
            "rejected": [
                {
                    "path": str(r.path),
                    "line": r.line,
                    "index": r.index,
                    "reason": r.reason,
                    "message": r.message,
                    "quarantine_id": r.quarantine_id,
                }
                for r in self.rejected
            ],
            "skipped_by_reason": dict(self.skipped_by_reason),
            "rows_by_format": dict(self.rows_by_format),
            "events_by_format": dict(self.events_by_format),
            "seconds": self.seconds,
            "processing": None if self.processing is None else vars(self.processing),
            "events_new": self.events_new,
            "events_known": self.events_known,
            "timezone": self.timezone,
            "timezones_by_hint": dict(self.timezones_by_hint),
            "rows_without_timezone": self.rows_without_timezone,
        }


def collect_files(paths: Sequence[Path]) -> list[tuple[Path, bool]]:
    """``(file, named)`` for every file to import: named files as given, and the
    ``*.json`` / ``*.csv`` files under named directories (recursively, hidden entries
    left out, sorted); each file once. Raises :class:`ImportFormatError` for a path that
    does not exist."""
    out: list[tuple[Path, bool]] = []
    seen: set[Path] = set()

    def add(path: Path, named: bool) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append((path, named))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
            for p in sorted(found):
                add(p, False)
        elif path.is_file():
            add(path, True)
        else:
            raise ImportFormatError(path, "does not exist (or is not a file or directory)")
    return out


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """A validated event ready to append: the decoded ``event``, its stream ``key``
    (the actor id) and normalized JSON ``payload``."""

    event: EventBase
    key: str
    payload: bytes

    @property
    def sort_key(self) -> tuple[int, int, str]:
        """Append order: ``occurred_at``, then play_start / others / play_end, then id."""
        return (
            _us(self.event.occurred_at),
            _RANK.get(self.event.event_type, 2),
            self.event.event_id,
        )


@dataclass
class ImportPlan:
    """What an import would append: ``events`` sorted by ``occurred_at``, the
    ``rejections`` to quarantine (with ``result.rejected`` in the same order), and the
    counts in ``result`` (``events_appended`` = ``len(events)``). ``defaults`` holds, per
    default user the import lands rows on (only without ``user_id``), the fingerprint of
    the export (:mod:`.exports`)."""

    result: ImportResult
    events: list[PlannedEvent]
    rejections: list[Rejection]
    defaults: dict[str, ExportFingerprint] = field(default_factory=dict)


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _where(row: SourceRow, fmt: str) -> str:
    return f"{row.path}, line {row.line} (row {row.index + 1}, {fmt})"


def _raw(row: SourceRow) -> bytes:
    return json.dumps(strip_personal(row.data), ensure_ascii=False).encode()


class _Progress:
    """A rich progress display on stderr, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )

    @contextmanager
    def running(self) -> Iterator[_Progress]:
        if self._progress is None:
            yield self
            return
        with self._progress:
            try:
                yield self
            except BaseException:
                # An error follows: take the bars off the screen before it is printed.
                for task in self._progress.task_ids:
                    self._progress.update(task, visible=False)
                self._progress.live.transient = True  # no blank line left either
                raise

    def task(self, description: str, total: int | None) -> int | None:
        if self._progress is None:
            return None
        return int(self._progress.add_task(description, total=total))

    def advance(self, task: int | None, n: int = 1) -> None:
        if task is not None:
            self._progress.advance(task, n)

    def finish(self, task: int | None) -> None:
        if task is not None:
            t = self._progress.tasks[task]
            total = t.total if t.total else max(t.completed, 1)
            self._progress.update(task, total=total, completed=total)


def plan_import(
    paths: Sequence[Path],
    *,
    user_id: str | None = None,
    received_at: datetime | None = None,
    progress: bool = False,
    timezone: str | None = None,
) -> ImportPlan:
    """Read, detect, map and validate ``paths`` without touching any data dir (steps 1
    to 3 of the module docstring; a dry run).

    ``received_at`` (UTC-aware, default now) is the receive time the events are
    validated and stamped with. Arguments and errors as for :func:`import_paths`.
    """
    when = received_at or datetime.now(UTC)
    return _plan(paths, user_id, when, _Progress(progress), timezone)


def _plan(
    paths: Sequence[Path],
    user_id: str | None,
    received_at: datetime,
    display: _Progress,
    timezone: str | None = None,
) -> ImportPlan:
    result = ImportResult(timezone=None if timezone is None else check_zone(timezone))
    files = collect_files(paths)
    roots = _export_roots(paths)
    reading = display.task(f"reading {len(files)} file(s)", len(files))
    loaded: list[LoadedFile] = []
    first_failure: ImportFormatError | None = None
    for path, named in files:
        try:
            loaded.append(load_file(path))
        except UnknownFormatError as exc:
            if named:
                raise
            result.skipped_files.append((path, str(exc)))
        except ImportFormatError as exc:  # corrupt: the other files are imported
            result.failed_files.append((path, str(exc)))
            first_failure = first_failure or exc
        display.advance(reading)
    if first_failure is not None and not loaded:
        raise first_failure  # nothing else to import: the error itself
    defaults: dict[str, ExportFingerprint] = {}
    events, rejections, rejected = _map_all(
        loaded, user_id, received_at, result, display, roots, defaults
    )
    events.sort(key=lambda p: p.sort_key)
    result.rejected = rejected
    result.events_appended = len(events)
    return ImportPlan(result, events, rejections, defaults)


def _export_roots(paths: Sequence[Path]) -> dict[Path, str]:
    """The export root folder (:func:`.exports.export_root`) of every file to import, by
    resolved path: a walked directory for the files under it, a named file's folder."""
    out: dict[Path, str] = {}
    for raw in paths:
        path = Path(raw).resolve()
        if path.is_dir():
            root = str(export_root(path))
            for p in path.rglob("*"):
                out.setdefault(p, root)
        else:
            out.setdefault(path, str(export_root(path.parent)))
    return out


def import_paths(
    paths: Sequence[Path],
    settings: Settings,
    *,
    user_id: str | None = None,
    progress: bool = True,
    timezone: str | None = None,
) -> ImportResult:
    """Import the files and directories ``paths`` into ``settings.data_dir`` and return
    once the events are processed (see the module docstring for the steps).

    ``user_id`` is the listener of single-person exports (Spotify, YouTube, Last.fm): it
    wins over a Spotify row's ``username``; without it those come from the file or a
    per-format default (``spotify-user``, ``youtube-user``, ``lastfm-user``). A default
    user holds one export only: an import that would add another export's rows to it
    raises :class:`~playpulse.sources.importers.exports.OtherExportError` (asking for
    ``--user``) before anything is written (see :mod:`.exports`). ``timezone`` is the
    listener's IANA zone, set as ``context.timezone`` of every imported row (without it,
    Spotify rows take the zone of their ``conn_country`` when it has one; see
    :mod:`.timezones`); an unknown name raises :class:`~playpulse.errors.ConfigError`.
    Data sets
    with their own users (Taobao, DIGINETICA) ignore it. ``progress`` shows a rich
    progress display on stderr.

    A corrupt file (truncated, not UTF-8, broken JSON or CSV) is left out and listed in
    ``failed_files`` while the other files are imported. Raises
    :class:`ImportFormatError` (naming the file and, when known, the line) for a missing
    path, a named file in no known format, or a corrupt file when there is no other file
    to import, before anything is appended; :class:`~playpulse.errors.PlaypulseError`
    subclasses for stream, quarantine and processing failures.
    """
    started = time.monotonic()
    display = _Progress(progress)
    with gc_paused(), display.running():
        plan = _plan(paths, user_id, datetime.now(UTC), display, timezone)
        result = plan.result
        if plan.defaults:
            with ExportRegistry(settings.data_dir) as registry:
                for default_user, fingerprint in sorted(plan.defaults.items()):
                    registry.check(default_user, fingerprint)
        ids = _quarantine(settings, plan.rejections)
        result.rejected = [
            dataclasses.replace(r, quarantine_id=qid)
            for r, qid in zip(result.rejected, ids, strict=True)
        ]
        if plan.defaults:
            with ExportRegistry(settings.data_dir) as registry:
                for default_user, fingerprint in plan.defaults.items():
                    registry.record(default_user, fingerprint)
        processing = display.task("adding to the lake and recomputing", None)
        from playpulse.service import apply_import  # local: keeps imports light

        # A running `playpulse up` recomputes at least 500 events/s before this gives up.
        timeout_s = max(600.0, len(plan.events) / 500)
        events = [(p.event, p.key, p.payload) for p in plan.events]
        # Privacy (#14): with pseudonymize_users, only pseudonyms of the ids are stored.
        from playpulse.privacy.pseudonym import pseudonymize_events

        events = pseudonymize_events(settings, events)
        done = apply_import(settings, events, timeout_s=timeout_s)
        if done is not None:
            result.processing = done.processing
            result.events_new = done.backfilled
            result.events_known = done.already_in_lake
        display.finish(processing)
    result.seconds = time.monotonic() - started
    return result


def _map_all(
    loaded: list[LoadedFile],
    user_id: str | None,
    received_at: datetime,
    result: ImportResult,
    display: _Progress,
    roots: dict[Path, str],
    defaults: dict[str, ExportFingerprint],
) -> tuple[list[PlannedEvent], list[Rejection], list[RejectedRow]]:
    total_rows = sum(len(f.rows) for f in loaded)
    task = display.task("mapping rows", total_rows)
    pending: list[PlannedEvent] = []
    rejections: list[Rejection] = []
    rejected: list[RejectedRow] = []
    seen: set[str] = set()
    skipped: Counter[str] = Counter()
    rows_by_format: Counter[str] = Counter()
    events_by_format: Counter[str] = Counter()
    hinted: Counter[str] = Counter()
    for lf in loaded:
        fr = FileResult(lf.path, lf.format, rows=len(lf.rows))
        result.files.append(fr)
        rows_by_format[lf.format] += len(lf.rows)
        if not lf.rows:
            continue
        mapper = MAPPERS[lf.format]
        ctx = MapContext(user_id, lf.path, lf.hints, result.timezone)
        resolved = lf.path.resolve()
        file_root = roots.get(resolved, str(resolved.parent))
        for n, row in enumerate(lf.rows, start=1):
            if n % 256 == 0 or n == len(lf.rows):
                display.advance(task, 256 if n % 256 == 0 else n % 256)
            try:
                events = mapper(row, ctx)
            except SkipRow as exc:
                skipped[exc.reason] += 1
                fr.skipped += 1
                continue
            except (InvalidRow, OverflowError) as exc:
                loc = exc.loc if isinstance(exc, InvalidRow) else "row"
                msg = exc.msg if isinstance(exc, InvalidRow) else f"a time is out of range: {exc}"
                errors = [{"loc": loc, "msg": msg}]
                _reject(
                    row,
                    lf,
                    user_id,
                    INVALID_ROW,
                    errors,
                    None,
                    received_at,
                    rejections,
                    rejected,
                )
                fr.rejected += 1
                continue
            if events and result.timezone is not None:
                events[0].setdefault("context", {})["timezone"] = result.timezone
            if events and events[0]["event_id"] in seen:
                fr.duplicates += 1
                continue
            accepted: list[PlannedEvent] = []
            for event in events:
                try:
                    ok = validate_event(_encode.encode(event), received_at)
                except EventValidationError as exc:
                    event_id = event.get("event_id")
                    _reject(
                        row,
                        lf,
                        user_id,
                        exc.reason,
                        [
                            {"loc": f"{event['event_type']}.{e['loc']}", "msg": e["msg"]}
                            for e in exc.errors
                        ],
                        event_id if isinstance(event_id, str) else None,
                        received_at,
                        rejections,
                        rejected,
                    )
                    fr.rejected += 1
                    break
                accepted.append(PlannedEvent(ok.event, ok.event.actor_id, ok.payload))
            else:
                if events:
                    seen.add(events[0]["event_id"])
                    zone = events[0].get("context", {}).get("timezone")
                    if result.timezone is None and zone is not None:
                        hinted[zone] += 1
                    elif zone is None:
                        result.rows_without_timezone += 1
                    actor = events[0].get("user_id")
                    if user_id is None and actor in DEFAULT_USERS:
                        fingerprint = defaults.setdefault(actor, ExportFingerprint())
                        root = file_root
                        fingerprint.roots.add(root)
                        fingerprint.row_keys.add(row_key(events[0]["event_id"]))
                pending.extend(accepted)
                fr.events += len(accepted)
                events_by_format[lf.format] += len(accepted)
    result.rows_read = sum(f.rows for f in result.files)
    result.rows_rejected = sum(f.rejected for f in result.files)
    result.rows_skipped = sum(f.skipped for f in result.files)
    result.duplicate_rows = sum(f.duplicates for f in result.files)
    result.skipped_by_reason = dict(skipped)
    result.rows_by_format = dict(rows_by_format)
    result.events_by_format = dict(events_by_format)
    result.timezones_by_hint = dict(hinted)
    display.finish(task)
    return pending, rejections, rejected


def quarantine_origin(row: SourceRow, loaded: LoadedFile, user_id: str | None) -> str:
    """The quarantine ``origin`` of a rejected row: ``import:<format>:<hash>`` of the row's
    content (personal fields and a Last.fm index column left out, as in its identity; see
    :mod:`.base`) and the caller's user. The same bad row imported again, from any file or
    position, has the same origin, so the quarantine keeps it once."""
    data = strip_personal(row.data)
    index = loaded.hints.get("index_column")
    if index is not None and isinstance(data, list):
        data = [v for i, v in enumerate(data) if i != loaded.hints["columns"].index(index)]
    return f"import:{loaded.format}:{digest(loaded.format, user_id or '', canonical(data))}"


def _reject(
    row: SourceRow,
    loaded: LoadedFile,
    user_id: str | None,
    reason: str,
    errors: list[dict[str, str]],
    event_id: str | None,
    received_at: datetime,
    rejections: list[Rejection],
    rejected: list[RejectedRow],
) -> None:
    where = _where(row, loaded.format)
    errors = [*errors, {"loc": "source", "msg": where}]
    message = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:-1])
    origin = quarantine_origin(row, loaded, user_id)
    rejections.append(Rejection(_raw(row), reason, errors, received_at, "import", event_id, origin))
    rejected.append(RejectedRow(row.path, row.line, row.index, reason, message))


def _quarantine(settings: Settings, rejections: list[Rejection]) -> list[int]:
    if not rejections:
        return []
    store = open_quarantine(settings)
    try:
        return store.add(rejections)
    finally:
        store.close()
