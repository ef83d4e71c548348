"""``mlpkg run``: an app in its activated closure.

``run`` plans first and acts second, like every other command: resolve the app (or read a
lockfile) and realise the closure; then :func:`mlpkg.env.run.run_app` records it as the
current generation of the profile ``run-<app>``, starts the app's ``[run]`` command in a
fresh run directory and unifies what happened in ``result.json`` (mlpkg.env.runs). This
module parses the options, prints, and turns the run's status into the exit code.
"""

from __future__ import annotations

from pathlib import Path

import click

from mlpkg.cli.context import App, common
from mlpkg.env.run import RunRequest, RunResult, check_output, replay_source, run_app
from mlpkg.errors import BadInput, Interrupted, RunError


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
        lock_file, replayed = replay_source(lock_file)
        extra = extra or replayed or []
    check_output(output)
    plan, spec = app.realise_app(spec, lock_file, allow_external_drift)
    request = RunRequest(spec, extra, output, dict(app.overrides), lock_file, show=not app.json)
    drv = plan.node(plan.roots[0]).drv
    result = run_app(app.store, plan, request,
                     on_start=lambda run_id, run_dir: app.info(
                         f"run {run_id}: {drv.recipe.spec} in {run_dir}"))  # fmt: skip
    _report(app, result)


def _report(app: App, result: RunResult) -> None:
    """Print how the run ended; an error (its exit code) unless it is ok."""
    if app.json:
        app.emit(result.record)
    status, run_id, code = result.status, result.id, result.exited.code
    where = f"the run directory {result.dir} keeps its logs"
    if status == "interrupted":
        raise Interrupted(f"Run {run_id} was interrupted; {where}.")
    error = result.exited.error
    reason = f" ({error})" if error else ""
    if status == "bad-input":
        raise BadInput(f"Run {run_id}: the app refused its input{reason}; {where}.")
    if status != "ok":
        raise RunError(f"Run {run_id} failed (exit {code}){reason}; {where}.")
    app.info(f"run {run_id}: ok; results in {result.dir}")


COMMANDS = [run_cmd]
