"""A lockfile is data: nothing in it runs on the host (issue 10, item 4).

A lock embeds recipes, and an external's recipe carries the shell command that detects
the tool. The lock is not signed, so whoever edits it can also recompute the store path
it records. ``build --lock`` (and ``install --lock``, ``run --lock``) must therefore detect
an external only with the command that the local recipe collection trusts for that name,
and refuse, before running anything, a lock whose command differs, naming the external
and both commands (docs/trust.md).

Each test edits a lock as an attacker would (``reseal``: change the embedded recipe, then
recompute its path so the lock is consistent again) and checks that a marker file the
edited command would create is never made.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlpkg.recipes.model import Recipe
from mlpkg.resolver.derivation import Derivation, Detected
from mlpkg.resolver.toml_writer import dumps

if TYPE_CHECKING:
    from tests.cli_support import CliResult
    from tests.conftest import MlpkgCli

MakeCli = Callable[..., "MlpkgCli"]

TOOL_DETECT = "mytool --version"
EXTERNAL_TOML = f"""
name = "mytool"
version = "external"
kind = "external"
[external]
detect = "{TOOL_DETECT}"
version_regex = 'mytool version (\\d+(?:\\.\\d+)+)'
executables = ["mytool"]
[env]
PATH = {{ prepend = "bin" }}
"""


def make_tool(bindir: Path, version: str = "1.4.1") -> dict[str, str]:
    """``bindir/mytool`` printing ``version``, and the environment that finds it first."""
    bindir.mkdir(parents=True, exist_ok=True)
    tool = bindir / "mytool"
    tool.write_text(f'#!/bin/sh\necho "mytool version {version}"\n')
    tool.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}


def fails(result: CliResult, code: int) -> str:
    """stderr of a command that must have exited ``code``, without a traceback."""
    assert result.code == code, str(result)
    assert "Traceback" not in result.err and "internal error" not in result.err, str(result)
    return result.err


def reseal(lock: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit the embedded recipe of the node ``name`` in place, then recompute the store
    path that node records (and the roots naming it), as an attacker can: the lock then
    reads back as consistent. Only nodes without inputs are resealed (enough here)."""
    raw = tomllib.loads(lock.read_text(encoding="utf-8"))
    node = next(n for n in raw["node"] if n["name"] == name)
    assert not node.get("inputs"), "reseal handles leaf nodes only"
    edit(node["recipe"])
    detected = Detected(node["detected_version"], {}, node.get("detected_info") or {})
    drv = Derivation(Recipe.model_validate(node["recipe"]), {}, raw["platform"], detected)
    old, node["path"] = node["path"], str(drv.path)
    raw["roots"] = [str(drv.path) if r == old else r for r in raw["roots"]]
    for other in raw["node"]:
        assert old not in other.get("inputs", {}).values(), "reseal handles leaf nodes only"
    lock.write_text(dumps(raw), encoding="utf-8")


def hostile(marker: Path, command: str) -> Callable[[dict[str, Any]], None]:
    """An edit that makes the detect command touch ``marker`` first."""

    def edit(recipe: dict[str, Any]) -> None:
        recipe["external"]["detect"] = f"touch {marker}; {command}"

    return edit


@pytest.fixture
def tool_lock(tmp_path: Path, mlpkg_cli: MlpkgCli) -> tuple[Path, dict[str, str]]:
    """A lock of the external ``mytool``, made with a recipe collection that has it."""
    env = make_tool(tmp_path / "bin")
    mlpkg_cli.recipes.add("mytool", "external", EXTERNAL_TOML)
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.run("lock", "mytool", "-o", str(lock), env=env).ok()
    return lock, env


def colleague(make_mlpkg_cli: MakeCli, tmp_path: Path, *, trusts_tool: bool) -> MlpkgCli:
    """Another home; its recipe collection has mytool's external recipe if ``trusts_tool``."""
    cli = make_mlpkg_cli(tmp_path / "elsewhere" / "home")
    if trusts_tool:
        cli.recipes.add("mytool", "external", EXTERNAL_TOML)
    return cli


@pytest.mark.parametrize("command", [["build"], ["build", "--dry-run"], ["install"]])
def test_an_edited_detect_command_is_refused_before_anything_runs(
    tmp_path: Path,
    make_mlpkg_cli: MakeCli,
    tool_lock: tuple[Path, dict[str, str]],
    command: list[str],
) -> None:
    lock, env = tool_lock
    marker = tmp_path / "PWNED"
    reseal(lock, "mytool", hostile(marker, TOOL_DETECT))
    other = colleague(make_mlpkg_cli, tmp_path, trusts_tool=True)
    err = fails(other.run(*command, "--lock", str(lock), env=env), 2)
    assert not marker.exists(), "the lock's detect command ran on the host"
    assert "mytool" in err and f"touch {marker}; {TOOL_DETECT}" in err, err
    assert f"`{TOOL_DETECT}`" in err, err
    assert other.valid_paths() == []


