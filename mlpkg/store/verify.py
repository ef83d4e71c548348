"""Verification of the store against its database, and repair.

``verify`` checks that every valid path exists; with ``check_contents`` it also re-hashes
each path and compares with the recorded archive hash, naming the files that differ (from
the manifest recorded at registration), and checks every entry's metadata, which the
archive hash leaves out: its mode must be canonical (:func:`mlpkg.store.fs.canonicalise`:
0555 for directories and executables, 0444 for other files; symlinks have no mode), its
owner must be the store's owner (the uid that owns ``store/``), and it must have no
extended attributes (a file capability such as ``security.capability`` would grant a
program privileges; only :data:`mlpkg.store.fs.KEPT_XATTRS` are allowed). Entries of
``store/`` that are not valid paths are reported as debris (``gc`` removes them).
``repair`` fixes wrong modes, owners and extended attributes in place (with the path's
lock held) and remakes paths whose content is wrong, or whose metadata cannot be fixed in
place, with a maker supplied by the caller, which also says whether the content must be
relocatable (the store does not know how paths are made).

Names in messages are shown with :func:`show_name`: control characters (a newline in a
file name), backslashes and undecodable bytes are escaped, so a message stays one line.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mlpkg.errors import StoreError
from mlpkg.store import archive
from mlpkg.store.db import PathInfo
from mlpkg.store.fs import canonicalise, extended_attributes
from mlpkg.store.locks import PathLock
from mlpkg.store.path import StorePath
from mlpkg.store.store import Maker, Store

_SHOWN = 5  # entries a message names before "and N more"


class Remake(NamedTuple):
    """How ``verify`` remakes a broken path (the caller's answer; the store does not know
    how paths are made): the maker, and whether the content must be relocatable
    (:meth:`Store.replace_content <mlpkg.store.store.Store.replace_content>`)."""

    make: Maker
    relocatable: bool


@dataclass
class Problem:
    path: str
    kind: str  # missing | modified | metadata (modes, owners, xattrs) | debris
    message: str
    files: list[str] = field(default_factory=list)
    repaired: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "kind": self.kind,
            "message": self.message,
            "files": self.files,
            "repaired": self.repaired,
        }


@dataclass
class VerifyResult:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.repaired or p.kind == "debris" for p in self.problems)


def show_name(name: str) -> str:
    """``name`` as one visible line: control characters as Python escapes (``\\n``), a
    backslash doubled, bytes that are not UTF-8 (surrogate escapes) as ``\\xNN``."""
    out = []
    for c in name:
        if "\udc80" <= c <= "\udcff":
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c == "\\":
            out.append("\\\\")
        elif not c.isprintable():
            out.append(c.encode("unicode_escape").decode("ascii"))
        else:
            out.append(c)
    return "".join(out)


def store_owner(store: Store) -> int:
    """The uid that owns the store directory: every entry of every path must be its."""
    return os.stat(store.dir).st_uid


def canonical_mode(mode: int) -> int | None:
    """The permission bits :func:`~mlpkg.store.fs.canonicalise` gives an entry of this
    ``st_mode``: 0555 for a directory or an executable file (owner execute bit), 0444 for
    another file; None for anything else (a symlink's mode means nothing)."""
    if stat.S_ISDIR(mode):
        return 0o555
    if stat.S_ISREG(mode):
        return 0o555 if mode & stat.S_IXUSR else 0o444
    return None


def _entries(root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(relative name, path, lstat) of ``root`` (named ``.``) and everything below it.
    Never follows a symlink; an unreadable directory raises OSError (nothing is skipped)."""
    stack = [(".", root)]
    while stack:
        rel, path = stack.pop()
        st = os.lstat(path)
        yield rel, path, st
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(path), reverse=True):
                stack.append((name if rel == "." else f"{rel}/{name}", path / name))


def wrong_metadata(root: Path, owner: int) -> list[tuple[str, str]]:
    """(entry, what is wrong with it) for each wrong mode or owner, and each entry with
    extended attributes, under ``root``, in name order (the entry relative to ``root``,
    which is ``.``; the phrase, e.g. ``has mode 0777, not 0555`` or ``has extended
    attributes security.capability``); empty when every mode is canonical, ``owner`` owns
    every entry and none has extended attributes (but :data:`~mlpkg.store.fs.KEPT_XATTRS`).
    Raises OSError when the tree cannot be read."""
    found = []
    for rel, path, st in _entries(root):
        want = canonical_mode(st.st_mode)
        have = stat.S_IMODE(st.st_mode)
        if want is not None and have != want:
            found.append((rel, f"has mode {have:04o}, not {want:04o}"))
        if st.st_uid != owner:
            found.append((rel, f"is owned by uid {st.st_uid}, not {owner}"))
        if xattrs := extended_attributes(path):
            names = ", ".join(show_name(n) for n in xattrs)
            found.append((rel, f"has extended attributes {names}"))
    return found


def fix_metadata(store: Store, path: StorePath) -> bool:
    """Give every entry of ``path`` the store's owner and its canonical mode, and remove
    its extended attributes, in place, holding the path's lock. True when the path is then
    right; False when it is not, or cannot be fixed in place (no permission, say): then
    only remaking it helps."""
    owner = store_owner(store)
    root = store.real_path(path)
    with PathLock(store.locks_dir, path):
        try:
            for _, entry, st in list(_entries(root)):
                if st.st_uid != owner:
                    os.chown(entry, owner, -1, follow_symlinks=False)
            canonicalise(root)
            return not wrong_metadata(root, owner)
        except OSError:
            return False


def changed_files(recorded: list[list[object]], actual: list[archive.ManifestEntry]) -> list[str]:
    """Entries that were added, removed or changed between two manifests."""
    before = {str(e[0]): tuple(e[1:]) for e in recorded}
    after = {e.path: (e.kind, e.size, e.digest) for e in actual}
    names = set(before) | set(after)
    return sorted(n or "." for n in names if before.get(n) != after.get(n))


def check_path(store: Store, info: PathInfo, check_contents: bool) -> Problem | None:
    """What is wrong with one valid path, or None: ``missing``; with ``check_contents``,
    ``modified`` (its archive hash differs, or it cannot be read) or else ``metadata``
    (modes, owners or extended attributes, see the module docstring). Each message is one line."""
    real = store.real_path(info.path)
    if not os.path.lexists(real):
        return Problem(str(info.path), "missing", f"{info.path} is registered but missing.")
    if not check_contents:
        return None
    try:
        scanned = archive.scan(real, manifest=True)
        wrong = wrong_metadata(real, store_owner(store))
    except (StoreError, OSError) as e:
        message = show_name(getattr(e, "message", str(e)))
        return Problem(str(info.path), "modified", f"{info.path} cannot be read back: {message}")
    if scanned.hash != info.archive_hash:
        files = changed_files(info.manifest, scanned.manifest)
        where = f" ({', '.join(show_name(f) for f in files[:_SHOWN])})" if files else ""
        return Problem(
            str(info.path),
            "modified",
            f"{info.path} was modified{where}: expected {info.archive_hash}, got {scanned.hash}.",
            files,
        )
    if not wrong:
        return None
    named = [f"'{show_name(rel)}' {what}" for rel, what in wrong[:_SHOWN]]
    more = f", and {len(wrong) - _SHOWN} more" if len(wrong) > _SHOWN else ""
    return Problem(
        str(info.path),
        "metadata",
        f"{info.path} has entries of the wrong mode, owner or extended attributes: "
        f"{', '.join(named)}{more}.",
        sorted({rel for rel, _ in wrong}),
    )


def verify(
    store: Store,
    *,
    check_contents: bool = False,
    repair: Callable[[PathInfo], Remake] | None = None,
    on_path: Callable[[StorePath], None] | None = None,
) -> VerifyResult:
    """Check every valid path (and repair broken ones when ``repair`` is given)."""
    result = VerifyResult()
    valid = set()
    for info in store._db.iter_infos():
        valid.add(str(info.path))
        if on_path is not None:
            on_path(info.path)
        result.checked += 1
        problem = check_path(store, info, check_contents)
        if problem is None:
            continue
        if repair is not None:
            store.protect([info.path, *info.references])
            if problem.kind != "metadata" or not fix_metadata(store, info.path):
                remake = repair(info)
                store.replace_content(info.path, remake.make, relocatable=remake.relocatable)
            problem.repaired = True
        result.problems.append(problem)
    for entry in sorted(os.listdir(store.dir)):
        if entry not in valid and not entry.startswith((".tmp-", ".trash-")):
            shown = show_name(str(Path(entry)))
            message = f"{shown} is in the store but not valid (gc removes it)."
            result.problems.append(Problem(entry, "debris", message))
    return result
