"""Acting on a plan: fetch, link and build the paths it lists, in dependency order.

Each node becomes a *maker* (a function that writes the path's content at a temporary
location); :meth:`mlpkg.store.Store.realise` does the rest (lock, hash, read-only, rename,
register). Makers are built from a :class:`Derivation` alone, so ``verify --repair`` can
remake a path from the record in the database, without the recipe collection.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO

from mlpkg.errors import BuildError, FetchError, MlpkgError
from mlpkg.recipes.model import Recipe
from mlpkg.resolver.derivation import Derivation
from mlpkg.resolver.plan import Plan, PlanNode
from mlpkg.store import sandbox
from mlpkg.store.fetch import Expected, fetch
from mlpkg.store.fs import remove_tree
from mlpkg.store.path import StorePath
from mlpkg.store.store import Maker, PathInfo, Store
from mlpkg.store.unpack import unpack


class Reporter:
    """What realisation tells the user; the CLI subclasses it. Defaults say nothing."""

    echo: IO[str] | None = None  # where build logs are copied live (``-v``)

    def start(self, node: PlanNode, index: int, total: int) -> None: ...

    def progress(self, node: PlanNode, done: int, total: int | None) -> None: ...

    def finish(self, node: PlanNode, info: PathInfo) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


def realise_plan(
    plan: Plan,
    store: Store,
    reporter: Reporter | None = None,
    expected: Mapping[StorePath, str] | None = None,
    *,
    keep_going: bool = False,
) -> list[PathInfo]:
    """Make every path of ``plan`` valid; return the infos of its roots.

    ``expected`` maps paths to the archive hash they must have (from a lockfile): a path
    whose content differs is not registered, and CheckError names both hashes.

    With ``keep_going``, a path that cannot be fetched or built does not stop the paths
    that do not depend on it (as ``make -k``); afterwards one error names every failure,
    with the hint of each (so an offline user learns every missing file at once).
    """
    expected = expected or {}
    reporter = reporter or Reporter()
    store.protect(n.path for n in plan.nodes)
    # Validity is read again once the paths are protected: a collection that ran between
    # planning and now may have deleted some of them.
    valid = store.valid_among(n.path for n in plan.nodes)
    pending = [n for n in plan.nodes if n.path not in valid]
    failed: dict[StorePath, MlpkgError] = {}
    for i, node in enumerate(pending, 1):
        if failed and (set(node.drv.inputs.values()) & failed.keys()):
            failed[node.path] = _SKIPPED
            continue
        reporter.start(node, i, len(pending))
        try:
            info = realise_derivation(node.drv, store, reporter, node, expected.get(node.path))
        except (FetchError, BuildError) as e:
            if not keep_going:
                raise
            failed[node.path] = e
            continue
        reporter.finish(node, info)
    if failed:
        raise _combined([e for e in failed.values() if e is not _SKIPPED])
    infos = [store.info(root) for root in plan.roots]
    return [i for i in infos if i is not None]


_SKIPPED = MlpkgError("not attempted: an input failed")


def _combined(errors: list[MlpkgError]) -> MlpkgError:
    """One error for several failures: each message as a detail, each hint joined."""
    if len(errors) == 1:
        return errors[0]
    details = []
    for e in errors:
        details += [e.message, *(f"  {d}" for d in e.details)]
    hints = [e.hint for e in errors if e.hint]
    return BuildError(
        f"{len(errors)} paths could not be made; each is named below.",
        details=details,
        hint="\n      ".join(hints) or None,
    )


def realise_derivation(
    drv: Derivation,
    store: Store,
    reporter: Reporter,
    node: PlanNode | None = None,
    expected_hash: str | None = None,
) -> PathInfo:
    path = drv.path
    node = node or PlanNode(drv, path, drv.kind)
    return store.realise(
        path,
        maker(drv, store, reporter, node),
        kind=drv.kind,
        recipe_hash=drv.recipe_hash,
        deriver=drv.to_json(),
        references=runtime_references(drv),
        relocatable=is_relocatable(drv.kind),
        forbidden=[sandbox.FIXED_OUT],
        expected_hash=expected_hash,
    )


def is_relocatable(kind: str) -> bool:
    """Whether paths of recipe kind ``kind`` must be relocatable (invariant 3): checked
    when they are made and when ``verify --repair`` remakes them. Fetched content is
    what its declared hash says, and an external's links name the host's tools."""
    return kind in ("build", "wheel", "app")


def runtime_references(drv: Derivation) -> list[StorePath]:
    """The inputs a path keeps as references: all, or its build's ``runtime_inputs``."""
    build = drv.recipe.build
    keep = build.runtime_inputs if build is not None else None
    return [p for k, p in sorted(drv.inputs.items()) if keep is None or k in keep]


