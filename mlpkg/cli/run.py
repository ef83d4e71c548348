"""``mlpkg run`` (an app in its activated closure) and ``mlpkg runs list|show``.

``run`` plans first and acts second, like every other command: resolve the app (or read a
lockfile), realise the closure, record it as the current generation of the profile
``run-<app>`` (which also keeps it from the garbage collector), then start the app's
``[run]`` command in the closure's environment with a fresh run directory, and unify what
happened in ``result.json`` (mlpkg.env.runs).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import FrameType
from typing import Any

import click

from mlpkg.cli.context import App, common
from mlpkg.env import runs
from mlpkg.errors import BadInput, Interrupted, RecipeError, RunError
from mlpkg.store.path import StorePath

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _plan(app: App, spec: str | None, lock_file: Path | None, drift: bool) -> tuple[Any, str]:
    """The realised plan of the app and the spec it was asked as."""
    from mlpkg.cli.lock import read_lock
    from mlpkg.resolver.lockfile import check_valid_paths, to_plan
    from mlpkg.resolver.realise import realise_plan

    expected: dict[StorePath, str] = {}
    if lock_file is not None:
        if app.overrides:
            raise BadInput("--with changes a resolution; a lock is not resolved again.")
        lock = read_lock(lock_file)
        if len(lock.roots) != 1:
            raise BadInput(
                f"{lock_file} locks {len(lock.roots)} packages; mlpkg run needs the lock of "
                "one app (`mlpkg lock APP`).",
                file=str(lock_file),
            )
        if spec is not None and spec not in lock.specs:
            raise BadInput(f"{lock_file} locks {lock.specs[0]}, not {spec}.", file=str(lock_file))
        plan, expected = to_plan(lock, app.store, app.provider.detector, allow_external_drift=drift)
        check_valid_paths(plan, app.store, expected)
        spec = lock.specs[0]
    elif spec is None:
        raise BadInput("Give an app to run, e.g. `mlpkg run retinanet-offline+synthetic`.")
    else:
        plan = app.plan([spec])
    _check_app(app, plan.node(plan.roots[0]).drv)
    if plan.pending():
        reporter = app.reporter()
        try:
            realise_plan(plan, app.store, reporter, expected)
        finally:
            reporter.close()
    return plan, spec


def _check_app(app: App, drv: Any) -> None:
    """Refuse, before anything is built, what is not an app or whose command is wrong."""
    if drv.kind != "app" or drv.recipe.run is None:
        raise BadInput(
            f'{drv.recipe.spec} is a {drv.kind} recipe; mlpkg run starts apps (kind = "app").',
            package=drv.name,
        )
    command_of(app, drv, Path("."))  # every ${placeholder} names an input


def command_of(app: App, drv: Any, run_dir: Path) -> list[str]:
    """The app's argv with ``${input}``, ``${out}`` and ``${output}`` filled in."""
    values = {k: str(app.store.real_path(p)) for k, p in drv.inputs.items()}
    values["out"] = str(app.store.real_path(drv.path))
    values["output"] = str(run_dir)

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise RecipeError(
                f"{drv.recipe.spec}: field run.command: ${{{key}}} is neither an input of the "
                f"app ({', '.join(sorted(drv.inputs)) or 'none'}) nor out or output.",
                field="run.command",
                package=drv.name,
            )
        return values[key]

    return [_PLACEHOLDER.sub(fill, part) for part in drv.recipe.run.command]


def _run_dir(app: App, name: str, output: Path | None) -> tuple[str, Path]:
    """A fresh run id and its directory (``output`` when given, linked from runs/)."""
    root = runs.runs_dir(app.home)
    root.mkdir(parents=True, exist_ok=True)
    run_id = runs.new_run_id(name)
    if output is None:
        run_dir = root / run_id
        run_dir.mkdir()
        return run_id, run_dir
    run_dir = output.absolute()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"Cannot make the output directory {output}: {e.strerror}.",
                       field="--output") from None  # fmt: skip
    if any(run_dir.iterdir()):
        raise BadInput(
            f"The output directory {output} is not empty; give a new one, so that no "
            "result is mixed with an older one.",
            field="--output",
        )
    os.symlink(run_dir, root / run_id)
    return run_id, run_dir


