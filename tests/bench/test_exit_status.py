"""Under ``--json`` a benchmark exits 0 whenever it printed its rows, a missed target
included (the verdict is in the rows; bench/rows.py's contract), so that bench/run.py does
not count a measured miss as a script that failed. The measurements are faked: what is
tested is the exit status and the rows of a run whose ratio misses its target."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class _Plan:
    workers = intra_op_threads = sessions = 1

    def as_dict(self) -> dict[str, int]:
        return {"workers": 1, "intra_op_threads": 1, "sessions": 1}


class _BareLoop:
    plan = _Plan()

    def __init__(self, args: argparse.Namespace) -> None:
        pass

    def run(self) -> dict[str, Any]:
        return {"samples_per_second": 100.0}


@pytest.mark.parametrize(("harness_qps", "passed"), [(50.0, False), (100.0, True)])
def test_harness_json_exits_0_with_its_rows_whether_or_not_the_target_is_met(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    harness_qps: float,
    passed: bool,
) -> None:
    harness = _load("harness")
    monkeypatch.setattr(harness, "synthetic_pair", lambda d, n: (tmp_path / "m", tmp_path / "d"))
    monkeypatch.setattr(harness, "BareLoop", _BareLoop)
    monkeypatch.setattr(
        harness,
        "time_harness",
        lambda args, d, qps: {"samples_per_second": harness_qps, "result": "VALID"},
    )
    monkeypatch.setattr(sys, "argv", ["harness.py", "--json", "--repeat", "1"])
    assert harness.main() == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["passed"] for r in doc["rows"]] == [passed]
    # Without --json the verdict is the exit status still.
    monkeypatch.setattr(sys, "argv", ["harness.py", "--repeat", "1"])
    assert harness.main() == (0 if passed else 1)


class _RealBench:
    def __init__(self, args: argparse.Namespace, work: Path, logs: Path) -> None:
        self.harness: dict[str, Any] = {}
        self.configs: dict[str, Any] = {}

    def one_round(self, results: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("passed", [False, True])
def test_harness_real_json_exits_0_with_its_rows_whether_or_not_the_target_is_met(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], passed: bool
) -> None:
    real = _load("harness_real")
    row = real.rows.row("harness Offline", mlpkg=1.0, unit="samples/s", runs=1, passed=passed)

    def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
        verdict = {"best_bare": "bare", "ratio": 0.5, "pass": passed}
        return {"medians": {}, "verdicts": {"Offline": verdict}, "rows": [row]}

    monkeypatch.setattr(real, "Bench", _RealBench)
    monkeypatch.setattr(real, "summarise", summarise)
    assert real.main(["--json", "--repeat", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["passed"] for r in doc["rows"]] == [passed]
