"""A full disk as one clear sentence (issue 10): every ``ENOSPC`` (or ``EDQUOT``, or
SQLite's "database or disk is full") becomes a :class:`~mlpkg.errors.StoreError` naming
the directory that could not be written and what frees space there."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from mlpkg.errors import StoreError

_FULL = (errno.ENOSPC, errno.EDQUOT)

HINT = (
    "Free space on that file system: `mlpkg gc` deletes unused store paths, interrupted "
    "downloads and build leftovers (`mlpkg gc --downloads` also empties the download cache)."
)


def is_full(exc: BaseException) -> bool:
    """True when ``exc`` says that a file system (or a quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return False


def disk_full(directory: Path | str, doing: str) -> StoreError:
    """The error for a full file system under ``directory`` while ``doing`` something
    (a gerund phrase, e.g. "writing temporary roots")."""
    return StoreError(
        f"The file system holding {directory} is full: no space left for {doing}.",
        hint=HINT,
        file=str(directory),
    )
