"""Verification of the store against its database, and repair.

``verify`` checks that every valid path exists; with ``check_contents`` it also re-hashes
each path and compares with the recorded archive hash, naming the files that differ (from
the manifest recorded at registration). Entries of ``store/`` that are not valid paths
are reported as debris (``gc`` removes them). ``repair`` remakes broken paths with a
maker supplied by the caller (the store does not know how paths are made).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlpkg.errors import StoreError
from mlpkg.store import archive
from mlpkg.store.db import PathInfo
from mlpkg.store.path import StorePath
from mlpkg.store.store import Maker, Store


@dataclass
class Problem:
    path: str
    kind: str  # missing | modified | debris
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


def changed_files(recorded: list[list[object]], actual: list[archive.ManifestEntry]) -> list[str]:
    """Entries that were added, removed or changed between two manifests."""
    before = {str(e[0]): tuple(e[1:]) for e in recorded}
    after = {e.path: (e.kind, e.size, e.digest) for e in actual}
    names = set(before) | set(after)
    return sorted(n or "." for n in names if before.get(n) != after.get(n))


def check_path(store: Store, info: PathInfo, check_contents: bool) -> Problem | None:
    real = store.real_path(info.path)
    if not os.path.lexists(real):
        return Problem(str(info.path), "missing", f"{info.path} is registered but missing.")
    if not check_contents:
        return None
    try:
        scanned = archive.scan(real, manifest=True)
    except (StoreError, OSError) as e:
        message = getattr(e, "message", str(e))
        return Problem(str(info.path), "modified", f"{info.path} cannot be read back: {message}")
    if scanned.hash == info.archive_hash:
        return None
    files = changed_files(info.manifest, scanned.manifest)
    where = f" ({', '.join(files[:5])})" if files else ""
    return Problem(
        str(info.path),
        "modified",
        f"{info.path} was modified{where}: expected {info.archive_hash}, got {scanned.hash}.",
        files,
    )


def verify(
    store: Store,
    *,
    check_contents: bool = False,
    repair: Callable[[PathInfo], Maker] | None = None,
    on_path: Callable[[StorePath], None] | None = None,
) -> VerifyResult:
    """Check every valid path (and repair broken ones when ``repair`` is given)."""
    result = VerifyResult()
    valid = set()
    for info in store.db.iter_infos():
        valid.add(str(info.path))
        if on_path is not None:
            on_path(info.path)
        result.checked += 1
        problem = check_path(store, info, check_contents)
        if problem is None:
            continue
        if repair is not None:
            store.protect([info.path, *info.references])
            store.replace_content(info.path, repair(info))
            problem.repaired = True
        result.problems.append(problem)
    for entry in sorted(os.listdir(store.dir)):
        if entry not in valid and not entry.startswith((".tmp-", ".trash-")):
            result.problems.append(
                Problem(
                    entry, "debris", f"{Path(entry)} is in the store but not valid (gc removes it)."
                )
            )
    return result
