"""Choose one version of every project in a dependency tree, for one target interpreter.

Contract of :class:`Resolver` (``resolve(requirements) -> {canonical name: Node}``):

* Every requirement seen for a name (from the command line, from a chosen release's
  Requires-Dist whose marker holds for ``target.markers``, and from the overrides) narrows
  that name. The newest version satisfying all of them with a usable wheel
  (:meth:`Project.release`) and a metadata Requires-Python admitting the target is chosen.
  Pre-releases and yanked files are considered only for a version pinned with ``==``/``===``.
* Extras: ``foo[bar]`` also follows foo's requirements whose marker holds with
  ``extra == "bar"`` (and not without it). A release is re-walked when the extras wanted of it
  change.
* When a later requirement excludes a chosen version, that name is chosen again and its
  requirements re-walked (the old release's requirements are withdrawn first, and so,
  transitively, are those of projects nobody requires any more). The loop is
  bounded; it raises :class:`~mlpkg.errors.ResolutionError` if it does not settle.
* No usable version: if one requirement alone admits none, :class:`~mlpkg.errors.UnknownPackage`
  says why (for a pin: "onnxruntime 1.12.1 has no wheel for cp311 manylinux x86_64", or
  "requires Python >=3.12") and lists the nearest usable versions in ``details``; otherwise
  :class:`~mlpkg.errors.ResolutionError` names two requirements that cannot both hold and
  who required them. No backtracking into the requirers is attempted.
* The result holds only what is reachable from the requirements through the final choices.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from packaging.markers import UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from mlpkg.errors import BadInput, ResolutionError, UnknownPackage
from mlpkg.importer.candidates import IndexSource, Project, Release
from mlpkg.importer.metadata import CoreMetadata
from mlpkg.importer.overrides import Overrides
from mlpkg.importer.target import Target
from mlpkg.recipes.index import canonical

__all__ = ["Node", "Resolver", "applies", "base_requirements", "extra_requirements"]

Progress = Callable[[str], None]
ROOT = "the command line"


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
class Constraint:
    """One requirement on a name, and who made it."""

    spec: SpecifierSet
    extras: frozenset[str]
    requirer: str  # canonical name of the requiring project; "" for the command line
    label: str  # "foo 1.0" or "the command line"
    text: str  # the requirement as written


@dataclass(frozen=True)
class Node:
    """A chosen release, its metadata and its requirements (Requires-Dist plus overrides)."""

    release: Release
    metadata: CoreMetadata
    requirements: tuple[Requirement, ...]
    extras: frozenset[str]


def _pins(constraints: Iterable[Constraint]) -> set[Version]:
    pins: set[Version] = set()
    for c in constraints:
        for s in c.spec:
            if s.operator in ("==", "===") and not s.version.endswith(".*"):
                with contextlib.suppress(InvalidVersion):
                    pins.add(Version(s.version))
    return pins


def _admits(constraints: Iterable[Constraint], version: Version) -> bool:
    return all(c.spec.contains(version, prereleases=True) for c in constraints)


class Resolver:
    """One resolution over an index (see the module docstring)."""

    def __init__(
        self, source: IndexSource, target: Target, overrides: Overrides, on_progress: Progress
    ) -> None:
        self.source, self.target, self.overrides = source, target, overrides
        self.progress = on_progress
        self.constraints: dict[str, list[Constraint]] = {}
        self.chosen: dict[str, Node] = {}
        self.excluded: dict[tuple[str, Version], str] = {}  # metadata Requires-Python
        self.queue: deque[str] = deque()

    def resolve(self, requirements: Sequence[str]) -> dict[str, Node]:
        roots: list[str] = []
        for text in requirements:
            req = self._parse_root(text)
            if req is not None:
                roots.append(self._constrain(req, "", ROOT))
        steps = 0
        while self.queue:
            steps += 1
            if steps > 200 + 25 * len(self.constraints):
                raise ResolutionError(
                    f"The dependency tree did not settle after {steps - 1} steps.",
                    details=[f"last re-chosen: {self.queue[0]}"],
                )
            self._step(self.queue.popleft())
        return self._reachable(roots)

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

    def _constrain(self, req: Requirement, requirer: str, label: str) -> str:
        name = canonical(req.name)
        extras = frozenset(canonical(e) for e in req.extras)
        self.constraints.setdefault(name, []).append(
            Constraint(req.specifier, extras, requirer, label, str(req))
        )
        self.queue.append(name)
        return name

    def _wanted_extras(self, name: str) -> frozenset[str]:
        return frozenset(e for c in self.constraints.get(name, []) for e in c.extras)

    def _step(self, name: str) -> None:
        constraints = self.constraints.get(name, [])
        node = self.chosen.get(name)
        extras = self._wanted_extras(name)
        if node is not None and _admits(constraints, node.release.version):
            if node.extras == extras:
                return
            release, meta = node.release, node.metadata
        else:
            if node is not None:
                self.progress(
                    f"{name}: {node.release.version_text} is excluded now; choosing again"
                )
            release, meta = self._pick(name, constraints)
        self._retract(name)
        reqs = self._requirements(release, meta)
        self.chosen[name] = Node(release, meta, reqs, extras)
        self.progress(f"{name}: {release.version_text} ({release.file.filename})")
        follow = base_requirements(reqs, self.target.markers)
        for extra in sorted(extras):
            follow += extra_requirements(reqs, self.target.markers, extra)
        for req in follow:
            self._constrain(req, name, f"{name} {release.version_text}")

    def _retract(self, requirer: str) -> None:
        """Withdraw what ``requirer`` required; a chosen project nobody requires any more is
        dropped, and what it required withdrawn in turn."""
        for name in list(self.constraints):
            constraints = self.constraints[name]
            kept = [c for c in constraints if c.requirer != requirer]
            if len(kept) == len(constraints):
                continue
            self.constraints[name] = kept
            if not kept and name in self.chosen:
                del self.chosen[name]
                self._retract(name)
            else:
                self.queue.append(name)

    def _requirements(self, release: Release, meta: CoreMetadata) -> tuple[Requirement, ...]:
        texts = [
            *meta.requires_dist,
            *self.overrides.requirements_for(release.name, release.version),
        ]
        reqs: list[Requirement] = []
        for text in texts:
            try:
                reqs.append(Requirement(text))
            except InvalidRequirement:
                self.progress(f"{release.name}: ignoring the malformed requirement {text!r}")
        return tuple(reqs)

    def _project(self, name: str, constraints: list[Constraint]) -> Project:
        try:
            return self.source.project(name)
        except UnknownPackage as exc:
            exc.details += [f"required by {c.label} ({c.text})" for c in constraints]
            raise

    def _reason(self, project: Project, version: Version, pins: set[Version]) -> str | None:
        if version.is_prerelease and version not in pins:
            return "is a pre-release"
        why = project.reason(version, allow_yanked=version in pins)
        if why is None and (project.name, version) in self.excluded:
            why = f"requires Python {self.excluded[(project.name, version)]}"
        return why

    def _pick(self, name: str, constraints: list[Constraint]) -> tuple[Release, CoreMetadata]:
        project = self._project(name, constraints)
        pins = _pins(constraints)
        for version in project.versions:
            if not _admits(constraints, version) or self._reason(project, version, pins):
                continue
            release = project.release(version, allow_yanked=version in pins)
            assert release is not None
            meta = self.source.metadata(release)
            if self.target.python_ok(meta.requires_python):
                return release, meta
            self.excluded[(name, version)] = meta.requires_python or ""
        raise self._no_version(project, constraints, pins)

    def _usable(
        self, project: Project, constraints: Iterable[Constraint], pins: set[Version]
    ) -> list[Version]:
        return [
            v
            for v in project.versions
            if _admits(constraints, v) and not self._reason(project, v, pins)
        ]

    def _no_version(
        self, project: Project, constraints: list[Constraint], pins: set[Version]
    ) -> UnknownPackage | ResolutionError:
        for c in constraints:
            if not self._usable(project, [c], _pins([c])):
                return self._unsatisfiable(project, c)
        name = project.name
        for i, a in enumerate(constraints):
            for b in constraints[i + 1 :]:
                if not self._usable(project, [a, b], _pins([a, b])):
                    return ResolutionError(
                        f"No version of {name} satisfies both {a.text} (required by {a.label}) "
                        f"and {b.text} (required by {b.label}).",
                        details=[f"{c.text} is required by {c.label}" for c in constraints],
                        package=name,
                    )
        return ResolutionError(
            f"No version of {name} satisfies all of its {len(constraints)} requirements together.",
            details=[f"{c.text} is required by {c.label}" for c in constraints],
            package=name,
        )

    def _unsatisfiable(self, project: Project, c: Constraint) -> UnknownPackage:
        name, pins = project.name, _pins([c])
        matching = [v for v in project.versions if _admits([c], v)]
        pin = next(iter(pins)) if len(pins) == 1 else None
        if pin is not None and matching:
            message = f"{name} {pin} {self._reason(project, matching[0], pins)}."
        elif pin is not None:
            message = f"{name} has no version {pin} on the index."
        elif not c.spec:
            message = f"{name} has no version with a wheel for {self.target.describe()}."
        else:
            message = f"{name} has no version {c.spec} with a wheel for {self.target.describe()}."
        details = (
            [] if pin else [f"{name} {v} {self._reason(project, v, pins)}" for v in matching[:5]]
        )
        if c.requirer:
            details.insert(0, f"required by {c.label} ({c.text})")
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
        usable = sorted(v for v in project.versions if not self._reason(project, v, set()))
        if anchor is None:
            return [str(v) for v in usable[-5:]], str(usable[-1]) if usable else None
        below = [v for v in usable if v < anchor][-3:]
        above = [v for v in usable if v > anchor][:3]
        suggest = above[0] if above else below[-1] if below else None
        return [str(v) for v in below + above], str(suggest) if suggest else None

    def _reachable(self, roots: list[str]) -> dict[str, Node]:
        seen: dict[str, Node] = {}
        todo = list(roots)
        while todo:
            name = todo.pop()
            if name in seen or name not in self.chosen:
                continue
            node = seen[name] = self.chosen[name]
            follow = base_requirements(node.requirements, self.target.markers)
            for extra in node.extras:
                follow += extra_requirements(node.requirements, self.target.markers, extra)
            todo += [canonical(r.name) for r in follow]
        return dict(sorted(seen.items()))
