"""File-system helpers: canonical permissions and robust removal of store content,
durable atomic replacement of the small files mlpkg keeps beside it, and the write-back of
a whole tree before it is renamed into the store (:func:`sync_tree`: one syncfs where it
can be trusted, Linux 5.8 or later on a local file system, else an fsync of every file and
directory)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Protocol

_CHUNK = 1 << 20


class Hasher(Protocol):
    """What :func:`copy_file` feeds: a ``hashlib`` object."""

    def update(self, data: bytes, /) -> None: ...


# Extended attributes that are not removed (nor reported by verify), as Nix leaves them: a
# security module's label or a network file system's ACL, which the host gives every file
# (removing them fails, or they come back); they grant a program nothing.
KEPT_XATTRS = frozenset({"security.selinux", "system.nfs4_acl", "security.csm"})


def extended_attributes(path: Path | str) -> list[str]:
    """The names of ``path``'s extended attributes (its own: a symlink is not followed)
    that :func:`canonicalise` removes, sorted: all but :data:`KEPT_XATTRS`. Empty where
    the file system or the platform has none."""
    if not hasattr(os, "listxattr"):
        return []
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.ENODATA):
            return []
        raise
    return sorted(n for n in names if n not in KEPT_XATTRS)


def _remove_xattrs(path: str, st: os.stat_result) -> None:
    """Remove every extended attribute of ``path`` but :data:`KEPT_XATTRS` (a file
    capability such as ``security.capability``, ``user.*``, ACLs), never following a
    symlink. A symlink, or a file system, that refuses (EPERM, ENOTSUP) is left as it is:
    no program runs with a symlink's attributes."""
    names = extended_attributes(path)
    if not names:
        return
    link = stat.S_ISLNK(st.st_mode)
    plain = stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)
    if plain and not st.st_mode & stat.S_IWUSR:  # user.* needs write permission
        os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)  # canonicalise resets it
    for name in names:
        try:
            os.removexattr(path, name, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENODATA:  # gone meanwhile
                continue
            if e.errno == errno.ENOTSUP or (link and e.errno == errno.EPERM):
                continue
            raise


def canonicalise(root: Path) -> None:
    """Make a tree read-only with canonical modes: 0555 for directories and executables,
    0444 for other files, and no extended attributes (a file capability set with
    ``setcap`` would otherwise survive into the store; but see :data:`KEPT_XATTRS`).
    Symlinks keep their mode (it means nothing on Linux), and are never followed: a root
    that is a symlink is not walked (its own extended attributes are removed)."""
    if os.path.islink(root):
        _remove_xattrs(str(root), os.lstat(root))
        return
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            _remove_xattrs(p, st)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, 0o555 if st.st_mode & stat.S_IXUSR else 0o444)
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                _remove_xattrs(p, os.lstat(p))
                os.chmod(p, 0o555)
    st = os.lstat(root)
    _remove_xattrs(str(root), st)
    if stat.S_ISDIR(st.st_mode):
        os.chmod(root, 0o555)
    elif stat.S_ISREG(st.st_mode):
        os.chmod(root, 0o555 if st.st_mode & stat.S_IXUSR else 0o444)


def make_writable(root: Path) -> None:
    """Give the owner write access to every directory of a tree, so it can be removed."""
    if not os.path.isdir(root) or os.path.islink(root):
        return
    os.chmod(root, 0o755)
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                with contextlib.suppress(OSError):
                    os.chmod(p, 0o755)


def remove_tree(path: Path) -> None:
    """Remove a file, symlink or directory tree, read-only or not; missing is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        make_writable(path)
        shutil.rmtree(path)
    else:
        os.unlink(path)


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a rename, a new name) durable. File systems that cannot
    sync a directory (EINVAL), and directories that cannot be opened for reading, are left
    as they are: there is nothing more to do."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except PermissionError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_atomic_bytes(file: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``file`` with ``data`` so that a reader sees the old or the new content,
    never part of it, even after a power loss (as a database would): a temporary file in
    the same directory is written and fsynced, renamed onto ``file``, then the directory
    is fsynced. The file gets ``mode`` less the process umask (0644 under umask 022: a
    lockfile is shared). On any error ``file`` is unchanged and no temporary is left."""
    tmp = file.with_name(f".{file.name}.{secrets.token_hex(4)}")
    try:
        # open() applies the umask to ``mode``, as for any new file
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(file.parent)