def maker(drv: Derivation, store: Store, reporter: Reporter, node: PlanNode) -> Maker:
    """The function that writes ``drv``'s content at a temporary location."""
    if drv.kind == "fetch":
        return lambda tmp: _fetch(drv, tmp, store, reporter, node)
    if drv.kind == "external":
        return lambda tmp: _link_external(drv, tmp)
    if drv.kind == "build":
        return lambda tmp: _build(drv, tmp, store, reporter)
    if drv.kind == "wheel":
        return lambda tmp: _wheel(drv, tmp, store, reporter, node)
    if drv.kind == "app":
        from mlpkg.resolver.app import make_app

        return lambda tmp: make_app(drv, tmp, store)
    raise MlpkgError(f"Recipe kind '{drv.kind}' of {drv.name} cannot be realised yet.")


def _download(
    drv: Derivation, dest: Path, store: Store, reporter: Reporter, node: PlanNode
) -> dict[str, object]:
    """Put the source of ``drv`` at ``dest``: from the download cache when it holds the
    declared sha256, else from the recipe's URLs (then it is cached)."""
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
            offline = offline_hint(drv).replace("FILE", name, 1)
            e.hint = f"{e.hint} {offline}." if e.hint else offline
        raise
    store.downloads.put(dest, fetched.sha256)
    return {"sha256": fetched.sha256, "md5": fetched.md5, "url": fetched.url}


def _fetch(
    drv: Derivation, tmp: Path, store: Store, reporter: Reporter, node: PlanNode
) -> dict[str, object]:
    src = drv.recipe.source
    assert src is not None
    if not src.unpack:
        return _download(drv, tmp, store, reporter, node)
    download = store.partial_file(node.path, ".download")
    try:
        facts = _download(drv, download, store, reporter, node)
        unpack(
            download,
            tmp,
            strip_components=src.strip_components,
            label=drv.recipe.spec,
            max_size=src.max_unpacked_size,
            max_ratio=src.max_unpack_ratio,
            max_files=src.max_unpacked_files,
        )
    finally:
        download.unlink(missing_ok=True)
    return facts


def _wheel(
    drv: Derivation, tmp: Path, store: Store, reporter: Reporter, node: PlanNode
) -> dict[str, object]:
    from mlpkg.resolver.wheel import check_compatible, install_wheel, python_of

    wheel = drv.recipe.wheel
    assert wheel is not None
    python = python_of(drv, store)
    check_compatible(drv, python)
    # The installer reads the distribution's name from the file name: keep it exact.
    download = store.partial_file(node.path) / wheel.filename
    download.parent.mkdir(exist_ok=True)
    try:
        facts = _download(drv, download, store, reporter, node)
        install_wheel(download, tmp, python)
    finally:
        remove_tree(download.parent)
    return facts


def unpack_local(
    recipe: Recipe, file: Path, tmp: Path, sha256: str, label: str | None = None
) -> dict[str, object]:
    """Make a fixed-output path from a local file (``add-file``) whose sha256 is known;
    errors name ``label`` (the user's file, where ``file`` is a staged copy of it)."""
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


def _link_external(drv: Derivation, tmp: Path) -> None:
    assert drv.detected is not None
    (tmp / "bin").mkdir(parents=True)
    for exe, location in sorted(drv.detected.locations.items()):
        if not os.path.exists(location):
            raise BuildError(f"{drv.name}: '{location}' no longer exists.", package=drv.name)
        os.symlink(location, tmp / "bin" / exe)


def _build(drv: Derivation, tmp: Path, store: Store, reporter: Reporter) -> None:
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
    # mlpkg (_link_external) from detected tool locations. Any other path's links were made
    # by a build script, and must not choose what a later build sees of the host.
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
        ro_paths=[*extra, *_external_targets(externals)],
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
            e.hint = e.hint or offline_hint(drv)
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


def offline_hint(drv: Derivation) -> str:
    """How to provide a path without the network: a local copy, added in its place."""
    what = "DIR" if drv.kind == "build" else "FILE"
    return (
        f"Without a network, get a copy elsewhere and add it: mlpkg add-file {what} "
        f"--name {drv.name} --version {drv.version}"
    )


def _external_targets(inputs: Iterable[Path]) -> list[Path]:
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


__all__ = [
    "Reporter",
    "is_relocatable",
    "maker",
    "realise_derivation",
    "realise_plan",
    "unpack_local",
]
