"""The interpreter that imported recipes are made for: its version, wheel tags and markers.

Contract:

* :class:`Target` holds ``python_version`` (``"3.11"``), ``tags`` (every wheel tag the
  interpreter supports, ``str(packaging.tags.Tag)``, best first) and ``markers`` (its PEP 508
  marker environment, ``packaging.markers.default_environment()`` run inside it).
* :data:`PROBE_SCRIPT` prints that information as one JSON object when run by the target
  interpreter (``python -c PROBE_SCRIPT``); it uses ``packaging`` if importable there, else
  pip's vendored copy. :meth:`Target.from_probe` parses that output; :func:`probe_interpreter`
  does both; :meth:`Target.current` describes the interpreter running mlpkg.
* :meth:`Target.python_ok` says whether a Requires-Python specifier admits the target (an
  unparsable specifier admits it, as pip does); :meth:`Target.describe` names the target in
  messages (``"cp311 manylinux x86_64"``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from packaging.markers import default_environment
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import sys_tags
from packaging.version import InvalidVersion, Version

from mlpkg.errors import BadInput

__all__ = ["PROBE_SCRIPT", "Target", "probe_interpreter"]

PROBE_SCRIPT = """\
import json, sys
try:
    from packaging import markers, tags
except ImportError:
    from pip._vendor.packaging import markers, tags
print(json.dumps({
    "python_version": "%d.%d" % sys.version_info[:2],
    "tags": [str(t) for t in tags.sys_tags()],
    "markers": markers.default_environment(),
}))
"""

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
    def from_probe(cls, text: str) -> Target:
        """Parse what :data:`PROBE_SCRIPT` printed."""
        try:
            data: Any = json.loads(text)
            target = cls(
                python_version=str(data["python_version"]),
                tags=[str(t) for t in data["tags"]],
                markers={str(k): str(v) for k, v in data["markers"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadInput(f"The interpreter probe printed something unexpected: {exc}.") from exc
        if not target.tags:
            raise BadInput("The interpreter probe found no supported wheel tags.")
        return target

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
    """Run :data:`PROBE_SCRIPT` with the interpreter ``python`` and parse its output."""
    try:
        done = subprocess.run(
            [python, "-c", PROBE_SCRIPT], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadInput(f"Cannot run the interpreter {python}: {exc}.") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BadInput(
            f"The interpreter {python} could not describe itself: {last}.",
            hint="It needs the 'packaging' package or pip installed.",
        )
    return Target.from_probe(done.stdout)
