"""The content catalog: what playpulse knows about each content id, in one SQLite file
(``DATA_DIR/enrich/catalog.db``, :func:`catalog_path`), written only by enrichment jobs
and ``playpulse catalog import`` (never by the ingest path).

Tables (all keyed by ``content_id``):

- ``seen``: the latest ``title``, ``creator``, ``album`` (``properties.album`` of the
  events), ``duration_s`` and ``content_type`` seen in events (the newest non-null value
  of each, by event time), ``chapters`` (distinct chapters seen), ``plays`` (play starts)
  and ``last_event_at``; rebuilt from the lake by :func:`refresh_seen`.
- ``meta``: what an import adds (:func:`import_metadata`): ``genres`` (JSON list of
  strings), ``release_date`` (ISO date), ``isrc``, ``musicbrainz_recording_id``,
  ``musicbrainz_release_id``; a later import of an id replaces the fields it gives.
- ``similar``: "listeners also played" (:mod:`playpulse.enrich.similarity`):
  ``other_id``, ``score`` (cosine, 0-1), ``shared_sessions``, ``shared_listeners`` and
  ``rank`` (1 = most similar).
- ``tags``: ``kind`` (``genre`` or ``mood``), ``label``, ``confidence`` (0-1),
  ``provider``, ``model``, ``prompt_version``, ``text_hash`` (of the text tagged: a
  renamed title is tagged again) (:mod:`playpulse.enrich.tags`).
- ``tag_cache``: one provider answer per content, provider, model and prompt version
  and text (a renamed title is tagged again), so a result is paid for once.
- ``jobs``: each job's last run (``ran_at``, ``rows``, ``error``).

Times are ISO 8601 UTC strings. Writers open the file in WAL mode with a busy timeout,
so the API and catalog queries read while a job writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from playpulse.config import Settings
from playpulse.errors import PlaypulseError


class EnrichError(PlaypulseError):
    """Enrichment failed: a bad metadata file, a provider that gave no valid answer, an
    unreadable catalog (the message says what, where and why)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    content_id TEXT PRIMARY KEY, content_type TEXT, title TEXT, creator TEXT, album TEXT,
    duration_s REAL, chapters INTEGER NOT NULL DEFAULT 0, plays INTEGER NOT NULL DEFAULT 0,
    last_event_at TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    content_id TEXT PRIMARY KEY, genres TEXT, release_date TEXT, isrc TEXT,
    musicbrainz_recording_id TEXT, musicbrainz_release_id TEXT, imported_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS similar (
    content_id TEXT NOT NULL, other_id TEXT NOT NULL, score REAL NOT NULL,
    shared_sessions INTEGER NOT NULL, shared_listeners INTEGER NOT NULL,
    rank INTEGER NOT NULL, PRIMARY KEY (content_id, other_id)
);
CREATE TABLE IF NOT EXISTS tags (
    content_id TEXT NOT NULL, kind TEXT NOT NULL, label TEXT NOT NULL,
    confidence REAL NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    prompt_version TEXT NOT NULL, tagged_at TEXT NOT NULL, text_hash TEXT NOT NULL,
    PRIMARY KEY (content_id, kind, provider)
);
CREATE TABLE IF NOT EXISTS tag_cache (
    content_id TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    prompt_version TEXT NOT NULL, text_hash TEXT NOT NULL, result TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (content_id, provider, model, prompt_version, text_hash)
);
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY, ran_at TEXT NOT NULL, rows INTEGER NOT NULL, error TEXT
);
"""

#: The metadata fields an import may give (besides ``content_id``).
META_FIELDS = (
    "genres",
    "release_date",
    "isrc",
    "musicbrainz_recording_id",
    "musicbrainz_release_id",
)
_ISRC = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}\d{7}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def catalog_path(settings: Settings) -> Path:
    """Where the catalog of ``settings``' data dir lives (``DATA_DIR/enrich/catalog.db``)."""
    return Path(settings.data_dir) / "enrich" / "catalog.db"


def now_iso() -> str:
    """The current UTC time as ISO 8601 (seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def open_catalog(settings: Settings, *, readonly: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to the catalog (created with its tables unless ``readonly``),
    committed on success and closed at the end. ``readonly`` on a missing file raises
    :class:`EnrichError`. Rows are :class:`sqlite3.Row`."""
    path = catalog_path(settings)
    if readonly:
        if not path.is_file():
            raise EnrichError(f"no content catalog at {path}: run `playpulse enrich run` first")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=10.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
    db.row_factory = sqlite3.Row
    try:
        with db:
            yield db
    except sqlite3.DatabaseError as exc:
        raise EnrichError(f"content catalog {path}: {exc}") from exc
    finally:
        db.close()


