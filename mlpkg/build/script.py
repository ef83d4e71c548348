"""Recipe kind ``build``: a bash script run in the build sandbox (:mod:`mlpkg.store.sandbox`).

The script sees its inputs as environment variables and their closure read-only, writes
``$out``, and must leave the paths its recipe ``expect``s. A build with ``network = true``
reaches the network; offline it fails naming the way in without one (``add-file DIR``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from mlpkg.build import BuildContext, Builder, add_file_hint, register
from mlpkg.errors import BuildError
from mlpkg.store import sandbox
from mlpkg.store.fs import remove_tree

if TYPE_CHECKING:
    from mlpkg.resolver.derivation import Derivation
    from mlpkg.store.store import Maker


class Script(Builder):
    kind = "build"
    action = "build"
    relocatable = True

    def maker(self, drv: Derivation, ctx: BuildContext) -> Maker:
        return lambda tmp: _build(drv, tmp, ctx)

    def offline_hint(self, drv: Derivation) -> str:
        return add_file_hint(drv, "DIR")


def _build(drv: Derivation, tmp: Path, ctx: BuildContext) -> None:
    store, reporter = ctx.store, ctx.reporter
    build = drv.recipe.build
    assert build is not None
    kind = sandbox.detect()
    reporter.note(f"building {drv.name}-{drv.version} in sandbox: {sandbox.describe(kind)}")
    build_dir = store.build_dir(drv.path)
    inputs = {k: store.real_path(p) for k, p in drv.inputs.items()}
    # The inputs' own references are visible too (read-only), as in Nix: an input is usable
    # only with its closure. Only the direct inputs get variables and PATH entries.
    members = sorted(store.closure(drv.inputs.values()))
    closure = [store.real_path(p) for p in members]
    extra = [p for p in closure if p not in inputs.values()]
    # Host locations are bound only for paths of kind external: their links were made by
    # mlpkg (mlpkg.build.external) from detected tool locations. Any other path's links
    # were made by a build script, and must not choose what a later build sees of the host.
    externals = [
        store.real_path(p)
        for p in members
        if (info := store.info(p)) is not None and info.kind == "external"
    ]
    env = {"name": drv.name, "version": drv.version}
    sites = [str(d) for p in closure for d in sorted((p / "lib").glob("python*/site-packages"))]
    if sites:  # Python packages of the closure, importable with `python3 -S`
        env["PYTHONPATH"] = ":".join(sites)
    request = sandbox.BuildRequest(
        script=build.script,
        inputs=inputs,
        build_dir=build_dir,
        log=store.log_file(drv.path),
        extra_env=env,
        network=build.network,
        echo=reporter.echo,
        ro_paths=[*extra, *external_targets(externals)],
    )
    try:
        out = sandbox.run(request, kind)
        check_expected(drv, out)
        try:
            os.replace(out, tmp)
        except OSError:  # another file system: copy
            shutil.copytree(out, tmp, symlinks=True) if out.is_dir() else shutil.copy2(out, tmp)
    except BuildError as e:
        e.package = drv.name
        e.message = f"Building {drv.name}-{drv.version} failed: {e.message}"
        if build.network:
            e.message += " This recipe downloads its content (network = true)."
            e.hint = e.hint or add_file_hint(drv, "DIR")
        raise
    finally:
        remove_tree(build_dir)


def check_expected(drv: Derivation, out: Path) -> None:
    """Refuse an output that lacks a path the recipe's ``[build] expect`` names."""
    build = drv.recipe.build
    for rel in build.expect if build is not None else []:
        if not os.path.lexists(out / rel):
            raise BuildError(
                f"{drv.name}-{drv.version} has no {rel}, which its recipe expects.",
                package=drv.name,
            )


def external_targets(inputs: Iterable[Path]) -> list[Path]:
    """Host installations that the links of ``inputs`` (paths of kind ``external`` only)
    point into (an interpreter's prefix, say), outside the system directories the sandbox
    shows anyway. ``/`` and top-level directories (``/opt``) are never bound: a prefix must
    have at least two components."""
    targets: set[Path] = set()
    for root in inputs:
        bindir = root / "bin"
        if not bindir.is_dir():
            continue
        for link in bindir.iterdir():
            if link.is_symlink() and os.path.isabs(os.readlink(link)):
                real = Path(os.path.realpath(link))
                if not str(real).startswith(("/usr/", "/bin/", "/lib", "/sbin/", "/etc/")):
                    prefix = real.parent.parent
                    if len(prefix.parts) > 2:  # ("/", "opt", "py") at least
                        targets.add(prefix)
    return sorted(targets)


register(Script())