def _activate(app: App, plan: Any, name: str, spec: str) -> dict[str, str]:
    """Record the closure as the profile run-<app>'s current generation; its environment."""
    from mlpkg.env.activation import activation
    from mlpkg.env.profiles import Profile

    profile = Profile(app.store, f"run-{name}")
    with profile.locked():
        current = profile.current()
        if current is None or current.roots != list(plan.roots):
            profile.add_generation([spec], list(plan.roots))
    env = activation(app.store, plan.roots, os.environ).apply(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # the app's output reaches stdout.txt as it happens
    return env


def _spawn(argv: list[str], env: dict[str, str], run_dir: Path, show: bool) -> int:
    """Run ``argv`` in its own session; tee its stdout; forward SIGINT/SIGTERM to it."""
    exe = shutil.which(argv[0], path=env.get("PATH"))
    if exe is None:
        raise RunError(f"The app's command {argv[0]} is not in its closure's PATH.")
    with open(run_dir / "stdout.txt", "wb") as log:
        proc = subprocess.Popen(
            [exe, *argv[1:]], env=env, stdout=subprocess.PIPE, start_new_session=True
        )

        def forward(signum: int, _frame: FrameType | None) -> None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                if show:
                    sys.stdout.buffer.write(line)
                    sys.stdout.flush()
            return proc.wait()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _status(code: int) -> str:
    if code == 0:
        return "ok"
    if code == 2:
        return "bad-input"
    if code in (130, -signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGTERM):
        return "interrupted"
    return "failed"


def _lock_table(app: App, plan: Any, spec: str, run_dir: Path) -> dict[str, Any]:
    from mlpkg.cli.lock import lock_of_plan

    text = lock_of_plan(app, [spec], plan, realised=True).dumps()
    (run_dir / "mlpkg.lock").write_text(text, encoding="utf-8")
    return tomllib.loads(text)


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("spec", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="The run directory (default: $MLPKG_HOME/runs/<run-id>).")  # fmt: skip
@click.option("--lock", "lock_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Run exactly the closure of this lockfile (`mlpkg lock APP`).")  # fmt: skip
@click.option("--allow-external-drift", is_flag=True,
              help="With --lock: accept other versions of external tools.")  # fmt: skip
@common
def run_cmd(app: App, spec: str | None, args: tuple[str, ...], output: Path | None,
            lock_file: Path | None, allow_external_drift: bool) -> None:  # fmt: skip
    """Run the app SPEC (e.g. retinanet-offline+synthetic) in its closure. Options that are
    not mlpkg's go to the app (e.g. --accuracy --count 50 --time 10), as does everything
    after `--`."""
    ctx = click.get_current_context()
    extra = [*args, *ctx.meta.get("mlpkg.command", [])]
    if spec is not None and spec.startswith("-"):  # an option of the app, not an app
        if lock_file is None:
            raise BadInput(f"Give the app first, then its options: `mlpkg run APP {spec} ...`.")
        spec, extra = None, [spec, *extra]
    plan, spec = _plan(app, spec, lock_file, allow_external_drift)
    drv = plan.node(plan.roots[0]).drv
    env = _activate(app, plan, drv.name, spec)
    run_id, run_dir = _run_dir(app, drv.name, output)
    argv = [*command_of(app, drv, run_dir), *extra]
    env.update(MLPKG_RUN_ID=run_id, MLPKG_RUN_DIR=str(run_dir))
    started = time.time()
    result: dict[str, Any] = {
        "format": runs.RESULT_FORMAT, "id": run_id, "status": "running", "exit_code": None,
        "app": spec, "app_path": str(drv.path), "command": argv, "args": extra,
        "started": started, "output": str(run_dir), "machine": runs.machine(),
        "lock": _lock_table(app, plan, spec, run_dir),
    }  # fmt: skip
    runs.write_json(run_dir / runs.RESULT_FILE, result)
    app.info(f"run {run_id}: {drv.recipe.spec} in {run_dir}")
    try:
        code = _spawn(argv, env, run_dir, show=not app.json and not app.quiet)
    except RunError as e:  # the program could not start: the record says so
        result.update(status="failed", exit_code=None, finished=time.time(), error=e.message)
        runs.write_json(run_dir / runs.RESULT_FILE, result)
        raise
    _finish(app, result, run_dir, code, started)


def _finish(app: App, result: dict[str, Any], run_dir: Path, code: int, started: float) -> None:
    finished = time.time()
    result.update(status=_status(code), exit_code=code, finished=finished,
                  duration_s=round(finished - started, 3))  # fmt: skip
    report = runs.read_app_report(run_dir)
    if report is not None:
        if report.get("status") in ("failed", "interrupted") and result["status"] == "ok":
            result["status"] = report["status"]
        for key in runs.REPORT_KEYS:
            if key in report:
                result[key] = report[key]
        result["versions"] = {k: v for k, v in report.items() if k.endswith("_version")}
    runs.write_json(run_dir / runs.RESULT_FILE, result)
    if app.json:
        app.emit(result)
    status, run_id = result["status"], result["id"]
    where = f"the run directory {run_dir} keeps its logs"
    if status == "interrupted":
        raise Interrupted(f"Run {run_id} was interrupted; {where}.")
    if status == "bad-input":
        raise BadInput(f"Run {run_id}: the app refused its input (exit {code}); {where}.")
    if status != "ok":
        raise RunError(f"Run {run_id} failed (exit {code}); {where}.")
    app.info(f"run {run_id}: ok; results in {run_dir}")


@click.group("runs")
def runs_group() -> None:
    """The records of past runs ($MLPKG_HOME/runs)."""


@runs_group.command("list")
@common
def runs_list_cmd(app: App) -> None:
    """List the runs, oldest first."""
    records, problems = runs.list_runs(app.home)
    for problem in problems:
        app.info(f"warning: {problem}")
    if app.json:
        app.emit([_summary(r) for r in records])
        return
    for r in records:
        s = _summary(r)
        app.out(f"{r.id}  {s['status']:<11}  {s['mode'] or '-':<11}  {s['headline']}")


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
    """Show one run (ID, a unique prefix of it, or 'latest')."""
    record = runs.find_run(app.home, run_id)
    res = record.result
    if app.json:
        app.emit(res)
        return
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(res.get("started") or 0))
    app.out(f"run       {record.id}")
    app.out(f"app       {res.get('app')}  ({res.get('app_path')})")
    app.out(f"status    {record.status} (exit {res.get('exit_code')})")
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
    nodes = res.get("lock", {}).get("node", [])
    app.out(f"closure   {len(nodes)} paths (mlpkg.lock in the output directory)")


COMMANDS = [run_cmd, runs_group]
