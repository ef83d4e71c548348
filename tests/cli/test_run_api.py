"""``mlpkg.env.run`` without the command line: what a sweep or a cluster executor calls.

One plan, realised once, run twice with different arguments by :func:`run_app`; each run
has its own directory and record, as ``mlpkg run`` makes them. Uses the ``toy`` home of
tests/cli/conftest.py (toyapp already realised there).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from mlpkg.env import runs
from mlpkg.env.run import RunRequest, run_app, run_status
from tests.toy_app import Home, app_path, result_of


@pytest.mark.parametrize(
    ("code", "status"),
    [(0, "ok"), (2, "bad-input"), (1, "failed"), (3, "failed"), (130, "interrupted"),
     (128 + signal.SIGTERM, "interrupted"), (-signal.SIGINT, "interrupted"),
     (-signal.SIGHUP, "interrupted"), (-signal.SIGKILL, "failed")],
)  # fmt: skip
def test_run_status_of_an_exit_status(code: int, status: str) -> None:
    assert run_status(code) == status


def test_a_sweep_runs_one_realised_plan_twice(
    toy: Home, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from mlpkg.recipes.index import RecipeIndex, default_dirs
    from mlpkg.resolver.plan import make_plan
    from mlpkg.resolver.provider import IndexProvider
    from mlpkg.resolver.spec import parse_spec
    from mlpkg.store.store import Store

    for key, value in toy.env_overrides().items():
        monkeypatch.setenv(key, value)
    before = toy.run_ids()
    started: list[tuple[str, Path]] = []
    with Store(toy.home) as store:
        provider = IndexProvider(RecipeIndex(default_dirs([], toy.home / "recipes")))
        plan = make_plan(provider, [parse_spec("toyapp")], store)
        assert not plan.pending()  # the toy home realised it
        results = [
            run_app(store, plan, RunRequest("toyapp", ["--flag", flag], show=False),
                    on_start=lambda run_id, run_dir: started.append((run_id, run_dir)))
            for flag in ("a", "b")
        ]  # fmt: skip
    assert "toyapp" not in capfd.readouterr().out  # show=False: the output is only logged
    assert [r.status for r in results] == ["ok", "ok"]
    assert started == [(r.id, r.dir) for r in results]
    assert {r.dir for r in results} == {toy.runs / n for n in toy.run_ids() - before}
    for result, flag in zip(results, ("a", "b"), strict=True):
        assert result.exited.code == 0
        assert f"toyapp: flag {flag}" in (result.dir / "stdout.txt").read_text()
        record = result_of(result.dir)
        assert record == result.record
        assert record["args"] == ["--flag", flag] and record["app"] == "toyapp"
        assert record["app_path"] == app_path(toy) and record["accuracy"] == {"mAP": 0.5}
        assert runs.read_record(result.dir).status == "ok"
