"""Detect a file's format from its content, and load its rows.

The name of a file is never trusted (a renamed export imports the same); the content
decides:

- JSON (the first non-blank character is ``[`` or ``{``) must be an array; its first
  element picks the format: ``ts`` + ``ms_played`` -> Spotify extended, ``endTime`` +
  ``msPlayed`` -> Spotify basic, ``time`` + ``title`` + ``header``/``products`` ->
  YouTube watch history. An empty array is format ``empty`` (nothing to import).
- CSV: the first record picks it: a ``;``-separated DIGINETICA header, a Last.fm header
  naming ``artist``, ``track`` and a time column, or a Taobao UserBehavior row (five
  fields, ``behavior_type`` in pv/fav/cart/buy) or header. A leading index column (a
  pandas ``to_csv`` or R ``write.csv`` row number, :data:`.lastfm.INDEX_COLUMN_NAMES`,
  integers in every record) is read and left out, so it is never part of a row's
  identity.

Everything else raises :class:`UnknownFormatError`; a corrupt file (bad JSON or CSV
syntax, bytes that are not UTF-8) raises :class:`ImportFormatError`, both naming the file
and the line.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playpulse.sources.importers import (
    diginetica,
    lastfm,
    spotify_basic,
    spotify_extended,
    taobao,
    youtube,
)
from playpulse.sources.importers.base import (
    MapContext,
    SourceRow,
    UnknownFormatError,
)
from playpulse.sources.importers.reading import (
    first_line,
    line_of,
    looks_like_json,
    read_csv,
    read_json_array,
    read_text,
)

Mapper = Callable[[SourceRow, MapContext], list[dict[str, Any]]]

#: The mapper of every format, by name.
MAPPERS: dict[str, Mapper] = {
    spotify_extended.NAME: spotify_extended.map_row,
    spotify_basic.NAME: spotify_basic.map_row,
    youtube.NAME: youtube.map_row,
    lastfm.NAME: lastfm.map_row,
    taobao.NAME: taobao.map_row,
    diginetica.NAME: diginetica.map_row,
}
#: Every format this package imports (``empty`` is an empty JSON array).
FORMATS: tuple[str, ...] = tuple(MAPPERS)
EMPTY = "empty"

_JSON_FORMATS = (
    (spotify_extended.NAME, spotify_extended.matches),
    (spotify_basic.NAME, spotify_basic.matches),
    (youtube.NAME, youtube.matches),
)


@dataclass
class LoadedFile:
    """A file read and recognized: its format, rows and mapping hints.

    ``hints`` carries what the mapper needs from the file as a whole (a CSV header's
    column names).
    """

    path: Path
    format: str
    rows: list[SourceRow]
    hints: dict[str, Any] = field(default_factory=dict)


def _unknown(path: Path, line: int | None, what: str) -> UnknownFormatError:
    return UnknownFormatError(
        path,
        f"unknown format: {what} matches none of the importable formats ({', '.join(FORMATS)})",
        line,
    )


def _load_json(path: Path, text: str) -> LoadedFile:
    rows = read_json_array(path, text)
    if not rows:
        return LoadedFile(path, EMPTY, rows)
    first = rows[0].data
    for name, matches in _JSON_FORMATS:
        if matches(first):
            return LoadedFile(path, name, rows)
    raise _unknown(path, rows[0].line, "the first element of the JSON array")


def _split(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter), [])


def _without_index(path: Path, text: str, delimiter: str) -> list[tuple[int, list[str]]] | None:
    """The CSV records with their leading index column (see
    :func:`.lastfm.index_column`) removed, header included; ``None`` when the file has
    none (a value that is not an integer)."""
    records = read_csv(path, text, delimiter)
    if any(not fields or not fields[0].strip().lstrip("+-").isdigit() for _, fields in records[1:]):
        return None
    return [(line, fields[1:]) for line, fields in records]


def _load_csv(path: Path, text: str) -> LoadedFile:
    head = first_line(text)
    head_line = line_of(text, text.find(head)) if head else 1
    semicolon, comma = _split(head, ";"), _split(head, ",")
    indexed = [
        (fields, delimiter)
        for fields, delimiter in ((semicolon, diginetica.DELIMITER), (comma, taobao.DELIMITER))
        if len(fields) > 1 and fields[0].strip().lower() in lastfm.INDEX_COLUMN_NAMES
    ]
    for fields, delimiter in indexed:  # a pandas/R index before a fixed-column header
        if diginetica.matches_header(fields[1:]) and delimiter == diginetica.DELIMITER:
            records = _without_index(path, text, delimiter)
            if records is not None:
                columns = diginetica.header_of(records[0][1])
                rows = [SourceRow(path, n, i, f) for i, (n, f) in enumerate(records[1:])]
                return LoadedFile(path, diginetica.NAME, rows, {"columns": columns})
        if taobao.header_kind(fields[1:]) == "header" and delimiter == taobao.DELIMITER:
            records = _without_index(path, text, delimiter)
            if records is not None:
                rows = [SourceRow(path, n, i, f) for i, (n, f) in enumerate(records[1:])]
                return LoadedFile(path, taobao.NAME, rows)
    if diginetica.matches_header(semicolon):
        records = read_csv(path, text, diginetica.DELIMITER)
        columns = diginetica.header_of(records[0][1])
        rows = [SourceRow(path, line, i, fields) for i, (line, fields) in enumerate(records[1:])]
        return LoadedFile(path, diginetica.NAME, rows, {"columns": columns})
    if lastfm.matches_header(comma):
        records = read_csv(path, text, lastfm.DELIMITER)
        columns = lastfm.header_of(records[0][1])
        rows = [SourceRow(path, line, i, fields) for i, (line, fields) in enumerate(records[1:])]
        index = lastfm.index_column(columns, [r.data for r in rows])
        return LoadedFile(path, lastfm.NAME, rows, {"columns": columns, "index_column": index})
    kind = taobao.header_kind(comma)
    if kind is not None:
        records = read_csv(path, text, taobao.DELIMITER)
        if kind == "header":
            records = records[1:]
        rows = [SourceRow(path, line, i, fields) for i, (line, fields) in enumerate(records)]
        return LoadedFile(path, taobao.NAME, rows)
    raise _unknown(path, head_line, "the first line")


def load_file(path: Path) -> LoadedFile:
    """Read ``path``, detect its format from its content and split it into rows.

    Raises :class:`UnknownFormatError` for a readable file in no known format (or an
    empty one) and :class:`ImportFormatError` for a corrupt one, naming the file and
    line.
    """
    text = read_text(path)
    if not text.strip():
        raise UnknownFormatError(path, "is empty", 1)
    if looks_like_json(text):
        return _load_json(path, text)
    return _load_csv(path, text)


def detect_format(path: Path) -> str:
    """The format name of ``path`` (one of :data:`FORMATS`, or ``empty``); raises like
    :func:`load_file`."""
    return load_file(path).format
