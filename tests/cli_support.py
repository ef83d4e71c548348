"""What the CLI tests share outside fixtures: the result of one ``mlpkg`` invocation, and
a bin directory whose ``python3`` is this machine's real interpreter (not a shim)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class CliResult:
    """What one ``mlpkg`` invocation did: exit code, stdout and stderr (text)."""

    code: int
    out: str
    err: str
    args: tuple[str, ...] = ()

    def ok(self) -> CliResult:
        """This result, after checking that the command succeeded."""
        assert self.code == 0, str(self)
        return self

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return (
            f"mlpkg {' '.join(self.args)} -> {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"
        )


def python_bin(where: Path) -> Path:
    """A bin directory whose python3 is this machine's real interpreter (not a shim: a plan
    that used a shim is never cached)."""
    where.mkdir(parents=True, exist_ok=True)
    real = os.path.realpath(sys.executable)
    for exe in ("python3", "python"):
        if not (where / exe).exists():
            (where / exe).symlink_to(real)
    return where


def python_path(where: Path) -> dict[str, str]:
    """``env`` for the CLI: PATH starting with :func:`python_bin` at ``where``."""
    return {"PATH": f"{python_bin(where)}:/usr/local/bin:/usr/bin:/bin"}


REPO = Path(__file__).resolve().parents[1]


def mlpkg_in(home: Path, *args: str, timeout: float = 120) -> CliResult:
    """``mlpkg ARGS`` as a subprocess with its own MLPKG_HOME and the bundled recipes (no
    other MLPKG_ variable passes, except a download cache CI shares: MLPKG_CACHE_DIR)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPKG_")}
    env["MLPKG_HOME"] = str(home)
    cache = os.environ.get("MLPKG_CACHE_DIR")
    if cache:
        env["MLPKG_CACHE_DIR"] = cache
    p = subprocess.run([sys.executable, "-m", "mlpkg", *args], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)  # fmt: skip
    return CliResult(p.returncode, p.stdout, p.stderr, args)
