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
from types import SimpleNamespace
from typing import Any

import numpy as np
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
    short = {
        "fields": {"Min duration satisfied": "NO"},
        "latency_ns": {"max": 250_000_000},
        "parameters": {"samples_per_query": 110},
    }
    assert duration.short_test(short) == duration.Short(0.25, 110)
    assert duration.short_test({**short, "fields": {"Min duration satisfied": "Yes"}}) is None
    assert duration.short_test(None) is None
    # 110 samples in 0.25 s: 440/s measured, x 1.5; slightly short: at least MIN_GROWTH
    assert duration.grown_qps(100.0, 0.25, 110) == pytest.approx(660.0)
    assert duration.grown_qps(100.0, 0.95, 110) == pytest.approx(100.0 * duration.MIN_GROWTH)
    # LoadGen's query: 1.1 x S x qps, floored at min_query_count
    assert duration.query_size(100.0, 10.0, 1) == 1100
    assert duration.query_size(1.0, 10.0, 500) == 500


def test_an_unknown_length_grows_by_min_growth() -> None:
    """A summary without a maximum latency (or query size) is short by an unknown amount:
    the query grows by MIN_GROWTH, not as if it had lasted a microsecond."""
    short = duration.short_test({"fields": {"Min duration satisfied": "NO"}})
    assert short == duration.Short(None, None)
    assert duration.grown_qps(100.0, None, None) == pytest.approx(100.0 * duration.MIN_GROWTH)
    assert duration.grown_qps(100.0, 0.5, None) == pytest.approx(100.0 * duration.MIN_GROWTH)
    zero = {"fields": {"Min duration satisfied": "NO"}, "latency_ns": {"max": 0}}
    assert duration.short_test(zero) == duration.Short(None, None)


class _FakeLoadGen:
    """LoadGen's Offline test as the rule sees it: one query of max(min_query_count,
    1.1 x S x qps) samples answered at ``rate`` per second (optionally ``failing``)."""

    def __init__(self, rate: float, seconds: float, min_query_count: int) -> None:
        self.rate, self.seconds = rate, seconds
        self.settings = SimpleNamespace(offline_expected_qps=1.0, min_query_count=min_query_count)
        self.sizes: list[int] = []
        self.summary: dict[str, Any] | None = None
        self.failed = 0
        self.resets = 0
        self.known_length = True

    def test(self) -> bool:
        qps = self.settings.offline_expected_qps
        size = duration.query_size(qps, self.seconds, self.settings.min_query_count)
        self.sizes.append(size)
        lasted = size / self.rate
        self.summary = {
            "fields": {"Min duration satisfied": "Yes" if lasted >= self.seconds else "NO"},
            "latency_ns": {"max": int(lasted * 1e9)} if self.known_length else {},
            "parameters": {"samples_per_query": size},
        }
        return False

    def run(self, out: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[Any]]:
        monkeypatch.setattr(duration, "parse_summary", lambda _path: self.summary)
        notes: list[str] = []
        attempts: list[Any] = []
        out.mkdir(exist_ok=True)
        duration.run_tests(
            self.test,
            self.settings,
            self.seconds,
            out,
            (),
            notes,
            self._reset,
            failed=lambda: self.failed,
            attempts=attempts,
        )
        return notes, attempts

    def _reset(self) -> None:
        self.resets += 1


