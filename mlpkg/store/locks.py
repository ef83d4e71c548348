"""Inter-process locks and the roots a running process holds (invariant 6).

- :class:`PathLock`: an exclusive ``flock`` on ``<home>/locks/<hash>.lock``, held while a
  path is realised, repaired or deleted, so that two processes never both build it. The
  kernel drops it when the holder dies, even by ``kill -9``.
- :class:`TempRoots`: each process that uses store paths writes their names to
  ``<home>/temproots/<pid>``, which it keeps locked for its lifetime. The garbage collector
  treats the names in every file whose lock is held as roots; a file whose lock is free
  belongs to a dead process and is removed.
- ``gc.lock``: the collector holds it exclusively while it decides and deletes; adding a
  temporary root takes it shared for a moment, so no root can slip in unseen.

Lock files are never deleted (deleting a lock file races with a process about to lock it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from mlpkg.store.path import StorePath
from mlpkg.store.space import disk_full, is_full


class FileLock:
    """An ``flock`` on a file, exclusive or shared, blocking or not."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.fd: int | None = None

    def acquire(self, *, shared: bool = False, blocking: bool = True) -> bool:
        if self.fd is None:
            self.fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if not blocking:
            flags |= fcntl.LOCK_NB
        try:
            fcntl.flock(self.fd, flags)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PathLock(FileLock):
    """The lock that guards making, repairing or deleting one store path."""

    def __init__(self, locks_dir: Path, path: StorePath) -> None:
        super().__init__(locks_dir / f"{path.hash_part}.lock")


def is_locked(file: Path) -> bool:
    """True when some live process holds an exclusive or shared lock on ``file``."""
    probe = FileLock(file)
    try:
        return not probe.acquire(blocking=False)
    except FileNotFoundError:
        return False
    finally:
        probe.release()


def lock_existing(file: Path) -> FileLock | None:
    """An exclusive lock on ``file``, taken without waiting and without creating it.

    None when another process holds a lock on it (its owner is alive) or it is gone. The
    caller releases it. For files that are locked by whoever writes them (temporary copies,
    see :func:`locked_temp`): holding the lock, the collector may delete the file.
    """
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    lock = FileLock(file)
    lock.fd = fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.release()
        return None
    return lock


def locked_temp(directory: Path, name: str) -> tuple[Path, FileLock]:
    """Create ``directory/.<name>.<pid>-<random>.tmp`` and lock it for the caller.

    The lock says the file is in use: the collector deletes such files only when it can
    take the lock itself (their writer died). The caller releases the lock when the file
    was renamed or removed.
    """
    while True:
        file = directory / f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            continue
        lock = FileLock(file)
        lock.fd = fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        return file, lock


class TempRoots:
    """This process's temporary GC roots: ``<home>/temproots/<pid>``, locked while alive."""

    def __init__(self, temproots_dir: Path, gc_lock_file: Path) -> None:
        self.dir = temproots_dir
        self.gc_lock_file = gc_lock_file
        self.file = temproots_dir / str(os.getpid())
        self.lock: FileLock | None = None
        self.added: set[str] = set()

    def add(self, paths: Iterable[StorePath]) -> None:
        """Protect ``paths`` from the collector until this process exits.

        Raises StoreError, naming the directory, when the disk is full (nothing is
        protected then, so the caller must not go on to use the paths).
        """
        new = sorted({str(p) for p in paths} - self.added)
        if not new:
            return
        gc_lock = FileLock(self.gc_lock_file)
        try:
            gc_lock.acquire(shared=True)  # waits while a collection is deciding
            self._append(new)
        except OSError as e:
            if is_full(e):
                raise disk_full(self.dir, "writing temporary roots") from None
            raise
        finally:
            gc_lock.release()
        self.added.update(new)

    def _append(self, names: list[str]) -> None:
        """Write ``names`` to our file (call with the gc lock held shared)."""
        if self.lock is None:
            # Created and locked under the shared gc lock, so the collector never sees
            # the file unlocked while we are alive.
            self.lock = FileLock(self.file)
            self.lock.acquire()
            os.truncate(self.file, 0)  # a dead process with our pid may have left names
        size = os.path.getsize(self.file)
        try:
            with open(self.file, "a", encoding="utf-8") as f:
                f.write("".join(f"{n}\n" for n in names))
        except OSError:
            os.truncate(self.file, size)  # no half-written name
            raise

    def close(self) -> None:
        if self.lock is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.file)
            self.lock.release()
            self.lock = None
            self.added.clear()


def live_temp_roots(temproots_dir: Path) -> Iterator[str]:
    """Names held by live processes; files of dead processes are removed.

    Call with ``gc.lock`` held exclusively.
    """
    if not temproots_dir.is_dir():
        return
    for entry in sorted(temproots_dir.iterdir()):
        alive = entry.name == str(os.getpid()) or is_locked(entry)
        if not alive:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
            continue
        with contextlib.suppress(FileNotFoundError):
            text = entry.read_text(encoding="utf-8", errors="replace")
            yield from (line for line in text.splitlines() if line)
