"""Builders: how a store path of each recipe kind is made. One module a kind.

A :class:`Builder` says, for its kind, what a plan calls making its paths (``action``),
whether their content must be relocatable (invariant 3, checked when a path is made and
when ``verify --repair`` remakes it), and gives the *maker* that writes a path's content
at a temporary location (:data:`mlpkg.store.store.Maker`), from the path's
:class:`~mlpkg.resolver.derivation.Derivation` and a :class:`BuildContext`. Realisation
(:mod:`mlpkg.resolver.realise`), rebuild checks and repair all look the builder up here
(:func:`builder_for`).

The built-in kinds are registered by importing their modules at the bottom of this file:
``fetch`` (download, unpack), ``build`` (:mod:`mlpkg.build.script`, a sandboxed script),
``external`` (links to a detected tool), ``wheel`` and ``app``. A new kind is one more
module here that registers its recipe rules (:func:`mlpkg.recipes.kinds.register`) and
its builder (:func:`register`), and one more name in that import. ``mlpkg.resolver``
imports this package, so the kinds are known wherever recipes are read.

This package is imported on the plan cache's fast path (a warm no-op ``mlpkg build``):
its modules import what makes paths (pydantic, httpx, zstandard, installer) only inside
their makers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlpkg.errors import MlpkgError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mlpkg.recipes.model import Recipe
    from mlpkg.resolver.derivation import Derivation
    from mlpkg.resolver.plan import PlanNode
    from mlpkg.resolver.realise import Reporter
    from mlpkg.store.store import Maker, Store


class BuildContext:
    """What a maker may use besides its derivation: the store (inputs, scratch locations,
    the download cache), the reporter (progress, notes, live logs) and the plan node.
    (A plain class: a dataclass costs a millisecond on the plan cache's fast path.)"""

    __slots__ = ("node", "reporter", "store")

    def __init__(self, store: Store, reporter: Reporter, node: PlanNode) -> None:
        self.store = store
        self.reporter = reporter
        self.node = node


class Builder:
    """How paths of recipe kind ``kind`` are made (subclass it, and :func:`register` an
    instance)."""

    kind: str = ""
    action: str = "build"  # what a plan says it will do: fetch, build, link, install
    relocatable: bool = True  # whether the content may not name where it lies

    def maker(self, drv: Derivation, ctx: BuildContext) -> Maker:
        """The function that writes ``drv``'s content at a temporary location."""
        raise NotImplementedError

    def offline_hint(self, drv: Derivation) -> str | None:
        """How to provide such a path without the network, if there is a way."""
        return None

    def specialise(self, recipe: Recipe, inputs: Mapping[str, Derivation]) -> Recipe:
        """The recipe as it applies once its inputs are resolved (``inputs``: input key
        -> derivation), e.g. the one wheel of a release that the closure's interpreter
        takes. The result is what is hashed and built. Pure; by default ``recipe``."""
        return recipe


_BUILDERS: dict[str, Builder] = {}


def register(builder: Builder) -> Builder:
    """Make paths of ``builder.kind`` with ``builder`` from now on."""
    _BUILDERS[builder.kind] = builder
    return builder


def builders() -> list[Builder]:
    """Every registered builder, in the order of registration."""
    return list(_BUILDERS.values())


def builder_for(kind: str, name: str = "") -> Builder:
    """The builder of ``kind`` (``name``, the package, is for the error)."""
    try:
        return _BUILDERS[kind]
    except KeyError:
        of = f" of {name}" if name else ""
        raise MlpkgError(f"Recipe kind '{kind}'{of} cannot be realised.") from None


def add_file_hint(drv: Derivation, what: str) -> str:
    """How to provide a path without the network: a local copy (``what``: FILE or DIR),
    added in its place."""
    return (
        f"Without a network, get a copy elsewhere and add it: mlpkg add-file {what} "
        f"--name {drv.name} --version {drv.version}"
    )


# The registration of the built-in kinds (each module registers its builder), in the
# order plans count their actions: fetch, build, link, install.
# isort: off
from mlpkg.build import fetch  # noqa: E402
from mlpkg.build import script  # noqa: E402
from mlpkg.build import external  # noqa: E402
from mlpkg.build import wheel  # noqa: E402
from mlpkg.build import app  # noqa: E402
# isort: on

__all__ = [
    "BuildContext",
    "Builder",
    "add_file_hint",
    "app",
    "builder_for",
    "builders",
    "external",
    "fetch",
    "register",
    "script",
    "wheel",
]
