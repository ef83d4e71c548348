"""``mlpkg sweep`` end to end with the toy app (tests/toy_app.py): every point an ordinary
run, the experiment recorded and resumable, failures and interruptions, bad input,
``--jobs`` for accuracy sweeps."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlpkg.experiments import record
from tests.toy_app import DATA_TOML, Home, result_of


def _exp_ids(h: Home) -> set[str]:
    return set(record.experiment_ids(h.home))


def _new_exp(h: Home, before: set[str]) -> record.Experiment:
    """The one experiment made since ``before``."""
    made = sorted(_exp_ids(h) - before)
    assert len(made) == 1, made
    return record.read_experiment(record.experiments_dir(h.home) / made[0])


def _doc(h: Home, exp_id: str) -> dict[str, Any]:
    return json.loads(
        (record.experiments_dir(h.home) / exp_id / record.EXPERIMENT_FILE).read_text()
    )


def _wait_for(what: str, check: Callable[[], Any], proc: subprocess.Popen[str]) -> Any:
    """Poll ``check`` until it returns something true (while ``proc`` lives)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"mlpkg exited {proc.returncode} before {what}: {proc.communicate()}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def _running_point(h: Home, before: set[str], index: int) -> Callable[[], Any]:
    """A check for _wait_for: (experiment document, run directory) once the point
    ``index`` of the new experiment runs and its app said it is ready (it sleeps)."""

    def check() -> Any:
        made = sorted(_exp_ids(h) - before)
        if not made:
            return None
        try:
            doc = _doc(h, made[0])
        except FileNotFoundError:  # its directory is made first
            return None
        point = doc["points"][index]
        if point["status"] != "running" or point["run"] is None:
            return None
        out = h.runs / point["run"] / "stdout.txt"
        return (doc, h.runs / point["run"]) if "toyapp: ready" in _text(out) else None

    return check


def _text(file: Path) -> str:
    try:
        return file.read_text()
    except FileNotFoundError:
        return ""


