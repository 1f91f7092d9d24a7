"""Last.fm scrobbles as CSV with a header row.

Source: the lastfm.ghan.nl exporter's ``uts,utc_time,artist,artist_mbid,album,album_mbid,
track,track_mbid`` (every field quoted, ``uts`` = Unix seconds UTC, ``utc_time`` = ``11 Jul
2024, 09:07`` UTC, newest first). Other exports with a header naming ``artist``, ``track``
and a time column are read too: the time is taken from ``uts`` / ``timestamp`` /
``date_unix`` (Unix seconds), else from ``utc_time`` / ``date`` / ``time`` (``11 Jul 2024,
09:07``, ``2024-07-11 09:07:32`` or ISO 8601; a time without a zone is read as UTC).

**One scrobble = one play of a track with no playing time** (of unknown length: neither
a stream nor a skip): a lone ``play_start`` at the scrobble time, which Last.fm
documents as the time the track *started* playing. Last.fm only scrobbles after half the
track or 4 minutes, but records no duration, position or device. So a scrobble is a
*qualified listen* by that rule, applied by the scrobbler: the event's properties say
``scrobbled: true`` (:class:`~playpulse.processor.plays.PlaySummary` ``qualified_listen``).
Content: ``content_id`` ``lastfm:`` + a hash of (artist, track), ``content_type``
``track``, ``title`` = track, ``creator`` = artist; the album goes to the properties.

**User**: the caller's ``user_id``, else the export's ``username`` (or ``user``) column when
it has one, else ``lastfm-user``. **Identity**: the row's fields by
column name, plus the user, *without* an index column: a leading column named ``""``,
``unnamed: 0``, ``index`` or ``x`` whose every value is an integer (R's ``write.csv`` row
names, as in lastfmR exports; pandas ``to_csv``'s index; R's ``X`` after a round trip) is a
row number, not content. A newer export renumbers its rows, so a row number in the
identity would make every re-imported row new.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from playpulse.sources.importers.base import (
    InvalidRow,
    MapContext,
    RowIdentity,
    SourceRow,
    as_int,
    clean_content,
    digest,
    text,
    utc_from_unix,
    view_event,
)

NAME = "lastfm_scrobbles"
DEFAULT_USER = "lastfm-user"
DELIMITER = ","
_UNIX_COLUMNS = ("uts", "timestamp", "date_unix")
_TEXT_COLUMNS = ("utc_time", "date", "time", "datetime")
#: Names (lower case) of a leading index column: R ``write.csv`` (``""``), pandas
#: ``to_csv`` read back (``unnamed: 0``), ``index``, R ``read.csv`` of a written file (``x``).
INDEX_COLUMN_NAMES = frozenset({"", "unnamed: 0", "index", "x"})
_FORMATS = ("%d %b %Y, %H:%M", "%d %b %Y %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")


def header_of(fields: list[str]) -> list[str]:
    """Normalized column names (lower case, stripped)."""
    return [f.strip().lower() for f in fields]


def matches_header(fields: list[str]) -> bool:
    """Whether a CSV whose first record is ``fields`` is a Last.fm export with a header."""
    cols = set(header_of(fields))
    return (
        "artist" in cols
        and "track" in cols
        and any(c in cols for c in _UNIX_COLUMNS + _TEXT_COLUMNS)
    )


def index_column(columns: list[str], records: list[list[str]]) -> str | None:
    """The name of the file's index column, or ``None``: the first of ``columns`` when its
    name is in :data:`INDEX_COLUMN_NAMES` and every one of ``records`` (the data records'
    fields) holds an integer there. Such a column is left out of each row's identity."""
    if not columns or columns[0] not in INDEX_COLUMN_NAMES:
        return None
    for fields in records:
        if not fields or not fields[0].strip().lstrip("+-").isdigit():
            return None
    return columns[0]


def parse_time(value: str, loc: str) -> datetime:
    """A scrobble time given as text (see the module docstring), as UTC."""
    value = value.strip()
    for fmt in _FORMATS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRow(loc, f"{value!r} is not a time this importer knows") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def scrobble_time(row: dict[str, str]) -> datetime:
    """The scrobble's time from the first time column present and non-empty."""
    for col in _UNIX_COLUMNS:
        value = row.get(col, "").strip()
        if value:
            return utc_from_unix(as_int(value, col), col)
    for col in _TEXT_COLUMNS:
        value = row.get(col, "").strip()
        if value:
            return parse_time(value, col)
    raise InvalidRow("uts", "the scrobble has no time")


def map_row(row: SourceRow, ctx: MapContext) -> list[dict[str, Any]]:
    """The play event of one scrobble (see the module docstring).

    ``ctx.hints["columns"]`` holds the header's column names and
    ``ctx.hints["index_column"]`` the index column's name (see :func:`index_column`) or
    ``None``.
    """
    columns: list[str] = ctx.hints["columns"]
    fields: list[str] = row.data
    if len(fields) != len(columns):
        raise InvalidRow("row", f"expected {len(columns)} fields, found {len(fields)}")
    values = dict(zip(columns, fields, strict=True))
    index = ctx.hints.get("index_column")
    if index is not None:
        del values[index]
    at = scrobble_time(values)
    artist = text(values.get("artist"), "artist")
    track = text(values.get("track"), "track")
    if artist is None and track is None:
        raise InvalidRow("track", "a scrobble needs an artist or a track")
    album = text(values.get("album"), "album")
    user = ctx.user_id or text(values.get("username") or values.get("user"), "username")
    user = user or DEFAULT_USER
    content = clean_content(
        {
            "content_id": f"lastfm:{digest(artist or '', track or '')}",
            "content_type": "track",
            "title": track,
            "creator": artist,
        }
    )
    return [
        view_event(
            RowIdentity.of(NAME, {**values, "user": user}),
            actor={"user_id": user},
            content=content,
            at=at,
            properties={"scrobbled": True, **({"album": album} if album else {})},
        )
    ]
