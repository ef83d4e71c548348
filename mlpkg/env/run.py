"""Running an app: its ``[run]`` command, once, in its realised closure.

:func:`run_app` is what ``mlpkg run`` calls (and what a sweep or a cluster executor is to
call), given the store, a realised plan whose root is an app, and a :class:`RunRequest`:

1. record the closure as the current generation of the profile ``run-<app>`` (which also
   keeps it from the garbage collector) and compute its environment (:func:`activate`);
2. make a fresh run directory (:func:`make_run_dir`);
3. fill in the app's command template (:func:`command_of`);
4. write ``result.json`` (status ``running``) with the lock of the closure
   (``mlpkg.lock`` beside it), start the app (:func:`mlpkg.env.launch.launch`), and
   rewrite the record when it ends: the run status of its exit status
   (:func:`run_status`) and the app's own report (:func:`finish_record`).

Steps 1 to 3 and the lock are :func:`prepare_run`, which uses the store; step 4 is
:meth:`PreparedRun.start`, which does not, and may run in another thread.

The record's format and the run directory's layout are :mod:`mlpkg.env.runs`'s. Nothing
here prints or picks an exit code: the caller reads :attr:`RunResult.status`. The checks
a caller makes before building anything (:func:`check_app`, :func:`check_output`,
:func:`check_args`) and the plan of a lock or a past run (:func:`plan_of_lock`,
:func:`replay_source`) are here too, so that every front end refuses the same things.
"""

from __future__ import annotations

import os
import re
import signal
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpkg.env import runs
from mlpkg.env.launch import Exited, launch
from mlpkg.errors import BadInput, RecipeError, RunError
from mlpkg.store.fs import write_atomic

if TYPE_CHECKING:
    from mlpkg.recipes.index import RecipeIndex
    from mlpkg.resolver.derivation import Derivation
    from mlpkg.resolver.external import Detector
    from mlpkg.resolver.lockfile import Lockfile
    from mlpkg.resolver.plan import Plan
    from mlpkg.store.path import StorePath
    from mlpkg.store.store import Store

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
LOCK_FILE = "mlpkg.lock"


@dataclass(frozen=True)
class RunRequest:
    """One run of an app: what result.json records of how it was asked for."""

    spec: str  # the spec asked for (result.json's ``app``)
    args: list[str] = field(default_factory=list)  # the app's extra arguments
    output: Path | None = None  # the run directory (default: $MLPKG_HOME/runs/<run-id>)
    overrides: dict[str, str] = field(default_factory=dict)  # --with NAME=SPEC, recorded
    lockfile: Path | None = None  # the lock the closure came from, recorded
    show: bool = True  # copy the app's standard output to mlpkg's
    show_errors: bool = True  # copy the app's standard error to mlpkg's


@dataclass(frozen=True)
class RunResult:
    """A run that ended: its id, directory and record (result.json, as written)."""

    id: str
    dir: Path
    record: dict[str, Any]
    exited: Exited

    @property
    def status(self) -> str:
        """ok, failed, bad-input or interrupted."""
        return str(self.record["status"])


def run_app(
    store: Store,
    plan: Plan,
    request: RunRequest,
    on_start: Callable[[str, Path], None] | None = None,
) -> RunResult:
    """Run the app at the root of the realised ``plan`` (see the module docstring).
    ``on_start`` is told the run id and directory once result.json exists, before the app
    starts. RunError when the app's program could not be started (the record says so)."""
    return prepare_run(store, plan, request).start(on_start)


@dataclass
class PreparedRun:
    """A run with its directory, environment and ``running`` record, not started yet.
    :func:`prepare_run` uses the store (its database connection belongs to the thread
    that opened it); :meth:`start` does not, so a caller may start runs from other
    threads (a sweep's ``--jobs``)."""

    id: str
    dir: Path
    argv: list[str]
    env: dict[str, str]
    record: dict[str, Any]
    readonly: list[Path]
    request: RunRequest

    def start(self, on_start: Callable[[str, Path], None] | None = None) -> RunResult:
        """Start the app, wait for it and complete the record."""
        run_dir, record = self.dir, self.record
        started = record["started"] = time.time()
        runs.write_json(run_dir / runs.RESULT_FILE, record)
        if on_start is not None:
            on_start(self.id, run_dir)
        try:
            exited = launch(self.argv, self.env, run_dir, show=self.request.show,
                            on_start=lambda pid: _record_pid(run_dir, record, pid),
                            readonly=self.readonly,
                            show_stderr=self.request.show_errors)  # fmt: skip
        except RunError as e:  # the program could not start: the record says so
            record.update(status="failed", exit_code=None, finished=time.time(), error=e.message)
            runs.write_json(run_dir / runs.RESULT_FILE, record)
            raise
        finish_record(record, run_dir, exited, started)
        return RunResult(self.id, run_dir, record, exited)