def _one_error(err: str) -> str:
    """The one error line of a refused command."""
    lines = [ln for ln in err.splitlines() if ln.lower().startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# -- a sweep, its runs and its record ---------------------------------------------------


def test_a_2x2_sweep_with_repeats_runs_every_point_and_goes_on_after_failures(
    toy: Home,
) -> None:
    runs_before, exps_before = toy.run_ids(), _exp_ids(toy)
    began = time.time()
    r = toy("sweep", "toyapp", "--arg", "flag=a,b", "--arg", "exit=0,3", "--repeat", "2")
    assert r.code == 1, r
    exp = _new_exp(toy, exps_before)
    made = toy.run_ids() - runs_before
    assert len(made) == 8
    assert exp.status == "failed" and exp.app == "toyapp"
    assert exp.matrix == {"with": {}, "arg": {"flag": ["a", "b"], "exit": ["0", "3"]},
                          "repeat": 2, "args": [], "jobs": 1}  # fmt: skip
    assert [p.run for p in exp.points] == sorted(made)  # one run per point, in point order
    cells = [("a", "0"), ("a", "3"), ("b", "0"), ("b", "3")]
    assert [(p.cell["arg.flag"], p.cell["arg.exit"]) for p in exp.points] == cells * 2
    assert [p.repeat for p in exp.points] == [0] * 4 + [1] * 4
    started = []
    for p in exp.points:
        assert p.run is not None
        run_dir = toy.runs / p.run
        res = result_of(run_dir)  # an ordinary run: its record, lock and logs
        assert (run_dir / "mlpkg.lock").is_file() and (run_dir / "stdout.txt").is_file()
        flag, code = p.cell["arg.flag"], p.cell["arg.exit"]
        assert p.args == res["args"] == ["--flag", flag, "--exit", code]
        assert res["app"] == "toyapp" and res["app_path"] == p.app_path
        assert f"toyapp: flag {flag}" in (run_dir / "stdout.txt").read_text()
        assert res["status"] == p.status
        if code == "3":
            assert p.status == "failed" and res["exit_code"] == 3
            assert p.error == res["error"] == "error: toyapp exits 3 on purpose"
        else:
            assert p.status == "ok" and p.error is None and res["exit_code"] == 0
        assert set(p.timings) == {"plan_s", "run_s", "overhead_s"}
        assert 0 < p.timings["run_s"] < res["finished"] - res["started"] + 0.5
        started.append(res["started"])
    assert began < started[0] and started == sorted(started)  # one at a time, in order
    assert len({p.app_path for p in exp.points}) == 1
    # the plan first, a line per point, then the outcome
    assert f"experiment {exp.id}: 4 cells x 2 repeats = 8 points, 8 to run" in r.err
    label = [p.label for p in exp.points]  # (the order of a cell's options is the label's)
    assert f"[2/8] {label[1]} #1: failed (error: toyapp exits 3 on purpose)" in r.err
    assert f"[8/8] {label[7]} #2: failed" in r.err
    assert f"[7/8] {label[6]} #2: ok mAP=50.000% (run {exp.points[6].run})" in r.err
    assert f"experiment {exp.id}: 4 of 8 points ok" in r.err
    assert _one_error(r.err) == (
        f"error: 4 of 8 points of {exp.id} failed; the first, {label[1]} #1: failed "
        "(error: toyapp exits 3 on purpose)."
    )


def test_with_alternatives_run_different_closures(toy: Home) -> None:
    data2 = toy.recipes / "data" / "2.0.toml"
    data2.write_text(
        textwrap.dedent(DATA_TOML).lstrip().replace('"1.0"', '"2.0"').replace("42", "43")
    )
    before = _exp_ids(toy)
    r = toy("sweep", "toyapp", "--with", "data=data@1.0,data@2.0").ok()
    exp = _new_exp(toy, before)
    assert exp.status == "ok"
    assert [p.overrides for p in exp.points] == [{"data": "data@1.0"}, {"data": "data@2.0"}]
    paths = [p.app_path for p in exp.points]
    assert paths[0] != paths[1]
    for p, value in zip(exp.points, ("42", "43"), strict=True):
        assert p.run is not None and p.status == "ok"
        res = result_of(toy.runs / p.run)
        assert res["app_path"] == p.app_path and res["overrides"] == p.overrides
        assert f"toyapp: data {value}" in (toy.runs / p.run / "stdout.txt").read_text()
        assert f"  data={p.overrides['data']}: {p.app_path} (" in r.err
    assert "2 cells x 1 repeat = 2 points, 2 to run" in r.err
    # every closure is realised before the first point runs
    lines = r.err.splitlines()
    built = next(i for i, ln in enumerate(lines) if ln.endswith("-data-2.0") and " build " in ln)
    first = next(i for i, ln in enumerate(lines) if ln.startswith("[1/2] data=data@1.0 #1: ok"))
    assert built < first, r.err


def test_a_cell_that_does_not_build_fails_and_the_others_run(toy: Home) -> None:
    (toy.recipes / "data" / "3.0.toml").write_text(
        textwrap.dedent(DATA_TOML).lstrip().replace('"1.0"', '"3.0"')
        .replace('mkdir "$out"', 'echo data 3.0 does not build >&2; exit 1; mkdir "$out"')
    )  # fmt: skip
    runs_before, exps_before = toy.run_ids(), _exp_ids(toy)
    r = toy("sweep", "toyapp", "--with", "data=data@3.0,data@1.0", "--repeat", "2")
    assert r.code == 1, r
    exp = _new_exp(toy, exps_before)
    assert exp.status == "failed"
    assert [p.status for p in exp.points] == ["not-built", "ok"] * 2
    assert len(toy.run_ids() - runs_before) == 2  # no run for a closure that did not build
    for p in exp.points[::2]:
        assert p.run is None and p.error and "data-3.0" in p.error
    # the progress counts the points that run
    assert "[1/2] data=data@1.0 #1: ok" in r.err and "[2/2] data=data@1.0 #2: ok" in r.err
    assert "2 of 4 points of" in _one_error(r.err) and "not-built" in _one_error(r.err)

    # once its recipe builds, --resume runs the points that were not built, and only those
    (toy.recipes / "data" / "3.0.toml").write_text(
        textwrap.dedent(DATA_TOML).lstrip().replace('"1.0"', '"3.0"').replace("42", "3")
    )
    runs_before = toy.run_ids()
    r = toy("sweep", "--resume", exp.id).ok()
    assert "4 points, 2 to run" in r.err
    exp = record.find_experiment(toy.home, exp.id)
    assert exp.status == "ok" and {p.run for p in exp.points[::2]} == toy.run_ids() - runs_before
    for p in exp.points[::2]:
        assert p.run is not None and p.error is None
        assert "toyapp: data 3" in (toy.runs / p.run / "stdout.txt").read_text()


def test_dry_run_prints_the_plan_and_writes_nothing(toy: Home) -> None:
    runs_before, exps_before = toy.run_ids(), _exp_ids(toy)
    r = toy("sweep", "toyapp", "--arg", "flag=a,b", "--repeat", "3", "--dry-run").ok()
    assert r.out == ""
    lines = r.err.splitlines()
    assert lines[0].startswith("experiment exp-")
    assert lines[0].endswith(": 2 cells x 3 repeats = 6 points, 6 to run")
    assert lines[1].startswith("  flag=a: ") and lines[2].startswith("  flag=b: ")
    assert "-toyapp-1.0 (3 paths: all valid)" in lines[1]
    assert len(lines) == 3

    doc = toy("sweep", "toyapp", "--arg", "flag=a,b", "--json", "--dry-run").ok().json()
    assert doc["format"] == 1 and doc["status"] == "planned" and doc["app"] == "toyapp"
    assert doc["matrix"]["arg"] == {"flag": ["a", "b"]}
    assert [p["args"] for p in doc["points"]] == [["--flag", "a"], ["--flag", "b"]]
    assert all(p["status"] == "pending" and p["run"] is None for p in doc["points"])
    assert [c["label"] for c in doc["cells"]] == ["flag=a", "flag=b"]
    for cell, point in zip(doc["cells"], doc["points"], strict=True):
        assert cell["app_path"] == point["app_path"] == cell["plan"]["roots"][0]
        assert cell["plan"]["counts"]["valid"] == 3
    assert toy.run_ids() == runs_before and _exp_ids(toy) == exps_before


def test_jobs_for_an_accuracy_sweep_runs_points_side_by_side(toy: Home) -> None:
    before = _exp_ids(toy)
    r = toy(
        "sweep", "toyapp", "--arg", "flag=a,b,c,d", "--jobs", "2", "--json",
        "--", "--accuracy", "--sleep", "0.4",
    ).ok()  # fmt: skip
    exp = _new_exp(toy, before)
    assert r.json() == exp.to_json()
    assert exp.status == "ok" and exp.matrix["jobs"] == 2
    spans = []
    for p in exp.points:
        assert p.status == "ok" and p.run is not None
        res = result_of(toy.runs / p.run)
        assert res["args"][:3] == ["--accuracy", "--sleep", "0.4"]
        spans.append((res["started"], res["finished"]))
    # at most two at once, and some do run at once
    overlaps = [sum(1 for s, f in spans if s <= t < f) for t, _ in spans]
    assert max(overlaps) == 2, spans


@pytest.mark.parametrize("mode", [["--mode", "accuracy"], ["--mode=accuracy"]])
def test_jobs_takes_mode_accuracy_too(toy: Home, mode: list[str]) -> None:
    before = _exp_ids(toy)
    r = toy("sweep", "toyapp", "--arg", "flag=a,b", "--jobs", "3", "--dry-run", "--", *mode)
    assert r.code == 0, r
    assert _exp_ids(toy) == before


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["toyapp", "--with", "nosuch=x@1"], "--with nosuch=... matches no input in the closure"),
        (["toyapp", "--with", "data=data@9.9"], "data@9.9"),
        (["toyapp", "--arg", "threads="], "--arg threads= lists no value"),
        (["toyapp", "--arg", "threads=,"], "--arg threads=, lists no value"),
        (["toyapp", "--with", "data="], "'data=' is not NAME=SPEC"),
        (["toyapp", "--with", "data=,"], "--with data=, lists no value"),
        (["toyapp", "--arg", "flag=a,a"], "lists a twice"),
        (["toyapp", "--arg", "flag"], "is not OPTION=V1,V2"),
        (["toyapp", "--repeat", "0"], "--repeat 0: give 1 or more"),
        (["toyapp", "--jobs", "2", "--arg", "flag=a,b"], "for accuracy sweeps only"),
        (["toyapp", "--jobs", "0"], "--jobs 0: give 1 or more"),
        (["--resume", "exp-latest", "toyapp"], "--resume continues an experiment as it was"),
        (["--resume", "exp-latest", "--with", "data=data@1.0"], "--resume continues"),
        (["--resume", "exp-latest", "--arg", "flag=a"], "--resume continues"),
        (["--resume", "exp-latest", "--repeat", "2"], "--resume continues"),
        (["--resume", "exp-latest", "--", "--flag", "a"], "--resume continues"),
        (["--resume", "exp-nosuch"], "There is no experiment with the id 'exp-nosuch'"),
        (["data@1.0"], 'data@1.0 is a build recipe; mlpkg run starts apps (kind = "app")'),
        (["nosuchapp"], "nosuchapp"),
        (["toyapp", "--arg", "out=x,y"], "toyapp@1.0 sets --out itself"),
        (["toyapp", "--", "--data", "x"], "toyapp@1.0 sets --data itself"),
        (["toyapp", "--arg", "flag=a", "--", "--flag", "b"], "--flag is both swept"),
        ([], "Give the app to sweep"),
        (["--", "--flag", "a"], "Give the app to sweep"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    toy: Home, args: list[str], says: str
) -> None:
    runs_before, exps_before = toy.run_ids(), _exp_ids(toy)
    r = toy("sweep", *args)
    assert r.code == 2, r
    assert says in _one_error(r.err), r
    assert toy.run_ids() == runs_before and _exp_ids(toy) == exps_before


