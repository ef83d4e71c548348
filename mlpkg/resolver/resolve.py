"""Choose one version of every package in the closure of some root specs.

Contract:

* The resolver sees only a :class:`Provider` (after resolvelib): ``canonical_name`` resolves a
  name or alias (raising :class:`~mlpkg.errors.UnknownPackage` when unknown, which propagates
  unchanged), ``candidates`` lists a canonical name's candidates. Each is called at most once
  per distinct argument. Variants are not resolved here (``Spec.variants`` is ignored).
* One version per canonical name in the whole closure. Every requirement remembers who asked
  (a root spec, or ``name@version`` and the input key of a chosen candidate). Names are
  decided breadth-first from the roots; each gets the newest candidate matching every
  requirement on it so far, and its inputs become new requirements.
* When a name has no matching candidate, or a new requirement contradicts a pin, the search
  backtracks to the most recent decision involved in the conflict (conflict-directed
  backjumping: decisions that took no part are skipped, which never loses a solution), tries
  its next older candidate and undoes everything after it. State changes are undone from a
  trail rather than copied, so a search that needs no backtracking is near-linear.
* A root spec that no candidate matches raises :class:`~mlpkg.errors.UnknownPackage`
  ("No version of X matches @9.9; available: ..."). When no solution exists,
  :class:`~mlpkg.errors.ResolutionError` names the first package found impossible, every
  requester with what it asked for, and the versions available.
* :meth:`Resolution.topological` orders the closure inputs-first and raises
  :class:`~mlpkg.errors.ResolutionError` naming a cycle when there is one. Nothing recurses,
  so deep chains are fine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from packaging.version import Version

from mlpkg.errors import ResolutionError, UnknownPackage
from mlpkg.resolver.spec import Spec

__all__ = ["Candidate", "Provider", "Resolution", "resolve"]

_MAX_LISTED_VERSIONS = 12
_ROOT = -1  # decision level of requirements that come from the root specs


class Candidate(Protocol):
    """One version of a package, as the provider describes it."""

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


@dataclass
class Resolution:
    """The chosen versions: roots (canonical, in order), pins and input edges."""

    roots: list[str]
    pins: dict[str, Candidate]
    edges: dict[str, dict[str, str]] = field(default_factory=dict)

    def _label(self, name: str) -> str:
        pin = self.pins.get(name)
        return name if pin is None else f"{name}@{pin.version}"

    def _cycle_error(self, path: list[str], back_to: str) -> ResolutionError:
        cycle = [*path[path.index(back_to) :], back_to]
        text = " -> ".join(self._label(name) for name in cycle)
        return ResolutionError(f"Inputs form a cycle: {text}.", package=back_to)

    def topological(self) -> list[str]:
        """Every name, inputs before their dependants; :class:`ResolutionError` on a cycle."""
        done: set[str] = set()
        order: list[str] = []
        starts = [*self.roots, *(name for name in self.pins if name not in self.roots)]
        for start in starts:
            if start in done:
                continue
            path = [start]
            on_path = {start}
            stack = [iter(self.edges.get(start, {}).values())]
            while stack:
                for dep in stack[-1]:
                    if dep in on_path:
                        raise self._cycle_error(path, dep)
                    if dep not in done:
                        path.append(dep)
                        on_path.add(dep)
                        stack.append(iter(self.edges.get(dep, {}).values()))
                        break
                else:
                    stack.pop()
                    node = path.pop()
                    on_path.discard(node)
                    done.add(node)
                    order.append(node)
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


@dataclass(eq=False)
class _Decision:
    """A name pinned by choice, with what is needed to undo it and try the next candidate."""

    name: str
    matching: list[Candidate]  # candidates matching the requirements when it was decided
    head: int  # the name's position in the agenda
    mark: int  # trail length before the pin
    agenda_len: int  # agenda length before the pin
    conflicts: set[int]  # earlier decision levels that ruled out candidates of this name
    index: int = 0


@dataclass
class _Conflict:
    name: str
    requirements: list[_Requirement]
    genuine: bool  # no candidate satisfies all of them


def _versions_text(candidates: Sequence[Candidate]) -> str:
    if not candidates:
        return "none"
    shown = ", ".join(str(c.version) for c in candidates[:_MAX_LISTED_VERSIONS])
    more = len(candidates) - _MAX_LISTED_VERSIONS
    return shown if more <= 0 else f"{shown} and {more} more"


class _Resolver:
    """The search state. Every change is logged on ``trail`` so a backjump can undo it."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.names: dict[str, str] = {}  # any name -> canonical name
        self.cands: dict[str, list[Candidate]] = {}  # canonical name -> newest first
        self.reqs: dict[str, list[_Requirement]] = {}
        self.pins: dict[str, Candidate] = {}
        self.level: dict[str, int] = {}  # pinned name -> decision level
        self.decisions: list[_Decision] = []
        self.trail: list[str] = []  # names whose requirement list grew, in order
        self.agenda: list[str] = []  # names with requirements, in order of first requirement
        self.head = 0  # agenda[head] is the next name to decide
        self.conflict: _Conflict | None = None  # the first conflict found

    def canonical(self, name: str) -> str:
        found = self.names.get(name)
        if found is None:
            found = self.names[name] = self.provider.canonical_name(name)
        return found

    def candidates(self, name: str) -> list[Candidate]:
        found = self.cands.get(name)
        if found is None:
            listed = self.provider.candidates(name)
            found = self.cands[name] = sorted(listed, key=lambda c: c.version, reverse=True)
        return found

    def require(self, name: str, requirement: _Requirement) -> None:
        existing = self.reqs.setdefault(name, [])
        if not existing:
            self.agenda.append(name)
        existing.append(requirement)
        self.trail.append(name)

    def add_roots(self, roots: Sequence[Spec]) -> list[str]:
        names: list[str] = []
        for spec in roots:
            name = self.canonical(spec.name)
            available = self.candidates(name)
            if not any(spec.matches(c.version) for c in available):
                if spec.version is None:
                    raise UnknownPackage(f"No version of {name} is available.", package=name)
                raise UnknownPackage(
                    f"No version of {name} matches @{spec.version}; "
                    f"available: {_versions_text(available)}.",
                    package=name,
                )
            self.require(name, _Requirement(spec, None, None, _ROOT))
            if name not in names:
                names.append(name)
        return names

    def note_conflict(self, name: str, requirements: list[_Requirement]) -> None:
        """Remember the first conflict whose requirements no candidate can satisfy together."""
        if self.conflict is not None and self.conflict.genuine:
            return
        genuine = not any(
            all(r.spec.matches(c.version) for r in requirements) for c in self.candidates(name)
        )
        if self.conflict is None or genuine:
            self.conflict = _Conflict(name, list(requirements), genuine)

    def filter(self, name: str) -> tuple[list[Candidate], set[int]]:
        """Candidates matching every requirement, and the levels of those that ruled any out."""
        requirements = [r for r in self.reqs[name] if r.spec.version is not None]
        culprits: set[int] = set()
        matching: list[Candidate] = []
        for candidate in self.candidates(name):
            for requirement in requirements:  # lowest level first, so the best culprit
                if not requirement.spec.matches(candidate.version):
                    if requirement.level != _ROOT:
                        culprits.add(requirement.level)
                    break
            else:
                matching.append(candidate)
        return matching, culprits

    def pin(self, decision: _Decision, level: int) -> bool:
        """Pin ``decision``'s current candidate and require its inputs; False on a conflict."""
        candidate = decision.matching[decision.index]
        name = decision.name
        self.pins[name] = candidate
        self.level[name] = level
        requester = f"{name}@{candidate.version}"
        for key, spec in candidate.inputs.items():
            dep = self.canonical(spec.name)
            requirement = _Requirement(spec, requester, key, level)
            pinned = self.pins.get(dep)
            if pinned is not None and not spec.matches(pinned.version):
                self.note_conflict(dep, [*self.reqs[dep], requirement])
                if self.level[dep] != level:
                    decision.conflicts.add(self.level[dep])
                return False
            self.require(dep, requirement)
        return True

    def undo(self, level: int) -> _Decision:
        """Unpin the decision at ``level`` and every later one, and drop all they required."""
        for later in self.decisions[level:]:
            del self.pins[later.name]
            del self.level[later.name]
        del self.decisions[level + 1 :]
        decision = self.decisions[level]
        while len(self.trail) > decision.mark:
            self.reqs[self.trail.pop()].pop()
        del self.agenda[decision.agenda_len :]
        self.head = decision.head
        return decision

    def advance(self, decision: _Decision) -> bool:
        """Pin the first workable candidate from ``decision.index`` on; False when none is."""
        level = len(self.decisions) - 1
        while decision.index < len(decision.matching):
            if self.pin(decision, level):
                self.head = decision.head + 1
                return True
            self.undo(level)
            decision.index += 1
        return False

    def exhausted(self, decision: _Decision) -> set[int]:
        """The nogood of a decision with no candidates left: its conflicts and a requester."""
        self.decisions.pop()
        nogood = set(decision.conflicts)
        first = self.reqs[decision.name][0].level  # the lowest level that needs this name
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
            decision.index += 1
            if self.advance(decision):
                return
            nogood = self.exhausted(decision)
        raise self.failure()

    def failure(self) -> ResolutionError:
        conflict = self.conflict
        if conflict is None:  # not reachable: every failure starts at a conflict
            return ResolutionError("No set of versions satisfies every requirement.")
        constrained = [r for r in conflict.requirements if r.spec.version is not None]
        listed = constrained or conflict.requirements
        who = ", ".join(r.describe(conflict.name) for r in listed)
        available = _versions_text(self.candidates(conflict.name))
        qualifier = "" if conflict.genuine else " together with the other choices"
        return ResolutionError(
            f"No version of {conflict.name} satisfies every requirement{qualifier}: {who}; "
            f"available: {available}.",
            package=conflict.name,
        )

    def step(self) -> None:
        """Decide the name at the head of the agenda, backjumping when it cannot be."""
        name = self.agenda[self.head]
        matching, culprits = self.filter(name)
        if not matching:
            self.note_conflict(name, self.reqs[name])
            self.backjump(culprits)
            return
        decision = _Decision(name, matching, self.head, len(self.trail), len(self.agenda), culprits)
        self.decisions.append(decision)
        if not self.advance(decision):
            self.backjump(self.exhausted(decision))

    def resolution(self, roots: list[str]) -> Resolution:
        pins = {name: self.pins[name] for name in self.agenda}
        edges = {
            name: {key: self.canonical(spec.name) for key, spec in pin.inputs.items()}
            for name, pin in pins.items()
        }
        return Resolution(roots=roots, pins=pins, edges=edges)


def resolve(provider: Provider, roots: Sequence[Spec]) -> Resolution:
    """Pin one version of every name in the closure of ``roots`` (see the module docstring)."""
    resolver = _Resolver(provider)
    root_names = resolver.add_roots(roots)
    while resolver.head < len(resolver.agenda):
        resolver.step()
    return resolver.resolution(root_names)
