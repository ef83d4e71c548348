"""`mlpkg import pypi` on the command line, against a fake index on 127.0.0.1: the recipes
it writes are found by default and install."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def mlpkg(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PROXY")}
    env.update(MLPKG_HOME=str(home), NO_PROXY="*")
    return subprocess.run([sys.executable, "-m", "mlpkg", *args], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_import_then_install_and_use(fake_index: Callable[..., Any], tmp_path: Path) -> None:
    index = fake_index()
    index.publish("demo-lib", "1.2", requires_dist=["demo-dep>=1.0"], summary="A demo library")
    index.publish("demo-dep", "1.0")
    home = tmp_path / "home"
    r = mlpkg(home, "import", "pypi", "demo-lib", "--index-url", index.index_url)
    assert r.returncode == 0, r.stderr
    written = sorted(Path(p).relative_to(home / "recipes").as_posix() for p in r.stdout.split())
    assert written == ["demo-dep/1.0.toml", "demo-lib/1.2.toml"]
    shown = mlpkg(home, "show", "demo-lib")  # $MLPKG_HOME/recipes is searched by default
    assert shown.returncode == 0 and "A demo library" in shown.stdout, shown.stderr
    built = mlpkg(home, "build", "demo-lib")
    assert built.returncode == 0, built.stderr
    assert (Path(built.stdout.strip()) / "lib").is_dir()


def test_import_of_an_unknown_project_is_bad_input(
    fake_index: Callable[..., Any], tmp_path: Path
) -> None:
    index = fake_index()
    r = mlpkg(tmp_path / "home", "import", "pypi", "no-such-thing", "--index-url", index.index_url)
    assert r.returncode == 2 and "no-such-thing" in r.stderr and "Traceback" not in r.stderr


def test_import_for_two_interpreters(fake_index: Callable[..., Any], tmp_path: Path) -> None:
    """``--python 3.9 --python X.Y``: the machine's interpreter (probed) and CPython 3.9 as
    it would be built here (no interpreter of that version needed); one recipe, a wheel
    for each, that resolves for the machine's interpreter."""
    from packaging.tags import platform_tags

    mine = "{}{}".format(*sys.version_info[:2])
    platform = next(iter(platform_tags()))
    index = fake_index()
    for py in ("39", mine):
        index.publish("two-py", "1.0", tags=f"cp{py}-cp{py}-{platform}")
    home = tmp_path / "home"
    mine_dotted = "{}.{}".format(*sys.version_info[:2])
    r = mlpkg(home, "import", "pypi", "two-py", "--index-url", index.index_url,
              "--python", "3.9", "--python", f"python@{mine_dotted}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    text = (home / "recipes" / "two-py" / "1.0.toml").read_text()
    assert f'python = "python@3.9,{mine_dotted}"' in text and text.count("[[wheel.files]]") == 2
    shown = mlpkg(home, "show", "two-py", "--json")
    assert shown.returncode == 0, shown.stderr
    assert f"cp{mine}-cp{mine}" in shown.stdout


def test_a_python_recipe_built_from_source_is_a_target(
    fake_index: Callable[..., Any], tmp_path: Path
) -> None:
    """``--python 3.9`` takes the version of the collection's source-built python 3.9.2
    (a wheel needing Python >=3.9.1 fits it), not 3.9.0."""
    from mlpkg.recipes.index import bundled_dir

    recipes = tmp_path / "recipes" / "python"
    recipes.mkdir(parents=True)
    (recipes / "external.toml").write_text((bundled_dir() / "python" / "external.toml").read_text())
    (recipes / "3.9.2.toml").write_text(
        'name = "python"\nversion = "3.9.2"\nkind = "build"\n[build]\nscript = "mkdir $out"\n'
    )
    index = fake_index()
    index.publish("picky", "1.0", index_attrs={"requires_python": ">=3.9.1"})
    home = tmp_path / "home"
    r = mlpkg(home, "import", "pypi", "picky", "--index-url", index.index_url, "--python",
              "3.9", "--recipes", str(tmp_path / "recipes"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert 'python = "python@3.9"' in (home / "recipes" / "picky" / "1.0.toml").read_text()
    r = mlpkg(home, "import", "pypi", "picky", "--index-url", index.index_url, "--python",
              "3.8")  # fmt: skip
    assert r.returncode == 2 and "requires Python >=3.9.1" in r.stderr, r.stderr
