"""The Store: a root directory, its database, its locks, and atomic realisation.

Layout of ``MLPKG_HOME``::

    store/<hash>-<name>      valid paths (read-only); .tmp-* are paths being made
    db.sqlite                the database (mlpkg.store.db)
    locks/<hash>.lock        one lock per path (mlpkg.store.locks)
    temproots/<pid>          roots of running processes
    gcroots/                 explicit roots: symlinks to store paths (read by name)
    logs/<hash>-<name>.log   build logs
    builds/<hash>-<random>   private build directories
    check/                   rebuild checks: .<hash>-<random> rounds, <hash>-<name> kept results
    partial/                 interrupted downloads, kept for resumption
    cache/downloads/         downloads by sha256 (mlpkg.store.dlcache; $MLPKG_CACHE_DIR)

A ``Store`` is passed around explicitly (no global); close it when done.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from mlpkg.errors import BadInput, BuildError, CheckError, StoreError
from mlpkg.store import archive
from mlpkg.store.db import Database, PathInfo

__all__ = ["Maker", "Making", "PathInfo", "Store"]  # PathInfo: what Store.info returns
from mlpkg.store.dlcache import DownloadCache
from mlpkg.store.fs import canonicalise, fsync_dir, remove_tree, symlink_atomic, sync_tree
from mlpkg.store.locks import FileLock, PathLock, TempRoots
from mlpkg.store.path import StorePath
from mlpkg.store.space import disk_full, is_full

Maker = Callable[[Path], "dict[str, object] | None"]
"""Makes a path's content at the given location (which does not exist yet). It may return
facts learnt while making it (e.g. the sha256 of a download), kept with the derivation."""


class Store:
    """A store rooted at ``home``; see the module docstring for the layout."""

    def __init__(self, home: Path, download_cache: Path | None = None) -> None:
        self.home = Path(home).absolute()
        self.downloads = DownloadCache(download_cache or self.home / "cache" / "downloads")
        self.dir = self.home / "store"
        try:
            for sub in ("store", "locks", "temproots", "gcroots", "logs", "builds", "partial"):
                (self.home / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(
                f"MLPKG_HOME {self.home} cannot hold a store: {e.strerror} ({e.filename}).",
                hint="Point MLPKG_HOME at a writable directory.",
            ) from None
        self.locks_dir = self.home / "locks"
        self.gcroots_dir = self.home / "gcroots"
        self.logs_dir = self.home / "logs"
        self.builds_dir = self.home / "builds"
        self.checks_dir = self.home / "check"
        self.partial_dir = self.home / "partial"
        self.gc_lock_file = self.home / "gc.lock"
        self.temp_roots = TempRoots(self.home / "temproots", self.gc_lock_file)

    @functools.cached_property
    def _db(self) -> Database:
        """The database, opened on first use: a collection frees scratch space before it
        needs the database, so it can run on a disk too full to open it. Private to
        ``mlpkg.store`` (the collector and verify use it); others use the methods below."""
        return Database(self.home / "db.sqlite")

    def close(self) -> None:
        self.temp_roots.close()
        if "_db" in self.__dict__:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- naming ---------------------------------------------------------------------------

    def real_path(self, path: StorePath) -> Path:
        return self.dir / str(path)

    def parse_path(self, text: str) -> StorePath:
        """A store path from a base name, a path inside the store, or a link to one."""
        p = Path(text)
        if p.is_symlink() or (p.is_absolute() and not str(p).startswith(str(self.dir))):
            p = Path(os.path.realpath(p))
        if p.is_absolute() or os.sep in text:
            try:
                rel = p.absolute().relative_to(self.dir)
            except ValueError:
                raise BadInput(f"'{text}' is not in the store {self.dir}.") from None
            if not rel.parts:
                raise BadInput(f"'{text}' is the store itself, not a path in it.")
            return StorePath.parse(rel.parts[0])
        return StorePath.parse(text)

    def log_file(self, path: StorePath) -> Path:
        return self.logs_dir / f"{path}.log"

    def build_dir(self, path: StorePath) -> Path:
        """A fresh private build directory for ``path`` (``builds/<hash>-<random>``, not
        yet created; the caller removes it when done). The collector leaves it alone
        while ``path``'s lock is held (exclusive while realising, shared while checking),
        and removes it, as abandoned, once no process holds that lock."""
        return self.builds_dir / f"{path.hash_part}-{secrets.token_hex(4)}"

    def partial_file(self, path: StorePath, suffix: str = "") -> Path:
        """Where a download for ``path`` lies while it is made: ``partial/<hash><suffix>``
        (``suffix`` ``.part``, say, or ``/`` and a file name; not yet created). The same
        name in every process, so an interrupted download resumes from it; the collector
        leaves it alone while ``path``'s lock is held."""
        return self.partial_dir / f"{path.hash_part}{suffix}"

    def check_round(self, path: StorePath) -> Path:
        """A fresh location for one round of a rebuild check of ``path``
        (``check/.<hash>-<random>``, not yet created; ``check/`` is). The collector treats
        it as :meth:`build_dir`. A result that differs is kept by :meth:`keep_check`."""
        self.checks_dir.mkdir(exist_ok=True)
        return self.checks_dir / f".{path.hash_part}-{secrets.token_hex(4)}"

    def keep_check(self, tmp: Path, path: StorePath) -> Path:
        """Keep ``tmp``, a check round of ``path`` whose bytes differ, at
        ``check/<path>`` (replacing an older one) for the user to compare; the collector
        leaves it. Returns where it is."""
        kept = self.checks_dir / str(path)
        remove_tree(kept)
        tmp.rename(kept)
        return kept

    def staging_file(self, purpose: str) -> tuple[Path, FileLock]:
        """A new private file under ``partial/``, locked for the caller (the collector
        removes it only once this process is gone): for content copied in before it is
        hashed. The caller removes it and releases the lock."""
        from mlpkg.store.locks import locked_temp

        return locked_temp(self.partial_dir, purpose)

    # -- queries --------------------------------------------------------------------------

    def is_valid(self, path: StorePath) -> bool:
        return self._db.is_valid(path)

    def valid_among(self, paths: Iterable[StorePath]) -> set[StorePath]:
        """The subset of ``paths`` that is valid (a few queries, however many paths)."""
        return self._db.valid_among(paths)

    def info(self, path: StorePath) -> PathInfo | None:
        return self._db.info(path)

    def reference_graph(self) -> dict[StorePath, list[StorePath]]:
        """Every valid path with the paths it references (one query)."""
        return self._db.reference_graph()

    def reference_chain(self, start: StorePath, end: StorePath) -> list[StorePath]:
        """A shortest chain of references from ``start`` to ``end`` (both included), or
        an empty list when ``start`` does not depend on ``end``."""
        graph = self._db.reference_graph()
        parent: dict[StorePath, StorePath | None] = {start: None}
        queue = collections.deque([start])
        while queue and end not in parent:
            p = queue.popleft()
            for r in graph.get(p, []):
                if r not in parent:
                    parent[r] = p
                    queue.append(r)
        chain: list[StorePath] = []
        node: StorePath | None = end if end in parent else None
        while node is not None:
            chain.append(node)
            node = parent[node]
        return chain[::-1]

    def closure(self, paths: Iterable[StorePath]) -> set[StorePath]:
        """``paths`` and everything they reference, transitively."""
        graph = self._db.reference_graph()
        seen: set[StorePath] = set()
        stack = list(paths)
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            stack.extend(graph.get(p, ()))
        return seen

    def closure_order(self, roots: Sequence[StorePath]) -> list[StorePath]:
        """The closure of ``roots``, every path after the paths it references (depth
        first, from each root in turn, references in name order). Raises StoreError
        naming the first path met that is not valid, or is registered but missing."""
        graph = self._db.reference_graph()
        order: list[StorePath] = []
        seen: set[StorePath] = set()
        for root in roots:
            stack: list[tuple[StorePath, bool]] = [(root, False)]
            while stack:
                node, done = stack.pop()
                if done:
                    order.append(node)
                elif node not in seen:
                    if node not in graph:
                        raise StoreError(f"{node} is not valid; realise it first.")
                    if not os.path.lexists(self.real_path(node)):
                        raise StoreError(
                            f"{self.real_path(node)} is registered but was deleted.",
                            hint="`mlpkg verify --repair` remakes it.",
                        )
                    seen.add(node)
                    stack.append((node, True))
                    stack.extend((r, False) for r in sorted(graph[node], reverse=True))
        return order

    def protect(self, paths: Iterable[StorePath]) -> None:
        """Keep ``paths`` from the garbage collector while this process runs."""
        self.temp_roots.add(paths)

    # -- roots ----------------------------------------------------------------------------

    def add_root(self, name: str, path: StorePath) -> Path:
        """Register ``gcroots/<name>`` → the path (replacing an older root of that name).

        ``name`` may have directories (``installed/hello``)."""
        parts = name.split("/")
        if any(not p or p.startswith(".") for p in parts):
            raise BadInput(
                f"'{name}' is not a valid root name (components must be non-empty and "
                "not start with a dot)."
            )
        link = self.gcroots_dir / name
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
            # Absolute, as users read it; roots() reads it by the store path's name, so it
            # keeps protecting the path when MLPKG_HOME moves or is reached by a symlink.
            symlink_atomic(str(self.real_path(path)), link)  # leaves no temporary link
        except OSError as e:
            if is_full(e):
                raise disk_full(link.parent, f"the root {name}") from None
            raise
        return link

    def remove_roots(self, name: str) -> None:
        """Remove the root ``gcroots/<name>``, or every root below it if it is a
        directory; gc may then free what they kept."""
        parts = name.split("/")
        if any(not p or p.startswith(".") or p == ".." for p in parts):
            raise BadInput(f"'{name}' is not a valid root name.")
        remove_tree(self.gcroots_dir / name)

    def roots(self) -> dict[str, StorePath]:
        """Explicit roots: every link (or file of names) under ``gcroots/``, recursively."""
        found: dict[str, StorePath] = {}
        for dirpath, dirs, files in os.walk(self.gcroots_dir, followlinks=False):
            links_to_dirs = [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]
            for name in files + links_to_dirs:
                entry = Path(dirpath) / name
                rel = str(entry.relative_to(self.gcroots_dir))
                if entry.is_symlink():
                    root = self._root_target(entry, os.readlink(entry))
                    if root is not None:
                        found[rel] = root
                    continue
                with contextlib.suppress(OSError):
                    text = entry.read_text(encoding="utf-8", errors="replace")
                    for line in text.splitlines():
                        root = self._root_target(entry, line.strip())
                        if root is not None:
                            found[f"{rel}:{line}"] = root
        return found

    def _root_target(self, entry: Path, target: str) -> StorePath | None:
        """The store path a root names, however it spells it: relative to the root's
        directory, a link into this store, or a store path of another spelling of the
        home (an absolute link made before the home moved): then its last component
        that is a store path name counts. None when it names none."""
        if not target:
            return None
        if not os.path.isabs(target) and os.sep in target:
            target = os.path.normpath(os.path.join(entry.parent, target))
        with contextlib.suppress(BadInput, OSError):
            return self.parse_path(target)
        for part in reversed(Path(target).parts):
            with contextlib.suppress(BadInput):
                return StorePath.parse(part)
        return None

    # -- realisation ----------------------------------------------------------------------

    def realise(
        self,
        path: StorePath,
        make: Maker,
        *,
        kind: str,
        recipe_hash: str,
        deriver: dict[str, object],
        references: Iterable[StorePath] = (),
        relocatable: bool = True,
        expected_hash: str | None = None,
        forbidden: Sequence[str] = (),
        scanned: Callable[[], archive.ArchiveInfo] | None = None,
    ) -> PathInfo:
        """Make ``path`` valid by calling ``make`` unless it is valid already (invariant 2).

        ``make(tmp)`` writes the content at ``tmp``, a fresh location inside the store.
        The content is then made read-only, hashed, checked (with ``relocatable``, no file
        or symlink may name the store root, the build directory, or a ``forbidden``
        string: invariant 3; with ``expected_hash``, the archive hash must equal it),
        renamed into place and registered, in that order. A crash at any point leaves
        nothing valid: leftovers are removed the next time the path is made. Holds
        the path's lock throughout, so concurrent callers make it once, and the collector
        (which takes that lock before it deletes an entry, and reads the database again)
        cannot delete the path between its rename and its registration. A full disk
        raises StoreError naming the directory.

        ``scanned``, when given, returns what :func:`mlpkg.store.archive.scan` would give
        of the content ``make`` wrote, learnt while writing it (a
        :class:`~mlpkg.store.archive.StreamScan` fed with :meth:`forbidden_strings`); it
        replaces reading the content again. Only a writer that feeds it every byte it
        writes, in archive order, may give it, and its scan must search for
        ``forbidden_strings(relocatable, forbidden)``: the store does not search again.
        """
        making = self.begin(
            path,
            kind=kind,
            recipe_hash=recipe_hash,
            deriver=deriver,
            references=references,
            relocatable=relocatable,
            expected_hash=expected_hash,
            forbidden=forbidden,
        )
        if isinstance(making, PathInfo):
            return making
        return self.finish(making, make, scanned)

    def finish(
        self, making: Making, make: Maker, scanned: Callable[[], archive.ArchiveInfo] | None = None
    ) -> PathInfo:
        """The rest of :meth:`realise` after :meth:`begin`, in this thread: make the content,
        commit it, and release the lock (removing what was not committed) whatever happens."""
        try:
            making.make(make, scanned)
            return self.commit(making)
        finally:
            making.abandon()

    def begin(
        self,
        path: StorePath,
        *,
        kind: str,
        recipe_hash: str,
        deriver: dict[str, object],
        references: Iterable[StorePath] = (),
        relocatable: bool = True,
        expected_hash: str | None = None,
        forbidden: Sequence[str] = (),
    ) -> PathInfo | Making:
        """The first step of :meth:`realise` (same arguments but the maker): the path's
        info if it is valid already, else a :class:`Making` that holds the path's lock,
        with the leftovers of crashed attempts removed. Then :meth:`Making.make` (which
        may run in another thread: it uses no database) and :meth:`commit` in this
        store's thread; :meth:`Making.abandon` in a ``finally`` releases the lock and
        removes what was not committed."""
        refs = sorted(set(references))
        self.protect([path, *refs])
        info = self._db.info(path)
        if info is not None:
            return info
        lock = PathLock(self.locks_dir, path)
        lock.acquire()
        try:
            info = self._db.info(path)
            if info is not None:
                return info  # another process made it while we waited
            missing = [r for r in refs if not self._db.is_valid(r)]
            if missing:
                raise StoreError(f"Cannot make {path}: its input {missing[0]} is not valid.")
            self._clear_leftovers(path)
        except BaseException:
            lock.release()
            raise
        meta = PathInfo(
            path=path, kind=kind, archive_hash="", size=0, recipe_hash=recipe_hash,
            deriver=deriver, references=refs, manifest=[], registered=0.0,
        )  # fmt: skip
        return Making(self, meta, lock, relocatable, expected_hash, forbidden)

    def commit(self, making: Making) -> PathInfo:
        """Rename the content :meth:`Making.make` made into place and register it (in
        this store's thread); the lock is still held (released by
        :meth:`Making.abandon`)."""
        if making.result is None or making.tmp is None:
            raise StoreError(f"{making.info.path} was not made before its commit.")
        path, result, facts = making.info.path, making.result, making.facts
        try:
            os.replace(making.tmp, self.real_path(path))
            making.tmp = None
            fsync_dir(self.dir)
        except BaseException as e:
            self._raise_if_full(e, f"making {path.name}")
            raise
        deriver = making.info.deriver
        info = dataclasses.replace(
            making.info,
            archive_hash=result.hash,
            size=result.size,
            deriver={**deriver, "facts": facts} if facts else deriver,
            manifest=[[e.path, e.kind, e.size, e.digest] for e in result.manifest],
            registered=time.time(),
        )
        self._db.register(info)
        return info

    def _make_content(
        self, making: Making, make: Maker, scanned: Callable[[], archive.ArchiveInfo] | None
    ) -> None:
        """Make the content at a fresh temporary location, check it and sync it (for
        :meth:`Making.make`); on any error the temporary content is removed, and a full
        disk raises StoreError naming the directory. Uses no database."""
        path = making.info.path
        tmp = self.dir / f".tmp-{path.hash_part}-{secrets.token_hex(6)}"
        try:
            making.facts = make(tmp)
            if not os.path.lexists(tmp):
                raise BuildError(f"Making {path.name} produced no output.", package=path.name)
            known = scanned() if scanned is not None else None
            making.result = self._check(
                tmp, path, making.relocatable, making.expected_hash, making.forbidden, known
            )
            sync_tree(tmp)  # the content is on disk before the name makes it valid
            making.tmp = tmp
        except BaseException as e:
            remove_tree(tmp)
            self._raise_if_full(e, f"making {path.name}")
            raise

    def forbidden_strings(self, relocatable: bool, extra: Sequence[str] = ()) -> list[bytes]:
        """What relocatable content must not contain (invariant 3): the store root and the
        build directory, however reached, and ``extra``; nothing when not ``relocatable``."""
        if not relocatable:
            return []
        roots = {str(self.dir), str(self.builds_dir)}
        roots |= {os.path.realpath(r) for r in roots}  # MLPKG_HOME may be reached by a link
        return [os.fsencode(f) for f in [*sorted(roots), *extra]]

    def _check(
        self,
        tmp: Path,
        path: StorePath,
        relocatable: bool,
        expected_hash: str | None,
        extra_forbidden: Sequence[str] = (),
        known: archive.ArchiveInfo | None = None,
    ) -> archive.ArchiveInfo:
        canonicalise(tmp)
        forbid_raw = self.forbidden_strings(relocatable, extra_forbidden)
        forbid = [os.fsdecode(f) for f in forbid_raw]
        scanned = known or archive.scan(tmp, manifest=True, forbid=forbid_raw)
        if scanned.forbidden_in:
            raise BuildError(
                f"The output of {path.name} names the store or its build directory in "
                f"'{scanned.forbidden_in[0] or '.'}'; store content must be relocatable.",
                details=[
                    f"entries naming one of {', '.join(forbid)}: {', '.join(scanned.forbidden_in)}",
                    "write paths relative to the file, or compute them at activation time",
                ],
                package=path.name,
            )
        if expected_hash is not None and scanned.hash != expected_hash:
            kept = self.home / "failed" / str(path)
            remove_tree(kept)
            kept.parent.mkdir(exist_ok=True)
            os.replace(tmp, kept)
            raise CheckError(
                f"{path.name} came out with archive hash {scanned.hash}, but "
                f"{expected_hash} was expected; nothing was registered.",
                details=[f"the result is kept for inspection at {kept}"],
                hint="`mlpkg build --check` on a valid path rebuilds it and names the first "
                "file that differs; see docs/reproducibility.md.",
                package=path.name,
            )
        return scanned

    def _raise_if_full(self, e: BaseException, doing: str) -> None:
        """Raise StoreError naming the directory if ``e`` says the disk is full."""
        if isinstance(e, OSError) and is_full(e):
            name = e.filename
            where = os.path.dirname(name) if isinstance(name, str) else str(self.dir)
            raise disk_full(where, doing) from None

    def _clear_leftovers(self, path: StorePath) -> None:
        """Remove what a crashed attempt at ``path`` left (we hold its lock)."""
        remove_tree(self.real_path(path))
        for stale in self.dir.glob(f".tmp-{path.hash_part}-*"):
            remove_tree(stale)

    def replace_content(
        self, path: StorePath, make: Maker, *, relocatable: bool
    ) -> archive.ArchiveInfo:
        """Make ``path``'s content again beside it and swap it in (for ``verify --repair``).

        The new content must hash to the recorded archive hash, or nothing changes; with
        ``relocatable``, it is checked as :meth:`realise` checks it (the caller, which
        knows how the path is made, says whether it must be).
        """
        info = self._db.info(path)
        if info is None:
            raise StoreError(f"{path} is not valid, so there is nothing to repair.")
        with PathLock(self.locks_dir, path):
            tmp = self.dir / f".tmp-{path.hash_part}-{secrets.token_hex(6)}"
            old = self.dir / f".trash-{path.hash_part}-{secrets.token_hex(6)}"
            try:
                make(tmp)
                scanned = self._check(tmp, path, relocatable, info.archive_hash)
                sync_tree(tmp)
                if os.path.lexists(self.real_path(path)):
                    os.replace(self.real_path(path), old)
                os.replace(tmp, self.real_path(path))
                fsync_dir(self.dir)
            except OSError as e:
                self._raise_if_full(e, f"repairing {path.name}")
                raise
            finally:
                remove_tree(tmp)
                remove_tree(old)
            return scanned

    def path_lock(self, path: StorePath) -> PathLock:
        """The lock that guards making, repairing, checking or deleting ``path`` (not yet
        acquired): :meth:`realise` holds it exclusively, a rebuild check shared."""
        return PathLock(self.locks_dir, path)

    def gc_lock(self) -> FileLock:
        return FileLock(self.gc_lock_file)


class Making:
    """A path being made (:meth:`Store.begin`): its lock is held, and :meth:`make` (safe
    to call in a worker thread: no database) writes, checks and syncs its content at a
    temporary location that :meth:`Store.commit` renames into place and registers."""

    def __init__(
        self,
        store: Store,
        info: PathInfo,
        lock: PathLock,
        relocatable: bool,
        expected_hash: str | None,
        forbidden: Sequence[str],
    ) -> None:
        self.store, self.info, self.lock = store, info, lock
        self.relocatable, self.expected_hash, self.forbidden = relocatable, expected_hash, forbidden
        self.tmp: Path | None = None
        self.facts: dict[str, object] | None = None
        self.result: archive.ArchiveInfo | None = None

    def make(self, make: Maker, scanned: Callable[[], archive.ArchiveInfo] | None = None) -> None:
        """Write the content with ``make`` (see :meth:`Store.realise` for ``scanned``)."""
        self.store._make_content(self, make, scanned)

    def abandon(self) -> None:
        """Remove the content if it was not committed, and release the lock (idempotent)."""
        if self.tmp is not None:
            remove_tree(self.tmp)
            self.tmp = None
        self.lock.release()
