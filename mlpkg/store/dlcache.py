"""A content-addressed cache of downloads, so a cold store need not use the network.

``<root>/sha256/<hex>`` holds a file whose sha256 is ``<hex>``. Fetches look here first
(the file is hashed again before use, so a damaged entry is dropped, never trusted) and
add what they downloaded. The cache lives beside the store (``$MLPKG_CACHE_DIR``, default
``$MLPKG_HOME/cache/downloads``) and survives garbage collection of store paths;
``mlpkg gc --downloads`` empties it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from mlpkg.store.fs import copy_atomic, copy_file, fsync_dir
from mlpkg.store.locks import locked_temp


def _sha256(file: Path) -> str:
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class DownloadCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _entry(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256.lower()

    def get(self, sha256: str, dest: Path) -> bool:
        """Copy the cached file with this sha256 to ``dest``; False if there is none.

        The copy is made beside ``dest`` under a name that
        :func:`~mlpkg.store.locks.locked_temp` makes and locks, so ``mlpkg gc`` removes
        it if this process dies mid-copy, and never while it copies. It replaces ``dest``
        atomically and durably, as :func:`~mlpkg.store.fs.copy_atomic` would (that cannot
        write to a locked name made beforehand): the copy is fsynced before its rename,
        the directory after it."""
        entry = self._entry(sha256)
        if not entry.is_file():
            return False
        # Locked while we copy: the collector deletes such a copy only once its writer died.
        tmp, lock = locked_temp(dest.parent, dest.name)
        try:
            with open(tmp, "wb") as out:
                copy_file(entry, out, sync=True)
            if _sha256(tmp) != sha256.lower():
                entry.unlink(missing_ok=True)  # damaged: forget it, download again
                return False
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            lock.release()

    def read(self, sha256: str) -> bytes | None:
        """The content of the cached file with this sha256, read once and verified while
        in memory (a damaged entry is removed, as :meth:`get` removes it); None if there
        is none. For files small enough to hold in memory (wheels)."""
        entry = self._entry(sha256)
        try:
            with open(entry, "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):
            return None
        if hashlib.sha256(data).hexdigest() != sha256.lower():
            entry.unlink(missing_ok=True)  # damaged: forget it, download again
            return None
        return data

    def put(self, file: Path, sha256: str) -> None:
        """Remember ``file`` (whose sha256 the caller verified). Errors are ignored: the
        cache is an optimisation."""
        entry = self._entry(sha256)
        if entry.exists():
            return
        with contextlib.suppress(OSError):
            entry.parent.mkdir(parents=True, exist_ok=True)
            copy_atomic(file, entry)  # durable, and leaves no temporary behind

    def clear(self) -> int:
        """Remove every entry; return the bytes freed."""
        freed = 0
        for entry in (self.root / "sha256").glob("*") if self.root.is_dir() else []:
            with contextlib.suppress(OSError):
                freed += entry.stat().st_size
                entry.unlink()
        return freed
