"""The comparison document (format 1, docs/experiments.md) and its text
(mlpkg.experiments.compare), on groups made of the real retinanet records in data/."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mlpkg.env.runs import RunRecord
from mlpkg.experiments.compare import compare, format_text
from mlpkg.experiments.select import Group
from tests.experiments.records import ORT_NEW, ORT_OLD, group, perf, sample


def _verdict(doc: dict[str, Any], figure: str, other: int = 1) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        v for v in doc["verdicts"] if v["figure"] == figure and v["other"] == other
    ]
    assert len(found) == 1, found
    return found[0]


def test_repeats_give_median_min_max_and_a_verdict_beyond_the_spread() -> None:
    base = group(
        "ort=1.22.1",
        perf(39.8),
        perf(40.6),
        perf(40.1),
        experiment="exp-1",
        cell={"with.onnxruntime": "onnxruntime@1.22.1"},
    )
    other = group(
        "ort=1.17.3",
        perf(56.0, ORT_OLD),
        perf(57.5, ORT_OLD),
        perf(57.0, ORT_OLD),
        experiment="exp-1",
        cell={"with.onnxruntime": "onnxruntime@1.17.3"},
    )
    doc = compare([base, other])
    assert doc["format"] == 1
    g0 = doc["groups"][0]
    assert g0["figures"]["samples_per_second"] == {
        "n": 3,
        "median": 40.1,
        "min": 39.8,
        "max": 40.6,
        "values": [39.8, 40.6, 40.1],
    }
    assert g0["figures"]["result"] == {"VALID": 3} and g0["figures"]["mAP"] is None
    assert g0["experiment"] == "exp-1" and g0["cell"] == {"with.onnxruntime": "onnxruntime@1.22.1"}
    assert g0["app"] == "retinanet-offline+synthetic"
    assert (g0["scenario"], g0["mode"]) == ("Offline", "PerformanceOnly")
    assert g0["versions"]["onnxruntime_version"] == "1.22.1"
    assert doc["groups"][1]["versions"]["onnxruntime_version"] == "1.17.3"
    rate = _verdict(doc, "samples_per_second")
    assert rate == {
        "figure": "samples_per_second",
        "base": 0,
        "other": 1,
        "ratio": pytest.approx(57.0 / 40.1),
        "verdict": "higher",
    }
    # the repeats have the latency of their record: 4864.26 ms against 5005.05 ms
    assert _verdict(doc, "latency_ms.p90")["verdict"] == "higher"
    assert not [v for v in doc["verdicts"] if v["figure"] == "mAP"]  # neither side has one
    text = "\n".join(format_text(doc))
    assert "40.10 [39.80–40.60]" in text and "57.00 [56.00–57.50]" in text
    assert "samples/s: ort=1.17.3 is 1.42x the first, better (ranges do not overlap)" in text
    assert "p90 latency: ort=1.17.3 is 1.03x the first, worse (ranges do not overlap)" in text
    json.dumps(doc)  # a JSON document


def test_overlapping_ranges_give_no_verdict_line() -> None:
    doc = compare([group("a", perf(40.0), perf(42.0)), group("b", perf(41.0), perf(43.0))])
    assert _verdict(doc, "samples_per_second")["verdict"] == "within spread"
    assert not any(line.startswith("samples/s:") for line in format_text(doc))


def test_lower_latency_is_better_and_single_runs_get_no_verdict() -> None:
    slow = [perf(40.0), perf(40.0)]
    fast = [perf(40.0), perf(40.0)]
    for r in fast:
        r["loadgen"]["latency_ns"]["p99.00"] = 1_000_000_000
    doc = compare([group("slow", *slow), group("fast", *fast), group("one", perf(40.0))])
    assert _verdict(doc, "latency_ms.p99")["verdict"] == "lower"
    assert _verdict(doc, "samples_per_second", other=2)["verdict"] == "no spread (1 run)"
    text = format_text(doc)
    assert any(line.startswith("p99 latency: fast is 0.20x the first, better") for line in text)
    assert any(line.startswith("no verdict where a side has one run") for line in text)


def test_figures_of_runs_that_are_not_ok_are_left_out_of_the_statistics() -> None:
    failed = perf(99.0, status="failed", exit_code=1, error="error: model not found")
    stopped = perf(98.0, status="interrupted")
    doc = compare([group("g", perf(40.0), failed, stopped)])
    g = doc["groups"][0]
    assert g["figures"]["samples_per_second"]["values"] == [40.0]
    assert [r["status"] for r in g["runs"]] == ["ok", "failed", "interrupted"]
    assert g["runs"][1]["error"] == "error: model not found"
    assert g["runs"][1]["figures"]["samples_per_second"] == 99.0  # the run's own, as recorded
    assert g["runs"][2]["figures"]["samples_per_second"] is None  # not a measurement
    text = format_text(doc)
    assert "run g-1 failed: error: model not found" in text
    assert "run g-2 interrupted" in text
    assert any(line.startswith("g  ") and " 1/3 " in line for line in text)


def test_each_run_says_how_to_reproduce_it() -> None:
    doc = compare([group("g", sample())])
    run = doc["groups"][0]["runs"][0]
    assert run["reproduce"] == "mlpkg run --lock /runs/g-0"
    assert run["command"][:3] == ["python3", "-m", "mlpkg_harness"] and run["dir"] == "/runs/g-0"


def test_problems_and_pending_points_are_shown() -> None:
    g = group(
        "ort=9",
        experiment="exp-1",
        problems=["point 3 (failed): error: no such version"],
        pending=2,
    )
    doc = compare([group("base", sample()), g])
    assert doc["groups"][1]["figures"]["samples_per_second"] is None
    assert not [v for v in doc["verdicts"] if v["other"] == 1]
    text = format_text(doc)
    assert "ort=9: point 3 (failed): error: no such version" in text
    assert "ort=9: 2 point(s) not run yet (mlpkg sweep --resume)" in text
    assert doc["settings"]["differ"] == {} and doc["closure"] == []


def test_runs_of_different_apps_are_compared_with_a_note() -> None:
    other = sample()
    other["app"] = "retinanet-server+synthetic"
    doc = compare([group("a", sample()), group("b", other)])
    assert doc["apps"] == {
        "same": False,
        "values": ["retinanet-offline+synthetic", "retinanet-server+synthetic"],
        "note": "the runs are of different apps: retinanet-offline+synthetic, "
        "retinanet-server+synthetic; their figures are compared as they are",
    }
    assert "note: the runs are of different apps" in "\n".join(format_text(doc))
    same = compare([group("a", sample()), group("b", sample())])
    assert same["apps"] == {"same": True, "values": ["retinanet-offline+synthetic"], "note": None}


def test_settings_and_machine_that_differ() -> None:
    other = sample(ORT_OLD)
    other["machine"].update(cpus=8, hostname="big")
    other["settings"]["values"]["min_duration_ms"] = 600000
    del other["settings"]["values"]["max_query_count"]
    doc = compare([group("a", sample()), group("b", other)])
    differ = doc["settings"]["differ"]
    assert differ["min_duration_ms"] == ["5000", "600000"]
    assert differ["max_query_count"] == ["0", None]
    assert differ["offline_expected_qps"] == ["38.12610757923261", "61.705826927251316"]
    assert "qsl_rng_seed" not in differ
    assert doc["machine"]["differ"] == {"cpus": ["2", "8"], "hostname": ["vm", "big"]}
    text = format_text(doc)
    assert "  min_duration_ms: 5000 | 600000" in text and "  max_query_count: 0 | -" in text
    assert "machine differs:" in text and "  hostname: vm | big" in text


def test_settings_come_from_the_first_ok_run_of_a_group() -> None:
    failed = sample()
    failed.update(status="failed", settings=None)
    other = sample()
    other["settings"]["values"]["min_duration_ms"] = 1
    doc = compare([group("a", failed, sample()), group("b", other)])
    assert doc["settings"]["differ"] == {"min_duration_ms": ["5000", "1"]}


def test_the_closure_diff_of_two_real_records() -> None:
    doc = compare(
        [
            group("new", sample(ORT_NEW)),
            group("old", sample(ORT_OLD)),
            group("new again", sample(ORT_NEW)),
        ]
    )
    (diff,) = doc["closure"]  # the third group has the first one's closure
    assert (diff["base"], diff["other"]) == (0, 1)
    changed = {e["name"]: (e["from"], e["to"]) for e in diff["version_changed"]}
    assert changed == {"onnxruntime": ("1.22.1", "1.17.3"), "numpy": ("2.4.6", "1.26.4")}
    rebuilt = {e["name"]: e["because"] for e in diff["rebuilt"]}
    assert rebuilt["pycocotools"] == ["numpy 2.4.6 -> 1.26.4"]
    assert "onnxruntime 1.22.1 -> 1.17.3" in rebuilt["retinanet-offline"]
    text = format_text(doc)
    i = text.index("closure: old vs new")
    assert "  onnxruntime 1.22.1 -> 1.17.3" in text[i:]
    assert "  pycocotools 2.0.11 rebuilt: numpy 2.4.6 -> 1.26.4" in text[i:]


def test_a_group_whose_run_has_no_settings_takes_no_part() -> None:
    failed = sample()
    failed.update(status="failed")
    del failed["settings"]
    doc = compare([group("a", sample()), group("b", failed), group("c", sample())])
    assert doc["settings"]["differ"] == {}
    other = sample()
    other["settings"]["values"]["min_duration_ms"] = 1
    doc = compare([group("a", sample()), group("b", failed), group("c", other)])
    assert doc["settings"]["differ"] == {"min_duration_ms": ["5000", None, "1"]}


def test_without_app_paths_closures_are_told_apart_by_their_paths() -> None:
    new, old, again = sample(ORT_NEW), sample(ORT_OLD), sample(ORT_NEW)
    for res in (new, old, again):
        del res["app_path"]
    doc = compare([group("new", new), group("old", old), group("again", again)])
    assert [d["other"] for d in doc["closure"]] == [1]
    broken = sample()
    broken.update(app_path=None, lock={"node": "x"})
    assert compare([group("a", broken), group("b", sample())])["closure"]


def test_odd_records_give_a_document_not_an_error() -> None:
    odd = sample()
    odd.update(loadgen="x", settings=[1], machine=None, lock="no", versions=3, command="ls")
    odd.pop("app")
    doc = compare([group("a", sample()), group("b", odd)])
    assert doc["groups"][1]["versions"] == {} and doc["groups"][1]["runs"][0]["command"] == []
    assert doc["closure"] == []
    assert doc["apps"]["same"] is True
    format_text(doc)
    assert compare([])["groups"] == [] and format_text(compare([]))


def test_the_arguments_that_differ_are_shown_with_the_thread_plan(tmp_path: Path) -> None:
    """Two runs asked for with other options and overrides: the document names them, and
    the thread plan the harness chose, but not the warm-up's measurements."""
    one = _arguments_record(tmp_path / "a", ["--time", "5", "--threads", "1"], "1.17.3", 1)
    two = _arguments_record(tmp_path / "b", ["--time", "5", "--threads", "2"], "1.22.1", 2)
    doc = compare([Group("a", None, {}, [one]), Group("b", None, {}, [two])])
    differ = doc["arguments"]["differ"]
    assert differ["args"] == ["--time 5 --threads 1", "--time 5 --threads 2"]
    assert differ["with onnxruntime"] == ["onnxruntime@1.17.3", "onnxruntime@1.22.1"]
    assert differ["session.workers"] == ["1", "2"]
    assert not any("warmup" in k or "calibration" in k for k in differ)
    assert any(line.startswith("arguments that differ") for line in format_text(doc))


