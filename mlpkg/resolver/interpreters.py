"""Python interpreters in the store: what one is, whichever way it was made.

An interpreter is a ``python`` path of one of two kinds:

* an **external** recipe with ``probe = "python"``: the machine's interpreter, whose
  probe (:mod:`mlpkg.resolver.pyprobe`) recorded its version, facts and accepted tags
  when it was detected;
* a **build** recipe of the package ``python``: CPython built from source in the store,
  its executable ``bin/python3``. Nothing is run to learn what it accepts: it is CPython
  of its recipe's version, linked against this machine's C library, so its facts follow
  from the version and its wheel tags are those ``packaging.tags`` computes for such an
  interpreter on this machine (the same platform tags as mlpkg's own process).

Contract: :func:`interpreter_of` answers from a :class:`Derivation` alone (no store, no
process), so the planner can choose a wheel for an interpreter that is not built yet.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from mlpkg.recipes.index import canonical
from mlpkg.resolver.derivation import Derivation

if TYPE_CHECKING:
    from mlpkg.resolver.resolve import Provider, Resolution
    from mlpkg.resolver.spec import Spec

__all__ = ["Interpreter", "built_cpython", "explain_choice", "interpreter_of"]

BUILT_EXECUTABLE = "bin/python3"  # of a source-built interpreter, relative to its path


@dataclass(frozen=True)
class Interpreter:
    """A Python interpreter of a closure."""

    version: str  # "3.9.2"
    info: dict[str, Any]  # implementation, version, abi, soabi, markers (host-independent)
    tags: list[str]  # wheel tags it accepts on this machine, best first
    executable: str  # absolute (external), or relative to the store path (built)
    built: bool  # True: built from source in the store

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def interpreter_of(drv: Derivation) -> Interpreter | None:
    """The interpreter ``drv`` makes, or None if it is not one."""
    if drv.detected is not None and drv.detected.tags:
        exe = drv.detected.locations.get("python3") or next(
            iter(drv.detected.locations.values()), ""
        )
        det = drv.detected
        return Interpreter(det.version, det.info, det.tags, exe, built=False)
    if drv.kind == "build" and canonical(drv.name) == "python":
        info, tags = built_cpython(drv.version)
        return Interpreter(drv.version, info, tags, BUILT_EXECUTABLE, built=True)
    return None


def built_cpython(version: str) -> tuple[dict[str, Any], list[str]]:
    """(facts, accepted wheel tags) of CPython ``version`` built on this machine, as the
    probe would report them (host-specific marker values left out of the facts)."""
    from packaging import tags

    major, minor = (int(p) for p in version.split(".")[:2])
    abi = f"cp{major}{minor}"
    machine = platform.machine()
    markers = {
        "implementation_name": "cpython",
        "implementation_version": version,
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "python_full_version": version,
        "python_version": f"{major}.{minor}",
        "sys_platform": "linux",
    }
    info = {
        "implementation": "cpython",
        "version": version,
        "abi": abi,
        "soabi": f"cpython-{major}{minor}-{machine}-linux-gnu",
        "markers": markers,
    }
    platforms = list(tags.platform_tags())
    accepted = [
        *tags.cpython_tags((major, minor), abis=[abi], platforms=platforms),
        *tags.compatible_tags((major, minor), abi, platforms=platforms),
    ]
    return info, [str(t) for t in accepted]


def explain_choice(
    provider: Provider, resolution: Resolution, specs: Sequence[Spec]
) -> dict[str, Any] | None:
    """Why the closure's ``python`` is the one chosen: None when the closure has none;
    else ``{"chosen": "3.9.2", "built": True, "reason": ..., "excluded": {version:
    [why]}}`` for every interpreter tried before it (the machine's first, then newest
    first). An interpreter is excluded by the command line's spec, or by a package of the
    closure none of whose versions that the closure allows has a wheel for it (its
    requirements as the closure states them are shown)."""
    from mlpkg.resolver.resolve import preference

    chosen = resolution.pins.get("python")
    if chosen is None:
        return None
    asked = [s for s in specs if provider.canonical_name(s.name) == "python"]
    wanted = _requirements(provider, resolution, specs)
    excluded: dict[str, list[str]] = {}
    for cand in sorted(provider.candidates("python"), key=preference, reverse=True):
        if cand is chosen:
            break
        mine = " (this machine)" if getattr(cand, "preferred", False) else ""
        why = [f"the command line asks {s}" for s in asked if not s.matches(cand.version)]
        for pkg, reqs in wanted.items():
            if pkg != "python" and not _allows(provider, pkg, reqs, cand.version):
                allowed = ", ".join(sorted({str(r) for r in reqs}))
                why.append(f"{pkg} has no wheel for it among the versions asked ({allowed})")
        excluded[f"{cand.version}{mine}"] = why
    machine = bool(getattr(chosen, "preferred", False))
    if machine:
        reason = "this machine's interpreter, which every package of the closure can use"
    elif asked:
        reason = "asked for on the command line"
    else:
        reason = "the newest interpreter that every package of the closure has a wheel for"
    return {"chosen": str(chosen.version), "built": not machine, "reason": reason,
            "excluded": excluded}  # fmt: skip


def _requirements(
    provider: Provider, resolution: Resolution, specs: Sequence[Spec]
) -> dict[str, list[Spec]]:
    """Every spec on each package of the closure: the root specs and the dependants'."""
    found: dict[str, list[Spec]] = {}
    for spec in specs:
        found.setdefault(provider.canonical_name(spec.name), []).append(spec)
    for name, cand in resolution.pins.items():
        for key, target in resolution.edges.get(name, {}).items():
            found.setdefault(target, []).append(cand.inputs[key])
    return found


def _allows(provider: Provider, name: str, reqs: Sequence[Spec], python: Version) -> bool:
    """Whether some version of ``name`` that ``reqs`` allow can use ``python``."""
    for cand in provider.candidates(name):
        if all(r.matches(cand.version) for r in reqs):
            spec = cand.inputs.get("python")
            if spec is None or spec.matches(python):
                return True
    return False
