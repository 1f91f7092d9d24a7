"""Helpers for the SQLite files of the stream, the quarantine and the real-time store:
:class:`OpenedFile` (does the path still name the file opened?) and
:func:`immediate_transaction`.

SQLite keeps reading and writing a file that was deleted, moved away (with its data dir)
or replaced while open; what it writes then is acknowledged and lost. The stream and the
quarantine therefore remember the file they opened (device, inode) and check, before a
write, that their path still names it (one ``os.stat``, about a microsecond).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from playpulse.errors import PlaypulseError


class OpenedFile:
    """The file ``path`` names now, remembered by (device, inode).

    Raises ``OSError`` when ``path`` cannot be stat'ed (the caller turns it into its own
    error). :meth:`check` raises ``error``, with ``kind`` naming the file in its message
    (``"stream"``) and ``refusing`` saying what it refuses to do (``"append records"``).
    """

    __slots__ = ("_identity", "_path_str", "error", "kind", "path", "refusing")

    def __init__(
        self, path: Path, *, error: type[PlaypulseError], kind: str, refusing: str
    ) -> None:
        self.path = path
        self.error = error
        self.kind = kind
        self.refusing = refusing
        self._path_str = os.fspath(path)  # os.stat of a str skips Path's fspath
        stat = os.stat(self._path_str)
        self._identity = (stat.st_dev, stat.st_ino)

    def check(self) -> None:
        """Raise ``self.error`` unless ``path`` still names the file opened: when it is gone
        (the ``OSError`` as its cause) or names another file."""
        try:
            stat = os.stat(self._path_str)
        except OSError as exc:
            raise self.error(
                f"the {self.kind} file {self.path} is gone ({exc.strerror}): the data dir was "
                f"deleted or moved while running; refusing to {self.refusing} that would be "
                "lost (restart playpulse)"
            ) from exc
        if (stat.st_dev, stat.st_ino) != self._identity:
            raise self.error(
                f"the {self.kind} file {self.path} was replaced by another file while open; "
                f"refusing to {self.refusing} that would be lost (restart playpulse)"
            )


@contextlib.contextmanager
def immediate_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` before the block and ``COMMIT`` after it, on a connection in
    autocommit mode (``isolation_level=None``). When the block or the ``COMMIT`` raises,
    anything (binding can raise ``OverflowError`` or ``UnicodeEncodeError`` too), the
    transaction is rolled back if it is still open and the exception goes on unchanged."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # a failed COMMIT may have ended it
            db.execute("ROLLBACK")
        raise
