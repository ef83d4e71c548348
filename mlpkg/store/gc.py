"""Garbage collection: delete what no root reaches (invariant 6).

Roots are the explicit roots under ``gcroots/`` and the temporary roots of every running
mlpkg process. The collector holds ``gc.lock`` exclusively while it reads the roots and
deletes, so no process can add a root unseen; a path being made is protected by its path
lock, which the collector probes before deleting anything of that hash.

Deletion order keeps the database consistent: a path is forgotten (its row deleted)
before its directory is removed, and referrers go before what they reference.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field

from mlpkg.errors import BadInput
from mlpkg.store.fs import remove_tree
from mlpkg.store.locks import PathLock, is_locked, live_temp_roots
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

_SCRATCH = re.compile(r"^\.(tmp|trash)-([0-9a-z]{32})-")


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
    """Delete every store entry no root reaches; with ``dry_run`` only report them."""
    result = GcResult()
    with store.gc_lock():
        live = live_paths(store)
        graph = store.db.reference_graph()
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
                    store.db.invalidate(path)
                    remove_tree(store.real_path(path))
            finally:
                lock.release()
        _collect_debris(store, set(map(str, graph)), result, dry_run)
    return result


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


def _collect_debris(store: Store, valid: set[str], result: GcResult, dry_run: bool) -> None:
    """Entries of ``store/`` that are not valid paths: crashed or abandoned work."""
    for entry in sorted(os.listdir(store.dir)):
        if entry in valid:
            continue
        m = _SCRATCH.match(entry)
        hash_part = m.group(2) if m else entry[:32]
        if is_locked(store.locks_dir / f"{hash_part}.lock"):
            result.skipped.append(entry)
            continue
        full = str(store.dir / entry)
        result.freed += _disk_usage(full)
        result.deleted.append(entry)
        if not dry_run:
            remove_tree(store.dir / entry)
    for entry in sorted(os.listdir(store.builds_dir)):
        if not is_locked(store.locks_dir / f"{entry[:32]}.lock") and not dry_run:
            remove_tree(store.builds_dir / entry)
