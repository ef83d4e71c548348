"""The bundled Python collection really installs and imports (issue 4's Done-when).

These tests download wheels from the Python package index: they are marked ``pypi`` and
deselected in CI (``-m 'not pypi'``). One MLPKG_HOME is shared by the module, so each wheel
is downloaded once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pypi


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundled-home")


def mlpkg(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLPKG_HOME": str(home)}
    env.pop("MLPKG_RECIPES_PATH", None)
    return subprocess.run([sys.executable, "-m", "mlpkg", *args], env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "module", "version"),
    [
        ("mlcommons-loadgen@==4.0", "mlperf_loadgen", None),
        ("loadgen@4.1", "mlperf_loadgen", None),
        ("loadgen@5.1", "mlperf_loadgen", None),
        ("loadgen@6.0.17", "mlperf_loadgen", None),
        ("onnxruntime@1.17.3", "onnxruntime", "1.17.3"),
        ("onnxruntime@1.20", "onnxruntime", "1.20."),
        ("onnxruntime@1.22", "onnxruntime", "1.22."),
        ("onnxruntime", "onnxruntime", ""),
        ("numpy", "numpy", ""),
        ("pycocotools", "pycocotools.coco", None),
        ("onnx", "onnx", ""),
        ("opencv-python-headless", "cv2", ""),
        ("pillow", "PIL", ""),
        ("apache-tvm", "tvm", ""),
    ],
)
def test_every_bundled_closure_imports(
    home: Path, spec: str, module: str, version: str | None
) -> None:
    code = f"import {module} as m; print(getattr(m, '__version__', '-'))"
    r = mlpkg(home, "shell", "-q", spec, "--", "python", "-c", code)
    assert r.returncode == 0, r.stderr[-2000:]
    if version is not None:
        assert r.stdout.strip().startswith(version), r.stdout


def test_done_when_two_closures_side_by_side(home: Path) -> None:
    first = mlpkg(home, "install", "loadgen@4.0", "onnxruntime@1.17.3")
    assert first.returncode == 0, first.stderr[-2000:]
    code = "import mlperf_loadgen, onnxruntime; print(onnxruntime.__version__)"
    r = mlpkg(home, "shell", "loadgen@4.0", "onnxruntime@1.17.3", "--", "python", "-c", code)
    assert r.returncode == 0 and r.stdout == "1.17.3\n", r.stderr[-2000:]
    # A second install is a no-op: same paths, nothing new in the store.
    before = sorted(os.listdir(home / "store"))
    again = mlpkg(home, "install", "-v", "loadgen@4.0", "onnxruntime@1.17.3")
    assert again.returncode == 0 and again.stdout == first.stdout
    assert "nothing to do" in again.stderr, again.stderr
    assert sorted(os.listdir(home / "store")) == before
    # The newest pair beside it, each closure with its own NumPy.
    r = mlpkg(home, "shell", "loadgen@6.0.17", "onnxruntime", "--", "python", "-c",
              code + "; import numpy; print(numpy.__version__)")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    ort, numpy = r.stdout.split()
    assert ort != "1.17.3" and numpy.startswith("2.")
    r = mlpkg(home, "shell", "onnxruntime@1.17.3", "--", "python", "-c",
              "import numpy; print(numpy.__version__)")  # fmt: skip
    assert r.stdout.startswith("1."), r.stdout


def test_a_version_without_a_wheel_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    r = mlpkg(home, "import", "pypi", "onnxruntime==1.12.1", "--into", str(tmp_path))
    assert r.returncode == 2
    assert "onnxruntime 1.12.1 has no wheel for cp311" in r.stderr
    assert "nearest versions with a wheel" in r.stderr and "Traceback" not in r.stderr


LOADGEN_TEST = """
import os, tempfile
import mlperf_loadgen as lg
def issue(samples):
    lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])
sut = lg.ConstructSUT(issue, lambda: None)
qsl = lg.ConstructQSL(16, 16, lambda idx: None, lambda idx: None)
settings = lg.TestSettings()
settings.scenario = lg.TestScenario.SingleStream
settings.mode = lg.TestMode.PerformanceOnly
settings.min_query_count = settings.max_query_count = 32
settings.min_duration_ms = 0
out = tempfile.mkdtemp()
log = lg.LogOutputSettings(); log.outdir = out; log.copy_summary_to_stdout = False
ls = lg.LogSettings(); ls.log_output = log
lg.StartTestWithLogSettings(sut, qsl, settings, ls)
lg.DestroyQSL(qsl); lg.DestroySUT(sut)
print(lg.__file__)
print(open(os.path.join(out, "mlperf_log_summary.txt")).read())
"""


def test_loadgen_built_from_source_runs_and_rebuilds_bit_identically(home: Path) -> None:
    built = mlpkg(home, "build", "loadgen@4.0+source")
    assert built.returncode == 0, built.stderr[-3000:]
    path = Path(built.stdout.strip())
    assert path.name.endswith("-mlcommons-loadgen-4.0+source")
    r = mlpkg(home, "shell", "loadgen@4.0+source", "--", "python", "-c", LOADGEN_TEST)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith(str(path)) and "Scenario : SingleStream" in r.stdout
    assert "90th percentile latency (ns)" in r.stdout
    check = mlpkg(home, "build", "--check", "loadgen@4.0+source")
    assert check.returncode == 0 and "reproducible" in check.stdout, check.stderr[-3000:]


def test_issue5_done_when_install_install_rollback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert mlpkg(home, "install", "loadgen@4.0").returncode == 0
    assert mlpkg(home, "install", "onnxruntime").returncode == 0
    both = "import mlperf_loadgen, onnxruntime; print('both')"
    assert mlpkg(home, "shell", "--", "python", "-c", both).stdout == "both\n"
    assert mlpkg(home, "profile", "rollback").returncode == 0
    r = mlpkg(home, "shell", "--", "python", "-c", "import mlperf_loadgen; import onnxruntime")
    assert r.returncode == 1 and "No module named 'onnxruntime'" in r.stderr
    env = mlpkg(home, "env").stdout
    bash = subprocess.run(
        ["bash", "--norc", "-c", env + "\npython -c 'import mlperf_loadgen; print(1)'\n"
         "python -c 'import onnxruntime' 2>&1 | tail -1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bash.stdout.splitlines() == ["1", "ModuleNotFoundError: No module named 'onnxruntime'"]
