"""``mlpkg runs list|experiments|show|compare|report|export``: the records of past
``mlpkg run`` invocations (mlpkg.env.runs), and of sweeps (mlpkg.experiments).

``compare REF...`` prints the comparison (mlpkg.experiments.compare) of the runs and
experiments referred to (mlpkg.experiments.select), the first being the base; ``--json``
prints the comparison document. ``export [REF...] --csv FILE|- | --json`` writes one row
per run (mlpkg.experiments.export); with no REF, every run. Both exit 0 whatever the runs'
status (a failed run is shown with its ``error:`` line); a bad reference or a record of
another format is BadInput (exit 2). ``report`` is mlpkg.cli.report_cmds's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from mlpkg.cli.context import App, common
from mlpkg.cli.report_cmds import runs_report_cmd
from mlpkg.env import runs
from mlpkg.errors import BadInput


@click.group("runs")
def runs_group() -> None:
    """The records of past runs ($MLPKG_HOME/runs)."""


@runs_group.command("list")
@common
def runs_list_cmd(app: App) -> None:
    """List the runs, oldest first."""
    records, problems = runs.list_runs(app.home)
    _left_out(app, problems)
    if app.json:
        app.emit([_summary(r) for r in records])
        return
    width = max((len(r.id) for r in records), default=0)
    for r in records:
        s = _summary(r)
        mode = s["mode"] or "-"
        app.out(f"{r.id:<{width}}  {s['status']:<11}  {mode:<15}  {s['headline']}")


def _left_out(app: App, problems: list[str]) -> None:
    """A warning for each record a list leaves out: on stderr, in --json mode too (the
    list is short of it), hidden by -q."""
    for problem in problems:
        if not app.quiet:
            click.echo(f"warning: {problem} (left out)", err=True)


def _summary(r: runs.RunRecord) -> dict[str, Any]:
    res = r.result
    return {
        "id": r.id, "app": res.get("app"), "status": r.status, "scenario": res.get("scenario"),
        "mode": res.get("mode"), "headline": runs.headline(res), "started": res.get("started"),
        "output": str(r.dir),
    }  # fmt: skip


@runs_group.command("experiments")
@common
def runs_experiments_cmd(app: App) -> None:
    """List the experiments (`mlpkg sweep`), oldest first."""
    from mlpkg.experiments import record

    found, problems = record.list_experiments(app.home)
    _left_out(app, problems)
    rows = [_experiment_summary(e) for e in found]
    if app.json:
        app.emit(rows)
        return
    width = max((len(r["id"]) for r in rows), default=0)
    for r in rows:
        cells = f"{r['cells']} cell{'s' * (r['cells'] != 1)}"
        app.out(f"{r['id']:<{width}}  {r['status']:<11}  {r['ok']}/{r['points']} ok  "
                f"{cells}  {r['app']}")  # fmt: skip


def _experiment_summary(exp: Any) -> dict[str, Any]:
    from mlpkg.experiments import record

    return {
        "id": exp.id, "app": exp.app, "status": record.status_of(exp),
        "points": len(exp.points), "ok": sum(p.status == "ok" for p in exp.points),
        "cells": len(exp.cells()), "created": exp.created, "dir": str(exp.dir),
    }  # fmt: skip


@runs_group.command("show")
@click.argument("run_id", metavar="ID")
@common
def runs_show_cmd(app: App, run_id: str) -> None:
    """Show one run (ID, a unique prefix of it, or 'latest'). A record that is not valid
    is one error naming its result.json (exit 2)."""
    record = runs.find_run(app.home, run_id)
    res = record.result
    if app.json:
        app.emit(res)
        return
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(res.get("started") or 0))
    app.out(f"run       {record.id}")
    app.out(f"app       {res.get('app')}  ({res.get('app_path')})")
    app.out(f"status    {record.status} (exit {res.get('exit_code')})")
    if res.get("error"):
        app.out(f"error     {res['error']}")
    app.out(f"started   {started}, {res.get('duration_s', '?')} s")
    app.out(f"output    {record.dir}")
    for key in ("scenario", "mode"):
        if res.get(key):
            app.out(f"{key:<9} {res[key]}")
    summary = res.get("summary")
    if isinstance(summary, dict) and summary.get("line"):
        app.out(summary["line"])
    if runs.headline(res):
        app.out(runs.headline(res))
    nodes = (res.get("lock") or {}).get("node") or []
    app.out(f"closure   {len(nodes)} paths (mlpkg.lock in the output directory)")


@runs_group.command("compare")
@click.argument("refs", nargs=-1, required=True, metavar="RUN|EXP...")
@common
def runs_compare_cmd(app: App, refs: tuple[str, ...]) -> None:
    """Compare runs and experiments, against the first: figures (median and min–max of
    repeats, a verdict only beyond the spread), settings and machine that differ, failures,
    and the closure diff. RUN is a run id, a unique prefix, 'latest' or a run directory;
    EXP an experiment id (exp-..., 'exp-latest') or directory."""
    from mlpkg.experiments.compare import compare, format_text
    from mlpkg.experiments.select import select

    doc = compare(select(app.home, refs))
    if app.json:
        app.emit(doc)
        return
    for line in format_text(doc):
        app.out(line)


@runs_group.command("export")
@click.argument("refs", nargs=-1, metavar="[RUN|EXP...]")
@click.option("--csv", "csv_file", metavar="FILE", help="Write CSV to FILE ('-': stdout).")
@common
def runs_export_cmd(app: App, refs: tuple[str, ...], csv_file: str | None) -> None:
    """One row per run (figures, versions, status, the sweep cell), as CSV (--csv FILE,
    or - for stdout) or JSON (--json); with no RUN|EXP, every run."""
    from mlpkg.experiments import export
    from mlpkg.experiments.select import all_runs, select

    if (csv_file is None) == (not app.json):
        raise BadInput("Give one of --csv FILE (or - for stdout) and --json.", field="--csv")
    if refs:
        groups = select(app.home, refs)
    else:
        groups, problems = all_runs(app.home)
        for problem in problems:
            app.warn(f"{problem} (left out)")
    table = export.rows(groups)
    if csv_file is None:
        app.emit(table)
    elif csv_file == "-":
        export.to_csv(table, sys.stdout)
    else:
        _write_csv(Path(csv_file), table)
        app.info(f"{len(table)} runs written to {csv_file}")


def _write_csv(file: Path, table: list[dict[str, Any]]) -> None:
    from mlpkg.experiments import export

    try:
        with file.open("w", encoding="utf-8", newline="") as f:
            export.to_csv(table, f)
    except OSError as e:
        raise BadInput(f"Cannot write {file}: {e.strerror}.", field="--csv") from None


runs_group.add_command(runs_report_cmd)

COMMANDS = [runs_group]
