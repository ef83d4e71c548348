"""``mlpkg sweep``: every point of a matrix as an ordinary run, planned first.

The order is uv's, plan then act, and no build ever runs beside a measurement:

1. :func:`plan_sweep` resolves the app once per cell (its ``--with`` overrides) and
   checks each cell's options against the app's command; bad input anywhere stops the
   sweep here, before anything is built or run. With ``resume``, a point whose recorded
   run succeeded with the same closure (the app's store path, which hashes all of it) and
   the same arguments is marked done and not run again.
2. :func:`realise_cells` realises every cell's closure (substituting, fetching, building)
   and keeps it from the garbage collector for the life of this process. A cell whose
   closure cannot be made has its points marked ``not-built`` with the error; the other
   cells go on.
3. :func:`run_points` runs the points (:func:`mlpkg.env.run.run_app`, the function
   behind ``mlpkg run``), one at a time, or ``jobs`` at a time for an accuracy sweep, and
   rewrites ``experiment.json`` after each. A failed run does not stop the sweep; an
   interrupted one does (the experiment is then ``interrupted``, and ``--resume``
   continues it).

Each point records its timings: ``plan_s`` (its share of its cell's planning), ``run_s``
(the app's process, start to exit) and ``overhead_s`` (everything else the point cost:
activation, the run directory, the lock, the records). The caller is told of progress
through an :class:`Observer`; nothing here prints.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mlpkg.env import runs
from mlpkg.env.run import PreparedRun, RunRequest, check_app, check_args, prepare_run
from mlpkg.errors import BadInput, Interrupted, MlpkgError
from mlpkg.experiments.record import Experiment, Point, cell_label

if TYPE_CHECKING:
    from mlpkg.resolver.plan import Plan
    from mlpkg.session import Session

DONE = ("ok",)
ACCURACY_FLAGS = ("--accuracy", "--mode=accuracy")


class Observer(Protocol):
    """Told of each point as it starts and ends (for a progress display)."""

    def started(self, point: Point) -> None: ...

    def finished(self, point: Point) -> None: ...


@dataclass
class CellPlan:
    """One cell of the matrix, planned: its plan (and, once realised, its error)."""

    cell: dict[str, str]
    points: list[Point]
    plan: Plan
    plan_s: float
    error: str | None = None

    @property
    def label(self) -> str:
        return cell_label(self.cell)

    @property
    def app_path(self) -> str:
        return str(self.plan.roots[0])


@dataclass
class SweepPlan:
    experiment: Experiment
    cells: list[CellPlan] = field(default_factory=list)

    def todo(self) -> list[Point]:
        return [p for p in self.experiment.points if p.status == "pending"]  # not not-built


def plan_sweep(session: Session, exp: Experiment, resume: bool = False) -> SweepPlan:
    """Resolve every cell of ``exp`` (step 1 of the module docstring)."""
    sweep = SweepPlan(exp)
    plans: dict[tuple[tuple[str, str], ...], Plan] = {}  # cells that differ only in args
    for points in exp.cells():
        first = points[0]
        began = time.monotonic()
        key = tuple(sorted(first.overrides.items()))
        if key not in plans:
            session.overrides = dict(first.overrides)
            plans[key] = session.plan([exp.app])
        plan = plans[key]
        drv = plan.node(plan.roots[0]).drv
        check_app(session.store, drv)
        check_args(drv, first.args)
        cell = CellPlan(first.cell, points, plan, time.monotonic() - began)
        sweep.cells.append(cell)
        for point in points:
            point.timings["plan_s"] = round(cell.plan_s / len(points), 4)
            if resume and _has_run(session.store.home, point, cell.app_path):
                continue
            point.app_path, point.status, point.error = cell.app_path, "pending", None
    return sweep


def _has_run(home: Path, point: Point, app_path: str) -> bool:
    """Whether ``point`` already has a successful run of this closure and these args."""
    if point.status != "ok" or point.run is None:
        return False
    try:
        result = runs.read_record(runs.runs_dir(home) / point.run).result
    except MlpkgError:
        return False
    return (
        result.get("status") == "ok"
        and result.get("app_path") == app_path
        and list(result.get("args", [])) == point.args
    )


def check_jobs(exp: Experiment, jobs: int) -> None:
    """Refuse ``--jobs`` above 1 unless every point measures accuracy only: points side by
    side share the machine, so their performance figures would be wrong."""
    if jobs < 1:
        raise BadInput(f"--jobs {jobs}: give 1 or more.", field="--jobs")
    if jobs > 1 and not all(_accuracy_only(p.args) for p in exp.points):
        raise BadInput(
            f"--jobs {jobs} runs points side by side, which skews performance figures; it "
            "is for accuracy sweeps only (give --accuracy to the app after --).",
            field="--jobs",
        )


def _accuracy_only(args: Sequence[str]) -> bool:
    pairs = zip(args, [*args[1:], ""], strict=True)
    return any(a in ACCURACY_FLAGS or (a, b) == ("--mode", "accuracy") for a, b in pairs)


def realise_cells(session: Session, sweep: SweepPlan) -> None:
    """Realise the closure of every cell with points to run (step 2). The experiment is
    recorded first, so that one interrupted while building can be resumed."""
    sweep.experiment.save()
    for cell in sweep.cells:
        if all(p.status in DONE for p in cell.points):
            continue
        try:
            session.act(cell.plan, keep_going=True)
        except (Interrupted, KeyboardInterrupt):
            _finish(sweep.experiment, interrupted=True)
            raise _interrupted(sweep.experiment) from None
        except MlpkgError as e:
            cell.error = e.message
            for point in cell.points:
                if point.status not in DONE:
                    point.status, point.error = "not-built", e.message
        session.store.protect(n.path for n in cell.plan.nodes)
    sweep.experiment.save()


def run_points(session: Session, sweep: SweepPlan, observer: Observer, jobs: int = 1) -> None:
    """Run every point still to run (step 3); Interrupted when a run was interrupted. The
    experiment's status is final when this returns or raises, whatever happened."""
    exp = sweep.experiment
    todo = [p for p in exp.points if p.status == "pending"]
    exp.status, exp.mlpkg_pid = "running", os.getpid()
    exp.save()
    points = _Points(session, sweep, observer)
    try:
        if jobs == 1:
            for point in todo:
                prepared = points.prepare(point)
                if prepared is not None:
                    points.start(point, prepared)
                if point.status == "interrupted":
                    break
        else:
            points.run_parallel(todo, jobs)
    except KeyboardInterrupt:
        _finish(exp, interrupted=True)
        raise _interrupted(exp) from None
    except BaseException:  # an unexpected error: the record must not say running
        _finish(exp, interrupted=False)
        raise
    _finish(exp, interrupted=any(p.status == "interrupted" for p in exp.points))
    if exp.status == "interrupted":
        raise _interrupted(exp)


