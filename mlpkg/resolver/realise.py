"""Acting on a plan: fetch, link and build the paths it lists, in dependency order.

Each node becomes a *maker* (a function that writes the path's content at a temporary
location), given by the builder of its kind (:mod:`mlpkg.build`);
:meth:`mlpkg.store.Store.realise` does the rest (lock, hash, read-only, rename, register).
Makers are built from a :class:`Derivation` alone, so ``verify --repair`` can remake a
path from the record in the database, without the recipe collection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO

from mlpkg.build import BuildContext, builder_for
from mlpkg.errors import BuildError, FetchError, MlpkgError
from mlpkg.resolver.derivation import Derivation
from mlpkg.resolver.plan import Plan, PlanNode
from mlpkg.store import sandbox
from mlpkg.store.path import StorePath
from mlpkg.store.store import Maker, PathInfo, Store


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
    when they are made and when ``verify --repair`` remakes them. Its builder says
    (:mod:`mlpkg.build`)."""
    return builder_for(kind).relocatable


def runtime_references(drv: Derivation) -> list[StorePath]:
    """The inputs a path keeps as references: all, or its build's ``runtime_inputs``."""
    build = drv.recipe.build
    keep = build.runtime_inputs if build is not None else None
    return [p for k, p in sorted(drv.inputs.items()) if keep is None or k in keep]


def maker(drv: Derivation, store: Store, reporter: Reporter, node: PlanNode) -> Maker:
    """The function that writes ``drv``'s content at a temporary location: its kind's
    builder's (:func:`mlpkg.build.builder_for`)."""
    return builder_for(drv.kind, drv.name).maker(drv, BuildContext(store, reporter, node))


__all__ = [
    "Reporter",
    "is_relocatable",
    "maker",
    "realise_derivation",
    "realise_plan",
    "runtime_references",
]
