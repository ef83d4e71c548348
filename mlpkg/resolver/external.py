"""Detecting external tools (recipe kind ``external``) on this machine.

The recipe's ``detect`` command runs with the caller's ``PATH``; the first match of
``version_regex`` in its output is the tool's version, and each listed executable is
located with ``PATH`` lookup. Only the version enters the store path hash; the locations
become the links inside the store path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from mlpkg.errors import ExternalNotFound
from mlpkg.recipes.model import Recipe
from mlpkg.resolver.derivation import Detected
from mlpkg.resolver.plancache import executable_stamp
from mlpkg.resolver.pyprobe import probe_python


class Detector:
    """Runs detection once per recipe per process.

    ``stamps`` records, for every executable located, where ``PATH`` lookup found it and
    the stamp of the file it resolves to: a cached plan is stale when either changes.
    """

    def __init__(self) -> None:
        self._cache: dict[str, Detected | ExternalNotFound] = {}
        self.stamps: dict[str, list[object]] = {}
        # True when a tool was found through a script (a pyenv or asdf shim): what it runs
        # can change with no file changing, so plans that used it are not cached.
        self.volatile = False

    def __call__(self, recipe: Recipe) -> Detected:
        key = f"{recipe.name}\0{recipe.external!r}"
        if key not in self._cache:
            try:
                self._cache[key] = detect(recipe)
            except ExternalNotFound as e:
                self._cache[key] = e
        found = self._cache[key]
        if isinstance(found, ExternalNotFound):
            raise found
        for exe in sorted(found.locations):
            self.stamps[exe] = executable_stamp(exe)
            self.volatile = self.volatile or _is_script(shutil.which(exe))
        return found


def _is_script(path: str | None) -> bool:
    try:
        with open(path or "", "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def detect(recipe: Recipe) -> Detected:
    ext = recipe.external
    assert ext is not None
    try:
        r = subprocess.run(
            ["/bin/sh", "-c", ext.detect],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ExternalNotFound(
            f"Cannot detect {recipe.name}: `{ext.detect}` did not run ({e}).", package=recipe.name
        ) from None
    output = r.stdout + r.stderr
    match = re.search(ext.version_regex, output) if r.returncode == 0 else None
    if match is None:
        why = f"exited {r.returncode}" if r.returncode else "printed no version"
        raise ExternalNotFound(
            f"The external tool {recipe.name} was not found on this machine: `{ext.detect}` {why}.",
            details=[line for line in output.splitlines()[:5]],
            hint=f"Install {recipe.name}, or put it on PATH.",
            package=recipe.name,
        )
    locations: dict[str, str] = {}
    for exe in ext.executables:
        where = shutil.which(exe)
        if where is None:
            raise ExternalNotFound(
                f"The external tool {recipe.name} {match.group(1)} has no executable "
                f"'{exe}' on PATH.",
                package=recipe.name,
            )
        locations[exe] = os.path.abspath(where)
    if ext.probe == "python":
        version, info, base, tags = probe_python(locations[ext.executables[0]])
        return Detected(version, dict.fromkeys(ext.executables, base), info, tags)
    return Detected(match.group(1), locations)
