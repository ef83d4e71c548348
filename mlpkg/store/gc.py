"""Garbage collection: delete what no root reaches (invariant 6).

Roots are the explicit roots under ``gcroots/`` and the temporary roots of every running
mlpkg process. The collector holds ``gc.lock`` exclusively while it reads the roots and
deletes, so no process can add a root unseen.

Work in progress is protected by locks, which the collector *takes* (never only probes)
before it deletes anything, and holds while it deletes:

- a path being made, repaired or checked holds its path lock (``locks/<hash>.lock``),
  exclusive or shared; every scratch entry whose name carries that hash (``store/.tmp-*``,
  ``builds/<hash>-*``, ``partial/<hash>*``, ``check/.<hash>-*``) is left alone meanwhile;
- a temporary copy (``.<name>.<pid>-<random>.tmp``, see
  :func:`mlpkg.store.locks.locked_temp`) is locked by its writer.

An entry of ``store/`` that the collector's snapshot of the database did not list is
deleted only if it is no root, and only after the database is read again under its path
lock: a path registered during the collection (rename and registration happen under
that lock) is kept.

Scratch is swept first and needs no database, so a collection frees space on a full
disk. Deletion order keeps the database consistent: a path is forgotten (its row
deleted) before its directory is removed, and referrers go before what they reference;
only when the database cannot be written for lack of space is the directory removed
first (then forgotten).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlpkg.errors import BadInput
from mlpkg.store.fs import remove_tree
from mlpkg.store.locks import FileLock, PathLock, live_temp_roots, lock_existing
from mlpkg.store.path import StorePath
from mlpkg.store.space import disk_full, is_full
from mlpkg.store.store import Store

_STALE_COPY_AGE = 24 * 3600.0  # seconds
_NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"
# The hash of the store path an entry belongs to: 32 characters of Nix base32, delimited.
_OWNER = re.compile(rf"(?:^|[.-])([{_NIX32}]{{32}})(?=$|[.-])")


@dataclass
class GcResult:
    deleted: list[str] = field(default_factory=list)  # store entries removed (or to remove)
    freed: int = 0  # bytes on disk
    kept: int = 0  # valid paths kept alive by roots
    skipped: list[str] = field(default_factory=list)  # dead but busy (locked by a process)

    def to_json(self) -> dict[str, object]:
        return {
            "deleted": self.deleted,
            "freed_bytes": self.freed,
            "kept": self.kept,
            "skipped": self.skipped,
        }


def _disk_usage(path: str) -> int:
    total = 0
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    total += st.st_blocks * 512
    if os.path.isdir(path) and not os.path.islink(path):
        for dirpath, dirnames, filenames in os.walk(path):
            for n in dirnames + filenames:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
    return total


def live_paths(store: Store) -> set[StorePath]:
    """The closure of every root. Call with ``gc.lock`` held."""
    roots = set(store.roots().values())
    for name in live_temp_roots(store.home / "temproots"):
        try:
            roots.add(StorePath.parse(name))
        except BadInput:
            continue
    return store.closure(roots)


def collect(store: Store, *, dry_run: bool = False) -> GcResult:
    """Delete every store entry no root reaches; with ``dry_run`` only report them.

    Never deletes a valid path that a root reaches, a path registered meanwhile, or an
    entry that a live process holds (see the module docstring). Raises StoreError naming
    the directory when the disk is too full even for the database, after freeing scratch.
    """
    result = GcResult()
    with store.gc_lock():
        sweep_scratch(store, result, dry_run)  # no database needed: works on a full disk
        live = live_paths(store)
        graph = store._db.reference_graph()
        dead = [p for p in graph if p not in live]
        result.kept = len(graph) - len(dead)
        busy: set[StorePath] = set()  # dead but in use (locked), with what they reference
        for path in _referrers_first(dead, graph):
            if path in busy:
                result.skipped.append(str(path))
                continue
            lock = PathLock(store.locks_dir, path)
            if not lock.acquire(blocking=False):
                result.skipped.append(str(path))
                busy |= store.closure([path])
                continue
            try:
                result.freed += _disk_usage(str(store.real_path(path)))
                result.deleted.append(str(path))
                if not dry_run:
                    _forget_and_remove(store, path)
            finally:
                lock.release()
        _collect_debris(store, set(map(str, graph)), set(map(str, live)), result, dry_run)
    return result


def _forget_and_remove(store: Store, path: StorePath) -> None:
    """Forget ``path``, then remove its directory; the other way round when the database
    cannot be written for lack of space (removing the directory frees some)."""
    try:
        store._db.invalidate(path)
    except sqlite3.Error as e:
        if not is_full(e):
            raise
        remove_tree(store.real_path(path))
        try:
            store._db.invalidate(path)
        except sqlite3.Error as again:
            if not is_full(again):
                raise
            raise disk_full(store._db.file.parent, "updating the store database") from None
    remove_tree(store.real_path(path))


def _referrers_first(
    dead: list[StorePath], graph: dict[StorePath, list[StorePath]]
) -> list[StorePath]:
    """Order dead paths so that every path comes before the paths it references."""
    dead_set = set(dead)
    order: list[StorePath] = []
    state: dict[StorePath, int] = {}
    for start in sorted(dead):
        stack = [(start, False)]
        while stack:
            node, done = stack.pop()
            if done:
                state[node] = 2
                order.append(node)
                continue
            if state.get(node):
                continue
            state[node] = 1
            stack.append((node, True))
            stack.extend(
                (r, False) for r in graph.get(node, ()) if r in dead_set and not state.get(r)
            )
    order.reverse()  # post-order lists references first; referrers must go first
    return order


@contextlib.contextmanager
def _claimed(store: Store, entry: Path) -> Iterator[bool]:
    """Whether no live process owns ``entry``; while True, the locks that say so are held
    (the path lock of the hash its name carries, and the entry's own lock if it is a
    file), so no process can take it up until the caller is done."""
    held: list[FileLock] = []
    try:
        m = _OWNER.search(entry.name)
        if m is not None:
            lock = FileLock(store.locks_dir / f"{m.group(1)}.lock")
            try:
                free = lock.acquire(blocking=False)
            except OSError:  # e.g. no room for a new lock file: leave the entry be
                free = False
            if not free:
                lock.release()
                yield False
                return
            held.append(lock)
        if os.path.isfile(entry) and not os.path.islink(entry):
            own = lock_existing(entry)
            if own is None:
                yield not os.path.lexists(entry)
                return
            held.append(own)
        yield True
    finally:
        for lock in held:
            lock.release()


def _sweep(store: Store, entry: Path, name: str, result: GcResult, dry_run: bool) -> None:
    """Delete ``entry`` (reported as ``name``) unless a live process owns it."""
    with _claimed(store, entry) as free:
        if not free:
            result.skipped.append(name)
            return
        result.freed += _disk_usage(str(entry))
        result.deleted.append(name)
        if not dry_run:
            remove_tree(entry)


def _entries(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def sweep_scratch(store: Store, result: GcResult, dry_run: bool = False) -> None:
    """Delete abandoned work, without the database: scratch entries of ``store/``
    (``.tmp-*``, ``.trash-*``, temporary copies), build directories, interrupted
    downloads (``partial/``), temporary rebuild checks and temporary copies of the
    download cache. Call with ``gc.lock`` held."""
    for name in _entries(store.dir):
        if name.startswith("."):
            _sweep(store, store.dir / name, name, result, dry_run)
    for directory in (store.builds_dir, store.partial_dir):
        for name in _entries(directory):
            _sweep(store, directory / name, str(directory / name), result, dry_run)
    check = store.checks_dir
    for name in _entries(check):
        if name.startswith("."):
            _sweep(store, check / name, str(check / name), result, dry_run)
    cache = store.downloads.root / "sha256"
    for name in _entries(cache):
        # Copies into the cache are not locked: only those a day old are surely abandoned.
        if name.startswith(".") and _age(cache / name) > _STALE_COPY_AGE:
            _sweep(store, cache / name, str(cache / name), result, dry_run)


def _age(entry: Path) -> float:
    try:
        return time.time() - os.lstat(entry).st_mtime
    except OSError:
        return 0.0


def _collect_debris(
    store: Store, valid: set[str], live: set[str], result: GcResult, dry_run: bool
) -> None:
    """Entries of ``store/`` that are neither valid (in the snapshot ``valid``) nor
    roots (``live``): crashed or abandoned work. Each is looked up in the database again
    under its path lock, so a path registered since the snapshot is kept."""
    for name in _entries(store.dir):
        if name in valid or name in live or name.startswith("."):
            continue
        entry = store.dir / name
        with _claimed(store, entry) as free:
            if not free:
                result.skipped.append(name)
                continue
            with contextlib.suppress(BadInput):
                if store._db.is_valid(StorePath.parse(name)):
                    continue  # registered after the snapshot: live work of another process
            result.freed += _disk_usage(str(entry))
            result.deleted.append(name)
            if not dry_run:
                remove_tree(entry)