def test_a_query_floored_by_count_grows_from_the_rate_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--count 500 (min_query_count 500), --qps 1, 100 samples/s, --time 10: the first
    query is the floor, 500 samples (5 s). Growing the QPS 2-3x from 1 would give the
    floor again (the run used to stop there, INVALID); grown from the rate measured (100/s)
    the second query lasts the 10 s."""
    lg = _FakeLoadGen(rate=100.0, seconds=10.0, min_query_count=500)
    notes, attempts = lg.run(tmp_path / "out", monkeypatch)
    assert lg.sizes[0] == 500 and lg.sizes[1] > 500, (lg.sizes, notes)
    assert lg.sizes[-1] / lg.rate >= lg.seconds, (lg.sizes, notes)
    assert len(lg.sizes) == 2 and lg.resets == 1
    assert notes[0].startswith("attempt 1: offline_expected_qps 1.000 gave a test of 500 samples")
    assert notes[-1] == "attempt 2: the test met its minimum duration (recorded)"
    assert [a["samples"] for a in attempts] == lg.sizes
    assert [a["min_duration_met"] for a in attempts] == [False, True]
    assert attempts[0]["seconds"] == pytest.approx(5.0)


def test_no_rerun_when_the_query_cannot_grow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short test of unknown length (no maximum latency in the summary) grows the QPS by
    MIN_GROWTH only; when the query is floored (min_query_count 500) above what that gives,
    LoadGen's next query would be the same: not re-run, and the note says why."""
    lg = _FakeLoadGen(rate=100.0, seconds=10.0, min_query_count=500)
    lg.known_length = False
    notes, attempts = lg.run(tmp_path / "out", monkeypatch)
    assert lg.sizes == [500] and lg.resets == 0, notes
    assert "would not grow (min_query_count 500)" in notes[-1], notes
    assert notes[-1].endswith("this one is recorded (INVALID)")
    assert len(attempts) == 1 and attempts[0]["seconds"] is None


def test_failed_samples_stop_the_reruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test whose samples failed (answered empty at once: short for that reason) is not
    re-run with a larger query; it is the recorded one."""
    lg = _FakeLoadGen(rate=100.0, seconds=10.0, min_query_count=1)
    lg.failed = 1
    notes, attempts = lg.run(tmp_path / "out", monkeypatch)
    assert len(lg.sizes) == 1 and lg.resets == 0, notes
    assert "1 sample(s) failed, not re-run" in notes[-1]
    assert not (tmp_path / "out" / "attempt-1").exists()
    assert len(attempts) == 1


def test_failing_samples_end_a_time_run_at_once_with_exit_1(
    harness: Any, make_variant: Any
) -> None:
    """Every sample fails (a shape ONNX Runtime rejects; the warm-up runs on zeros): with
    --qps 1 the first test is one failed sample, milliseconds long. It is not re-run, and
    the run fails with the error counted."""
    ds = make_variant("all-bad")
    for npy in (ds / "preprocessed").glob("*.npy"):
        npy.unlink()
        np.save(npy, np.zeros((3, 800, 700), np.float32))
    r = harness.run(
        "--scenario", "Offline", "--time", str(SECONDS), "--qps", "1", "--quiet", dataset=ds
    )
    assert r.code == 1, str(r)
    doc = r.json()
    assert doc["status"] == "failed" and doc["errors"]["count"] >= 1, str(r)
    assert doc["errors"]["first"].startswith("sample "), doc["errors"]
    assert len(doc["settings"]["attempts"]) == 1, doc["settings"]
    assert "not re-run" in doc["settings"]["notes"][-1]
    assert not (r.output / "attempt-1").exists()


def test_stale_attempt_dirs_are_removed(harness: Any, tmp_path: Path) -> None:
    """A reused --output: an earlier run's attempt-N/ directories go, so that those left are
    this run's; harness.json records every test of this run."""
    out = tmp_path / "reused"
    for n in (1, 7):
        (out / f"attempt-{n}").mkdir(parents=True)
        (out / f"attempt-{n}" / "mlperf_log_summary.txt").write_text("stale\n")
    (out / "attempt-notes").mkdir()  # not an attempt directory: left alone
    r = harness.run("--scenario", "Offline", "--time", str(SECONDS), "--quiet", output=out)
    assert r.code == 0, str(r)
    doc = r.json()
    attempts = doc["settings"]["attempts"]
    assert attempts and attempts[-1]["min_duration_met"] is True, attempts
    assert all(isinstance(a["samples"], int) for a in attempts), attempts
    assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    kept = sorted(p.name for p in out.glob("attempt-[0-9]*"))
    assert kept == [f"attempt-{n}" for n in range(1, len(attempts))], kept
    assert (out / "attempt-notes").is_dir()
    for n in range(1, len(attempts)):
        assert "stale" not in (out / f"attempt-{n}" / "mlperf_log_summary.txt").read_text()
