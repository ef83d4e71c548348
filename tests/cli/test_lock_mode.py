"""A lockfile is shared: ``mlpkg lock -o FILE`` creates it 0644 under umask 022 (it was
0600, mkstemp's mode), written durably through ``store.fs.write_atomic`` (issue 10)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from tests.recipe_text import build_toml

if TYPE_CHECKING:
    from tests.conftest import MlpkgCli, RecipeDir


def test_lockfile_is_created_0644_under_umask_022(
    tmp_path: Path, mlpkg_cli: MlpkgCli, recipe_dir: RecipeDir
) -> None:
    recipe_dir.add("hello", "1.0", build_toml("hello", "1.0", 'mkdir -p "$out"'))
    lock = tmp_path / "shared" / "mlpkg.lock"
    lock.parent.mkdir()
    old = os.umask(0o022)
    try:
        mlpkg_cli.run("lock", "hello", "-o", str(lock)).ok()
    finally:
        os.umask(old)
    assert stat.S_IMODE(lock.stat().st_mode) == 0o644
    assert os.listdir(lock.parent) == ["mlpkg.lock"]  # no temporary left beside it
    assert 'name = "hello"' in lock.read_text()
