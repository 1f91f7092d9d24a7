"""Write tables to the Parquet lake, idempotently.

Layout: ``<root>/<table>/event_date=YYYY-MM-DD/p<partition>-o<first>-<last>.parquet``
(Hive partitioning by event date, zstd compression). A file's name is fixed by the stream
partition and offset range it holds, and every write goes to a temporary file renamed
into place, so a retried write replaces the file instead of adding a second copy.

History is kept in month partitions, ``<root>/<table>/event_month=YYYY-MM/``: a backfill
(imported history, :meth:`LakeWriter.write_months`) writes one file per month it covers,
and compaction merges the day partitions of every month before the newest into one file
of their month, so a long, sparse history takes a few files a month, not one a day. Every
file holds its rows' ``event_date`` column; readers take it from there, never from the
folder name.

A processor writes the files of a batch *before* it commits the batch's offsets to the
store. Files of a batch that was never committed are removed by
:meth:`LakeWriter.discard_uncommitted` when the processor restarts, so they are not
counted twice when the same records are processed again in other batch boundaries.

Durability: a file is fsynced before it is renamed into place and its directory after
(and every directory created, in its parent), so a file that is listed after a power
loss is whole, and a compacted file is on disk before the files it replaces are deleted.
A temporary file is named ``.<name>.<writer pid>-<random>.tmp``; those a crash left
behind are deleted by :meth:`LakeWriter.remove_orphan_temp_files` (run by
:meth:`LakeWriter.discard_uncommitted`, when a processor starts).

On S3 (a :class:`LakeWriter` given a pyarrow ``filesystem``; see
:func:`playpulse.lake.factory.open_lake`), paths are the objects' keys with their bucket,
``BUCKET/PREFIX/<table>/...`` (pyarrow's S3 path form, held in :class:`~pathlib.Path`
values that only this writer's methods open): the same layout and names, one PUT per
file (atomic: no temporary file, nothing to fsync), and a file set aside is copied then
deleted.

Corrupt files: a lake file that cannot be read as Parquet (truncated, garbage) is moved
aside by whoever finds it (the processor at start, compaction, a query's cache) to
``<root>/_corrupt/<table>/event_date=<date>/<name>.<random>.corrupt`` with a
``.json`` reason file beside it, logged once (by the process that moves it), and listed
by :func:`corrupt_files`; it is then no longer a lake file, so nothing stops on it.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from playpulse.errors import ConfigError, LakeError
from playpulse.lake.schema import VERSION_KEY

_FILE = re.compile(r"^p(?P<partition>\d+)-o(?P<first>\d+)-(?P<last>\d+)\.parquet$")
_MULTI = re.compile(r"^m-o(?P<first>\d+)-(?P<last>\d+)-(?P<digest>[0-9a-f]{16})\.parquet$")
_COMPACTED = re.compile(r"^compacted-.+\.parquet$")
_BACKFILL = re.compile(r"^backfill-[0-9a-z-]+\.parquet$")
#: Folder name prefixes of a table's partitions: one UTC day (what processors write) or
#: one UTC month (backfills, and the days of a month compacted together).
DAY_PREFIX = "event_date="
MONTH_PREFIX = "event_month="
# A temporary file: ".<final name>.<writer pid>-<random>.tmp" (before: no pid).
_TEMP = re.compile(r"^\..+\.(?:(?P<pid>\d+)-)?[0-9a-f]{32}\.tmp$")
#: The folder of the lake root where corrupt files are moved aside.
CORRUPT_DIR = "_corrupt"
#: A temporary file older than this (seconds since its last write) is an orphan even
#: when the process id in its name is alive (ids are reused).
ORPHAN_TEMP_AGE_S = 3600.0
COMPRESSION = "zstd"
#: An object-store file larger than this goes up in one PutObject through boto3 when it is
#: installed (S3 takes up to 5 GiB in one PUT), not in pyarrow's multipart upload (which
#: some S3-compatible stores, moto among them, do not complete). Below it, pyarrow sends
#: one PutObject itself.
SINGLE_PUT_BYTES = 4 * 1024 * 1024
_SOURCES_KEY = "playpulse.replaces"
_RANGES_KEY = "playpulse.ranges"

#: (stream partition, first offset, last offset) of the records a file was written from.
OffsetRange = tuple[int, int, int]

log = logging.getLogger("playpulse.lake")


@dataclass(frozen=True, slots=True)
class LakeFile:
    """One data file: its path, date partition and the stream offset ranges it holds."""

    path: Path
    event_date: str
    ranges: tuple[OffsetRange, ...]

    def uncommitted(
        self, committed: Mapping[int, int], partitions: Collection[int] | None = None
    ) -> bool:
        """Whether any of its ranges (of ``partitions`` only, when given) reaches
        ``committed`` (partition -> next offset to process; a partition not in it has
        nothing committed)."""
        return any(
            last >= committed.get(p, 0)
            for p, _, last in self.ranges
            if partitions is None or p in partitions
        )


@dataclass(frozen=True, slots=True)
class CorruptFile:
    """A lake file that could not be read and was moved aside.

    ``path``: where it is now (under ``<root>/_corrupt/``); ``original``: where it was,
    relative to the lake root (``events/event_date=2026-11-21/p0000-o...parquet``);
    ``table``: its lake table; ``reason``: the reader's error; ``size_bytes``: its size;
    ``moved_at``: when it was moved aside (UTC; ``None`` when its reason file is missing
    or unreadable).
    """

    path: Path
    original: str
    table: str
    reason: str
    size_bytes: int
    moved_at: datetime | None


def file_name(ranges: Sequence[OffsetRange]) -> str:
    """The file name of the records of ``ranges``: ``p<partition>-o<first>-<last>``
    for one range; for several (one poll over many partitions) ``m-o<lowest
    first>-<highest last>-<digest of the ranges>``, the ranges kept in the file's
    Parquet metadata. Equal ranges give equal names, so a retried write replaces."""
    if not ranges:
        raise LakeError("a lake file needs at least one offset range")
    if len(ranges) == 1:
        p, first, last = ranges[0]
        return f"p{p:04d}-o{first:012d}-{last:012d}.parquet"
    ordered = sorted(ranges)
    digest = hashlib.blake2b(json.dumps(ordered).encode(), digest_size=8).hexdigest()
    first = min(r[1] for r in ordered)
    last = max(r[2] for r in ordered)
    return f"m-o{first:012d}-{last:012d}-{digest}.parquet"


class LakeWriter:
    """Writes Arrow tables to ``root`` (created if missing), one file per date and range.

    ``schemas`` maps each table name to its Arrow schema; every file of a table uses it.
    ``filesystem``: ``None`` (default) for a local folder; a pyarrow filesystem (an
    ``S3FileSystem``) for an object store, ``root`` then being ``BUCKET/PREFIX`` (the
    bucket must exist; nothing is created up front). Raises :class:`LakeError` when a
    local ``root`` cannot be created.
    """

    def __init__(
        self,
        root: str | Path,
        schemas: Mapping[str, pa.Schema],
        *,
        filesystem: pafs.FileSystem | None = None,
    ) -> None:
        self.root = Path(root)
        self.schemas = dict(schemas)
        self.filesystem = filesystem
        # S3: the (mtime ns, size) of each file the last listing saw.
        self._listed: dict[Path, tuple[int, int]] = {}
        if filesystem is not None:
            return
        try:
            _make_dirs(self.root)
        except OSError as exc:
            raise LakeError(f"cannot create the lake folder {self.root}: {exc}") from exc

    @property
    def is_local(self) -> bool:
        """Whether the lake is a local folder (else an object store such as S3)."""
        return self.filesystem is None

    @property
    def location(self) -> str:
        """Where the lake is, for messages: its folder, or ``s3://BUCKET/PREFIX``."""
        return str(self.root) if self.filesystem is None else f"s3://{self.root}"

    def uri(self, path: Path) -> str:
        """``path`` (a lake file) as its user would name it: the local path, or
        ``s3://BUCKET/KEY``."""
        return str(path) if self.filesystem is None else f"s3://{path}"

    def exists(self) -> bool:
        """Whether the lake's folder (local) or bucket (S3) exists. Raises
        :class:`LakeError` when the object store cannot be reached."""
        if self.filesystem is None:
            return self.root.exists()
        bucket = self.root.parts[0]
        try:
            info = self.filesystem.get_file_info(bucket)
        except OSError as exc:
            raise LakeError(f"cannot reach the lake {self.location}: {exc}") from exc
        return bool(info.type != pafs.FileType.NotFound)

    def stat(self, path: Path) -> tuple[int, int] | None:
        """``(modification time in ns, size in bytes)`` of the lake file ``path``, or
        ``None`` when it is gone."""
        if self.filesystem is None:
            try:
                st = path.stat()
            except FileNotFoundError:
                return None
            return st.st_mtime_ns, st.st_size
        info = self._info(str(path))
        if info.type == pafs.FileType.NotFound:
            return None
        return _info_stamp(info)

    def read_table(self, path: Path, schema: pa.Schema | None = None) -> pa.Table:
        """The rows of the lake file ``path`` (as ``schema`` when given: columns it lacks
        are null). Raises the reader's error (:class:`FileNotFoundError` when gone,
        :class:`pyarrow.ArrowInvalid` when damaged)."""
        return pq.read_table(str(path), schema=schema, filesystem=self.filesystem)

    def read_metadata(self, path: Path) -> Any:
        """The Parquet footer (``pyarrow.parquet.FileMetaData``) of the lake file
        ``path``; raises the reader's error."""
        if self.filesystem is None:
            return pq.read_metadata(path)
        with self.filesystem.open_input_file(str(path)) as f:
            return pq.read_metadata(f)

    def live_stats(self, table: str) -> list[tuple[Path, int, int]]:
        """:meth:`live_files` of ``table`` with each one's modification time (ns) and
        size (bytes), from the same listing (one listing on S3); files gone since the
        listing are left out."""
        out = []
        for _, paths in sorted(self._live_by_dir(table).items()):
            for path in paths:
                stamp = self._listed.get(path) if self.filesystem is not None else None
                if stamp is None:
                    stamp = self.stat(path)
                if stamp is not None:
                    out.append((path, *stamp))
        return out

    def data_files(self, table: str) -> list[Path]:
        """Every data file of ``table``'s day and month partitions, sorted, including
        those a compacted file replaced (what a tool that rewrites the table deletes;
        readers want :meth:`live_files`)."""
        return sorted(
            [*self._data_files(table, DAY_PREFIX), *self._data_files(table, MONTH_PREFIX)]
        )

    def delete(self, path: Path) -> bool:
        """Delete the lake file ``path``; whether it was there. Raises
        :class:`LakeError` when the object store refuses."""
        return self._delete(path)

    def rewrite(self, path: Path, arrow: pa.Table) -> None:
        """Replace the lake file ``path`` by ``arrow`` under the same name, whole or not
        at all (a temporary file renamed over it locally, one PUT on S3): for a tool that
        removes rows from a file (``playpulse privacy delete``), ``arrow`` being the
        file's rows less those, read with its Parquet metadata (offset ranges, replaced
        files), which is written back with them, so readers and compaction see the same
        file. Raises :class:`LakeError`."""
        self._put(arrow, path)

    def corrupt_files(self) -> list[CorruptFile]:
        """The files of this lake moved aside (:func:`corrupt_files`)."""
        if self.filesystem is None:
            return corrupt_files(self.root)
        found = []
        for info in self._list(self.root / CORRUPT_DIR, recursive=True):
            path = Path(info.path)
            rel = path.relative_to(self.root / CORRUPT_DIR).parts
            if info.type != pafs.FileType.File or len(rel) != 3 or path.suffix != ".corrupt":
                continue
            record: dict[str, Any] = {}
            try:
                with self.filesystem.open_input_stream(f"{path}.json") as f:
                    record = json.loads(f.read())
            except (OSError, ValueError):
                pass
            found.append(_corrupt_entry(path, int(info.size or 0), record))
        return _oldest_first(found)

    # --- storage primitives: a local folder, or an object store (S3) ---

    def _info(self, path: str) -> Any:
        assert self.filesystem is not None
        try:
            return self.filesystem.get_file_info(path)
        except OSError as exc:
            raise LakeError(f"cannot reach the lake {self.location}: {exc}") from exc

    def _list(self, directory: Path, *, recursive: bool) -> list[Any]:
        """The object store's entries under ``directory`` (``[]`` when none)."""
        assert self.filesystem is not None
        selector = pafs.FileSelector(str(directory), recursive=recursive, allow_not_found=True)
        try:
            infos: list[Any] = self.filesystem.get_file_info(selector)
        except OSError as exc:
            raise LakeError(f"cannot list the lake {self.location}: {exc}") from exc
        return infos

    def _put(self, table: pa.Table, path: Path) -> None:
        """Write ``table`` to ``path`` whole or not at all (a temporary file renamed into
        place locally, one PUT on S3). Raises :class:`LakeError`."""
        if self.filesystem is None:
            _write_atomically(table, path)
            return
        buffer = pa.BufferOutputStream()
        _write_parquet(table, buffer)
        data = buffer.getvalue()
        try:
            if data.size > SINGLE_PUT_BYTES and _put_object(path, data):
                return
            # Up to SINGLE_PUT_BYTES, pyarrow sends one PutObject when the stream closes
            # (allow_delayed_open); above, a multipart upload, also atomic.
            with self.filesystem.open_output_stream(str(path)) as out:
                out.write(data)
        except OSError as exc:
            raise LakeError(f"writing {self.uri(path)} failed: {exc}") from exc

    def _delete(self, path: Path) -> bool:
        """Delete the lake file ``path``; whether it was there."""
        if self.filesystem is None:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            return True
        try:
            self.filesystem.delete_file(str(path))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise LakeError(f"cannot delete {self.uri(path)}: {exc}") from exc
        return True

    def _data_files(self, table: str, prefix: str) -> list[Path]:
        """The ``*.parquet`` files of ``table``'s partition folders named ``prefix*``."""
        if self.filesystem is None:
            return sorted((self.root / table).glob(f"{prefix}*/*.parquet"))
        return [p for p in self._listing(table) if p.parent.name.startswith(prefix)]

    def _listing(self, table: str) -> list[Path]:
        """Every data file of ``table`` on the object store (one recursive listing), sorted;
        their stamps are kept in ``_listed`` for :meth:`live_stats`."""
        found = []
        base = self.root / table
        for stale in [p for p in self._listed if p.is_relative_to(base)]:
            del self._listed[stale]
        for info in self._list(base, recursive=True):
            path = Path(info.path)
            if info.type != pafs.FileType.File or path.suffix != ".parquet":
                continue
            if len(path.relative_to(base).parts) != 2:
                continue
            folder = path.parent.name
            if folder.startswith((DAY_PREFIX, MONTH_PREFIX)):
                found.append(path)
                self._listed[path] = _info_stamp(info)
        return sorted(found)

    def write(
        self,
        table: str,
        rows: Iterable[dict[str, Any]],
        *,
        partition: int,
        first_offset: int,
        last_offset: int,
    ) -> list[Path]:
        """Write ``rows`` (dicts with an ``event_date`` key ``YYYY-MM-DD``) of ``table``,
        read from ``partition`` at ``first_offset``..``last_offset``.

        Rows are grouped by ``event_date``; each group becomes one file named by
        ``partition`` and the offset range. Raises :class:`LakeError` for an unknown
        table or rows that do not fit the schema.
        """
        return self.write_rows(table, rows, ranges=[(partition, first_offset, last_offset)])

    def write_rows(
        self, table: str, rows: Iterable[dict[str, Any]], *, ranges: Sequence[OffsetRange]
    ) -> list[Path]:
        """Like :meth:`write`, for rows read from several partitions' ``ranges``."""
        schema = self._schema(table)
        rows = list(rows)
        if not rows:
            return []
        try:
            arrow = pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise LakeError(f"rows for {table} do not fit its schema: {exc}") from exc
        return self.write_table(table, arrow, ranges=ranges)

    def write_table(
        self, table: str, arrow: pa.Table, *, ranges: Sequence[OffsetRange]
    ) -> list[Path]:
        """Like :meth:`write_rows` for rows already in an Arrow table with the table's
        schema (its ``event_date`` column decides the files). Raises
        :class:`LakeError` for an unknown table or another schema."""
        schema = self._schema(table)
        if not arrow.schema.equals(schema, check_metadata=False):
            raise LakeError(f"the Arrow table for {table} does not have its schema")
        name = file_name(ranges)
        if len(ranges) > 1:
            arrow = arrow.replace_schema_metadata({_RANGES_KEY: json.dumps(sorted(ranges))})
        dates = arrow["event_date"]
        written = []
        unique = sorted(pc.unique(dates).to_pylist())
        for event_date in unique:
            group = arrow if len(unique) == 1 else arrow.filter(pc.equal(dates, event_date))
            path = self.root / table / f"event_date={event_date}" / name
            self._put(group, path)
            written.append(path)
        return written

    def write_months(self, table: str, arrow: pa.Table, *, tag: str) -> list[Path]:
        """Write the rows of ``arrow`` (the table's schema) as one file per UTC month of
        their ``event_date``: ``<table>/event_month=YYYY-MM/backfill-<tag>.parquet``.

        For history that does not come from the stream (a backfill): such files have no
        offset ranges, so :meth:`discard_uncommitted` never deletes them. ``tag``
        (lowercase letters, digits and dashes) names the write; writing the same tag again
        replaces its files. Raises :class:`LakeError` for an unknown table, another schema
        or a bad tag."""
        schema = self._schema(table)
        if not arrow.schema.equals(schema, check_metadata=False):
            raise LakeError(f"the Arrow table for {table} does not have its schema")
        name = f"backfill-{tag}.parquet"
        if not _BACKFILL.match(name):
            raise LakeError(f"a backfill tag is lowercase letters, digits and dashes: {tag!r}")
        arrow = arrow.take(pc.sort_indices(arrow["event_date"]))
        months = pc.utf8_slice_codeunits(arrow["event_date"], 0, 7).to_pylist()
        written = []
        start = 0
        while start < len(months):
            end = bisect.bisect_right(months, months[start], lo=start)
            path = self.root / table / f"{MONTH_PREFIX}{months[start]}" / name
            self._put(arrow.slice(start, end - start), path)
            written.append(path)
            start = end
        return written

    def files(self, table: str) -> list[LakeFile]:
        """Every offset-range file of ``table`` (compacted files are not listed).

        A multi-partition file whose ranges cannot be read (its footer is damaged) is
        moved aside (:meth:`set_aside`) and not listed."""
        out = []
        for path in self._data_files(table, DAY_PREFIX):
            ranges = self._ranges_or_set_aside(path)
            if ranges:
                out.append(LakeFile(path, path.parent.name.removeprefix("event_date="), ranges))
        return out

    def discard_uncommitted(
        self, committed: Mapping[int, int], partitions: Collection[int] | None = None
    ) -> int:
        """Delete files holding offsets at or after each partition's committed offset.

        ``committed`` maps stream partition -> next offset to process (a partition not
        in it has nothing committed); with ``partitions``, only files with a range of one
        of them count (what a processor that just took those partitions from another
        does: a file is one processor's batch, applied to the store whole or not at
        all). Returns the number of files deleted. Run by a processor when it takes
        partitions, under the data dir's processor lock: it first deletes the orphan
        temporary files of crashed writers (:meth:`remove_orphan_temp_files`) and moves
        aside multi-partition files it cannot read (their ranges are unknown).
        """
        self.remove_orphan_temp_files()
        deleted = 0
        for table in self.schemas:
            for f in self.files(table):
                if f.uncommitted(committed, partitions) and self._delete(f.path):
                    deleted += 1
        return deleted

    def compact(self, table: str, committed: Mapping[int, int]) -> int:
        """Merge the committed files of ``table``: each day partition's into one file of
        that day and, for every month before the newest month the table holds, all the
        files of the month (its day partitions' and its month partition's) into one file
        of its month partition (``event_month=YYYY-MM``), so a long history takes one
        file a month.

        Only files wholly below ``committed`` (stream partition -> next offset to process)
        are merged, so this is safe while a processor runs. The merged file keeps every
        row, except in versioned tables (a schema with :data:`VERSION_KEY` metadata) the
        rows no reader uses: older versions of a key and, when its newest version is
        ``deleted``, the key. It names the files it replaces in its Parquet metadata; readers
        (:meth:`live_files`) ignore replaced files from the moment the merged file exists,
        so no query result changes, even if this is interrupted. Replaced files are then
        deleted. Returns the number of files merged away.
        """
        schema = self._schema(table)
        live = self._live_by_dir(table)
        months: dict[str, list[Path]] = {}
        for directory in live:
            months.setdefault(_month_of(directory.name), []).append(directory)
        newest = max(months, default="")
        groups: list[tuple[Path, list[Path]]] = []
        for month, directories in sorted(months.items()):
            if month < newest:
                target = self.root / table / f"{MONTH_PREFIX}{month}"
                groups.append((target, [p for d in directories for p in live[d]]))
            else:
                groups.extend((d, live[d]) for d in directories)
        merged = 0
        for target, paths in groups:
            eligible = []
            for path in paths:
                ranges = self._ranges_or_set_aside(path)
                if ranges is None:
                    continue
                if not LakeFile(path, "", ranges).uncommitted(committed):
                    eligible.append(path)  # compacted and backfill files (no ranges) always are
            parts = self._read_for_compaction(eligible, schema)
            if parts is None or not parts:
                continue
            key = (schema.metadata or {}).get(VERSION_KEY.encode())
            if len(parts) == 1:
                # One file: worth rewriting only when it holds rows no reader uses.
                (only,) = parts.values()
                if not key or newest_versions(only, key.decode().split(",")).num_rows == (
                    only.num_rows
                ):
                    continue
            eligible = list(parts)
            sources = set()
            try:
                for path in eligible:
                    sources.add(_relative(path.parent.name, path.name, target))
                    sources.update(
                        _relative(path.parent.name, name, target)
                        for name in self._replaced_by(path)
                    )
            except FileNotFoundError:
                continue  # another compaction got there first: left for the next run
            combined = pa.concat_tables(list(parts.values()))
            if key:
                combined = newest_versions(combined, key.decode().split(","))
            combined = combined.replace_schema_metadata({_SOURCES_KEY: json.dumps(sorted(sources))})
            self._put(combined, target / f"compacted-{uuid.uuid4().hex}.parquet")
            for path in eligible:
                self._delete(path)
            merged += len(eligible)
        return merged

    def live_files(self, table: str, directory: Path | None = None) -> list[Path]:
        """The files of ``table`` a reader must read: every data file of its day and month
        partitions except those a compacted file has replaced (``directory`` limits it to
        one partition folder).

        A compacted file whose footer cannot be read is moved aside (:meth:`set_aside`)
        and not listed; the files it replaced are then live again if they still exist."""
        live = self._live_by_dir(table)
        if directory is not None:
            return live.get(directory, [])
        return [path for d in sorted(live) for path in live[d]]

    def _live_by_dir(self, table: str) -> dict[Path, list[Path]]:
        """:meth:`live_files` of ``table`` by partition folder."""
        found: dict[Path, list[Path]] = {}
        if self.filesystem is None:
            root = self.root / table
            directories = sorted([*root.glob(f"{DAY_PREFIX}*"), *root.glob(f"{MONTH_PREFIX}*")])
            found = {d: sorted(d.glob("*.parquet")) for d in directories}
        else:
            for path in self._listing(table):
                found.setdefault(path.parent, []).append(path)
        replaced: set[tuple[str, str]] = set()  # (folder name, file name)
        for d, paths in found.items():
            for path in paths:
                if not _COMPACTED.match(path.name):
                    continue
                try:
                    names = self._replaced_by(path)
                except FileNotFoundError:
                    replaced.add((d.name, path.name))  # compacted again meanwhile: gone
                    continue
                except (pa.ArrowException, OSError) as exc:
                    if not is_corruption(exc):
                        raise LakeError(f"cannot read {path}: {exc}") from exc
                    self.set_aside(path, str(exc))
                    replaced.add((d.name, path.name))
                    continue
                for name in names:
                    folder, _, file = name.rpartition("/")
                    replaced.add((folder or d.name, file))
        return {
            d: [p for p in paths if (d.name, p.name) not in replaced] for d, paths in found.items()
        }

    def readable(self, paths: Iterable[Path]) -> list[Path]:
        """``paths`` less those that are gone and those whose Parquet footer cannot be
        read, which are moved aside (:meth:`set_aside`). A footer is checked once per
        process and file version (path, modification time, size)."""
        out = []
        for path in paths:
            try:
                stamp = self._listed_stamp(path)
                if stamp is None:
                    continue
                key = (self.uri(path), *stamp)
                if key not in _FOOTERS_OK:
                    self.read_metadata(path)
                    _remember(_FOOTERS_OK, key, True, 16384)
            except FileNotFoundError:
                continue
            except (pa.ArrowException, OSError) as exc:
                if not is_corruption(exc):
                    raise LakeError(f"cannot read {path}: {exc}") from exc
                self.set_aside(path, str(exc))
                continue
            out.append(path)
        return out

    def unreadable_reason(self, path: str | Path, *, full: bool = True) -> str | None:
        """Why ``path`` cannot be read as Parquet (the reader's error), or ``None`` when
        it can or is gone. ``full``: decode every page, not only the footer. Raises
        :class:`LakeError` for an error that does not say the file is damaged (no
        permission, too many open files)."""
        try:
            if full:
                self.read_table(Path(path))
            else:
                self.read_metadata(Path(path))
        except FileNotFoundError:
            return None
        except (pa.ArrowException, OSError) as exc:
            if not is_corruption(exc):
                raise LakeError(f"cannot read {path}: {exc}") from exc
            return str(exc)
        return None

    def set_aside(self, path: str | Path, reason: str) -> CorruptFile | None:
        """Move the unreadable lake file ``path`` (``<root>/<table>/event_date=<date>/
        <name>``) to ``<root>/_corrupt/<table>/event_date=<date>/<name>.<random>.corrupt``
        with a JSON reason file (``original``, ``table``, ``reason``, ``size_bytes``,
        ``moved_at``) at the same path plus ``.json``, and log it (a warning, once: only
        the caller that moves it logs). Returns what was moved, or ``None`` when the file
        is gone (moved or deleted by another process) or cannot be moved (logged as an
        error; callers skip the file anyway)."""
        path = Path(path)
        date_dir = path.parent
        table = date_dir.parent.name
        original = f"{table}/{date_dir.name}/{path.name}"
        target_dir = self.root / CORRUPT_DIR / table / date_dir.name
        target = target_dir / f"{path.name}.{uuid.uuid4().hex[:8]}.corrupt"
        note = target.with_name(target.name + ".json")
        moved_at = datetime.now(UTC)
        if self.filesystem is not None:
            return self._set_aside_object(path, target, original, table, reason, moved_at)
        try:
            size_bytes = path.stat().st_size
            _make_dirs(target_dir)
            record = {
                "original": original,
                "table": table,
                "reason": reason,
                "size_bytes": size_bytes,
                "moved_at": moved_at.isoformat(),
            }
            _write_durably(note, json.dumps(record, indent=1).encode())
            os.rename(path, target)
        except FileNotFoundError:
            note.unlink(missing_ok=True)
            return None
        except OSError as exc:
            note.unlink(missing_ok=True)
            log.error("cannot move the unreadable lake file %s aside (%s): %s", path, reason, exc)
            return None
        try:
            _fsync_dir(date_dir)
            _fsync_dir(target_dir)
        except OSError:
            pass  # moved; should the move be lost, the next reader moves it again
        log.warning("lake file %s cannot be read (%s): moved aside to %s", original, reason, target)
        return CorruptFile(target, original, table, reason, size_bytes, moved_at)

    def _set_aside_object(
        self, path: Path, target: Path, original: str, table: str, reason: str, moved: datetime
    ) -> CorruptFile | None:
        """:meth:`set_aside` on an object store: the reason object, a copy, then the
        delete (an interrupted move leaves the file in place, to be moved again)."""
        assert self.filesystem is not None
        fs = self.filesystem
        note = f"{target}.json"
        try:
            info = fs.get_file_info(str(path))
            if info.type == pafs.FileType.NotFound:
                return None
            size_bytes = int(info.size or 0)
            record = {
                "original": original,
                "table": table,
                "reason": reason,
                "size_bytes": size_bytes,
                "moved_at": moved.isoformat(),
            }
            with fs.open_output_stream(note) as f:
                f.write(json.dumps(record, indent=1).encode())
            fs.copy_file(str(path), str(target))
            fs.delete_file(str(path))
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                fs.delete_file(note)
            return None
        except OSError as exc:
            log.error(
                "cannot move the unreadable lake file %s aside (%s): %s",
                self.uri(path),
                reason,
                exc,
            )
            return None
        log.warning(
            "lake file %s cannot be read (%s): moved aside to %s",
            original,
            reason,
            self.uri(target),
        )
        return CorruptFile(target, original, table, reason, size_bytes, moved)

    def remove_orphan_temp_files(self, max_age_s: float = ORPHAN_TEMP_AGE_S) -> int:
        """Delete the temporary files writers left behind (a crash between writing a file
        and renaming it into place); returns how many.

        A temporary file is an orphan when the process named in it (its writer's pid)
        no longer exists, or, whatever its name, when it was last written more than
        ``max_age_s`` seconds ago (a pid can be reused). So the in-progress temporary
        file of a live writer (a ``playpulse compact`` running beside the processor) is
        left alone. Call it where no writer of this process is running (the processor
        does at start, in :meth:`discard_uncommitted`): this process's own temporary
        files go only by age. An object store has none (a PUT is atomic): 0.
        """
        if self.filesystem is not None:
            return 0
        removed = 0
        now = time.time()
        temps = [
            *self.root.glob(f"*/{DAY_PREFIX}*/.*.tmp"),
            *self.root.glob(f"*/{MONTH_PREFIX}*/.*.tmp"),
        ]
        for tmp in temps:
            match = _TEMP.match(tmp.name)
            if not match:
                continue
            try:
                age_s = now - tmp.stat().st_mtime
            except FileNotFoundError:
                continue
            pid = int(match["pid"]) if match["pid"] else 0
            writer_gone = pid > 0 and pid != os.getpid() and not _process_exists(pid)
            if writer_gone or age_s > max_age_s:
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    continue
                removed += 1
        if removed:
            log.info("deleted %d orphan temporary lake files of crashed writers", removed)
        return removed

    def _ranges_or_set_aside(self, path: Path) -> tuple[OffsetRange, ...] | None:
        """:func:`_ranges_of` of ``path``; ``None`` (after moving it aside) when its
        footer cannot be read, or when it is gone."""
        try:
            return self._ranges_of(path)
        except FileNotFoundError:
            return None
        except (pa.ArrowException, OSError) as exc:
            if not is_corruption(exc):
                raise LakeError(f"cannot read {path}: {exc}") from exc
            self.set_aside(path, str(exc))
            return None

    def _read_for_compaction(
        self, paths: list[Path], schema: pa.Schema
    ) -> dict[Path, pa.Table] | None:
        """The rows of each of ``paths`` (without metadata); unreadable files are moved
        aside and left out. ``None`` when one is gone (another compaction got there
        first): that date partition is left for the next run."""
        if len(paths) < 2:
            return {}
        parts = {}
        for path in paths:
            try:
                parts[path] = self.read_table(path, schema).replace_schema_metadata()
            except FileNotFoundError:
                return None
            except (pa.ArrowException, OSError) as exc:
                if not is_corruption(exc):
                    raise LakeError(f"cannot read {path} to compact it: {exc}") from exc
                self.set_aside(path, str(exc))
        return parts

    def _listed_stamp(self, path: Path) -> tuple[int, int] | None:
        """:meth:`stat` of ``path``; on an object store, from the last listing when it saw
        the file (saves a request per file)."""
        if self.filesystem is not None and path in self._listed:
            return self._listed[path]
        return self.stat(path)

    def _ranges_of(self, path: Path) -> tuple[OffsetRange, ...]:
        """The offset ranges of a data file, from its name or (several) its metadata; ()
        for a compacted file. Raises the reader's error when the metadata cannot be read."""
        match = _FILE.match(path.name)
        if match:
            return ((int(match["partition"]), int(match["first"]), int(match["last"])),)
        if _MULTI.match(path.name):
            raw = (self._read_schema(path).metadata or {}).get(_RANGES_KEY.encode())
            if raw:
                return tuple((int(p), int(a), int(b)) for p, a, b in json.loads(raw))
        return ()

    def _read_schema(self, path: Path) -> pa.Schema:
        if self.filesystem is None:
            return pq.read_schema(path)
        with self.filesystem.open_input_file(str(path)) as f:
            return pq.read_schema(f)

    def _replaced_by(self, path: Path) -> list[str]:
        """The files the compacted file ``path`` replaces (relative names, as in its
        metadata); ``[]`` for another file. Compacted files never change once in place:
        their lists are cached by path and modification time."""
        if not _COMPACTED.match(path.name):
            return []
        stamp = self._listed_stamp(path)
        if stamp is None:
            raise FileNotFoundError(path)
        key = (self.uri(path), stamp[0])
        names = _REPLACED.get(key)
        if names is None:
            raw = (self._read_schema(path).metadata or {}).get(_SOURCES_KEY.encode())
            names = tuple(json.loads(raw)) if raw else ()
            _remember(_REPLACED, key, names, 4096)
        return list(names)

    def _schema(self, table: str) -> pa.Schema:
        try:
            return self.schemas[table]
        except KeyError:
            raise LakeError(
                f"unknown lake table '{table}'; known: {', '.join(sorted(self.schemas))}"
            ) from None


