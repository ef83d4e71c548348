"""Choose one version of every project in a dependency tree, for one target interpreter.

Contract of :class:`Resolver` (``resolve(requirements) -> {canonical name: Node}``):

* Every requirement seen for a name (from the command line, from a chosen release's
  Requires-Dist whose marker holds for ``target.markers``, and from the overrides) narrows
  that name. Versions are tried newest first; a version is a candidate when it satisfies all
  of them, has a usable wheel (:meth:`Project.release`) and a metadata Requires-Python
  admitting the target. Pre-releases and yanked files are considered only for a version
  pinned with ``==``/``===``.
* Extras: ``foo[bar]`` also follows foo's requirements whose marker holds with
  ``extra == "bar"`` (and not without it), for the same version of foo.
* The search is :mod:`resolvelib`'s, which backtracks: when the requirements of a chosen
  release cannot hold together with the others, an older release of it (or of whoever
  required the clash) is tried. Metadata is read only for the versions looked at, newest
  first; the search gives up with :class:`~mlpkg.errors.ResolutionError` after
  :data:`MAX_ROUNDS` rounds.
* No solution (explained from the requirements of the last clash): if a command-line
  requirement alone admits no usable version, :class:`~mlpkg.errors.UnknownPackage` says why
  (for a pin: "onnxruntime 1.12.1 has no wheel for cp311 manylinux x86_64", or "requires
  Python >=3.12") and lists the nearest usable versions in ``details``; else
  :class:`~mlpkg.errors.ResolutionError` names two requirements that cannot both hold, who
  required them and the usable versions, listing every requirement of the clash in
  ``details``; else the same :class:`~mlpkg.errors.UnknownPackage` for a dependency's
  requirement, naming its requirer. When the search gave up more than one version, why
  each was given up ends ``details``. A project the index does not have raises
  :class:`~mlpkg.errors.UnknownPackage` at once (naming its requirers); it is not
  backtracked over.
* The result holds only what is reachable from the requirements through the final choices;
  :attr:`Node.extras` are the extras wanted of it along those paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import resolvelib
from packaging.markers import UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version
from resolvelib.resolvers import ResolutionImpossible, ResolutionTooDeep

from mlpkg.errors import BadInput, MlpkgError, ResolutionError, UnknownPackage
from mlpkg.importer.candidates import IndexSource, Project, Release
from mlpkg.importer.metadata import CoreMetadata
from mlpkg.importer.overrides import Overrides
from mlpkg.importer.target import Target
from mlpkg.recipes.index import canonical

if TYPE_CHECKING:
    from resolvelib.resolvers import Criterion
    from resolvelib.structs import Matches, RequirementInformation

__all__ = ["MAX_ROUNDS", "Node", "Resolver", "applies", "base_requirements", "extra_requirements"]

Progress = Callable[[str], None]
ROOT = "the command line"
MAX_ROUNDS = 2000  # resolvelib rounds (one pin or one backtrack each) before giving up


def applies(req: Requirement, markers: dict[str, str], extra: str) -> bool:
    """Whether ``req``'s marker holds for ``markers`` with ``extra`` ("" = no extra)."""
    if req.marker is None:
        return True
    try:
        return req.marker.evaluate({**markers, "extra": extra})
    except (UndefinedComparison, UndefinedEnvironmentName):
        return False


def base_requirements(reqs: Iterable[Requirement], markers: dict[str, str]) -> list[Requirement]:
    return [r for r in reqs if applies(r, markers, "")]


def extra_requirements(
    reqs: Iterable[Requirement], markers: dict[str, str], extra: str
) -> list[Requirement]:
    """The requirements an extra adds: they hold with ``extra`` and not without it."""
    return [r for r in reqs if not applies(r, markers, "") and applies(r, markers, extra)]


@dataclass(frozen=True)
class Node:
    """A chosen release, its metadata and its requirements (Requires-Dist plus overrides)."""

    release: Release
    metadata: CoreMetadata
    requirements: tuple[Requirement, ...]
    extras: frozenset[str]


