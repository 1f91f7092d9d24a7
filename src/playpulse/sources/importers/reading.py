"""Read source files into :class:`~playpulse.sources.importers.base.SourceRow` lists,
with the line where each row starts, and turn any corruption into an
:class:`~playpulse.sources.importers.base.ImportFormatError` naming the file and line.

Whole files are read into memory (exports are megabytes, not gigabytes).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from playpulse.sources.importers.base import ImportFormatError, SourceRow, UnknownFormatError

_WS = re.compile(r"[ \t\n\r]*")


def _skip_ws(text: str, i: int) -> int:
    match = _WS.match(text, i)
    return match.end() if match else i


#: How an error about a file cut short begins (the rest says where it stops).
TRUNCATED = "is truncated (a download or copy cut short?): it ends"


def read_text(path: Path) -> str:
    """The file as text (UTF-8, an optional BOM removed).

    Raises :class:`ImportFormatError` when it cannot be read, ends in the middle of a
    UTF-8 character (:data:`TRUNCATED`), or is not UTF-8 (with the line of the first bad
    byte).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFormatError(path, f"cannot be read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        if exc.end == len(data) and "unexpected end" in str(exc.reason):
            # The start of a character and no more: the file was cut short, not mis-encoded.
            raise ImportFormatError(
                path, TRUNCATED + " in the middle of a character", line
            ) from None
        raise ImportFormatError(
            path, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})", line
        ) from None


def json_problem(exc: json.JSONDecodeError) -> str:
    """``is not valid JSON: ...`` for ``exc``, a whole sentence: ``Unterminated string
    starting at column 12`` (the decoder's own message stops at "at")."""
    where = f"column {exc.colno}"
    said = f"{exc.msg} {where}" if exc.msg.endswith(" at") else f"{exc.msg} ({where})"
    return f"is not valid JSON: {said}"


def line_of(text: str, pos: int) -> int:
    """The 1-based line of character offset ``pos`` in ``text``."""
    return text.count("\n", 0, pos) + 1


def looks_like_json(text: str) -> bool:
    """Whether the first non-blank character opens a JSON array or object."""
    stripped = text.lstrip()
    return stripped[:1] in ("[", "{")


def read_json_array(path: Path, text: str) -> list[SourceRow]:
    """The elements of the JSON array that is the whole of ``text``, each with its start
    line.

    Raises :class:`ImportFormatError` (with the line, computed from the decoder's
    position) for a syntax error, and when the document is not an array.
    """
    decoder = json.JSONDecoder()
    n = len(text)
    i = _skip_ws(text, 0)
    if i >= n:
        raise UnknownFormatError(path, "is empty", 1)
    if text[i] != "[":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(path, json_problem(exc), exc.lineno) from None
        raise UnknownFormatError(
            path, "unknown format: the JSON document is not an array", line_of(text, i)
        )
    if not text.rstrip().endswith("]"):
        raise ImportFormatError(
            path, TRUNCATED + " before the JSON array is closed", line_of(text, n)
        )
    rows: list[SourceRow] = []
    line, counted = 1, 0
    i = _skip_ws(text, i + 1)
    if i < n and text[i] == "]":
        i = _skip_ws(text, i + 1)
        if i != n:
            raise ImportFormatError(path, "has extra data after the JSON array", line_of(text, i))
        return rows
    while True:
        if i >= n:
            raise ImportFormatError(
                path,
                "is not valid JSON: the array is not closed (truncated file?)",
                line_of(text, n),
            )
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(path, json_problem(exc), exc.lineno) from None
        line += text.count("\n", counted, i)
        counted = i
        rows.append(SourceRow(path, line, len(rows), value))
        i = _skip_ws(text, end)
        if i < n and text[i] == ",":
            i = _skip_ws(text, i + 1)
            continue
        if i < n and text[i] == "]":
            i = _skip_ws(text, i + 1)
            if i != n:
                raise ImportFormatError(
                    path, "has extra data after the JSON array", line_of(text, i)
                )
            return rows
        if i >= n:
            continue  # reported as a truncated array above
        raise ImportFormatError(
            path,
            f"is not valid JSON: expected ',' or ']' after an array element, found {text[i]!r}",
            line_of(text, i),
        )


def read_csv(path: Path, text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """The records of CSV ``text`` as ``(start line, fields)``; blank lines are left out.

    Quoting is strict (``"a"b`` is an error), so a damaged file is reported rather than
    read wrongly. Raises :class:`ImportFormatError` with the line of a broken record.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    out: list[tuple[int, list[str]]] = []
    previous = 0
    try:
        for record in reader:
            start, previous = previous + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            out.append((start, record))
    except csv.Error as exc:
        raise ImportFormatError(path, f"is not valid CSV: {exc}", reader.line_num) from None
    return out


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped."""
    for raw in text.splitlines():
        if raw.strip():
            return raw.strip()
    return ""