def _arguments_record(path: Path, args: list[str], ort: str, workers: int) -> RunRecord:
    result = {"format": 1, "id": path.name, "status": "ok", "args": args,
              "overrides": {"onnxruntime": f"onnxruntime@{ort}"},
              "session": {"workers": workers, "warmup_latencies_s": [0.1 * workers],
                          "calibration": {"qps": workers}}}  # fmt: skip
    return RunRecord(path.name, path, result)


def test_figures_that_overflow_give_strict_json() -> None:
    """A median of two figures near the largest float, a ratio of 1e300 / 1e-300 and a
    NaN among a record's versions: the document holds no NaN or Infinity."""
    top = 1.7976931348623157e308
    tiny = group("tiny", perf(1e-300), perf(2e-300))
    big = group("big", perf(top), perf(top), perf(1e300))
    odd = sample()
    odd["versions"] = {"numpy": float("nan"), "deep": [{"x": float("inf")}]}
    doc = compare([tiny, big, group("odd", odd)])
    json.dumps(doc, allow_nan=False)
    assert doc["groups"][1]["figures"]["samples_per_second"]["median"] == top
    assert _verdict(doc, "samples_per_second") == {
        "figure": "samples_per_second", "base": 0, "other": 1, "ratio": None,
        "verdict": "higher",
    }  # fmt: skip
    assert doc["groups"][2]["versions"] == {"numpy": None, "deep": [{"x": None}]}
    text = format_text(doc)
    assert "samples/s: big is higher than the first, better (ranges do not overlap)" in text


