"""mlpkg's own sandbox: Linux namespaces set up by a small program of the standard library.

This file is run as a program (``python -I -S nsbox.py FD``), never imported by the child
it starts: it reads a JSON *spec* from file descriptor ``FD`` and then, in one of two
modes, becomes the sandboxed command.

``build`` mode (what bubblewrap does, for machines without it):

1. new user (the caller's uid and gid map to themselves), mount, pid, ipc, uts and,
   unless the spec allows the network, network namespaces;
2. a fresh ``tmpfs`` as the new root, holding only: the system directories (``/usr``,
   ``/bin``, ``/lib*``) and a few files of ``/etc``, read-only; the declared inputs,
   read-only, at their store locations; the build directory at ``/build``, writable; a
   private ``/tmp``; a minimal ``/dev``; a ``/proc`` of the new pid namespace;
3. ``pivot_root`` into it (the host file system is then unreachable), the root itself
   read-only, hostname ``localhost``;
4. the command runs as a child of this program, which is pid 1 of the namespace: when the
   command ends, every process it left behind is killed by the kernel, and when mlpkg
   dies (even by SIGKILL), the parent-death signal kills pid 1 and with it the build.

``ro`` mode (for ``mlpkg run``): new user and mount namespaces in which the listed
directories (the store) are read-only bind mounts of themselves; the command is exec'd in
place (same pid), with the rest of the file system as it is.

In both modes every capability is dropped before the command starts (bounding, ambient,
inheritable, permitted and effective sets, and ``no_new_privs``), so that not even root
inside can remount what was mounted read-only. A failure to set up exits 125 with one
line on stderr starting with ``nsbox:``.

The spec (JSON object): ``mode`` ("build" | "ro"), ``argv``, ``env``, ``cwd``,
``parent`` (the pid that must stay alive), ``pdeathsig``; for ``build`` also ``build``
(the build directory, seen as ``/build``), ``root`` (an empty directory inside it to mount
the new root on), ``net`` (bool), ``system`` (directories), ``etc`` (paths), ``binds``
([host, inside, read_only] triples), ``proc_read_only`` (entries of ``/proc``); for
``ro`` ``readonly``.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """The sandbox could not be made."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            src.encode() if src else None,
            dst.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {src or fstype} on {dst}",
    )


def _prctl(option: int, arg: int, what: str, ignore: tuple[int, ...] = ()) -> None:
    zero = ctypes.c_ulong(0)
    failed = _libc.prctl(option, ctypes.c_ulong(arg), zero, zero, zero) != 0
    if failed and ctypes.get_errno() not in ignore:
        _check(-1, what)


# -- namespaces -----------------------------------------------------------------------------


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _unshare(flags: int) -> None:
    """Enter new namespaces; the user namespace maps the caller's ids to themselves.
    Root may go on without a user namespace where the kernel refuses one."""
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(ctypes.c_int(flags | CLONE_NEWUSER)) == 0:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
        return
    first = ctypes.get_errno()
    if uid != 0:
        raise SetupError(f"unshare (user namespace): {os.strerror(first)}")
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


# -- mounts ---------------------------------------------------------------------------------


def _locked_flags(path: str) -> int:
    """Mount flags a remount must keep (a user namespace may not clear them)."""
    f = os.statvfs(path).f_flag
    flags = 0
    for st_flag, ms_flag in (
        (os.ST_NOSUID, MS_NOSUID),
        (os.ST_NODEV, MS_NODEV),
        (os.ST_NOEXEC, MS_NOEXEC),
        (os.ST_NOATIME, MS_NOATIME),
        (os.ST_NODIRATIME, MS_NODIRATIME),
        (os.ST_RELATIME, MS_RELATIME),
    ):
        if f & st_flag:
            flags |= ms_flag
    return flags


def _bind(src: str, dst: str, read_only: bool, recursive: bool = True) -> None:
    """Bind ``src`` on ``dst`` (created as an empty file or directory when missing)."""
    if not os.path.lexists(dst):
        if os.path.isdir(src):
            os.makedirs(dst, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.close(os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644))
    _mount(src, dst, None, MS_BIND | (MS_REC if recursive else 0))
    if read_only:
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags(dst)
        _mount(None, dst, None, flags)


def _make_dev(root: str) -> None:
    dev = root + "/dev"
    os.makedirs(dev, exist_ok=True)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755")
    for name in _DEVICES:
        if os.path.exists(f"/dev/{name}"):
            _bind(f"/dev/{name}", f"{dev}/{name}", read_only=False)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm")
    _mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")


