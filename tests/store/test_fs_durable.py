"""Durable atomic writes (issue 10, item 6): ``store.fs.write_atomic`` fsyncs the file
before the rename and the directory after it, as a database would, creates files with the
mode asked for less the umask (0644 for shared lockfiles, not mkstemp's 0600), and the
copies that used to write files their own way now go through it."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlpkg.store import fs


@pytest.fixture
def umask022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync (with what it synced) and every rename, in order."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        seen.append(("fsync-dir" if os.path.isdir(target) else "fsync", target))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(("replace", os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def test_write_atomic_fsyncs_file_before_rename_and_directory_after(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    target = tmp_path / "1.json"
    fs.write_atomic(target, '{"a": 1}\n')
    assert target.read_text() == '{"a": 1}\n'
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync-dir"], events
    assert events[1][1] == str(target)
    assert events[2][1] == str(tmp_path)
    assert os.listdir(tmp_path) == ["1.json"]  # no temporary left


def test_write_atomic_leaves_the_old_file_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "current.json"
    target.write_text("old")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        fs.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["current.json"]


@pytest.mark.usefixtures("umask022")
def test_write_atomic_creates_0644_under_umask_022(tmp_path: Path) -> None:
    fs.write_atomic(tmp_path / "mlpkg.lock", "x")
    fs.write_atomic_bytes(tmp_path / "data", b"x")
    assert stat.S_IMODE((tmp_path / "mlpkg.lock").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o644


def test_write_atomic_honours_the_umask_and_mode(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        fs.write_atomic(tmp_path / "private", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600
    fs.write_atomic(tmp_path / "exe", "#!/bin/sh\n", mode=0o755)
    assert (tmp_path / "exe").stat().st_mode & stat.S_IXUSR


def test_copy_atomic_fsyncs_and_renames(tmp_path: Path, events: list[tuple[str, str]]) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    dest = tmp_path / "cache" / "entry"
    dest.parent.mkdir()
    fs.copy_atomic(src, dest)
    assert dest.read_bytes() == b"payload"
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync-dir"], events
    assert os.listdir(dest.parent) == ["entry"]


def test_copy_file_hashes_exactly_what_it_wrote(tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(os.urandom(3 << 20))
    sha, md5 = hashlib.sha256(), hashlib.md5()
    fs.copy_file(src, tmp_path / "copy", sha, md5)
    data = (tmp_path / "copy").read_bytes()
    assert data == src.read_bytes()
    assert sha.hexdigest() == hashlib.sha256(data).hexdigest()
    assert md5.hexdigest() == hashlib.md5(data).hexdigest()
    with pytest.raises(FileExistsError):  # never onto an existing file
        fs.copy_file(src, tmp_path / "copy")


@pytest.fixture
def no_syncfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform without syncfs: sync_tree fsyncs file by file."""
    monkeypatch.setattr(fs, "_syncfs_call", lambda: None)


@pytest.fixture
def syncfs_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each syncfs call was given (the path of its descriptor); each succeeds."""
    calls: list[str] = []

    def syncfs(fd: int) -> int:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        return 0

    monkeypatch.setattr(fs, "_syncfs_call", lambda: syncfs)
    monkeypatch.setattr(fs, "_syncfs_trusted", lambda where: True)
    return calls


def test_sync_tree_is_one_syncfs_of_the_tree_where_there_is_one(
    tmp_path: Path, events: list[tuple[str, str]], syncfs_calls: list[str]
) -> None:
    root = tmp_path / ".tmp-abc"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "a.py").write_text("a")
    fs.canonicalise(root)
    try:
        fs.sync_tree(root)
    finally:
        fs.make_writable(root)
    assert syncfs_calls == [str(root)]
    assert events == []  # no file-by-file fsync besides
    (tmp_path / "link").symlink_to("nowhere")  # a symlink is not opened: its directory is
    fs.sync_tree(tmp_path / "link")
    assert syncfs_calls[-1] == str(tmp_path)


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EPERM, errno.EINVAL])
def test_sync_tree_falls_back_to_fsync_where_syncfs_is_not_available(
    tmp_path: Path, events: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    """ENOSYS (no such call), EPERM and EINVAL (a seccomp filter, a sandboxed kernel):
    the files are fsynced instead, and the realise goes on."""
    (tmp_path / "f").write_bytes(b"x")
    monkeypatch.setattr(fs, "_syncfs_call", lambda: lambda fd: -1)
    monkeypatch.setattr(fs, "_syncfs_trusted", lambda where: True)
    monkeypatch.setattr(fs, "_errno", lambda: err)
    fs.sync_tree(tmp_path / "f")
    assert events == [("fsync", str(tmp_path / "f"))]


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC, errno.EDQUOT])
def test_sync_tree_raises_the_other_errors_of_syncfs(
    tmp_path: Path, events: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    (tmp_path / "f").write_bytes(b"x")
    monkeypatch.setattr(fs, "_syncfs_call", lambda: lambda fd: -1)
    monkeypatch.setattr(fs, "_syncfs_trusted", lambda where: True)
    monkeypatch.setattr(fs, "_errno", lambda: err)
    with pytest.raises(OSError, match="syncfs") as info:
        fs.sync_tree(tmp_path / "f")
    assert info.value.errno == err
    assert events == []


def _recording(called: list[int]) -> Callable[[int], int]:
    def syncfs(fd: int) -> int:
        called.append(fd)
        return 0

    return syncfs


def test_sync_tree_fsyncs_file_by_file_where_syncfs_is_not_trusted(
    tmp_path: Path, events: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old kernel, a FUSE or network file system: syncfs is never called."""
    called: list[int] = []
    monkeypatch.setattr(fs, "_syncfs_call", lambda: _recording(called))
    monkeypatch.setattr(fs, "_syncfs_trusted", lambda where: False)
    (tmp_path / "f").write_bytes(b"x")
    fs.sync_tree(tmp_path / "f")
    assert called == []
    assert events == [("fsync", str(tmp_path / "f"))]