def write_atomic(file: Path, text: str, mode: int = 0o644) -> None:
    """:func:`write_atomic_bytes` of ``text`` encoded as UTF-8."""
    write_atomic_bytes(file, text.encode("utf-8"), mode)


def copy_file(
    src: Path | BinaryIO,
    dest: Path | BinaryIO,
    *hashes: Hasher,
    mode: int = 0o644,
    sync: bool = False,
) -> None:
    """Copy the regular file ``src`` to ``dest``, reading ``src`` once and feeding every
    byte written to each of ``hashes``: what they digest is exactly what ``dest`` holds,
    even if ``src`` changes meanwhile. ``src`` is a path, or a binary file open for
    reading (read from where it stands). ``dest`` is a path that must not exist (created
    with ``mode`` less the umask, and removed again if the copy fails), or a binary file
    open for writing (written where it stands; the caller owns it). ``sync`` fsyncs
    ``dest`` before returning."""
    with contextlib.ExitStack() as stack:
        fin = stack.enter_context(open(src, "rb")) if isinstance(src, Path) else src
        if not isinstance(dest, Path):
            _copy_stream(fin, dest, hashes, sync)
            return
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            with os.fdopen(fd, "wb") as fout:
                _copy_stream(fin, fout, hashes, sync)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
            raise


def _copy_stream(fin: BinaryIO, fout: BinaryIO, hashes: tuple[Hasher, ...], sync: bool) -> None:
    while chunk := fin.read(_CHUNK):
        fout.write(chunk)
        for h in hashes:
            h.update(chunk)
    fout.flush()
    if sync:
        os.fsync(fout.fileno())


def copy_atomic(src: Path, dest: Path, mode: int = 0o644) -> None:
    """Replace ``dest`` with a copy of ``src``, atomically and durably (as
    :func:`write_atomic_bytes` does for bytes)."""
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}")
    try:
        copy_file(src, tmp, mode=mode, sync=True)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(dest.parent)


