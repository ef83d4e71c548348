"""Build sandboxes (invariant 4): builds see only their declared inputs.

A build is a bash script run with a clean environment (``out``, one variable per input,
``PATH`` made of the inputs' ``bin`` directories and the system's, a private ``HOME`` and
``TMPDIR``, ``SOURCE_DATE_EPOCH`` fixed, ``TZ=UTC``, ``LC_ALL=C``, ``PYTHONHASHSEED=0``,
umask 022), and, by the best mechanism this machine has:

- ``bubblewrap``: new user, mount, pid, ipc, uts and network namespaces; the system's
  ``/usr`` (and ``/bin``, ``/lib*``), a few files of ``/etc``, the declared inputs
  (read-only, at their store locations) and the build directory at the fixed path
  ``/build`` ($out is ``/build/out``). The rest of the store, the user's home and ``/tmp``
  are invisible. The network is shared only with fixed-output builds.
- ``unshare``: ``unshare -n`` (``-rn`` when not root): no network, but the file system
  is the host's.
- ``none``: only the clean environment. ``-v`` says so.

``MLPKG_SANDBOX`` (``bubblewrap`` | ``unshare`` | ``none``) forces a mechanism.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mlpkg.errors import BadInput, BuildError

SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date zip files can hold
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
_ETC = (
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "passwd",
    "group",
    "nsswitch.conf",
    "hosts",
    "localtime",
    "ssl",
    "ca-certificates",
    "resolv.conf",
)
KINDS = ("bubblewrap", "unshare", "none")
FIXED_OUT = "/build/out"  # $out inside bubblewrap; it must not survive into the output


@functools.cache
def detect() -> str:
    """The best sandbox that works here (honouring ``MLPKG_SANDBOX``)."""
    forced = os.environ.get("MLPKG_SANDBOX")
    if forced:
        if forced not in KINDS:
            raise BadInput(f"MLPKG_SANDBOX must be one of {', '.join(KINDS)}, not '{forced}'.")
        return forced
    probes = {
        "bubblewrap": ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"],
        "unshare": ["unshare", "-n" if os.geteuid() == 0 else "-rn", "true"],
    }
    for kind, argv in probes.items():
        if shutil.which(argv[0]) is None:
            continue
        try:
            r = subprocess.run(argv, capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return kind
    return "none"


@dataclass
class BuildRequest:
    """One script to run. ``inputs`` maps variable names to store locations on the host."""

    script: str
    inputs: Mapping[str, Path]
    build_dir: Path  # private, empty; the output is made at build_dir/out
    log: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    network: bool = False
    echo: IO[str] | None = None  # also copy the log here (``-v``)
    ro_paths: Sequence[Path] = ()  # host locations the inputs link to (externals)


def _bwrap_argv(req: BuildRequest) -> list[str]:
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
    if req.network:
        argv.append("--share-net")
    for top in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / top
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    for name in _ETC:
        if os.path.lexists(f"/etc/{name}"):
            argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    argv += ["--bind", str(req.build_dir), "/build"]
    for host in [*req.inputs.values(), *req.ro_paths]:
        argv += ["--ro-bind", str(host), str(host)]
    argv += ["--chdir", "/build/src"]
    return argv


def _env(req: BuildRequest, root: str) -> dict[str, str]:
    bins = [str(p / "bin") for p in req.inputs.values() if (p / "bin").is_dir()]
    env = {
        "PATH": ":".join([*bins, SYSTEM_PATH]),
        "HOME": f"{root}/home",
        "TMPDIR": f"{root}/tmp",
        "out": f"{root}/out",  # FIXED_OUT under bubblewrap
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        "TZ": "UTC",
        "LC_ALL": "C",
        "LANG": "C",
        "TERM": "dumb",
        "MLPKG_BUILD_CORES": str(os.cpu_count() or 1),
        "PYTHONHASHSEED": "0",  # set iteration order in Python-driven builds
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(req.extra_env)
    env.update({k: str(v) for k, v in req.inputs.items()})
    return env


def run(req: BuildRequest, kind: str | None = None) -> Path:
    """Run the script; return the output location (``build_dir/out``) on success.

    Raises BuildError naming the log when the script fails or makes no ``$out``.
    """
    kind = kind or detect()
    for sub in ("src", "home", "tmp"):
        (req.build_dir / sub).mkdir(parents=True, exist_ok=True)
    (req.build_dir / "builder.sh").write_text(req.script)
    root = "/build" if kind == "bubblewrap" else str(req.build_dir)
    script = f"{root}/builder.sh"
    if kind == "bubblewrap":
        argv = [*_bwrap_argv(req), "/bin/bash", "-eo", "pipefail", script]
    elif kind == "unshare" and not req.network:
        flag = "-n" if os.geteuid() == 0 else "-rn"
        argv = ["unshare", flag, "/bin/bash", "-eo", "pipefail", script]
    else:
        argv = ["/bin/bash", "-eo", "pipefail", script]
    code = _spawn(argv, _env(req, root), req.build_dir / "src", req.log, req.echo)
    out = req.build_dir / "out"
    if code != 0:
        raise BuildError(
            f"The build script failed with exit code {code}; its log is {req.log}.",
            details=_tail(req.log),
        )
    if not os.path.lexists(out):
        raise BuildError(f"The build script did not create $out; its log is {req.log}.")
    return out


def _spawn(argv: list[str], env: dict[str, str], cwd: Path, log: Path, echo: IO[str] | None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=0o022,
        )
        assert proc.stdout is not None
        copier = threading.Thread(target=_copy, args=(proc.stdout, logf, echo), daemon=True)
        copier.start()
        try:
            code = proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            copier.join(timeout=5)
    return code


def _copy(src: IO[bytes], logf: IO[bytes], echo: IO[str] | None) -> None:
    for line in iter(src.readline, b""):
        logf.write(line)
        if echo is not None:
            echo.write(line.decode(errors="replace"))
            echo.flush()
    logf.flush()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(log: Path, lines: int = 15) -> list[str]:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [f"log: {line}" for line in text[-lines:]]


def describe(kind: str) -> str:
    return {
        "bubblewrap": "bubblewrap (private namespaces; only declared inputs visible)",
        "unshare": "unshare -n (no network; the host file system is visible)",
        "none": "none: neither bubblewrap nor unshare works here, builds see the host",
    }[kind]
