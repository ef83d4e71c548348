"""Profiles: generations, rollback, activation of the current generation, GC roots."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def write(root: Path, name: str, text: str) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "1.0.toml").write_text(text)


def tool(name: str) -> str:
    script = f'mkdir -p "$out/bin"; printf "#!/bin/sh\\necho {name}\\n" > "$out/bin/{name}"; chmod +x "$out/bin/{name}"'
    return (f'name = "{name}"\nversion = "1.0"\nkind = "build"\n'
            f"[build]\nscript = '''{script}'''\n[env]\nPATH = {{ prepend = \"bin\" }}\n")  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    recipes = tmp_path / "recipes"
    for name in ("alpha", "beta", "gamma"):
        write(recipes, name, tool(name))
    return {**os.environ, "MLPKG_HOME": str(tmp_path / "home"), "MLPKG_RECIPES_PATH": str(recipes)}


def mlpkg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlpkg", *args], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, r.stderr
    return r


def test_install_install_rollback(env: dict[str, str]) -> None:
    ok(mlpkg(env, "install", "alpha"))
    ok(mlpkg(env, "install", "beta"))
    assert ok(mlpkg(env, "shell", "--", "sh", "-c", "alpha; beta")).stdout == "alpha\nbeta\n"
    history = ok(mlpkg(env, "profile", "history")).stdout.splitlines()
    assert len(history) == 2 and history[1].startswith("*") and "alpha beta" in history[1]
    ok(mlpkg(env, "profile", "rollback"))
    r = mlpkg(env, "shell", "--", "sh", "-c", "alpha; beta")
    assert r.stdout == "alpha\n" and r.returncode == 127
    # eval "$(mlpkg env)" in a fresh bash gives the same view.
    bash = subprocess.run(["bash", "--norc", "-c", ok(mlpkg(env, "env")).stdout + "\nalpha; beta"],
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert bash.stdout == "alpha\n" and bash.returncode == 127
    ok(mlpkg(env, "profile", "switch", "2"))
    assert ok(mlpkg(env, "shell", "--", "beta")).stdout == "beta\n"


def test_bad_profile_input(env: dict[str, str]) -> None:
    r = mlpkg(env, "profile", "rollback")
    assert r.returncode == 2 and "no generation before" in r.stderr
    ok(mlpkg(env, "install", "alpha"))
    r = mlpkg(env, "profile", "rollback")
    assert r.returncode == 2 and "no generation before" in r.stderr
    r = mlpkg(env, "install", "--profile", "a/b", "alpha")
    assert r.returncode == 2 and "not a valid profile name" in r.stderr
    r = mlpkg(env, "profile", "switch", "9")
    assert r.returncode == 2 and "has no generation 9 (it has 1)" in r.stderr


def test_two_changes_at_once_lose_nothing(env: dict[str, str]) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "mlpkg", "install", "-q", name], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name in ("alpha", "beta", "gamma")]  # fmt: skip
    for p in procs:
        assert p.wait(60) == 0
    history = ok(mlpkg(env, "profile", "history", "--json")).stdout
    import json

    gens = json.loads(history)
    assert [g["generation"] for g in gens] == [1, 2, 3]
    assert sorted(gens[-1]["specs"]) == ["alpha", "beta", "gamma"] and gens[-1]["current"]


def test_generations_are_roots_until_wiped(env: dict[str, str]) -> None:
    ok(mlpkg(env, "install", "alpha"))
    ok(mlpkg(env, "profile", "remove", "alpha"))
    ok(mlpkg(env, "install", "beta"))
    assert ok(mlpkg(env, "gc", "--json")).stdout.count("-alpha-1.0") == 0  # generation 1 keeps it
    ok(mlpkg(env, "profile", "wipe-history"))
    assert "-alpha-1.0" in ok(mlpkg(env, "gc")).stdout


def test_a_path_deleted_by_hand(env: dict[str, str]) -> None:
    path = Path(ok(mlpkg(env, "install", "alpha")).stdout.strip())
    os.chmod(path, 0o755)
    shutil.rmtree(path)
    r = mlpkg(env, "shell", "--", "alpha")
    assert r.returncode == 1 and "was deleted" in r.stderr and "verify --repair" in r.stderr
    ok(mlpkg(env, "verify", "--repair"))
    assert ok(mlpkg(env, "shell", "--", "alpha")).stdout == "alpha\n"


def test_export_is_a_lock_of_the_current_generation(env: dict[str, str], tmp_path: Path) -> None:
    ok(mlpkg(env, "install", "alpha", "beta"))
    lock = tmp_path / "profile.lock"
    lock.write_text(ok(mlpkg(env, "profile", "export")).stdout)
    other = {**env, "MLPKG_HOME": str(tmp_path / "other"), "MLPKG_RECIPES_PATH": str(tmp_path)}
    built = ok(mlpkg(other, "build", "--lock", str(lock))).stdout.split()
    assert [Path(p).name for p in built] == [
        Path(p).name for p in ok(mlpkg(env, "build", "alpha", "beta")).stdout.split()
    ]


def test_gc_delete_older_than_and_profile_sizes(env: dict[str, str]) -> None:
    ok(mlpkg(env, "install", "alpha"))
    ok(mlpkg(env, "profile", "remove", "alpha"))
    ok(mlpkg(env, "install", "beta"))
    sizes = ok(mlpkg(env, "path-info", "--profile", "default", "--closure", "--size")).stdout
    assert "-beta-1.0" in sizes and "closure" in sizes and "-alpha-1.0" not in sizes
    kept = ok(mlpkg(env, "gc", "--delete-older-than", "30d"))  # nothing that old
    assert "-alpha-1.0" not in kept.stdout
    gone = ok(mlpkg(env, "gc", "--delete-older-than", "0s"))
    assert "-alpha-1.0" in gone.stdout and "wiped generations 1, 2" in gone.stderr
    assert ok(mlpkg(env, "shell", "--", "beta")).stdout == "beta\n"
