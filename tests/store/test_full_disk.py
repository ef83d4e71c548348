"""A full disk never leaves the store stuck (issue 10, item 7): each ENOSPC is one sentence
naming the directory, a failed download frees what it wrote, and ``gc`` runs on a full
disk and frees interrupted downloads, build leftovers and temporary copies.

The disk is a small tmpfs; the tests skip where mounting one is not permitted.

The tmpfs is mounted in the host's mount namespace (the tests call the store in-process as
well as through the command line, so a private namespace of the commands alone would not
do). It is unmounted when the test ends, even on failure; what a SIGKILLed pytest leaves
mounted is found by its source name, ``mlpkg-test-full-disk-<pid>`` (the pid of the pytest
that mounted it), and unmounted by the next run once that process is gone: a live run's
mount is never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpkg.errors import StoreError
from mlpkg.store.gc import collect
from mlpkg.store.locks import locked_temp
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store
from tests.recipe_text import fetch_toml

P = StorePath.from_fingerprint(b"p", "p-1.0")
MiB = 1 << 20


SOURCE = "mlpkg-test-full-disk-"  # the tmpfs's source name, then the mounting pid


def stale_mounts(mountinfo: str, alive: Callable[[int], bool]) -> list[str]:
    """The mount points of the tmpfs mounts these tests made whose pytest is gone, from the
    text of ``/proc/self/mountinfo``."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        fstype, source = fields[sep + 1 : sep + 3] if len(fields) > sep + 2 else ("", "")
        pid = source.removeprefix(SOURCE)
        ours = fstype == "tmpfs" and source.startswith(SOURCE) and pid.isdigit()
        if ours and not alive(int(pid)):
            found.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4]))
    return found


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_stale_mounts_are_the_dead_runs_own() -> None:
    info = "\n".join(
        [
            "27 1 259:2 / / rw - ext4 /dev/root rw",
            "40 27 0:50 / /tmp/p/a/fs rw - tmpfs mlpkg-test-full-disk-111 rw,size=4096k",
            "41 27 0:51 / /tmp/p/b/fs rw - tmpfs mlpkg-test-full-disk-222 rw,size=4096k",
            r"42 27 0:52 / /tmp/p/c\040d/fs rw - tmpfs mlpkg-test-full-disk-333 rw",
            "43 27 0:53 / /tmp/other rw - tmpfs tmpfs rw",
            "44 27 0:54 / /tmp/x rw - ext4 mlpkg-test-full-disk-111 rw",
            "45 27 0:55 / /tmp/y rw - tmpfs mlpkg-test-full-disk-x rw",
        ]
    )
    assert stale_mounts(info, lambda pid: pid == 222) == ["/tmp/p/a/fs", "/tmp/p/c d/fs"]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs at ``tmp_path/fs`` (skips when it cannot be mounted); the leftovers
    of killed runs are unmounted first (see the module docstring)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root and mount(8)")
    for stale in stale_mounts(Path("/proc/self/mountinfo").read_text(), _alive):
        subprocess.run(["umount", "-l", stale], capture_output=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", f"{SOURCE}{os.getpid()}", str(mnt)],
        capture_output=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(file: Path) -> None:
    """Write ``file`` until the file system holding it is full."""
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (65536, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def one_sentence(err: str, where: Path) -> None:
    assert "internal error" not in err and "Traceback" not in err, err
    first = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(first) == 1 and "full" in first[0] and str(where) in first[0], err


def test_temporary_roots_on_a_full_disk_are_one_clear_error(small_fs: Path) -> None:
    home = small_fs / "home"
    Store(home).close()
    fill(small_fs / "filler")
    with Store(home) as store, pytest.raises(StoreError) as e:
        store.protect([P])
    assert "full" in e.value.message and str(home / "temproots") in e.value.message
    assert e.value.hint and "mlpkg gc" in e.value.hint


def test_a_download_that_fills_the_disk_leaves_the_store_usable(
    small_fs: Path, http_server: Any, recipe_dir: Any, make_mlpkg_cli: Any
) -> None:
    big, small = os.urandom(6 * MiB), b"small file\n"
    for name, body in (("big", big), ("small", small)):
        http_server.route(f"/{name}.bin", body=body)
        sha = hashlib.sha256(body).hexdigest()
        url = http_server.url(f"/{name}.bin")
        recipe_dir.add(name, "1.0", fetch_toml(name, "1.0", [url], sha, unpack=False))
    cli = make_mlpkg_cli(small_fs / "home", recipe_dir.path)
    r = cli.sub("build", "big")
    assert r.code == 1, r
    one_sentence(r.err, small_fs / "home" / "partial")
    assert os.listdir(small_fs / "home" / "partial") == []
    cli.sub("build", "small").ok()


def test_gc_runs_on_a_full_disk_and_frees_partial_and_build_leftovers(
    small_fs: Path, recipe_dir: Any, make_mlpkg_cli: Any
) -> None:
    home = small_fs / "home"
    with Store(home) as store:  # a database with a valid path in it
        store.realise(P, lambda t: t.mkdir(), kind="build", recipe_hash="x", deriver={})
        store.add_root("p", P)
        build = store.builds_dir / f"{P.hash_part}-0a1b2c3d"
        build.mkdir()
        (build / "obj").write_bytes(b"x" * 1024 * 512)
        _, lock = locked_temp(store.partial_dir, f"{'1' * 32}.download")
        lock.release()  # its writer died mid-copy
    fill(home / "partial" / f"{'0' * 32}.part")  # an interrupted download filled the disk
    cli = make_mlpkg_cli(home, recipe_dir.path)
    for args in (("verify",), ("path-info", str(P))):  # no internal error on a full disk
        r = cli.sub(*args)
        assert "internal error" not in r.err and "Traceback" not in r.err, r
        if r.code != 0:
            one_sentence(r.err, home)
    cli.sub("gc").ok()
    assert os.listdir(home / "partial") == [] and os.listdir(home / "builds") == []
    with Store(home) as store:
        assert store.is_valid(P) and store.real_path(P).is_dir()
    cli.sub("verify").ok()


def test_gc_downloads_runs_on_a_full_disk(
    small_fs: Path, recipe_dir: Any, make_mlpkg_cli: Any
) -> None:
    home = small_fs / "home"
    Store(home).close()
    cache = home / "cache" / "downloads" / "sha256"
    cache.mkdir(parents=True)
    fill(cache / ("a" * 64))
    cli = make_mlpkg_cli(home, recipe_dir.path)
    r = cli.sub("gc", "--downloads").ok()
    assert "emptied the download cache" in r.err
    assert os.listdir(cache) == []


def test_gc_removes_temporary_copies_of_dead_writers_only(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store:
        # What older versions left (`.<hash>.download.<random>`) and what a killed copy leaves.
        old = store.partial_dir / f".{P.hash_part}.download.0123abcd"
        old.write_bytes(b"half a download")
        dead, dead_lock = locked_temp(store.partial_dir, f"{P.hash_part}.download")
        dead_lock.release()
        live, live_lock = locked_temp(store.partial_dir, f"{'2' * 32}.download")
        try:
            result = collect(store)
            assert not old.exists() and not dead.exists()
            assert live.exists() and str(live) in result.skipped
        finally:
            live_lock.release()
        collect(store)
        assert os.listdir(store.partial_dir) == []


def test_a_copy_from_the_download_cache_survives_a_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DownloadCache.get`` copies beside its destination; a collection meanwhile (by
    another process, here another Store) must not delete the copy."""
    from mlpkg.store import dlcache

    data = b"cached bytes\n"
    sha = hashlib.sha256(data).hexdigest()
    home = tmp_path / "home"
    with Store(home) as store:
        src = tmp_path / "src"
        src.write_bytes(data)
        store.downloads.put(src, sha)
        real_sha = dlcache._sha256

        def sha_after_gc(file: Path) -> str:
            with Store(home) as other:
                collect(other)
            return real_sha(file)

        monkeypatch.setattr(dlcache, "_sha256", sha_after_gc)
        dest = store.partial_dir / f"{P.hash_part}.download"
        assert store.downloads.get(sha, dest)
        assert dest.read_bytes() == data


def make_dead(home: Path) -> None:
    """Register P in ``home`` with no root (the temporary one goes with the Store)."""
    with Store(home) as store:
        store.realise(P, lambda t: t.mkdir(), kind="build", recipe_hash="x", deriver={})


def test_gc_frees_a_dead_path_when_the_database_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite needs space to forget a path; gc removes the directory first then, and says
    clearly when even that does not help."""
    import sqlite3

    from mlpkg.store.db import Database

    home = tmp_path / "home"
    make_dead(home)
    with Store(home) as store:
        real_invalidate = Database.invalidate
        calls: list[bool] = []

        def full_once(self: Database, path: StorePath) -> None:
            calls.append(store.real_path(path).exists())
            if len(calls) == 1:
                raise sqlite3.OperationalError("database or disk is full")
            real_invalidate(self, path)

        monkeypatch.setattr(Database, "invalidate", full_once)
        assert collect(store).deleted == [str(P)]
        assert calls == [True, False]  # the directory went first, then the row
        assert not store.is_valid(P) and not store.real_path(P).exists()

    make_dead(home)
    with Store(home) as store:

        def always_full(self: Database, path: StorePath) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(Database, "invalidate", always_full)
        with pytest.raises(StoreError, match="is full") as e:
            collect(store)
        assert str(store.home) in e.value.message


def test_a_maker_or_repair_that_fills_the_disk_is_one_clear_error(tmp_path: Path) -> None:
    import errno

    def full(tmp: Path) -> None:
        tmp.mkdir()
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "big"))

    with Store(tmp_path / "home") as store:
        with pytest.raises(StoreError, match="is full") as e:
            store.realise(P, full, kind="build", recipe_hash="x", deriver={})
        assert str(store.dir) in e.value.message and "making p-1.0" in e.value.message
        assert os.listdir(store.dir) == []
        store.realise(P, lambda t: t.mkdir(), kind="build", recipe_hash="x", deriver={})
        with pytest.raises(StoreError, match="is full") as e:
            store.replace_content(P, full, relocatable=True)
        assert "repairing p-1.0" in e.value.message and store.real_path(P).is_dir()


# -- a build or a fetch that fills the disk, then the same command after space is freed -----
# (issue 15: the store is left as if the command had not run, and the same command succeeds
# once the filler is gone; verify is clean throughout.)


def verify_clean(cli: Any) -> None:
    r = cli.sub("verify", "--check-contents", "--json")
    assert r.code == 0, r
    doc = json.loads(r.out)
    assert doc["ok"] and [p for p in doc["problems"] if p["kind"] != "debris"] == [], r.out


def leave_free(mnt: Path, free: int) -> Path:
    """Fill the file system at ``mnt`` until about ``free`` bytes are left; the filler."""
    filler = mnt / "filler"
    st = os.statvfs(mnt)
    size = st.f_bavail * st.f_frsize - free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(size, 0))
    return filler


