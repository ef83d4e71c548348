"""verify --check-contents finds what the archive hash leaves out (modes, owners), repair
fixes it, and names with newlines or undecodable bytes keep every message on one line."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import mlpkg.store.verify as verify_module
from mlpkg.store.db import PathInfo
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store
from mlpkg.store.verify import Remake, show_name, verify, wrong_metadata
from tests.recipe_text import build_toml

if TYPE_CHECKING:
    from tests.conftest import MlpkgCli

P = StorePath.from_fingerprint(b"p", "p-1.0")
OTHER_UID = 4321
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def write_tree(tmp: Path) -> None:
    (tmp / "bin").mkdir(parents=True)
    (tmp / "bin/tool").write_text("#!/bin/sh\n")
    os.chmod(tmp / "bin/tool", 0o755)
    (tmp / "data").write_text("data\n")
    (tmp / "odd\nname").write_text("odd\n")
    os.symlink("data", tmp / "link")


def no_remake(info: PathInfo) -> Remake:
    raise AssertionError("a wrong mode or owner is fixed in place, not remade")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "home") as s:
        s.realise(P, write_tree, kind="build", recipe_hash="sha256:x", deriver={})
        yield s


def tamper_mode(rel: str, mode: int) -> Callable[[Path], None]:
    return lambda root: os.chmod(root / rel, mode)


def tamper_owner(rel: str) -> Callable[[Path], None]:
    return lambda root: os.chown(root / rel, OTHER_UID, -1, follow_symlinks=False)


TAMPERED = {
    "tool 0777": (tamper_mode("bin/tool", 0o777), "'bin/tool' has mode 0777, not 0555"),
    "file 0666": (tamper_mode("data", 0o666), "'data' has mode 0666, not 0444"),
    "file 0644": (tamper_mode("data", 0o644), "'data' has mode 0644, not 0444"),
    "setuid tool": (tamper_mode("bin/tool", 0o4555), "'bin/tool' has mode 4555, not 0555"),
    "dir 0777": (tamper_mode("bin", 0o777), "'bin' has mode 0777, not 0555"),
    "top 0755": (tamper_mode(".", 0o755), "'.' has mode 0755, not 0555"),
    "odd name": (tamper_mode("odd\nname", 0o666), "'odd\\nname' has mode 0666, not 0444"),
}
CHOWNED = {
    "file": (tamper_owner("data"), f"'data' is owned by uid {OTHER_UID}, not 0"),
    "symlink": (tamper_owner("link"), f"'link' is owned by uid {OTHER_UID}, not 0"),
    "top": (tamper_owner("."), f"'.' is owned by uid {OTHER_UID}, not 0"),
}


def check_found_and_repaired(store: Store, tamper: Callable[[Path], None], phrase: str) -> None:
    root = store.real_path(P)
    assert verify(store, check_contents=True).problems == []
    tamper(root)
    assert verify(store).ok  # without --check-contents only existence is checked
    result = verify(store, check_contents=True)
    assert not result.ok and [p.kind for p in result.problems] == ["metadata"]
    message = result.problems[0].message
    assert message == f"{P} has entries of the wrong mode, owner or extended attributes: {phrase}."
    fixed = verify(store, check_contents=True, repair=no_remake)
    assert fixed.ok and fixed.problems[0].repaired
    assert wrong_metadata(root, os.stat(store.dir).st_uid) == []
    assert verify(store, check_contents=True).problems == []
    assert stat.S_IMODE(os.lstat(root / "bin/tool").st_mode) == 0o555


@pytest.mark.parametrize("case", TAMPERED)
def test_wrong_modes_are_found_and_fixed_in_place(store: Store, case: str) -> None:
    check_found_and_repaired(store, *TAMPERED[case])


@as_root
@pytest.mark.parametrize("case", CHOWNED)
def test_wrong_owners_are_found_and_fixed_in_place(store: Store, case: str) -> None:
    check_found_and_repaired(store, *CHOWNED[case])
    assert os.lstat(store.real_path(P) / "link").st_uid == 0


def test_many_problems_make_one_sentence(store: Store) -> None:
    root = store.real_path(P)
    for rel in ("bin/tool", "bin", "."):
        os.chmod(root / rel, 0o777)
    for rel in ("data", "odd\nname"):
        os.chmod(root / rel, 0o666)
    (problem,) = verify(store, check_contents=True).problems
    assert "\n" not in problem.message and "'odd\\nname' has mode 0666" in problem.message
    assert problem.files == [".", "bin", "bin/tool", "data", "odd\nname"]


@as_root
def test_more_than_five_problems_are_counted(store: Store) -> None:
    root = store.real_path(P)
    for rel in ("bin/tool", "bin", "."):
        os.chmod(root / rel, 0o777)
    for rel in ("data", "odd\nname", "link"):
        os.chown(root / rel, OTHER_UID, -1, follow_symlinks=False)
    (problem,) = verify(store, check_contents=True).problems
    assert problem.message.endswith(f"'link' is owned by uid {OTHER_UID}, not 0, and 1 more.")


def test_a_file_made_executable_is_modified_and_remade(store: Store) -> None:
    """0777 on a plain file adds an execute bit, which the archive hash covers."""
    root = store.real_path(P)
    os.chmod(root / "data", 0o777)
    (problem,) = verify(store, check_contents=True).problems
    assert problem.kind == "modified" and problem.files == ["data"]
    assert verify(store, check_contents=True, repair=lambda info: Remake(write_tree, True)).ok
    assert stat.S_IMODE(os.stat(root / "data").st_mode) == 0o444
    assert verify(store, check_contents=True).problems == []


def test_metadata_that_cannot_be_fixed_in_place_is_remade(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = store.real_path(P)
    os.chmod(root / "data", 0o777)
    monkeypatch.setattr(verify_module, "canonicalise", lambda root: None)  # as if EPERM
    made: list[str] = []

    def remake(info: PathInfo) -> Remake:
        made.append(str(info.path))
        return Remake(write_tree, True)

    assert verify(store, check_contents=True, repair=remake).ok
    assert made == [str(P)]
    assert verify(store, check_contents=True).problems == []


def test_a_modified_file_with_a_newline_in_its_name(store: Store) -> None:
    file = store.real_path(P) / "odd\nname"
    os.chmod(file, 0o644)
    file.write_text("changed\n")
    (problem,) = verify(store, check_contents=True).problems
    assert problem.kind == "modified" and problem.files == ["odd\nname"]
    assert f"{P} was modified (odd\\nname): expected sha256:" in problem.message
    assert "\n" not in problem.message


def test_debris_names_are_shown_on_one_line(store: Store) -> None:
    os.mkdir(os.path.join(os.fsencode(store.dir), b"junk\n\xff"))
    (problem,) = verify(store).problems
    assert problem.message == "junk\\n\\xff is in the store but not valid (gc removes it)."


@pytest.mark.parametrize(
    ("name", "shown"),
    [("plain/é.txt", "plain/é.txt"), ("a\nb\tc\x1b", "a\\nb\\tc\\x1b"), ("back\\slash", "back\\\\slash"),
     (os.fsdecode(b"bad\xff"), "bad\\xff")],
)  # fmt: skip
def test_show_name(name: str, shown: str) -> None:
    assert show_name(name) == shown


# -- through the CLI -------------------------------------------------------------------------


def _one_error(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_cli_verify_finds_and_repairs_a_chmod(mlpkg_cli: MlpkgCli) -> None:
    # A build makes the odd name (unpacking refuses control characters in member names).
    script = "mkdir -p $out; printf 'data\\n' > $out/data.txt; printf 'odd\\n' > \"$out\"/$'line\\nbreak'"
    mlpkg_cli.recipes.add("src", "1.0", build_toml("src", "1.0", script))
    src = Path(mlpkg_cli.run("build", "src").ok().out.strip())
    assert (src / "line\nbreak").read_text() == "odd\n"
    os.chmod(src / "line\nbreak", 0o666)
    os.chmod(src, 0o777)

    r = mlpkg_cli.run("verify", "--check-contents")
    assert r.code == 1, str(r)
    error = _one_error(r.err)
    assert src.name in error and "'.' has mode 0777, not 0555" in error, error
    assert "'line\\nbreak' has mode 0666, not 0444" in error, error
    assert len(r.out.splitlines()) == 1, r.out
    fixed = mlpkg_cli.run("verify", "--repair").ok()
    assert fixed.out.startswith("repaired: ") and src.name in fixed.out, fixed.out
    assert stat.S_IMODE(os.stat(src / "line\nbreak").st_mode) == 0o444
    assert stat.S_IMODE(os.stat(src).st_mode) == 0o555
    assert mlpkg_cli.run("verify", "--check-contents").ok().out == ""


def test_repair_checks_relocatability_only_when_the_caller_says_so(tmp_path: Path) -> None:
    """The store does not know which kinds must be relocatable: ``Remake.relocatable``
    decides whether remade content may name the store."""
    from mlpkg.errors import BuildError

    with Store(tmp_path / "home") as store:

        def names_the_store(tmp: Path) -> None:
            tmp.write_text(f"{store.dir}\n")

        store.realise(
            P, names_the_store, kind="fetch", recipe_hash="x", deriver={}, relocatable=False
        )
        os.chmod(store.real_path(P), 0o644)
        store.real_path(P).write_text("changed\n")
        with pytest.raises(BuildError, match="must be relocatable"):
            verify(store, check_contents=True, repair=lambda info: Remake(names_the_store, True))
        assert store.real_path(P).read_text() == "changed\n"
        fixed = verify(store, check_contents=True, repair=lambda i: Remake(names_the_store, False))
        assert fixed.ok and store.real_path(P).read_text() == f"{store.dir}\n"
