"""Local files and directories as the paths recipes expect (``mlpkg add-file``).

Contract:

* :func:`add_file` makes the fixed-output path of a file: the ``fetch`` recipe
  NAME@VERSION if the collection has one (the file must have the hash it declares), else a
  flat fixed-output recipe for the file's sha256. The file is copied once into a private,
  locked temporary file and hashed while copying, so what becomes valid has exactly the
  hashes its name was computed from, even if the file changes meanwhile.
* :func:`add_directory` makes the path of a network build (``network = true``) from a
  local copy of what it downloads: the recipe's ``expect`` entries must be there, and
  links that are absolute or lead out, and special files, are refused as a safe unpack
  refuses them (invariant 5). The build's runtime inputs are realised first.
* Bad input raises :class:`~mlpkg.errors.BadInput` naming the file, entry or package;
  nothing half-done is left in the store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mlpkg.errors import BadInput, RecipeError, StoreError

if TYPE_CHECKING:
    from mlpkg.recipes.index import RecipeIndex
    from mlpkg.recipes.model import Recipe
    from mlpkg.session import Session
    from mlpkg.store.locks import FileLock
    from mlpkg.store.store import PathInfo, Store

__all__ = ["add_directory", "add_file"]


def add_file(session: Session, file: Path, name: str, version: str) -> tuple[PathInfo, str]:
    """Make ``file`` the fixed-output path NAME@VERSION: (its info, the file's sha256)."""
    from mlpkg.build.fetch import unpack_local
    from mlpkg.resolver.derivation import Derivation, current_platform

    store = session.store
    staged, lock, sha, md5 = _stage_file(store, file)
    url = file.absolute().as_uri()
    try:
        recipe = _recipe_for_file(session.index, name, version, sha, md5, file)
        drv = Derivation(recipe, {}, current_platform())
        info = store.info(drv.path)
        if info is None:
            info = store.realise(
                drv.path,
                lambda tmp: {**unpack_local(recipe, staged, tmp, sha, str(file)), "url": url},
                kind="fetch",
                recipe_hash=drv.recipe_hash,
                deriver=drv.to_json(),
                relocatable=False,
            )
    finally:
        staged.unlink(missing_ok=True)
        lock.release()
    return info, sha


def _stage_file(store: Store, file: Path) -> tuple[Path, FileLock, str, str]:
    """Copy ``file`` once into a :meth:`~mlpkg.store.store.Store.staging_file`, hashing
    while copying: (the copy, its lock, sha256, md5). The caller removes the copy and
    releases the lock."""
    from mlpkg.store.fs import copy_file

    try:
        src = open(file, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as e:
        raise BadInput(f"Cannot read {file}: {e.strerror or e}.", file=str(file)) from None
    sha, md5 = hashlib.sha256(), hashlib.md5()
    staged, lock = None, None
    try:
        with src:
            staged, lock = store.staging_file("add-file")
            with open(staged, "r+b") as out:
                copy_file(src, out, sha, md5)
    except BaseException as e:
        if staged is not None:
            staged.unlink(missing_ok=True)
        if lock is not None:
            lock.release()
        if isinstance(e, OSError):  # a full disk, say: one sentence naming the directory
            where = staged.parent if staged is not None else "the store's partial directory"
            raise StoreError(f"Cannot copy {file} into {where}: {e.strerror or e}.") from None
        raise
    return staged, lock, sha.hexdigest(), md5.hexdigest()


def _recipe_for_file(
    index: RecipeIndex, name: str, version: str, sha: str, md5: str, file: Path
) -> Recipe:
    """The fetch recipe name@version if there is one (checked against the file), else a
    flat fixed-output recipe for the file's sha256."""
    from mlpkg.recipes.model import Recipe, Source

    try:
        canonical = index.canonical_name(name)
        files = [f for f in index.files(canonical) if f.version == version]
    except BadInput:
        files = []
    if not files:
        from pydantic import ValidationError

        try:
            return Recipe(
                name=name,
                version=version,
                kind="fetch",
                source=Source(urls=[file.absolute().as_uri()], sha256=sha),
            )
        except ValidationError as e:
            err = e.errors()[0]
            field = "--name" if err["loc"] and err["loc"][0] == "name" else "--version"
            msg = err["msg"].removeprefix("Value error, ")
            raise BadInput(f"add-file {field}: {msg}.", field=field) from None
    recipe = index.load(files[0])
    src = recipe.source
    if recipe.kind != "fetch" or src is None:
        raise RecipeError(
            f"{recipe.spec} is a {recipe.kind} recipe; add-file needs a fetch recipe."
        )
    if (src.sha256 and src.sha256 != sha) or (not src.sha256 and src.md5 != md5):
        want = f"sha256 {src.sha256}" if src.sha256 else f"md5 {src.md5}"
        got = f"sha256 {sha}" if src.sha256 else f"md5 {md5}"
        raise BadInput(
            f"{file} does not match recipe {recipe.spec}: it has {got}, the recipe "
            f"declares {want}.",
            package=recipe.name,
        )
    return recipe


def _check_tree(root: Path) -> None:
    """Refuse what a safe unpack refuses (invariant 5): links that are absolute or lead
    out of ``root``, and anything but files, directories and links."""
    top = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = os.readlink(path)
                inside = os.path.realpath(path).startswith(top + os.sep)
                if os.path.isabs(target) or not inside:
                    raise BadInput(
                        f"{path} links to {target}, outside the directory being added.",
                        file=str(path),
                    )
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise BadInput(
                    f"{path} is not a file, a directory or a link; it cannot be added.",
                    file=str(path),
                )


def add_directory(
    session: Session, directory: Path, name: str, version: str, say: Callable[[str], None]
) -> PathInfo:
    """Realise NAME@VERSION, a network build, from the local copy ``directory``; ``say``
    hears whether the copy was needed."""
    from mlpkg.build.script import check_expected
    from mlpkg.resolver.plan import Plan
    from mlpkg.resolver.realise import runtime_references

    plan = session.plan([f"{name}@=={version}"])
    drv = plan.node(plan.roots[0]).drv
    build = drv.recipe.build
    if drv.kind != "build" or build is None or not build.network:
        raise BadInput(
            f"{drv.recipe.spec} is not a recipe that downloads its content (a build with "
            "network = true); add-file takes a directory only for those.",
            package=drv.name,
        )
    missing = [rel for rel in build.expect if not os.path.lexists(directory / rel)]
    if missing:
        raise BadInput(
            f"{directory} is not a copy of {drv.recipe.spec}: it has no {missing[0]}, which "
            "the recipe expects.",
            file=str(directory),
            package=drv.name,
        )
    _check_tree(directory)
    references = runtime_references(drv)
    if any(plan.node(p).action != "valid" for p in references):  # must be valid first
        needed = [n for n in plan.nodes if n.path != drv.path]
        session.act(Plan(needed, [n.path for n in needed]))
    store = session.store
    if store.info(drv.path) is not None:
        say(f"{drv.recipe.spec} is valid already; {directory} was not needed")
    else:
        say(f"adding {directory} as {drv.recipe.spec}")

    def copy(tmp: Path) -> dict[str, object]:
        check_expected(drv, directory)
        shutil.copytree(directory, tmp, symlinks=True)
        return {"imported": directory.absolute().as_uri()}

    return store.info(drv.path) or store.realise(
        drv.path,
        copy,
        kind="build",
        recipe_hash=drv.recipe_hash,
        deriver=drv.to_json(),
        references=references,
    )
