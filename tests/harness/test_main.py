"""The harness command (mlpkg/harness/main.py): accuracy mode, byte-identical accuracy logs,
bad input (exit 2, one sentence naming the file), harness.json, and the result parsing of
mlpkg/harness/report.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from mlpkg.harness import main as harness_main
from mlpkg.harness.dataset import open_dataset
from mlpkg.harness.postprocess import LabelHits
from mlpkg.harness.report import parse_summary, reference_line
from mlpkg.harness.sut import Stats

REPO_ROOT = Path(__file__).resolve().parents[2]
TILES = r"tiles=50\.0:[\d.]+,80\.0:[\d.]+,90\.0:[\d.]+,95\.0:[\d.]+,99\.0:[\d.]+,99\.9:[\d.]+"


def test_accuracy_mode_prints_table_map_and_reference_line(harness: Any) -> None:
    r = harness.run("--accuracy", "--scenario", "Offline", "--threads", "4")
    assert r.code == 0, str(r)
    lines = r.out.strip().splitlines()
    assert sum(ln.lstrip().startswith("Average Precision") for ln in lines) == 6
    assert lines[-2] == "mAP=100.000%"
    # labels 1 and 2 are in the ground truth, label 3 is not: acc = 2/3
    assert re.fullmatch(
        r"TestScenario\.Offline qps=[\d.]+, mean=[\d.]+, time=[\d.]+, "
        r"acc=66\.667%, mAP=100\.000%, queries=8, " + TILES,
        lines[-1],
    )
    doc = r.json()
    assert doc["mode"] == "AccuracyOnly" and doc["status"] == "ok"
    acc = doc["accuracy"]
    assert acc["mAP"] == 1.0 and len(acc["stats"]) == 12 and acc["line"] == "mAP=100.000%"
    assert acc["images"] == 8 and acc["detections"] == 24 and acc["log_entries"] == 8
    assert doc["summary"]["acc"] == pytest.approx(200 / 3)
    assert doc["summary"]["mAP"] == 100.0 and doc["summary"]["queries"] == 8


def test_offline_accuracy_mode_skips_the_calibration(harness: Any) -> None:
    """The throughput estimate sizes Offline's query in performance mode only (in accuracy
    mode LoadGen sends all samples in one query); the five warm-up predictions still run.
    (Server keeps it: it paces the queries in accuracy mode too.)"""
    r = harness.run("--accuracy", "--scenario", "Offline", "--count", "2", "--quiet")
    assert r.code == 0, str(r)
    session = r.json()["session"]
    assert session["calibration"] is None and session["estimated_qps"] is None
    assert len(session["warmup_latencies_s"]) == 5
    assert r.json()["loadgen"] is None  # LoadGen writes no result in accuracy mode


def test_accuracy_log_payloads_are_the_model_outputs(harness: Any, fixture_data: Any) -> None:
    r = harness.run("--accuracy", "--scenario", "SingleStream", "--quiet")
    assert r.code == 0, str(r)
    log = json.loads((r.output / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in log) == list(range(8))
    for e in log:
        rows = np.frombuffer(bytes.fromhex(e["data"]), np.float32).reshape(-1, 7)
        i = e["qsl_idx"]
        boxes = fixture_data["expected_boxes"](i)[:3]  # scores 0.04, 0.01 are cut
        assert rows[:, 0].tolist() == [i] * 3
        # (ReduceMean of 1.92 M float32 values is not exact: a small tolerance)
        np.testing.assert_allclose(rows[:, 1:5], boxes[:, [1, 0, 3, 2]] / 800, atol=1e-3)
        assert rows[:, 5].tolist() == fixture_data["SCORES"][:3].tolist()
        assert rows[:, 6].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_two_accuracy_runs_write_identical_logs(harness: Any, scenario: str) -> None:
    """Several workers finish in any order; the SUT still answers in issue order."""
    first = harness.run("--accuracy", "--scenario", scenario, "--threads", "4", "--quiet")
    second = harness.run("--accuracy", "--scenario", scenario, "--threads", "4", "--quiet")
    assert first.code == second.code == 0, f"{first}\n{second}"
    a = (first.output / "mlperf_log_accuracy.json").read_bytes()
    b = (second.output / "mlperf_log_accuracy.json").read_bytes()
    assert a == b


def _bad(r: Any, path: Path) -> None:
    assert r.code == 2, str(r)
    assert r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert str(path) in lines[0]
    assert not r.output.exists()


def test_missing_model(harness: Any, tmp_path: Path) -> None:
    model = tmp_path / "nope.onnx"
    _bad(harness.run(model=model), model)


def test_corrupt_model(harness: Any, tmp_path: Path, tiny_model: Path) -> None:
    model = tmp_path / "corrupt.onnx"
    model.write_bytes(tiny_model.read_bytes()[:150])
    r = harness.run(model=model)
    _bad(r, model)
    assert "ONNX Runtime cannot load" in r.err


def test_model_without_the_interface(harness: Any, tmp_path: Path, fixture_data: Any) -> None:
    import onnx

    model = fixture_data["build_model"](tmp_path / "renamed.onnx")
    m = onnx.load(str(model))
    m.graph.output[0].name = "detection_boxes"
    m.graph.node[2].output[0] = "detection_boxes"
    onnx.save(m, str(model))
    r = harness.run(model=model)
    _bad(r, model)
    assert "'boxes'" in r.err


def test_missing_dataset_dir(harness: Any, tmp_path: Path) -> None:
    ds = tmp_path / "no-such-dataset"
    _bad(harness.run(dataset=ds), ds)


@pytest.mark.parametrize("name", ["manifest.json", "annotations/openimages-mlperf.json"])
def test_missing_manifest_or_annotations(harness: Any, make_variant: Any, name: str) -> None:
    ds = make_variant("missing")
    (ds / name).unlink()
    _bad(harness.run(dataset=ds), ds / name)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_npy(harness: Any, make_variant: Any, damage: str) -> None:
    ds = make_variant(damage)
    npy = ds / "preprocessed" / f"{5:016x}.npy"
    data = npy.read_bytes()
    npy.unlink()
    npy.write_bytes(data[:5000] if damage == "truncated" else b"not a numpy file" * 10)
    _bad(harness.run(dataset=ds), npy)


def test_manifest_of_another_format_is_refused(harness: Any, make_variant: Any) -> None:
    ds = make_variant("format-2")
    manifest = ds / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format": 1', '"format": 2'))
    r = harness.run(dataset=ds)
    _bad(r, manifest)
    assert "has format 2" in r.err and "format 1 only" in r.err


def test_unreadable_conf_files(harness: Any, tmp_path: Path) -> None:
    missing = tmp_path / "user.conf"
    _bad(harness.run("--user-conf", str(missing)), missing)
    directory = tmp_path / "audit-dir"
    directory.mkdir()
    _bad(harness.run("--audit-conf", str(directory)), directory)
    bad = tmp_path / "bad.conf"
    bad.write_text("retinanet.Offline.target_qps: 10\n")
    _bad(harness.run("--mlperf-conf", str(bad)), bad)


def test_user_conf_and_count_reach_loadgen(harness: Any, tmp_path: Path) -> None:
    user = tmp_path / "user.conf"
    user.write_text(
        "retinanet.Offline.target_qps = 50\nretinanet.*.performance_sample_count_override = 3\n"
    )
    r = harness.run("--user-conf", str(user), "--count", "6", "--time", "0.3", "--quiet")
    assert r.code == 0, str(r)
    doc = r.json()
    assert doc["settings"]["conf_files"][-1]["path"] == str(user)
    assert doc["session"]["calibration"] is not None  # measured, but user.conf's QPS wins
    values = doc["settings"]["values"]
    assert values["min_query_count"] == values["max_query_count"] == 6
    # LoadGen's first test used user.conf's QPS; a test shorter than --time was run again
    # with a larger query (mlpkg/harness/duration.py), and the recorded values are its
    first = r.output / "attempt-1" / "mlperf_log_summary.txt"
    if first.exists():
        summary = parse_summary(first)
        assert summary is not None
        params = summary["parameters"]
        assert values["offline_expected_qps"] > 50
        assert doc["settings"]["notes"][-1].endswith("met its minimum duration (recorded)")
    else:
        params = doc["loadgen"]["parameters"]  # as LoadGen used them (Offline: one query)
        assert values["offline_expected_qps"] == 50
    assert params["performance_sample_count"] == 3
    assert params["samples_per_query"] >= 6
    assert params["target_qps"] == 50
    recorded = doc["loadgen"]["parameters"]["target_qps"]
    assert recorded == pytest.approx(values["offline_expected_qps"], rel=1e-3)


def test_audit_conf_reaches_loadgen(harness: Any, tmp_path: Path) -> None:
    """A TEST01-style audit.config: LoadGen logs sampled responses in performance mode."""
    audit = tmp_path / "audit.config"
    audit.write_text(
        "*.*.mode = 2\n*.*.accuracy_log_rng_seed = 720381539243781796\n"
        "*.*.accuracy_log_sampling_target = 64\n"
        "*.*.performance_issue_unique = 1\n"
    )
    r = harness.run("--audit-conf", str(audit), "--time", "0.3", "--quiet")
    assert r.code == 0, str(r)
    assert r.json()["settings"]["audit_conf"] == str(audit)
    assert "Found Audit Config file" in (r.output / "mlperf_log_detail.txt").read_text()
    assert json.loads((r.output / "mlperf_log_accuracy.json").read_text())


def test_harness_json_fields(harness: Any) -> None:
    r = harness.run("--scenario", "SingleStream", "--time", "0.3", "--quiet")
    assert r.code == 0, str(r)
    doc = r.json()
    assert set(doc) >= {
        "format",
        "harness_version",
        "status",
        "exit_code",
        "scenario",
        "mode",
        "model_name",
        "model",
        "dataset",
        "output",
        "loadgen_version",
        "onnxruntime_version",
        "numpy_version",
        "python_version",
        "duration_s",
        "settings",
        "session",
        "counts",
        "errors",
        "summary",
        "loadgen",
        "accuracy",
        "logs",
    }
    assert doc["model_name"] == "retinanet"
    assert doc["loadgen_version"] != "unknown"
    assert doc["summary"]["percentiles"].keys() == {"50.0", "80.0", "90.0", "95.0", "99.0", "99.9"}
    assert doc["summary"]["queries"] == doc["counts"]["succeeded"]
    assert sorted(doc["logs"]) == sorted(p.name for p in r.output.glob("mlperf_log_*"))


# -- report.py --------------------------------------------------------------------------------

SUMMARY = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : Offline
Mode     : PerformanceOnly
Samples per second: 1138.74
Result is : INVALID
  Min duration satisfied : NO
  Min queries satisfied : Yes
  Early stopping satisfied: Yes
Recommendations:
 * Increase expected QPS so the loadgen pre-generates a larger (coalesced) query.

================================================
Additional Stats
================================================
Min latency (ns)                : 5236882
Max latency (ns)                : 48299198
Mean latency (ns)               : 35156166
50.00 percentile latency (ns)   : 41287185
99.90 percentile latency (ns)   : 48299198

================================================
Test Parameters Used
================================================
samples_per_query : 55
target_qps : 100
min_duration (ms): 500
performance_sample_count : 16

No warnings encountered during test.

No errors encountered during test.
"""