def newest_versions(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """The rows of ``table`` that are the highest ``version`` of their ``key`` columns,
    less those whose ``deleted`` column (if any) is true: what readers of a versioned
    table see. Row order is not kept.

    Compacting a date partition may drop these rows because every version of a key is
    in that partition's committed files (a key's date comes from its key columns, for
    sessions) or, when not (a play whose start moved to another date), what is dropped
    is only ever older than a row kept here.
    """
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(
        table, sort_keys=[*((k, "ascending") for k in key), ("version", "descending")]
    )
    ordered = table.take(order)
    first = pa.array([True] + [False] * (ordered.num_rows - 1))
    for k in key:
        column = ordered[k].combine_chunks()
        changed = pc.not_equal(column.slice(1), column.slice(0, len(column) - 1))
        first = pc.or_(first, pa.concat_arrays([pa.array([True]), changed.fill_null(True)]))
    kept = ordered.filter(first)
    if "deleted" in kept.column_names:
        kept = kept.filter(pc.invert(kept["deleted"].fill_null(False)))
    return kept


def corrupt_files(lake: str | Path | LakeWriter) -> list[CorruptFile]:
    """The lake files of ``lake`` (a local lake root, ``Settings.lake_path``, or a
    :class:`LakeWriter`, local or on S3) moved aside because they could not be read (see
    :meth:`LakeWriter.set_aside`), oldest first; ``[]`` when there are none or no lake.
    Reads only the ``_corrupt`` folder: cheap enough for a readiness probe."""
    if isinstance(lake, LakeWriter):
        return lake.corrupt_files()
    found = []
    for path in (Path(lake) / CORRUPT_DIR).glob("*/*/*.corrupt"):
        try:
            size_bytes = path.stat().st_size
        except FileNotFoundError:
            continue
        record: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.with_name(path.name + ".json").read_bytes())
        found.append(_corrupt_entry(path, size_bytes, record))
    return _oldest_first(found)


