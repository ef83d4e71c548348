"""Build sandboxes (invariant 4): builds see only their declared inputs.

A build is a bash script run with a clean environment (``out``, one variable per input,
``PATH`` made of the inputs' ``bin`` directories and the system's, a private ``HOME`` and
``TMPDIR``, ``SOURCE_DATE_EPOCH`` fixed, ``TZ=UTC``, ``LC_ALL=C``, ``PYTHONHASHSEED=0``,
umask 022), and, by the best mechanism this machine has:

- ``bubblewrap``: new user, mount, pid, ipc, uts and network namespaces; the system's
  ``/usr`` (and ``/bin``, ``/lib*``), a few files of ``/etc``, the declared inputs
  (read-only, at their store locations) and the build directory at the fixed path
  ``/build`` ($out is ``/build/out``). The rest of the store, the user's home and ``/tmp``
  are invisible. The network is shared only with builds that declare it.
- ``namespace``: the same file system view and namespaces, made by mlpkg itself
  (:mod:`mlpkg.store.nsbox`) with the kernel's system calls, for machines without
  bubblewrap.
- ``none``: only the clean environment; the host is visible. Never chosen silently: only
  ``--no-sandbox`` or ``MLPKG_SANDBOX=none`` selects it, and the build log says so.

Under both sandboxes the build is pid 1's child in a pid namespace: whatever it starts in
the background dies with it, and it dies with mlpkg (even when mlpkg is SIGKILLed). Inputs
are read-only mounts, so not even root inside can change a store path; every capability
is dropped.

``MLPKG_SANDBOX`` (``bubblewrap`` | ``namespace`` | ``none``) forces a mechanism. Where
neither sandbox can be made, :func:`detect` refuses (BadInput) and says how to get one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mlpkg.errors import BadInput, BuildError, StoreError

SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date zip files can hold
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
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
KINDS = ("bubblewrap", "namespace", "none")
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
FIXED_OUT = "/build/out"  # $out inside a sandbox; it must not survive into the output
NSBOX = Path(__file__).with_name("nsbox.py")
_FIXED_ENV = (
    "PATH", "HOME", "TMPDIR", "out", "SOURCE_DATE_EPOCH", "TZ", "LC_ALL", "LANG", "TERM",
    "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "name", "version",
)  # fmt: skip
RESERVED_NAMES = frozenset(_FIXED_ENV)
"""Variables the sandbox sets itself: an input may not be named after one of them."""
NO_SANDBOX_HINT = (
    "Install bubblewrap (Debian and Ubuntu: apt-get install bubblewrap), or allow user "
    "namespaces (sysctl kernel.unprivileged_userns_clone=1, or "
    "kernel.apparmor_restrict_unprivileged_userns=0); to build without a sandbox anyway, "
    "pass --no-sandbox (recorded in each build log)."
)


@functools.cache
def _probe_bubblewrap() -> bool:
    if shutil.which("bwrap") is None:
        return False
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    try:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.cache
def _probe_namespace() -> bool:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlpkg-probe-") as tmp:
        build = Path(tmp) / "build"
        (build / "src").mkdir(parents=True)
        spec = _nsbox_spec(
            ["/bin/sh", "-c", "exit 0"], {}, build, inputs=(), network=False, cwd="/"
        )
        try:
            proc = popen_nsbox(spec, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return proc.wait(timeout=10) == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


def available() -> list[str]:
    """The sandboxes that work on this machine, best first (``none`` always works)."""
    found = [k for k, probe in (("bubblewrap", _probe_bubblewrap),
                                ("namespace", _probe_namespace)) if probe()]  # fmt: skip
    return [*found, "none"]


@functools.cache
def detect() -> str:
    """The best sandbox that works here, honouring ``MLPKG_SANDBOX``.

    Raises BadInput, saying how to get a sandbox, where neither bubblewrap nor mlpkg's
    own namespaces work and ``none`` was not asked for explicitly."""
    forced = os.environ.get("MLPKG_SANDBOX")
    if forced:
        if forced not in KINDS:
            raise BadInput(f"MLPKG_SANDBOX must be one of {', '.join(KINDS)}, not '{forced}'.")
        return forced
    best = available()[0]
    if best == "none":
        raise BadInput(
            "No build sandbox works on this machine: bubblewrap is missing or fails, and "
            "the kernel refuses mlpkg a user and mount namespace.",
            hint=NO_SANDBOX_HINT,
        )
    return best


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
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if req.network:
        argv.append("--share-net")
    for top in SYSTEM_DIRS:
        host = Path(top)
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    for name in _ETC:
        if os.path.lexists(f"/etc/{name}"):
            argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for name in PROC_READ_ONLY:  # kernel settings: the build's uid may be the host's root
        argv += ["--ro-bind-try", f"/proc/{name}", f"/proc/{name}"]
    argv += ["--bind", str(req.build_dir), "/build"]
    for host in [*req.inputs.values(), *req.ro_paths]:
        if host.is_symlink():  # seen as the link it is: never followed to the host
            argv += ["--symlink", os.readlink(host), str(host)]
        else:
            argv += ["--ro-bind", str(host), str(host)]
    argv += ["--remount-ro", "/", "--chdir", "/build/src", "--hostname", "localhost"]
    return argv


def _nsbox_spec(
    argv: list[str],
    env: Mapping[str, str],
    build_dir: Path,
    *,
    inputs: Sequence[Path],
    network: bool,
    cwd: str = "/build/src",
) -> dict[str, object]:
    """The spec of :mod:`mlpkg.store.nsbox`'s build mode (the view bubblewrap gives)."""
    root = build_dir / ".root"  # the new root's mount point (empty to the build)
    root.mkdir(exist_ok=True)
    binds = [[str(p), str(p), True] for p in inputs]
    return {
        "mode": "build",
        "argv": argv,
        "env": dict(env),
        "cwd": cwd,
        "build": str(build_dir),
        "root": str(root),
        "net": network,
        "system": list(SYSTEM_DIRS),
        "etc": [f"/etc/{name}" for name in _ETC],
        "proc_read_only": list(PROC_READ_ONLY),
        "binds": binds,
        "parent": os.getpid(),
        "pdeathsig": int(signal.SIGKILL),
    }


