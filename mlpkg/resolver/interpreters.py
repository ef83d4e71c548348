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
from dataclasses import dataclass
from typing import Any

from mlpkg.recipes.index import canonical
from mlpkg.resolver.derivation import Derivation

__all__ = ["Interpreter", "built_cpython", "interpreter_of"]

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
