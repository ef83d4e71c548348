"""References to runs and experiments → groups of run records
(mlpkg.experiments.select), on a home with real runs of the toy app (tests/toy_app.py)
made by ``mlpkg sweep``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpkg.errors import BadInput, FormatVersionError
from mlpkg.experiments import record
from mlpkg.experiments.select import Group, all_runs, select
from tests.cli_support import python_bin
from tests.toy_app import Home, write_recipes


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """A home with one sweep of toyapp: 2 cells (flag=a, flag=b) x 2 repeats, all ok."""
    root = tmp_path_factory.mktemp("select")
    write_recipes(root / "recipes")
    h = Home(root / "home", root / "recipes", python_bin(root / "bin"))
    h("sweep", "toyapp", "--arg", "flag=a,b", "--repeat", "2").ok()
    try:
        yield h
    finally:
        h.close()


def _exp(h: Home) -> record.Experiment:
    """The fixture's experiment (some tests sweep again: it is the oldest)."""
    return record.find_experiment(h.home, record.experiment_ids(h.home)[0])


def _copy(h: Home, where: Path, change: Any = None) -> Path:
    """The experiment of ``h``, copied to ``where`` (an experiment directory given by
    path), after ``change(doc)``."""
    doc = json.loads((_exp(h).dir / record.EXPERIMENT_FILE).read_text())
    if change is not None:
        change(doc)
    where.mkdir(parents=True, exist_ok=True)
    (where / record.EXPERIMENT_FILE).write_text(json.dumps(doc))
    return where


def test_an_experiment_gives_a_group_per_cell_in_matrix_order(toy: Home) -> None:
    exp = _exp(toy)
    groups = select(toy.home, [exp.id])
    assert [g.label for g in groups] == ["flag=a", "flag=b"]
    assert [g.cell for g in groups] == [{"arg.flag": "a"}, {"arg.flag": "b"}]
    assert all(g.experiment == exp.id and g.problems == [] and g.pending == 0 for g in groups)
    # the repeats of each cell, in repeat order: points 0 and 2, then 1 and 3
    runs_of = {p.index: p.run for p in exp.points}
    assert [[r.id for r in g.records] for g in groups] == [
        [runs_of[0], runs_of[2]],
        [runs_of[1], runs_of[3]],
    ]
    for g, flag in zip(groups, "ab", strict=True):
        for r in g.records:
            assert r.status == "ok" and r.result["args"] == ["--flag", flag]
            assert f"toyapp: flag {flag}" in (r.dir / "stdout.txt").read_text()


def test_an_experiment_by_prefix_latest_or_path(toy: Home) -> None:
    exp = _exp(toy)
    by_id = select(toy.home, [exp.id])
    assert select(toy.home, [exp.id[:-3]]) == by_id
    latest = record.experiment_ids(toy.home)[-1]
    assert select(toy.home, ["exp-latest"]) == select(toy.home, [latest])
    assert select(toy.home, [str(exp.dir)]) == by_id


def test_runs_alone_and_in_the_order_given(toy: Home) -> None:
    exp = _exp(toy)
    first, last = exp.points[0].run, exp.points[-1].run
    assert first is not None and last is not None
    newest = max(toy.run_ids())
    groups = select(toy.home, [last, str(toy.runs / first), "latest", exp.id])
    assert [g.label for g in groups] == [last, first, newest, "flag=a", "flag=b"]
    alone = groups[0]
    assert alone == Group(last, None, {}, alone.records)
    assert [r.id for r in alone.records] == [last]
    assert select(toy.home, [last[:-2]])[0].records[0].id == last  # a unique prefix


def test_all_runs_are_groups_of_one(toy: Home) -> None:
    groups, problems = all_runs(toy.home)
    assert problems == []
    ids = {p.run for p in _exp(toy).points}
    assert ids <= {g.label for g in groups}
    assert all(len(g.records) == 1 and g.experiment is None for g in groups)


@pytest.mark.parametrize("ref", ["nosuchrun", "exp-nosuch", "20991231", "exp-2099"])
def test_an_unknown_reference_is_bad_input(toy: Home, ref: str) -> None:
    with pytest.raises(BadInput) as e:
        select(toy.home, [ref])
    assert f"with the id {ref!r}" in e.value.message


