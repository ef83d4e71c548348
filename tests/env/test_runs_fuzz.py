"""Fuzzing the run and experiment records (issue 15): ``result.json`` (mlpkg.env.runs)
and ``experiment.json`` (mlpkg.experiments.record), as arbitrary bytes, edited text and
structural mutations of real records (a value of any JSON type, huge integers, NaN and
infinities among them; keys deleted or added).

Property: reading a record, and what ``runs list`` and ``runs show`` then compute from it
(its status, its headline figure), gives a record or raises an
:class:`~mlpkg.errors.MlpkgError` whose one sentence names the file; never another
exception, and nothing is written beside the record. Profiles: tests/fuzz_support.py."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from mlpkg.env import runs
from mlpkg.errors import MlpkgError
from mlpkg.experiments import record
from tests.fuzz_support import PROFILES, TEXT_EDITS, edit_text, fuzz, mutate

TESTS = Path(__file__).resolve().parents[1]
RUN_ID = "20261129T101010.123Z-retinanet-offline-abcdef"
RESULT = (TESTS / "golden" / "run-v1" / "result.json").read_text()
RESULT_PERF = (TESTS / "experiments" / "data" / "ort-1.17.3.result.json").read_text()
EXPERIMENT = json.dumps(
    {
        "format": 1,
        "id": "exp-" + RUN_ID,
        "app": "retinanet-offline",
        "created": 1764410000.0,
        "updated": 1764410100.5,
        "status": "running",
        "mlpkg_pid": 1,
        "matrix": {"with": {"onnxruntime": ["a", "b"]}, "arg": {}, "repeat": 1, "args": []},
        "points": [
            {
                "index": 0,
                "cell": {"with.onnxruntime": "a"},
                "repeat": 0,
                "overrides": {"onnxruntime": "onnxruntime@1.17.3"},
                "args": ["--time", "5"],
                "run": RUN_ID,
                "status": "ok",
                "timings": {"run": 5.5},
            }
        ],
    }
)


def check_run(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="mlpkg-runfuzz-") as tmp:
        entry = Path(tmp) / RUN_ID
        entry.mkdir()
        (entry / runs.RESULT_FILE).write_bytes(data)
        try:
            rec = runs.read_record(entry)
            rec.status  # noqa: B018 - reads pids from the record
            runs.headline(rec.result)
        except MlpkgError as e:
            assert str(entry / runs.RESULT_FILE) in e.message, e.message
            assert "\n" not in e.message, e.message
        assert [p.name for p in entry.iterdir()] == [runs.RESULT_FILE]


def check_experiment(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="mlpkg-expfuzz-") as tmp:
        entry = Path(tmp) / ("exp-" + RUN_ID)
        entry.mkdir()
        (entry / record.EXPERIMENT_FILE).write_bytes(data)
        try:
            exp = record.read_experiment(entry)
            [record.cell_label(p.cell) for p in exp.points]
        except MlpkgError as e:
            assert str(entry / record.EXPERIMENT_FILE) in e.message, e.message
            assert "\n" not in e.message, e.message
        assert [p.name for p in entry.iterdir()] == [record.EXPERIMENT_FILE]


@st.composite
def _mutated(draw: st.DrawFn, text: str) -> bytes:
    doc: Any = mutate(draw, json.loads(text), rounds=3)
    return json.dumps(doc).encode()


CASES = {
    "result": (RESULT, check_run),
    "result-perf": (RESULT_PERF, check_run),
    "experiment": (EXPERIMENT, check_experiment),
}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_mutated_record(profile: str, case: str) -> None:
    text, check = CASES[case]
    fuzz(profile, _mutated(text), check)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_edited_record_text(profile: str, case: str) -> None:
    text, check = CASES[case]
    fuzz(profile, TEXT_EDITS, lambda e: check(edit_text(text, e).encode("utf-8", "surrogatepass")))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("case", ["result", "experiment"])
def test_arbitrary_bytes(profile: str, case: str) -> None:
    fuzz(profile, st.binary(max_size=200), CASES[case][1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_seeds_read(case: str) -> None:
    text, check = CASES[case]
    check(text.encode())  # and they are valid records:
    with tempfile.TemporaryDirectory() as tmp:
        entry = Path(tmp) / RUN_ID
        entry.mkdir()
        if check is check_run:
            (entry / runs.RESULT_FILE).write_text(text)
            runs.read_record(entry)
        else:
            (entry / record.EXPERIMENT_FILE).write_text(text)
            record.read_experiment(entry)


# -- regressions the fuzzing found ------------------------------------------------------------


def _result(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(RESULT)
    doc.update(changes)
    return doc


@pytest.mark.parametrize("pid", [10**30, 1 << 63, 1 << 31, -(10**30)])
def test_a_running_record_with_a_huge_pid_has_died(tmp_path: Path, pid: int) -> None:
    """``"pid": 10**30`` in a record still marked running: os.kill raised OverflowError."""
    entry = tmp_path / RUN_ID
    entry.mkdir()
    (entry / runs.RESULT_FILE).write_text(
        json.dumps(_result(status="running", pid=pid, mlpkg_pid=pid))
    )
    assert runs.read_record(entry).status == "died"


@pytest.mark.parametrize("where", ["latency_ns", "samples_per_second"])
def test_a_headline_figure_too_big_for_a_float_is_passed_over(where: str) -> None:
    """A latency of 10**400 ns: float() raised OverflowError in the headline."""
    loadgen: dict[str, Any] = {"result": "VALID", "latency_ns": {"mean": 2_000_000}}
    if where == "latency_ns":
        loadgen["latency_ns"] = {"p99.00": 10**400, "mean": 2_000_000}
        assert runs.headline({"loadgen": loadgen}) == "mean latency 2.00 ms VALID"
    else:
        loadgen["samples_per_second"] = 10**400
        assert runs.headline({"loadgen": loadgen}) == "mean latency 2.00 ms VALID"
    assert runs.headline({"accuracy": {"mAP": 10**400}}) == ""


def test_a_key_with_a_newline_is_escaped_in_the_one_sentence(tmp_path: Path) -> None:
    entry = tmp_path / RUN_ID
    entry.mkdir()
    (entry / runs.RESULT_FILE).write_text(json.dumps(_result(overrides={"x\ny": 3})))
    with pytest.raises(MlpkgError) as e:
        runs.read_record(entry)
    assert e.value.message.endswith("field overrides.x\\ny: Input should be a valid string.")
