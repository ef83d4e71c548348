"""gc never loses a live path (invariant 6, issue 10 item 5): races of registration and
collection in real processes, a rebuild check gc must leave alone, and roots that survive
a moved or symlinked home."""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlpkg.store import archive
from mlpkg.store.gc import collect
from mlpkg.store.locks import FileLock
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

CTX = multiprocessing.get_context("fork")


def realise(store: Store, path: StorePath, make, refs=()) -> object:  # type: ignore[no-untyped-def]
    return store.realise(path, make, kind="build", recipe_hash="sha256:x", deriver={},
                         references=refs)  # fmt: skip


def small(tmp: Path) -> None:
    tmp.mkdir()
    (tmp / "f").write_text("content\n")


def big(files: int):  # type: ignore[no-untyped-def]
    def make(tmp: Path) -> None:
        tmp.mkdir()
        for i in range(files // 100):
            d = tmp / f"d{i}"
            d.mkdir()
            for j in range(100):
                (d / f"f{j}").write_bytes(b"x")

    return make


def _register(home: Path, path: StorePath, delay: float, go: Event, planned: Event) -> None:
    """Plan (take a temporary root), wait for the collection, then realise and root."""
    with Store(home) as store:
        store.protect([path])  # what planning does, before the collection starts
        planned.set()
        go.wait()
        time.sleep(delay)
        realise(store, path, small)
        store.add_root(f"r/{path}", path)


def _collect(home: Path, go: Event) -> None:
    with Store(home) as store:
        go.set()
        collect(store)


def _assert_intact(home: Path, paths: list[StorePath]) -> None:
    with Store(home) as store:
        for p in paths:
            info = store.info(p)
            assert info is not None, f"{p} is not valid"
            real = store.real_path(p)
            assert real.is_dir(), f"{p} is registered but its directory is gone"
            assert archive.scan(real).hash == info.archive_hash


def test_registration_racing_a_collection_loses_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registered: list[StorePath] = []
    for round_no in range(4):
        dead = StorePath.from_fingerprint(f"dead{round_no}".encode(), "dead-1.0")
        with Store(home) as store:
            realise(store, dead, big(6000))
        go = CTX.Event()
        procs, planned = [], []
        for k, delay in enumerate((0.0, 0.02, 0.05, 0.1, 0.2, 0.4)):
            p = StorePath.from_fingerprint(f"live{round_no}-{k}".encode(), f"live{k}-1.0")
            registered.append(p)
            ev = CTX.Event()
            planned.append(ev)
            procs.append(CTX.Process(target=_register, args=(home, p, delay, go, ev)))
        for proc in procs:
            proc.start()
        for ev in planned:
            assert ev.wait(30)
        gc = CTX.Process(target=_collect, args=(home, go))
        gc.start()
        for proc in [*procs, gc]:
            proc.join(120)
            assert proc.exitcode == 0
        _assert_intact(home, registered)
        with Store(home) as store:
            assert not store.is_valid(dead)
            assert not store.real_path(dead).exists()


def test_debris_whose_lock_is_taken_is_never_deleted(tmp_path: Path) -> None:
    """A scratch directory is deleted only while gc holds its path's lock itself."""
    with Store(tmp_path / "home") as store:
        p = StorePath.from_fingerprint(b"x", "x-1.0")
        scratch = store.dir / f".tmp-{p.hash_part}-abc"
        scratch.mkdir()
        lock = FileLock(store.locks_dir / f"{p.hash_part}.lock")
        lock.acquire(shared=True)
        try:
            assert scratch.name in collect(store).skipped
            assert scratch.is_dir()
        finally:
            lock.release()
        assert scratch.name in collect(store).deleted
        assert not scratch.exists()


def test_a_valid_path_missing_from_the_snapshot_is_not_debris(tmp_path: Path) -> None:
    """An entry registered after gc read the database is re-checked, not deleted."""
    with Store(tmp_path / "home") as store:
        p = StorePath.from_fingerprint(b"y", "y-1.0")
        realise(store, p, small)
        store.add_root("y", p)
        from mlpkg.store import gc as gc_mod

        real_graph = store._db.reference_graph
        store._db.reference_graph = lambda: {}  # type: ignore[method-assign]
        try:
            gc_mod._collect_debris(store, set(), set(), gc_mod.GcResult(), False)
        finally:
            store._db.reference_graph = real_graph  # type: ignore[method-assign]
        assert store.real_path(p).is_dir()


def test_gc_leaves_a_running_check_build_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``build --check`` builds without the path lock of a valid path; gc must still see
    its build directory as busy."""
    from mlpkg.resolver import check as check_mod
    from mlpkg.resolver.realise import Reporter

    home = tmp_path / "home"
    p = StorePath.from_fingerprint(b"c", "c-1.0")
    with Store(home) as store:
        realise(store, p, small)
        recorded = store.info(p)
        assert recorded is not None
    seen: list[list[str]] = []

    def fake_maker(drv: object, store: Store, reporter: object, node: object):  # type: ignore[no-untyped-def]
        def make(tmp: Path) -> None:
            build_dir = store.builds_dir / f"{p.hash_part}-0123abcd"
            build_dir.mkdir()
            with Store(home) as other:  # a collection in the middle of the build
                collect(other)
            seen.append(sorted(os.listdir(store.builds_dir)))
            os.rename(build_dir, tmp)
            (tmp / "f").write_text("content\n")

        return make

    monkeypatch.setattr(check_mod, "maker", fake_maker)
    drv = SimpleNamespace(path=p, inputs={}, name="c", version="1.0", kind="build")
    with Store(home) as store:
        store.add_root("c", p)
        result = check_mod.check(drv, store, Reporter())  # type: ignore[arg-type]
    assert seen == [[f"{p.hash_part}-0123abcd"]]
    assert result.results


# -- roots that survive another spelling of the home -----------------------------------------


def _rooted_home(home: Path) -> tuple[StorePath, StorePath]:
    """A home with a path rooted by add_root and one by an absolute link (as older
    versions made them), and a dead path."""
    kept = StorePath.from_fingerprint(b"kept", "kept-1.0")
    old = StorePath.from_fingerprint(b"old", "old-1.0")
    dead = StorePath.from_fingerprint(b"gone", "gone-1.0")
    with Store(home) as store:
        for p in (kept, old, dead):
            realise(store, p, small)
        store.add_root("profiles/default/1/0", kept)
        os.symlink(store.real_path(old), store.gcroots_dir / "old")
    return kept, old


def _collect_keeps(home: Path, kept: list[StorePath]) -> None:
    with Store(home) as store:
        result = collect(store)
        assert [d for d in result.deleted if "gone" in d], result.deleted
        for p in kept:
            assert str(p) not in result.deleted
            assert store.real_path(p).is_dir() and store.is_valid(p)


def test_roots_survive_a_moved_home(tmp_path: Path) -> None:
    kept, old = _rooted_home(tmp_path / "home")
    os.rename(tmp_path / "home", tmp_path / "moved")
    _collect_keeps(tmp_path / "moved", [kept, old])


def test_roots_survive_a_home_reached_through_a_symlink(tmp_path: Path) -> None:
    kept, old = _rooted_home(tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "link")
    _collect_keeps(tmp_path / "link", [kept, old])


def test_roots_made_through_a_symlinked_home_survive_its_real_name(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    kept, old = _rooted_home(tmp_path / "link" / "home")
    _collect_keeps(tmp_path / "real" / "home", [kept, old])


def test_non_utf8_names_and_content_in_gcroots_do_not_stop_gc(tmp_path: Path) -> None:
    home = tmp_path / "home"
    kept, old = _rooted_home(home)
    roots = os.fsencode(home / "gcroots")
    with open(roots + b"/list\xff", "wb") as f:
        f.write(b"\xfe\xff not a path\n")
    os.symlink(b"/nowhere/\xfe", roots + b"/link\xfe")
    _collect_keeps(home, [kept, old])


# -- the campaign's reproduction, through the command line ------------------------------------


def test_builds_finishing_while_gc_deletes_a_big_path_are_kept(
    http_server: Any, mlpkg_cli: Any
) -> None:
    """Issue 10 item 7: ``mlpkg build --root`` finishing while ``mlpkg gc`` is busy deleting
    a large dead path must leave a valid path and a root that points at it."""
    import hashlib
    import subprocess

    from tests.recipe_text import fetch_toml

    dead = StorePath.from_fingerprint(b"big dead", "dead-1.0")
    with Store(mlpkg_cli.home) as store:
        realise(store, dead, big(20000))
    names = [f"late{k}" for k in range(3)]
    for k, name in enumerate(names):
        body = f"{name}\n".encode()
        # Two 503s first: the fetch registers ~0.75 s after planning, while gc deletes.
        http_server.route(f"/{name}.txt", body=body, fail_first=2 + k)
        url = http_server.url(f"/{name}.txt")
        sha = hashlib.sha256(body).hexdigest()
        mlpkg_cli.recipes.add(name, "1.0", fetch_toml(name, "1.0", [url], sha, unpack=False))
    builds = [mlpkg_cli.popen("build", "--root", name, name) for name in names]
    temproots = mlpkg_cli.home / "temproots"
    deadline = time.monotonic() + 60
    while len(os.listdir(temproots)) < len(names):  # every build has planned (protected)
        assert time.monotonic() < deadline
        time.sleep(0.02)
    gc = subprocess.run(mlpkg_cli.argv("gc"), env=mlpkg_cli.env(), capture_output=True)
    assert gc.returncode == 0, gc.stderr
    for name, proc in zip(names, builds, strict=True):
        r = mlpkg_cli.finish(proc).ok()
        printed = Path(r.out.strip().splitlines()[-1])
        assert printed.is_file(), f"{name}: mlpkg build printed {printed}, which does not exist"
        assert (mlpkg_cli.home / "gcroots" / name).resolve() == printed
    mlpkg_cli.sub("verify", "--check-contents").ok()
    assert dead.name not in " ".join(mlpkg_cli.store_entries())
