"""Stopping the harness (mlpkg/harness/main.py): Ctrl-C even when the process started with
SIGINT ignored, SIGTERM like Ctrl-C, the figures of an interrupted run marked as no
measurement, and a reader of stdout that is gone."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any


def _interrupted(r: Any, sig: signal.Signals) -> dict[str, Any]:
    """Checks common to every interrupted run; returns its harness.json."""
    assert r.code == 128 + sig, str(r)
    assert "Traceback" not in r.err
    assert r.err.strip().splitlines()[-1].startswith("interrupted: ")
    assert "LoadGen result" not in r.out and "TestScenario" not in r.out  # no claimed rate
    doc = r.json()
    assert doc["status"] == "interrupted" and doc["exit_code"] == 128 + sig
    assert doc["signal"] == sig.name
    assert "not measurements" in doc["note"]
    return doc


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_ctrl_c_works_when_started_with_sigint_ignored(harness: Any) -> None:
    """A job started with ``&`` from a script (or under nohup) inherits SIGINT ignored."""
    proc, out = harness.popen(
        "--scenario", "Server", "--time", "60", popen={"preexec_fn": _ignore_sigint}
    )
    r = harness.interrupt_when_running(proc, out, after=0.5)
    doc = _interrupted(r, signal.SIGINT)
    assert doc["exit_code"] == 130


def test_sigterm_is_handled_like_ctrl_c(harness: Any) -> None:
    proc, out = harness.popen("--scenario", "Server", "--time", "60")
    r = harness.interrupt_when_running(proc, out, after=0.5, sig=signal.SIGTERM)
    doc = _interrupted(r, signal.SIGTERM)
    assert doc["exit_code"] == 143
    assert doc["counts"]["answered"] > 0
    assert doc["counts"]["succeeded"] + doc["counts"]["drained"] == doc["counts"]["answered"]
    assert doc["errors"]["count"] == 0
    assert "mlperf_log_detail.txt" in doc["logs"]


def test_interrupted_offline_figures_are_marked_as_no_measurement(harness: Any) -> None:
    """Offline ends once its one query is drained, so LoadGen writes its summary (with a
    rate): harness.json keeps it, but says that it is no measurement, and nothing claiming
    a rate is printed."""
    # one query of 6000 samples (~2000/s on one worker), drained at ~30000/s
    args = ("--scenario", "Offline", "--time", "60", "--qps", "100", "--threads", "1")
    proc, out = harness.popen(*args, "--quiet")
    r = harness.interrupt_when_running(proc, out, after=0.1)
    doc = _interrupted(r, signal.SIGINT)
    assert doc["counts"]["drained"] > 0
    assert doc["loadgen"]["result"] in ("VALID", "INVALID")  # LoadGen's figures: kept, marked
    assert doc["loadgen"]["samples_per_second"] > 0
    assert doc["summary"]["line"].startswith("TestScenario.Offline qps=")
    assert doc["note"].startswith("interrupted by SIGINT")


def test_closed_stdout_does_not_stop_the_run(harness: Any, tmp_path: Path) -> None:
    """The reader of stdout is gone (parent died, terminal closed): harness.json is still
    written, and the exit status is the run's own."""
    err = tmp_path / "stderr.txt"
    with open(err, "w") as err_file:
        proc, out = harness.popen(
            "--accuracy",
            "--quiet",
            popen={"stdout": subprocess.PIPE, "stderr": err_file},
        )
        assert proc.stdout is not None
        proc.stdout.close()
        code = proc.wait(timeout=120)
    text = err.read_text()
    assert code == 0, text
    assert "Traceback" not in text and "Exception ignored" not in text
    doc = json.loads((out / "harness.json").read_text())
    assert doc["status"] == "ok" and doc["exit_code"] == 0
    assert doc["accuracy"]["mAP"] == 1.0
