"""Write tables to the Parquet lake, idempotently.

Layout: ``<root>/<table>/event_date=YYYY-MM-DD/p<partition>-o<first>-<last>.parquet``
(Hive partitioning by event date, zstd compression). A file's name is fixed by the stream
partition and offset range it holds, and every write goes to a temporary file renamed
into place, so a retried write replaces the file instead of adding a second copy.

A processor writes the files of a batch *before* it commits the batch's offsets to the
store. Files of a batch that was never committed are removed by
:meth:`LakeWriter.discard_uncommitted` when the processor restarts, so they are not
counted twice when the same records are processed again in other batch boundaries.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from playpulse.errors import LakeError
from playpulse.lake.schema import VERSION_KEY

_FILE = re.compile(r"^p(?P<partition>\d+)-o(?P<first>\d+)-(?P<last>\d+)\.parquet$")
_MULTI = re.compile(r"^m-o(?P<first>\d+)-(?P<last>\d+)-(?P<digest>[0-9a-f]{16})\.parquet$")
_COMPACTED = re.compile(r"^compacted-.+\.parquet$")
COMPRESSION = "zstd"
_SOURCES_KEY = "playpulse.replaces"
_RANGES_KEY = "playpulse.ranges"

#: (stream partition, first offset, last offset) of the records a file was written from.
OffsetRange = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class LakeFile:
    """One data file: its path, date partition and the stream offset ranges it holds."""

    path: Path
    event_date: str
    ranges: tuple[OffsetRange, ...]

    def uncommitted(self, committed: Mapping[int, int]) -> bool:
        """Whether any of its ranges reaches ``committed`` (partition -> next offset to
        process; a partition not in it has nothing committed)."""
        return any(last >= committed.get(p, 0) for p, _, last in self.ranges)


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
    """

    def __init__(self, root: str | Path, schemas: Mapping[str, pa.Schema]) -> None:
        self.root = Path(root)
        self.schemas = dict(schemas)
        self.root.mkdir(parents=True, exist_ok=True)

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
            _write_atomically(group, path)
            written.append(path)
        return written

    def files(self, table: str) -> list[LakeFile]:
        """Every offset-range file of ``table`` (compacted files are not listed)."""
        out = []
        for path in sorted((self.root / table).glob("event_date=*/*.parquet")):
            ranges = _ranges_of(path)
            if ranges:
                out.append(LakeFile(path, path.parent.name.removeprefix("event_date="), ranges))
        return out

    def discard_uncommitted(self, committed: Mapping[int, int]) -> int:
        """Delete files holding offsets at or after each partition's committed offset.

        ``committed`` maps stream partition -> next offset to process (a partition not
        in it has nothing committed). Returns the number of files deleted.
        """
        deleted = 0
        for table in self.schemas:
            for f in self.files(table):
                if f.uncommitted(committed) and f.path.exists():
                    f.path.unlink()
                    deleted += 1
        return deleted

    def compact(self, table: str, committed: Mapping[int, int]) -> int:
        """Merge each date partition's committed files of ``table`` into one file.

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
        merged = 0
        for directory in sorted((self.root / table).glob("event_date=*")):
            live = self.live_files(table, directory)
            eligible = []
            for path in live:
                ranges = _ranges_of(path)
                if not LakeFile(path, "", ranges).uncommitted(committed):
                    eligible.append(path)  # compacted files (no ranges) always are
            if len(eligible) < 2:
                continue
            sources = set()
            for path in eligible:
                sources.add(path.name)
                sources.update(_replaced_by(path))
            combined = pa.concat_tables(
                [pq.read_table(p, schema=schema).replace_schema_metadata() for p in eligible]
            )
            key = (schema.metadata or {}).get(VERSION_KEY.encode())
            if key:
                combined = newest_versions(combined, key.decode().split(","))
            combined = combined.replace_schema_metadata({_SOURCES_KEY: json.dumps(sorted(sources))})
            _write_atomically(combined, directory / f"compacted-{uuid.uuid4().hex}.parquet")
            for path in eligible:
                path.unlink(missing_ok=True)
            merged += len(eligible)
        return merged

    def live_files(self, table: str, directory: Path | None = None) -> list[Path]:
        """The files of ``table`` a reader must read: every data file except those a
        compacted file has replaced (``directory`` limits it to one date partition)."""
        directories = [directory] if directory else sorted((self.root / table).glob("event_date=*"))
        out: list[Path] = []
        for d in directories:
            paths = sorted(d.glob("*.parquet"))
            replaced: set[str] = set()
            for path in paths:
                if _COMPACTED.match(path.name):
                    replaced.update(_replaced_by(path))
            out.extend(p for p in paths if p.name not in replaced)
        return out

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


def _ranges_of(path: Path) -> tuple[OffsetRange, ...]:
    """The offset ranges of a data file, from its name or (several) its metadata; ()
    for a compacted file."""
    match = _FILE.match(path.name)
    if match:
        return ((int(match["partition"]), int(match["first"]), int(match["last"])),)
    if _MULTI.match(path.name):
        try:
            raw = (pq.read_schema(path).metadata or {}).get(_RANGES_KEY.encode())
        except FileNotFoundError:
            return ()
        if raw:
            return tuple((int(p), int(a), int(b)) for p, a, b in json.loads(raw))
    return ()


def _replaced_by(path: Path) -> list[str]:
    if not _COMPACTED.match(path.name):
        return []
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return []
    return list(_replaced_by_version(str(path), stamp))


@functools.lru_cache(maxsize=4096)
def _replaced_by_version(path: str, mtime_ns: int) -> tuple[str, ...]:
    # Compacted files never change once renamed into place: cache their footers' lists
    # (keyed by modification time in case a path is ever reused).
    del mtime_ns
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(_SOURCES_KEY.encode())
    return tuple(json.loads(raw)) if raw else ()


def _write_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, compression=COMPRESSION)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LakeError(f"writing {path} failed: {exc}") from exc
