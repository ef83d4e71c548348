"""Plans: the resolved DAG with store paths, and what realising it will do (uv's "plan
first, then act").

``make_plan`` resolves specs, hashes every node bottom-up into a :class:`Derivation`, and
asks the store which paths are already valid. Nothing is fetched or built here; the plan
says, before acting, which paths are valid, which to fetch, which to link (externals) and
which to build.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from mlpkg.build import builder_for, builders
from mlpkg.errors import BadInput, ResolutionError, UnknownPackage
from mlpkg.resolver.derivation import Derivation, current_platform
from mlpkg.resolver.interpreters import explain_choice
from mlpkg.resolver.provider import RecipeBacked
from mlpkg.resolver.resolve import Provider, Resolution, resolve
from mlpkg.resolver.spec import Spec
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

INTERPRETER_HINT = (
    "An interpreter is a recipe like any other: CPython versions are built from source by "
    "recipes/python/<version>.toml (docs/interpreters.md says how to add one)."
)
PIN_HINT = (
    "--with NAME=SPEC replaces an input's spec everywhere (NAME: its key or its package), "
    "e.g. to allow other versions of a package held to one above."
)


def action_of(kind: str) -> str:
    """What a plan says it will do for a pending path of recipe kind ``kind`` (fetch,
    build, link, install): its builder's ``action``."""
    return builder_for(kind).action


@dataclass
class PlanNode:
    drv: Derivation
    path: StorePath
    action: str  # valid | fetch | build | link | install | substitute | skip
    via: str | None = None  # the cache a substituted path comes from

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.drv.name,
            "version": self.drv.version,
            "kind": self.drv.kind,
            "path": str(self.path),
            "action": self.action,
            "inputs": {k: str(v) for k, v in sorted(self.drv.inputs.items())},
        }
        if self.via is not None:
            doc["substituter"] = self.via
        build = self.drv.recipe.build
        if build is not None and build.network:  # a build that reaches the network
            doc["network"] = True
        return doc


