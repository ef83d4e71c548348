"""Detecting external tools (recipe kind ``external``) on this machine.

The recipe's ``detect`` command runs with the caller's ``PATH``; the first match of
``version_regex`` in its output is the tool's version, and each listed executable is
located with ``PATH`` lookup. Only the version enters the store path hash; the locations
become the links inside the store path.

Detection is the one place where a recipe runs a command on the host, outside any
sandbox, so only trusted recipes may be detected (docs/trust.md): those of the local
recipe collection. A recipe read from a lockfile is detected only when its detection
(:func:`detection`) is the one the collection has for that name (:func:`untrusted`).
Commands run in an empty temporary directory, so that nothing in the caller's working
directory (a ``platform.py`` beside a colleague's lock) is picked up by them, and
executables are looked up in the absolute entries of ``PATH`` only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

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
            self.volatile = self.volatile or _is_script(which(exe))
        return found


def _is_script(path: str | None) -> bool:
    try:
        with open(path or "", "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def which(exe: str) -> str | None:
    """``exe`` looked up in the absolute entries of ``PATH`` (an empty or relative entry
    would find whatever lies in the working directory)."""
    entries = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return shutil.which(exe, path=os.pathsep.join(p for p in entries if os.path.isabs(p)))


def detect(recipe: Recipe) -> Detected:
    """Run ``recipe``'s detection on this machine (a trusted recipe: the caller checks).

    The detect command runs with ``/bin/sh`` in an empty temporary directory; the version
    is the first group of ``version_regex`` in its output; ExternalNotFound when it fails,
    prints no version or an executable is not on ``PATH``.
    """
    ext = recipe.external
    assert ext is not None
    try:
        with tempfile.TemporaryDirectory(prefix="mlpkg-detect-") as empty:
            r = subprocess.run(
                ["/bin/sh", "-c", ext.detect],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "LC_ALL": "C"},
                cwd=empty,
                stdin=subprocess.DEVNULL,
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
        where = which(exe)
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


# What decides which commands detection runs on the host, and how its output is read.
DETECTION_FIELDS = ("detect", "executables", "probe", "version_regex")


def detection(recipe: Recipe) -> dict[str, object]:
    """The fields of ``recipe``'s ``[external]`` table that detection acts on."""
    ext = recipe.external
    assert ext is not None
    return {k: getattr(ext, k) for k in DETECTION_FIELDS}


def untrusted(recipe: Recipe, trusted: Sequence[Recipe]) -> str | None:
    """None when the external ``recipe`` is detected exactly as one of ``trusted`` (the
    local collection's external recipes of that name) is; otherwise one sentence naming
    the external, its detect command and the trusted one (and any other field that
    differs). Nothing is run."""
    mine = detection(recipe)
    theirs = [detection(t) for t in trusted if t.external is not None]
    if mine in theirs:
        return None
    ours = f"`{mine['detect']}`"
    if not theirs:
        return (
            f"external {recipe.name} would be detected with {ours}, but the local recipe "
            f"collection has no external recipe {recipe.name} to trust (no trusted command)"
        )
    other = theirs[0]
    differ = [k for k in DETECTION_FIELDS if k != "detect" and mine[k] != other[k]]
    extra = "".join(f", {k} {mine[k]!r} instead of {other[k]!r}" for k in differ)
    return (
        f"external {recipe.name} would be detected with {ours}{extra}, but the local "
        f"recipe collection trusts only `{other['detect']}` for {recipe.name}"
    )
