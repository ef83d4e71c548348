"""The bundled recipe collection: every recipe is valid, and the example plans offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlpkg.recipes.index import RecipeIndex, bundled_dir
from mlpkg.resolver.plan import make_plan
from mlpkg.resolver.provider import IndexProvider
from mlpkg.resolver.spec import parse_spec
from mlpkg.store.store import Store


def test_every_bundled_recipe_is_valid() -> None:
    index = RecipeIndex([bundled_dir()])
    recipes = index.all_recipes()
    assert {"hello", "six-src", "gcc", "cmake"} <= {r.name for r in recipes}
    for r in recipes:
        if r.kind == "fetch":
            assert r.source is not None
            # Only upstream artifacts whose publishers give nothing but an MD5 may lack a
            # sha256 (the lockfile pins the sha256 seen at the first download).
            md5_only = {"retinanet-resnext50-onnx"}
            assert r.source.sha256 or r.name in md5_only, f"{r.spec} pins no sha256"


def test_the_example_plans_offline(tmp_path: Path) -> None:
    with Store(tmp_path / "home") as store:
        plan = make_plan(IndexProvider(RecipeIndex([bundled_dir()])), [parse_spec("hello")], store)
    actions = {n.drv.name: n.action for n in plan.nodes}
    assert actions == {"six-src": "fetch", "gcc": "link", "hello": "build"}
    assert plan.nodes[-1].drv.name == "hello"


@pytest.mark.pypi
def test_quickstart_builds_the_example_from_the_network(tmp_path: Path) -> None:
    """The README's first line: the example's source really comes from the index."""
    env = {**os.environ, "MLPKG_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-m", "mlpkg", "build", "hello"], env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    hello = subprocess.run([path / "bin" / "hello"], capture_output=True, text=True)
    assert hello.stdout == "Hello from the mlpkg store!\n"
    assert (path / "lib" / "python" / "six.py").is_file()
