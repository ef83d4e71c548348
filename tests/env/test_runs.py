"""Run records (mlpkg.env.runs): result.json format 1 and the app manifest format 1, each
with a golden file (invariant 7), and how a run's status and headline are read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mlpkg.build.app import run_command
from mlpkg.env import runs
from mlpkg.errors import FormatVersionError
from tests.cli_support import python_bin
from tests.toy_app import Home, write_recipes

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _shape(value: Any) -> Any:
    """Keys and JSON types, recursively (list items by their first element)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def test_the_golden_result_reads_back(tmp_path: Path) -> None:
    run_dir = tmp_path / "20261128T150000.000Z-toyapp-0a1b2c"
    shutil.copytree(GOLDEN / "run-v1", run_dir)
    record = runs.read_record(run_dir)
    assert record.status == "ok" and record.result["app"] == "toyapp"
    assert runs.headline(record.result) == "mAP=50.000%"
    assert record.result["lock"]["version"] == 1


def test_a_fresh_result_has_the_golden_shape(tmp_path: Path) -> None:
    write_recipes(tmp_path / "recipes")
    home = Home(tmp_path / "home", tmp_path / "recipes", python_bin(tmp_path / "bin"))
    try:
        home.sub("run", "toyapp", "--flag", "x").ok()
    finally:
        home.close()
    (made,) = (tmp_path / "home" / "runs").iterdir()
    fresh = json.loads((made / "result.json").read_text())
    golden = json.loads((GOLDEN / "run-v1" / "result.json").read_text())
    # A change of the format must bump RESULT_FORMAT and add a golden file for it.
    for key in ("lock", "machine"):  # their insides have goldens of their own, or vary
        fresh.pop(key), golden.pop(key)
    assert _shape(fresh) == _shape(golden)
    assert fresh["format"] == runs.RESULT_FORMAT == 1


def test_a_result_of_another_format_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "x"
    shutil.copytree(GOLDEN / "run-v1", run_dir)
    doc = json.loads((run_dir / "result.json").read_text())
    (run_dir / "result.json").write_text(json.dumps({**doc, "format": 2}))
    with pytest.raises(FormatVersionError, match="result format 2; this mlpkg reads format 1"):
        runs.read_record(run_dir)


def test_the_golden_app_manifest_reads_back() -> None:
    assert run_command(GOLDEN / "app-v1") == [
        "python3", "-m", "toyapp", "--out", "${output}", "--data", "${data}"]  # fmt: skip


def test_an_app_report_of_another_format_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "harness.json").write_text(json.dumps({"format": 2, "status": "ok"}))
    assert runs.read_app_report(tmp_path) is None
    (tmp_path / "harness.json").write_text(json.dumps({"format": 1, "status": "ok"}))
    assert runs.read_app_report(tmp_path) == {"format": 1, "status": "ok"}


def test_headline_of_an_interrupted_run_claims_no_figure() -> None:
    result = {
        "status": "interrupted",
        "loadgen": {"result": "INVALID", "samples_per_second": 216.99},
    }
    assert runs.headline(result) == "(interrupted)"
    ok = {"status": "ok", "loadgen": {"result": "VALID", "samples_per_second": 27.694998}}
    assert runs.headline(ok) == "27.69 samples/s VALID"