@pytest.mark.parametrize("command", [["--check"], ["--update", "mytool", "-o"]])
def test_lock_check_and_update_refuse_an_edited_detect_command(
    tmp_path: Path,
    make_mlpkg_cli: MakeCli,
    tool_lock: tuple[Path, dict[str, str]],
    command: list[str],
) -> None:
    lock, env = tool_lock
    marker = tmp_path / "PWNED"
    reseal(lock, "mytool", hostile(marker, TOOL_DETECT))
    other = colleague(make_mlpkg_cli, tmp_path, trusts_tool=True)
    err = fails(other.run("lock", *command, str(lock), env=env), 2)
    assert not marker.exists()
    assert f"touch {marker}; {TOOL_DETECT}" in err and f"`{TOOL_DETECT}`" in err, err


def test_the_unedited_lock_builds_with_the_trusted_command(
    tmp_path: Path, make_mlpkg_cli: MakeCli, tool_lock: tuple[Path, dict[str, str]]
) -> None:
    lock, env = tool_lock
    other = colleague(make_mlpkg_cli, tmp_path, trusts_tool=True)
    out = other.run("build", "--lock", str(lock), env=env).ok().out
    assert out.strip().endswith("-mytool-1.4.1")


def test_an_external_unknown_to_the_local_collection_is_refused(
    tmp_path: Path, make_mlpkg_cli: MakeCli, tool_lock: tuple[Path, dict[str, str]]
) -> None:
    lock, env = tool_lock
    marker = tmp_path / "PWNED"
    reseal(lock, "mytool", hostile(marker, TOOL_DETECT))
    other = colleague(make_mlpkg_cli, tmp_path, trusts_tool=False)
    err = fails(other.run("build", "--lock", str(lock), env=env), 2)
    assert not marker.exists()
    assert "mytool" in err and f"touch {marker}; {TOOL_DETECT}" in err, err
    assert "no external recipe" in err, err


def test_a_changed_executable_list_is_refused_too(
    tmp_path: Path, make_mlpkg_cli: MakeCli, tool_lock: tuple[Path, dict[str, str]]
) -> None:
    """The executables are looked up on PATH and the first one runs a probe: they are part
    of what is trusted, not only the detect command."""
    lock, env = tool_lock

    def edit(recipe: dict[str, Any]) -> None:
        recipe["external"]["executables"] = ["mytool", "sh"]

    reseal(lock, "mytool", edit)
    other = colleague(make_mlpkg_cli, tmp_path, trusts_tool=True)
    err = fails(other.run("build", "--lock", str(lock), env=env), 2)
    assert "mytool" in err and "executables" in err and "sh" in err, err


def test_the_recipes_given_with_recipes_are_trusted(
    tmp_path: Path, make_mlpkg_cli: MakeCli, tool_lock: tuple[Path, dict[str, str]]
) -> None:
    """``--recipes DIR`` is trusted code like MLPKG_RECIPES_PATH: its external is used."""
    lock, env = tool_lock
    other = colleague(make_mlpkg_cli, tmp_path, trusts_tool=False)
    mine = tmp_path / "my-recipes"
    (mine / "mytool").mkdir(parents=True)
    (mine / "mytool" / "external.toml").write_text(EXTERNAL_TOML, encoding="utf-8")
    assert other.run("build", "--lock", str(lock), env=env).code == 2
    other.run("build", "--lock", str(lock), "--recipes", str(mine), env=env).ok()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc on PATH")
def test_the_issue_s_gcc_lock_is_refused(
    tmp_path: Path, mlpkg_cli: MlpkgCli, make_mlpkg_cli: MakeCli
) -> None:
    """The reproduction of the issue, with the bundled collection's gcc."""
    lock = tmp_path / "gcc.lock"
    mlpkg_cli.run("lock", "gcc", "-o", str(lock)).ok()
    trusted = tomllib.loads(lock.read_text(encoding="utf-8"))["node"][0]["recipe"]
    trusted_detect = trusted["external"]["detect"]
    marker = tmp_path / "PWNED"
    reseal(lock, "gcc", hostile(marker, trusted_detect))
    other = make_mlpkg_cli(tmp_path / "elsewhere" / "home")
    err = fails(other.run("build", "--lock", str(lock)), 2)
    assert not marker.exists(), "the lock's detect command ran on the host"
    assert "gcc" in err and f"touch {marker}; {trusted_detect}" in err, err
    assert f"`{trusted_detect}`" in err