def test_parse_summary(tmp_path: Path) -> None:
    path = tmp_path / "mlperf_log_summary.txt"
    path.write_text(SUMMARY)
    s = parse_summary(path)
    assert s is not None
    assert s["result"] == "INVALID" and s["scenario"] == "Offline"
    assert s["samples_per_second"] == 1138.74
    assert s["latency_ns"] == {
        "min": 5236882,
        "max": 48299198,
        "mean": 35156166,
        "p50.00": 41287185,
        "p99.90": 48299198,
    }
    assert s["parameters"] == {
        "samples_per_query": 55,
        "target_qps": 100,
        "min_duration (ms)": 500,
        "performance_sample_count": 16,
    }
    assert s["fields"]["Min duration satisfied"] == "NO"
    assert parse_summary(tmp_path / "absent.txt") is None
    ms = SUMMARY.replace("Offline", "MultiStream").replace("Samples per second: 1138.74\n", "")
    path.write_text(ms.replace("samples_per_query : 55", "samples_per_query : 8"))
    multi = parse_summary(path)
    assert multi is not None
    assert multi["samples_per_second"] == pytest.approx(8 / 0.035156166)


def test_parse_summary_without_a_result_is_none(tmp_path: Path) -> None:
    """An empty summary (LoadGen did not end) or an accuracy-mode one holds no result."""
    path = tmp_path / "mlperf_log_summary.txt"
    path.write_text("")
    assert parse_summary(path) is None
    path.write_text(
        "\nNo warnings encountered during test.\n\nNo errors encountered during test.\n"
    )
    assert parse_summary(path) is None
    path.write_text(SUMMARY.replace("Result is : INVALID\n", ""))
    assert parse_summary(path) is None