# -- progress, interruption and --resume ------------------------------------------------


def test_a_running_point_is_recorded_as_running(toy: Home) -> None:
    before = _exp_ids(toy)
    proc = toy.popen("sweep", "toyapp", "--arg", "sleep=1")
    doc, run_dir = _wait_for("the point to run", _running_point(toy, before, 0), proc)
    assert doc["status"] == "running" and doc["mlpkg_pid"] == proc.pid
    res = result_of(run_dir)
    assert res["status"] == "running" and res["args"] == ["--sleep", "1"]
    assert isinstance(res["pid"], int)
    listed = {e["id"]: e for e in toy("runs", "experiments", "--json").ok().json()}
    assert listed[doc["id"]]["status"] == "running"  # its sweep holds the lock
    # a second mlpkg may not resume an experiment that is being run
    r = toy("sweep", "--resume", doc["id"])
    assert r.code == 2 and f"being run by another mlpkg (process {proc.pid})" in _one_error(r.err)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, (out, err)
    doc = _doc(toy, doc["id"])
    assert doc["status"] == "ok" and doc["points"][0]["status"] == "ok"
    assert result_of(run_dir)["status"] == "ok"


def test_an_interrupted_sweep_resumes_where_it_stopped(toy: Home) -> None:
    before = _exp_ids(toy)
    proc = toy.popen("sweep", "toyapp", "--arg", "sleep=0.8,0.2", "--repeat", "3")
    # the first two points have finished; the third runs (its app sleeps 0.8 s)
    doc, run_dir = _wait_for("point 2 to run", _running_point(toy, before, 2), proc)
    assert [p["status"] for p in doc["points"][:2]] == ["ok", "ok"]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    exp_id = doc["id"]
    assert f"`mlpkg sweep --resume {exp_id}` continues it" in err
    doc = _doc(toy, exp_id)
    assert doc["status"] == "interrupted"
    statuses = [p["status"] for p in doc["points"]]
    assert statuses == ["ok", "ok", "interrupted", "pending", "pending", "pending"]
    assert result_of(run_dir)["status"] == "interrupted"
    assert "toyapp: interrupted" in (run_dir / "stdout.txt").read_text()
    done = [p["run"] for p in doc["points"][:2]]

    recorded = _doc(toy, exp_id)
    r = toy("sweep", "--resume", exp_id, "--dry-run").ok()
    assert f"experiment {exp_id}: 2 cells x 3 repeats = 6 points, 4 to run" in r.err
    assert _doc(toy, exp_id) == recorded  # a dry run changes nothing

    runs_before = toy.run_ids()
    r = toy("sweep", "--resume", exp_id).ok()
    assert f"experiment {exp_id}: 2 cells x 3 repeats = 6 points, 4 to run" in r.err
    assert "[4/4] sleep=0.2 #3: ok" in r.err
    assert "  sleep=0.8: " in r.err and ", 1 done)" in r.err
    made = toy.run_ids() - runs_before
    assert len(made) == 4  # the two points that succeeded are not run again
    exp = record.find_experiment(toy.home, exp_id)
    assert exp.status == "ok"
    line = next(x for x in toy("runs", "experiments").ok().out.splitlines() if exp_id in x)
    assert line.split()[1:] == ["ok", "6/6", "ok", "2", "cells", "toyapp"] and all(
        p.status == "ok" for p in exp.points
    )
    assert [p.run for p in exp.points[:2]] == done
    assert {p.run for p in exp.points[2:]} == made
    assert [p.args for p in exp.points] == [["--sleep", "0.8"], ["--sleep", "0.2"]] * 3

    runs_before = toy.run_ids()
    r = toy("sweep", "--resume", exp_id).ok()  # nothing left to run
    assert "6 points, 0 to run" in r.err and toy.run_ids() == runs_before


