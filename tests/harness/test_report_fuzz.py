"""Fuzzing the harness's readers of LoadGen's output (issue 15): ``mlperf_log_summary.txt``
(:func:`mlpkg.harness.report.parse_summary`) and ``mlperf_log_accuracy.json``
(:mod:`mlpkg.harness.accuracy`: the log's entries into COCO detections).

Properties: the summary reader takes any text and gives its figures or None, never an
exception (a run's result must be written whatever LoadGen left); the accuracy log reader
gives detections or raises the harness's :class:`~mlpkg.harness.errors.BadInput` naming
the log. Profiles: tests/fuzz_support.py."""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from mlpkg.harness.accuracy import _load_log, detections_from_log
from mlpkg.harness.errors import BadInput
from mlpkg.harness.report import parse_summary
from tests.fuzz_support import PROFILES, TEXT_EDITS, edit_text, fuzz, mutate

SUMMARY = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : MultiStream
Mode     : PerformanceOnly
Result is : VALID
  Min duration satisfied : Yes
Early stopping satisfied: Yes

================================================
Additional Stats
================================================
Min latency (ns)                : 5236882
Mean latency (ns)               : 35156166
99.90 percentile latency (ns)   : 48299198

================================================
Test Parameters Used
================================================
samples_per_query : 8
target_qps : 100
min_duration (ms): 500
"""


def check_summary(text: str) -> None:
    with tempfile.TemporaryDirectory(prefix="mlpkg-summaryfuzz-") as tmp:
        path = Path(tmp) / "mlperf_log_summary.txt"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        s = parse_summary(path)
        if s is not None:
            json.dumps(s)  # it goes into harness.json
            rate = s["samples_per_second"]
            assert rate is None or isinstance(rate, int | float)


_LINE = st.sampled_from(SUMMARY.splitlines()) | st.sampled_from(
    [
        "Mean latency (ns) : abc",
        "Mean latency (ns) : 0",
        "Mean latency (ns) : -0.0",
        "Mean latency (ns) : " + "9" * 400,
        "Mean latency (ns) : 1e-400",
        "Mean latency (ns) : nan",
        "samples_per_query : x",
        "samples_per_query : " + "9" * 400,
        "samples_per_query : inf",
        "Samples per second: nan",
        "Scenario : MultiStream",
        "Result is : ",
        ": :",
        " : ",
    ]
)


@pytest.mark.parametrize("profile", PROFILES)
def test_summary_of_shuffled_and_hostile_lines(profile: str) -> None:
    fuzz(profile, st.lists(_LINE, max_size=20), lambda lines: check_summary("\n".join(lines)))


@pytest.mark.parametrize("profile", PROFILES)
def test_summary_edited(profile: str) -> None:
    fuzz(profile, TEXT_EDITS, lambda e: check_summary(edit_text(SUMMARY, e)))


@pytest.mark.parametrize("profile", PROFILES)
def test_summary_arbitrary_text(profile: str) -> None:
    fuzz(profile, st.text(max_size=300), check_summary)


# -- the accuracy log -------------------------------------------------------------------------

IMAGES = [{"id": 100 + i, "height": 480, "width": 640, "file_name": f"{i}.jpg"} for i in range(4)]
INV_MAP = [0, 1, 2, 3, 4]  # as [0, *coco.getCatIds()] with four categories


def _pack(idx: int, rows: list[list[float]]) -> str:
    return np.array(rows, np.float32).reshape(-1).tobytes().hex().upper()


LOG = [
    {"seq_id": 0, "qsl_idx": 0, "data": _pack(0, [[0, 0.1, 0.1, 0.5, 0.5, 0.9, 1]])},
    {"seq_id": 1, "qsl_idx": 1, "data": _pack(1, [[1, 0.2, 0.2, 0.4, 0.6, 0.8, 4]] * 2)},
    {"seq_id": 2, "qsl_idx": 2, "data": ""},
]


def check_accuracy_log(data: bytes, inv_map: list[int] | None) -> None:
    with tempfile.TemporaryDirectory(prefix="mlpkg-accfuzz-") as tmp:
        log = Path(tmp) / "mlperf_log_accuracy.json"
        log.write_bytes(data)
        try:
            results = _load_log(log)
            with np.errstate(all="ignore"):
                found = detections_from_log(results, IMAGES, Path(tmp), log, inv_map, io.StringIO())
        except BadInput as e:
            assert str(log) in str(e), e
            return
        json.dumps(found[0])  # the detections go to pycocotools and results.json


@st.composite
def _mutated_log(draw: st.DrawFn) -> bytes:
    doc: Any = mutate(draw, json.loads(json.dumps(LOG)), rounds=2)
    if draw(st.booleans()):  # a data field of other floats: NaN, infinities, huge labels
        floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
        rows = draw(st.lists(floats, max_size=21))
        entry = {
            "qsl_idx": draw(st.integers(-2, 5)),
            "data": np.array(rows, np.float32).tobytes().hex(),
        }
        doc = [*doc, entry] if isinstance(doc, list) else [entry]
    return json.dumps(doc).encode()


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("inv", [False, True])
def test_accuracy_log_mutated(profile: str, inv: bool) -> None:
    fuzz(profile, _mutated_log(), lambda b: check_accuracy_log(b, INV_MAP if inv else None))


@pytest.mark.parametrize("profile", PROFILES)
def test_accuracy_log_arbitrary_bytes(profile: str) -> None:
    fuzz(profile, st.binary(max_size=200), lambda b: check_accuracy_log(b, None))


def test_the_seed_log_reads(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    log.write_text(json.dumps(LOG))
    found = detections_from_log(_load_log(log), IMAGES, tmp_path, log, INV_MAP, io.StringIO())
    assert len(found[0]) == 3 and found[2] == 1
    assert not math.isnan(found[0][0]["score"])


# -- regressions the fuzzing found ------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "Mean latency (ns) : abc",  # ValueError
        "samples_per_query : x",  # ValueError
        "samples_per_query : " + "9" * 400,  # OverflowError
        "Mean latency (ns) : nan",  # a NaN rate
        "Mean latency (ns) : -5",  # a negative rate
    ],
)
def test_a_multistream_summary_with_bad_figures_has_no_rate(tmp_path: Path, line: str) -> None:
    path = tmp_path / "mlperf_log_summary.txt"
    path.write_text(SUMMARY + line + "\n")
    s = parse_summary(path)
    assert s is not None and s["result"] == "VALID"
    assert s["samples_per_second"] is None


def test_the_multistream_rate_is_still_computed(tmp_path: Path) -> None:
    path = tmp_path / "mlperf_log_summary.txt"
    path.write_text(SUMMARY)
    s = parse_summary(path)
    assert s is not None and s["samples_per_second"] == pytest.approx(8 / 0.035156166)


def _entry(idx: Any, label: float) -> dict[str, Any]:
    data = np.array([0, 0.1, 0.1, 0.5, 0.5, 0.9, label], np.float32).tobytes().hex()
    return {"qsl_idx": idx, "data": data}


@pytest.mark.parametrize(
    ("entry", "phrase"),
    [
        ({"qsl_idx": 1e300, "data": ""}, "malformed entry"),  # OverflowError: json's 1e999
        (_entry(0, 99), "category label 99, outside the 5 labels"),  # IndexError
        (_entry(0, -3), "category label -3"),  # silently inv_map[-3]
        (_entry(0, float("nan")), "category label"),
    ],
)
def test_a_bad_accuracy_log_entry_is_bad_input(
    tmp_path: Path, entry: dict[str, Any], phrase: str
) -> None:
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(json.dumps([entry]).replace("1e+300", "1e999"))
    with pytest.raises(BadInput) as e, np.errstate(all="ignore"):
        detections_from_log(_load_log(log), IMAGES, tmp_path, log, INV_MAP, io.StringIO())
    assert str(log) in str(e.value) and phrase in str(e.value)
