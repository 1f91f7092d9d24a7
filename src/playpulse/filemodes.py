"""Private file modes for the data dir: directories 0700, files 0600 (#14 item 3).

The data dir holds listeners' events, raw rejected payloads and key digests: nobody but
its owner should read it. Rather than a mode at each of the many places that create a
file (SQLite databases and their ``-wal``/``-shm`` files, lake Parquet, status files,
quarantine, locks, receipts), the process creates them all private:
:func:`private_umask` sets the process umask to ``0o077`` (new directories 0700, new
files 0600, whatever mode their creator asks for; child processes, such as collector
workers and processors, inherit it). The ``playpulse`` command does this first, for
every command, so files it writes outside the data dir (exports, packages) are private
too: ``chmod`` them to share.

An existing data dir whose mode lets others in (one made by an older playpulse, 0755)
is tightened to 0700 by :func:`secure_data_dir`, quietly (logged at INFO: a warning on
every command's stderr would break scripts that read it, and the directory is the
user's own): files already in it keep their modes but others can no longer reach them
through the directory. A data dir of another user is left alone, with a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "private_umask", "secure_data_dir"]

log = logging.getLogger(__name__)

#: The umask under which playpulse creates files: no access for group and others.
PRIVATE_UMASK = 0o077


def private_umask() -> int:
    """Set the process umask to :data:`PRIVATE_UMASK` (process-wide, inherited by child
    processes); returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def secure_data_dir(data_dir: Path) -> str | None:
    """Make the existing directory ``data_dir`` private (mode 0700) when group or others
    have any access to it (logged at INFO). Returns a one-line warning for the user when
    it could not be done (a directory of another user, or ``chmod`` failing), else
    ``None`` (tightened, private already, missing, not a directory). Never raises for a
    file system problem: the command goes on."""
    try:
        info = data_dir.stat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return None
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return (
            f"the data dir {data_dir} is open to other users (mode {mode:04o}) and belongs "
            "to another user: left as it is"
        )
    try:
        data_dir.chmod(0o700)
    except OSError as exc:
        return (
            f"the data dir {data_dir} is open to other users (mode {mode:04o}) and could "
            f"not be made private: {exc.strerror}"
        )
    log.info("the data dir %s was open to other users (mode %04o): now 0700", data_dir, mode)
    return None
