"""Files only the service's own user may read: embedded data (SQLite) and signing keys.

What we create is private from the start (directories 0700, files 0600), whatever the process
umask. SQLite creates a database's ``-wal`` and ``-shm`` files with the database file's own
mode, so creating that file ourselves (empty, mode 0600) before SQLite opens it covers them
too, with no change to the umask of the whole process. What already exists is left as the
operator made it, with a warning when others may read it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
_OTHERS = 0o077  # any permission for the group or for others
# Each path is reported once per process (keys are reread every few seconds, databases are
# opened by several engines).
_reported: set[Path] = set()


def private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) unless it exists; warn if an existing one is wider."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        warn_if_exposed([path])
    else:
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty (mode 0600) unless it exists; warn if an existing one is wider."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        warn_if_exposed([path])
    else:
        os.fchmod(fd, FILE_MODE)
        os.close(fd)
    return path


def warn_if_exposed(paths: Iterable[Path]) -> list[Path]:
    """Log a warning (once per process) for each existing path the group or others may
    access; return those paths."""
    exposed = []
    for path in paths:
        path = path.absolute()
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & _OTHERS:
            exposed.append(path)
            if path in _reported:
                continue
            _reported.add(path)
            wanted = DIR_MODE if path.is_dir() else FILE_MODE
            log.warning("%s is accessible to other users (mode %04o); it should be %04o: "
                        "chmod %o %s", path, mode, wanted, wanted, path)
    return exposed
