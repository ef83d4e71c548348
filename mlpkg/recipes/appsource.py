"""The source of an ``app`` recipe: a local directory, pinned by the digest of its files.

An app's code is not downloaded: it is a directory on this machine, either an importable
package (``package = "mlpkg.harness"``) or a directory relative to the recipe file
(``path``). The files matching ``include`` are the source. Their :func:`digest` (sha256
over the sorted relative paths, each file's owner-exec bit and each file's sha256) is part
of the recipe's hashed content, so the store path changes exactly when a file changes.

The contract:

- :func:`locate` finds the directory or raises :class:`RecipeError` naming the recipe.
- :func:`source_files` lists the included files, sorted, never following links out of
  the directory and never including ``__pycache__``.
- :func:`pin` returns the recipe with ``app.digest`` and ``app.located`` filled in, and
  refuses a declared digest that differs from the files.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from mlpkg.errors import RecipeError
from mlpkg.recipes.model import AppSource, Recipe


def _package_dirs(package: str) -> list[str]:
    """Where the package ``package`` (dotted) lies, found without importing anything: a
    name from a lockfile must not run a package's ``__init__`` here. The top-level package
    is looked up by every finder of ``sys.meta_path`` (an editable install's too, which
    finding a top-level name does not execute); its subpackages in its directories."""
    import importlib.util
    from importlib.machinery import ModuleSpec, PathFinder

    places: list[str] | None = None
    parts = package.split(".")
    if not all(p.isidentifier() for p in parts):
        return []
    for i in range(len(parts)):
        spec: ModuleSpec | None
        if i == 0:
            spec = importlib.util.find_spec(parts[0])
        else:
            spec = PathFinder.find_spec(".".join(parts[: i + 1]), places)
        if spec is None or not spec.submodule_search_locations:
            return []
        places = list(spec.submodule_search_locations)
    return places or []


def locate(app: AppSource, recipe_file: Path | None, label: str) -> Path:
    """The source directory of ``app`` (see the module docstring)."""
    if app.package is not None:
        places = _package_dirs(app.package)
        if not places:
            raise RecipeError(
                f"{label}: field app.package: no Python package {app.package} is importable here.",
                field="app.package",
                file=str(recipe_file) if recipe_file is not None else None,
            )
        return Path(places[0])
    assert app.path is not None
    base = recipe_file.parent if recipe_file is not None else None
    if base is None and app.located:
        return Path(app.located)
    where = (base / app.path) if base is not None else Path(app.path)
    if not where.is_dir():
        raise RecipeError(
            f"{label}: field app.path: {where} is not a directory.",
            field="app.path",
            file=str(recipe_file) if recipe_file is not None else None,
        )
    return where.resolve()


def source_files(root: Path, include: list[str], exclude: Sequence[str] = ()) -> list[str]:
    """The relative paths under ``root`` that match ``include`` and not ``exclude``."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if any(fnmatch.fnmatchcase(rel, p) for p in include) and not any(
                fnmatch.fnmatchcase(rel, p) for p in exclude
            ):
                found.append(rel)
    return sorted(found)


def is_executable(mode: int) -> bool:
    """Whether a file's mode makes it executable for the digest: its owner-exec bit, a
    property of the file alone (``os.access`` would depend on who asks: root may execute
    any file with an exec bit, another user only with theirs)."""
    return bool(mode & stat.S_IXUSR)


def listing_digest(listing: Sequence[tuple[str, bool, str]]) -> str:
    """``sha256:`` over the canonical listing: (relative path, executable, sha256 hex) per
    file, in the order of ``files``. The one definition, for :func:`digest` and for the
    copy that installs the source (``mlpkg.build.app``), which hashes what it wrote."""
    entries = [[rel, executable, sha] for rel, executable, sha in listing]
    text = json.dumps(entries, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(text).hexdigest()


def digest(root: Path, files: list[str]) -> str:
    """``sha256:`` over the canonical listing of ``files`` (path, executable, content)."""
    listing = []
    for rel in files:
        with open(root / rel, "rb") as f:  # the mode and the bytes of one open file
            executable = is_executable(os.fstat(f.fileno()).st_mode)
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        listing.append((rel, executable, sha))
    return listing_digest(listing)


def pin(
    recipe: Recipe, recipe_file: Path | None, on_file: Callable[[Path], None] | None = None
) -> Recipe:
    """``recipe`` with its app source's digest and location filled in.

    ``on_file`` is told every file read (the plan cache stamps them)."""
    app = recipe.app
    if app is None:
        return recipe
    label = str(recipe_file) if recipe_file is not None else recipe.spec
    root = locate(app, recipe_file, label)
    files = source_files(root, app.include, app.exclude)
    if not files:
        raise RecipeError(
            f"{label}: field app.include: no file under {root} matches {', '.join(app.include)}.",
            field="app.include",
            package=recipe.name,
            file=str(recipe_file) if recipe_file is not None else None,
        )
    if on_file is not None:  # directories too: a file added to one changes its stamp
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            on_file(Path(dirpath))
        for rel in files:
            on_file(root / rel)
    found = digest(root, files)
    if app.digest is not None and app.digest != found:
        raise RecipeError(
            f"{label}: field app.digest: the recipe pins {app.digest}, but the files "
            f"under {root} give {found}.",
            field="app.digest",
            package=recipe.name,
            file=str(recipe_file) if recipe_file is not None else None,
        )
    pinned = app.model_copy(update={"digest": found, "located": str(root)})
    return recipe.model_copy(update={"app": pinned})
