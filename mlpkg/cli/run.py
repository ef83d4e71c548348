"""``mlpkg run`` (an app in its activated closure) and ``mlpkg runs list|show``.

``run`` plans first and acts second, like every other command: resolve the app (or read a
lockfile), realise the closure, record it as the current generation of the profile
``run-<app>`` (which also keeps it from the garbage collector), then start the app's
``[run]`` command in the closure's environment with a fresh run directory, and unify what
happened in ``result.json`` (mlpkg.env.runs).
"""

from __future__ import annotations

import os
import re
import signal
import time
import tomllib
from pathlib import Path
from typing import Any

import click

from mlpkg.cli.context import App, common
from mlpkg.env import runs
from mlpkg.env.launch import Exited, launch
from mlpkg.errors import BadInput, Interrupted, RecipeError, RunError
from mlpkg.store.fs import write_atomic
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
        plan, expected = to_plan(lock, app.store, app.provider.detector,
                                 allow_external_drift=drift, trusted=app.index)  # fmt: skip
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
            realise_plan(plan, app.store, reporter, expected, keep_going=True)
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


def _check_output(output: Path | None) -> None:
    """Refuse an ``--output`` that cannot be a fresh run directory (before building)."""
    if output is None or not output.exists():
        return
    if not output.is_dir() or any(output.iterdir()):
        raise BadInput(
            f"The output directory {output} is not empty; give a new one, so that no "
            "result is mixed with an older one.",
            field="--output",
        )


def _check_args(drv: Any, extra: list[str]) -> None:
    """Refuse an option the app's command sets itself (e.g. --scenario of retinanet-offline):
    the record would name one app and hold another's run."""
    fixed = {part for part in drv.recipe.run.command if part.startswith("--")}
    for arg in extra:
        option = arg.split("=", 1)[0]
        if option in fixed:
            raise BadInput(
                f"{drv.recipe.spec} sets {option} itself (its [run] command); leave it out, "
                "or run the app that has the value you want.",
                package=drv.name,
                field=option,
            )


def _replay_source(path: Path) -> tuple[Path, list[str] | None]:
    """``--lock`` takes a lockfile, or a run directory / its result.json: then the run's
    lock and its arguments, so the experiment is repeated exactly."""
    result = path / runs.RESULT_FILE if path.is_dir() else path
    if result.suffix != ".json":
        return path, None
    from mlpkg.documents import load_json

    try:
        doc = load_json(result.read_text(encoding="utf-8"), str(result))
        args = [str(a) for a in doc["args"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInput(f"Cannot read the run record {result}: {e}.", file=str(result)) from None
    return result.parent / "mlpkg.lock", args


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
    from mlpkg.env.profiles import BrokenGeneration, Profile

    profile = Profile(app.store, f"run-{name}")
    with profile.locked():
        try:
            current = profile.current()
        except BrokenGeneration:  # a crash's leftover: the run makes a good one after it
            current = None
        if current is None or current.roots != list(plan.roots):
            profile.add_generation([spec], list(plan.roots))
    env = activation(app.store, plan.roots, os.environ).apply(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # the app's output reaches stdout.txt as it happens
    return env


def _status(code: int) -> str:
    if code == 0:
        return "ok"
    if code == 2:
        return "bad-input"
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    if code in {130, *(128 + s for s in stops), *(-s for s in stops)}:
        return "interrupted"
    return "failed"


def _lock_table(app: App, plan: Any, spec: str, run_dir: Path) -> dict[str, Any]:
    from mlpkg.resolver.lockmake import lock_of_plan

    text = lock_of_plan(app.store, [spec], plan, realised=True).dumps()
    write_atomic(run_dir / "mlpkg.lock", text)  # `run --lock DIR` must never read half of it
    return tomllib.loads(text)


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("spec", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="The run directory (default: $MLPKG_HOME/runs/<run-id>).")  # fmt: skip
@click.option("--lock", "lock_file", type=click.Path(exists=True, path_type=Path),
              help="Run exactly the closure of this lockfile (`mlpkg lock APP`), or of a run "
                   "directory (its mlpkg.lock, with its arguments).")  # fmt: skip
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
    if lock_file is not None:
        lock_file, replayed = _replay_source(lock_file)
        extra = extra or replayed or []
    _check_output(output)
    plan, spec = _plan(app, spec, lock_file, allow_external_drift)
    drv = plan.node(plan.roots[0]).drv
    _check_args(drv, extra)
    env = _activate(app, plan, drv.name, spec)
    run_id, run_dir = _run_dir(app, drv.name, output)
    argv = [*command_of(app, drv, run_dir), *extra]
    env.update(MLPKG_RUN_ID=run_id, MLPKG_RUN_DIR=str(run_dir))
    started = time.time()
    result: dict[str, Any] = {
        "format": runs.RESULT_FORMAT, "id": run_id, "status": "running", "exit_code": None,
        "app": spec, "app_path": str(drv.path), "command": argv, "args": extra,
        "overrides": dict(app.overrides), "lockfile": str(lock_file) if lock_file else None,
        "started": started, "output": str(run_dir), "machine": runs.machine(),
        "lock": _lock_table(app, plan, spec, run_dir),
    }  # fmt: skip
    runs.write_json(run_dir / runs.RESULT_FILE, result)
    app.info(f"run {run_id}: {drv.recipe.spec} in {run_dir}")
    try:
        exited = launch(argv, env, run_dir, show=not app.json,
                        on_start=lambda pid: _record_pid(run_dir, result, pid),
                        readonly=[app.store.dir, app.home / "envs"])  # fmt: skip
    except RunError as e:  # the program could not start: the record says so
        result.update(status="failed", exit_code=None, finished=time.time(), error=e.message)
        runs.write_json(run_dir / runs.RESULT_FILE, result)
        raise
    _finish(app, result, run_dir, exited, started)


def _record_pid(run_dir: Path, result: dict[str, Any], pid: int) -> None:
    """The app's pid and mlpkg's, so a list can tell a run that died from a running one."""
    result.update(pid=pid, mlpkg_pid=os.getpid())
    runs.write_json(run_dir / runs.RESULT_FILE, result)


def _finish(
    app: App, result: dict[str, Any], run_dir: Path, exited: Exited, started: float
) -> None:
    finished, code = time.time(), exited.code
    result.update(status=_status(code), exit_code=code, finished=finished, pid=exited.pid,
                  duration_s=round(finished - started, 3), error=exited.error)  # fmt: skip
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
    reason = f" ({exited.error})" if exited.error else ""
    if status == "bad-input":
        raise BadInput(f"Run {run_id}: the app refused its input{reason}; {where}.")
    if status != "ok":
        raise RunError(f"Run {run_id} failed (exit {code}){reason}; {where}.")
    app.info(f"run {run_id}: ok; results in {run_dir}")


COMMANDS = [run_cmd]
