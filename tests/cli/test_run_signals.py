"""``mlpkg run``: signals reach the app however mlpkg was started, its stderr and the
reason of a failure are kept, options the app's command sets are refused, and a run
directory can be replayed with ``--lock``. Same toy app as tests/cli/test_run.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.toy_app import Home, result_of


def _start(
    toy: Home, *args: str, ignore_sigint: bool = False
) -> tuple[subprocess.Popen[str], Path]:
    """Start ``mlpkg run toyapp ARGS`` and wait until the app says it is ready."""
    before = toy.run_ids()

    def ignore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpkg", "run", "toyapp", *args], env=toy.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        preexec_fn=ignore if ignore_sigint else None,
    )  # fmt: skip
    toy.procs.append(proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        made = sorted(toy.run_ids() - before)
        if made:
            out = toy.runs / made[0] / "stdout.txt"
            if out.exists() and "toyapp: ready" in out.read_text():
                return proc, toy.runs / made[0]
        if proc.poll() is not None:
            pytest.fail(f"mlpkg exited {proc.returncode} early: {proc.communicate()}")
        time.sleep(0.02)
    pytest.fail("the app never said it was ready")


def test_ctrl_c_reaches_an_app_when_mlpkg_started_with_sigint_ignored(toy: Home) -> None:
    # nohup / `&` in a script start mlpkg with SIGINT ignored; the app must not inherit that.
    proc, run_dir = _start(toy, "--plain", "--sleep", "30", ignore_sigint=True)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, (out, err)
    assert result_of(run_dir)["status"] == "interrupted"
    assert "toyapp: interrupted" in (run_dir / "stdout.txt").read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_are_passed_on(toy: Home, signum: signal.Signals) -> None:
    proc, run_dir = _start(toy, "--plain", "--sleep", "30")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, (out, err)
    res = result_of(run_dir)
    assert res["status"] == "interrupted" and res["exit_code"] == -signum
    assert isinstance(res["pid"], int)


def test_a_killed_mlpkg_takes_its_app_down(toy: Home) -> None:
    proc, run_dir = _start(toy, "--sleep", "30")
    proc.kill()  # no chance to forward anything: the parent-death signal does it
    proc.communicate(timeout=10)
    report = run_dir / "harness.json"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not report.exists():
        time.sleep(0.05)
    assert json.loads(report.read_text())["status"] == "interrupted"
    # mlpkg could not finish its record; the list says the run died rather than "running".
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the app may still be exiting
        listed = {r["id"]: r for r in toy("runs", "list", "--json").ok().json()}
        if listed[run_dir.name]["status"] != "running":
            break
        time.sleep(0.1)
    assert listed[run_dir.name]["status"] == "died"


def test_stderr_and_the_reason_of_a_failure_are_kept(toy: Home) -> None:
    before = toy.run_ids()
    r = toy.sub("run", "toyapp", "--exit", "1")
    assert r.code == 1
    assert "error: toyapp exits 1 on purpose" in r.err  # shown while it runs, and in the error
    run_dir = toy.new_run(before)
    assert "exits 1 on purpose" in (run_dir / "stderr.txt").read_text()
    assert result_of(run_dir)["error"] == "error: toyapp exits 1 on purpose"
    assert "exits 1 on purpose" in toy("runs", "show", run_dir.name).ok().out


def test_an_option_the_command_sets_is_refused(toy: Home) -> None:
    before = toy.run_ids()
    r = toy("run", "toyapp", "--data", "/elsewhere")
    assert r.code == 2
    assert "toyapp@1.0 sets --data itself" in r.err
    assert toy.run_ids() == before


def test_a_run_directory_replays_the_experiment(toy: Home, tmp_path: Path) -> None:
    before = toy.run_ids()
    toy.sub("run", "--with", "data=data@1.0", "toyapp", "--flag", "first").ok()
    first = toy.new_run(before)
    assert result_of(first)["overrides"] == {"data": "data@1.0"}
    before = toy.run_ids()
    r = toy.sub("run", "--lock", str(first)).ok()
    assert "toyapp: flag first" in r.out  # the arguments of the run, not only its closure
    second = result_of(toy.new_run(before))
    assert second["app_path"] == result_of(first)["app_path"]
    assert second["args"] == ["--flag", "first"]
    assert second["lockfile"] == str(first / "mlpkg.lock")
    r = toy.sub("run", "--lock", str(first / "result.json"), "--flag", "other").ok()
    assert "toyapp: flag other" in r.out  # arguments given replace the recorded ones