def _finished_run(tmp_path: Path, dataset: Path, summary: str, *args: str) -> Any:
    """``main.finish`` on a run whose LoadGen wrote ``summary``: (exit code, harness.json)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "mlperf_log_summary.txt").write_text(summary)
    run = harness_main.Run(
        harness_main.parse_args(
            ["--model", "m.onnx", "--dataset", str(dataset), "--output", str(out), *args]
        )
    )
    run.output_ready = True
    run.dataset = open_dataset(dataset, None)
    sut: Any = SimpleNamespace(stats=Stats(latencies=[0.01, 0.02]), hits=LabelHits())
    run.sut = sut
    code = harness_main.finish(run, sut, run.dataset.last_loaded + 1.0, False, [])
    return code, json.loads((out / "harness.json").read_text())


def test_missing_loadgen_result_fails_a_performance_run(
    tiny_dataset: Path, tmp_path: Path, capsys: Any
) -> None:
    code, doc = _finished_run(tmp_path, tiny_dataset, "")
    out, err = capsys.readouterr()
    assert code == 1 and doc["status"] == "failed" and doc["exit_code"] == 1
    assert doc["loadgen"] is None
    assert "LoadGen result" not in out
    summary_file = tmp_path / "out" / "mlperf_log_summary.txt"
    assert f"error: LoadGen wrote no result to {summary_file}" in err


def test_a_loadgen_result_is_printed(tiny_dataset: Path, tmp_path: Path, capsys: Any) -> None:
    code, doc = _finished_run(tmp_path, tiny_dataset, SUMMARY)
    out, err = capsys.readouterr()
    assert code == 0 and doc["status"] == "ok" and err == ""
    assert out.splitlines()[-1] == "LoadGen result: INVALID (Offline, 1138.74 samples/s)"


def test_reference_line_format() -> None:
    line, fig = reference_line("Offline", [1.0, 2.0, 3.0, 4.0], 2.0, 31.6612, 0.65417)
    assert line == (
        "TestScenario.Offline qps=2.00, mean=2.5000, time=2.000, acc=31.661%, "
        "mAP=65.417%, queries=4, tiles=50.0:2.5000,80.0:3.4000,90.0:3.7000,"
        "95.0:3.8500,99.0:3.9700,99.9:3.9970"
    )
    assert fig["qps"] == 2.0 and fig["queries"] == 4 and fig["mAP"] == pytest.approx(65.417)
    empty, _ = reference_line("Server", [], 0.0)
    assert empty.startswith("TestScenario.Server qps=0.00, mean=0.0000, time=0.000, queries=0")


def test_runs_as_the_top_level_package(
    tiny_model: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """Installed into the closure, the package is ``mlpkg_harness``: only relative imports,
    and its data file beside the modules."""
    site = tmp_path / "site"
    shutil.copytree(
        REPO_ROOT / "mlpkg" / "harness",
        site / "mlpkg_harness",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    assert (site / "mlpkg_harness" / "mlperf-retinanet.conf").is_file()
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlpkg_harness",
            "--model",
            str(tiny_model),
            "--dataset",
            str(tiny_dataset),
            "--output",
            str(out),
            "--time",
            "0.3",
            "--quiet",
        ],
        cwd=site,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "harness.json").read_text())["status"] == "ok"
