"""A cache of plans, so that a warm ``mlpkg build`` neither parses recipes nor resolves.

Resolving reads recipe directories and files and detects external tools; its result (the
plan's store paths) is a pure function of those, the specs, the platform and mlpkg's
version. An entry is stored under ``<home>/cache/plans/<key>.json`` with the *stamps*
(mtime, size, inode) of everything the resolution read, and of every external
executable found on ``PATH``. An entry is used only if every stamp is unchanged; anything
else (an edited recipe, a new version file, a new package in an earlier directory, an
upgraded compiler, another ``PATH``) falls back to a full resolution.

Format version 1 (``"version": 1`` in each entry; other versions are ignored).
This module imports nothing heavy: it is the fast path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlpkg import __version__
from mlpkg.recipes.index import stamp
from mlpkg.store.fs import write_atomic

FORMAT_VERSION = 1


def executable_stamp(exe: str) -> list[object]:
    """Where ``exe`` is found on ``PATH``, and the stamp of the file it resolves to."""
    where = shutil.which(exe)
    if where is None:
        return [None, None]
    return [os.path.abspath(where), stamp(Path(os.path.realpath(where)))]


def cache_key(specs: Sequence[str], dirs: Sequence[Path], platform: str) -> str:
    material = {
        "mlpkg": __version__,
        "format": FORMAT_VERSION,
        "platform": platform,
        "dirs": [str(Path(d).absolute()) for d in dirs],
        "specs": list(specs),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:40]


def _file(home: Path, key: str) -> Path:
    return home / "cache" / "plans" / f"{key}.json"


def load(home: Path, key: str) -> dict[str, Any] | None:
    """The cached plan document for ``key`` if it is still right, else None."""
    try:
        entry = json.loads(_file(home, key).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("version") != FORMAT_VERSION:
        return None
    for path, recorded in entry.get("files", {}).items():
        if stamp(Path(path)) != recorded:
            return None
    for exe, recorded in entry.get("executables", {}).items():
        if executable_stamp(exe) != recorded:
            return None
    plan = entry.get("plan")
    return plan if isinstance(plan, dict) else None


def save(
    home: Path,
    key: str,
    plan: dict[str, Any],
    files: dict[str, Any],
    executables: dict[str, Any],
) -> None:
    """Store a plan document with the stamps it depends on (atomically; errors ignored)."""
    target = _file(home, key)
    entry = {"version": FORMAT_VERSION, "plan": plan, "files": files, "executables": executables}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, json.dumps(entry, sort_keys=True))
    except OSError:
        pass
