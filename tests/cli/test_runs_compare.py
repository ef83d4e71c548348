"""``mlpkg runs compare`` and ``mlpkg runs export`` on real run directories: toyapp's runs
(tests/toy_app.py), and the two real retinanet records of tests/experiments/data copied
into a home's runs/ (onnxruntime 1.22.1 against 1.17.3)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.toy_app import Home

DATA = Path(__file__).resolve().parents[1] / "experiments" / "data"
NEW_ID = "20261129T221643.858Z-retinanet-offline-2c69f8"  # onnxruntime 1.22.1
OLD_ID = "20261129T221827.290Z-retinanet-offline-eb6a3e"  # onnxruntime 1.17.3, --threads 1


def _run(h: Home, *args: str) -> str:
    """Run toyapp once; the id of its run."""
    before = h.run_ids()
    h("run", "toyapp", *args)
    return h.new_run(before).name


def _copy(h: Home, name: str, changes: dict[str, Any] | None = None) -> Path:
    """A run directory holding a copy of a real record (with ``changes``)."""
    doc = json.loads((DATA / f"{name}.result.json").read_text())
    doc.update(changes or {})
    run_dir = h.runs / str(doc["id"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps(doc))
    return run_dir


@pytest.fixture
def retinanet(tmp_path: Path, toy: Home) -> Iterator[Home]:
    """A home whose runs/ holds the two real retinanet records."""
    h = Home(tmp_path / "home", toy.recipes, toy.bindir)
    _copy(h, "ort-1.22.1")
    _copy(h, "ort-1.17.3")
    try:
        yield h
    finally:
        h.close()


def test_compare_of_two_toy_runs(toy: Home) -> None:
    first, second = _run(toy), _run(toy, "--flag", "x")
    doc = toy("runs", "compare", first, second, "--json").ok().json()
    assert doc["format"] == 1 and [g["label"] for g in doc["groups"]] == [first, second]
    g = doc["groups"][0]
    assert g["app"] == "toyapp" and g["mode"] == "AccuracyOnly"
    assert g["figures"]["mAP"]["median"] == 50.0
    run_dir = toy.runs / first
    assert g["runs"][0]["reproduce"] == f"mlpkg run --lock {run_dir}"
    assert doc["apps"]["same"] and doc["closure"] == []  # the same closure
    verdict = next(v for v in doc["verdicts"] if v["figure"] == "mAP")
    assert verdict["ratio"] == 1.0 and verdict["verdict"] == "no spread (1 run)"
    text = toy("runs", "compare", first, second).ok().out
    assert text.splitlines()[0].split() == [
        "group",
        "runs",
        "samples/s",
        "p90",
        "ms",
        "mAP",
        "LoadGen",
    ]
    assert f"{first}  1/1" in text and "50.00%" in text


def test_a_failed_run_is_shown_with_its_error_line(toy: Home) -> None:
    ok, bad = _run(toy), _run(toy, "--exit", "3")
    r = toy("runs", "compare", ok, bad).ok()
    assert f"run {bad} failed: error: toyapp exits 3 on purpose" in r.out
    doc = toy("runs", "compare", ok, bad, "--json").ok().json()
    assert doc["groups"][1]["runs"][0]["status"] == "failed"
    assert doc["groups"][1]["figures"]["mAP"] is None  # a failed run's figures are left out


def test_compare_of_an_experiment_groups_its_repeats_by_cell(toy: Home) -> None:
    toy("sweep", "toyapp", "--arg", "flag=a,b", "--repeat", "2").ok()
    doc = toy("runs", "compare", "exp-latest", "--json").ok().json()
    assert [(g["label"], g["cell"]) for g in doc["groups"]] == [
        ("flag=a", {"arg.flag": "a"}),
        ("flag=b", {"arg.flag": "b"}),
    ]
    assert all(g["experiment"].startswith("exp-") for g in doc["groups"])
    assert [len(g["runs"]) for g in doc["groups"]] == [2, 2]
    assert doc["groups"][1]["figures"]["mAP"] == {
        "n": 2,
        "median": 50.0,
        "min": 50.0,
        "max": 50.0,
        "values": [50.0, 50.0],
    }
    (verdict,) = doc["verdicts"]
    assert verdict == {
        "figure": "mAP",
        "base": 0,
        "other": 1,
        "ratio": 1.0,
        "verdict": "within spread",
    }
    text = toy("runs", "compare", "exp-latest").ok().out
    assert "flag=b  2/2" in text and "50.00% [50.00–50.00]" in text
    rows = toy("runs", "export", "exp-latest", "--json").ok().json()
    assert [r["arg.flag"] for r in rows] == ["a", "a", "b", "b"]


def test_a_failed_point_of_a_sweep_is_shown_and_compare_exits_0(toy: Home) -> None:
    assert toy("sweep", "toyapp", "--arg", "exit=0,3").code == 1
    r = toy("runs", "compare", "exp-latest").ok()
    (line,) = [x for x in r.out.splitlines() if x.startswith("run ")]
    assert line.endswith(" failed: error: toyapp exits 3 on purpose")
    assert any(x.startswith("exit=3  0/1") for x in r.out.splitlines())


def test_compare_names_what_changed_in_the_closure(retinanet: Home) -> None:
    r = retinanet("runs", "compare", NEW_ID[:22], str(retinanet.runs / OLD_ID)).ok()
    lines = r.out.splitlines()
    i = lines.index(f"closure: {OLD_ID} vs {NEW_ID}")
    closure = lines[i + 1 :]
    assert "  onnxruntime 1.22.1 -> 1.17.3" in closure
    assert "  numpy 2.4.6 -> 1.26.4" in closure
    assert "  pycocotools 2.0.11 rebuilt: numpy 2.4.6 -> 1.26.4" in closure
    app = next(x for x in closure if x.startswith("  retinanet-offline 1.0 rebuilt: "))
    assert "onnxruntime 1.22.1 -> 1.17.3" in app and "pycocotools rebuilt" in app
    assert "  offline_expected_qps: 38.12610757923261 | 61.705826927251316" in lines
    assert any(x.startswith(NEW_ID) and "40.59" in x and "VALID 1" in x for x in lines)
    doc = retinanet("runs", "compare", NEW_ID, OLD_ID, "--json").ok().json()
    (diff,) = doc["closure"]
    assert {e["name"] for e in diff["version_changed"]} == {"onnxruntime", "numpy"}
    assert {e["name"] for e in diff["rebuilt"]} == {"pycocotools", "retinanet-offline"}
    assert doc["groups"][1]["versions"]["onnxruntime_version"] == "1.17.3"
    assert doc["machine"]["differ"] == {}


def test_runs_of_different_apps_are_compared_with_the_difference_stated(
    retinanet: Home, toy: Home
) -> None:
    toy_run = toy.runs / _run(toy)
    r = retinanet("runs", "compare", NEW_ID, str(toy_run)).ok()
    assert (
        "note: the runs are of different apps: retinanet-offline+synthetic, toyapp; "
        "their figures are compared as they are"
    ) in r.out
    assert f"closure: {toy_run.name} vs {NEW_ID}" in r.out and "  + toyapp 1.0" in r.out


def test_a_record_of_a_newer_format_is_refused(retinanet: Home) -> None:
    newer = _copy(retinanet, "ort-1.22.1", {"format": 2, "id": "20261130T000000.000Z-x-000000"})
    r = retinanet("runs", "compare", NEW_ID, newer.name)
    assert r.code == 2, r
    assert str(newer / "result.json") in r.err and "format 2" in r.err
    r = retinanet("runs", "export", "--json", str(newer))
    assert r.code == 2 and "format 2" in r.err, r


def test_unknown_references_are_bad_input(retinanet: Home) -> None:
    r = retinanet("runs", "compare", NEW_ID, "no-such-run")
    assert r.code == 2 and "no-such-run" in r.err, r
    r = retinanet("runs", "compare", "exp-nothing")
    assert r.code == 2, r
    assert retinanet("runs", "compare").code == 2


def test_export_every_run_as_csv_and_json(retinanet: Home, tmp_path: Path) -> None:
    out = retinanet("runs", "export", "--csv", "-").ok().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run"] for r in rows] == [NEW_ID, OLD_ID]
    assert [r["onnxruntime_version"] for r in rows] == ["1.22.1", "1.17.3"]
    assert rows[0]["samples_per_second"] == "40.5893" and rows[0]["result"] == "VALID"
    assert rows[1]["started"] == "2026-11-29T22:18:27.290Z"
    file = tmp_path / "runs.csv"
    retinanet("runs", "export", OLD_ID, "--csv", str(file)).ok()
    assert [r["run"] for r in csv.DictReader(file.open())] == [OLD_ID]
    table = retinanet("runs", "export", NEW_ID, "--json").ok().json()
    assert len(table) == 1 and table[0]["latency_p99_ms"] == pytest.approx(5123.186303)


def test_export_needs_one_output(retinanet: Home, tmp_path: Path) -> None:
    assert retinanet("runs", "export").code == 2
    assert retinanet("runs", "export", "--csv", "-", "--json").code == 2
    r = retinanet("runs", "export", "--csv", str(tmp_path / "no" / "such" / "dir.csv"))
    assert r.code == 2 and "Cannot write" in r.err, r


def _strict_json(text: str) -> Any:
    """``text`` parsed as strict JSON: NaN and Infinity are refused."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in the JSON printed")

    return json.loads(text, parse_constant=refuse)


