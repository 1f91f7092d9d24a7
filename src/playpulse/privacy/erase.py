"""``playpulse privacy delete --user ID``: erase one person from a data dir, with a receipt.

The erasure runs holding the data dir's processor lock (:func:`playpulse.service.
processor_lock`), as imports and ``playpulse reprocess`` do, so nothing writes the
person's data again meanwhile: here when no processor runs on the data dir; otherwise
(``playpulse up``) handed to the running processor as a request file in the backfill
folder, which it applies between batches, in the same turn as pending imports and
reprocess requests (:func:`apply_pending_erasures` from
:func:`playpulse.service.apply_backfills`; in a processor group, member 0 under the group
lock held exclusively, the others start again from the store afterwards). Then, in
order:

1. pending backfills and the stream's unprocessed records are processed
   (:func:`~playpulse.processor.backfill.reprocess`, :meth:`Processor.process_available`),
   so every event of the person is in the lake;
2. the stream: their records are deleted (:meth:`SQLiteStream.erase`: other records keep
   their offsets; records of theirs not processed yet, of another group member's
   partitions or arrived meanwhile, go too);
3. the lake: every data file of ``events``, ``plays`` and ``sessions`` holding a row of
   theirs (``user_id`` or ``anonymous_id``) is rewritten without it under the same name
   (:meth:`LakeWriter.rewrite`), and files set aside as corrupt that hold their id are
   deleted;
4. the real-time store and the derived tables are recomputed from the cleaned lake
   (:func:`~playpulse.processor.backfill.reprocess`, the mechanism of imports and
   ``playpulse reprocess``): their contributions leave every aggregate, distinct count,
   open play and session; their dedup keys are deleted;
5. the quarantine: entries whose raw payload, errors or event id hold their id; the
   import registry (``imports.db``): rows of their id;
6. every SQLite file touched is VACUUMed with ``secure_delete`` on and its write-ahead
   log checkpointed and truncated, so no page, free or in the log, keeps the bytes;
7. the data dir is searched byte by byte for the id (clear and pseudonymised) and every
   lake file read back for their rows; the result goes into the receipt.

A person is matched by every id the data dir may hold them under
(:func:`~playpulse.privacy.pseudonym.identities`): the id given, and its ``u_`` / ``a_``
pseudonyms when the data dir has a pseudonym secret.

The receipt (:func:`erase_user` returns it; written to ``<data dir>/privacy/receipts/
<UTC time>-<first 16 digits of the subject hash>.json``, mode 0600) names the person only
by their keyed subject hash (:func:`~playpulse.privacy.pseudonym.subject_hash`): it does
not keep the id it erased.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from playpulse.config import Settings
from playpulse.errors import ConfigError, EventValidationError, StoreError
from playpulse.events.codec import decode_stored
from playpulse.lake.factory import open_lake
from playpulse.lake.schema import SCHEMAS, payloads
from playpulse.lake.writer import CORRUPT_DIR, LakeWriter
from playpulse.privacy.pseudonym import (
    identities,
    load_secret,
    needles,
    privacy_dir,
    subject_hash,
    suppress,
)
from playpulse.processor.step import dedup_key

if TYPE_CHECKING:
    from playpulse.processor.pipeline import Processor

log = logging.getLogger("playpulse.privacy")

#: Receipts' folder in the privacy folder.
RECEIPTS_DIR = "receipts"
#: The receipt's format name and version.
RECEIPT_FORMAT = "playpulse-erasure-receipt/1"
#: Folders of the data dir the byte search leaves out: other projects' data dirs.
_NOT_SEARCHED = ("projects",)


def sha256_file(path: Path) -> str:
    """The SHA-256 of the file ``path``, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def scrub_sqlite(path: Path) -> dict[str, Any]:
    """Rewrite the SQLite file ``path`` so no deleted bytes stay in it: ``VACUUM`` with
    ``secure_delete`` on, then ``wal_checkpoint(TRUNCATE)`` (the write-ahead log emptied).
    Returns ``{"file", "vacuumed", "wal_truncated"}``. Raises
    :class:`~playpulse.errors.StoreError` when SQLite refuses (another process holds a
    transaction open)."""
    try:
        con = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA secure_delete=ON")
            con.execute("VACUUM")
            busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot vacuum {path} after the erasure: {exc}") from exc
    wal = Path(f"{path}-wal")
    truncated = not busy and (not wal.exists() or wal.stat().st_size == 0)
    return {"file": path.name, "vacuumed": True, "wal_truncated": truncated}