def test_a_killed_sweep_resumes_and_reruns_the_killed_point(toy: Home) -> None:
    before = _exp_ids(toy)
    proc = toy.popen("sweep", "toyapp", "--arg", "sleep=0.2,1")
    doc, run_dir = _wait_for("point 1 to run", _running_point(toy, before, 1), proc)
    proc.kill()
    proc.communicate(timeout=10)
    exp_id = doc["id"]
    doc = _doc(toy, exp_id)  # mlpkg had no chance to finish its record
    assert doc["status"] == "running" and doc["mlpkg_pid"] == proc.pid
    assert [p["status"] for p in doc["points"]] == ["ok", "running"]
    killed, done = doc["points"][1]["run"], doc["points"][0]["run"]
    assert run_dir.name == killed and result_of(run_dir)["status"] == "running"
    report = run_dir / "harness.json"  # the parent-death signal took the app down
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not report.exists():
        time.sleep(0.02)
    assert json.loads(report.read_text())["status"] == "interrupted"
    listed = {e["id"]: e for e in toy("runs", "experiments", "--json").ok().json()}
    assert listed[exp_id]["status"] == "died"  # running, but nobody holds its lock
    assert (listed[exp_id]["ok"], listed[exp_id]["points"], listed[exp_id]["cells"]) == (1, 2, 2)

    runs_before = toy.run_ids()
    r = toy("sweep", "--resume", exp_id[:-2])  # (a unique prefix)
    made = toy.run_ids() - runs_before
    assert r.code == 0, r
    assert "2 points, 1 to run" in r.err
    assert len(made) == 1
    exp = record.find_experiment(toy.home, exp_id)
    assert exp.status == "ok"
    assert exp.points[0].run == done and exp.points[1].run in made and killed not in made
    assert exp.points[1].run != killed