def _interrupted(exp: Experiment) -> Interrupted:
    return Interrupted(
        f"The sweep {exp.id} was interrupted; `mlpkg sweep --resume {exp.id}` continues it."
    )


def _finish(exp: Experiment, interrupted: bool) -> None:
    for point in exp.points:
        if point.status == "running":
            point.status = "interrupted"
    failed = any(p.status not in (*DONE, "pending") for p in exp.points)
    exp.status = "interrupted" if interrupted else ("failed" if failed else "ok")
    exp.save()


class _Points:
    """Runs points and records them: each is *prepared* (activation, run directory, lock)
    in the thread that owns the store (its database connection cannot be shared) and
    *started* there or in a worker; ``guard`` serialises changes to the experiment."""

    def __init__(self, session: Session, sweep: SweepPlan, observer: Observer) -> None:
        self.session, self.exp, self.observer = session, sweep.experiment, observer
        self.cells = {tuple(c.cell.items()): c for c in sweep.cells}
        self.guard = threading.Lock()
        self.began: dict[int, float] = {}  # point index: when its preparation began

    def prepare(self, point: Point) -> PreparedRun | None:
        """The point's run, ready to start; None (the point failed, and is recorded so)
        when it could not be prepared."""
        self.began[point.index] = time.monotonic()
        request = RunRequest(self.exp.app, list(point.args), overrides=dict(point.overrides),
                             show=False, show_errors=False)  # fmt: skip
        plan = self.cells[tuple(point.cell.items())].plan
        try:
            return prepare_run(self.session.store, plan, request)
        except MlpkgError as e:
            self._ended(point, "failed", e.message, 0.0)
            return None

    def start(self, point: Point, prepared: PreparedRun) -> None:
        """Run a prepared point and record how it ended (never raises for a failed run)."""

        def on_start(run_id: str, _run_dir: Path) -> None:
            with self.guard:
                point.run, point.status = run_id, "running"
                self.exp.save()
            self.observer.started(point)

        try:
            result = prepared.start(on_start)
            status, error, app_s = result.status, result.record.get("error"), result.exited.seconds
        except MlpkgError as e:  # the program could not start: its record says so
            status, error, app_s = "failed", e.message, 0.0
        self._ended(point, status, error, app_s)

    def _ended(self, point: Point, status: str, error: str | None, app_s: float) -> None:
        total = time.monotonic() - self.began[point.index]
        with self.guard:
            point.status, point.error = status, error
            point.timings.update(run_s=round(app_s, 4), overhead_s=round(total - app_s, 4))
            self.exp.save()
        self.observer.finished(point)

    def run_parallel(self, todo: list[Point], jobs: int) -> None:
        """``jobs`` points at once; a Ctrl-C, SIGTERM or SIGHUP (seen by this, the main
        thread) stops them all (:meth:`_stop_all`)."""
        slots = threading.BoundedSemaphore(jobs)
        started: dict[Future[None], PreparedRun] = {}
        with _stops_as_interrupts(), ThreadPoolExecutor(max_workers=jobs) as pool:
            try:
                for point in todo:
                    slots.acquire()
                    prepared = self.prepare(point)
                    if prepared is None:
                        slots.release()
                        continue
                    future = pool.submit(self.start, point, prepared)
                    future.add_done_callback(lambda _f: slots.release())
                    started[future] = prepared
                for future in started:
                    future.result()
            except KeyboardInterrupt:
                self._stop_all(started)
                raise

    def _stop_all(self, started: dict[Future[None], PreparedRun]) -> None:
        """Runs prepared but not started are recorded as interrupted; every app that
        starts is passed SIGINT (once), until every worker is done; and every run so
        stopped is interrupted, however its app chose to exit."""
        for future, prepared in started.items():
            if future.cancel():
                prepared.record.update(status="interrupted", finished=time.time())
                runs.write_json(prepared.dir / runs.RESULT_FILE, prepared.record)
        signalled: dict[int, str] = {}  # pid: run id
        while wait(started, timeout=0.05).not_done:
            self._signal_running(signalled)
        root = runs.runs_dir(self.session.store.home)
        for run_id in signalled.values():
            _mark_interrupted(root / run_id)
            with self.guard:
                for point in self.exp.points:
                    if point.run == run_id:
                        point.status = "interrupted"

    def _signal_running(self, done: dict[int, str]) -> None:
        """Pass SIGINT to the app of every running point not in ``done`` (then added)."""
        with self.guard:
            running = [p.run for p in self.exp.points if p.status == "running" and p.run]
        root = runs.runs_dir(self.session.store.home)
        for run_id in running:
            with contextlib.suppress(MlpkgError, OSError, TypeError):
                pid = runs.read_record(root / run_id).result.get("pid")
                if isinstance(pid, int) and pid > 0 and pid not in done:
                    os.kill(pid, signal.SIGINT)
                    done[pid] = run_id


def _mark_interrupted(run_dir: Path) -> None:
    with contextlib.suppress(MlpkgError, OSError):
        result = runs.read_record(run_dir).result
        if result.get("status") != "interrupted":
            result["status"] = "interrupted"
            runs.write_json(run_dir / runs.RESULT_FILE, result)


@contextlib.contextmanager
def _stops_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt here, in the main thread, as Ctrl-C
    does: with points started from workers, launch installs no handler of its own, and
    the default action would kill mlpkg with its records saying running."""

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