def record_job(db: sqlite3.Connection, name: str, rows: int, error: str | None = None) -> None:
    """Note that job ``name`` ran now, touching ``rows`` rows (``error``: why it failed)."""
    db.execute(
        "INSERT OR REPLACE INTO jobs (name, ran_at, rows, error) VALUES (?, ?, ?, ?)",
        (name, now_iso(), rows, error),
    )


# -- what the events say -----------------------------------------------------------------

_SEEN_SQL = """
SELECT content_id,
       arg_max(content_type, occurred_at) FILTER (content_type IS NOT NULL) AS content_type,
       arg_max(title, occurred_at) FILTER (title IS NOT NULL) AS title,
       arg_max(creator, occurred_at) FILTER (creator IS NOT NULL) AS creator,
       arg_max(json_extract_string(properties, '$.album'), occurred_at)
           FILTER (json_extract_string(properties, '$.album') IS NOT NULL) AS album,
       arg_max(duration_s, occurred_at) FILTER (duration_s IS NOT NULL) AS duration_s,
       count(DISTINCT chapter) AS chapters,
       count(*) FILTER (event_type = 'play_start') AS plays,
       max(occurred_at) AS last_event_at
FROM events
WHERE content_id IS NOT NULL
GROUP BY content_id
"""


def refresh_seen(settings: Settings) -> int:
    """Rebuild the ``seen`` table from every event in the lake (title, creator, album,
    duration, chapters, plays per content id); returns the number of content ids. A
    scheduled job: it reads the lake's Parquet files, never the stream."""
    from playpulse.query.engine import events_connection

    con = events_connection(settings)
    try:
        rows = con.execute(_SEEN_SQL).fetchall()
    finally:
        con.close()
    with open_catalog(settings) as db:
        db.execute("DELETE FROM seen")
        db.executemany(
            "INSERT INTO seen VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (*r[:8], r[8].astimezone(UTC).isoformat() if r[8] is not None else None)
                for r in rows
            ],
        )
        record_job(db, "seen", len(rows))
    return len(rows)


# -- imported metadata -------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_metadata` did: ``rows`` stored, ``file`` read."""

    file: Path
    rows: int