@dataclass(frozen=True)
class Want:
    """One requirement on a project, or on one extra of it (``foo[bar]>=1`` gives two: one
    on ``foo`` and one on ``foo[bar]``), and who made it."""

    name: str  # canonical project name
    extra: str  # canonical extra name; "" for the project itself
    spec: SpecifierSet
    text: str  # the requirement as written
    requirer: str  # canonical name of the requiring project; "" for the command line
    label: str  # "foo 1.0", "foo[bar] 1.0" or "the command line"
    pinned: Version | None = None  # an extra's release needs this very version of its project

    @property
    def key(self) -> str:
        return f"{self.name}[{self.extra}]" if self.extra else self.name

    def admits(self, version: Version) -> bool:
        if self.pinned is not None:
            return version == self.pinned
        return self.spec.contains(version, prereleases=True)


@dataclass(frozen=True)
class Candidate:
    """One version of a project (or of one extra of it) that the search may pin."""

    name: str
    extra: str
    version: Version
    release: Release = field(compare=False)

    @property
    def key(self) -> str:
        return f"{self.name}[{self.extra}]" if self.extra else self.name

    @property
    def label(self) -> str:
        return f"{self.key} {self.release.version_text}"


def _wants(req: Requirement, requirer: str, label: str) -> list[Want]:
    """``req`` as a want of its project and one of each of its extras."""
    name = canonical(req.name)
    bare = Requirement(str(req))
    bare.marker = None  # it holds, or the requirement would not be followed
    text = str(bare)
    return [
        Want(name, extra, req.specifier, text, requirer, label)
        for extra in ["", *sorted({canonical(e) for e in req.extras})]
    ]


def _pins(wants: Iterable[Want]) -> set[Version]:
    pins: set[Version] = set()
    for w in wants:
        if w.pinned is not None:
            pins.add(w.pinned)
        for s in w.spec:
            if s.operator in ("==", "===") and not s.version.endswith(".*"):
                with contextlib.suppress(InvalidVersion):
                    pins.add(Version(s.version))
    return pins


def _admits(wants: Iterable[Want], version: Version) -> bool:
    return all(w.admits(version) for w in wants)


