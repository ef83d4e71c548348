"""Extended attributes never reach the store: canonicalise removes them (a file capability
set with setcap would otherwise survive, a privilege escalation), and verify
--check-contents reports any it finds as a metadata problem that --repair removes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlpkg.store.db import PathInfo
from mlpkg.store.fs import canonicalise, extended_attributes
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store
from mlpkg.store.verify import Remake, verify, wrong_metadata
from tests.recipe_text import build_toml

if TYPE_CHECKING:
    from tests.conftest import MlpkgCli

P = StorePath.from_fingerprint(b"x", "x-1.0")
SETCAP = shutil.which("setcap") or next(
    (p for p in ("/usr/sbin/setcap", "/sbin/setcap") if os.path.exists(p)), None
)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
with_setcap = pytest.mark.skipif(
    os.geteuid() != 0 or SETCAP is None, reason="setcap (as root) is needed"
)


def user_xattrs_work(where: Path) -> bool:
    probe = where / ".xattr-probe"
    probe.write_text("")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


@pytest.fixture(autouse=True)
def _needs_xattrs(tmp_path: Path) -> None:
    if not hasattr(os, "setxattr") or not user_xattrs_work(tmp_path):
        pytest.skip("this file system has no user extended attributes")


def write_tree(tmp: Path) -> None:
    (tmp / "bin").mkdir(parents=True)
    (tmp / "bin/tool").write_text("#!/bin/sh\n")
    os.chmod(tmp / "bin/tool", 0o755)
    (tmp / "data").write_text("data\n")
    os.symlink("data", tmp / "link")


def setcap(file: Path) -> None:
    assert SETCAP is not None
    subprocess.run([SETCAP, "cap_dac_override+ep", str(file)], check=True)
    assert "security.capability" in os.listxattr(file)


def all_xattrs(root: Path) -> dict[str, list[str]]:
    """Entry (relative, ``.`` for root) → its extended attributes, for entries with any."""
    found = {}
    for entry in [root, *sorted(root.rglob("*"))]:
        if names := os.listxattr(entry, follow_symlinks=False):
            found[str(entry.relative_to(root))] = sorted(names)
    return found


# -- canonicalise -----------------------------------------------------------------------------


def test_canonicalise_removes_user_attributes_of_every_entry(tmp_path: Path) -> None:
    root = tmp_path / "out"
    write_tree(root)
    for rel in (".", "bin", "bin/tool", "data"):
        os.setxattr(root / rel, "user.x", b"1")
        os.setxattr(root / rel, "user.y", b"2")
    assert extended_attributes(root / "data") == ["user.x", "user.y"]
    canonicalise(root)
    assert all_xattrs(root) == {}
    assert stat.S_IMODE(os.lstat(root / "data").st_mode) == 0o444
    assert stat.S_IMODE(os.lstat(root / "bin").st_mode) == 0o555


def test_canonicalise_removes_the_attributes_of_a_single_file(tmp_path: Path) -> None:
    file = tmp_path / "out"
    file.write_text("x")
    os.setxattr(file, "user.x", b"1")
    canonicalise(file)
    assert os.listxattr(file) == []
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o444


@with_setcap
def test_canonicalise_removes_a_file_capability(tmp_path: Path) -> None:
    root = tmp_path / "out"
    write_tree(root)
    setcap(root / "bin/tool")
    canonicalise(root)
    assert all_xattrs(root) == {}
    assert stat.S_IMODE(os.stat(root / "bin/tool").st_mode) == 0o555


@as_root
def test_canonicalise_removes_a_symlinks_own_attributes_without_following_it(
    tmp_path: Path,
) -> None:
    """user.* is refused on symlinks, but root may set trusted.* on one."""
    root = tmp_path / "out"
    write_tree(root)
    try:
        os.setxattr(root / "link", "trusted.x", b"1", follow_symlinks=False)
    except OSError:
        pytest.skip("no trusted.* attributes on symlinks here")
    host = tmp_path / "host"
    host.write_text("host")
    os.setxattr(host, "user.mine", b"1")
    os.symlink(host, root / "abs")
    canonicalise(root)
    assert all_xattrs(root) == {}
    assert os.listxattr(host) == ["user.mine"]  # a link's target is never touched


def test_a_read_only_tree_loses_its_attributes_too(tmp_path: Path) -> None:
    """Removing user.* needs write permission: as the store's owner (not root), repair
    works on entries already made read-only."""
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    root = base / "out"
    write_tree(root)
    for rel in ("bin/tool", "data", "bin", "."):
        os.setxattr(root / rel, "user.x", b"1")
        os.chmod(root / rel, 0o555 if rel in ("bin/tool", "bin", ".") else 0o444)
    unprivileged(base, lambda: canonicalise(root))
    assert all_xattrs(root) == {}
    assert stat.S_IMODE(os.lstat(root / "data").st_mode) == 0o444
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o555


def unprivileged(base: Path, action: Callable[[], None]) -> None:
    """Run ``action`` as an ordinary user owning ``base``: as ourselves when not root,
    else in a child process as uid 65534, with ``base`` (and what is in it) given to it."""
    if os.geteuid() != 0:
        action()
        return
    uid = 65534
    for entry in [base, *base.rglob("*")]:
        os.chown(entry, uid, uid, follow_symlinks=False)
    modes = {parent: os.stat(parent).st_mode for parent in base.parents}
    try:
        for parent, mode in modes.items():  # the child must reach base
            os.chmod(parent, mode | 0o001)
        run_as(uid, action)
    finally:
        for parent, mode in modes.items():
            os.chmod(parent, mode)


def run_as(uid: int, action: Callable[[], None]) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            action()
            code = 0
        except BaseException as e:
            os.write(2, f"{e!r}\n".encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- verify -----------------------------------------------------------------------------------


def no_remake(info: PathInfo) -> Remake:
    raise AssertionError("extended attributes are removed in place, not remade")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "home") as s:
        s.realise(P, write_tree, kind="build", recipe_hash="sha256:x", deriver={})
        yield s


def check_reported_and_repaired(store: Store, phrases: list[str]) -> None:
    root = store.real_path(P)
    assert verify(store).ok  # without --check-contents only existence is checked
    result = verify(store, check_contents=True)
    assert not result.ok and [p.kind for p in result.problems] == ["metadata"]
    message = result.problems[0].message
    assert message == (
        f"{P} has entries of the wrong mode, owner or extended attributes: {', '.join(phrases)}."
    )
    fixed = verify(store, check_contents=True, repair=no_remake)
    assert fixed.ok and fixed.problems[0].repaired
    assert all_xattrs(root) == {}
    assert wrong_metadata(root, os.stat(store.dir).st_uid) == []
    assert verify(store, check_contents=True).problems == []


def test_verify_reports_and_removes_user_attributes(store: Store) -> None:
    root = store.real_path(P)
    assert verify(store, check_contents=True).problems == []
    os.setxattr(root / "data", "user.x", b"1")
    os.setxattr(root / "bin", "user.b", b"1")
    os.setxattr(root / "bin", "user.a", b"1")
    phrases = [
        "'bin' has extended attributes user.a, user.b",
        "'data' has extended attributes user.x",
    ]
    check_reported_and_repaired(store, phrases)


@with_setcap
def test_verify_reports_and_removes_a_file_capability(store: Store) -> None:
    root = store.real_path(P)
    setcap(root / "bin/tool")
    check_reported_and_repaired(store, ["'bin/tool' has extended attributes security.capability"])
    assert stat.S_IMODE(os.stat(root / "bin/tool").st_mode) == 0o555


# -- a build ----------------------------------------------------------------------------------


def test_attributes_a_build_sets_do_not_reach_the_store(mlpkg_cli: MlpkgCli) -> None:
    script = (
        'mkdir -p "$out/bin"; echo x > "$out/bin/tool"; chmod +x "$out/bin/tool"; '
        'python3 -c \'import os, sys; [os.setxattr(p, "user.x", b"1") for p in sys.argv[1:]]\' '
        '"$out" "$out/bin" "$out/bin/tool"'
    )
    mlpkg_cli.recipes.add("x", "1.0", build_toml("x", "1.0", script))
    r = mlpkg_cli.sub("build", "x").ok()
    out = Path(r.out.strip().splitlines()[-1])
    assert (out / "bin/tool").is_file()
    assert all_xattrs(out) == {}
    assert mlpkg_cli.run("verify", "--check-contents").code == 0
