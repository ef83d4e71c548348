"""A cache of plans, so that a warm ``mlpkg build`` neither parses recipes nor resolves.

Resolving reads recipe directories and files and detects external tools; its result (the
plan's store paths) is a pure function of those, the specs, the platform and mlpkg's
version. An entry is stored under ``<home>/cache/plans/<key>.json`` with the *stamps*
(mtime, size, inode) of everything the resolution read, and of every external
executable found on ``PATH``. An entry is used only if every stamp is unchanged; anything
else (an edited recipe, a new version file, a new package in an earlier directory, an
upgraded compiler, another ``PATH``) falls back to a full resolution.

Format version 1 (``"version": 1`` in each entry; other versions are ignored). An entry
that is not what this format says (empty, truncated, nested too deep
(:func:`mlpkg.documents.load_json`), or of the wrong structure anywhere, down to a node's
store path) is ignored as a miss: a cache is never a reason for a build to fail.

This module imports nothing heavy: it is the fast path. So an entry is checked by
:func:`_valid_entry`, not by a pydantic model (importing pydantic alone would take a warm
``mlpkg build`` about three times as long).
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
from mlpkg.documents import load_json
from mlpkg.errors import BadInput
from mlpkg.recipes.index import stamp
from mlpkg.store.fs import write_atomic
from mlpkg.store.path import StorePath

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
    """The cached plan document for ``key`` if it is still right, else None (also for an
    entry that is unreadable or not of format 1's structure)."""
    file = _file(home, key)
    try:
        entry = load_json(file.read_text(encoding="utf-8"), str(file))
    except (OSError, ValueError, BadInput):
        return None
    if not _valid_entry(entry):
        return None
    for path, recorded in entry["files"].items():
        if stamp(Path(path)) != recorded:
            return None
    for exe, recorded in entry["executables"].items():
        if executable_stamp(exe) != recorded:
            return None
    plan: dict[str, Any] = entry["plan"]
    return plan


def _is_path(value: object) -> bool:
    """Whether ``value`` is the base name of a store path."""
    if not isinstance(value, str) or "/" in value:
        return False
    try:
        StorePath.parse(value)
    except BadInput:
        return False
    return True


def _texts(value: object) -> bool:
    """Whether ``value`` is a table whose values are all text."""
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _valid_node(node: object) -> bool:
    """Whether ``node`` is a node of a plan document (:meth:`PlanNode.to_json`)."""
    return (
        isinstance(node, dict)
        and all(isinstance(node.get(k), str) for k in ("name", "version", "kind", "action"))
        and _is_path(node.get("path"))
        and _texts(node.get("inputs"))
        and all(_is_path(p) for p in node["inputs"].values())
    )


def _valid_entry(entry: object) -> bool:
    """Whether ``entry`` has format 1's structure: version, the stamps of files and
    executables (tables), and a plan document (:meth:`Plan.to_json`) whose roots and nodes
    name store paths and whose counts are numbers."""
    if not isinstance(entry, dict) or entry.get("version") != FORMAT_VERSION:
        return False
    if not isinstance(entry.get("files"), dict) or not isinstance(entry.get("executables"), dict):
        return False
    plan = entry.get("plan")
    if not isinstance(plan, dict):
        return False
    roots, counts, nodes = plan.get("roots"), plan.get("counts"), plan.get("nodes")
    return (
        isinstance(roots, list)
        and all(_is_path(r) for r in roots)
        and isinstance(counts, dict)
        and all(type(n) is int for n in counts.values())
        and isinstance(nodes, list)
        and all(_valid_node(n) for n in nodes)
    )


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