def test_a_build_that_fills_the_disk_fails_cleanly_and_succeeds_after_space_is_freed(
    small_fs: Path, recipe_dir: Any, make_mlpkg_cli: Any
) -> None:
    from tests.recipe_text import build_toml

    script = 'mkdir "$out"\nhead -c 3000000 /dev/zero > "$out/big"\necho made > "$out/ok"\n'
    recipe_dir.add("filler-build", "1.0", build_toml("filler-build", "1.0", script))
    home = small_fs / "home"
    cli = make_mlpkg_cli(home, recipe_dir.path)
    cli.sub("verify").ok()  # the home exists, with its database
    filler = leave_free(small_fs, 1 * MiB)
    r = cli.sub("build", "filler-build")
    assert r.code == 1, r
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.err, r.err
    assert "filler-build" in errors[0], errors
    assert cli.valid_paths() == []  # nothing half-registered
    assert [e for e in cli.store_entries() if not e.startswith(".")] == []
    verify_clean(cli)

    filler.unlink()
    r = cli.sub("build", "filler-build").ok()
    out = Path(r.out.strip())
    assert (out / "ok").read_text() == "made\n" and (out / "big").stat().st_size == 3000000
    assert cli.valid_paths() == [out.name]
    verify_clean(cli)
    cli.sub("gc").ok()  # and what the failed build left is gone
    assert cli.store_entries() == [] and os.listdir(home / "builds") == []


def test_a_fetch_that_fills_the_disk_succeeds_after_space_is_freed(
    small_fs: Path, http_server: Any, recipe_dir: Any, make_mlpkg_cli: Any
) -> None:
    body = os.urandom(2 * MiB)
    http_server.route("/two.bin", body=body)
    sha = hashlib.sha256(body).hexdigest()
    url = http_server.url("/two.bin")
    recipe_dir.add("two", "1.0", fetch_toml("two", "1.0", [url], sha, unpack=False))
    home = small_fs / "home"
    cli = make_mlpkg_cli(home, recipe_dir.path)
    cli.sub("verify").ok()
    filler = leave_free(small_fs, 1 * MiB)
    r = cli.sub("build", "two")
    assert r.code == 1, r
    one_sentence(r.err, home)
    assert cli.valid_paths() == [] and cli.store_entries() == []
    verify_clean(cli)

    filler.unlink()
    out = Path(cli.sub("build", "two").ok().out.strip())
    files = [out] if out.is_file() else [p for p in out.rglob("*") if p.is_file()]
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in files] == [sha], files
    assert cli.valid_paths() == [out.name]
    verify_clean(cli)
