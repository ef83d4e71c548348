"""Bad input and odd situations at the edges of the CLI contract: one sentence, the right
exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlpkg.store.gc import collect
from mlpkg.store.locks import PathLock
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store


def write(root: Path, name: str, text: str) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "1.0.toml").write_text(text)


def build_recipe(
    name: str, script: str, inputs: dict[str, str] | None = None, env: str = ""
) -> str:
    ins = "".join(f'{k} = "{v}"\n' for k, v in (inputs or {}).items())
    return (f'name = "{name}"\nversion = "1.0"\nkind = "build"\n[inputs]\n{ins}'
            f"[build]\nscript = '''\n{script}\n'''\n{env}")  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    recipes = tmp_path / "recipes"
    write(recipes, "base", build_recipe("base", 'mkdir -p "$out/bin"'))
    write(recipes, "top", build_recipe("top", 'mkdir -p "$out/lib"', {"base": "base"},
                                       '[env]\nPYTHONPATH = { prepend = "lib" }\n'))  # fmt: skip
    return recipes


def mlpkg(
    tmp_path: Path, *args: str, home: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "MLPKG_HOME": str(home or tmp_path / "home"),
            "MLPKG_RECIPES_PATH": str(tmp_path / "recipes"), **env}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "mlpkg", *args], env=full, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def one_sentence(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def test_gc_keeps_what_a_busy_dead_path_references(tmp_path: Path, repo: Path) -> None:
    r = mlpkg(tmp_path, "build", "top")
    assert r.returncode == 0, r.stderr
    with Store(tmp_path / "home") as store:
        store.temp_roots.close()
        top = StorePath.parse(Path(r.stdout.strip()).name)
        with PathLock(store.locks_dir, top):  # another process is using it
            result = collect(store)
        assert result.deleted == [] and len(result.skipped) == 2
        deleted = collect(store).deleted
        assert len(deleted) == 2 and any(d.endswith("-base-1.0") for d in deleted)


def test_path_info_of_the_store_itself(tmp_path: Path, repo: Path) -> None:
    mlpkg(tmp_path, "build", "base")
    r = mlpkg(tmp_path, "path-info", str(tmp_path / "home" / "store"))
    assert "is the store itself" in one_sentence(r, 2)


@pytest.mark.parametrize(("name", "version"), [("a b", "1"), ("ok", ""), ("ok", "1/2")])
def test_add_file_names_the_bad_option(tmp_path: Path, repo: Path, name: str, version: str) -> None:
    f = tmp_path / "blob"
    f.write_bytes(b"x")
    r = mlpkg(tmp_path, "add-file", str(f), "--name", name, "--version", version)
    assert "add-file --" in one_sentence(r, 2)


def test_a_home_that_is_a_file(tmp_path: Path, repo: Path) -> None:
    (tmp_path / "afile").write_text("")
    r = mlpkg(tmp_path, "build", "base", home=tmp_path / "afile")
    assert "cannot hold a store" in one_sentence(r, 2)


def test_shell_refuses_a_non_program_and_reports_signals_like_a_shell(
    tmp_path: Path, repo: Path
) -> None:
    r = mlpkg(tmp_path, "shell", "base", "--", "/etc/passwd")
    assert "not an executable program" in one_sentence(r, 2)
    r = mlpkg(tmp_path, "shell", "base", "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 143


def test_lock_to_stdout_with_json_is_refused(tmp_path: Path, repo: Path) -> None:
    r = mlpkg(tmp_path, "lock", "base", "-o", "-", "--json")
    assert r.returncode == 2 and "cannot share it with --json" in r.stderr


def test_the_callers_pythonpath_never_reaches_the_closure(tmp_path: Path, repo: Path) -> None:
    r = mlpkg(tmp_path, "env", "--pure", "top", PYTHONPATH="/home/user/junk")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("export PYTHONPATH="))
    assert "junk" not in line and line.endswith("-top-1.0/lib")


def test_an_unknown_input_names_its_requester(tmp_path: Path, repo: Path) -> None:
    write(repo, "m1", build_recipe("m1", 'mkdir "$out"', {"x": "nonexistent"}))
    sentence = one_sentence(mlpkg(tmp_path, "build", "m1"), 2)
    assert "m1@1.0 has input x = nonexistent" in sentence and "'nonexistent'" in sentence