def test_an_ambiguous_run_prefix_is_bad_input(toy: Home) -> None:
    with pytest.raises(BadInput, match=r"There are \d+ runs with the id"):
        select(toy.home, ["2"])


def test_no_reference_is_bad_input(toy: Home) -> None:
    with pytest.raises(BadInput, match="at least one run or experiment"):
        select(toy.home, [])


def test_pending_points_are_counted_and_failed_starts_are_problems(
    toy: Home, tmp_path: Path
) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["status"] = "interrupted"
        a2, b2 = doc["points"][2], doc["points"][3]  # the second repeat of each cell
        a2.update(run=None, status="pending")
        b2.update(run=None, status="not-built", error="error: data@9 does not build")

    groups = select(toy.home, [str(_copy(toy, tmp_path / "exp-x", change))])
    assert [(len(g.records), g.pending) for g in groups] == [(1, 1), (1, 0)]
    assert groups[0].problems == []
    assert groups[1].problems == ["point 3 (not-built): error: data@9 does not build"]


def test_a_point_whose_run_directory_is_gone_is_a_problem(toy: Home) -> None:
    toy("sweep", "toyapp", "--arg", "flag=x", "--repeat", "2").ok()
    exp = record.find_experiment(toy.home, "exp-latest")
    gone = exp.points[1].run
    assert gone is not None
    shutil.rmtree(toy.runs / gone)
    [group] = select(toy.home, [exp.id])
    assert group.label == "flag=x" and group.pending == 0
    assert [r.id for r in group.records] == [exp.points[0].run]
    [problem] = group.problems
    assert problem.startswith(f"point 1, run {gone}: ")
    assert str(toy.runs / gone / "result.json") in problem


def test_a_run_of_a_newer_result_format_is_refused(toy: Home, tmp_path: Path) -> None:
    exp = _exp(toy)
    source = exp.points[0].run
    assert source is not None
    copy = toy.runs / f"{source[:-6]}f0f0f2"  # another valid run id
    shutil.copytree(toy.runs / source, copy)
    try:
        result = json.loads((copy / "result.json").read_text())
        (copy / "result.json").write_text(json.dumps({**result, "format": 2}))

        def change(doc: dict[str, Any]) -> None:
            doc["points"][0]["run"] = copy.name

        where = _copy(toy, tmp_path / "exp-y", change)
        for ref in (str(where), str(copy)):  # in an experiment or alone
            with pytest.raises(FormatVersionError) as e:
                select(toy.home, [ref])
            assert f"{copy / 'result.json'} has result format 2" in e.value.message
    finally:
        shutil.rmtree(copy)


def test_an_experiment_with_no_points_is_bad_input(toy: Home, tmp_path: Path) -> None:
    where = _copy(toy, tmp_path / "exp-z", lambda doc: doc.update(points=[]))
    with pytest.raises(BadInput) as e:
        select(toy.home, [str(where)])
    assert "has no points; there is nothing to compare" in e.value.message
    assert e.value.file == str(where.resolve() / record.EXPERIMENT_FILE)


def test_an_experiment_of_a_newer_format_is_refused(toy: Home, tmp_path: Path) -> None:
    where = _copy(toy, tmp_path / "exp-w", lambda doc: doc.update(format=2))
    with pytest.raises(FormatVersionError, match="has experiment format 2"):
        select(toy.home, [str(where)])


def test_a_failed_run_is_a_record_of_its_group(toy: Home) -> None:
    assert toy("sweep", "toyapp", "--arg", "exit=0,3").code == 1
    exp = record.find_experiment(toy.home, "exp-latest")
    ok, failed = select(toy.home, [exp.id])
    assert (ok.label, failed.label) == ("exit=0", "exit=3")
    assert [r.status for r in ok.records] == ["ok"]
    assert [r.status for r in failed.records] == ["failed"]
    assert failed.records[0].result["error"] == "error: toyapp exits 3 on purpose"
    assert failed.problems == [] and failed.pending == 0
