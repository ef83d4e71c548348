"""Making the store path of an ``app`` recipe.

The path holds the app's code, when it has an ``[app]`` source, installed like a wheel's
pure-Python package::

    $out/lib/python3.X/site-packages/<module>/   the included files, unchanged
    $out/share/mlpkg/app.json                    the run command (a template, no paths)

The source is read from where the recipe's loader found it and must still have the digest
the recipe (or the lockfile) pins: an edited file is refused here, naming both digests,
rather than stored under the old path's name.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mlpkg.build import BuildContext, Builder, register
from mlpkg.errors import BuildError
from mlpkg.store.fs import copy_file

if TYPE_CHECKING:
    from mlpkg.resolver.derivation import Derivation
    from mlpkg.store.store import Maker, Store

APP_MANIFEST = "share/mlpkg/app.json"
APP_MANIFEST_VERSION = 1


class App(Builder):
    kind = "app"
    action = "install"
    relocatable = True

    def maker(self, drv: Derivation, ctx: BuildContext) -> Maker:
        return lambda tmp: make_app(drv, tmp, ctx.store)


def make_app(drv: Derivation, tmp: Path, store: Store) -> dict[str, object]:
    """Write ``drv``'s app path at ``tmp`` (see the module docstring)."""
    recipe = drv.recipe
    assert recipe.run is not None
    tmp.mkdir()
    facts: dict[str, object] = {}
    if recipe.app is not None:
        facts = _install_source(drv, tmp, store)
    manifest = tmp / APP_MANIFEST
    manifest.parent.mkdir(parents=True)
    doc = {"format": APP_MANIFEST_VERSION, "command": recipe.run.command}
    manifest.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return facts


def _install_source(drv: Derivation, tmp: Path, store: Store) -> dict[str, object]:
    from mlpkg.build.wheel import python_of
    from mlpkg.recipes.appsource import locate, source_files

    app = drv.recipe.app
    assert app is not None
    root = locate(app, None, drv.recipe.spec)
    files = source_files(root, app.include, app.exclude)
    major_minor = ".".join(str(python_of(drv, store)["version"]).split(".")[:2])
    dest = tmp / "lib" / f"python{major_minor}" / "site-packages" / app.module
    found = copy_source(root, files, dest)
    if found != app.digest:
        raise BuildError(
            f"{drv.name}-{drv.version}: its source under {root} has the digest {found}, "
            f"but this path pins {app.digest} (the files changed since it was planned, or "
            "the lock comes from another version of them).",
            package=drv.name,
        )
    return {"source": app.digest, "files": len(files)}


def copy_source(root: Path, files: list[str], dest: Path) -> str:
    """Copy ``files`` (relative to ``root``) under ``dest``, reading each once, and return
    the :func:`~mlpkg.recipes.appsource.digest` of what was written: each file's sha256 is
    taken of the bytes copied, and its executable bit (owner-exec, from the open file) is
    the one the copy gets. A file that changes meanwhile cannot enter the store under the
    digest of other bytes: the caller compares this digest with the pinned one."""
    from mlpkg.recipes.appsource import is_executable, listing_digest

    listing: list[tuple[str, bool, str]] = []
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(root / rel, "rb") as src:
            executable = is_executable(os.fstat(src.fileno()).st_mode)
            sha = hashlib.sha256()
            copy_file(src, target, sha, mode=0o755 if executable else 0o644)
        listing.append((rel, executable, sha.hexdigest()))
    return listing_digest(listing)


def run_command(store_path: Path) -> list[str]:
    """The command template an app path records."""
    try:
        doc = json.loads((store_path / APP_MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise BuildError(f"{store_path} is not an app path: {e}.") from None
    if doc.get("format") != APP_MANIFEST_VERSION:
        raise BuildError(f"{store_path / APP_MANIFEST} has an unknown format {doc.get('format')}.")
    return [str(a) for a in doc["command"]]


register(App())
