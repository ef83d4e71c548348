"""Sources that enter the store are read once, hashed while copied (issue 10, item 6).

``add-file`` and an app's source used to be hashed, then read again to be copied: a file
that changed in between entered the store under the hash of other bytes. The tests change
the file the moment it is opened a second time (what the old code did to copy it), and
check that what was stored is what its registered hash says. And an app's digest takes a
file's owner-exec bit, not ``os.access``, whose answer depends on who asks (root)."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlpkg.recipes import appsource
from mlpkg.store.store import Store
from tests.cli_support import python_path
from tests.resolver.test_app_build import PYVER, write_app

if TYPE_CHECKING:
    from tests.conftest import MlpkgCli


def rewrite_on_second_open(
    monkeypatch: pytest.MonkeyPatch, file: Path, new: bytes
) -> Callable[[], int]:
    """From now on, count the opens of ``file``; just before the second one, replace its
    content with ``new`` (as an editor saving it would). Returns the count."""
    real = builtins.open
    opens = [0]

    def hooked(path: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(path, str | os.PathLike) and os.path.abspath(path) == str(file):
            opens[0] += 1
            if opens[0] == 2:
                fd = os.open(file, os.O_WRONLY | os.O_TRUNC)
                os.write(fd, new)
                os.close(fd)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", hooked)
    monkeypatch.setattr(io, "open", hooked)  # pathlib opens through io.open
    return lambda: opens[0]


# -- the app source digest -------------------------------------------------------------------


def test_app_digest_takes_the_owner_exec_bit(tmp_path: Path) -> None:
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    files = ["tool"]
    modes = {}
    for mode in (0o644, 0o654, 0o645, 0o744, 0o700):
        (tmp_path / "tool").chmod(mode)
        modes[mode] = appsource.digest(tmp_path, files)
    # Group or other exec bits do not count (as root, os.access said "executable").
    assert modes[0o644] == modes[0o654] == modes[0o645]
    assert modes[0o744] == modes[0o700] != modes[0o644]


def test_app_digest_does_not_depend_on_who_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "run").write_text("#!/bin/sh\n")
    (tmp_path / "run").chmod(0o755)
    files = ["a.py", "run"]
    mine = appsource.digest(tmp_path, files)
    for answer in (True, False):  # another user, or root: os.access answers otherwise
        monkeypatch.setattr(os, "access", lambda *a, answer=answer, **k: answer)
        assert appsource.digest(tmp_path, files) == mine


# -- an app's source is copied once ----------------------------------------------------------


def test_an_app_source_changed_while_copied_is_stored_as_hashed(
    mlpkg_cli: MlpkgCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = python_path(tmp_path / "bin")
    src = write_app(mlpkg_cli).parent / "src"
    target = src / "__init__.py"
    import mlpkg.build.app as app_module

    real_install = app_module._install_source
    counts: list[Callable[[], int]] = []

    def install(*args: Any) -> Any:  # the file changes between two reads of the build
        counts.append(rewrite_on_second_open(monkeypatch, target, b"VALUE = 666\n"))
        return real_install(*args)

    monkeypatch.setattr(app_module, "_install_source", install)
    r = mlpkg_cli.run("build", "toyapp", env=env)
    monkeypatch.undo()
    out = Path(r.ok().out.strip())
    stored = out / "lib" / PYVER / "site-packages" / "toymod"
    files = appsource.source_files(stored, ["*.py", "*.conf", "bin/*"])
    with Store(mlpkg_cli.home) as store:
        info = store.info(store.parse_path(str(out)))
    assert info is not None
    recipe = info.deriver["recipe"]
    assert isinstance(recipe, dict)
    registered = recipe["app"]["digest"]
    assert (stored / "__init__.py").read_text() == "VALUE = 7\n"
    assert appsource.digest(stored, files) == registered
    assert counts and counts[0]() == 1, "the source file was read more than once"
    assert target.read_text() == "VALUE = 7\n"  # nobody changed it: it was read once


# -- add-file --------------------------------------------------------------------------------


def test_add_file_stores_the_bytes_it_hashed(
    mlpkg_cli: MlpkgCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "weights.bin"
    original = os.urandom(3 << 20)
    file.write_bytes(original)
    opens = rewrite_on_second_open(monkeypatch, file, b"tampered")
    r = mlpkg_cli.run("add-file", str(file), "--name", "weights", "--version", "1.0", "--json")
    monkeypatch.undo()
    doc = r.ok().json()
    stored = Path(doc["real_path"])
    assert doc["sha256"] == hashlib.sha256(original).hexdigest()
    assert stored.read_bytes() == original
    assert opens() == 1, "add-file read its file more than once"
    # No temporary copy is left behind in partial/.
    assert not [p for p in (mlpkg_cli.home / "partial").iterdir() if "add-file" in p.name]