def test_the_base_is_the_first_group_with_a_run_when_the_first_has_none() -> None:
    """The first cell's closure did not build: its group has no run. The closure diff and
    the verdicts are still given, against the first group that has a lock / figures."""
    unbuilt = group("ort=9", experiment="exp-1", problems=["point 0 (not-built): error: x"])
    a = group("a", perf(40.0), perf(41.0))
    b = group("b", perf(56.0, ORT_OLD), perf(57.0, ORT_OLD))
    doc = compare([unbuilt, a, b])
    (diff,) = doc["closure"]
    assert (diff["base"], diff["other"]) == (1, 2)
    assert {e["name"] for e in diff["version_changed"]} == {"onnxruntime", "numpy"}
    rate = _verdict(doc, "samples_per_second", other=2)
    assert (rate["base"], rate["verdict"]) == (1, "higher")
    assert {(v["base"], v["other"]) for v in doc["verdicts"]} == {(1, 2)}
    text = format_text(doc)
    assert "closure: b vs a" in text
    line = "samples/s: b is 1.40x a (the first group with figures), better (ranges do not overlap)"
    assert line in text


def test_closure_and_verdicts_may_have_different_bases() -> None:
    """The first group's only run failed: it has a lock (a closure) but no figures."""
    failed = perf(None, status="failed", error="error: out of memory")
    no_lock = perf(39.0, ORT_OLD)
    del no_lock["lock"]
    doc = compare([group("failed", failed), group("nolock", no_lock, perf(40.0, ORT_OLD)),
                   group("c", perf(50.0, ORT_OLD), perf(51.0, ORT_OLD))])  # fmt: skip
    assert [(d["base"], d["other"]) for d in doc["closure"]] == [(0, 2)]
    assert {(v["base"], v["other"]) for v in doc["verdicts"]} == {(1, 2)}
    assert compare([group("none"), group("x")])["verdicts"] == []


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def test_text_from_records_reaches_the_terminal_without_control_characters() -> None:
    """Records are data from others: an escape sequence in an error line, a label, a
    setting, a hostname, a package name or a LoadGen verdict is shown escaped, and a
    newline in one does not start a line of its own."""
    failed = perf(None, status="failed", error="error: \x1b]0;PWNED\x07 and\nmore")
    other = perf(41.0, ORT_OLD, app="app\x9b31m")
    other["machine"]["hostname"] = "evil\x1b[2J"
    other["settings"]["values"]["min_duration_ms"] = "5\x7f\r"
    other["loadgen"]["result"] = "VALID\x1b[0m"
    for n in other["lock"]["node"]:
        if n["name"] == "numpy":
            n["name"] = "numpy\x1b[31m"
    hostile = group("g\x1b[1m", perf(40.0), failed, problems=["point 2: error: \x1bc"])
    lines = format_text(compare([hostile, group("h\u202e", other)]))
    assert not [line for line in lines if CONTROL.search(line)]
    assert "run g\x1b[1m-1 failed: error: \\x1b]0;PWNED\\x07 and\\nmore" not in lines
    assert "run g\\x1b[1m-1 failed: error: \\x1b]0;PWNED\\x07 and\\nmore" in lines
    text = "\n".join(lines)
    for shown in ("g\\x1b[1m: point 2: error: \\x1bc", "hostname: vm | evil\\x1b[2J",
                  "min_duration_ms: 5000 | 5\\x7f\\r", "VALID\\x1b[0m 1", "h\\u202e",
                  "app\\x9b31m", "numpy\\x1b[31m"):  # fmt: skip
        assert shown in text, shown
