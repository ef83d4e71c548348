"""Short Offline runs last what they ask (mlpkg/harness/duration.py).

LoadGen sizes Offline's one query as about offline_expected_qps x min_duration x 1.1
samples, so an estimate below the rate of the test makes a ``--time S`` test shorter than
S ("Min duration satisfied: NO"). The harness re-runs such a test in the same process with
a grown query. These tests run the real harness (real LoadGen, real ONNX Runtime) on the
tiny model for ``--time 1``: once as it sizes the query itself, once from a deliberately
far too low ``--qps 1`` (a query of one sample), which only the re-run rule can bring to
one second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlpkg.harness import duration
from mlpkg.harness.report import parse_summary

SECONDS = 1.0


def _lasted(summary: dict[str, Any]) -> float:
    """The test's length as LoadGen measured it: Offline's one query is issued at the
    start, so its maximum latency is the time to the last answer."""
    return float(summary["latency_ns"]["max"]) / 1e9


def _check_recorded_test(doc: dict[str, Any], out: Path) -> None:
    lg = doc["loadgen"]
    what = f"{lg['fields']}, latency {lg['latency_ns']}, notes {doc['settings']['notes']}"
    assert lg["fields"]["Min duration satisfied"] == "Yes", what
    assert lg["result"] == "VALID", what
    assert _lasted(lg) >= SECONDS, what
    # the files are the recorded test's: its summary is the one harness.json read
    assert parse_summary(out / "mlperf_log_summary.txt") == lg


def test_offline_time_1_lasts_a_second(harness: Any) -> None:
    """Sized by the harness's own estimate (re-run if that was low): VALID, >= 1 s."""
    r = harness.run("--scenario", "Offline", "--time", str(SECONDS), "--quiet")
    assert r.code == 0, str(r)
    doc = r.json()
    _check_recorded_test(doc, r.output)
    assert any("1.25 x the warm-up's rate" in n for n in doc["settings"]["notes"])


def test_a_too_low_estimate_is_grown_until_the_test_lasts(harness: Any) -> None:
    """--qps 1 makes LoadGen's query one sample (milliseconds): the first test is short,
    kept in attempt-1/, and re-run with a larger query until one lasts the second; the
    recorded expected QPS is the last test's."""
    r = harness.run("--scenario", "Offline", "--time", str(SECONDS), "--qps", "1", "--quiet")
    assert r.code == 0, str(r)
    doc = r.json()
    _check_recorded_test(doc, r.output)
    notes = [n for n in doc["settings"]["notes"] if n.startswith("attempt ")]
    assert notes[0].startswith("attempt 1: offline_expected_qps 1.000 gave a test of"), notes
    assert notes[-1].endswith("met its minimum duration (recorded)"), notes
    short = len(notes) - 1
    assert 1 <= short < duration.MAX_ATTEMPTS
    for n in range(1, short + 1):
        kept = parse_summary(r.output / f"attempt-{n}" / "mlperf_log_summary.txt")
        assert kept is not None and kept["fields"]["Min duration satisfied"] == "NO"
        assert _lasted(kept) < SECONDS
    assert not (r.output / f"attempt-{short + 1}").exists()
    qps = doc["settings"]["values"]["offline_expected_qps"]
    assert qps >= 1.0 * duration.MIN_GROWTH**short
    assert doc["loadgen"]["parameters"]["samples_per_query"] >= qps * SECONDS  # LoadGen's x1.1
    assert doc["counts"]["answered"] == doc["loadgen"]["parameters"]["samples_per_query"]


def test_the_rule() -> None:
    """Which runs are re-run, how a short test is read, how much the query grows."""
    assert duration.applies("Offline", False, 1.0)
    assert not duration.applies("Offline", True, 1.0)  # accuracy: all samples, one query
    assert not duration.applies("Offline", False, None)  # mlperf.conf's duration: official
    assert not duration.applies("Server", False, 1.0)
    assert not duration.applies("Offline", False, 1.0, audit=True)  # the audit sizes it
    short = {"fields": {"Min duration satisfied": "NO"}, "latency_ns": {"max": 250_000_000}}
    assert duration.short_test(short) == pytest.approx(0.25)
    assert duration.short_test({**short, "fields": {"Min duration satisfied": "Yes"}}) is None
    assert duration.short_test(None) is None
    # 4x short: 1.5 x 4 = 6x; slightly short: at least MIN_GROWTH
    assert duration.grown_qps(100.0, 0.25, 1.0) == pytest.approx(600.0)
    assert duration.grown_qps(100.0, 0.95, 1.0) == pytest.approx(100.0 * duration.MIN_GROWTH)
