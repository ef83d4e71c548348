"""Plans: the resolved DAG with store paths, and what realising it will do (uv's "plan
first, then act").

``make_plan`` resolves specs, hashes every node bottom-up into a :class:`Derivation`, and
asks the store which paths are already valid. Nothing is fetched or built here; the plan
says, before acting, which paths are valid, which to fetch, which to link (externals) and
which to build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlpkg.resolver.derivation import Derivation, current_platform
from mlpkg.resolver.provider import IndexProvider, RecipeCandidate
from mlpkg.resolver.resolve import resolve
from mlpkg.resolver.spec import Spec
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

ACTIONS = {"fetch": "fetch", "build": "build", "external": "link"}


@dataclass
class PlanNode:
    drv: Derivation
    path: StorePath
    action: str  # valid | fetch | build | link

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.drv.name,
            "version": self.drv.version,
            "kind": self.drv.kind,
            "path": str(self.path),
            "action": self.action,
            "inputs": {k: str(v) for k, v in sorted(self.drv.inputs.items())},
        }


@dataclass
class Plan:
    nodes: list[PlanNode]  # inputs before the nodes that use them
    roots: list[StorePath]  # one per requested spec, in order

    def node(self, path: StorePath) -> PlanNode:
        for n in self.nodes:
            if n.path == path:
                return n
        raise KeyError(str(path))

    def pending(self) -> list[PlanNode]:
        return [n for n in self.nodes if n.action != "valid"]

    def counts(self) -> dict[str, int]:
        counts = {"valid": 0, "fetch": 0, "build": 0, "link": 0}
        for n in self.nodes:
            counts[n.action] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "roots": [str(r) for r in self.roots],
            "counts": self.counts(),
            "nodes": [n.to_json() for n in self.nodes],
        }


def make_plan(
    provider: IndexProvider, specs: Sequence[Spec], store: Store, platform: str | None = None
) -> Plan:
    """Resolve ``specs`` and hash the result into a plan; see the module docstring."""
    platform = platform or current_platform()
    resolution = resolve(provider, specs)
    paths: dict[str, StorePath] = {}
    drvs: list[Derivation] = []
    for name in resolution.topological():
        cand = resolution.pins[name]
        assert isinstance(cand, RecipeCandidate)
        edges = resolution.edges.get(name, {})
        inputs = {key: paths[edges[key]] for key in cand.inputs}
        drv = Derivation(cand.recipe, inputs, platform, cand.detected)
        paths[name] = drv.path
        drvs.append(drv)
    valid = store.db.valid_among(paths.values())
    nodes = [PlanNode(d, d.path, "valid" if d.path in valid else ACTIONS[d.kind]) for d in drvs]
    return Plan(nodes, [paths[name] for name in resolution.roots])
