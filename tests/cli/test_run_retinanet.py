"""The main job, end to end: `mlpkg run retinanet-*` with real wheels, LoadGen, ONNX Runtime
and pycocotools, on the synthetic set; and the real app offline.

The closure's wheels come from the Python package index, so these tests are marked
``pypi`` (deselected in CI with ``-m 'not pypi'``). One MLPKG_HOME is shared by the module:
the first test is the fresh-machine run, the others reuse its store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_support import CliResult

pytestmark = pytest.mark.pypi

REPO = Path(__file__).resolve().parents[2]
MAP_LINE = re.compile(r"^mAP=(\d+\.\d{3})%$", re.MULTILINE)


class Runner:
    """``mlpkg`` as a subprocess with its own MLPKG_HOME and recipe directory."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.recipe_path = root / "recipes"
        self.recipe_path.mkdir(parents=True, exist_ok=True)

    def sub(self, *args: str, timeout: float = 120, env: dict | None = None) -> CliResult:
        full = {k: v for k, v in os.environ.items() if not k.startswith("MLPKG_")}
        full.update(MLPKG_HOME=str(self.home), MLPKG_RECIPES_PATH=str(self.recipe_path))
        full.update(env or {})
        p = subprocess.run([sys.executable, "-m", "mlpkg", *args], env=full, cwd=REPO,
                           capture_output=True, text=True, timeout=timeout)  # fmt: skip
        return CliResult(p.returncode, p.stdout, p.stderr, args)

    def add_recipe(self, name: str, version: str, text: str) -> None:
        (self.recipe_path / name).mkdir(exist_ok=True)
        (self.recipe_path / name / f"{version}.toml").write_text(text)

    def path_of(self, spec: str) -> Path:
        return Path(self.sub("show", "--json", spec).ok().json()["path"])

    def store_entries(self) -> list[str]:
        return sorted(os.listdir(self.home / "store"))


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    return Runner(tmp_path_factory.mktemp("retinanet"))


def _result(cli, out: str) -> dict:
    run_id = re.search(r"run (\S+): ", out)
    assert run_id, out
    return json.loads((cli.home / "runs" / run_id.group(1) / "result.json").read_text())


def test_first_run_shows_the_map_table(cli):
    start = time.monotonic()
    r = cli.sub("run", "retinanet-offline+synthetic", "--accuracy", timeout=600).ok()
    took = time.monotonic() - start
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in r.out
    found = MAP_LINE.search(r.out)
    assert found, r.out
    assert float(found.group(1)) >= 90.0
    result = json.loads(next((cli.home / "runs").glob("*/result.json")).read_text())
    assert result["status"] == "ok" and result["mode"] == "AccuracyOnly"
    assert result["accuracy"]["mAP"] == pytest.approx(float(found.group(1)) / 100, abs=5e-6)
    assert {n["name"] for n in result["lock"]["node"]} >= {
        "onnxruntime", "mlcommons-loadgen", "pycocotools", "mlpkg-harness",
        "retinanet-synthetic", "openimages-synthetic-preprocessed",
    }  # fmt: skip
    print(f"first run on a fresh home: {took:.1f} s")


def test_second_run_reuses_everything(cli):
    before = set(cli.store_entries())
    r = cli.sub("run", "retinanet-offline+synthetic", "--accuracy", timeout=300).ok()
    assert set(cli.store_entries()) == before
    assert "build" not in r.err.split("run ")[0]
    runs = sorted((cli.home / "runs").iterdir())
    logs = [(d / "mlperf_log_accuracy.json").read_bytes() for d in runs[-2:]]
    assert logs[0] == logs[1]  # two accuracy runs give identical accuracy logs


@pytest.mark.parametrize("app", ["offline", "server", "singlestream", "multistream"])
def test_every_scenario_runs_in_performance_mode(cli, app):
    r = cli.sub("run", f"retinanet-{app}+synthetic", "--time", "2", timeout=300).ok()
    assert re.search(r"TestScenario\.\w+ qps=[\d.]+, mean=[\d.]+, time=[\d.]+", r.out), r.out
    assert re.search(r"LoadGen result: (VALID|INVALID)", r.out), r.out
    result = _result(cli, r.err)
    assert result["mode"] == "PerformanceOnly" and result["loadgen"]


def test_runs_list_and_show(cli):
    listed = cli.sub("runs", "list", "--json").ok().json()
    assert len(listed) >= 6 and all(r["status"] == "ok" for r in listed)
    shown = cli.sub("runs", "show", "latest").ok()
    assert "status    ok" in shown.out


def test_run_lock_reruns_the_same_closure(cli, tmp_path):
    lock = tmp_path / "mlpkg.lock"
    cli.sub("lock", "retinanet-singlestream+synthetic", "-o", str(lock)).ok()
    other = Runner(tmp_path / "colleague")
    # The same download cache, so the colleague's machine needs no index either.
    cache = {"MLPKG_CACHE_DIR": str(cli.home / "cache" / "downloads")}
    r = other.sub("run", "--lock", str(lock), "--count", "8", "--accuracy", timeout=600,
                  env=cache).ok()  # fmt: skip
    ours = _result(cli, cli.sub("run", "retinanet-singlestream+synthetic", "--count", "8",
                                "--accuracy", timeout=300).ok().err)  # fmt: skip
    theirs = _result(other, r.err)
    assert theirs["app_path"] == ours["app_path"]
    assert theirs["accuracy"]["mAP"] == ours["accuracy"]["mAP"]