def prepare_run(store: Store, plan: Plan, request: RunRequest) -> PreparedRun:
    """Check the app and its arguments, record the closure as the profile's generation,
    make the run directory and its lock; the run, ready to start."""
    drv = plan.node(plan.roots[0]).drv
    check_app(store, drv)  # a caller other than the CLI gets BadInput, not an assertion
    check_args(drv, request.args)
    env = activate(store, plan, drv.name, request.spec)
    run_id, run_dir = make_run_dir(store.home, drv.name, request.output)
    argv = [*command_of(store, drv, run_dir), *request.args]
    env.update(MLPKG_RUN_ID=run_id, MLPKG_RUN_DIR=str(run_dir))
    lockfile = str(request.lockfile) if request.lockfile else None
    record: dict[str, Any] = {
        "format": runs.RESULT_FORMAT, "id": run_id, "status": "running", "exit_code": None,
        "app": request.spec, "app_path": str(drv.path), "command": argv, "args": request.args,
        "overrides": dict(request.overrides), "lockfile": lockfile, "started": time.time(),
        "output": str(run_dir), "machine": runs.machine(),
        "lock": _write_lock(store, plan, request.spec, run_dir),
    }  # fmt: skip
    runs.write_json(run_dir / runs.RESULT_FILE, record)  # listed from now on
    readonly = [store.dir, store.home / "envs"]
    return PreparedRun(run_id, run_dir, argv, env, record, readonly, request)


def plan_of_lock(
    store: Store,
    lock: Lockfile,
    file: Path,
    spec: str | None,
    detector: Detector,
    trusted: RecipeIndex,
    allow_drift: bool,
) -> tuple[Plan, dict[StorePath, str], str]:
    """The plan of ``lock`` (read from ``file``) for ``run --lock``: the archive hash each
    path must have, and the spec of its app. BadInput when the lock is not one app's or
    not ``spec``'s (when given); the checks of :func:`~mlpkg.resolver.lockfile.to_plan`
    and :func:`~mlpkg.resolver.lockfile.check_valid_paths`."""
    from mlpkg.resolver.lockfile import check_valid_paths, to_plan

    if len(lock.roots) != 1:
        raise BadInput(
            f"{file} locks {len(lock.roots)} packages; mlpkg run needs the lock of "
            "one app (`mlpkg lock APP`).",
            file=str(file),
        )
    if spec is not None and spec not in lock.specs:
        raise BadInput(f"{file} locks {lock.specs[0]}, not {spec}.", file=str(file))
    plan, expected = to_plan(lock, store, detector, allow_external_drift=allow_drift,
                             trusted=trusted)  # fmt: skip
    check_valid_paths(plan, store, expected)
    return plan, expected, lock.specs[0]


def check_app(store: Store, drv: Derivation) -> None:
    """Refuse, before anything is built, what is not an app or whose command is wrong."""
    if drv.kind != "app" or drv.recipe.run is None:
        raise BadInput(
            f'{drv.recipe.spec} is a {drv.kind} recipe; mlpkg run starts apps (kind = "app").',
            package=drv.name,
        )
    command_of(store, drv, Path("."))  # every ${placeholder} names an input


def command_of(store: Store, drv: Derivation, run_dir: Path) -> list[str]:
    """The app's argv with ``${input}``, ``${out}`` and ``${output}`` filled in."""
    values = {k: str(store.real_path(p)) for k, p in drv.inputs.items()}
    values["out"] = str(store.real_path(drv.path))
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

    assert drv.recipe.run is not None
    return [_PLACEHOLDER.sub(fill, part) for part in drv.recipe.run.command]


