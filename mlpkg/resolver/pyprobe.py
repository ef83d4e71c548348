"""The Python interpreter probe: what a Python interpreter is and accepts.

mlpkg's one probe of an interpreter, used by the ``python`` probe of external recipes and
by ``mlpkg import pypi`` (:func:`mlpkg.importer.target.probe_interpreter`). It runs a short
script inside the interpreter (with the ``packaging`` library that mlpkg itself uses put on
its path) and reports (:class:`PythonProbe`):

- ``info`` (hashed into the store path): implementation, version, ABI tag and the PEP 508
  marker values that do not depend on the host (kernel release and version are left out):
  the same Python version gives the same path on every machine;
- ``tags``: the wheel tags the interpreter accepts on *this* machine, in priority order
  (they follow the C library's version and the ``packaging`` release, so they are recorded
  with the path but not hashed; installing a wheel checks them);
- the *base* interpreter's real location, so that the store links the installation
  itself, never a virtual environment or a pyenv shim in front of it;
- ``markers``: the whole PEP 508 marker environment, host-specific values included (the
  importer evaluates requirements' markers with it; not hashed, not recorded).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import packaging

from mlpkg.errors import ExternalNotFound

_SCRIPT = r"""
import json, os, platform, sys, sysconfig
from packaging import markers, tags
env = markers.default_environment()
full = dict(env)
for host_specific in ("platform_release", "platform_version"):
    env.pop(host_specific, None)
base = getattr(sys, "_base_executable", None) or sys.executable
print(json.dumps({
    "info": {
        "implementation": sys.implementation.name,
        "version": platform.python_version(),
        "abi": tags.interpreter_name() + tags.interpreter_version(),
        "soabi": sysconfig.get_config_var("SOABI") or "",
        "markers": env,
    },
    "tags": [str(t) for t in tags.sys_tags()],
    "base_executable": os.path.realpath(base),
    "site_packages": "lib/python%d.%d/site-packages" % sys.version_info[:2],
    "markers": full,
}))
"""


@dataclass(frozen=True)
class PythonProbe:
    """What the probe learnt about one interpreter."""

    version: str  # platform.python_version(): "3.11.4"
    info: dict[str, Any]  # hashed into a python external's store path
    base_executable: str  # the real path of the base interpreter
    tags: list[str]  # wheel tags accepted on this machine, best first
    markers: dict[str, str]  # the whole PEP 508 marker environment


def probe_python(executable: str) -> tuple[str, dict[str, Any], str, list[str]]:
    """:func:`probe` as (version, info, base interpreter, tags)."""
    found = probe(executable)
    return found.version, found.info, found.base_executable, found.tags


def probe(executable: str) -> PythonProbe:
    """Run the probe with ``executable``.

    ``executable`` is the interpreter a trusted external recipe located, or the one the
    importer was pointed at (both look a bare name up in the absolute entries of ``PATH``
    only: mlpkg.resolver.external.which); the probe is mlpkg's own script. It runs in an empty
    temporary directory, because ``python -c`` puts the working directory first on
    ``sys.path``: a ``json.py`` beside the user's lockfile must not be imported. The
    interpreter's ``PYTHON*`` variables are dropped; only ``packaging`` is added.
    ExternalNotFound when it cannot run or prints no valid report.
    """
    packaging_root = str(Path(packaging.__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = packaging_root
    stderr = ""
    try:
        with tempfile.TemporaryDirectory(prefix="mlpkg-probe-") as empty:
            r = subprocess.run(
                [executable, "-s", "-c", _SCRIPT],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                cwd=empty,
                stdin=subprocess.DEVNULL,
            )
        stderr = r.stderr
        data = json.loads(r.stdout) if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        data = None
    if not isinstance(data, dict):
        raise ExternalNotFound(
            f"The Python interpreter '{executable}' could not be probed.",
            details=stderr.splitlines()[-5:],
            package="python",
        )
    info = data["info"]
    return PythonProbe(
        version=str(info["version"]),
        info=info,
        base_executable=str(data["base_executable"]),
        tags=[str(t) for t in data["tags"]],
        markers={str(k): str(v) for k, v in data["markers"].items()},
    )
