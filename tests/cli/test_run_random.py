"""`mlpkg run retinanet-offline+random`: the real model's architecture with seeded random
weights, built by its recipe in the sandbox, run by the harness over ONNX Runtime and
LoadGen on the synthetic set (issue 15). Real wheels from the Python package index
(``pypi``); a 150 MB model and seconds per inference (``slow``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli.test_run_retinanet import Runner

pytestmark = [pytest.mark.pypi, pytest.mark.slow]

MAP_LINE = re.compile(r"^mAP=(\d+\.\d{3})%$", re.MULTILINE)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(tmp_path_factory.mktemp("random"))


# The module's fixture builds nothing; each test's own subprocess timeout is its ceiling,
# over pytest-timeout's default (300 s), which would kill it first.
@pytest.mark.timeout(960)
def test_accuracy_run_on_the_random_model(cli: Runner) -> None:
    r = cli.sub("run", "retinanet-offline+random", "--accuracy", "--count", "2", timeout=900)
    r.ok()
    assert MAP_LINE.search(r.out), r.out[-2000:]
    model = cli.path_of("retinanet-resnext50-random@1.0")
    assert (model / "model.onnx").stat().st_size > 140_000_000
    cost = json.loads((model / "cost.json").read_text())
    assert cost["parameters"] > 36_000_000 and cost["macs"] > 0
    result = json.loads(next((cli.home / "runs").glob("*/result.json")).read_text())
    assert result["status"] == "ok" and result["mode"] == "AccuracyOnly"
    assert result["counts"]["succeeded"] == 2 and result["accuracy"]["mAP"] >= 0


@pytest.mark.timeout(660)
def test_the_model_rebuilds_to_the_same_bytes(cli: Runner) -> None:
    r = cli.sub("build", "--check", "retinanet-resnext50-random@1.0", "--rounds", "2",
                timeout=600)  # fmt: skip
    r.ok()
    assert "reproducible (2 rounds" in r.out, r.out
    assert Path(cli.path_of("retinanet-resnext50-random@1.0")).is_dir()
