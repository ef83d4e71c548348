"""``mlpkg runs list|show``: the records of past ``mlpkg run`` invocations
(mlpkg.env.runs)."""

from __future__ import annotations

import time
from typing import Any

import click

from mlpkg.cli.context import App, common
from mlpkg.env import runs


@click.group("runs")
def runs_group() -> None:
    """The records of past runs ($MLPKG_HOME/runs)."""


@runs_group.command("list")
@common
def runs_list_cmd(app: App) -> None:
    """List the runs, oldest first."""
    records, problems = runs.list_runs(app.home)
    for problem in problems:  # on stderr, in --json mode too: the list is short of a run
        if not app.quiet:
            click.echo(f"warning: {problem} (left out)", err=True)
    if app.json:
        app.emit([_summary(r) for r in records])
        return
    width = max((len(r.id) for r in records), default=0)
    for r in records:
        s = _summary(r)
        mode = s["mode"] or "-"
        app.out(f"{r.id:<{width}}  {s['status']:<11}  {mode:<15}  {s['headline']}")


def _summary(r: runs.RunRecord) -> dict[str, Any]:
    res = r.result
    return {
        "id": r.id, "app": res.get("app"), "status": r.status, "scenario": res.get("scenario"),
        "mode": res.get("mode"), "headline": runs.headline(res), "started": res.get("started"),
        "output": str(r.dir),
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


COMMANDS = [runs_group]
