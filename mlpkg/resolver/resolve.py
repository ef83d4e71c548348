"""Choose one version of every package in the closure of some root specs.

Contract:

* The resolver sees only a :class:`Provider` (after resolvelib), calling ``canonical_name``
  and ``candidates`` at most once per argument, and reading a candidate's ``inputs`` once,
  only for candidates chosen or likely to be (the newest one a spec allows, read ahead to
  order the decisions). An unknown root, or an unknown input of a chosen candidate, raises
  the provider's :class:`~mlpkg.errors.UnknownPackage`; other provider errors met while
  reading ahead are raised only if that name or candidate is needed. Variants are ignored.
* One version per canonical name in the closure. Every requirement remembers who asked (a
  root spec, or ``name@version`` and the input key of a chosen candidate). Names are decided
  dependants first (reverse depth-first post-order of the graph of likely choices), so each
  usually sees every requirement on it, and gets the newest candidate matching them all
  (a candidate the provider marks ``preferred`` comes before the others).
* Each required name keeps the candidates every requirement on it allows (forward
  checking). When a new requirement leaves a name none, or contradicts a pin, the candidate
  that made it fails and the next older one is tried; when a decision runs out, the search
  backjumps to the latest decision involved in the conflict (conflict-directed backjumping:
  decisions that took no part are skipped, which loses no solution), tries its next older
  candidate and undoes everything after it, from a trail (no state is copied): a search
  without conflicts is near-linear.
* A root spec no candidate matches raises UnknownPackage ("No version of X matches @9.9;
  available: ..."). When no solution exists, :class:`~mlpkg.errors.ResolutionError` names
  the conflict that ended the search: each failed decision keeps the conflict that ruled
  out its first candidate, and a backjump hands it to the decision it moves, so the one
  reported involves only choices the search could not change (a conflict it got past, by
  taking another version of a requester, is never reported). The message names the
  package, a smallest set of requesters with what they asked for (those that had other
  versions left out first), and the versions available; ``details`` say, for each
  requester left with one version, which requirements allow no other.
* :meth:`Resolution.topological` orders the closure inputs first, or raises ResolutionError
  naming a cycle. Nothing recurses, so deep chains are fine.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from packaging.version import Version

from mlpkg.errors import MlpkgError, ResolutionError, UnknownPackage
from mlpkg.resolver.spec import Spec

__all__ = ["Candidate", "Provider", "Resolution", "preference", "resolve"]

_MAX_LISTED_VERSIONS = 12
_ROOT = -1  # decision level of requirements that come from the root specs


class Candidate(Protocol):
    """One version of a package, as the provider describes it. A candidate may also have
    ``preferred = True`` (read with getattr, default False): it is then tried before every
    candidate that is not, whatever their versions (the provider prefers a tool already on
    the machine to one it would build)."""

    @property
    def name(self) -> str: ...  # canonical name

    @property
    def version(self) -> Version: ...

    @property
    def inputs(self) -> Mapping[str, Spec]: ...  # input key -> spec


class Provider(Protocol):
    """Where the resolver learns about packages; it never touches files or the network."""

    def canonical_name(self, name: str) -> str: ...  # UnknownPackage when unknown

    def candidates(self, name: str) -> Sequence[Candidate]: ...  # canonical name; newest first


def preference(candidate: Candidate) -> tuple[bool, Version]:
    """The order candidates are tried in, reversed: preferred ones first, newest first."""
    return (getattr(candidate, "preferred", False), candidate.version)


def _postorder(
    starts: Iterable[str], graph: Mapping[str, Iterable[str]], *, strict: bool
) -> tuple[list[str], list[str]]:
    """Depth-first post-order (inputs before dependants) without recursion, and a cycle.

    With ``strict``, the first cycle met (first name repeated at the end) stops the walk;
    otherwise edges that close cycles are ignored and the cycle returned is empty.
    """
    done: set[str] = set()
    order: list[str] = []
    for start in starts:
        if start in done:
            continue
        path = [start]
        on_path = {start}
        stack = [iter(graph.get(start, ()))]
        while stack:
            for dep in stack[-1]:
                if dep in on_path:
                    if strict:
                        return order, [*path[path.index(dep) :], dep]
                    continue
                if dep not in done:
                    path.append(dep)
                    on_path.add(dep)
                    stack.append(iter(graph.get(dep, ())))
                    break
            else:
                stack.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                order.append(node)
    return order, []


@dataclass
class Resolution:
    """The chosen versions: roots (canonical, in order), pins and input edges."""

    roots: list[str]
    pins: dict[str, Candidate]
    edges: dict[str, dict[str, str]] = field(default_factory=dict)

    def topological(self) -> list[str]:
        """Every name, inputs before their dependants; :class:`ResolutionError` on a cycle."""
        graph = {name: inputs.values() for name, inputs in self.edges.items()}
        starts = [*self.roots, *self.pins]
        order, cycle = _postorder(starts, graph, strict=True)
        if cycle:
            labels = [f"{n}@{self.pins[n].version}" if n in self.pins else n for n in cycle]
            text = " -> ".join(labels)
            raise ResolutionError(f"Inputs form a cycle: {text}.", package=cycle[0])
        return order


class _Requirement(NamedTuple):
    """A spec on a canonical name, with who asked for it."""

    spec: Spec
    requester: str | None  # "name@version" of the candidate; None for a root spec
    key: str | None  # the requester's input key
    level: int  # decision level of the requester; _ROOT for a root spec

    def describe(self, name: str) -> str:
        wanted = name if self.spec.version is None else f"{name}@{self.spec.version}"
        if self.requester is None:
            return f"the root spec {self.spec}"
        return f"{self.requester} (input {self.key}) needs {wanted}"


class _Conflict(NamedTuple):
    """Requirements on ``name`` that no candidate meets (``genuine``), or none that is
    still possible with the pins made; ``requesters`` holds, for each requesting candidate
    (its name), the requirements on that name when the conflict was met."""

    name: str
    requirements: list[_Requirement]
    genuine: bool
    requesters: dict[str, list[_Requirement]]


@dataclass(eq=False, slots=True)
class _Decision:
    """A name pinned by choice, with what is needed to undo it and try the next candidate."""

    name: str
    matching: list[int]  # indexes of the candidates allowed when it was decided
    mark: int  # trail length before the pin
    conflicts: set[int] = field(default_factory=set)  # earlier levels its failures involve
    index: int = 0  # into matching: the candidate pinned now
    cause: _Conflict | None = None  # why its first failed candidate failed (see note)


def _versions_text(candidates: Sequence[Candidate]) -> str:
    if not candidates:
        return "none"
    shown = ", ".join(str(c.version) for c in candidates[:_MAX_LISTED_VERSIONS])
    more = len(candidates) - _MAX_LISTED_VERSIONS
    return shown if more <= 0 else f"{shown} and {more} more"


class _Resolver:
    """The search state: requirements added are logged on ``trail`` for undoing; required
    names wait in the ``ready`` heap, dependants first."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.names: dict[str, str] = {}  # any name -> canonical name ("" when unknown)
        self.unknown: dict[str, UnknownPackage] = {}  # raised once such an input is needed
        self.broken: dict[str, MlpkgError] = {}  # names whose candidates failed to load
        self.cands: dict[str, list[Candidate]] = {}  # canonical name -> newest first
        self.inputs: dict[str, list[Mapping[str, Spec] | None]] = {}  # parallel to cands
        self.versions: dict[str, list[Version]] = {}  # parallel to cands
        self.priority: dict[str, int] = {}  # decision order: dependants before inputs
        self.reqs: dict[str, list[_Requirement]] = {}
        self.allowed: dict[str, list[int]] = {}  # required name -> candidates still allowed
        self.pins: dict[str, Candidate] = {}
        self.level: dict[str, int] = {}  # pinned name -> decision level
        self.decisions: list[_Decision] = []
        self.trail: list[str] = []  # the name of each requirement added, in order
        self.saved: list[list[int] | None] = []  # parallel: what it narrowed allowed from
        self.ready: list[tuple[int, str]] = []  # heap; stale entries are skipped
        self.carried: _Conflict | None = None  # the cause of the last exhausted decision

    def lookup(self, name: str) -> str:
        found = self.names.get(name)
        if found is None:
            try:
                found = self.provider.canonical_name(name)
            except UnknownPackage as exc:
                self.unknown[name] = exc
                found = ""
            self.names[name] = found
        return found

    def load(self, name: str) -> list[Candidate]:
        """The candidates of a canonical name, newest first (one provider call per name)."""
        found = self.cands.get(name)
        if found is None:
            if name in self.broken:
                raise self.broken[name]
            try:
                listed = self.provider.candidates(name)
            except MlpkgError as exc:
                self.broken[name] = exc
                raise
            found = self.cands[name] = sorted(listed, key=preference, reverse=True)
            self.inputs[name] = [None] * len(found)
            self.versions[name] = [c.version for c in found]
        return found

    def inputs_of(self, name: str, index: int) -> Mapping[str, Spec]:
        """A candidate's inputs (asked of the candidate once)."""
        slots = self.inputs[name]
        found = slots[index]
        if found is None:
            found = slots[index] = self.cands[name][index].inputs
        return found

    def add_roots(self, roots: Sequence[Spec]) -> list[str]:
        """Check the root specs, rank the names they reach, and require the roots."""
        names: list[str] = []
        for spec in roots:
            name = self.lookup(spec.name)
            if not name:
                raise self.unknown[spec.name]
            available = self.load(name)
            if not any(spec.matches(c.version) for c in available):
                if spec.version is None:
                    raise UnknownPackage(f"No version of {name} is available.", package=name)
                raise UnknownPackage(
                    f"No version of {name} matches @{spec.version}; "
                    f"available: {_versions_text(available)}.",
                    package=name,
                )
            names.append(name)
        self.rank(list(zip(names, roots, strict=True)))
        for spec, name in zip(roots, names, strict=True):
            if not self.require(name, _Requirement(spec, None, None, _ROOT)):
                raise self.failure(self.conflict_of(name, self.reqs[name]))
        return list(dict.fromkeys(names))

    def likely_inputs(self, name: str, spec: Spec) -> list[tuple[str, Spec]]:
        """The inputs of the newest candidate of ``name`` that ``spec`` allows."""
        try:
            for index, candidate in enumerate(self.load(name)):
                if spec.matches(candidate.version):
                    inputs = self.inputs_of(name, index).values()
                    return [(dep, s) for s in inputs if (dep := self.lookup(s.name))]
        except MlpkgError:
            pass  # raised again if this name or candidate turns out to be needed
        return []

    def rank(self, starts: list[tuple[str, Spec]]) -> None:
        """Give the unranked names reachable from ``starts`` their decision order.

        The graph followed is that of the likely choices (each name's newest candidate that
        the spec reaching it allows), ordered dependants first, so that a name is usually
        decided only once everything requiring it is pinned, and pins meet no conflicts.
        """
        graph: dict[str, list[str]] = {}
        todo = starts[::-1]
        while todo:
            name, spec = todo.pop()
            if name in graph or name in self.priority:
                continue
            deps = [(d, s) for d, s in self.likely_inputs(name, spec) if d not in self.priority]
            graph[name] = list(dict.fromkeys(dep for dep, _ in reversed(deps)))
            todo.extend(reversed(deps))
        order, _ = _postorder(reversed([n for n, _ in starts]), graph, strict=False)
        for name in reversed(order):
            self.priority[name] = len(self.priority)

    def require(self, name: str, requirement: _Requirement) -> bool:
        """Add a requirement on an unpinned name; False when it leaves no candidate allowed."""
        existing = self.reqs.setdefault(name, [])
        spec = requirement.spec
        before = None
        if not existing:
            if name not in self.priority:
                self.rank([(name, spec)])
            heapq.heappush(self.ready, (self.priority[name], name))
            self.allowed[name] = list(range(len(self.load(name))))
        allowed = self.allowed[name]
        if spec.version is not None:
            versions = self.versions[name]
            kept = [i for i in allowed if spec.matches(versions[i])]
            if len(kept) != len(allowed):
                before, allowed = (allowed if existing else None), kept
                self.allowed[name] = kept
        existing.append(requirement)
        self.trail.append(name)
        self.saved.append(before)
        return bool(allowed)

    def culprits(self, name: str) -> set[int]:
        """The decision levels of the requirements that ruled out candidates of ``name``."""
        requirements = [r for r in self.reqs[name] if r.spec.version is not None]
        found: set[int] = set()
        for candidate in self.cands[name]:
            for requirement in requirements:  # lowest level first, so the best culprit
                if not requirement.spec.matches(candidate.version):
                    found.add(requirement.level)
                    break
        found.discard(_ROOT)
        return found

    def conflict_of(self, name: str, requirements: list[_Requirement]) -> _Conflict:
        """The conflict of ``requirements`` on ``name``, with what its requesters allowed."""
        genuine = not any(
            all(r.spec.matches(c.version) for r in requirements) for c in self.cands[name]
        )
        requesters: dict[str, list[_Requirement]] = {}
        for r in requirements:
            if r.requester is not None:
                who = r.requester.rpartition("@")[0]
                requesters[who] = list(self.reqs.get(who, ()))
        return _Conflict(name, list(requirements), genuine, requesters)

    def note(self, decision: _Decision, name: str, requirements: list[_Requirement]) -> None:
        """Keep the conflict met by ``decision``'s first failed candidate (one that no
        candidate of ``name`` can satisfy is preferred to one the other pins caused)."""
        if decision.cause is None or not decision.cause.genuine:
            found = self.conflict_of(name, requirements)
            if decision.cause is None or found.genuine:
                decision.cause = found

    def pin(self, decision: _Decision, level: int) -> bool:
        """Pin ``decision``'s current candidate and require its inputs; False on a conflict."""
        name = decision.name
        index = decision.matching[decision.index]
        candidate = self.cands[name][index]
        self.pins[name] = candidate
        self.level[name] = level
        requester = f"{name}@{candidate.version}"
        for key, spec in self.inputs_of(name, index).items():
            dep = self.lookup(spec.name)
            if not dep:
                exc = self.unknown[spec.name]
                raise UnknownPackage(
                    f"{requester} has input {key} = {spec}, but there is no package named "
                    f"'{spec.name}'.",
                    hint=exc.hint,
                    field=f"inputs.{key}",
                    package=spec.name,
                )
            requirement = _Requirement(spec, requester, key, level)
            pinned = self.pins.get(dep)
            if pinned is None:
                if not self.require(dep, requirement):
                    self.note(decision, dep, self.reqs[dep])
                    decision.conflicts |= self.culprits(dep) - {level}
                    return False
            elif spec.matches(pinned.version):
                self.reqs[dep].append(requirement)
                self.trail.append(dep)
                self.saved.append(None)
            else:
                self.note(decision, dep, [*self.reqs[dep], requirement])
                if self.level[dep] != level:
                    decision.conflicts.add(self.level[dep])
                return False
        return True

    def undo(self, level: int) -> _Decision:
        """Unpin the decision at ``level`` and every later one, and drop all they required."""
        for later in self.decisions[level:]:
            del self.pins[later.name]
            del self.level[later.name]
        for later in self.decisions[level + 1 :]:  # to be decided again, if still required
            heapq.heappush(self.ready, (self.priority[later.name], later.name))
        del self.decisions[level + 1 :]
        decision = self.decisions[level]
        while len(self.trail) > decision.mark:
            name = self.trail.pop()
            before = self.saved.pop()
            self.reqs[name].pop()
            if before is not None:
                self.allowed[name] = before
        return decision

    def advance(self, decision: _Decision) -> bool:
        """Pin the first workable candidate from ``decision.index`` on; False when none is."""
        level = len(self.decisions) - 1
        while decision.index < len(decision.matching):
            if self.pin(decision, level):
                return True
            self.undo(level)
            decision.index += 1
        return False

    def exhausted(self, decision: _Decision) -> set[int]:
        """The nogood of a decision with no candidates left: what ruled each one out, and a
        requester of the name."""
        self.decisions.pop()
        name = decision.name
        if decision.cause is not None:
            self.carried = decision.cause
        heapq.heappush(self.ready, (self.priority[name], name))
        nogood = decision.conflicts | self.culprits(name)
        first = self.reqs[name][0].level  # the lowest level that needs this name
        if first != _ROOT:
            nogood.add(first)
        return nogood

    def backjump(self, nogood: set[int]) -> None:
        """Go back to the latest decision in ``nogood`` and move it to a workable candidate."""
        while nogood:
            target = max(nogood)
            nogood.discard(target)
            decision = self.undo(target)
            decision.conflicts |= nogood
            carried = self.carried
            if carried is not None and (
                decision.cause is None or (carried.genuine and not decision.cause.genuine)
            ):
                decision.cause = carried  # the reason its current candidate fails
            decision.index += 1
            if self.advance(decision):
                return
            nogood = self.exhausted(decision)
        raise self.failure(self.carried)

    def only_version(self, who: str, requirements: list[_Requirement]) -> bool:
        """Whether ``requirements`` on ``who`` allow one of its candidates only."""
        allowed = (c for c in self.cands.get(who, ()) if all(
            r.spec.matches(c.version) for r in requirements))  # fmt: skip
        return next(allowed, None) is not None and next(allowed, None) is None

    def smallest(self, conflict: _Conflict) -> list[_Requirement]:
        """The requirements to name: for a genuine conflict, a subset that no candidate
        meets either, found by leaving out each in turn (requirements of requesters that
        had other versions first, root specs last); else every one with a version."""
        listed = [r for r in conflict.requirements if r.spec.version is not None]
        if not conflict.genuine or not listed:
            return listed or conflict.requirements

        def rank(r: _Requirement) -> int:
            if r.requester is None:
                return 2
            who = r.requester.rpartition("@")[0]
            return int(self.only_version(who, conflict.requesters.get(who, [])))

        kept = list(listed)
        versions = self.versions[conflict.name]
        for r in sorted(reversed(listed), key=rank):  # stable: the latest first per rank
            rest = [k for k in kept if k is not r]
            if not any(all(k.spec.matches(v) for k in rest) for v in versions):
                kept = rest
        return kept

    def failure(self, conflict: _Conflict | None) -> ResolutionError:
        if conflict is None:  # not reached: every failure starts at a conflict
            return ResolutionError("No set of versions satisfies every requirement.")
        name = conflict.name
        listed = self.smallest(conflict)
        who = ", ".join(r.describe(name) for r in listed)
        qualifier = "" if conflict.genuine else " together with the other choices"
        details: list[str] = []
        for r in listed:  # why a requester is the version it is, when it had no other
            if r.requester is None:
                continue
            package = r.requester.rpartition("@")[0]
            asked = [q for q in conflict.requesters.get(package, []) if q.spec.version]
            if len(self.cands.get(package, ())) == 1:
                details.append(f"{r.requester} is the only version of {package} there is.")
            elif asked and self.only_version(package, asked):
                because = ", ".join(q.describe(package) for q in asked)
                details.append(
                    f"{r.requester} is the only version of {package} that its "
                    f"requirements allow: {because}."
                )
        return ResolutionError(
            f"No version of {name} satisfies every requirement{qualifier}: {who}; "
            f"available: {_versions_text(self.cands[name])}.",
            details=list(dict.fromkeys(details)),
            package=name,
        )

    def run(self) -> None:
        """Decide required names, dependants first, until every one is pinned."""
        while self.ready:
            _, name = heapq.heappop(self.ready)
            if name in self.pins or not self.reqs.get(name):
                continue  # a stale entry
            decision = _Decision(name, self.allowed[name], len(self.trail))
            self.decisions.append(decision)
            if not self.advance(decision):
                self.backjump(self.exhausted(decision))

    def resolution(self, roots: list[str]) -> Resolution:
        pins: dict[str, Candidate] = {}
        edges: dict[str, dict[str, str]] = {}
        for decision in self.decisions:
            index = decision.matching[decision.index]
            pins[decision.name] = self.cands[decision.name][index]
            inputs = self.inputs_of(decision.name, index)
            edges[decision.name] = {key: self.lookup(s.name) for key, s in inputs.items()}
        return Resolution(roots=roots, pins=pins, edges=edges)


def resolve(provider: Provider, roots: Sequence[Spec]) -> Resolution:
    """Pin one version of every name in the closure of ``roots`` (see the module docstring)."""
    resolver = _Resolver(provider)
    root_names = resolver.add_roots(roots)
    resolver.run()
    return resolver.resolution(root_names)
