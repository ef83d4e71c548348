"""Variants: ``[variants.NAME]`` tables selected with ``NAME+VARIANT``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlpkg.errors import BadInput, RecipeError
from mlpkg.recipes import loader, variants

BASE = """
name = "tool"
version = "1.0"
kind = "build"
[inputs]
dep = "dep"
[build]
script = 'mkdir "$out"; echo plain > "$out/flavour"'
"""

FAST = """
[variants.fast]
summary = "the fast flavour"
[variants.fast.inputs]
dep = ""
extra = "dep"
[variants.fast.build]
script = 'mkdir "$out"; echo fast > "$out/flavour"'
"""

DEP = 'name = "dep"\nversion = "1.0"\nkind = "build"\n[build]\nscript = \'mkdir "$out"\'\n'


def write(root: Path, name: str, text: str) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "1.0.toml").write_text(text)


def test_apply_merges_inputs_and_replaces_tables() -> None:
    recipe = loader.parse(BASE + FAST, "tool.toml")
    fast = variants.apply(recipe, ["fast"])
    assert fast.inputs == {"extra": "dep"} and fast.selected == ["fast"]
    assert fast.build is not None and "echo fast" in fast.build.script
    assert fast.spec == "tool@1.0+fast" and fast.hashed_content() != recipe.hashed_content()
    # Declaring a variant does not change the plain recipe's hash.
    assert loader.parse(BASE, "t").hashed_content() == recipe.hashed_content()


def test_unknown_variant_names_the_ones_there_are() -> None:
    with pytest.raises(BadInput, match=r"has no variant \+slow \(it has \+fast\)"):
        variants.apply(loader.parse(BASE + FAST, "tool.toml"), ["slow"])


def test_an_invalid_variant_is_reported_at_load_with_its_field(tmp_path: Path) -> None:
    write(tmp_path, "tool", BASE + '\n[variants.broken]\nremove = ["build"]\n')
    with pytest.raises(RecipeError, match=r"field variants\.broken\.build: a build recipe needs"):
        loader.load(tmp_path / "tool" / "1.0.toml")
    write(tmp_path, "tool", BASE + "\n[variants.odd]\ncolour = 1\n")
    with pytest.raises(RecipeError) as e:
        loader.load(tmp_path / "tool" / "1.0.toml")
    assert e.value.field == "variants"
    assert any("variant odd has unknown field colour" in d for d in e.value.details)


def test_variants_have_their_own_store_paths(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    write(recipes, "tool", BASE + FAST)
    write(recipes, "dep", DEP)
    env = {**os.environ, "MLPKG_HOME": str(tmp_path / "home"), "MLPKG_RECIPES_PATH": str(recipes)}

    def mlpkg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlpkg", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    plain, fast = mlpkg("build", "tool"), mlpkg("build", "tool+fast")
    assert plain.returncode == 0 and fast.returncode == 0, plain.stderr + fast.stderr
    assert Path(plain.stdout.strip()).name.endswith("-tool-1.0")
    assert Path(fast.stdout.strip()).name.endswith("-tool-1.0+fast")
    assert (Path(fast.stdout.strip()) / "flavour").read_text() == "fast\n"
    assert (Path(plain.stdout.strip()) / "flavour").read_text() == "plain\n"
    lock = tmp_path / "fast.lock"
    assert mlpkg("lock", "tool+fast", "--realise", "-o", str(lock)).returncode == 0
    again = subprocess.run([sys.executable, "-m", "mlpkg", "build", "--lock", str(lock)],
                           env={**env, "MLPKG_HOME": str(tmp_path / "home2")},
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip()).name == Path(fast.stdout.strip()).name
    bad = mlpkg("build", "tool+slow")
    assert bad.returncode == 2 and "declares the variant +slow (its variants: +fast)" in bad.stderr
    both = mlpkg("build", "tool+fast", "tool")
    assert both.returncode == 2 and "two variant sets" in both.stderr


def test_with_replaces_an_input_everywhere_and_changes_hashes_where_it_should(
    tmp_path: Path,
) -> None:
    recipes = tmp_path / "recipes"
    write(recipes, "tool", BASE)
    write(recipes, "dep", DEP)
    (recipes / "dep" / "2.0.toml").write_text(DEP.replace('"1.0"', '"2.0"'))
    write(recipes, "other", DEP.replace('"dep"', '"other"'))
    env = {**os.environ, "MLPKG_HOME": str(tmp_path / "home"), "MLPKG_RECIPES_PATH": str(recipes)}

    def paths(*args: str) -> dict[str, str]:
        r = subprocess.run([sys.executable, "-m", "mlpkg", "build", "--dry-run", "--json", *args],
                           env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        import json

        return {n["name"]: n["path"] for n in json.loads(r.stdout)["plan"]["nodes"]}

    plain = paths("tool")
    assert plain["dep"].endswith("-dep-2.0")
    by_package = paths("tool", "--with", "dep=dep@1.0")
    assert by_package["dep"].endswith("-dep-1.0") and by_package["tool"] != plain["tool"]
    by_key = paths("tool", "--with", "dep=other")  # "dep" is also tool's input key
    assert "other" in by_key and by_key["tool"] not in (plain["tool"], by_package["tool"])
    same = paths("tool", "--with", "dep=dep@2.0")  # the same resolution: the same hashes
    assert same == plain
    r = subprocess.run([sys.executable, "-m", "mlpkg", "build", "tool", "--with", "nope=dep"],
                       env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "matches no input in the closure" in r.stderr
    assert "dep" in r.stderr
