"""``mlpkg run`` and ``mlpkg runs list|show``: an app started in its activated closure, with a
run directory and a ``result.json`` that unifies what happened.

Hermetic: the app is a tiny standard-library package (``toyapp``) in the recipe directory,
its one data input is a small build, and the ``python`` external recipe finds this
machine's interpreter (through a private bin directory first on PATH, so that no shim is
involved). Every ``mlpkg`` here is a real subprocess; the app is a real grandchild.
One home is shared by the module's tests (building it once); tests that need an empty home
make their own.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpkg.env import runs
from tests.toy_app import Home, app_path, result_of


@pytest.fixture
def fresh(tmp_path: Path, toy: Home) -> Iterator[Home]:
    """An empty home using the same recipes as ``toy``."""
    h = Home(tmp_path / "home", toy.recipes, toy.bindir)
    try:
        yield h
    finally:
        h.close()


# -- one successful run ----------------------------------------------------------------------


def test_run_starts_the_app_in_its_closure_and_records_the_run(toy: Home) -> None:
    before = toy.run_ids()
    r = toy.sub("run", "toyapp").ok()
    assert "toyapp: data 42" in r.out and "toyapp: done" in r.out, r
    run_dir = toy.new_run(before)
    assert run_dir.parent == toy.home / "runs" and run_dir.is_dir() and not run_dir.is_symlink()
    # The app ran from its store path, not from the recipe directory.
    store_app = toy.home / "store" / app_path(toy)
    code_line = next(x for x in r.out.splitlines() if x.startswith("toyapp: code in "))
    code_dir = Path(code_line.removeprefix("toyapp: code in "))
    assert code_dir.is_relative_to(store_app), (code_dir, store_app)
    v = f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert code_dir.relative_to(store_app) == Path("lib", v, "site-packages", "toyapp")

    assert "toyapp: data 42" in (run_dir / "stdout.txt").read_text()
    lock_text = (run_dir / "mlpkg.lock").read_text()
    res = result_of(run_dir)
    assert res["format"] == 1 and res["id"] == run_dir.name
    assert res["status"] == "ok" and res["exit_code"] == 0
    assert res["app"] == "toyapp" and res["app_path"] == app_path(toy)
    assert res["output"] == str(run_dir)
    assert res["finished"] >= res["started"] and res["duration_s"] >= 0
    data_path = Path(toy("show", "--json", "data@1.0").ok().json()["path"])
    assert res["command"] == ["python3", "-m", "toyapp", "--out", str(run_dir),
                              "--data", str(data_path)]  # fmt: skip
    assert res["args"] == []
    assert res["lock"] == tomllib.loads(lock_text)
    assert res["lock"]["roots"] == [app_path(toy)] and res["lock"]["specs"] == ["toyapp"]
    assert {n["name"] for n in res["lock"]["node"]} == {"toyapp", "data", "python"}
    assert res["machine"]["cpus"] == os.cpu_count() and res["machine"]["system"]
    assert res["accuracy"] == {"mAP": 0.5} and res["mode"] == "AccuracyOnly"


def test_the_app_path_holds_the_code_and_a_command_template(toy: Home) -> None:
    store_app = toy.home / "store" / app_path(toy)
    manifest = json.loads((store_app / "share" / "mlpkg" / "app.json").read_text())
    assert manifest["command"] == ["python3", "-m", "toyapp", "--out", "${output}",
                                   "--data", "${data}"]  # fmt: skip
    v = f"python{sys.version_info.major}.{sys.version_info.minor}"
    installed = store_app / "lib" / v / "site-packages" / "toyapp"
    assert sorted(os.listdir(installed)) == ["__init__.py", "__main__.py"]


@pytest.mark.parametrize("separator", [False, True], ids=["plain", "after --"])
def test_arguments_after_the_app_are_passed_on(toy: Home, separator: bool) -> None:
    before = toy.run_ids()
    extra = ["--", "--flag", "x"] if separator else ["--flag", "x"]
    r = toy.sub("run", "toyapp", *extra).ok()
    assert "toyapp: flag x" in r.out, r
    res = result_of(toy.new_run(before))
    assert res["args"] == ["--flag", "x"]
    assert res["command"][-2:] == ["--flag", "x"]


def test_output_directory_is_used_and_linked_from_runs(toy: Home, tmp_path: Path) -> None:
    out = tmp_path / "my-run"
    before = toy.run_ids()
    toy("run", "--output", str(out), "toyapp").ok()
    link = toy.new_run(before)
    assert link.is_symlink() and link.resolve() == out.resolve()
    assert {"result.json", "stdout.txt", "mlpkg.lock", "harness.json"} <= set(os.listdir(out))
    res = result_of(out)
    assert res["id"] == link.name and res["status"] == "ok"
    assert str(out) in res["command"]
    shown = toy("runs", "show", "--json", link.name).ok().json()
    assert shown == res


def test_a_non_empty_output_directory_is_refused(toy: Home, tmp_path: Path) -> None:
    out = tmp_path / "used"
    out.mkdir()
    (out / "old.txt").write_text("an older result")
    before = toy.run_ids()
    r = toy("run", "--output", str(out), "toyapp")
    assert r.code == 2, r
    assert "not empty" in r.err and str(out) in r.err, r
    assert "toyapp: data" not in r.out
    assert os.listdir(out) == ["old.txt"]
    assert toy.run_ids() == before


def test_json_prints_result_json(toy: Home) -> None:
    before = toy.run_ids()
    r = toy.sub("run", "--json", "toyapp").ok()
    doc = r.json()  # the app's own lines are not mixed in
    run_dir = toy.new_run(before)
    assert doc == result_of(run_dir)
    assert doc["status"] == "ok" and doc["accuracy"] == {"mAP": 0.5}
    assert "toyapp: data 42" in (run_dir / "stdout.txt").read_text()


# -- failures ----------------------------------------------------------------------------------


def test_an_app_that_fails_fails_the_run_and_keeps_its_directory(toy: Home) -> None:
    before = toy.run_ids()
    r = toy("run", "toyapp", "--exit", "1")
    assert r.code == 1, r
    run_dir = toy.new_run(before)
    assert run_dir.name in r.err and "failed" in r.err, r
    res = result_of(run_dir)
    assert res["status"] == "failed" and res["exit_code"] == 1
    assert "toyapp: data 42" in (run_dir / "stdout.txt").read_text()
    assert (run_dir / "mlpkg.lock").is_file()


def test_an_app_refusing_its_input_is_bad_input(toy: Home) -> None:
    before = toy.run_ids()
    r = toy("run", "toyapp", "--exit", "2")
    assert r.code == 2, r
    res = result_of(toy.new_run(before))
    assert res["status"] == "bad-input" and res["exit_code"] == 2


def test_a_build_recipe_is_not_an_app(toy: Home) -> None:
    before = toy.run_ids()
    r = toy("run", "data@1.0")
    assert r.code == 2, r
    errors = [x for x in r.err.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "data@1.0 is a build recipe" in errors[0], r
    assert 'kind = "app"' in errors[0]
    assert "Traceback" not in r.err
    assert toy.run_ids() == before


def test_a_non_app_is_refused_before_anything_is_built(fresh: Home) -> None:
    """`mlpkg run` plans first and acts second: a spec that is no app builds nothing."""
    r = fresh("run", "data@1.0")
    assert r.code == 2, r
    store = fresh.home / "store"
    made = sorted(p for p in os.listdir(store) if not p.startswith(".")) if store.is_dir() else []
    assert made == [], f"mlpkg run built {made} before refusing a non-app"


def test_a_placeholder_that_is_no_input_names_run_command(fresh: Home) -> None:
    r = fresh("run", "badapp")
    assert r.code == 2, r
    assert "run.command" in r.err and "${nosuch}" in r.err, r
    assert "never" not in r.out
    # Nothing half-made is left for `runs list` and `runs show latest` to stumble on.
    assert fresh.run_ids() == set(), "the refused run left a run directory without result.json"
    listed = fresh("runs", "list")
    assert listed.code == 0 and listed.err == "", listed


def test_a_program_not_in_the_closure_fails_the_run_and_records_it(fresh: Home) -> None:
    r = fresh("run", "noexe")
    assert r.code == 1, r
    assert "no-such-program-for-mlpkg-tests" in r.err, r
    for run_dir in (fresh.runs / name for name in fresh.run_ids()):
        res = result_of(run_dir)
        assert res["status"] != "running", f"{run_dir}: mlpkg returned, the run still 'running'"


# -- runs list / show --------------------------------------------------------------------------


def test_runs_list_and_show(fresh: Home) -> None:
    toy = fresh
    toy("run", "toyapp").ok()
    (ok_id,) = toy.run_ids()
    before = toy.run_ids()
    toy("run", "toyapp", "--exit", "1")
    failed_id = toy.new_run(before).name

    listed = toy("runs", "list", "--json").ok().json()
    by_id = {r["id"]: r for r in listed}
    assert sorted(by_id) == sorted([ok_id, failed_id]) and len(listed) == 2
    assert by_id[ok_id]["status"] == "ok" and by_id[failed_id]["status"] == "failed"
    assert by_id[ok_id]["app"] == "toyapp" and by_id[ok_id]["mode"] == "AccuracyOnly"
    assert by_id[ok_id]["headline"] == "mAP=50.000%"
    assert by_id[ok_id]["output"] == str(toy.runs / ok_id)

    text = toy("runs", "list").ok()
    line = next(x for x in text.out.splitlines() if x.startswith(ok_id))
    assert "ok" in line and "mAP=50.000%" in line, text
    assert "warning" not in text.err, text

    shown = toy("runs", "show", "--json", failed_id).ok().json()
    assert shown == result_of(toy.runs / failed_id)
    prefix = toy("runs", "show", "--json", ok_id[:-2]).ok().json()
    assert prefix["id"] == ok_id
    out = toy("runs", "show", ok_id).ok().out
    assert ok_id in out and "status    ok (exit 0)" in out and "mAP=50.000%" in out, out
    assert app_path(toy) in out and "closure   3 paths" in out, out


def test_runs_show_latest(fresh: Home) -> None:
    fresh("run", "toyapp", "--flag", "first").ok()
    time.sleep(1.1)  # run ids carry the time to the second
    before = fresh.run_ids()
    fresh("run", "toyapp", "--flag", "second").ok()
    second = fresh.new_run(before).name
    assert fresh("runs", "show", "--json", "latest").ok().json()["id"] == second
    assert second in fresh("runs", "show", "latest").ok().out


def test_run_ids_sort_in_the_order_runs_start() -> None:
    """`runs list` is oldest first and `runs show latest` is the newest by sorting ids:
    runs started within the same second must sort in order too."""
    ids = [runs.new_run_id("toyapp", now=1_800_000_000 + i / 50) for i in range(20)]
    assert sorted(ids) == ids


def test_runs_show_an_unknown_id_is_bad_input(toy: Home) -> None:
    r = toy("runs", "show", "no-such-run")
    assert r.code == 2, r
    assert "no-such-run" in r.err and "mlpkg runs list" in r.err, r
    r = toy("runs", "show", "2")  # a prefix of every id: ambiguous
    assert r.code == 2, r


def test_runs_list_of_a_home_without_runs_is_empty(fresh: Home) -> None:
    assert fresh("runs", "list", "--json").ok().json() == []
    assert fresh("runs", "show", "latest").code == 2


# -- locks, profiles, interruption -------------------------------------------------------------


def test_a_lock_runs_the_same_app_path_in_an_empty_home(toy: Home, tmp_path: Path) -> None:
    lock = tmp_path / "toyapp.lock"
    toy("lock", "toyapp", "-o", str(lock)).ok()
    empty_recipes = tmp_path / "no-recipes"
    empty_recipes.mkdir()
    other = Home(tmp_path / "other-home", empty_recipes, toy.bindir)
    before = other.run_ids()
    r = other.sub("run", "--lock", str(lock)).ok()
    assert "toyapp: data 42" in r.out, r
    res = result_of(other.new_run(before))
    assert res["status"] == "ok" and res["app_path"] == app_path(toy)
    assert res["lock"]["roots"] == [app_path(toy)]
    assert str(other.home / "store") in res["command"][-1]


def test_a_run_is_a_profile_generation_and_the_same_run_adds_none(fresh: Home) -> None:
    fresh("run", "toyapp").ok()
    profiles = {p["profile"]: p for p in fresh("profile", "list", "--json").ok().json()}
    assert "run-toyapp" in profiles and profiles["run-toyapp"]["specs"] == ["toyapp"]
    history = fresh("profile", "history", "--profile", "run-toyapp", "--json").ok().json()
    assert len(history) == 1
    fresh("run", "toyapp", "--flag", "again").ok()
    again = fresh("profile", "history", "--profile", "run-toyapp", "--json").ok().json()
    assert again == history
    # The profile keeps the closure from the collector.
    fresh("gc").ok()
    assert (fresh.home / "store" / app_path(fresh)).is_dir()


def test_ctrl_c_interrupts_the_app_and_keeps_the_run(toy: Home) -> None:
    before = toy.run_ids()
    proc = toy.popen("run", "toyapp", "--sleep", "30")
    deadline = time.monotonic() + 30
    run_dir = None
    while time.monotonic() < deadline:
        made = sorted(toy.run_ids() - before)
        if made and "toyapp: ready" in _read(toy.runs / made[0] / "stdout.txt"):
            run_dir = toy.runs / made[0]
            break
        if proc.poll() is not None:
            pytest.fail(f"mlpkg exited {proc.returncode} early: {proc.communicate()}")
        time.sleep(0.02)
    assert run_dir is not None, "the app never said it was ready"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)  # to mlpkg only: the app runs in its own session
    out, err = proc.communicate(timeout=15)
    assert time.monotonic() - sent < 5
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err and run_dir.name in err, err
    res = result_of(run_dir)
    assert res["status"] == "interrupted" and res["exit_code"] == 130
    assert "toyapp: interrupted" in (run_dir / "stdout.txt").read_text()
    listed = {r["id"]: r for r in toy("runs", "list", "--json").ok().json()}
    assert listed[run_dir.name]["status"] == "interrupted"


def _read(file: Path) -> str:
    try:
        return file.read_text()
    except OSError:
        return ""


TAMPER_TOML = """
name = "tamper"
version = "1.0"
kind = "app"
[inputs]
data = "data@1.0"
[run]
command = ["sh", "-c", '''
{ echo tampered >> "$1/value"; } 2> "$2/write.err" || echo write-refused >> "$2/said"
chmod 0666 "$1/value" 2> "$2/chmod.err" || echo chmod-refused >> "$2/said"
mount -o remount,rw "$(dirname "$1")" 2> /dev/null || echo remount-refused >> "$2/said"
mount -o remount,rw,bind "$(dirname "$1")" 2> /dev/null || echo remount-refused >> "$2/said"
echo run-dir-writable >> "$2/said"
''', "tamper", "${data}", "${output}"]
"""


@pytest.mark.parametrize("isolation", ["namespace", "bubblewrap"])
def test_the_store_is_read_only_to_a_run_even_as_root(
    toy: Home, isolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlpkg.store import sandbox

    if isolation not in sandbox.available():
        pytest.skip(f"{isolation} does not work here")
    if isolation == "bubblewrap":  # what runs use where mlpkg's namespaces cannot be made
        monkeypatch.setenv("MLPKG_SANDBOX", "bubblewrap")
    (toy.recipes / "tamper").mkdir(exist_ok=True)
    (toy.recipes / "tamper" / "1.0.toml").write_text(TAMPER_TOML.lstrip())
    data = next(p for p in (toy.home / "store").iterdir() if p.name.endswith("-data-1.0"))
    os.chmod(data / "value", 0o644) if os.geteuid() == 0 else None  # modes never stop root
    try:
        before = (data / "value").read_bytes()
        ids = toy.run_ids()
        toy.sub("run", "tamper").ok()
        run_dir = toy.new_run(ids)
        said = (run_dir / "said").read_text().split()
        assert said == ["write-refused", "chmod-refused", "remount-refused", "remount-refused",
                        "run-dir-writable"]  # fmt: skip
        assert "Read-only file system" in (run_dir / "write.err").read_text()
        assert (data / "value").read_bytes() == before
    finally:
        os.chmod(data / "value", 0o444)
    assert toy.sub("verify", "--check-contents").code == 0
