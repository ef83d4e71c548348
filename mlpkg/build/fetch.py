"""Recipe kind ``fetch``: a fixed-output download, kept as the file or unpacked.

The source comes from the download cache when it holds the declared sha256, else from the
recipe's URLs (resumably, then it is cached). :func:`download` serves the ``wheel`` kind
too; :func:`unpack_local` makes such a path from a local file (``mlpkg add-file``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from mlpkg.build import BuildContext, Builder, add_file_hint, register
from mlpkg.errors import FetchError

if TYPE_CHECKING:
    from mlpkg.recipes.model import Recipe
    from mlpkg.resolver.derivation import Derivation
    from mlpkg.store.store import Maker


class Fetch(Builder):
    kind = "fetch"
    action = "fetch"
    relocatable = False  # fetched content is what its declared hash says

    def maker(self, drv: Derivation, ctx: BuildContext) -> Maker:
        return lambda tmp: _fetch(drv, tmp, ctx)

    def offline_hint(self, drv: Derivation) -> str:
        return add_file_hint(drv, "FILE")


def download(drv: Derivation, dest: Path, ctx: BuildContext) -> dict[str, object]:
    """Put the source of ``drv`` at ``dest``: from the download cache when it holds the
    declared sha256, else from the recipe's URLs (then it is cached)."""
    from mlpkg.store.fetch import Expected, fetch

    store, reporter, node = ctx.store, ctx.reporter, ctx.node
    src = drv.recipe.source
    assert src is not None
    sha256 = src.sha256 or drv.source_sha256
    if sha256 and store.downloads.get(sha256, dest):
        reporter.note(f"{drv.name}-{drv.version}: from the download cache")
        return {"sha256": sha256, "url": "cache"}
    try:
        fetched = fetch(
            src.urls,
            dest,
            Expected(sha256=sha256, md5=src.md5),
            partial=store.partial_file(node.path, ".part"),
            label=drv.recipe.spec,
            on_progress=lambda done, total: reporter.progress(node, done, total),
        )
    except FetchError as e:
        if e.message.startswith("Could not download"):  # unreachable, not corrupt
            name = src.urls[0].rstrip("/").rsplit("/", 1)[-1] or "FILE"
            offline = add_file_hint(drv, "FILE").replace("FILE", name, 1)
            e.hint = f"{e.hint} {offline}." if e.hint else offline
        raise
    store.downloads.put(dest, fetched.sha256)
    return {"sha256": fetched.sha256, "md5": fetched.md5, "url": fetched.url}


def _fetch(drv: Derivation, tmp: Path, ctx: BuildContext) -> dict[str, object]:
    from mlpkg.store.unpack import unpack

    src = drv.recipe.source
    assert src is not None
    if not src.unpack:
        return download(drv, tmp, ctx)
    dest = ctx.store.partial_file(ctx.node.path, ".download")
    try:
        facts = download(drv, dest, ctx)
        unpack(
            dest,
            tmp,
            strip_components=src.strip_components,
            label=drv.recipe.spec,
            max_size=src.max_unpacked_size,
            max_ratio=src.max_unpack_ratio,
            max_files=src.max_unpacked_files,
        )
    finally:
        dest.unlink(missing_ok=True)
    return facts


def unpack_local(
    recipe: Recipe, file: Path, tmp: Path, sha256: str, label: str | None = None
) -> dict[str, object]:
    """Make a fixed-output path from a local file (``add-file``) whose sha256 is known;
    errors name ``label`` (the user's file, where ``file`` is a staged copy of it)."""
    from mlpkg.store.unpack import unpack

    src = recipe.source
    if src is not None and src.unpack:
        unpack(
            file,
            tmp,
            strip_components=src.strip_components,
            label=label or str(file),
            max_size=src.max_unpacked_size,
            max_ratio=src.max_unpack_ratio,
            max_files=src.max_unpacked_files,
        )
    else:
        shutil.copyfile(file, tmp)
    return {"sha256": sha256, "url": file.absolute().as_uri()}


register(Fetch())
