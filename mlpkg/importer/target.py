"""The interpreter that imported recipes are made for: its version, wheel tags and markers.

Contract:

* :class:`Target` holds ``python_version`` (``"3.11"``), ``tags`` (every wheel tag the
  interpreter supports, ``str(packaging.tags.Tag)``, best first) and ``markers`` (its PEP 508
  marker environment, ``packaging.markers.default_environment()`` run inside it).
* :func:`probe_interpreter` learns them by running mlpkg's one interpreter probe
  (:mod:`mlpkg.resolver.pyprobe`, the one python externals use: an empty temporary working
  directory, no user site-packages, no ``PYTHON*`` variables, mlpkg's own ``packaging``; a
  bare name is looked up in the absolute entries of ``PATH`` only);
  :meth:`Target.for_interpreter` makes a Target from what a probe found;
  :meth:`Target.current` describes the interpreter running mlpkg;
  :meth:`Target.for_built_cpython` describes CPython of a version built from source on this
  machine without running it (:func:`mlpkg.resolver.interpreters.built_cpython`'s tags and
  markers, plus this machine's ``platform_release`` and ``platform_version``).
* :meth:`Target.python_ok` says whether a Requires-Python specifier admits the target (an
  unparsable specifier admits it, as pip does); :meth:`Target.describe` names the target in
  messages (``"cp311 manylinux x86_64"``).
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from packaging.markers import default_environment
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import sys_tags
from packaging.version import InvalidVersion, Version

from mlpkg.errors import BadInput, ExternalNotFound
from mlpkg.resolver.external import which
from mlpkg.resolver.pyprobe import probe

__all__ = ["Target", "probe_interpreter"]

_PLATFORM_FAMILY = re.compile(r"(manylinux|musllinux|macosx)_\d+_\d+_(.+)")


@dataclass(frozen=True)
class Target:
    """The interpreter recipes are made for."""

    python_version: str
    tags: list[str]
    markers: dict[str, str]

    @classmethod
    def current(cls) -> Target:
        """The interpreter running this code."""
        return cls(
            python_version="{}.{}".format(*sys.version_info[:2]),
            tags=[str(t) for t in sys_tags()],
            markers={k: str(v) for k, v in default_environment().items()},
        )

    @classmethod
    def for_interpreter(
        cls, version: str, tags: Sequence[str], markers: Mapping[str, str]
    ) -> Target:
        """The target an interpreter of full ``version`` (``"3.11.4"``) makes, with the tags
        and marker environment a probe found."""
        return cls(
            python_version=".".join(version.split(".")[:2]),
            tags=[str(t) for t in tags],
            markers={str(k): str(v) for k, v in markers.items()},
        )

    @classmethod
    def for_built_cpython(cls, version: str) -> Target:
        """CPython ``version`` (``"3.9.2"``, or ``"3.9"``) built from source on this machine:
        the tags and markers :func:`~mlpkg.resolver.interpreters.built_cpython` gives, with
        the host-specific marker values (kernel release and version) of this machine."""
        from mlpkg.resolver.interpreters import built_cpython

        info, tags = built_cpython(version)
        markers = {
            **info["markers"],
            "platform_release": platform.release(),
            "platform_version": platform.version(),
        }
        return cls.for_interpreter(version, tags, dict(sorted(markers.items())))

    @property
    def python_full_version(self) -> Version:
        text = self.markers.get("python_full_version", self.python_version)
        m = re.match(r"\d+(\.\d+)*", text)
        try:
            return Version(m.group(0) if m else self.python_version)
        except InvalidVersion:
            return Version("0")

    def python_ok(self, requires_python: str | None) -> bool:
        """Whether ``requires_python`` (a specifier set, or None) admits this interpreter."""
        if not requires_python:
            return True
        try:
            spec = SpecifierSet(requires_python)
        except InvalidSpecifier:
            return True
        return spec.contains(self.python_full_version, prereleases=True)

    def describe(self) -> str:
        """``"cp311 manylinux x86_64"``: the best interpreter tag and platform, for messages."""
        interpreter = self.tags[0].split("-")[0] if self.tags else f"py{self.python_version}"
        platform = next((t.split("-")[2] for t in self.tags if not t.endswith("-any")), "any")
        m = _PLATFORM_FAMILY.fullmatch(platform)
        return f"{interpreter} {m.group(1)} {m.group(2)}" if m else f"{interpreter} {platform}"


def probe_interpreter(python: str) -> Target:
    """Describe the interpreter ``python`` (a path, or a name looked up in the absolute
    entries of ``PATH``) with :func:`mlpkg.resolver.pyprobe.probe`; :class:`BadInput` when
    it cannot be found or run, or reports no wheel tags."""
    executable = os.path.abspath(python) if os.sep in python else which(python)
    if executable is None:
        raise BadInput(f"Cannot run the interpreter {python}: it is not on PATH.")
    if not os.path.exists(executable):
        raise BadInput(f"Cannot run the interpreter {python}: {os.strerror(2)}.")
    try:
        found = probe(executable)
    except ExternalNotFound as exc:
        raise BadInput(
            f"The interpreter {python} could not describe itself.", details=exc.details
        ) from exc
    if not found.tags:
        raise BadInput("The interpreter probe found no supported wheel tags.")
    return Target.for_interpreter(found.version, found.tags, found.markers)