@dataclass
class _Found:
    """What the erasure collected on its way: dedup keys of the person's events."""

    dedup_keys: set[str] = field(default_factory=set)


def _matcher(ids: set[str], found: _Found) -> Callable[[str, bytes], bool]:
    """``matches(key, value)`` for :meth:`SQLiteStream.erase`: a record of the person
    (key or user / anonymous id among ``ids``), or an undecodable record holding one of
    their ids; collects the dedup keys of the matches."""
    forms = needles(ids)

    def matches(key: str, value: bytes) -> bool:
        if key not in ids and not any(n in value for n in forms):
            return False
        try:
            event = decode_stored(value)
        except EventValidationError:
            return True
        if key in ids or event.user_id in ids or event.anonymous_id in ids:
            found.dedup_keys.add(dedup_key(event))
            return True
        return False

    return matches


def _lake_hashes(lake: LakeWriter) -> dict[str, str]:
    """``{path relative to the lake root: sha256}`` of every file of the lake folder."""
    out = {}
    for root, _, names in os.walk(lake.root):
        for name in names:
            path = Path(root) / name
            out[str(path.relative_to(lake.root))] = sha256_file(path)
    return out


def _person_rows(arrow: pa.Table, ids: set[str]) -> pa.ChunkedArray:
    """A mask of the rows of ``arrow`` that belong to the person."""
    value_set = pa.array(sorted(ids), pa.string())
    mask = pc.is_in(arrow["user_id"], value_set=value_set)
    if "anonymous_id" in arrow.column_names:
        mask = pc.or_(mask, pc.is_in(arrow["anonymous_id"], value_set=value_set))
    return pc.fill_null(mask, False)


def _erase_lake(
    lake: LakeWriter, ids: set[str], found: _Found, forms: list[bytes]
) -> dict[str, Any]:
    """Rewrite every data file of the lake holding a row of the person without it; delete
    corrupt files holding their id. Returns rows removed per table (live files) and the
    files rewritten."""
    rows_removed: dict[str, int] = {}
    rewritten: list[dict[str, Any]] = []
    for table in SCHEMAS:
        live = set(lake.live_files(table))
        removed = 0
        for path in lake.data_files(table):
            arrow = pq.read_table(path)  # with its Parquet metadata (ranges, replaced files)
            mask = _person_rows(arrow, ids)
            n = int(pc.sum(mask).as_py() or 0)
            if not n:
                continue
            if table == "events":
                theirs = arrow.filter(mask).select(SCHEMAS["events"].names)
                for payload in payloads(theirs.cast(SCHEMAS["events"])):
                    with contextlib.suppress(EventValidationError):
                        found.dedup_keys.add(dedup_key(decode_stored(payload)))
            before = sha256_file(path)
            lake.rewrite(path, arrow.filter(pc.invert(mask)))
            rewritten.append(
                {
                    "path": str(path.relative_to(lake.root)),
                    "rows_removed": n,
                    "sha256_before": before,
                    "sha256_after": sha256_file(path),
                }
            )
            if path in live:
                removed += n
        rows_removed[table] = removed
    corrupt_deleted = []
    corrupt = lake.root / CORRUPT_DIR
    if corrupt.is_dir():
        for root, _, names in os.walk(corrupt):
            for name in names:
                path = Path(root) / name
                if _holds(path, forms):
                    digest = sha256_file(path)
                    path.unlink()
                    corrupt_deleted.append(
                        {"path": str(path.relative_to(lake.root)), "sha256_before": digest}
                    )
    return {
        "rows_removed": rows_removed,
        "files_rewritten": rewritten,
        "corrupt_files_deleted": corrupt_deleted,
    }


def _holds(path: Path, forms: list[bytes]) -> bool:
    """Whether the file ``path`` holds one of the byte strings ``forms``."""
    if not forms:
        return False
    overlap = max(len(f) for f in forms)
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            data = tail + chunk
            if any(form in data for form in forms):
                return True
            tail = data[-overlap:]
    return False


def _lake_rows_left(lake: LakeWriter, ids: set[str]) -> int:
    """Rows of the person in every data file of the lake (0 after an erasure)."""
    left = 0
    for table in SCHEMAS:
        for path in lake.data_files(table):
            left += int(pc.sum(_person_rows(pq.read_table(path), ids)).as_py() or 0)
    return left


