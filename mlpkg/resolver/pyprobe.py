"""The ``python`` probe of external recipes: what a Python interpreter accepts.

The probe runs a short script inside the interpreter (with the ``packaging`` library
that mlpkg itself uses put on its path) and reports:

- ``info`` (hashed into the store path): implementation, version, ABI tag and the PEP 508
  marker values that do not depend on the host (kernel release and version are left out):
  the same Python version gives the same path on every machine;
- ``tags``: the wheel tags the interpreter accepts on *this* machine, in priority order
  (they follow the C library's version and the ``packaging`` release, so they are recorded
  with the path but not hashed; installing a wheel checks them);
- the *base* interpreter's real location, so that the store links the installation
  itself, never a virtual environment or a pyenv shim in front of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import packaging

from mlpkg.errors import ExternalNotFound

_SCRIPT = r"""
import json, os, platform, sys, sysconfig
from packaging import markers, tags
env = markers.default_environment()
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
}))
"""


def probe_python(executable: str) -> tuple[str, dict[str, Any], str, list[str]]:
    """Run the probe with ``executable``: (version, info, base interpreter, tags).

    ``executable`` is the interpreter a trusted external recipe located (see
    mlpkg.resolver.external); the probe is mlpkg's own script. It runs in an empty
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
    tags = [str(t) for t in data["tags"]]
    return str(info["version"]), info, str(data["base_executable"]), tags