def popen_nsbox(spec: Mapping[str, object], **kw: object) -> subprocess.Popen[bytes]:
    """Start nsbox with ``spec`` (passed through a pipe, however large it is)."""
    read, write = os.pipe()
    try:
        proc = subprocess.Popen(  # type: ignore[call-overload]
            [sys.executable, "-I", "-S", str(NSBOX), str(read)],
            pass_fds=(read,),
            env={},
            **kw,
        )
    finally:
        os.close(read)
    with open(write, "wb") as f:
        f.write(json.dumps(spec).encode())
    return proc  # type: ignore[no-any-return]


def readonly_spec(
    argv: Sequence[str], env: Mapping[str, str], readonly: Sequence[Path], pdeathsig: int
) -> dict[str, object]:
    """For ``mlpkg run``: the nsbox spec that runs ``argv`` (an absolute program) in
    place (same pid), with the ``readonly`` directories (the store) mounted read-only and
    every capability dropped; start it with :func:`popen_nsbox`."""
    return {
        "mode": "ro",
        "argv": list(argv),
        "env": dict(env),
        "cwd": os.getcwd(),
        "readonly": [str(p) for p in readonly],
        "parent": os.getpid(),
        "pdeathsig": pdeathsig,
    }


@functools.cache
def run_isolation() -> str:
    """How ``mlpkg run`` makes the store read-only for an app: ``namespace`` (nsbox in
    place), ``bubblewrap`` (the host's view with the store bound read-only), or ``none``
    (only with ``--no-sandbox``/``MLPKG_SANDBOX=none``). Raises like :func:`detect`."""
    kind = detect()
    if kind == "none" or os.environ.get("MLPKG_SANDBOX") == "bubblewrap":
        return kind
    if _probe_namespace():
        return "namespace"
    return "bubblewrap"


def bwrap_readonly_argv(argv: Sequence[str], readonly: Sequence[Path]) -> list[str]:
    """``argv`` under bubblewrap with the host's file system, ``readonly`` read-only."""
    wrapped = ["bwrap", "--dev-bind", "/", "/", "--die-with-parent", "--cap-drop", "ALL"]
    for p in readonly:
        wrapped += ["--ro-bind", str(p), str(p)]
    return [*wrapped, "--", *argv]


def _env(req: BuildRequest, root: str) -> dict[str, str]:
    clash = sorted(RESERVED_NAMES & set(req.inputs))
    if clash:
        raise BadInput(
            f"The input '{clash[0]}' has the name of a variable the build sandbox sets "
            f"itself; rename the input (reserved: {', '.join(sorted(RESERVED_NAMES))})."
        )
    bins = [str(p / "bin") for p in req.inputs.values() if (p / "bin").is_dir()]
    env = {k: str(v) for k, v in req.inputs.items()}
    env.update(req.extra_env)
    env.update({
        "PATH": ":".join([*bins, SYSTEM_PATH]),
        "HOME": f"{root}/home",
        "TMPDIR": f"{root}/tmp",
        "out": f"{root}/out",  # FIXED_OUT under a sandbox
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        "TZ": "UTC",
        "LC_ALL": "C",
        "LANG": "C",
        "TERM": "dumb",
        "PYTHONHASHSEED": "0",  # set iteration order in Python-driven builds
        "PYTHONDONTWRITEBYTECODE": "1",
    })  # fmt: skip
    return env