# -- unpack caps: a lock cannot switch off the archive-bomb protection -------------------------------

RAISED_FILES = 5_000_000  # max_unpacked_files: the default is 1,000,000


def small_tgz(file: Path) -> str:
    """Write a small ``.tar.gz`` holding ``pkg/hello`` at ``file``; return its sha256."""
    import gzip
    import hashlib
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("pkg/hello")
        info.size = 6
        tf.addfile(info, io.BytesIO(b"hello\n"))
    data = gzip.compress(buf.getvalue(), mtime=0)
    file.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def data_recipe(tmp_path: Path) -> str:
    """The text of a fetch recipe ``data 1.0`` unpacking a small local archive, default caps."""
    from tests.recipe_text import fetch_toml

    archive = tmp_path / "data-1.0.tar.gz"
    return fetch_toml("data", "1.0", [archive.as_uri()], small_tgz(archive))


def raise_cap(lock: Path, field: str = "max_unpacked_files", value: int = RAISED_FILES) -> None:
    """Raise an unpack cap of the node ``data`` in place, as whoever shares a lock can: the
    caps are not hashed, so the lock stays consistent without recomputing anything."""
    raw = tomllib.loads(lock.read_text(encoding="utf-8"))
    node = next(n for n in raw["node"] if n["name"] == "data")
    node["recipe"]["source"][field] = value
    lock.write_text(dumps(raw), encoding="utf-8")


@pytest.mark.parametrize(
    "command",
    [
        ["build", "--lock"],
        ["build", "--dry-run", "--lock"],
        ["install", "--lock"],
        ["lock", "--check"],
        ["lock", "--update", "data", "-o"],
    ],
)
def test_a_lock_that_raises_an_unpack_cap_is_refused(
    tmp_path: Path,
    mlpkg_cli: MlpkgCli,
    make_mlpkg_cli: MakeCli,
    data_recipe: str,
    command: list[str],
) -> None:
    mlpkg_cli.recipes.add("data", "1.0", data_recipe)
    lock = tmp_path / "team.lock"
    mlpkg_cli.run("lock", "data", "-o", str(lock)).ok()
    raise_cap(lock)
    other = make_mlpkg_cli(tmp_path / "elsewhere" / "home")
    other.recipes.add("data", "1.0", data_recipe)  # the same recipe, with the default caps
    err = fails(other.run(*command, str(lock)), 2)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {lock} is refused: its fetch data 1.0 raises"), err
    assert "[source] max_unpacked_files to 5,000,000 members" in lines[0], err
    assert "the local recipe data 1.0 allows only 1,000,000 members" in lines[0], err
    assert "data/1.0.toml" in err, err
    assert other.valid_paths() == []


def test_a_lock_with_caps_its_collection_has_builds(
    tmp_path: Path, mlpkg_cli: MlpkgCli, make_mlpkg_cli: MakeCli, data_recipe: str
) -> None:
    """The caps are honoured when the local collection has the same recipe raising them as
    high: a dataset's author and the colleagues sharing the recipe build its lock."""
    raised = data_recipe + f"max_unpacked_files = {RAISED_FILES}\n"
    mlpkg_cli.recipes.add("data", "1.0", raised)
    lock = tmp_path / "team.lock"
    mlpkg_cli.run("lock", "data", "-o", str(lock)).ok()
    assert f"max_unpacked_files = {RAISED_FILES}" in lock.read_text(encoding="utf-8")
    out = Path(mlpkg_cli.run("build", "--lock", str(lock)).ok().out.strip())
    assert (out / "hello").read_text() == "hello\n"
    other = make_mlpkg_cli(tmp_path / "elsewhere" / "home")
    assert other.run("build", "--dry-run", "--lock", str(lock)).code == 2
    other.recipes.add("data", "1.0", raised)
    out = Path(other.run("build", "--lock", str(lock)).ok().out.strip())
    assert (out / "hello").read_text() == "hello\n"


def test_a_lock_that_lowers_an_unpack_cap_needs_no_recipe(
    tmp_path: Path, mlpkg_cli: MlpkgCli, make_mlpkg_cli: MakeCli, data_recipe: str
) -> None:
    """A lowered cap only makes the fetch stricter: it is kept as the lock has it."""
    mlpkg_cli.recipes.add("data", "1.0", data_recipe)
    lock = tmp_path / "team.lock"
    mlpkg_cli.run("lock", "data", "-o", str(lock)).ok()
    raise_cap(lock, "max_unpacked_size", 3)
    other = make_mlpkg_cli(tmp_path / "elsewhere" / "home")
    err = fails(other.run("build", "--lock", str(lock)), 1)
    assert "Refusing archive" in err and "max_unpacked_size" in err and "is refused" not in err, err
