"""The recipe index: every recipe directory, searched in order.

A directory holds ``<name>/<version>.toml`` (external tools: ``<name>/external.toml``).
Directories are searched in the order given (``--recipes``, then ``MLPKG_RECIPES_PATH``,
then the bundled collection): the first directory that has a package name provides all of
its versions (like Spack repositories), so a user directory can shadow a bundled package.
Files are read lazily: listing versions only reads directory entries.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from mlpkg.errors import RecipeError, UnknownPackage

if TYPE_CHECKING:  # the model pulls in pydantic: imported only when a recipe is read
    from mlpkg.recipes.model import Recipe

EXTERNAL_STEM = "external"
_ALIASES_RE = re.compile(r"^\s*aliases\s*=", re.MULTILINE)


Stamp = list[int] | None  # [st_mtime_ns, st_size, st_ino], or None for "does not exist"


def stamp(path: Path) -> Stamp:
    """What must stay the same for a cached answer that read ``path`` to stay right."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def canonical(name: str) -> str:
    """The PEP 503 normal form of a package name (lower case, runs of ``-_.`` folded to
    ``-``): :func:`packaging.utils.canonicalize_name`, mlpkg's one name folding (the
    resolver's specs and the importer call this too).

    Imported here, not at the top: ``packaging.utils`` pulls in ``packaging.tags`` (and
    ``sysconfig``), and this module is on the plan cache's fast path, which folds no name.
    """
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def bundled_dir() -> Path:
    """The collection shipped with mlpkg: ``mlpkg/_collection`` inside an installed wheel,
    or the top-level ``recipes/`` of a source checkout (editable installs)."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "_collection"
    return installed if installed.is_dir() else package.parent / "recipes"


def default_dirs(extra: list[Path] | None = None, imported: Path | None = None) -> list[Path]:
    """``extra`` (``--recipes``), then ``MLPKG_RECIPES_PATH``, then ``imported`` (where
    ``mlpkg import`` writes by default: ``$MLPKG_HOME/recipes``), then the bundled
    collection."""
    dirs = list(extra or [])
    env = os.environ.get("MLPKG_RECIPES_PATH", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    if imported is not None:
        dirs.append(imported)
    dirs.append(bundled_dir())
    return dirs


@dataclass(frozen=True)
class RecipeFile:
    name: str
    version: str  # the file stem: a version, or "external"
    path: Path

    @property
    def is_external(self) -> bool:
        return self.version == EXTERNAL_STEM


class RecipeIndex:
    """Finds recipe files by package name and loads them (cached)."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = [Path(d) for d in dirs]
        self._owner: dict[str, Path] | None = None
        self._aliases: dict[str, str] | None = None
        self._files: dict[str, list[RecipeFile]] = {}
        self._recipes: dict[Path, Recipe] = {}
        # Every directory listed and file read, with its stamp, so that a cache of what was
        # computed from them (mlpkg.resolver.plancache) knows when it is stale.
        self.stamps: dict[str, Stamp] = {}

    def _stamp(self, path: Path) -> None:
        self.stamps.setdefault(str(path), stamp(path))

    def record_file(self, path: Path) -> None:
        """Note a file a plan depends on besides recipes (an app's source), so that a plan
        cached from it is used only while the file is unchanged."""
        self._stamp(path)

    def _owners(self) -> dict[str, Path]:
        if self._owner is None:
            owner: dict[str, Path] = {}
            for d in self.dirs:
                self._stamp(d)
                if not d.is_dir():
                    continue
                for entry in os.scandir(d):
                    if entry.is_dir() and not entry.name.startswith((".", "_")):
                        owner.setdefault(entry.name, d)
            self._owner = owner
        return self._owner

    def names(self) -> list[str]:
        return sorted(self._owners())

    def canonical_name(self, name: str) -> str:
        """The package a user's name refers to (aliases resolved); UnknownPackage if none."""
        owners = self._owners()
        for candidate in (name, canonical(name)):
            if candidate in owners:
                return candidate
        alias = self.aliases().get(canonical(name))
        if alias is not None:
            return alias
        known = list(owners) + list(self.aliases())
        close = difflib.get_close_matches(canonical(name), known, n=3, cutoff=0.6)
        hint = f"Did you mean {', '.join(close)}?" if close else "`mlpkg search` lists them."
        raise UnknownPackage(f"There is no package named '{name}'.", hint=hint, package=name)

    def aliases(self) -> dict[str, str]:
        """alias → package, from the ``aliases`` field of each package's recipes."""
        if self._aliases is None:
            found: dict[str, str] = {}
            for name in self.names():
                for rf in self.files(name):
                    self._stamp(rf.path)
                    if not _ALIASES_RE.search(
                        rf.path.read_text(encoding="utf-8", errors="replace")
                    ):
                        continue
                    for alias in self.load(rf).aliases:
                        other = found.setdefault(canonical(alias), name)
                        if other != name:
                            raise RecipeError(
                                f"{rf.path}: field aliases: '{alias}' is already an alias "
                                f"of '{other}'.",
                                file=str(rf.path),
                                field="aliases",
                            )
            self._aliases = found
        return self._aliases

    def files(self, name: str) -> list[RecipeFile]:
        """The recipe files of a package, newest version first (external first of all)."""
        if name not in self._files:
            owner = self._owners().get(name)
            result: list[tuple[tuple[int, Version], RecipeFile]] = []
            if owner is not None:
                self._stamp(owner / name)
                for entry in os.scandir(owner / name):
                    if not entry.name.endswith(".toml"):
                        continue
                    stem = entry.name[: -len(".toml")]
                    rf = RecipeFile(name, stem, Path(entry.path))
                    result.append((_order(rf), rf))
            result.sort(key=lambda pair: pair[0], reverse=True)
            self._files[name] = [rf for _, rf in result]
        return self._files[name]

    def load(self, rf: RecipeFile) -> Recipe:
        recipe = self._recipes.get(rf.path)
        if recipe is None:
            from mlpkg.recipes import loader

            self._stamp(rf.path)
            recipe = loader.load(rf.path)
            self._recipes[rf.path] = recipe
        return recipe

    def all_recipes(self) -> list[Recipe]:
        return [self.load(rf) for name in self.names() for rf in self.files(name)]


def _order(rf: RecipeFile) -> tuple[int, Version]:
    if rf.is_external:
        return (1, Version("0"))
    try:
        return (0, Version(rf.version))
    except InvalidVersion:
        raise RecipeError(
            f"{rf.path}: the file name '{rf.path.name}' is not <version>.toml.",
            file=str(rf.path),
        ) from None