@dataclass
class Plan:
    nodes: list[PlanNode]  # inputs before the nodes that use them
    roots: list[StorePath]  # one per requested spec, in order
    # Why the closure's interpreter is the one it is (resolver.interpreters.explain_choice)
    python: dict[str, Any] | None = None

    def node(self, path: StorePath) -> PlanNode:
        for n in self.nodes:
            if n.path == path:
                return n
        raise KeyError(str(path))

    def pending(self) -> list[PlanNode]:
        """The nodes to make: neither valid nor skipped (see realise.schedule)."""
        return [n for n in self.nodes if n.action not in ("valid", "skip")]

    def counts(self) -> dict[str, int]:
        counts = {"valid": 0, **dict.fromkeys((b.action for b in builders()), 0)}
        for n in self.nodes:
            counts[n.action] = counts.get(n.action, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        doc = {
            "roots": [str(r) for r in self.roots],
            "counts": self.counts(),
            "nodes": [n.to_json() for n in self.nodes],
        }
        if self.python is not None:
            doc["python"] = self.python
        return doc


def derive(
    provider: Provider, specs: Sequence[Spec], platform: str | None = None
) -> tuple[list[Derivation], list[StorePath], dict[str, Any] | None]:
    """Resolve ``specs`` and hash the closure bottom-up: the derivations in dependency
    order, the store paths of the roots, and why the closure's interpreter was chosen
    (None without one). Pure: no store, no building.

    One version of each package per *scope*: the closure of the roots is one scope; the
    inputs a build needs only while it is built (those outside its ``runtime_inputs``) form a
    scope of their own, recursively. So a dataset pre-processed with the machine's Python
    and NumPy keeps its path when the benchmark that reads it moves to another
    interpreter or NumPy, as a Nix build's tools are not its users' closure."""
    platform = platform or current_platform()
    _select_variants(provider, specs)
    # Resolution allocates many small objects that all live until the end: the cyclic
    # garbage collector would only rescan them over and over (measured in bench/resolve.py).
    collecting = gc.isenabled()
    gc.disable()
    try:
        scopes = _Scopes(provider, platform)
        roots, resolution = scopes.derive(specs)
        why = explain_choice(provider, resolution, specs)
    finally:
        if collecting:
            gc.enable()
    _check_overrides(provider, scopes.pins)
    return list(scopes.made.values()), [d.path for d in roots], why


class _Scopes:
    """Derivations of a closure, one resolution per scope (see :func:`derive`)."""

    def __init__(self, provider: Provider, platform: str) -> None:
        self.provider = provider
        self.platform = platform
        self.made: dict[StorePath, Derivation] = {}  # every scope's, inputs first
        self.pins: list[Any] = []  # every scope's chosen candidates
        self._memo: dict[tuple[str, ...], list[Derivation]] = {}

    def derive(self, specs: Sequence[Spec]) -> tuple[list[Derivation], Resolution]:
        """The derivations of ``specs`` (in order) resolved as one scope, and that
        resolution."""
        try:
            resolution = resolve(self.provider, specs)
        except UnknownPackage as e:
            if e.package == "python" and e.hint is None:
                e.hint = INTERPRETER_HINT
            raise
        except ResolutionError as e:
            if e.details and e.hint is None:  # a requester held to one version
                e.hint = PIN_HINT
            raise
        self.pins.extend(resolution.pins.values())
        here: dict[str, Derivation] = {}
        for name in resolution.topological():
            cand = cast(RecipeBacked, resolution.pins[name])
            edges = resolution.edges.get(name, {})
            input_drvs = {key: here[edges[key]] for key in cand.inputs}
            input_drvs.update(self._build_scope(cand.build_inputs))
            recipe = builder_for(cand.recipe.kind).specialise(cand.recipe, input_drvs)
            inputs = {key: d.path for key, d in input_drvs.items()}
            drv = here[name] = Derivation(recipe, inputs, self.platform, cand.detected)
            self.made.setdefault(drv.path, drv)
        roots = [here[self.provider.canonical_name(s.name)] for s in specs]
        return roots, resolution

    def _build_scope(self, specs: Mapping[str, Spec]) -> dict[str, Derivation]:
        """The derivations of a build's build-only inputs (key -> derivation)."""
        if not specs:
            return {}
        keys = sorted(specs)
        memo_key = tuple(f"{k}={specs[k]}" for k in keys)
        found = self._memo.get(memo_key)
        if found is None:
            found = self._memo[memo_key] = self.derive([specs[k] for k in keys])[0]
        return dict(zip(keys, found, strict=True))


def _check_overrides(provider: Provider, pins: Sequence[Any]) -> None:
    """Refuse a ``--with`` that no input of the closure matched, naming the inputs there are."""
    overrides = getattr(provider, "overrides", None)
    if overrides is None:
        return
    chosen = {f"{c.name}@{c.version}" for c in pins}
    for name, places in overrides.applied.items():
        if not any(p.split(" ")[0] in chosen for p in places):
            inputs = {k for c in pins for k in (*c.inputs, *getattr(c, "build_inputs", ()))}
            known = sorted(inputs | {c.name for c in pins})
            raise BadInput(
                f"--with {name}=... matches no input in the closure; its inputs and "
                f"packages are: {', '.join(known) or 'none'}.",
                field="--with",
            )


def _select_variants(provider: Provider, specs: Sequence[Spec]) -> None:
    """Tell the provider which variants the root specs ask for (one set per package)."""
    wanted: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        name = provider.canonical_name(spec.name)
        chosen = tuple(sorted(spec.variants))
        if name in wanted and wanted[name] != chosen:
            first, second = (
                " ".join(f"+{v}" for v in vs) or "none" for vs in (wanted[name], chosen)
            )
            raise ResolutionError(
                f"{name} is asked for with two variant sets: {first} and {second}.",
                package=name,
            )
        wanted[name] = chosen
    select = getattr(provider, "select_variants", None)
    if select is not None:
        select({k: v for k, v in wanted.items() if v})
    elif any(wanted.values()):
        raise BadInput("Variants cannot be selected here.")


def make_plan(
    provider: Provider, specs: Sequence[Spec], store: Store, platform: str | None = None
) -> Plan:
    """Resolve and hash ``specs`` (:func:`derive`), then ask the store what is valid.

    The paths are protected from the garbage collector first (a temporary root), as Nix
    does: what is valid now stays valid while this process uses the plan."""
    drvs, roots, why = derive(provider, specs, platform)
    store.protect(d.path for d in drvs)
    valid = store.valid_among(d.path for d in drvs)
    nodes = [PlanNode(d, d.path, "valid" if d.path in valid else action_of(d.kind)) for d in drvs]
    return Plan(nodes, roots, why)