def symlink_atomic(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` atomically (a new link, renamed onto ``link``) and
    durably (the directory is fsynced after the rename)."""
    tmp = link.with_name(f".{link.name}.{secrets.token_hex(4)}")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(link.parent)


_SYNC_JOBS = 8  # files fsynced at once by sync_tree


def sync_tree(root: Path) -> None:
    """Make a tree's content durable before it is renamed into place: every regular file
    and every directory of ``root``, never following a symlink. Call it on a temporary
    path before the rename that makes it valid, then :func:`fsync_dir` on the parent after
    it.

    Where ``syncfs`` can be trusted, one call writes back the whole file system that holds
    ``root`` and waits for it (data, metadata and the journal, with the disk's cache
    flushed): the tree's files and directories are among what it writes. It is trusted
    only on Linux 5.8 or later (before, it returned 0 even when write-back failed, so a
    path whose data never reached the disk would be registered) and on a local file
    system (FUSE has no ``sync_fs`` of its own, so syncfs does nothing there, and a
    network file system's is not a flush of the server's data either: see
    :func:`syncfs_trusted_fstype`). Elsewhere, or if syncfs fails with ENOSYS, EPERM or
    EINVAL (a seccomp filter, a sandboxed kernel), every file is fsynced (several at once)
    and then every directory, bottom-up, ``root`` last; a file that is ``root`` itself is
    fsynced alone. Any other syncfs error (EIO, ENOSPC...) is raised."""
    if _syncfs(root):
        return
    _fsync_tree(root)


# Errors of syncfs that mean "not available here" rather than "the data was not written".
_SYNCFS_UNAVAILABLE = frozenset({errno.ENOSYS, errno.EPERM, errno.EINVAL})

# File systems whose syncfs is not trusted: FUSE (no sync_fs: syncfs is a no-op) and
# network or cluster file systems (the flush, if any, is not the server's).
_UNTRUSTED_FSTYPES = frozenset(
    {"9p", "afs", "ceph", "cifs", "davfs", "gfs2", "glusterfs", "lustre", "ncpfs", "ocfs2"}
    | {"orangefs", "smb", "smbfs", "smb3", "virtiofs", "beegfs", "gpfs"}
)
_UNTRUSTED_PREFIXES = ("fuse", "nfs", "smb")


def syncfs_trusted_kernel(release: str) -> bool:
    """Whether a Linux kernel of this ``os.uname().release`` (``"5.8.0-63-generic"``)
    reports write-back errors from syncfs: 5.8 or later. False for what cannot be
    parsed."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if m is None:
        return False
    return (int(m.group(1)), int(m.group(2))) >= (5, 8)


def syncfs_trusted_fstype(fstype: str) -> bool:
    """Whether syncfs on a file system of this type (the mountinfo's, ``"ext4"``,
    ``"fuse.sshfs"``) writes its data back: False for FUSE and network file systems."""
    base = fstype.lower()
    if base.startswith(_UNTRUSTED_PREFIXES):
        return False
    return base not in _UNTRUSTED_FSTYPES


def _unescape_mount(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_fstype(path: str, mountinfo: str) -> str | None:
    """The type of the file system mounted at the deepest mount point that holds the
    absolute, resolved ``path``, from the text of ``/proc/self/mountinfo`` (the last such
    mount wins: it hides the earlier ones); None where none does."""
    best: tuple[int, int, str] | None = None
    for i, line in enumerate(mountinfo.splitlines()):
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) <= sep + 1:
            continue
        point = _unescape_mount(fields[4])
        inside = path == point or point == "/" or path.startswith(point.rstrip("/") + "/")
        if not inside:
            continue
        key = (len(point), i, fields[sep + 1])
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best else None


_MOUNTINFO = "/proc/self/mountinfo"


def _syncfs_trusted(where: Path) -> bool:
    """Whether syncfs can stand for the fsyncs of the tree at ``where`` (see
    :func:`sync_tree`). The mount table is read each time (a few hundred lines): a device
    number is no key to remember it by, since an unmounted file system's can be given to
    the next one mounted, a FUSE one included."""
    if not syncfs_trusted_kernel(os.uname().release):
        return False
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            info = f.read()
    except OSError:
        return False  # unknown: not trusted
    fstype = mount_fstype(os.path.realpath(where), info)
    return fstype is not None and syncfs_trusted_fstype(fstype)


def _syncfs(root: Path) -> bool:
    """``syncfs`` of the file system holding ``root``; False where there is none, where
    it is not trusted, or where it is not allowed."""
    call = _syncfs_call()
    if call is None:
        return False
    # A symlink is not opened: its directory is on the same file system.
    where = root.parent if os.path.islink(root) else root
    if not _syncfs_trusted(where):
        return False
    fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if call(fd) == 0:
            return True
        err = _errno()
    finally:
        os.close(fd)
    if err in _SYNCFS_UNAVAILABLE:
        return False
    raise OSError(err, f"syncfs of {root}: {os.strerror(err)}")


_SYNCFS: list[Callable[[int], int] | None] = []  # the libc function, once looked up


def _syncfs_call() -> Callable[[int], int] | None:
    if not _SYNCFS:
        call = None
        if sys.platform.startswith("linux"):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            call = getattr(libc, "syncfs", None)
            if call is not None:
                call.argtypes, call.restype = [ctypes.c_int], ctypes.c_int
        _SYNCFS.append(call)
    return _SYNCFS[0]


def _errno() -> int:
    """The errno of the last ctypes call of this thread."""
    import ctypes

    return ctypes.get_errno()


def _fsync_tree(root: Path) -> None:
    st = os.lstat(root)
    if stat.S_ISREG(st.st_mode):
        _fsync_file(root)
        return
    if not stat.S_ISDIR(st.st_mode):
        return
    files: list[Path] = []
    dirs: list[Path] = []
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(p).st_mode):
                files.append(Path(p))
        dirs.append(Path(dirpath))
    # Files at once (fsync lets go of the GIL; the disk orders the writes better), then
    # the directories, bottom-up.
    if len(files) > 1:
        with ThreadPoolExecutor(_SYNC_JOBS, thread_name_prefix="mlpkg-fsync") as pool:
            list(pool.map(_fsync_file, files))
    else:
        for f in files:
            _fsync_file(f)
    for d in dirs:
        fsync_dir(d)


def _fsync_file(file: Path) -> None:
    # O_RDONLY is enough for fsync on Linux, and works on read-only (0444) files.
    fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