def test_resume_reruns_a_point_whose_closure_changed_or_whose_run_is_gone(
    toy: Home, tmp_path: Path
) -> None:
    before = _exp_ids(toy)
    toy("sweep", "toyapp", "--arg", "flag=a,b").ok()
    exp = _new_exp(toy, before)
    old = [p.run for p in exp.points]
    old_path = exp.points[0].app_path

    # the data recipe changes (an overlay of it, searched first): a new closure
    overlay = tmp_path / "overlay"
    (overlay / "data").mkdir(parents=True)
    (overlay / "data" / "1.0.toml").write_text(
        textwrap.dedent(DATA_TOML).lstrip().replace("42", "44")
    )
    runs_before = toy.run_ids()
    r = toy("sweep", "--resume", exp.id, "--recipes", str(overlay)).ok()
    assert "2 points, 2 to run" in r.err
    made = toy.run_ids() - runs_before
    assert len(made) == 2
    exp = record.find_experiment(toy.home, exp.id)
    assert exp.status == "ok" and {p.run for p in exp.points} == made
    new_path = exp.points[0].app_path
    assert new_path != old_path and exp.points[1].app_path == new_path
    for p in exp.points:
        assert p.run is not None and p.run not in old
        assert result_of(toy.runs / p.run)["app_path"] == new_path
        assert "toyapp: data 44" in (toy.runs / p.run / "stdout.txt").read_text()

    # the same recipes again: nothing to run
    runs_before = toy.run_ids()
    toy("sweep", "--resume", exp.id, "--recipes", str(overlay)).ok()
    assert toy.run_ids() == runs_before

    # a point whose run directory is gone is run again, and only that one
    kept, gone = exp.points[0].run, exp.points[1].run
    assert gone is not None
    for entry in sorted((toy.runs / gone).iterdir()):
        entry.unlink()
    (toy.runs / gone).rmdir()
    r = toy("sweep", "--resume", exp.id, "--recipes", str(overlay)).ok()
    assert "2 points, 1 to run" in r.err
    exp = record.find_experiment(toy.home, exp.id)
    assert exp.points[0].run == kept and exp.points[1].run not in (gone, None)
    assert exp.status == "ok"


