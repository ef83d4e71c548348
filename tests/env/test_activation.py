"""Wheels in the store and activation (issue 4): a closure's Python sees exactly its wheels."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

WHEEL_FILES = {
    "demo_pkg/__init__.py": 'VALUE = "from the store"\n\ndef main():\n    print("demo-cli says hi")\n',
    "demo_pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n",
    "demo_pkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "demo_pkg-1.0.dist-info/entry_points.txt": "[console_scripts]\ndemo-cli = demo_pkg:main\n",
}


def make_wheel(directory: Path, filename: str = "demo_pkg-1.0-py3-none-any.whl") -> Path:
    wheel = directory / filename
    record = []
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in WHEEL_FILES.items():
            data = text.encode()
            z.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        record.append("demo_pkg-1.0.dist-info/RECORD,,")
        z.writestr("demo_pkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def wheel_recipe(
    wheel: Path, filename: str | None = None, requires_python: str | None = None
) -> str:
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    extra = f'requires_python = "{requires_python}"\n' if requires_python else ""
    return (
        f'name = "demo-pkg"\nversion = "1.0"\nkind = "wheel"\n[inputs]\npython = "python"\n'
        f'[source]\nurls = ["{wheel.as_uri()}"]\nsha256 = "{sha}"\n'
        f'[wheel]\nfilename = "{filename or wheel.name}"\n{extra}'
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    recipes = tmp_path / "recipes"
    (recipes / "demo-pkg").mkdir(parents=True)
    wheel = make_wheel(tmp_path)
    (recipes / "demo-pkg" / "1.0.toml").write_text(wheel_recipe(wheel))
    return {**os.environ, "MLPKG_HOME": str(tmp_path / "home"), "MLPKG_RECIPES_PATH": str(recipes)}


def mlpkg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlpkg", *args], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_a_wheel_is_installed_relocatably(env: dict[str, str]) -> None:
    r = mlpkg(env, "build", "demo-pkg")
    assert r.returncode == 0, r.stderr
    out = Path(r.stdout.strip())
    site = out / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    assert (site / "demo_pkg" / "__init__.py").read_text().startswith('VALUE = "from the store"')
    assert (site / "demo_pkg-1.0.dist-info" / "INSTALLER").read_text() == "mlpkg\n"
    script = (out / "bin" / "demo-cli").read_text()
    assert script.startswith("#!/usr/bin/env python3\n")
    assert not list(out.rglob("*.pyc"))
    check = mlpkg(env, "build", "--check", "demo-pkg")
    assert check.returncode == 0, check.stderr


def test_the_closure_python_sees_its_wheels_and_nothing_else(
    env: dict[str, str], tmp_path: Path
) -> None:
    outer = tmp_path / "outer-site"
    (outer / "leaky").mkdir(parents=True)
    (outer / "leaky" / "__init__.py").write_text("")
    dirty = {**env, "PYTHONPATH": str(outer), "VIRTUAL_ENV": str(tmp_path / "venv")}
    code = (
        "import sys, demo_pkg; print(demo_pkg.VALUE)\n"
        "try:\n import leaky; print('leak')\nexcept ImportError: print('isolated')\n"
        "import site; print(site.ENABLE_USER_SITE)"
    )
    r = mlpkg(dirty, "shell", "demo-pkg", "--", "python3", "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["from the store", "isolated", "False"]
    r = mlpkg(env, "shell", "demo-pkg", "--", "demo-cli")
    assert r.returncode == 0 and r.stdout == "demo-cli says hi\n", r.stderr
    # Whatever the outer interpreter has installed (pytest itself) is not visible.
    r = mlpkg(env, "shell", "demo-pkg", "--", "python3", "-c", "import pytest")
    assert r.returncode == 1 and "No module named 'pytest'" in r.stderr


def test_env_prints_what_a_fresh_bash_can_eval(env: dict[str, str]) -> None:
    r = mlpkg(env, "env", "demo-pkg")
    assert r.returncode == 0, r.stderr
    assert "unset VIRTUAL_ENV" in r.stdout and "export PYTHONNOUSERSITE=1" in r.stdout
    bash = subprocess.run(
        ["bash", "--norc", "-c", r.stdout + '\npython3 -c "import demo_pkg; print(demo_pkg.VALUE)"'],
        env={**env, "PYTHONPATH": "/nowhere"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bash.stdout == "from the store\n", bash.stderr


def test_shell_passes_the_exit_status_through(env: dict[str, str]) -> None:
    assert mlpkg(env, "shell", "demo-pkg", "--", "sh", "-c", "exit 7").returncode == 7


@pytest.mark.parametrize(
    ("filename", "requires", "words"),
    [
        ("demo_pkg-1.0-cp27-cp27mu-win32.whl", None, "does not fit the Python"),
        ("demo_pkg-1.0-py3-none-any.whl", ">=3.99", "requires Python >=3.99"),
    ],
)
def test_an_incompatible_wheel_is_refused(tmp_path: Path, env: dict[str, str], filename: str,
                                          requires: str | None, words: str) -> None:  # fmt: skip
    wheel = make_wheel(tmp_path, filename)
    recipes = Path(env["MLPKG_RECIPES_PATH"])
    (recipes / "demo-pkg" / "1.0.toml").write_text(wheel_recipe(wheel, filename, requires))
    r = mlpkg(env, "build", "demo-pkg")
    assert r.returncode == 1, r.stderr
    assert words in r.stderr
    assert not list((Path(env["MLPKG_HOME"]) / "store").glob("*demo-pkg*"))
