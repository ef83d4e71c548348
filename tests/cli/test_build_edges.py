"""Edge cases of builds: outputs that are links, inputs' closures in the sandbox, homes
reached through links."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path


def write(root: Path, name: str, text: str) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "1.0.toml").write_text(text)


def build_recipe(name: str, script: str, inputs: dict[str, str] | None = None) -> str:
    ins = "".join(f'{k} = "{v}"\n' for k, v in (inputs or {}).items())
    return (f'name = "{name}"\nversion = "1.0"\nkind = "build"\n[inputs]\n{ins}'
            f"[build]\nscript = '''\n{script}\n'''\n")  # fmt: skip


def mlpkg(home: Path, recipes: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "MLPKG_HOME": str(home), "MLPKG_RECIPES_PATH": str(recipes), **env}
    return subprocess.run([sys.executable, "-m", "mlpkg", *args], env=full, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_an_output_linking_to_a_host_directory_leaves_it_alone(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "f").write_text("mine")
    os.chmod(victim / "f", 0o644)
    recipes = tmp_path / "recipes"
    write(recipes, "evil", build_recipe("evil", f'ln -s {victim} "$out"'))
    mlpkg(tmp_path / "home", recipes, "build", "evil")
    assert stat.S_IMODE(os.stat(victim / "f").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(victim / "sub").st_mode) & stat.S_IWUSR


def test_a_build_sees_the_closure_of_its_inputs(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    write(recipes, "base", build_recipe("base", 'mkdir "$out"; echo from-base > "$out/data"'))
    # a refers to base by its store name only (relocatable), as a runtime dependency would.
    write(recipes, "a", build_recipe("a", 'mkdir "$out"; basename "$base" > "$out/dep"',
                                     {"base": "base"}))  # fmt: skip
    script = 'mkdir "$out"; cat "$(dirname "$a")/$(cat "$a/dep")/data" > "$out/seen"'
    write(recipes, "c", build_recipe("c", script, {"a": "a"}))
    r = mlpkg(tmp_path / "home", recipes, "build", "c")
    assert r.returncode == 0, r.stderr
    assert (Path(r.stdout.strip()) / "seen").read_text() == "from-base\n"


def test_a_home_reached_through_a_link_is_still_forbidden_in_outputs(tmp_path: Path) -> None:
    real = tmp_path / "real-home"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    recipes = tmp_path / "recipes"
    write(recipes, "base", build_recipe("base", 'mkdir -p "$out/bin"'))
    write(recipes, "d", build_recipe("d", 'mkdir "$out"; cd "$base"; pwd -P > "$out/f"',
                                     {"base": "base"}))  # fmt: skip
    r = mlpkg(tmp_path / "link", recipes, "build", "d", MLPKG_SANDBOX="none")
    assert r.returncode == 1 and "relocatable" in r.stderr, r.stderr