def test_ctrl_c_stops_the_sweep_whatever_the_app_exits_with(toy: Home) -> None:
    """An app that handles SIGINT and exits 1 was still interrupted: the point says so
    and the sweep stops there (one Ctrl-C, not one per point)."""
    before = _exp_ids(toy)
    proc = toy.popen("sweep", "toyapp", "--arg", "sleep=5,0.1", "--", "--interrupt-exit", "1")
    doc, run_dir = _wait_for("point 0 to run", _running_point(toy, before, 0), proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    doc = _doc(toy, doc["id"])
    assert [p["status"] for p in doc["points"]] == ["interrupted", "pending"]
    assert doc["status"] == "interrupted"
    assert result_of(run_dir)["status"] == "interrupted"
    assert result_of(run_dir)["exit_code"] == 1


def test_sigterm_stops_a_parallel_sweep_and_its_records_say_so(toy: Home) -> None:
    """--jobs starts apps from worker threads; SIGTERM to mlpkg still reaches them, and
    the experiment ends interrupted (exit 130), with no point left running."""
    before = _exp_ids(toy)
    proc = toy.popen("sweep", "toyapp", "--arg", "flag=a,b,c,d", "--jobs", "2", "--",
                     "--accuracy", "--sleep", "5")  # fmt: skip
    doc, _ = _wait_for("point 0 to run", _running_point(toy, before, 0), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    doc = _doc(toy, doc["id"])
    assert doc["status"] == "interrupted"
    statuses = [p["status"] for p in doc["points"]]
    assert "running" not in statuses and "interrupted" in statuses
    for point in doc["points"]:
        if point["run"]:
            assert result_of(toy.runs / point["run"])["status"] == "interrupted"


def test_a_sweep_interrupted_while_building_is_recorded_and_resumes(
    toy: Home, tmp_path: Path
) -> None:
    overlay = tmp_path / "slow"
    (overlay / "data").mkdir(parents=True)
    slow = DATA_TOML.replace("mkdir", "sleep 30; mkdir").replace("echo 42", "echo 45")
    (overlay / "data" / "1.0.toml").write_text(textwrap.dedent(slow).lstrip())
    before = _exp_ids(toy)
    proc = toy.popen("sweep", "toyapp", "--recipes", str(overlay), "--arg", "flag=a,b")
    exp_id = _wait_for("the experiment", lambda: sorted(_exp_ids(toy) - before), proc)[0]
    time.sleep(1)  # the build has started
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert f"`mlpkg sweep --resume {exp_id}` continues it" in err
    doc = _doc(toy, exp_id)
    assert doc["status"] == "interrupted"
    assert [p["status"] for p in doc["points"]] == ["pending", "pending"]


def test_resuming_an_experiment_with_no_points_is_bad_input(toy: Home) -> None:
    exp_id = record.new_experiment_id("toyapp")
    exp = record.Experiment(exp_id, record.experiments_dir(toy.home) / exp_id, "toyapp",
                            {"with": {}, "arg": {}, "repeat": 1, "args": []}, [])  # fmt: skip
    exp.save()
    r = toy("sweep", "--resume", exp_id)
    assert r.code == 2 and "has no points; there is nothing to resume" in _one_error(r.err)
