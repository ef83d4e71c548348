"""Recipes and lockfiles nested thousands of levels deep (a TOML value, or dotted keys) are
one sentence naming the file, exit 2, through the real CLI: never a RecursionError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlpkg.errors import RecipeError
from mlpkg.recipes import loader

HEADER = 'name = "deep"\nversion = "1.0"\nkind = "build"\n[build]\nscript = "mkdir $out"\n'
DEEP_VALUES = {
    "array": "[env]\nX = " + "[" * 5_000 + "]" * 5_000 + "\n",
    "inline table": "[env]\nX = " + "{a = " * 5_000 + "1" + "}" * 5_000 + "\n",
    "dotted keys": "[variants.x." + ".".join(["k"] * 5_000) + "]\nv = 1\n",
}


def _one_sentence(err: str, file: Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {file} is nested more than 64 levels deep"), err
    assert "internal error" not in err and "Recursion" not in err


@pytest.mark.parametrize("kind", sorted(DEEP_VALUES))
def test_a_deep_recipe_is_one_sentence_naming_it(mlpkg_cli: Any, kind: str) -> None:
    file = mlpkg_cli.recipes.add("deep", "1.0", HEADER + DEEP_VALUES[kind])
    r = mlpkg_cli.sub("build", "deep")
    assert r.code == 2, r
    _one_sentence(r.err, file)


def test_the_loader_raises_recipe_error(tmp_path: Path) -> None:
    f = tmp_path / "deep" / "1.0.toml"
    f.parent.mkdir()
    f.write_text(HEADER + DEEP_VALUES["array"])
    with pytest.raises(RecipeError) as e:
        loader.load(f)
    assert e.value.file == str(f)


@pytest.mark.parametrize("kind", sorted(DEEP_VALUES))
def test_a_deep_lockfile_is_one_sentence_naming_it(
    mlpkg_cli: Any, tmp_path: Path, kind: str
) -> None:
    lock = tmp_path / "mlpkg.lock"
    deep = DEEP_VALUES[kind].replace("[env]", "[x]").replace("[variants.x.", "[x.")
    lock.write_text("version = 1\n" + deep)
    for args in (["build", "--lock", str(lock)], ["install", "--lock", str(lock)]):
        r = mlpkg_cli.sub(*args)
        assert r.code == 2, r
        _one_sentence(r.err, lock)
