"""The figures of a run record, statistics of a group and the verdict rule
(mlpkg.experiments.figures)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlpkg.experiments import figures as fig
from tests.experiments.records import ORT_NEW, ORT_OLD, sample


def test_the_figures_of_a_real_record() -> None:
    figures = fig.run_figures(sample(ORT_NEW))
    assert figures["samples_per_second"] == pytest.approx(40.5893)
    assert figures["latency_ms"] == pytest.approx(
        {"p50": 2481.644604, "p90": 4864.25971, "p99": 5123.186303}
    )
    assert figures["mAP"] is None and figures["result"] == "VALID"
    assert fig.run_figures(sample(ORT_OLD))["samples_per_second"] == pytest.approx(57.0, abs=1)


def test_map_is_a_percentage() -> None:
    res = sample()
    res["accuracy"] = {"mAP": 0.3752}
    assert fig.run_figures(res)["mAP"] == pytest.approx(37.52)


@pytest.mark.parametrize("bad", ["40.5", True, None, float("nan"), float("inf"), [1], {"a": 1}])
def test_figures_that_are_not_numbers_are_ignored(bad: Any) -> None:
    res = sample()
    res["loadgen"]["samples_per_second"] = bad
    res["loadgen"]["latency_ns"]["p90.00"] = bad
    res["accuracy"] = {"mAP": bad}
    figures = fig.run_figures(res)
    assert figures["samples_per_second"] is None and figures["mAP"] is None
    assert figures["latency_ms"]["p90"] is None and figures["latency_ms"]["p50"] is not None


@pytest.mark.parametrize("loadgen", [None, "VALID", [], {"latency_ns": "x", "result": 3}])
def test_odd_tables_give_no_figures(loadgen: Any) -> None:
    res = sample()
    res["loadgen"] = loadgen
    res["accuracy"] = "high"
    figures = fig.run_figures(res)
    assert figures == {
        "samples_per_second": None,
        "mAP": None,
        "result": None,
        "latency_ms": {"p50": None, "p90": None, "p99": None},
    }


def test_an_interrupted_run_has_no_figures() -> None:
    res = sample()
    res["status"] = "interrupted"
    res["accuracy"] = {"mAP": 0.5}
    figures = fig.run_figures(res)
    assert figures["samples_per_second"] is None and figures["mAP"] is None
    assert figures["result"] is None


def test_stats() -> None:
    assert fig.stats([]) is None
    assert fig.stats(["x", None, True, math.nan]) is None
    s = fig.stats([40.6, 39.8, "x", 40.1])
    assert s == {"n": 3, "median": 40.1, "min": 39.8, "max": 40.6, "values": [40.6, 39.8, 40.1]}
    assert fig.stats([1, 2])["median"] == 1.5  # type: ignore[index]


def _s(*values: float) -> dict[str, Any]:
    s = fig.stats(values)
    assert s is not None
    return s


def test_a_verdict_only_where_the_ranges_do_not_overlap() -> None:
    base = _s(39.8, 40.1, 40.6)
    assert fig.verdict(base, _s(45.0, 46.0, 47.0)) == {
        "ratio": pytest.approx(46 / 40.1),
        "verdict": "higher",
    }
    assert fig.verdict(base, _s(30.0, 31.0))["verdict"] == "lower"  # type: ignore[index]
    assert fig.verdict(base, _s(40.5, 41.0, 49.0))["verdict"] == "within spread"  # type: ignore[index]
    assert fig.verdict(base, _s(40.6, 41.0))["verdict"] == "within spread"  # type: ignore[index]  # touching


def test_one_run_on_either_side_gives_no_verdict() -> None:
    assert fig.verdict(_s(40.0), _s(80.0, 81.0)) == {
        "ratio": pytest.approx(2.0125),
        "verdict": "no spread (1 run)",
    }
    assert fig.verdict(_s(40.0, 41.0), _s(80.0))["verdict"] == "no spread (1 run)"  # type: ignore[index]


def test_no_verdict_without_values_and_no_ratio_over_zero() -> None:
    assert fig.verdict(None, _s(1.0)) is None and fig.verdict(_s(1.0), None) is None
    assert fig.verdict(_s(0.0, 0.0), _s(1.0, 2.0)) == {"ratio": None, "verdict": "higher"}


def test_group_figures_count_loadgen_verdicts() -> None:
    runs = [fig.run_figures(sample()), fig.run_figures(sample(ORT_OLD))]
    invalid = sample()
    invalid["loadgen"]["result"] = "INVALID"
    runs.append(fig.run_figures(invalid))
    group = fig.group_figures(runs)
    assert group["result"] == {"VALID": 2, "INVALID": 1}
    assert group["samples_per_second"]["n"] == 3 and group["mAP"] is None
    assert group["latency_ms"]["p99"]["n"] == 3
    assert fig.figure_of(group, "latency_ms.p99") is group["latency_ms"]["p99"]
    assert fig.figure_of(None, "mAP") is None


def test_the_median_of_figures_near_the_largest_float_is_finite() -> None:
    top = 1.7976931348623157e308
    assert fig.stats([top, top])["median"] == top  # type: ignore[index]
    assert fig.stats([1.7e308, 1.5e308])["median"] == pytest.approx(1.6e308)  # type: ignore[index]
    assert fig.stats([-top, top])["median"] == 0.0  # type: ignore[index]
    assert fig.stats([1.0, 3.0])["median"] == 2.0  # type: ignore[index]


def test_a_ratio_that_is_not_finite_is_no_ratio() -> None:
    """Figures that are not finite are not figures: 1e300 / 1e-300 overflows to inf."""
    found = fig.verdict(_s(1e-300, 2e-300), _s(1e300, 2e300))
    assert found == {"ratio": None, "verdict": "higher"}
    assert fig.verdict(_s(-1e-300), _s(1e300))["ratio"] is None  # type: ignore[index]


def test_an_integer_too_large_for_a_float_is_no_figure() -> None:
    res = sample()
    res["loadgen"]["latency_ns"]["p50.00"] = 10**400  # JSON has integers of any size
    assert fig.number(10**400) is None and fig.number(-(10**400)) is None
    assert fig.run_figures(res)["latency_ms"]["p50"] is None