def check_output(output: Path | None) -> None:
    """Refuse an ``--output`` that cannot be a fresh run directory (before building)."""
    if output is None or not output.exists():
        return
    if not output.is_dir() or any(output.iterdir()):
        raise BadInput(
            f"The output directory {output} is not empty; give a new one, so that no "
            "result is mixed with an older one.",
            field="--output",
        )


def check_args(drv: Derivation, extra: list[str]) -> None:
    """Refuse an option the app's command sets itself (e.g. --scenario of retinanet-offline):
    the record would name one app and hold another's run."""
    assert drv.recipe.run is not None
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


def replay_source(path: Path) -> tuple[Path, list[str] | None]:
    """What ``run --lock PATH`` runs: a lockfile, or for a run directory (or its
    result.json) that run's lock and its arguments, so the experiment is repeated exactly."""
    result = path / runs.RESULT_FILE if path.is_dir() else path
    if result.suffix != ".json":
        return path, None
    from mlpkg.documents import load_json

    try:
        doc = load_json(result.read_text(encoding="utf-8"), str(result))
        args = [str(a) for a in doc["args"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInput(f"Cannot read the run record {result}: {e}.", file=str(result)) from None
    return result.parent / LOCK_FILE, args


def make_run_dir(home: Path, name: str, output: Path | None) -> tuple[str, Path]:
    """A fresh run id and its directory (``output`` when given, linked from runs/)."""
    root = runs.runs_dir(home)
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


def activate(store: Store, plan: Plan, name: str, spec: str) -> dict[str, str]:
    """Record the closure as the profile run-<name>'s current generation; its environment."""
    from mlpkg.env.activation import activation
    from mlpkg.env.profiles import BrokenGeneration, Profile

    profile = Profile(store, f"run-{name}")
    with profile.locked():
        try:
            current = profile.current()
        except BrokenGeneration:  # a crash's leftover: the run makes a good one after it
            current = None
        if current is None or current.roots != list(plan.roots):
            profile.add_generation([spec], list(plan.roots))
    env = activation(store, plan.roots, os.environ).apply(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # the app's output reaches stdout.txt as it happens
    return env


def run_status(code: int) -> str:
    """The run status of an exit status (negative: killed by that signal)."""
    if code == 0:
        return "ok"
    if code == 2:
        return "bad-input"
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    if code in {130, *(128 + s for s in stops), *(-s for s in stops)}:
        return "interrupted"
    return "failed"


def _write_lock(store: Store, plan: Plan, spec: str, run_dir: Path) -> dict[str, Any]:
    """Write the lock of the run's closure into the run directory; the lock as a table."""
    from mlpkg.resolver.lockmake import lock_of_plan

    text = lock_of_plan(store, [spec], plan, realised=True).dumps()
    write_atomic(run_dir / LOCK_FILE, text)  # `run --lock DIR` must never read half of it
    return tomllib.loads(text)


def _record_pid(run_dir: Path, record: dict[str, Any], pid: int) -> None:
    """The app's pid and mlpkg's, so a list can tell a run that died from a running one."""
    record.update(pid=pid, mlpkg_pid=os.getpid())
    runs.write_json(run_dir / runs.RESULT_FILE, record)


def finish_record(record: dict[str, Any], run_dir: Path, exited: Exited, started: float) -> None:
    """Complete ``record`` with how the app ended and what its report says (a report of
    failure or interruption overrides an exit status of 0), and rewrite result.json. A run
    that mlpkg passed a signal to (Ctrl-C, SIGTERM, SIGHUP) is ``interrupted`` whatever
    the app's exit status: its figures are not a measurement."""
    finished, code = time.time(), exited.code
    status = run_status(code) if exited.signalled is None else "interrupted"
    record.update(status=status, exit_code=code, finished=finished, pid=exited.pid,
                  duration_s=round(finished - started, 3), error=exited.error)  # fmt: skip
    report = runs.read_app_report(run_dir)
    if report is not None:
        if report.get("status") in ("failed", "interrupted") and record["status"] == "ok":
            record["status"] = report["status"]
        for key in runs.REPORT_KEYS:
            if key in report:
                record[key] = report[key]
        record["versions"] = {k: v for k, v in report.items() if k.endswith("_version")}
    runs.write_json(run_dir / runs.RESULT_FILE, record)
