"""The source of an ``app`` recipe: a local directory, pinned by the digest of its files.

An app's code is not downloaded: it is a directory on this machine, either an importable
package (``package = "mlpkg.harness"``) or a directory relative to the recipe file
(``path``). The files matching ``include`` are the source. Their :func:`digest` (sha256
over the sorted relative paths, each file's executable bit and each file's sha256) is part
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
import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from mlpkg.errors import RecipeError
from mlpkg.recipes.model import AppSource, Recipe


def locate(app: AppSource, recipe_file: Path | None, label: str) -> Path:
    """The source directory of ``app`` (see the module docstring)."""
    if app.package is not None:
        try:
            spec = importlib.util.find_spec(app.package)
        except (ImportError, ValueError):
            spec = None
        places = list(spec.submodule_search_locations or []) if spec else []
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


def digest(root: Path, files: list[str]) -> str:
    """``sha256:`` over the canonical listing of ``files`` (path, executable, content)."""
    listing = []
    for rel in files:
        path = root / rel
        data = path.read_bytes()
        executable = os.access(path, os.X_OK)
        listing.append([rel, executable, hashlib.sha256(data).hexdigest()])
    text = json.dumps(listing, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(text).hexdigest()


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