def _corrupt_entry(path: Path, size_bytes: int, record: Any) -> CorruptFile:
    """The :class:`CorruptFile` of the moved-aside ``path`` and its reason ``record``
    (the parsed ``.json`` beside it; ``{}`` or anything else when missing or unreadable)."""
    table = path.parent.parent.name
    original = f"{table}/{path.parent.name}/{path.name.rsplit('.', 2)[0]}"
    reason, moved_at = "unknown (its reason file is missing or unreadable)", None
    try:
        reason = str(record["reason"])
        original = str(record.get("original", original))
        moved_at = datetime.fromisoformat(record["moved_at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return CorruptFile(path, original, table, reason, size_bytes, moved_at)


def _oldest_first(found: list[CorruptFile]) -> list[CorruptFile]:
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda f: (f.moved_at or epoch, str(f.path)))


def is_corruption(exc: BaseException) -> bool:
    """Whether a Parquet reader's error ``exc`` says the file's bytes are damaged (not
    Parquet, truncated, undecodable) rather than that it is gone or out of reach (no
    permission, too many open files), which moving it aside would not fix."""
    if isinstance(exc, pa.ArrowInvalid):
        return True
    # Arrow's own I/O errors (a page that does not decode) carry no errno; EIO is the disk.
    return isinstance(exc, OSError) and exc.errno in (None, errno.EIO)


def _month_of(folder: str) -> str:
    """``YYYY-MM`` of a partition folder name (``event_date=YYYY-MM-DD`` or
    ``event_month=YYYY-MM``)."""
    return folder.split("=", 1)[1][:7]


def partition_days(folder: str) -> tuple[date, date]:
    """The first and last UTC day a partition folder (``event_date=YYYY-MM-DD`` or
    ``event_month=YYYY-MM``) can hold rows of. Raises :class:`ValueError` for another
    name."""
    if folder.startswith(DAY_PREFIX):
        day = date.fromisoformat(folder.removeprefix(DAY_PREFIX))
        return day, day
    if folder.startswith(MONTH_PREFIX):
        first = date.fromisoformat(folder.removeprefix(MONTH_PREFIX) + "-01")
        following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return first, following - timedelta(days=1)
    raise ValueError(f"not a lake partition folder: {folder!r}")


def _relative(folder: str, name: str, target: Path) -> str:
    """How a compacted file in ``target`` names file ``name`` of partition ``folder``
    (``name`` may already be ``folder/file``): bare in its own folder, else with it."""
    if "/" in name:
        return name
    return name if folder == target.name else f"{folder}/{name}"


_FOOTERS_OK: dict[tuple[str, int, int], bool] = {}
_REPLACED: dict[tuple[str, int], tuple[str, ...]] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """Put ``key`` in ``cache``, emptied first when it holds ``limit`` entries (the
    footers checked once per file version, the compacted files' lists)."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value


def _put_object(path: Path, data: pa.Buffer) -> bool:
    """PUT ``data`` at ``path`` (``BUCKET/KEY``) in one request with boto3 (the AWS
    environment's endpoint, region and credentials); ``False`` when boto3 is not
    installed. Raises :class:`OSError` when S3 refuses."""
    try:
        from playpulse.aws.clients import client
    except ImportError:  # pragma: no cover - the package always has it
        return False
    try:
        s3 = client("s3")
    except ConfigError:
        return False
    bucket, _, key = str(path).partition("/")
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=data.to_pybytes())
    except Exception as exc:  # botocore's errors: the lake's caller sees an OSError
        raise OSError(f"PutObject failed: {exc}") from exc
    return True


def _info_stamp(info: Any) -> tuple[int, int]:
    """``(mtime ns, size)`` of a pyarrow ``FileInfo``."""
    return int(info.mtime_ns or 0), int(info.size or 0)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (renames, new files) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # a file system without it
            raise
    finally:
        os.close(fd)


def _make_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each made durable in its parent."""
    if directory.is_dir():
        return
    missing = []
    d = directory
    while not d.is_dir() and d.parent != d:
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made meanwhile by another writer, which syncs its parent
        _fsync_dir(d.parent)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


#: Columns written without dictionary encoding: unique or nearly so per event, a
#: dictionary only costs time and space there (the processing benchmark's events files:
#: 0.68 against 0.86 us of CPU per event, 28 % smaller).
_PLAIN_COLUMNS = frozenset({"event_id", "stream_offset"})


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` the lake writes dictionary-encoded: all but timestamps,
    floats and the ids unique per row (``event_id``, ``stream_offset``)."""
    return [
        f.name
        for f in schema
        if f.name not in _PLAIN_COLUMNS
        and not pa.types.is_timestamp(f.type)
        and not pa.types.is_floating(f.type)
    ]


def _write_parquet(table: pa.Table, where: Any) -> None:
    """``table`` as a zstd Parquet file at ``where`` (a path or an output stream)."""
    pq.write_table(
        table, where, compression=COMPRESSION, use_dictionary=dictionary_columns(table.schema)
    )


def _write_atomically(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a temporary file fsynced before it is renamed
    into place, then fsync the folder. Raises :class:`LakeError` when it fails."""
    try:
        _make_dirs(path.parent)
    except OSError as exc:
        raise LakeError(f"cannot create the lake folder {path.parent}: {exc}") from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
    try:
        _write_parquet(table, tmp)
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LakeError(f"writing {path} failed: {exc}") from exc
