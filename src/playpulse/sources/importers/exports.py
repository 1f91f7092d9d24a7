"""Keep people apart: which export a data dir's *default user* came from.

Exports that name nobody (Spotify basic and 2024+ extended histories, YouTube watch
history, Last.fm CSVs without a user column) are imported, without ``--user``, under a
per-format default user (``spotify-user``, ``youtube-user``, ``lastfm-user``). Two
people's such exports would silently become one listener. So every import that lands
rows on a default user records a *fingerprint* of its export in ``imports.db`` in the
data dir, and a later import onto the same default user must be recognizably the same
export, else it stops with :class:`OtherExportError` asking for ``--user``.

**Fingerprint** (:class:`ExportFingerprint`):

- the export's *root folders*: for files found by walking a named directory, that
  directory; for a named file, its folder. Either is first lifted out of the folders an
  export is known to nest its files in (Spotify's ``Spotify Account Data`` and ``Spotify
  Extended Streaming History``, Takeout's ``YouTube and YouTube Music``, ``YouTube``,
  ``history``; see :data:`EXPORT_SUBFOLDERS`), so the files of one Spotify download share
  a root whichever of them is imported first;
- the *row keys*: 60 bits of each row's content id (the first event's id, which hashes
  the row's content and user, never its position; see :mod:`.base`).

**Same export** when one of the new roots equals, contains or lies inside a recorded root
of that default user (a newer file of the same folder, the whole folder after one of its
files), or when one row key is already recorded (the same rows exported again, elsewhere:
an updated export in a new download folder). Two people's exports share neither.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from playpulse.errors import PlaypulseError

#: File name of the registry inside the data dir.
REGISTRY_FILE = "imports.db"
#: Folder names (lower case) an export nests its files in: a root is lifted above them.
EXPORT_SUBFOLDERS = frozenset(
    {
        "spotify account data",
        "spotify extended streaming history",
        "youtube and youtube music",
        "youtube",
        "history",
    }
)
#: Roots named in an error message, at most.
_SHOWN = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS export_roots (
    user_id TEXT NOT NULL,
    root TEXT NOT NULL,
    PRIMARY KEY (user_id, root)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS export_rows (
    user_id TEXT NOT NULL,
    row_key INTEGER NOT NULL,
    PRIMARY KEY (user_id, row_key)
) WITHOUT ROWID;
"""


class OtherExportError(PlaypulseError):
    """An export that names nobody would join a default user that already holds another
    export's rows (see the module docstring); the message names both and asks for
    ``--user``. ``user_id`` is the default user, ``roots`` the new export's root folders,
    ``recorded`` the existing export's."""

    def __init__(self, user_id: str, roots: list[str], recorded: list[str]) -> None:
        shown = ", ".join(recorded[:_SHOWN]) + (" ..." if len(recorded) > _SHOWN else "")
        new = ", ".join(roots[:_SHOWN]) + (" ..." if len(roots) > _SHOWN else "")
        super().__init__(
            f"this data dir already holds the default user '{user_id}' from another export "
            f"({shown}); {new} shares no folder and no row with it, so it may be another "
            f"person's history and is not imported. Run the import again with --user NAME "
            f"(a name for this person; --user {user_id} if it is the same person)"
        )
        self.user_id = user_id
        self.roots = roots
        self.recorded = recorded


def export_root(folder: Path) -> Path:
    """``folder`` (absolute) lifted above :data:`EXPORT_SUBFOLDERS`: the folder an export
    was unpacked into. ``/dl/my_spotify_data/Spotify Account Data`` ->
    ``/dl/my_spotify_data``."""
    while folder.name.lower() in EXPORT_SUBFOLDERS and folder.parent != folder:
        folder = folder.parent
    return folder


def row_key(event_id: str) -> int:
    """60 bits of an importer event id (``<format>-<hex digest>``) as an int."""
    return int(event_id.rsplit("-", 1)[-1][:15], 16)


@dataclass
class ExportFingerprint:
    """What identifies one import's rows of one default user: root folders (absolute
    paths as text) and row keys (:func:`row_key`)."""

    roots: set[str] = field(default_factory=set)
    row_keys: set[int] = field(default_factory=set)


def _related(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    return pa == pb or pa.is_relative_to(pb) or pb.is_relative_to(pa)


class ExportRegistry:
    """The fingerprints recorded in ``data_dir / imports.db`` (created on first use).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(data_dir / REGISTRY_FILE, isolation_level=None)
        self._db.executescript(_SCHEMA)

    def __enter__(self) -> ExportRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def check(self, user_id: str, fingerprint: ExportFingerprint) -> None:
        """Raise :class:`OtherExportError` when ``user_id`` holds rows of another export
        than ``fingerprint``'s (nothing recorded for it: no error)."""
        recorded = [
            r
            for (r,) in self._db.execute(
                "SELECT root FROM export_roots WHERE user_id = ? ORDER BY root", (user_id,)
            )
        ]
        if not recorded:
            return
        if any(_related(new, old) for new in fingerprint.roots for old in recorded):
            return
        if self._shares_a_row(user_id, fingerprint.row_keys):
            return
        raise OtherExportError(user_id, sorted(fingerprint.roots), recorded)

    def _shares_a_row(self, user_id: str, keys: Iterable[int]) -> bool:
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS probe (row_key INTEGER PRIMARY KEY)")
        self._db.execute("DELETE FROM probe")
        self._db.executemany("INSERT OR IGNORE INTO probe VALUES (?)", ((k,) for k in keys))
        found = self._db.execute(
            "SELECT 1 FROM probe JOIN export_rows ON export_rows.row_key = probe.row_key "
            "AND export_rows.user_id = ? LIMIT 1",
            (user_id,),
        ).fetchone()
        return found is not None

    def record(self, user_id: str, fingerprint: ExportFingerprint) -> None:
        """Add ``fingerprint`` to what ``user_id`` holds."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO export_roots VALUES (?, ?)",
                ((user_id, r) for r in fingerprint.roots),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO export_rows VALUES (?, ?)",
                ((user_id, k) for k in fingerprint.row_keys),
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