def test_an_old_kernel_is_not_trusted_whatever_the_file_system(
    tmp_path: Path, events: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[int] = []
    monkeypatch.setattr(fs, "_syncfs_call", lambda: _recording(called))
    real = os.uname()
    old = os.uname_result((real.sysname, real.nodename, "5.4.0-42-generic", "", real.machine))
    monkeypatch.setattr(os, "uname", lambda: old)
    (tmp_path / "f").write_bytes(b"x")
    fs.sync_tree(tmp_path / "f")
    assert called == []
    assert events == [("fsync", str(tmp_path / "f"))]


@pytest.mark.parametrize(
    ("release", "trusted"),
    [
        ("5.8.0", True),
        ("5.8.0-63-generic", True),
        ("5.15.0-1051-azure", True),
        ("6.1.55", True),
        ("10.0", True),
        ("5.7.19", False),
        ("5.4.0-42-generic", False),
        ("4.19.0-25-amd64", False),
        ("3.10.0-1160.el7.x86_64", False),
        ("", False),
        ("weird", False),
    ],
)
def test_syncfs_trusted_kernel(release: str, trusted: bool) -> None:
    assert fs.syncfs_trusted_kernel(release) is trusted


@pytest.mark.parametrize(
    ("fstype", "trusted"),
    [
        ("ext4", True),
        ("xfs", True),
        ("btrfs", True),
        ("tmpfs", True),
        ("overlay", True),
        ("zfs", True),
        ("fuse", False),
        ("fuseblk", False),
        ("fuse.sshfs", False),
        ("fuse.gcsfuse", False),
        ("nfs", False),
        ("nfs4", False),
        ("cifs", False),
        ("smb3", False),
        ("smbfs", False),
        ("9p", False),
        ("ceph", False),
        ("glusterfs", False),
        ("lustre", False),
        ("virtiofs", False),
    ],
)
def test_syncfs_trusted_fstype(fstype: str, trusted: bool) -> None:
    assert fs.syncfs_trusted_fstype(fstype) is trusted


_MOUNTINFO = "\n".join(
    [
        "22 27 0:21 / /proc rw,relatime - proc proc rw",
        "27 1 259:2 / / rw,relatime shared:1 - ext4 /dev/root rw",
        "30 27 0:40 / /home/u/remote rw,nosuid - fuse.sshfs host:/ rw,user_id=0",
        "31 27 0:41 / /mnt/nfs rw - nfs4 srv:/export rw,vers=4.2",
        "32 31 259:3 / /mnt/nfs/local rw - xfs /dev/sdb rw",
        r"33 27 0:42 / /mnt/with\040space rw - 9p share rw",
        "34 27 0:43 / /mnt/nfs2 rw - ext4 /dev/sdc rw",
        "35 27 0:44 / /mnt/nfs2 rw - cifs //srv/share rw",
    ]
)


@pytest.mark.parametrize(
    ("path", "fstype"),
    [
        ("/", "ext4"),
        ("/nix/store", "ext4"),
        ("/home/u/remote", "fuse.sshfs"),
        ("/home/u/remote/store/x", "fuse.sshfs"),
        ("/home/u/remotely", "ext4"),  # a prefix of the name is not a mount point
        ("/mnt/nfs/a", "nfs4"),
        ("/mnt/nfs/local/store", "xfs"),  # the deepest mount holds it
        ("/mnt/with space/store", "9p"),  # octal escapes
        ("/mnt/nfs2/store", "cifs"),  # the later mount on the same point hides the first
        ("/proc/self", "proc"),
    ],
)
def test_mount_fstype(path: str, fstype: str) -> None:
    assert fs.mount_fstype(path, _MOUNTINFO) == fstype


@pytest.mark.parametrize(
    ("fstype", "release", "called"),
    [
        ("ext4", "6.1.0", True),
        ("fuse.sshfs", "6.1.0", False),
        ("nfs4", "6.1.0", False),
        ("ext4", "5.4.0", False),
    ],
)
def test_sync_tree_reads_the_mount_table_and_the_kernel(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    events: list[tuple[str, str]],
    fstype: str,
    release: str,
    called: bool,
) -> None:
    """The tree's file system as the mount table says (here every path is on one mount
    at /), and the kernel's release, decide between syncfs and the fsyncs."""
    table = tmp_path / "mountinfo"
    table.write_text(f"27 1 0:40 / / rw - {fstype} src rw\n")
    monkeypatch.setattr(fs, "_MOUNTINFO", str(table))
    real = os.uname()
    kernel = os.uname_result((real.sysname, real.nodename, release, "", real.machine))
    monkeypatch.setattr(os, "uname", lambda: kernel)
    calls: list[int] = []
    monkeypatch.setattr(fs, "_syncfs_call", lambda: _recording(calls))
    (tmp_path / "f").write_bytes(b"x")
    fs.sync_tree(tmp_path / "f")
    assert bool(calls) is called
    assert events == ([] if called else [("fsync", str(tmp_path / "f"))])
    monkeypatch.setattr(fs, "_MOUNTINFO", str(tmp_path / "absent"))
    fs.sync_tree(tmp_path / "f")  # no mount table: not trusted
    assert len(calls) == int(called)


def test_mount_fstype_without_a_mount() -> None:
    assert fs.mount_fstype("/x", "") is None
    assert fs.mount_fstype("/x", "garbage line\n") is None


def test_the_real_syncfs_syncs_a_tree(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x")
    fs.sync_tree(tmp_path / "d")  # whichever way this platform has, without error


@pytest.mark.usefixtures("no_syncfs")
def test_sync_tree_fsyncs_every_file_and_directory_without_following_links(
    tmp_path: Path, events: list[tuple[str, str]]
) -> None:
    root = tmp_path / ".tmp-abc"
    (root / "lib" / "pkg").mkdir(parents=True)
    (root / "lib" / "pkg" / "a.py").write_text("a")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_text("t")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "bin" / "link").symlink_to(outside)
    (root / "bin" / "flink").symlink_to(outside / "secret")
    fs.canonicalise(root)  # read-only content, as the store syncs it
    try:
        fs.sync_tree(root)
    finally:
        fs.make_writable(root)
    files = {p for kind, p in events if kind == "fsync"}
    dirs = [p for kind, p in events if kind == "fsync-dir"]
    assert files == {str(root / "lib" / "pkg" / "a.py"), str(root / "bin" / "tool")}
    assert set(dirs) == {str(root), str(root / "lib"), str(root / "lib" / "pkg"), str(root / "bin")}
    assert dirs[-1] == str(root)  # the top last, after everything under it


@pytest.mark.usefixtures("no_syncfs")
def test_sync_tree_of_a_single_file(tmp_path: Path, events: list[tuple[str, str]]) -> None:
    (tmp_path / "flat").write_bytes(b"x")
    fs.sync_tree(tmp_path / "flat")
    assert events == [("fsync", str(tmp_path / "flat"))]


def test_symlink_atomic_replaces_and_fsyncs(tmp_path: Path, events: list[tuple[str, str]]) -> None:
    link = tmp_path / "current"
    fs.symlink_atomic("generations/1.json", link)
    fs.symlink_atomic("generations/2.json", link)
    assert os.readlink(link) == "generations/2.json"
    assert [kind for kind, _ in events] == ["replace", "fsync-dir"] * 2
    assert os.listdir(tmp_path) == ["current"]