def search_data_dir(
    settings: Settings, forms: list[bytes], *, skip: Path | None = None
) -> tuple[int, list[str]]:
    """Search every file of the data dir (other projects' data dirs, and ``skip``, left
    out) for the byte strings ``forms``; returns (files searched, paths relative to the
    data dir of those holding one)."""
    searched = 0
    hits = []
    root = settings.data_dir
    for folder, subfolders, names in os.walk(root):
        if Path(folder) == root:
            subfolders[:] = [s for s in subfolders if s not in _NOT_SEARCHED]
        for name in names:
            path = Path(folder) / name
            if not path.is_file() or path == skip:
                continue
            searched += 1
            if _holds(path, forms):
                hits.append(str(path.relative_to(root)))
    return searched, sorted(hits)


def _store_cleanup(settings: Settings, dedup_keys: Iterable[str]) -> int:
    """Delete the dedup keys ``dedup_keys`` from the SQLite store (secure_delete on);
    returns how many were there."""
    from playpulse.store.sqlite import delete_dedup_keys

    return delete_dedup_keys(settings.store_path, dedup_keys)


def _imports_cleanup(settings: Settings, ids: set[str]) -> dict[str, Any] | None:
    """Delete the import registry's rows (``imports.db``) of the person; ``None`` when
    the data dir has no registry."""
    from playpulse.sources.importers.exports import REGISTRY_FILE

    path = settings.data_dir / REGISTRY_FILE
    if not path.exists():
        return None
    marks = ",".join("?" * len(ids))
    removed = 0
    try:
        con = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA secure_delete=ON")
            con.execute("BEGIN IMMEDIATE")
            present = {
                name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            for table in ("export_roots", "export_rows"):
                if table not in present:
                    continue
                cur = con.execute(f"DELETE FROM {table} WHERE user_id IN ({marks})", sorted(ids))
                removed += cur.rowcount
            con.execute("COMMIT")
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot erase from the import registry {path}: {exc}") from exc
    return {"rows_removed": removed, **scrub_sqlite(path)}


def _open_counts(settings: Settings, ids: set[str]) -> tuple[int, int]:
    """(open plays, open sessions) the store holds for the person."""
    from playpulse.processor.state import open_plays, open_sessions
    from playpulse.store.factory import open_store

    store = open_store(settings)
    try:
        plays = sum(1 for p in open_plays(store) if p.user_id in ids)
        sessions = sum(1 for s in open_sessions(store) if s[0] in ids)
    finally:
        store.close()
    return plays, sessions


def erase_user(
    settings: Settings,
    user_id: str,
    *,
    suppress_later: bool = False,
    project: str | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Erase person ``user_id`` from the data dir of ``settings`` (see the module
    docstring) and return the receipt (also written to the privacy folder; its
    ``"path"`` says where). ``suppress_later``: put them on the suppression list, so the
    collector refuses their later events. ``project`` is only recorded in the receipt
    (``settings`` are the project's already).

    When no processor runs on the data dir, the erasure runs here, holding the processor
    lock. Otherwise (``playpulse up``) it is handed to the running processor as a
    request file (``backfill/erase-<random>.json``, mode 0600, holding the id until it
    is applied), the way imports and ``playpulse reprocess`` are: the processor applies
    it between batches (:func:`apply_pending_erasures`, from
    :func:`playpulse.service.apply_backfills`) and this waits for its receipt.

    Needs the embedded stream and store (SQLite files) and a local lake; raises
    :class:`~playpulse.errors.ConfigError` otherwise and for an empty id;
    :class:`~playpulse.errors.PlaypulseError` when the running processor does not apply
    it within ``timeout_s`` (the request stays: it is applied when the processor gets to
    it); other :class:`~playpulse.errors.PlaypulseError` subclasses for stream, store,
    lake and quarantine failures (an interrupted erasure is safe to run again).
    """
    from playpulse.errors import PlaypulseError
    from playpulse.service import processor_lock, processor_problem

    if not user_id:
        raise ConfigError("privacy delete: --user must name an id")
    _check_embedded(settings)
    if not settings.data_dir.is_dir():
        raise ConfigError(f"privacy delete: the data dir {settings.data_dir} does not exist")
    with processor_lock(settings) as mine:
        if mine:
            return _erase(settings, user_id, suppress_later, project, processor=None)
    request = request_erasure(settings, user_id, suppress_later=suppress_later, project=project)
    done = request.with_suffix(".done")
    deadline = time.monotonic() + timeout_s
    while not done.exists():
        if time.monotonic() > deadline:
            problem = processor_problem(settings)
            raise PlaypulseError(
                f"the processor running on {settings.data_dir} did not apply the erasure "
                f"within {timeout_s:.0f} s ({problem or 'it is running'}); it stays requested "
                f"in {request} and is applied when the processor gets to it"
            )
        time.sleep(0.05)
    receipt_path = Path(done.read_text(encoding="utf-8").strip())
    done.unlink(missing_ok=True)
    receipt: dict[str, Any] = json.loads(receipt_path.read_text(encoding="utf-8"))
    return receipt


def _check_embedded(settings: Settings) -> Path:
    """The stream's SQLite file; raises :class:`~playpulse.errors.ConfigError` unless the
    stream and the store are SQLite files and the lake a local folder."""
    stream_path = settings.stream_path  # ConfigError for Kafka / Kinesis
    settings.store_path  # noqa: B018 - ConfigError for DynamoDB
    settings.lake_path  # noqa: B018 - ConfigError for S3
    return stream_path


#: Erasure requests for a running processor, in the backfill folder.
_REQUEST_GLOB = "erase-*.json"


def request_erasure(
    settings: Settings, user_id: str, *, suppress_later: bool = False, project: str | None = None
) -> Path:
    """Ask the processor running on the data dir to erase ``user_id`` (see
    :func:`erase_user`): write the request file (mode 0600) and return its path; its
    receipt's path is written to the same name with ``.done`` when it is applied."""
    from playpulse.processor.backfill import backfill_dir

    folder = backfill_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"erase-{uuid.uuid4().hex}.json"
    tmp = folder / f".{path.name}.tmp"
    body = {"user_id": user_id, "suppress": suppress_later, "project": project}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(body, f)
    os.replace(tmp, path)
    return path


def pending_erasures(settings: Settings) -> list[Path]:
    """The erasure requests waiting in the data dir, oldest first."""
    from playpulse.processor.backfill import backfill_dir

    folder = backfill_dir(settings)
    if not folder.is_dir():
        return []
    return sorted(folder.glob(_REQUEST_GLOB), key=lambda p: (p.stat().st_mtime_ns, p.name))


def apply_pending_erasures(settings: Settings, processor: Processor) -> bool:
    """Apply every pending erasure request (:func:`request_erasure`) with ``processor``,
    the data dir's processor (its lock held, between batches; restarted from the
    recomputed store afterwards); returns whether there were any. For
    :func:`playpulse.service.apply_backfills`."""
    requests = pending_erasures(settings)
    for path in requests:
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except ValueError:
            log.error("erasure request %s is not JSON: left aside as .bad", path)
            os.replace(path, path.with_suffix(".bad"))
            continue
        receipt = _erase(
            settings,
            str(body["user_id"]),
            bool(body.get("suppress")),
            body.get("project"),
            processor=processor,
            request=path,
        )
        done = path.with_suffix(".done")
        fd = os.open(done, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(receipt["path"] + "\n")
        path.unlink(missing_ok=True)
    return bool(requests)


def _erase(
    settings: Settings,
    user_id: str,
    suppress_later: bool,
    project: str | None,
    *,
    processor: Processor | None,
    request: Path | None = None,
) -> dict[str, Any]:
    """:func:`erase_user`, holding the processor lock: with the running ``processor``
    (between its batches), else with one of its own. ``request``: the request file being
    applied (left out of the byte search; deleted after)."""
    from playpulse.processor.backfill import pending_backfills, reprocess
    from playpulse.quarantine.store import open_quarantine
    from playpulse.service import close_processor, open_processor
    from playpulse.store.factory import open_store
    from playpulse.stream.factory import open_stream
    from playpulse.stream.sqlite import SQLiteStream

    stream_path = _check_embedded(settings)
    started = datetime.now(UTC)
    clock = time.monotonic()
    ids = identities(settings, user_id)
    forms = needles(ids)
    secret = load_secret(settings, create=True)
    assert secret is not None
    subject = subject_hash(secret, user_id)
    found = _Found()
    places: dict[str, Any] = {}
    own = processor is None
    worker = open_processor(settings) if processor is None else processor
    try:
        # 1. Everything of theirs into the lake, the processor past their records.
        backfilled = bool(pending_backfills(settings))
        if backfilled:
            reprocess(settings, worker.options)
            worker.reset()
        processed = worker.process_available()
        committed = {}
        store = open_store(settings)
        try:
            committed = store.offsets(worker.options.consumer)
        finally:
            store.close()
        open_plays, open_sessions = _open_counts(settings, ids)

        # 2. The stream.
        stream = open_stream(settings)
        try:
            if not isinstance(stream, SQLiteStream):
                raise ConfigError("privacy delete needs the embedded SQLite stream")
            records = stream.erase(_matcher(ids, found), floor=committed)
        finally:
            stream.close()
        places["stream"] = {"records_removed": records, **scrub_sqlite(stream_path)}

        # 3. The lake's files.
        lake = open_lake(settings)
        if not lake.is_local:
            raise ConfigError("privacy delete needs a local lake")
        hashes_before = _lake_hashes(lake)
        lake_place = _erase_lake(lake, ids, found, forms)

        # 4. Derived tables and the store, recomputed from the cleaned lake.
        result = reprocess(settings, worker.options)
        worker.reset()
    finally:
        if own:
            close_processor(worker)
    hashes_after = _lake_hashes(lake)
    rewritten = {f["path"] for f in lake_place["files_rewritten"]}
    lake_place["files_deleted"] = [
        {"path": p, "sha256_before": h}
        for p, h in sorted(hashes_before.items())
        if p not in hashes_after and p not in rewritten
    ]
    lake_place["files_written"] = [
        {"path": p, "sha256_after": h}
        for p, h in sorted(hashes_after.items())
        if p not in hashes_before
    ]
    lake_place["derived_tables_recomputed"] = {"plays": result.plays, "sessions": result.sessions}
    places["lake"] = lake_place
    dedup_removed = _store_cleanup(settings, found.dedup_keys)
    places["store"] = {
        "recomputed_from_lake": True,
        "open_plays_removed": open_plays,
        "open_sessions_removed": open_sessions,
        "dedup_keys_removed": dedup_removed,
        **scrub_sqlite(settings.store_path),
    }

    # 5. The quarantine and the import registry.
    quarantine = open_quarantine(settings)
    try:
        # Whole JSON strings: an id that is part of a longer one is another person's.
        entries = quarantine.erase([b'"' + form + b'"' for form in forms])
    finally:
        quarantine.close()
    places["quarantine"] = {"entries_removed": entries, **scrub_sqlite(settings.quarantine_path)}
    imports = _imports_cleanup(settings, ids)
    if imports is not None:
        places["imports"] = imports

    if suppress_later:
        suppress(settings, user_id)
    searched, holding = search_data_dir(settings, forms, skip=request)
    rows_left = _lake_rows_left(lake, ids)
    receipt: dict[str, Any] = {
        "format": RECEIPT_FORMAT,
        "subject": subject,
        "subject_is": (
            "s_ + HMAC-SHA256 of the user id with the data dir's secret "
            "(privacy/secret): the receipt does not keep the id"
        ),
        "project": project,
        "data_dir": str(settings.data_dir.resolve()),
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "seconds": round(time.monotonic() - clock, 3),
        "ids_matched": {"clear": 1, "pseudonyms": len(ids) - 1},
        "processed_first": {
            "pending_backfills_applied": backfilled,
            "stream_records_processed": processed.read,
        },
        "places": places,
        "suppressed": suppress_later,
        "verification": {
            "files_searched": searched,
            "files_holding_the_id": holding,
            "lake_rows_holding_the_id": rows_left,
            "note": "byte search of every file of the data dir for the id (clear and "
            "pseudonymised, UTF-8 and JSON-escaped), and every lake file read back "
            "(Parquet pages are compressed)",
        },
    }
    receipt["path"] = str(_write_receipt(settings, receipt, started))
    return receipt


def _write_receipt(settings: Settings, receipt: dict[str, Any], at: datetime) -> Path:
    """Write ``receipt`` (mode 0600) to the privacy folder; returns its path."""
    folder = privacy_dir(settings) / RECEIPTS_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = at.strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{stamp}-{receipt['subject'][2:18]}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({**receipt, "path": str(path)}, f, indent=2, sort_keys=True)
        f.write("\n")
    return path
