"""ONNX Runtime sessions for the RetinaNet model.

Session options: ``CPUExecutionProvider``, graph optimisation ``ORT_ENABLE_ALL``, sequential
execution, ``inter_op_num_threads`` 1 and ``intra_op_num_threads`` as chosen by
:func:`thread_plan`. Every worker has a session of its own, up to :data:`MAX_SESSIONS`
sessions and no more than the CPUs usable (:func:`cpu_count`, which counts a cgroup v2
``cpu.max`` quota); workers beyond that share the sessions round-robin (worker ``w`` runs
on session ``w % sessions``), since each session holds a copy of the weights (~0.7 GB in
ONNX Runtime for the real RetinaNet) and more sessions than cores cannot all run. One ONNX
Runtime session has one intra-op thread pool and one memory arena, shared by all
concurrent ``run`` calls: with more than one intra-op thread per inference, concurrent runs
would share one small pool and leave cores idle; with one (the default in the throughput
scenarios, where each run works on its caller's thread) a shared session was still slower
on the real-size RetinaNet: 2 workers with a session each ran 0.38 samples/s where they ran
0.22 sharing one (medians of 3 rounds on 2 cores under load, bench/harness_real.py;
docs/harness.md). The cost is one copy of the weights per session.

:class:`Backend` also supports cancelling the inferences in flight (Ctrl-C): each run gets
an ``ort.RunOptions``; :meth:`Backend.cancel` sets ``terminate`` on all of them.
"""

from __future__ import annotations

import importlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import BadInput

INPUT_NAME = "images"
OUTPUT_NAMES = ("boxes", "scores", "labels")
Outputs = tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]
MAX_SESSIONS = 4  # ONNX Runtime sessions at most (one copy of the weights each)
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def ort_module() -> Any:
    """onnxruntime (imported lazily; untyped)."""
    return importlib.import_module("onnxruntime")


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> int | None:
    """The CPUs a cgroup v2 quota allows (``cpu.max``: "QUOTA PERIOD", rounded up), or None
    without a quota ("max ..."), without the file or when it cannot be read."""
    try:
        fields = path.read_text(encoding="ascii").split()
        if len(fields) != 2 or fields[0] == "max":
            return None
        quota, period = int(fields[0]), int(fields[1])
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, -(-quota // period))


def cpu_count() -> int:
    """CPUs this process may use: its CPU affinity, capped by a cgroup v2 quota."""
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = max(1, os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return cpus if limit is None else min(cpus, limit)


@dataclass(frozen=True)
class ThreadPlan:
    """How inference is spread over threads (recorded in harness.json as ``session``)."""

    workers: int  # SUT worker threads (1 in SingleStream: inference runs in issue_queries)
    intra_op_threads: int  # per inference
    inter_op_threads: int
    sessions: int  # ONNX Runtime sessions (one per worker, at most MAX_SESSIONS and cpus)
    cpu_count: int
    provider: str = "CPUExecutionProvider"
    graph_optimization_level: str = "ORT_ENABLE_ALL"
    execution_mode: str = "ORT_SEQUENTIAL"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def thread_plan(scenario: str, threads: int | None, cpus: int | None = None) -> ThreadPlan:
    """Worker and ONNX Runtime thread counts for throughput.

    SingleStream: one worker (inference runs synchronously in ``issue_queries``) whose runs
    use ``threads`` (default: all CPUs) intra-op threads. Other scenarios: ``threads``
    workers (default: the CPU count, as the reference), each with a session of its own up
    to ``min(MAX_SESSIONS, cpus)`` sessions (then shared round-robin), whose runs use
    ``max(1, cpus // workers)`` intra-op threads (module doc)."""
    cpus = cpus or cpu_count()
    if scenario == "SingleStream":
        intra = max(1, threads or cpus)
        return ThreadPlan(1, intra, 1, 1, cpus)
    workers = max(1, threads or cpus)
    intra = max(1, cpus // workers)
    return ThreadPlan(workers, intra, 1, min(workers, MAX_SESSIONS, cpus), cpus)


class Backend:
    """The model's session(s): :meth:`predict` runs one sample on a worker's session."""

    def __init__(self, sessions: list[Any], plan: ThreadPlan, model: Path) -> None:
        self.sessions = sessions
        self.model = model
        self.plan = plan
        self._ort = ort_module()
        self._active: set[Any] = set()
        self._lock = threading.Lock()
        self._cancelled = False

    def predict(self, x: npt.NDArray[np.float32], worker: int = 0) -> Outputs:
        """Run the model on one ``[1, 3, 800, 800]`` sample; (boxes, scores, labels)."""
        options = self._ort.RunOptions()
        with self._lock:
            if self._cancelled:
                raise RuntimeError("inference cancelled")
            self._active.add(options)
        try:
            session = self.sessions[worker % len(self.sessions)]
            boxes, scores, labels = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x}, options)
        finally:
            with self._lock:
                self._active.discard(options)
        return boxes, scores, labels

    def cancel(self) -> None:
        """Make inferences in flight (and later ones) fail at once."""
        with self._lock:
            self._cancelled = True
            for options in self._active:
                options.terminate = True


def _session_options(ort: Any, plan: ThreadPlan) -> Any:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = plan.intra_op_threads
    so.inter_op_num_threads = plan.inter_op_threads
    so.log_severity_level = 4  # errors surface as exceptions; keep stderr for our messages
    return so


def _check_interface(session: Any, path: Path) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = {o.name for o in session.get_outputs()}
    if INPUT_NAME not in inputs or not set(OUTPUT_NAMES) <= outputs:
        raise BadInput(
            f"model {path} does not have the RetinaNet interface (input 'images'; outputs "
            f"'boxes', 'scores', 'labels'): it has inputs {inputs}, outputs {sorted(outputs)}."
        )


def load_backend(path: Path, plan: ThreadPlan) -> Backend:
    """Create the session(s) for ``path``; BadInput if the file is missing or ONNX Runtime
    cannot load it, or it lacks the RetinaNet inputs/outputs."""
    if not path.is_file():
        raise BadInput(f"model file {path} does not exist.")
    ort = ort_module()
    ort.set_default_logger_severity(4)

    def make(_: int) -> Any:
        return ort.InferenceSession(
            str(path), _session_options(ort, plan), providers=["CPUExecutionProvider"]
        )

    try:
        first = make(0)
        _check_interface(first, path)
        with ThreadPoolExecutor(max(1, min(plan.sessions - 1, 8))) as pool:
            rest = list(pool.map(make, range(1, plan.sessions)))
    except BadInput:
        raise
    except Exception as e:
        reason = " ".join(str(e).split())[:300]
        raise BadInput(f"ONNX Runtime cannot load model file {path} ({reason}).") from None
    return Backend([first, *rest], plan, path)