def test_the_json_printed_is_strict_whatever_the_figures(retinanet: Home) -> None:
    """Records are data from others: figures whose ratio (1e300 / 1e-300) or median (two
    figures near the largest float) overflow, and a NaN among the versions, must not
    print NaN or Infinity, which strict JSON readers refuse."""
    huge = 1.7976931348623157e308
    for run_id, rate in (("20261130T000001.000Z-retinanet-offline-aaaaa1", 1e-300),
                         ("20261130T000002.000Z-retinanet-offline-aaaaa2", 1e300),
                         ("20261130T000003.000Z-retinanet-offline-aaaaa3", huge)):  # fmt: skip
        doc = json.loads((DATA / "ort-1.22.1.result.json").read_text())
        doc["loadgen"]["samples_per_second"] = rate
        _copy(retinanet, "ort-1.22.1", {"id": run_id, "loadgen": doc["loadgen"],
                                        "versions": {"onnxruntime_version": float("nan")}})  # fmt: skip
    ids = sorted(p.name for p in retinanet.runs.iterdir() if p.name.startswith("20261130"))
    doc = _strict_json(retinanet("runs", "compare", *ids, "--json").ok().out)
    ratios = [v["ratio"] for v in doc["verdicts"] if v["figure"] == "samples_per_second"]
    assert ratios == [None, None]
    assert doc["groups"][0]["versions"] == {"onnxruntime_version": None}
    assert doc["groups"][2]["figures"]["samples_per_second"]["median"] == huge
    rows = _strict_json(retinanet("runs", "export", *ids, "--json").ok().out)
    assert [r["samples_per_second"] for r in rows] == [1e-300, 1e300, huge]
    assert [r["onnxruntime_version"] for r in rows] == [None, None, None]
    retinanet("runs", "compare", *ids).ok()


def test_an_escape_sequence_in_a_record_does_not_reach_the_terminal(retinanet: Home) -> None:
    bad = "20261130T000004.000Z-retinanet-offline-aaaaa4"
    _copy(retinanet, "ort-1.17.3", {"id": bad, "status": "failed",
                                    "error": "error: \x1b]0;PWNED\x07\nsecond line"})  # fmt: skip
    out = retinanet("runs", "compare", NEW_ID, bad).ok().out
    assert "\x1b" not in out and "\x07" not in out
    assert f"run {bad} failed: error: \\x1b]0;PWNED\\x07\\nsecond line" in out.splitlines()