class _Provider(resolvelib.AbstractProvider[Want, Candidate, str]):
    """What resolvelib asks of an index: candidates newest first, and their requirements."""

    def __init__(
        self, source: IndexSource, target: Target, overrides: Overrides, on_progress: Progress
    ) -> None:
        self.source, self.target, self.overrides = source, target, overrides
        self.progress = on_progress
        self.excluded: dict[tuple[str, Version], str] = {}  # metadata Requires-Python
        self.order: dict[str, int] = {}  # identifiers in the order they were first seen
        self._requirements: dict[tuple[str, Version], tuple[Requirement, ...]] = {}

    def identify(self, requirement_or_candidate: Want | Candidate) -> str:
        key = requirement_or_candidate.key
        self.order.setdefault(key, len(self.order))
        return key

    def get_preference(
        self,
        identifier: str,
        resolutions: Mapping[str, Candidate],
        candidates: Mapping[str, Iterator[Candidate]],
        information: Mapping[str, Iterator[RequirementInformation[Want, Candidate]]],
        backtrack_causes: Sequence[RequirementInformation[Want, Candidate]],
    ) -> tuple[bool, bool, bool, bool, bool, int, str]:
        """Names nobody requires any more (left over after backtracking) last; before them,
        extras (each follows its project's version, so pinned early it would hold that
        version fast); among the rest, conflicting names first, then pinned ones, the
        command line's, and the order in which names were first seen (breadth first)."""
        wants = [i.requirement for i in information[identifier]]
        causes = {i.requirement.key for i in backtrack_causes}
        causes |= {i.parent.key for i in backtrack_causes if i.parent is not None}
        return (
            not wants,
            "[" in identifier,
            identifier not in causes,
            not _pins(wants),
            all(w.requirer for w in wants),
            self.order.get(identifier, len(self.order)),
            identifier,
        )

    def find_matches(
        self,
        identifier: str,
        requirements: Mapping[str, Iterator[Want]],
        incompatibilities: Mapping[str, Iterator[Candidate]],
    ) -> Matches[Candidate]:
        wants = list(requirements[identifier])  # empty for a name nobody requires any more
        name, _, extra = identifier.rstrip("]").partition("[")
        if extra and name in requirements:  # an extra's version must suit the project too
            wants += requirements[name]
        bad = {c.version for c in incompatibilities.get(identifier, ())}
        project = self.project(name, wants)
        return lambda: self._matches(project, extra, wants, bad)

    def _matches(
        self, project: Project, extra: str, wants: list[Want], bad: set[Version]
    ) -> Iterator[Candidate]:
        """Usable versions admitted by ``wants``, newest first; metadata is read lazily."""
        pins = _pins(wants)
        for version in project.versions:
            if version in bad or not _admits(wants, version) or self.reason(project, version, pins):
                continue
            release = project.release(version, allow_yanked=version in pins)
            assert release is not None
            meta = self.source.metadata(release)
            if not self.target.python_ok(meta.requires_python):
                self.excluded[(project.name, version)] = meta.requires_python or ""
                continue
            yield Candidate(project.name, extra, version, release)

    def is_satisfied_by(self, requirement: Want, candidate: Candidate) -> bool:
        return requirement.admits(candidate.version)

    def get_dependencies(self, candidate: Candidate) -> Iterator[Want]:
        """An extra's release needs its project at the same version (asked first, so a clash
        costs no metadata read), then the requirements the extra adds; a project's release
        needs its base requirements."""
        release, label = candidate.release, candidate.label
        if candidate.extra:
            text = f"{candidate.name}=={release.version_text}"
            yield Want(
                candidate.name, "", SpecifierSet(), text, candidate.name, label, release.version
            )
            follow = extra_requirements(
                self.requirements(release), self.target.markers, candidate.extra
            )
        else:
            follow = base_requirements(self.requirements(release), self.target.markers)
        for req in follow:
            yield from _wants(req, candidate.name, label)

    def requirements(self, release: Release) -> tuple[Requirement, ...]:
        """Requires-Dist plus the overrides' additions, parsed (malformed ones skipped)."""
        key = (release.name, release.version)
        if key not in self._requirements:
            texts = [
                *self.source.metadata(release).requires_dist,
                *self.overrides.requirements_for(release.name, release.version),
            ]
            reqs: list[Requirement] = []
            for text in texts:
                try:
                    reqs.append(Requirement(text))
                except InvalidRequirement:
                    self.progress(f"{release.name}: ignoring the malformed requirement {text!r}")
            self._requirements[key] = tuple(reqs)
        return self._requirements[key]

    def project(self, name: str, wants: Iterable[Want]) -> Project:
        try:
            return self.source.project(name)
        except UnknownPackage as exc:
            seen = {f"required by {w.label} ({w.text})": None for w in wants}
            exc.details += [d for d in seen if d not in exc.details]
            raise

    def reason(self, project: Project, version: Version, pins: set[Version]) -> str | None:
        """Why ``version`` cannot be used (None if it can), given the pinned versions."""
        if version.is_prerelease and version not in pins:
            return "is a pre-release"
        why = project.reason(version, allow_yanked=version in pins)
        if why is None and (project.name, version) in self.excluded:
            why = f"requires Python {self.excluded[(project.name, version)]}"
        return why

    def usable(self, project: Project, wants: Iterable[Want]) -> list[Version]:
        """The versions ``wants`` admit that have a usable wheel, newest first."""
        wants = list(wants)
        pins = _pins(wants)
        return [
            v for v in project.versions if _admits(wants, v) and not self.reason(project, v, pins)
        ]


