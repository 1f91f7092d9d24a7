"""Importers: turn real exports into playpulse events, idempotently.

Call :func:`import_paths` (what ``playpulse import`` runs); :func:`plan_import` is the
same without writing anything (a dry run). Formats, detected from the
content of each file (:mod:`.detect`), one module each:

- ``spotify_extended``: Spotify extended streaming history, all three key generations
  (:mod:`.spotify_extended`);
- ``spotify_basic``: Spotify basic (Account Data) streaming history (:mod:`.spotify_basic`);
- ``youtube_watch_history``: Google Takeout ``watch-history.json`` (:mod:`.youtube`);
- ``lastfm_scrobbles``: Last.fm scrobbles CSV (:mod:`.lastfm`);
- ``taobao_user_behavior``: Taobao UserBehavior CSV (:mod:`.taobao`);
- ``diginetica_item_views``: DIGINETICA item views CSV (:mod:`.diginetica`).

Event ids are hashes of each row's content (:mod:`.base`), so importing a file twice
changes nothing and identical rows count once. Exports that name nobody land on a
per-format default user that holds one export only (:mod:`.exports`).
"""

from playpulse.sources.importers.base import ImportFormatError, UnknownFormatError
from playpulse.sources.importers.detect import FORMATS, LoadedFile, detect_format, load_file
from playpulse.sources.importers.exports import OtherExportError
from playpulse.sources.importers.runner import (
    FileResult,
    ImportPlan,
    ImportResult,
    PlannedEvent,
    RejectedRow,
    collect_files,
    import_paths,
    plan_import,
)

__all__ = [
    "FORMATS",
    "FileResult",
    "ImportFormatError",
    "ImportPlan",
    "ImportResult",
    "LoadedFile",
    "OtherExportError",
    "PlannedEvent",
    "RejectedRow",
    "UnknownFormatError",
    "collect_files",
    "detect_format",
    "import_paths",
    "load_file",
    "plan_import",
]