def run(req: BuildRequest, kind: str | None = None) -> Path:
    """Run the script; return the output location (``build_dir/out``) on success.

    Raises BuildError naming the log when the script fails or makes no ``$out``, and
    StoreError naming the directory when the log cannot be written (a full disk).
    """
    kind = kind or detect()
    for sub in ("src", "home", "tmp"):
        (req.build_dir / sub).mkdir(parents=True, exist_ok=True)
    (req.build_dir / "builder.sh").write_text(req.script)
    root = str(req.build_dir) if kind == "none" else "/build"
    env = _env(req, root)
    command = ["/bin/bash", "-eo", "pipefail", f"{root}/builder.sh"]
    header = f"mlpkg: sandbox {describe(kind)}\n"
    if kind == "bubblewrap":
        code = _spawn([*_bwrap_argv(req), *command], env, req, header)
    elif kind == "namespace":
        spec = _nsbox_spec(command, env, req.build_dir, network=req.network,
                           inputs=[*req.inputs.values(), *req.ro_paths])  # fmt: skip
        code = _spawn(None, spec, req, header)
    else:
        code = _spawn(command, env, req, header)
    out = req.build_dir / "out"
    if code != 0:
        raise BuildError(
            f"The build script failed with exit code {code}; its log is {req.log}.",
            details=_tail(req.log),
        )
    if not os.path.lexists(out):
        raise BuildError(f"The build script did not create $out; its log is {req.log}.")
    return out


def _spawn(
    argv: list[str] | None, env_or_spec: Mapping[str, object], req: BuildRequest, header: str
) -> int:
    """Run the build (``argv`` with ``env``, or nsbox with a spec when ``argv`` is None)
    in its own session, its output copied to the log; kill it all on any exception."""
    req.log.parent.mkdir(parents=True, exist_ok=True)
    try:
        logf = open(req.log, "wb")  # noqa: SIM115 (closed below, after the copier)
        logf.write(header.encode())
    except OSError as e:
        raise _log_error(req.log, e) from None
    kw: dict[str, object] = dict(
        cwd=req.build_dir / "src", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, umask=0o022,
        preexec_fn=functools.partial(set_parent_death_signal, int(signal.SIGKILL), os.getpid()),
    )  # fmt: skip
    try:
        if argv is None:
            proc = popen_nsbox(env_or_spec, **kw)
        else:
            proc = subprocess.Popen(argv, env=env_or_spec, **kw)  # type: ignore[call-overload]
        copier = _LogCopier(proc.stdout, logf, req.echo, on_failure=lambda: _kill_group(proc))
        copier.start()
        try:
            code = proc.wait()
        finally:  # nothing of the build outlives it, not even under --no-sandbox
            _kill_group(proc)
            proc.wait()
            copier.join(timeout=5)
    finally:
        with contextlib.suppress(OSError):
            logf.close()
    if copier.failure is not None:
        raise _log_error(req.log, copier.failure)
    return int(code)


def _log_error(log: Path, e: OSError) -> StoreError:
    if e.errno == errno.ENOSPC:
        return StoreError(
            f"The build log {log} could not be written: no space is left on the device "
            f"holding {log.parent}; the build was stopped.",
            hint="Free space there (`mlpkg gc` deletes unreachable paths and debris).",
        )
    return StoreError(f"The build log {log} could not be written: {e.strerror}.")


class _LogCopier(threading.Thread):
    """Copies the build's output to its log (and ``-v``'s echo) in bounded chunks. On the
    first write error (kept in ``failure``) it calls ``on_failure`` (which stops the
    build) and reads on, so nothing ever blocks on a full pipe."""

    def __init__(
        self,
        pipe: IO[bytes] | None,
        logf: IO[bytes],
        echo: IO[str] | None,
        on_failure: Callable[[], None],
    ) -> None:
        super().__init__(daemon=True)
        assert pipe is not None
        self.pipe, self.logf, self.echo = pipe, logf, echo
        self.on_failure = on_failure
        self.failure: OSError | None = None

    def run(self) -> None:
        fd = self.pipe.fileno()
        while chunk := os.read(fd, 65536):
            if self.failure is None:
                try:
                    self.logf.write(chunk)
                except OSError as e:
                    self.failure = e
                    self.on_failure()  # a build whose log is lost is stopped
            if self.echo is not None:
                self.echo.write(chunk.decode(errors="replace"))
                self.echo.flush()
        if self.failure is None:
            try:
                self.logf.flush()
            except OSError as e:
                self.failure = e


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of the build's process group (its session's first group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


_prctl: Callable[..., int] | None
try:  # looked up before any fork: the child only calls it
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def set_parent_death_signal(signum: int, parent: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies. Meant for a
    child between fork and exec (``preexec_fn``, bound with ``parent``, the pid of the
    process that forks, taken before the fork): it only calls prctl() and getppid().

    A parent killed after the fork but before the prctl() sends no signal: the child is
    already an orphan. So it checks its parent afterwards, and exits at once (without
    running the command) when that is no longer ``parent``."""
    if _prctl is not None:
        _prctl(1, signum, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(128 + signum)


def _tail(log: Path, lines: int = 15) -> list[str]:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [f"log: {line}" for line in text[-lines:]]


def describe(kind: str) -> str:
    return {
        "bubblewrap": "bubblewrap (private namespaces; only declared inputs visible)",
        "namespace": "namespace (private namespaces made by mlpkg; only declared inputs visible)",
        "none": "none (--no-sandbox or MLPKG_SANDBOX=none: the build saw the host)",
    }[kind]
