"""The card's command on the old stack (issue 12), end to end on a fresh home.

``mlpkg install loadgen@4.0 onnxruntime@1.12.1`` needs Python <= 3.10: the resolver picks
CPython 3.9 built from source (and its C libraries) in the sandbox, then each package's
wheel for it. The harness then runs on that interpreter and gives the default stack's mAP,
and the lock of the closure is made again, identical, on a second home.

Marked ``pypi`` (wheels from the package index; CPython's source from its mirrors) and
``slow``: CI runs it once (.ci/run); the default suite does not build CPython.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.cli_support import CliResult, mlpkg_in

pytestmark = [pytest.mark.pypi, pytest.mark.timeout(3600)]

MAP_LINE = re.compile(r"^mAP=(\d+\.\d{3})%$", re.MULTILINE)
CARD = ("loadgen@4.0", "onnxruntime@1.12.1")
OLD = ("--with", "onnxruntime=onnxruntime@1.12.1", "--with", "loadgen=mlcommons-loadgen@4.0")


def mlpkg(home: Path, *args: str, timeout: float = 1800) -> CliResult:
    return mlpkg_in(home, *args, timeout=timeout)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh home; or MLPKG_TEST_INTERPRETER_HOME, where CI's run of
    tests/build/test_cpython.py has built CPython 3.9 already (it is built once)."""
    shared = os.environ.get("MLPKG_TEST_INTERPRETER_HOME")
    return Path(shared) if shared else tmp_path_factory.mktemp("old-stack") / "home"


def test_the_card_installs_on_a_source_built_python_39(home: Path) -> None:
    plan = mlpkg(home, "install", "--dry-run", "--json", *CARD).ok().json()["plan"]
    assert plan["python"]["chosen"].startswith("3.9.") and plan["python"]["built"]
    reasons = [why for whys in plan["python"]["excluded"].values() for why in whys]
    assert any(why.startswith("onnxruntime ") for why in reasons), plan["python"]
    r = mlpkg(home, "install", *CARD).ok()
    assert any(
        p.endswith("-python-" + plan["python"]["chosen"]) for p in os.listdir(home / "store")
    )
    again = mlpkg(home, "install", "-v", *CARD).ok()  # a second time: nothing to do
    assert "nothing to do" in again.err and again.out == r.out


def test_the_shell_line_prints_1_12_1(home: Path) -> None:
    code = "import onnxruntime, mlperf_loadgen, numpy, sys; "
    code += "print(onnxruntime.__version__, sys.version_info[:2] == (3, 9), numpy.__version__)"
    r = mlpkg(home, "shell", *CARD, "--", "python", "-c", code).ok()
    ort, on_39, numpy = r.out.split()
    assert ort == "1.12.1" and on_39 == "True" and numpy.startswith("1.")


def test_shell_python_39_numpy_is_a_venv_without_touching_the_machine(home: Path) -> None:
    code = "import numpy, sys; print(sys.prefix != sys.base_prefix, sys.version.split()[0])"
    r = mlpkg(home, "shell", "python@3.9", "numpy", "--", "python", "-c", code).ok()
    venv, version = r.out.split()
    assert venv == "True" and version.startswith("3.9.")
    ctypes = "import ctypes, zlib, bz2, lzma, sqlite3, decimal, json; print('ok')"
    assert mlpkg(home, "shell", "python@3.9", "--", "python", "-c", ctypes).ok().out == "ok\n"


def test_the_harness_on_python_39_gives_the_default_stacks_map(home: Path) -> None:
    old = mlpkg(home, "run", "retinanet-offline+synthetic", *OLD, "--accuracy").ok()
    new = mlpkg(home, "run", "retinanet-offline+synthetic", "--accuracy").ok()
    old_map, new_map = MAP_LINE.search(old.out), MAP_LINE.search(new.out)
    assert old_map and new_map, (old.out[-2000:], new.out[-2000:])
    assert old_map.group(1) == new_map.group(1)
    # The dataset and the model are shared: only the runtime closure moved to 3.9.
    plans = [
        mlpkg(home, "build", "--dry-run", "--json", "retinanet-offline+synthetic", *w).ok().json()
        for w in (OLD, ())
    ]
    paths = [{n["name"]: n["path"] for n in p["plan"]["nodes"]} for p in plans]
    for shared in ("openimages-synthetic-preprocessed", "retinanet-synthetic"):
        assert paths[0][shared] == paths[1][shared]
    assert paths[0]["mlpkg-harness"] != paths[1]["mlpkg-harness"]


def test_the_lock_reproduces_on_a_second_home(home: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.lock"
    mlpkg(home, "lock", *CARD, "-o", str(first)).ok()
    second_home = tmp_path / "second-home"
    second = tmp_path / "second.lock"
    mlpkg(second_home, "lock", *CARD, "-o", str(second)).ok()
    assert first.read_bytes() == second.read_bytes()
    plan = mlpkg(second_home, "build", "--dry-run", "--json", "--lock", str(first)).ok().json()
    locked = mlpkg(home, "build", "--json", "--lock", str(first)).ok().json()
    assert plan["paths"] != [] and [Path(p).name for p in plan["paths"]] == [
        Path(p).name for p in locked["paths"]
    ]