def test_real_model_offline_then_from_add_file(cli, tmp_path):
    # Offline, whatever this machine can reach: downloads go through a proxy that is not
    # there, and the dataset's network build is replaced by one that reaches nothing.
    offline = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
               "NO_PROXY": "", "ALL_PROXY": ""}  # fmt: skip
    cli.add_recipe("openimages-mlperf", "1.0", UNREACHABLE_DATASET)
    failed = cli.sub("run", "retinanet-offline", "--accuracy", timeout=300, env=offline)
    assert failed.code == 1, failed
    # Every missing input at once: the model file and the dataset, each with its way in.
    assert "resnext50_32x4d_fpn.onnx" in failed.err
    assert "mlpkg add-file resnext50_32x4d_fpn.onnx --name retinanet-resnext50-onnx" in failed.err
    assert "mlpkg add-file DIR --name openimages-mlperf --version 1.0" in failed.err
    # A stand-in for the licensed/unreachable file: the synthetic model, whose sha256 a
    # test recipe declares under the real recipe's name (searched before the bundled one).
    standin = tmp_path / "resnext50_32x4d_fpn.onnx"
    shutil.copyfile(cli.path_of("retinanet-synthetic@1.0"), standin)
    sha = hashlib.sha256(standin.read_bytes()).hexdigest()
    cli.add_recipe("retinanet-resnext50-onnx", "1.0", STANDIN_MODEL.format(sha=sha))
    cli.sub("add-file", str(standin), "--name", "retinanet-resnext50-onnx", "--version", "1.0").ok()
    # The dataset's offline way in: a local directory in the real layout.
    failed = cli.sub("run", "retinanet-offline", "--accuracy", timeout=300, env=offline)
    assert failed.code == 1 and "openimages-mlperf" in failed.err, failed
    assert "resnext50" not in failed.err  # the model is there now
    assert "network = true" in failed.err
    assert "mlpkg add-file DIR --name openimages-mlperf --version 1.0" in failed.err
    local = Path(cli.path_of("openimages-synthetic@1.0"))
    cli.sub("add-file", str(local), "--name", "openimages-mlperf", "--version", "1.0").ok()
    r = cli.sub("run", "retinanet-offline", "--accuracy", "--count", "16", timeout=600).ok()
    assert MAP_LINE.search(r.out), r.out


STANDIN_MODEL = """
name = "retinanet-resnext50-onnx"
version = "1.0"
kind = "fetch"
[source]
urls = ["https://zenodo.org/record/6617879/files/resnext50_32x4d_fpn.onnx"]
sha256 = "{sha}"
"""

# The bundled recipe, with upstream URLs that nothing answers (some machines reach them).
UNREACHABLE_DATASET = """
name = "openimages-mlperf"
version = "1.0"
kind = "build"
[inputs]
tools = "openimages-mlperf-tools@1.0"
python = "python@3.11"
[build]
script = "python3 -S -m mlpkg_harness.openimages_download $out --annotations-url http://127.0.0.1:9/v5 --images-url http://127.0.0.1:9/img"
network = true
expect = ["annotations/openimages-mlperf.json", "validation/data"]
runtime_inputs = []
"""


def test_ctrl_c_ends_a_real_run_cleanly(cli):
    before = set(os.listdir(cli.home / "runs"))
    full = {k: v for k, v in os.environ.items() if not k.startswith("MLPKG_")}
    full.update(MLPKG_HOME=str(cli.home), MLPKG_RECIPES_PATH=str(cli.recipe_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpkg", "run", "retinanet-server+synthetic", "--time", "60"],
        env=full, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        run_dir = None
        while time.monotonic() < deadline and run_dir is None:
            made = sorted(set(os.listdir(cli.home / "runs")) - before)
            detail = cli.home / "runs" / made[0] / "mlperf_log_detail.txt" if made else None
            if detail is not None and detail.exists() and detail.stat().st_size > 0:
                run_dir = detail.parent
            time.sleep(0.2)
        assert run_dir is not None, "LoadGen never started"
        time.sleep(2)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert time.monotonic() - sent < 20
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted"
    assert (run_dir / "mlperf_log_detail.txt").stat().st_size > 0  # the logs are kept
    assert json.loads((run_dir / "harness.json").read_text())["status"] == "interrupted"


def test_loadgen_4_0_loads_mlperf_conf_explicitly(cli):
    r = cli.sub("run", "--with", "loadgen=mlcommons-loadgen@4.0", "retinanet-multistream+synthetic",
                "--time", "2", timeout=300).ok()  # fmt: skip
    result = _result(cli, r.err)
    assert result["versions"]["loadgen_version"] == "4.0"
    conf = result["settings"]["conf_files"]
    assert conf[0]["role"] == "mlperf" and conf[0]["path"].endswith("mlperf-retinanet.conf")
    assert result["settings"]["values"]["multi_stream_samples_per_query"] == 8
