"""``mlpkg sweep``: run an app over a matrix of inputs and options (mlpkg.experiments).

This module parses the options, prints the plan (and stops there with ``--dry-run``),
shows one progress display over the whole matrix, and turns the outcome into the exit
code: 0 when every point succeeded, 1 when one failed or could not be built (the sweep
still ran the others), 130 when interrupted, 2 for bad input (before anything ran).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import click

from mlpkg.cli.context import App, common
from mlpkg.env import runs
from mlpkg.errors import BadInput, RunError
from mlpkg.experiments import record
from mlpkg.experiments.matrix import parse_matrix
from mlpkg.experiments.record import Experiment, Point
from mlpkg.experiments.sweep import (
    SweepPlan,
    check_jobs,
    plan_sweep,
    realise_cells,
    run_points,
)


@click.command("sweep")
@click.argument("spec", required=False)
@click.option(
    "--arg",
    "arg_items",
    multiple=True,
    metavar="OPTION=V1,V2",
    help="Values of an app option, one point each (repeatable).",
)
@click.option("--repeat", type=int, default=1, show_default=True, help="Runs per cell.")
@click.option(
    "--jobs",
    type=int,
    default=None,
    help="Points run at once (default 1); above 1 only for accuracy sweeps.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and stop.")
@click.option(
    "--resume",
    "resume_ref",
    metavar="EXP",
    help="Continue an experiment: run its points that have no successful run of "
    "their closure and arguments.",
)
@common
def sweep_cmd(
    app: App,
    spec: str | None,
    arg_items: tuple[str, ...],
    repeat: int,
    jobs: int | None,
    dry_run: bool,
    resume_ref: str | None,
) -> None:
    """Run the app SPEC once per point of a matrix: every combination of the --with
    alternatives (NAME=SPEC1,SPEC2) and --arg values (OPTION=V1,V2), --repeat times. The
    app's fixed options go after `--`. Every point is an ordinary run; the experiment is
    recorded in $MLPKG_HOME/experiments/<id>/experiment.json."""
    fixed = list(click.get_current_context().meta.get("mlpkg.command", []))
    if resume_ref is not None:
        exp = _resumed(app, resume_ref, spec, arg_items, repeat, fixed)
    else:
        exp = _new(app, spec, arg_items, repeat, fixed)
    jobs = jobs if jobs is not None else int(exp.matrix.get("jobs", 1))
    check_jobs(exp, jobs)
    app.overrides.clear()  # each cell has its own
    with contextlib.ExitStack() as held:
        if resume_ref is not None and not dry_run:  # refused before planning; a new
            held.enter_context(record.lock(exp))  # experiment has no directory before it
        sweep = plan_sweep(app, exp, resume=resume_ref is not None)
        _print_plan(app, sweep, dry_run)
        if dry_run:
            return
        exp.matrix["jobs"] = jobs
        if resume_ref is None:
            held.enter_context(record.lock(exp))
        realise_cells(app, sweep)
        with _Display(app, len(sweep.todo())) as display:
            run_points(app, sweep, display, jobs)
    _report(app, exp)


def _new(
    app: App, spec: str | None, arg_items: tuple[str, ...], repeat: int, fixed: list[str]
) -> Experiment:
    if spec is None:
        raise BadInput(
            "Give the app to sweep, e.g. `mlpkg sweep retinanet-offline+synthetic "
            "--with onnxruntime=onnxruntime@1.17.3,onnxruntime@1.22.1`."
        )
    if spec.startswith("-"):
        raise BadInput(f"Give the app first; the app's own options (like {spec}) go after `--`.")
    matrix = parse_matrix(app.with_items, arg_items, repeat, fixed)
    exp_id = record.new_experiment_id(app.package_of(spec))
    return Experiment(
        id=exp_id,
        dir=record.experiments_dir(app.home) / exp_id,
        app=spec,
        matrix=matrix.to_json(),
        points=matrix.points(),
    )


def _resumed(
    app: App, ref: str, spec: str | None, arg_items: tuple[str, ...], repeat: int, fixed: list[str]
) -> Experiment:
    if spec is not None or arg_items or app.with_items or repeat != 1 or fixed:
        raise BadInput(
            "--resume continues an experiment as it was recorded; give no app, "
            "--with, --arg, --repeat or options after --.",
            field="--resume",
        )
    exp = record.find_experiment(app.home, ref)
    if not exp.points:
        raise BadInput(f"The experiment {exp.id} has no points; there is nothing to resume.",
                       file=str(exp.dir / record.EXPERIMENT_FILE))  # fmt: skip
    return exp


def _print_plan(app: App, sweep: SweepPlan, dry_run: bool) -> None:
    exp = sweep.experiment
    todo = sweep.todo()
    cells = len(sweep.cells)
    repeat = exp.matrix.get("repeat", 1)
    if app.json and dry_run:
        app.emit(
            {
                **exp.to_json(),
                "cells": [
                    {
                        "cell": c.cell,
                        "label": c.label,
                        "app_path": c.app_path,
                        "plan": c.plan.to_json(),
                    }
                    for c in sweep.cells
                ],
            }
        )
        return
    app.info(
        f"experiment {exp.id}: {_count(cells, 'cell')} x {_count(repeat, 'repeat')} = "
        f"{_count(len(exp.points), 'point')}, {len(todo)} to run"
    )
    for c in sweep.cells:
        counts = {k: v for k, v in c.plan.counts().items() if v and k != "valid"}
        make = ", ".join(f"{v} to {k}" for k, v in sorted(counts.items())) or "all valid"
        done = sum(1 for p in c.points if p.status == "ok")
        resumed = f", {done} done" if done else ""
        app.info(f"  {c.label}: {c.app_path} ({len(c.plan.nodes)} paths: {make}{resumed})")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


class _Display:
    """One progress display over the points to run: a rich bar on a terminal, else a line
    per point."""

    def __init__(self, app: App, total: int) -> None:
        self.app, self.total, self.done = app, total, 0
        self.bar: Any = None
        self.task: Any = None
        self.lock = threading.Lock()

    def __enter__(self) -> _Display:
        if self.app.interactive and self.total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task("sweep", total=self.total)
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def started(self, point: Point) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=_name(point))

    def finished(self, point: Point) -> None:  # called from --jobs' workers too
        with self.lock:
            self.done += 1
            line = f"[{self.done}/{self.total}] {_name(point)}: {_outcome(self.app, point)}"
            if self.bar is not None:
                self.bar.console.print(line, highlight=False, markup=False)
                self.bar.update(self.task, advance=1)
            else:
                self.app.info(line)


def _name(point: Point) -> str:
    return f"{point.label} #{point.repeat + 1}"


def _outcome(app: App, point: Point) -> str:
    if point.status != "ok" or point.run is None:
        run = f" (run {point.run})" if point.run else ""
        return f"{point.status}" + (f" ({point.error})" if point.error else "") + run
    try:
        headline = runs.headline(runs.read_record(runs.runs_dir(app.home) / point.run).result)
    except BadInput:
        headline = ""
    return f"ok {headline} (run {point.run})".replace("  ", " ")


def _report(app: App, exp: Experiment) -> None:
    failed = [p for p in exp.points if p.status not in ("ok", "pending")]
    if app.json:
        app.emit(exp.to_json())
    app.info(
        f"experiment {exp.id}: {len(exp.points) - len(failed)} of {len(exp.points)} "
        f"points ok; `mlpkg runs compare {exp.id}`, `mlpkg runs report {exp.id} -o "
        "report.html`"
    )
    if failed:
        first = failed[0]
        raise RunError(
            f"{len(failed)} of {len(exp.points)} points of {exp.id} failed; the first, "
            f"{_name(first)}: {first.status}" + (f" ({first.error})" if first.error else "") + ".",
            reported=app.json,
        )


COMMANDS = [sweep_cmd]
