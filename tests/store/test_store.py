"""Atomic realisation (invariant 2), relocatability (3), locks and roots (6)."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from mlpkg.errors import BuildError, CheckError, StoreError
from mlpkg.store.gc import collect
from mlpkg.store.locks import TempRoots, is_locked, live_temp_roots
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

P = StorePath.from_fingerprint(b"p", "p-1.0")
Q = StorePath.from_fingerprint(b"q", "q-1.0")


def realise(store: Store, path: StorePath, make, refs=()) -> object:  # type: ignore[no-untyped-def]
    return store.realise(path, make, kind="build", recipe_hash="sha256:x", deriver={},
                         references=refs)  # fmt: skip


def write_dir(tmp: Path) -> None:
    tmp.mkdir()
    (tmp / "f").write_text("content\n")


def test_realise_makes_a_read_only_registered_path(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store:
        info = realise(store, P, write_dir)
        real = store.real_path(P)
        assert (real / "f").read_text() == "content\n"
        assert not os.access(real, os.W_OK) or os.geteuid() == 0
        assert oct(os.stat(real / "f").st_mode & 0o777) == "0o444"
        assert store.is_valid(P) and store.info(P) == info
        assert not list(store.dir.glob(".tmp-*"))


def test_a_failing_maker_leaves_nothing(tmp_path: Path) -> None:
    def fail(tmp: Path) -> None:
        write_dir(tmp)
        raise BuildError("boom")

    with Store(tmp_path / "home") as store:
        with pytest.raises(BuildError):
            realise(store, P, fail)
        assert not store.is_valid(P)
        assert os.listdir(store.dir) == []


def test_leftovers_of_a_crash_are_replaced(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store:
        # A crash after the rename but before registration, and one during the build.
        store.real_path(P).mkdir()
        (store.real_path(P) / "junk").write_text("half")
        (store.dir / f".tmp-{P.hash_part}-dead").mkdir()
        realise(store, P, write_dir)
        assert sorted(os.listdir(store.real_path(P))) == ["f"]
        assert os.listdir(store.dir) == [str(P)]


def test_output_naming_the_store_root_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store:

        def leak(tmp: Path) -> None:
            tmp.mkdir()
            (tmp / "config").write_text(f"prefix={tmp}\n")

        with pytest.raises(BuildError, match=r"names the store or its build directory in .config."):
            realise(store, P, leak)
        assert not store.is_valid(P) and os.listdir(store.dir) == []


def test_expected_hash_mismatch_is_refused_and_kept_aside(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store:
        with pytest.raises(CheckError, match=r"but sha256:0+ was expected") as e:
            store.realise(P, write_dir, kind="build", recipe_hash="", deriver={},
                          expected_hash="sha256:" + "0" * 64)  # fmt: skip
        assert not store.is_valid(P) and os.listdir(store.dir) == []
        kept = tmp_path / "home" / "failed" / str(P)
        assert (kept / "f").read_text() == "content\n"
        assert str(kept) in " ".join(e.value.details)


def test_references_must_be_valid(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store, pytest.raises(StoreError, match=r"input .* not valid"):
        realise(store, P, write_dir, refs=[Q])


def _slow_realise(home: str, counter: str, out: multiprocessing.Queue[str]) -> None:
    def make(tmp: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        write_dir(tmp)

    with Store(Path(home)) as store:
        info = realise(store, P, make)
        out.put(info.archive_hash)  # type: ignore[attr-defined]


def test_two_processes_make_a_path_once(tmp_path: Path) -> None:
    home, counter = str(tmp_path / "home"), str(tmp_path / "count")
    Store(Path(home)).close()
    ctx = multiprocessing.get_context("fork")
    q: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_slow_realise, args=(home, counter, q)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    hashes = {q.get(timeout=5) for _ in procs}
    assert len(hashes) == 1
    assert Path(counter).read_text() == "built\n"


def test_temp_roots_live_while_their_process_lives(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store:
        realise(store, P, write_dir)
        # Another process's roots: a file locked by a live child.
        ctx = multiprocessing.get_context("fork")
        ready, done = ctx.Event(), ctx.Event()

        def child() -> None:
            roots = TempRoots(store.home / "temproots", store.gc_lock_file)
            roots.add([P])
            ready.set()
            done.wait(20)

        proc = ctx.Process(target=child)
        proc.start()
        assert ready.wait(10)
        store.temp_roots.close()  # this process holds nothing
        assert str(P) in set(live_temp_roots(store.home / "temproots"))
        assert collect(store).deleted == []
        done.set()
        proc.join(10)
        # The child died: its file is stale and P is garbage now.
        assert collect(store).deleted == [str(P)]
        assert not store.is_valid(P) and not store.real_path(P).exists()
        assert list((store.home / "temproots").iterdir()) == []


def test_gc_keeps_roots_and_their_closure_and_removes_debris(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store:
        realise(store, Q, write_dir)
        realise(store, P, write_dir, refs=[Q])
        store.add_root("mine", P)
        (store.dir / "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-stray").mkdir()
        store.temp_roots.close()
        result = collect(store)
        assert result.deleted == ["zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-stray"]
        assert store.is_valid(P) and store.is_valid(Q)
        (store.gcroots_dir / "mine").unlink()
        dry = collect(store, dry_run=True)
        assert sorted(dry.deleted) == sorted([str(P), str(Q)]) and store.is_valid(Q)
        assert sorted(collect(store).deleted) == sorted([str(P), str(Q)])
        assert os.listdir(store.dir) == []


def test_gc_skips_a_path_being_made(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store:
        tmp = store.dir / f".tmp-{P.hash_part}-busy"
        tmp.mkdir()
        from mlpkg.store.locks import PathLock

        with PathLock(store.locks_dir, P):
            assert is_locked(store.locks_dir / f"{P.hash_part}.lock")
            assert collect(store).deleted == []
            assert tmp.exists()
        assert collect(store).deleted == [tmp.name]


def test_parse_path_accepts_names_paths_and_links(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store:
        realise(store, P, write_dir)
        link = store.add_root("r", P)
        assert store.parse_path(str(P)) == P
        assert store.parse_path(str(store.real_path(P) / "f")) == P
        assert store.parse_path(str(link)) == P
        with pytest.raises(Exception, match="not in the store"):
            store.parse_path("/etc/passwd")


def test_queries_of_the_narrow_interface(tmp_path: Path) -> None:
    """valid_among, reference_graph and closure_order answer what others used to ask the
    database; closure_order names the first path that is not valid or was deleted."""
    R = StorePath.from_fingerprint(b"r", "r-1.0")
    with Store(tmp_path / "home") as store:
        realise(store, Q, write_dir)
        realise(store, P, write_dir, refs=[Q])
        assert store.valid_among([P, Q, R]) == {P, Q}
        assert store.reference_graph() == {P: [Q], Q: []}
        assert store.closure([P]) == {P, Q}
        assert store.closure_order([P]) == [Q, P]
        assert store.closure_order([Q, P]) == [Q, P]
        with pytest.raises(StoreError, match="not valid"):
            store.closure_order([R])
        os.chmod(store.dir, 0o755)
        (store.real_path(Q) / "f").chmod(0o644)
        os.chmod(store.real_path(Q), 0o755)
        (store.real_path(Q) / "f").unlink()
        store.real_path(Q).rmdir()
        with pytest.raises(StoreError, match="registered but was deleted") as e:
            store.closure_order([P])
        assert str(store.real_path(Q)) in e.value.message


def test_scratch_locations_carry_the_path_hash_and_are_kept_while_locked(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "home") as store:
        build, check = store.build_dir(P), store.check_round(P)
        assert build.parent == store.builds_dir and build.name.startswith(f"{P.hash_part}-")
        assert build != store.build_dir(P)  # fresh each time
        assert check.parent == store.checks_dir and check.name.startswith(f".{P.hash_part}-")
        assert store.checks_dir.is_dir() and not check.exists()
        part = store.partial_file(P, ".part")
        assert part == store.partial_file(P, ".part")  # stable: a download resumes from it
        assert part.name == f"{P.hash_part}.part"
        for d in (build, check):
            d.mkdir()
        part.write_bytes(b"x")
        with store.path_lock(P):
            assert collect(store).deleted == []
        assert sorted(collect(store).deleted) == sorted(str(p) for p in (build, check, part))
