"""The resolver (mlpkg.resolver.resolve) against a small in-memory provider."""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from packaging.version import Version

from mlpkg.errors import RecipeError, ResolutionError, UnknownPackage
from mlpkg.resolver.resolve import Candidate, Resolution, resolve
from mlpkg.resolver.spec import Spec, canonicalize, parse_spec


@dataclass(frozen=True)
class Cand:
    name: str
    version: Version
    inputs: Mapping[str, Spec] = field(default_factory=dict)


class Index:
    """An in-memory provider: ``add("a", "1.0", b="b@>=2")``; counts provider calls."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[Candidate]] = {}
        self.aliases: dict[str, str] = {}
        self.calls: Counter[tuple[str, str]] = Counter()

    def add(self, name: str, version: str, **inputs: str) -> Index:
        specs = {key: parse_spec(text) for key, text in inputs.items()}
        cand = Cand(canonicalize(name), Version(version), specs)
        self.by_name.setdefault(cand.name, []).append(cand)
        return self

    def canonical_name(self, name: str) -> str:
        self.calls["canonical_name", name] += 1
        canonical = canonicalize(name)
        canonical = self.aliases.get(canonical, canonical)
        if canonical not in self.by_name:
            raise UnknownPackage(f"Unknown package {name!r}.", package=name)
        return canonical

    def candidates(self, name: str) -> Sequence[Candidate]:
        self.calls["candidates", name] += 1
        return sorted(self.by_name[name], key=lambda c: c.version, reverse=True)


def run(index: Index, *roots: str) -> Resolution:
    return resolve(index, [parse_spec(root) for root in roots])


def versions(resolution: Resolution) -> dict[str, str]:
    return {name: str(pin.version) for name, pin in resolution.pins.items()}


def test_newest_wins() -> None:
    index = Index().add("a", "1.0").add("a", "2.0").add("a", "1.5")
    resolution = run(index, "a")
    assert versions(resolution) == {"a": "2.0"}
    assert resolution.roots == ["a"]
    assert resolution.edges == {"a": {}}


def test_root_constraint_picks_newest_matching() -> None:
    index = Index().add("a", "1.0").add("a", "1.4.2").add("a", "2.0")
    assert versions(run(index, "a@1")) == {"a": "1.4.2"}
    assert versions(run(index, "a@==1.0")) == {"a": "1.0"}


def test_constraints_from_two_requesters_intersect() -> None:
    index = Index().add("app", "1.0", x="x", y="y")
    index.add("x", "1.0", lib="lib@>=1.2").add("y", "1.0", lib="lib@<1.5")
    for version in ["1.0", "1.2", "1.4", "1.5", "2.0"]:
        index.add("lib", version)
    resolution = run(index, "app")
    assert versions(resolution) == {"app": "1.0", "x": "1.0", "y": "1.0", "lib": "1.4"}
    assert resolution.edges == {
        "app": {"x": "x", "y": "y"},
        "x": {"lib": "lib"},
        "y": {"lib": "lib"},
        "lib": {},
    }


def test_backtracks_to_an_older_version() -> None:
    # The newest a needs b@2, which conflicts with c's b@1; a@1.0 needs b@1 and works.
    index = Index().add("root", "1.0", a="a", c="c")
    index.add("a", "2.0", b="b@2").add("a", "1.0", b="b@1")
    index.add("c", "1.0", b="b@1")
    index.add("b", "2.0").add("b", "1.0")
    resolution = run(index, "root")
    assert versions(resolution) == {"root": "1.0", "a": "1.0", "c": "1.0", "b": "1.0"}


@pytest.mark.timeout(20)
def test_backtracks_past_unrelated_decisions() -> None:
    # The newest a needs z@2, which every d forbids; the 30 unrelated packages decided in
    # between must be skipped, not enumerated (2**30 combinations) by chronological backtracking.
    index = Index()
    index.add("root", "1.0", a="a", **{f"u{i}": f"u{i}" for i in range(30)}, d="d")
    for i in range(30):
        index.add(f"u{i}", "2.0").add(f"u{i}", "1.0")
    index.add("a", "2.0", z="z@2").add("a", "1.0", z="z@1")
    index.add("d", "3.0", z="z@1").add("d", "2.0", z="z@1")
    index.add("z", "2.0").add("z", "1.0")
    resolution = run(index, "root")
    assert versions(resolution)["a"] == "1.0"
    assert versions(resolution)["d"] == "3.0"
    assert all(versions(resolution)[f"u{i}"] == "2.0" for i in range(30))


def test_conflict_names_both_requesters() -> None:
    index = Index().add("app", "1.0", onnxruntime="onnxruntime", pycocotools="pycocotools")
    index.add("onnxruntime", "1.17.3", numpy="numpy@<2")
    index.add("pycocotools", "2.0.8", numpy="numpy@>=2")
    index.add("numpy", "2.1.0").add("numpy", "1.26.4")
    with pytest.raises(ResolutionError) as info:
        run(index, "app")
    assert info.value.message == (
        "No version of numpy satisfies every requirement: "
        "onnxruntime@1.17.3 (input numpy) needs numpy@<2, "
        "pycocotools@2.0.8 (input numpy) needs numpy@>=2; available: 2.1.0, 1.26.4."
    )
    assert info.value.package == "numpy"


def test_conflict_after_pin_names_both_requesters() -> None:
    # b is pinned (for a) before c asks for an incompatible b.
    index = Index().add("a", "1.0", b="b@2", c="c")
    index.add("c", "1.0", b="b@1")
    index.add("b", "2.0").add("b", "1.0")
    with pytest.raises(ResolutionError) as info:
        run(index, "a")
    message = info.value.message
    assert message.startswith("No version of b satisfies every requirement: ")
    assert "a@1.0 (input b) needs b@2" in message
    assert "c@1.0 (input b) needs b@1" in message
    assert message.endswith("available: 2.0, 1.0.")


def test_conflict_between_root_specs() -> None:
    index = Index().add("x", "1.0").add("x", "2.0")
    with pytest.raises(ResolutionError) as info:
        run(index, "x@1", "x@2")
    assert "the root spec x@1" in info.value.message
    assert "the root spec x@2" in info.value.message


def test_deep_conflict_after_exhausting_versions() -> None:
    index = Index().add("top", "1.0", mid="mid", other="other@1")
    for version in ["3.0", "2.0", "1.0"]:
        index.add("mid", version, leaf="leaf@2")
    index.add("other", "1.0", leaf="leaf@1")
    index.add("leaf", "1.0").add("leaf", "2.0")
    with pytest.raises(ResolutionError) as info:
        run(index, "top")
    assert "mid@3.0 (input leaf) needs leaf@2" in info.value.message
    assert "other@1.0 (input leaf) needs leaf@1" in info.value.message


def test_root_version_matching_nothing() -> None:
    index = Index().add("x", "1.0").add("x", "2.0")
    with pytest.raises(UnknownPackage) as info:
        run(index, "x@9.9")
    assert info.value.message == "No version of x matches @9.9; available: 2.0, 1.0."
    assert not isinstance(info.value, ResolutionError)


def test_unknown_package_propagates() -> None:
    index = Index().add("a", "1.0", missing="nope")
    with pytest.raises(UnknownPackage, match="nope"):
        run(index, "a")
    with pytest.raises(UnknownPackage, match="ghost"):
        run(index, "ghost")


def test_aliases_resolve_to_canonical_names() -> None:
    index = Index().add("onnxruntime", "1.17.3", np="NumPy@<2").add("numpy", "1.26.4")
    index.add("numpy", "2.1.0")
    index.aliases["ort"] = "onnxruntime"
    resolution = run(index, "ORT")
    assert resolution.roots == ["onnxruntime"]
    assert versions(resolution) == {"onnxruntime": "1.17.3", "numpy": "1.26.4"}
    assert resolution.edges["onnxruntime"] == {"np": "numpy"}


def test_topological_puts_inputs_first() -> None:
    index = Index().add("app", "1.0", lib="lib", util="util").add("lib", "1.0", util="util")
    index.add("util", "1.0")
    order = run(index, "app").topological()
    assert order == ["util", "lib", "app"]


def test_cycle_is_detected_and_named() -> None:
    index = Index().add("a", "1.0", b="b").add("b", "2.0", c="c").add("c", "3.0", b="b")
    resolution = run(index, "a")
    assert set(resolution.pins) == {"a", "b", "c"}
    with pytest.raises(ResolutionError) as info:
        resolution.topological()
    assert info.value.message == "Inputs form a cycle: b@2.0 -> c@3.0 -> b@2.0."


def test_self_cycle() -> None:
    resolution = run(Index().add("a", "1.0", me="a"), "a")
    with pytest.raises(ResolutionError, match=r"Inputs form a cycle: a@1\.0 -> a@1\.0\."):
        resolution.topological()


def test_deep_chain_needs_no_recursion() -> None:
    depth = 2000
    index = Index()
    for i in range(depth):
        inputs = {"next": f"n{i + 1}@1"} if i + 1 < depth else {}
        index.add(f"n{i}", "1.0", **inputs).add(f"n{i}", "2.0", **inputs)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        resolution = run(index, "n0")
        order = resolution.topological()
    finally:
        sys.setrecursionlimit(limit)
    assert len(resolution.pins) == depth
    assert versions(resolution)["n0"] == "2.0"
    assert versions(resolution)["n1"] == "1.0"
    assert order[0] == f"n{depth - 1}" and order[-1] == "n0"


def test_provider_is_called_once_per_name() -> None:
    index = Index().add("a", "2.0", b="b@1", c="c").add("a", "1.0", b="b@1", c="c")
    index.add("c", "1.0", b="b@2").add("b", "2.0").add("b", "1.0")
    index.add("d", "1.0", b="b", a="a")
    with pytest.raises(ResolutionError):
        run(index, "d")
    assert max(index.calls.values()) == 1


def test_conflict_with_a_root_spec_names_it() -> None:
    index = Index().add("pycocotools", "2.0.8", numpy="numpy@>=2")
    index.add("numpy", "2.1.0").add("numpy", "1.26.4")
    with pytest.raises(ResolutionError) as info:
        run(index, "numpy@<2", "pycocotools")
    assert info.value.message == (
        "No version of numpy satisfies every requirement: the root spec numpy@<2, "
        "pycocotools@2.0.8 (input numpy) needs numpy@>=2; available: 2.1.0, 1.26.4."
    )


def test_pin_conflict_inside_a_cycle_backtracks() -> None:
    # a and b need each other; a@2.0 is pinned first, then b asks for a@1.
    index = Index().add("a", "2.0", b="b").add("a", "1.0", b="b").add("b", "1.0", a="a@1")
    resolution = run(index, "a")
    assert versions(resolution) == {"a": "1.0", "b": "1.0"}
    with pytest.raises(ResolutionError, match="Inputs form a cycle"):
        resolution.topological()


class CountingCand:
    """A candidate whose inputs are counted when read (like a lazily loaded recipe)."""

    def __init__(self, name: str, version: str, inputs: dict[str, str], reads: Counter[str]):
        self.name = name
        self.version = Version(version)
        self._inputs = inputs
        self._reads = reads

    @property
    def inputs(self) -> Mapping[str, Spec]:
        self._reads[f"{self.name}@{self.version}"] += 1
        if "broken" in self._inputs:
            raise RecipeError(f"{self.name}@{self.version} is broken.")
        return {key: parse_spec(text) for key, text in self._inputs.items()}


def test_reads_only_the_inputs_it_needs() -> None:
    reads: Counter[str] = Counter()
    index = Index()
    index.by_name["loadgen"] = [
        CountingCand("loadgen", "5.0", {"broken": "x"}, reads),
        CountingCand("loadgen", "4.0.1", {"py": "python"}, reads),
        CountingCand("loadgen", "4.0", {"py": "python"}, reads),
    ]
    index.add("python", "3.11")
    resolution = run(index, "loadgen@4.0")
    assert versions(resolution) == {"loadgen": "4.0.1", "python": "3.11"}
    assert reads == {"loadgen@4.0.1": 1}


def test_broken_newest_candidate_is_reported_when_chosen() -> None:
    reads: Counter[str] = Counter()
    index = Index()
    index.by_name["tool"] = [CountingCand("tool", "1.0", {"broken": "x"}, reads)]
    with pytest.raises(RecipeError, match="broken"):
        run(index, "tool")


def test_unknown_input_of_an_unchosen_candidate_is_ignored() -> None:
    index = Index().add("a", "2.0", x="x@1").add("a", "1.0", gone="retired-package")
    index.add("x", "1.0")
    assert versions(run(index, "a")) == {"a": "2.0", "x": "1.0"}
    with pytest.raises(UnknownPackage, match="retired-package"):
        run(index, "a@1")


def random_index(count: int, edges: int, seed: int) -> Index:
    """A random DAG of ``count`` candidates (two versions per name) and ``edges`` inputs.

    Inputs point only to higher-numbered names; constraints all admit 1.0, and about a
    third of them exclude the newest version 2.0, so the resolver has choices to make.
    """
    rng = random.Random(seed)
    names = count // 2
    targets: list[set[int]] = [set() for _ in range(names)]
    made = 0
    while made * 2 < edges:
        low, high = sorted(rng.sample(range(names), 2))
        if high not in targets[low]:
            targets[low].add(high)
            made += 1
    index = Index()
    for i in range(names):
        for version in ("1.0", "2.0"):
            inputs = {f"in{j}": f"p{j}@{rng.choice(['1', '1:2', '>=1'])}" for j in targets[i]}
            index.add(f"p{i}", version, **inputs)
    return index


@pytest.mark.timeout(60)
def test_random_dag_resolves_quickly() -> None:
    index = random_index(1000, 5000, seed=7)
    roots = [parse_spec(f"p{i}") for i in range(0, 500, 25)]
    start = time.perf_counter()
    resolution = resolve(index, roots)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    order = resolution.topological()
    assert sorted(order) == sorted(resolution.pins)
    position = {name: i for i, name in enumerate(order)}
    for name, inputs in resolution.edges.items():
        for dep in inputs.values():
            assert position[dep] < position[name]
    for pin in resolution.pins.values():
        for spec in pin.inputs.values():
            assert spec.matches(resolution.pins[canonicalize(spec.name)].version)
    assert sum(len(e) for e in resolution.edges.values()) > 1000
    assert any(pin.version == Version("1.0") for pin in resolution.pins.values())
    assert any(pin.version == Version("2.0") for pin in resolution.pins.values())
    assert max(index.calls.values()) == 1


def test_the_conflict_reported_is_the_one_that_ended_the_search() -> None:
    """helper 2.0's conflict with x (on z) is met first and got past with helper 1.0; the
    resolution fails on x against the pin on y, which is what the error names, with the
    requirement that holds y to one version."""
    index = Index().add("app", "1.0", x="x", helper="helper", y="y@2")
    index.add("x", "1.0", helper="helper", z="z@1")
    index.add("helper", "2.0", z="z@2").add("helper", "1.0", z="z")
    index.add("y", "2.0", z="z@2").add("y", "1.0", z="z@1")
    index.add("z", "2.0").add("z", "1.0")
    with pytest.raises(ResolutionError) as info:
        run(index, "app")
    assert info.value.message == (
        "No version of z satisfies every requirement: x@1.0 (input z) needs z@1, "
        "y@2.0 (input z) needs z@2; available: 2.0, 1.0."
    )
    assert info.value.details == [
        "x@1.0 is the only version of x there is.",
        "y@2.0 is the only version of y that its requirements allow: app@1.0 (input y) needs y@2.",
    ]