def _make_root(spec: dict) -> None:  # type: ignore[type-arg]
    """Assemble the new root at ``spec['root']`` and pivot into it."""
    root = spec["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    for top in spec["system"]:
        if os.path.islink(top):
            os.symlink(os.readlink(top), root + top)
        elif os.path.isdir(top):
            _bind(top, root + top, read_only=True)
    for path in spec["etc"]:
        if os.path.exists(path):
            _bind(path, root + path, read_only=True)
    _make_dev(root)
    os.makedirs(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in spec["proc_read_only"]:  # kernel settings: root's uid may not write them
        if os.path.exists(f"{root}/proc/{name}"):
            _bind(f"{root}/proc/{name}", f"{root}/proc/{name}", read_only=True)
    os.makedirs(root + "/tmp")
    _mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    # The build directory holds the new root's mount point: bound alone, not recursively.
    _bind(spec["build"], root + "/build", read_only=False, recursive=False)
    for host, inside, read_only in spec["binds"]:
        if os.path.islink(host):  # seen as the link it is: never followed to the host
            os.makedirs(os.path.dirname(root + inside), exist_ok=True)
            os.symlink(os.readlink(host), root + inside)
        else:
            _bind(host, root + inside, read_only)
    os.chdir(root)
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise SetupError(f"pivot_root: unknown system call number on {os.uname().machine}")
    _check(_libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", ctypes.c_int(MNT_DETACH)), "detach the host root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _libc.sethostname(b"localhost", ctypes.c_size_t(9))


# -- capabilities and the command -----------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _drop_capabilities() -> None:
    """Leave no capability in any set, now or after exec, even for uid 0."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    for cap in range(64):
        _prctl(PR_CAPBSET_DROP, cap, "drop a capability", ignore=(errno.EINVAL,))
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "clear ambient capabilities", (errno.EINVAL,))
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")


def _exec(spec: dict) -> None:  # type: ignore[type-arg]
    try:
        os.chdir(spec["cwd"])
    except OSError as e:
        raise SetupError(f"cannot enter {spec['cwd']}: {e.strerror}") from None
    _drop_capabilities()
    if spec.get("pdeathsig"):
        _prctl(PR_SET_PDEATHSIG, spec["pdeathsig"], "parent-death signal")
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these; commands must not
        signal.signal(sig, signal.SIG_DFL)
    argv = spec["argv"]
    try:
        os.execve(argv[0], argv, spec["env"])
    except OSError as e:
        raise SetupError(f"cannot run {argv[0]}: {e.strerror}") from None


def _init(spec: dict, parent_alive: int) -> int:  # type: ignore[type-arg]
    """Pid 1 of the build's namespace: set up, start the command, reap, return its status."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, "parent-death signal")
    if select.select([parent_alive], [], [], 0)[0]:  # the outer process is gone already
        return 125
    _make_root(spec)
    child = os.fork()
    if child == 0:
        try:
            _exec(spec)
        except (SetupError, OSError) as e:
            print(f"nsbox: {e}", file=sys.stderr, flush=True)
        os._exit(125)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            return _status(status)


def _build(spec: dict) -> int:  # type: ignore[type-arg]
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if not spec.get("net"):
        flags |= CLONE_NEWNET
    _unshare(flags)
    alive_r, alive_w = os.pipe()  # closed for the child when this process dies
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        try:
            code = _init(spec, alive_r)
        except SetupError as e:
            print(f"nsbox: {e}", file=sys.stderr, flush=True)
            code = 125
        except OSError as e:
            print(f"nsbox: {e.strerror} ({e.filename})", file=sys.stderr, flush=True)
            code = 125
        os._exit(code)
    os.close(alive_r)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
    _, status = os.waitpid(pid, 0)
    return _status(status)


def _status(status: int) -> int:
    """An exit code as a shell reports it: the code, or 128 + the signal."""
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _read_only(spec: dict) -> None:  # type: ignore[type-arg]
    _unshare(CLONE_NEWNS)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for path in spec["readonly"]:
        if os.path.isdir(path) and not os.path.islink(path):
            _bind(path, path, read_only=True)
    _exec(spec)


def main(argv: list[str]) -> int:
    with os.fdopen(int(argv[1]), "rb") as f:
        spec = json.loads(f.read())
    if spec.get("pdeathsig"):
        _prctl(PR_SET_PDEATHSIG, spec["pdeathsig"], "parent-death signal")
    if spec.get("parent") and os.getppid() != spec["parent"]:
        return 125  # mlpkg died before we could follow it
    try:
        if spec["mode"] == "build":
            return _build(spec)
        if spec["mode"] != "ro":
            raise SetupError(f"unknown mode {spec['mode']!r}")
        _read_only(spec)  # returns only by exception
    except SetupError as e:
        print(f"nsbox: {e}", file=sys.stderr, flush=True)
    except OSError as e:
        print(f"nsbox: {e.strerror} ({e.filename})", file=sys.stderr, flush=True)
    return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv))
