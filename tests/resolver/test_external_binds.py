"""Host locations are bound into a build's sandbox only for paths of kind external (links
mlpkg made to detected tools), never for links a build script made, and never ``/`` or a
top-level directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlpkg.build.script import external_targets
from mlpkg.store import sandbox
from tests.recipe_text import build_toml

if TYPE_CHECKING:
    from tests.conftest import MlpkgCli

SANDBOXES = [k for k in sandbox.available() if k != "none"]


@pytest.fixture(params=["bubblewrap", "namespace"])
def sandbox_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind not in SANDBOXES:
        pytest.skip(f"the {kind} sandbox does not work here")
    return kind


def secret_file(tmp_path: Path) -> Path:
    secret = tmp_path / "secret" / "file"
    secret.parent.mkdir()
    secret.write_text("top secret\n")
    return secret


def build_reader(mlpkg_cli: MlpkgCli, kind: str, link_target: Path, secret: Path) -> Path:
    """Build ``a`` (whose script links ``bin/tool`` to ``link_target``), then ``b`` (input
    ``a``), which tries to read ``secret``; return b's output."""
    link = f'mkdir -p "$out/bin"; ln -s {link_target} "$out/bin/tool"'
    mlpkg_cli.recipes.add("a", "1.0", build_toml("a", "1.0", link))
    steal = f'mkdir "$out"; cat {secret} > "$out/stolen" 2>/dev/null || echo hidden > "$out/r"'
    mlpkg_cli.recipes.add("b", "1.0", build_toml("b", "1.0", steal, {"a": "a"}))
    r = mlpkg_cli.sub("build", "b", env={"MLPKG_SANDBOX": kind}).ok()
    return Path(r.out.strip().splitlines()[-1])


def test_a_link_made_by_a_build_script_exposes_no_host_directory(
    mlpkg_cli: MlpkgCli, tmp_path: Path, sandbox_kind: str
) -> None:
    secret = secret_file(tmp_path)
    out = build_reader(mlpkg_cli, sandbox_kind, secret, secret)
    assert (out / "stolen").read_text() == ""  # made by the redirection; cat found nothing
    assert (out / "r").read_text() == "hidden\n"


def test_a_link_to_a_top_level_name_exposes_nothing(
    mlpkg_cli: MlpkgCli, tmp_path: Path, sandbox_kind: str
) -> None:
    """``/zz`` would bind ``/`` (the parent of its parent) if it were trusted."""
    secret = secret_file(tmp_path)
    out = build_reader(mlpkg_cli, sandbox_kind, Path("/zz"), secret)
    assert (out / "stolen").read_text() == ""
    assert (out / "r").read_text() == "hidden\n"


EXTERNAL_TOML = """
name = "mytool"
version = "external"
kind = "external"
[external]
detect = "mytool --version"
version_regex = 'mytool version (\\d+(?:\\.\\d+)+)'
executables = ["mytool"]
"""


def test_an_external_tool_still_sees_its_prefix_but_not_a_build_scripts_link(
    mlpkg_cli: MlpkgCli, tmp_path: Path, sandbox_kind: str
) -> None:
    """The prefix of a detected tool (``<prefix>/bin/mytool``) is bound, read-only; a
    build script's link in the same closure binds nothing."""
    secret = secret_file(tmp_path)
    prefix = tmp_path / "opt" / "mytool"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "share").mkdir()
    (prefix / "share" / "data").write_text("tool data\n")
    tool = prefix / "bin" / "mytool"
    tool.write_text('#!/bin/sh\necho "mytool version 1.2"\n')
    tool.chmod(0o755)
    mlpkg_cli.recipes.add("mytool", "external", EXTERNAL_TOML)
    link = f'mkdir -p "$out/bin"; ln -s {secret} "$out/bin/tool"'
    mlpkg_cli.recipes.add("a", "1.0", build_toml("a", "1.0", link))
    script = (
        'mkdir "$out"; "$tool/bin/mytool" --version > "$out/version"; '
        f'cat {prefix}/share/data > "$out/data"; '
        f'cat {secret} > "$out/stolen" 2>/dev/null || echo hidden > "$out/r"'
    )
    inputs = {"a": "a", "tool": "mytool"}
    mlpkg_cli.recipes.add("b", "1.0", build_toml("b", "1.0", script, inputs))
    path = f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}"
    r = mlpkg_cli.sub("build", "b", env={"MLPKG_SANDBOX": sandbox_kind, "PATH": path}).ok()
    out = Path(r.out.strip().splitlines()[-1])
    assert (out / "version").read_text() == "mytool version 1.2\n"
    assert (out / "data").read_text() == "tool data\n"
    assert (out / "stolen").read_text() == ""
    assert (out / "r").read_text() == "hidden\n"


def test_external_targets_never_bind_the_root_or_a_top_level_directory(tmp_path: Path) -> None:
    ext = tmp_path / "ext"
    (ext / "bin").mkdir(parents=True)
    for name, target in {
        "root": "/zz",  # prefix /
        "top": "/zz/file",  # prefix /
        "second": "/opt/bin/tool",  # prefix /opt: a top-level directory
        "system": "/usr/bin/env",  # shown by the sandbox anyway
        "deep": "/opt/py/bin/python3",  # prefix /opt/py: bound
        "relative": "../lib/x",  # not a host location
    }.items():
        os.symlink(target, ext / "bin" / name)
    assert external_targets([ext]) == [Path("/opt/py")]