def _genres(value: Any, where: str) -> list[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        items = [g.strip() for g in re.split(r"[;|]", value)]
    elif isinstance(value, list) and all(isinstance(g, str) for g in value):
        items = [g.strip() for g in value]
    else:
        raise EnrichError(f"{where}: genres must be a list of strings or 'a;b' text")
    return [g for g in items if g] or None


def _clean_row(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One metadata row checked and normalised; raises :class:`EnrichError`."""
    unknown = set(raw) - {"content_id", *META_FIELDS}
    if unknown:
        raise EnrichError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: content_id, "
            + ", ".join(META_FIELDS)
        )
    content_id = raw.get("content_id")
    if not isinstance(content_id, str) or not content_id.strip():
        raise EnrichError(f"{where}: content_id is missing")
    row: dict[str, Any] = {"content_id": content_id.strip()}
    genres = _genres(raw.get("genres"), where)
    row["genres"] = json.dumps(genres) if genres else None
    release = raw.get("release_date") or None
    if release is not None:
        try:
            release = date.fromisoformat(str(release)).isoformat()
        except ValueError:
            raise EnrichError(f"{where}: release_date {release!r} is not YYYY-MM-DD") from None
    row["release_date"] = release
    isrc = raw.get("isrc") or None
    if isrc is not None:
        isrc = str(isrc).replace("-", "").upper()
        if not _ISRC.match(isrc):
            raise EnrichError(f"{where}: isrc {raw.get('isrc')!r} is not an ISRC (CC-XXX-YY-NNNNN)")
    row["isrc"] = isrc
    for key in ("musicbrainz_recording_id", "musicbrainz_release_id"):
        value = raw.get(key) or None
        if value is not None and not _UUID.match(str(value).lower()):
            raise EnrichError(f"{where}: {key} {value!r} is not a MusicBrainz id (a UUID)")
        row[key] = str(value).lower() if value is not None else None
    return row


def read_metadata(path: Path) -> list[dict[str, Any]]:
    """The rows of a metadata file: CSV with a header (``content_id`` and any of
    :data:`META_FIELDS`; ``genres`` as ``a;b``) or JSON (a list of objects, or
    ``{"items": [...]}``; ``genres`` a list). Every row is checked before anything is
    stored; raises :class:`EnrichError` naming the file and row of the first problem."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise EnrichError(f"cannot read metadata file {path}: {exc.strerror or exc}") from exc
    raws: Any
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EnrichError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
        raws = data.get("items") if isinstance(data, dict) else data
        if not isinstance(raws, list):
            raise EnrichError(f"{path}: expected a list of objects or {{'items': [...]}}")
        first = 1
    else:
        raws = list(csv.DictReader(io.StringIO(text)))
        first = 2
    rows = []
    for i, raw in enumerate(raws):
        where = f"{path} row {i + first}"
        if not isinstance(raw, dict):
            raise EnrichError(f"{where}: not an object")
        rows.append(_clean_row({k: v for k, v in raw.items() if k is not None}, where))
    return rows


def import_metadata(settings: Settings, path: Path) -> ImportSummary:
    """Store the metadata of file ``path`` (:func:`read_metadata`) in the catalog: all
    rows or none. A row replaces the fields it gives of an id imported before (fields it
    leaves empty keep their value)."""
    rows = read_metadata(path)
    stamp = now_iso()
    with open_catalog(settings) as db:
        for row in rows:
            db.execute(
                """INSERT INTO meta (content_id, genres, release_date, isrc,
                       musicbrainz_recording_id, musicbrainz_release_id, imported_at)
                   VALUES (:content_id, :genres, :release_date, :isrc,
                       :musicbrainz_recording_id, :musicbrainz_release_id, :stamp)
                   ON CONFLICT (content_id) DO UPDATE SET
                       genres = coalesce(excluded.genres, genres),
                       release_date = coalesce(excluded.release_date, release_date),
                       isrc = coalesce(excluded.isrc, isrc),
                       musicbrainz_recording_id =
                           coalesce(excluded.musicbrainz_recording_id, musicbrainz_recording_id),
                       musicbrainz_release_id =
                           coalesce(excluded.musicbrainz_release_id, musicbrainz_release_id),
                       imported_at = excluded.imported_at""",
                {**row, "stamp": stamp},
            )
        record_job(db, "import", len(rows))
    return ImportSummary(path, len(rows))


# -- reading -----------------------------------------------------------------------------


def content_entry(
    settings: Settings, content_id: str, *, similar: int = 10
) -> dict[str, Any] | None:
    """Everything the catalog holds about ``content_id`` as JSON-ready values:
    ``content_id``, the ``seen`` fields, ``genres`` (list) and the other ``meta``
    fields, ``tags`` (``{kind: [{label, confidence, provider, model}]}``) and
    ``similar_content`` (up to ``similar`` of ``{content_id, title, creator, score,
    shared_sessions, shared_listeners}``, best first). ``None`` when the catalog does
    not know the id (or does not exist yet)."""
    if not catalog_path(settings).is_file():
        return None
    with open_catalog(settings, readonly=True) as db:
        seen = db.execute("SELECT * FROM seen WHERE content_id = ?", (content_id,)).fetchone()
        meta = db.execute("SELECT * FROM meta WHERE content_id = ?", (content_id,)).fetchone()
        if seen is None and meta is None:
            return None
        entry: dict[str, Any] = {"content_id": content_id}
        for field in ("content_type", "title", "creator", "album", "duration_s"):
            entry[field] = seen[field] if seen else None
        entry["chapters"] = seen["chapters"] if seen else 0
        entry["plays"] = seen["plays"] if seen else 0
        entry["genres"] = json.loads(meta["genres"]) if meta and meta["genres"] else []
        for field in META_FIELDS[1:]:
            entry[field] = meta[field] if meta else None
        tags: dict[str, list[dict[str, Any]]] = {}
        for t in db.execute(
            "SELECT * FROM tags WHERE content_id = ? ORDER BY kind, confidence DESC",
            (content_id,),
        ):
            tags.setdefault(t["kind"], []).append(
                {
                    "label": t["label"],
                    "confidence": round(t["confidence"], 4),
                    "provider": t["provider"],
                    "model": t["model"],
                }
            )
        entry["tags"] = tags
        entry["similar_content"] = [
            {
                "content_id": s["other_id"],
                "title": s["title"],
                "creator": s["creator"],
                "score": round(s["score"], 4),
                "shared_sessions": s["shared_sessions"],
                "shared_listeners": s["shared_listeners"],
            }
            for s in db.execute(
                """SELECT s.*, n.title, n.creator FROM similar s
                   LEFT JOIN seen n ON n.content_id = s.other_id
                   WHERE s.content_id = ? ORDER BY s.rank LIMIT ?""",
                (content_id, similar),
            )
        ]
    return entry
