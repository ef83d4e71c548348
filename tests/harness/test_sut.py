"""The SUT end to end: ``python -m mlpkg.harness`` as a subprocess with the real ONNX Runtime
and LoadGen on the tiny model (see conftest.py), in every scenario; a failing sample; Ctrl-C.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from mlpkg.harness import backend
from mlpkg.harness.backend import thread_plan
from mlpkg.harness.sut import SUT, Item, Stats

SCENARIOS = ["SingleStream", "MultiStream", "Server", "Offline"]
LOGS = [
    "mlperf_log_summary.txt",
    "mlperf_log_detail.txt",
    "mlperf_log_accuracy.json",
    "mlperf_log_trace.json",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_performance_run_in_every_scenario(harness: Any, scenario: str) -> None:
    r = harness.run("--scenario", scenario, "--time", "0.5", "--quiet")
    assert r.code == 0, str(r)
    for name in LOGS:
        assert (r.output / name).is_file(), name
    doc = r.json()
    assert doc["format"] == 1 and doc["status"] == "ok" and doc["exit_code"] == 0
    assert doc["scenario"] == scenario and doc["mode"] == "PerformanceOnly"
    assert doc["loadgen"]["result"] in ("VALID", "INVALID")
    assert doc["loadgen"]["scenario"] == scenario
    assert doc["loadgen"]["samples_per_second"] > 0
    assert doc["loadgen"]["latency_ns"]["p99.00"] > 0
    assert doc["accuracy"] is None
    assert doc["counts"]["succeeded"] == doc["counts"]["issued"] > 0
    assert doc["errors"] == {"count": 0, "first": None, "samples": []}
    assert doc["settings"]["values"]["min_duration_ms"] == 500
    assert doc["settings"]["values"]["min_query_count"] == 1
    assert doc["session"]["workers"] == (
        1 if scenario == "SingleStream" else thread_plan(scenario, None).workers
    )
    # the printed lines: the reference's summary, then LoadGen's verdict
    lines = r.out.strip().splitlines()
    assert lines[-2] == doc["summary"]["line"]
    assert lines[-2].startswith(f"TestScenario.{scenario} qps=")
    assert lines[-1].startswith(f"LoadGen result: {doc['loadgen']['result']} ({scenario}")
    assert r.err == ""  # --quiet: no progress display


def test_failed_sample_gets_an_empty_answer_and_exit_1(harness: Any, make_variant: Any) -> None:
    ds = make_variant("bad-shape")
    npy = ds / "preprocessed" / f"{3:016x}.npy"
    npy.unlink()
    np.save(npy, np.zeros((3, 800, 700), np.float32))  # ONNX Runtime rejects the shape
    r = harness.run("--accuracy", "--threads", "2", dataset=ds)
    assert r.code == 1, str(r)
    assert "warning: inference failed for sample 3" in r.err
    assert "700" in r.err  # ONNX Runtime's reason
    doc = r.json()
    assert doc["status"] == "failed" and doc["exit_code"] == 1
    assert doc["errors"]["count"] == 1 and doc["errors"]["samples"] == [3]
    assert doc["errors"]["first"].startswith("sample 3: ")
    assert doc["counts"]["answered"] == 8 and doc["counts"]["succeeded"] == 7
    log = json.loads((r.output / "mlperf_log_accuracy.json").read_text())
    data = {e["qsl_idx"]: e["data"] for e in log}
    assert len(data) == 8 and data[3] == "" and all(data[i] for i in data if i != 3)
    assert 0 < doc["accuracy"]["mAP"] < 1  # image 3 counts, without detections
    assert doc["accuracy"]["images"] == 8 and doc["accuracy"]["images_without_detections"] == 1


@pytest.mark.parametrize("scenario", ["Server", "SingleStream"])
def test_ctrl_c_ends_with_130_and_keeps_the_logs(harness: Any, scenario: str) -> None:
    proc, out = harness.popen("--scenario", scenario, "--time", "60")
    r = harness.interrupt_when_running(proc, out, after=0.5)
    assert r.code == 130, str(r)
    assert r.err.strip().splitlines()[-1].startswith("interrupted: ")
    assert "Traceback" not in r.err
    doc = json.loads((out / "harness.json").read_text())
    assert doc["status"] == "interrupted" and doc["exit_code"] == 130
    assert doc["signal"] == "SIGINT" and "not measurements" in doc["note"]
    assert "LoadGen result" not in r.out
    assert doc["counts"]["answered"] > 0
    assert doc["counts"]["succeeded"] + doc["counts"]["drained"] == doc["counts"]["answered"]
    assert doc["errors"]["count"] == 0  # drained samples are not failures
    assert (out / "mlperf_log_detail.txt").stat().st_size > 0
    assert "mlperf_log_detail.txt" in doc["logs"]


@pytest.mark.parametrize(
    ("scenario", "threads", "cpus", "want"),
    [
        ("SingleStream", None, 8, (1, 8, 1)),
        ("SingleStream", 3, 8, (1, 3, 1)),
        ("Offline", None, 4, (4, 1, 4)),
        ("Offline", None, 8, (8, 1, backend.MAX_SESSIONS)),
        ("Offline", 2, 8, (2, 4, 2)),
        ("Server", 3, 8, (3, 2, 3)),
        ("MultiStream", 16, 8, (16, 1, backend.MAX_SESSIONS)),
        ("Offline", 64, 64, (64, 1, backend.MAX_SESSIONS)),
        ("Offline", 64, 2, (64, 1, 2)),  # no more sessions than CPUs
    ],
)
def test_thread_plan(
    scenario: str, threads: int | None, cpus: int, want: tuple[int, int, int]
) -> None:
    """(workers, intra-op threads, sessions): a session per worker (a shared one was
    slower on the real-size model, mlpkg/harness/backend.py) up to MAX_SESSIONS and the
    CPUs (then shared round-robin), workers x intra-op = cores."""
    p = thread_plan(scenario, threads, cpus)
    assert (p.workers, p.intra_op_threads, p.sessions) == want
    assert p.inter_op_threads == 1 and p.cpu_count == cpus


def test_thread_choice_is_recorded(harness: Any, tmp_path: Path) -> None:
    r = harness.run(
        "--scenario", "Offline", "--threads", "1", "--count", "4", "--time", "0.5", "--quiet"
    )
    assert r.code == 0, str(r)
    doc = r.json()
    s = doc["session"]
    assert s["workers"] == 1 and s["intra_op_threads"] == s["cpu_count"]
    assert s["provider"] == "CPUExecutionProvider"
    assert s["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert len(s["warmup_latencies_s"]) == 5 and s["estimated_qps"] > 0
    # estimated_qps: the calibrated rate; the first query is sized from 1.25 x it
    assert s["estimated_qps"] == s["calibration"]["qps"]
    assert s["first_query_qps"] == pytest.approx(1.25 * s["estimated_qps"])
    # --count 4: the first 4 images, min and max query count 4, 4 performance samples
    assert doc["counts"]["samples"] == 4 and doc["counts"]["dataset_images"] == 8
    v = doc["settings"]["values"]
    assert v["min_query_count"] == v["max_query_count"] == 4
    assert doc["settings"]["qsl_performance_sample_count"] == 4
    # mlperf.conf's 64 performance samples, capped at the 4 samples there are
    assert doc["loadgen"]["parameters"]["performance_sample_count"] == 4
    assert any("capped" in n for n in doc["settings"]["notes"])


def test_cgroup_cpu_quota(tmp_path: Path) -> None:
    """cgroup v2 cpu.max: "QUOTA PERIOD" allows QUOTA / PERIOD CPUs (rounded up); "max"
    or no file: no limit."""
    f = tmp_path / "cpu.max"
    for text, want in (
        ("200000 100000\n", 2),
        ("150000 100000\n", 2),
        ("50000 100000\n", 1),
        ("max 100000\n", None),
        ("garbage\n", None),
    ):
        f.write_text(text)
        assert backend.cgroup_cpu_limit(f) == want, text
    assert backend.cgroup_cpu_limit(tmp_path / "absent") is None


def test_workers_beyond_the_sessions_share_them_round_robin() -> None:
    used: list[int] = []

    class _Session:
        def __init__(self, n: int) -> None:
            self.n = n

        def run(self, *_: Any) -> tuple[int, int, int]:
            used.append(self.n)
            return 0, 0, 0

    plan = thread_plan("Offline", 8, 8)
    b = backend.Backend([_Session(n) for n in range(plan.sessions)], plan, Path("m.onnx"))
    for w in range(plan.workers):
        b.predict(np.zeros(1, np.float32), w)
    assert used == [w % backend.MAX_SESSIONS for w in range(8)]


class _CountingLoadGen:
    """Checks, as LoadGen hears of each answer, that the SUT has counted it already (else
    a reset between tests could move the last sample's count to the next test)."""

    def __init__(self) -> None:
        self.sut: Any = None
        self.seen: list[int] = []

    def QuerySampleResponse(self, *args: Any) -> tuple[Any, ...]:
        return args

    def QuerySamplesComplete(self, responses: list[Any]) -> None:
        self.seen.append(self.sut.stats.answered)


def _bare_sut(lg: Any) -> SUT:
    plan = thread_plan("Offline", 1, 1)
    fake_backend: Any = SimpleNamespace(plan=plan)
    no_dataset: Any = None
    sut = SUT(lg, fake_backend, no_dataset, "Offline", False, warn=lambda _m: None)
    return sut


def test_an_answer_is_counted_before_loadgen_hears_of_it() -> None:
    lg = _CountingLoadGen()
    sut = lg.sut = _bare_sut(lg)
    for n in range(3):
        sut._complete(Item(n, n, time.perf_counter(), n), np.ones(7, np.float32))
    sut._complete(Item(3, 3, time.perf_counter(), 3), None)
    assert lg.seen == [1, 2, 3, 4]
    assert sut.stats.as_dict()["succeeded"] == 3


def test_reset_keeps_the_failures() -> None:
    """Between the tests of one run (duration.py) the counts start again, but failures stay:
    they are the run's result and exit status."""
    sut = _bare_sut(_CountingLoadGen())
    sut.stats = Stats(
        issued=5, answered=5, errors=2, first_error="sample 1: X", error_samples=[1, 4]
    )
    sut.stats.latencies.extend([0.1, 0.2, 0.3])
    sut.reset()
    st = sut.stats
    assert (st.issued, st.answered, st.latencies) == (0, 0, [])
    assert (st.errors, st.first_error, st.error_samples) == (2, "sample 1: X", [1, 4])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_display(tiny_model: Path, tiny_dataset: Path) -> None:
    """One updating line on a terminal (cleared before warnings), plain lines otherwise."""
    import mlperf_loadgen as lg

    from mlpkg.harness.backend import load_backend
    from mlpkg.harness.dataset import open_dataset
    from mlpkg.harness.sut import SUT, Progress

    backend = load_backend(tiny_model, thread_plan("Offline", 1))
    sut = SUT(lg, backend, open_dataset(tiny_dataset, None), "Offline", False, print)
    term = _Terminal()
    progress = Progress(sut, quiet=False, stream=term)
    assert progress.tty and progress.interval == 0.5
    progress.interval = 0.01
    progress.start()
    time.sleep(0.2)
    progress.message("warning: something")
    progress.close()
    text = term.getvalue()
    assert text.startswith("\r\033[Ksamples answered 0/0 (0.0/s)")
    assert "\r\033[Kwarning: something\n" in text
    quiet = Progress(sut, quiet=True, stream=_Terminal())
    quiet.start()
    quiet.close()
    assert quiet.stream.getvalue() == ""  # type: ignore[attr-defined]