class _Reporter(resolvelib.BaseReporter[Want, Candidate, str]):
    """Progress lines for what the search pins and gives up."""

    def __init__(self, on_progress: Progress) -> None:
        self.progress = on_progress
        self.rejected: dict[str, None] = {}  # why each given-up version was given up

    def pinning(self, candidate: Candidate) -> None:
        release = candidate.release
        where = "" if candidate.extra else f" ({release.file.filename})"
        self.progress(f"{candidate.key}: {release.version_text}{where}")

    def rejecting_candidate(
        self, criterion: Criterion[Want, Candidate], candidate: Candidate
    ) -> None:
        wants = list(criterion.iter_requirement())
        clash = " and ".join(f"{w.text} (required by {w.label})" for w in wants)
        name = wants[0].key if wants else "?"
        line = f"{candidate.label} cannot be used: no version of {name} satisfies {clash}"
        self.rejected[line] = None
        self.progress(line)

    def resolving_conflicts(
        self, causes: Iterable[RequirementInformation[Want, Candidate]]
    ) -> None:
        names = sorted({i.requirement.key for i in causes})
        self.progress(f"backtracking: no version of {', '.join(names)} fits; trying other choices")


class Resolver:
    """One resolution over an index (see the module docstring)."""

    def __init__(
        self, source: IndexSource, target: Target, overrides: Overrides, on_progress: Progress
    ) -> None:
        self.source, self.target, self.overrides = source, target, overrides
        self.progress = on_progress
        self.provider = _Provider(source, target, overrides, on_progress)

    def resolve(self, requirements: Sequence[str]) -> dict[str, Node]:
        roots: list[Want] = []
        for text in requirements:
            req = self._parse_root(text)
            if req is not None:
                roots += _wants(req, "", ROOT)
        reporter = _Reporter(self.progress)
        search = resolvelib.Resolver(self.provider, reporter)
        try:
            result = search.resolve(roots, max_rounds=MAX_ROUNDS)
        except ResolutionImpossible as exc:
            error = self._explain([i.requirement for i in exc.causes])
            if len(reporter.rejected) > 1:  # one is the dead end explained; more: say them
                error.details += list(reporter.rejected)[-10:]
            raise error from None
        except ResolutionTooDeep as exc:
            raise ResolutionError(
                f"The dependency tree did not settle after {exc.round_count} rounds of "
                "backtracking.",
                hint="Pin some of the packages (NAME==VERSION) to narrow the search.",
            ) from None
        return self._reachable(roots, result.mapping)

    def _parse_root(self, text: str) -> Requirement | None:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise BadInput(f"Invalid requirement {text!r}: {exc}.") from None
        if req.url:
            raise BadInput(
                f"Invalid requirement {text!r}: URL requirements are not supported; "
                "name a version instead (NAME==VERSION)."
            )
        if not applies(req, self.target.markers, ""):
            self.progress(f"{req.name}: its marker does not hold for the target; left out")
            return None
        return req

    def _reachable(self, roots: list[Want], pinned: Mapping[str, Candidate]) -> dict[str, Node]:
        """Nodes for what the roots reach through the pinned releases (and wanted extras)."""
        seen: set[tuple[str, str]] = set()
        todo = [(w.name, w.extra) for w in roots]
        while todo:
            name, extra = todo.pop()
            if (name, extra) in seen or name not in pinned:
                continue
            seen.add((name, extra))
            reqs = self.provider.requirements(pinned[name].release)
            markers = self.target.markers
            follow = (
                extra_requirements(reqs, markers, extra)
                if extra
                else base_requirements(reqs, markers)
            )
            todo += [(name, "")] + [(w.name, w.extra) for r in follow for w in _wants(r, "", "")]
        nodes: dict[str, Node] = {}
        for name in sorted({name for name, _ in seen}):
            release = pinned[name].release
            nodes[name] = Node(
                release,
                self.source.metadata(release),
                self.provider.requirements(release),
                frozenset(e for n, e in seen if n == name and e),
            )
        return nodes

    def _explain(self, causes: Sequence[Want]) -> MlpkgError:
        """The clearest true statement about why ``causes`` (the requirements of the last
        clash resolvelib met, from every version it tried there) cannot hold: a command-line
        requirement no usable version meets, else two requirements that cannot both hold,
        else a dependency's requirement no usable version meets (a dead end of each version
        that made it), else all the requirements on one name."""
        groups: dict[str, dict[tuple[str, str], Want]] = {}
        for w in causes:  # foo[bar]>=1 counts once; an extra's pin of its project not at all
            if w.pinned is None:
                groups.setdefault(w.name, {}).setdefault((w.text, w.label), w)
        if not groups:
            return ResolutionError("The requirements cannot all hold together.")
        projects = {name: self.source.project(name) for name in groups}
        alone = [
            (projects[name], w)
            for name, wants in groups.items()
            for w in wants.values()
            if not self.provider.usable(projects[name], [w])
        ]
        for project, w in alone:
            if not w.requirer:
                return self._unsatisfiable(project, w)
        every = [f"{w.text} is required by {w.label}" for g in groups.values() for w in g.values()]
        for name, wants in groups.items():
            meetable = [w for w in wants.values() if (projects[name], w) not in alone]
            found = self._clash(projects[name], meetable, every)
            if found is not None:
                return found
        if alone:
            return self._unsatisfiable(*alone[0])
        name, wants = next(iter(groups.items()))
        return ResolutionError(
            f"No version of {name} satisfies all of its {len(wants)} requirements together.",
            details=every,
            package=name,
        )

    def _clash(
        self, project: Project, wants: list[Want], details: list[str]
    ) -> ResolutionError | None:
        """Two of ``wants`` that no usable version satisfies together, as an error (two
        versions of one requirer are alternatives, never a clash)."""
        name = project.name
        for i, a in enumerate(wants):
            for b in wants[i + 1 :]:
                rivals = a.requirer == b.requirer and a.label != b.label
                if rivals or self.provider.usable(project, [a, b]):
                    continue
                usable = sorted(self.provider.usable(project, []))[-5:]
                return ResolutionError(
                    f"No version of {name} satisfies both {a.text} (required by {a.label}) "
                    f"and {b.text} (required by {b.label}); versions of {name} with a wheel "
                    f"for {self.target.describe()}: {', '.join(map(str, usable))}.",
                    details=details,
                    package=name,
                )
        return None

    def _unsatisfiable(self, project: Project, w: Want) -> UnknownPackage:
        name, pins = project.name, _pins([w])
        matching = [v for v in project.versions if w.admits(v)]
        pin = next(iter(pins)) if len(pins) == 1 else None
        reason = self.provider.reason
        if pin is not None and matching:
            message = f"{name} {pin} {reason(project, matching[0], pins)}."
        elif pin is not None:
            message = f"{name} has no version {pin} on the index."
        elif not w.spec:
            message = f"{name} has no version with a wheel for {self.target.describe()}."
        else:
            message = f"{name} has no version {w.spec} with a wheel for {self.target.describe()}."
        details = [] if pin else [f"{name} {v} {reason(project, v, pins)}" for v in matching[:5]]
        if w.requirer:
            details.insert(0, f"required by {w.label} ({w.text})")
        nearest, suggest = self._nearest(project, pin)
        if nearest:
            details.append(
                f"nearest versions with a wheel for {self.target.describe()}: {', '.join(nearest)}"
            )
        hint = f"Ask for one of those, e.g. {name}=={suggest}." if suggest else None
        return UnknownPackage(message, details=details, hint=hint, package=name)

    def _nearest(self, project: Project, anchor: Version | None) -> tuple[list[str], str | None]:
        """Up to 3 usable versions either side of ``anchor`` (or the newest 5), and the one
        to suggest (the first above ``anchor``, else the last below it)."""
        usable = sorted(self.provider.usable(project, []))
        if anchor is None:
            return [str(v) for v in usable[-5:]], str(usable[-1]) if usable else None
        below = [v for v in usable if v < anchor][-3:]
        above = [v for v in usable if v > anchor][:3]
        suggest = above[0] if above else below[-1] if below else None
        return [str(v) for v in below + above], str(suggest) if suggest else None
