"""The RetinaNet benchmark command: LoadGen + ONNX Runtime on a preprocessed dataset.

Usage::

    python -m mlpkg_harness --model retinanet.onnx --dataset PREPROCESSED --output OUT
        [--scenario {SingleStream,MultiStream,Server,Offline}] [--accuracy] [--count N]
        [--time S] [--qps Q] [--max-latency S] [--threads N] [--samples-per-query N]
        [--performance-sample-count N] [--user-conf F] [--audit-conf F] [--mlperf-conf F]
        [--model-name retinanet] [--quiet]

Steps: check the inputs (:class:`.errors.BadInput`: one sentence naming the file, exit 2,
before LoadGen starts), open the ONNX Runtime session(s) (:mod:`.backend`; thread choice
from :func:`.backend.thread_plan`), five warm-up predictions, TestSettings
(:mod:`.settings`: configuration files, then the options; documented short-run rules), then
LoadGen in a separate thread with the SUT of :mod:`.sut` and the QSL of :mod:`.dataset`,
its logs in ``--output`` (mlperf_log_summary.txt, _detail.txt, _accuracy.json,
_trace.json). Afterwards: in accuracy mode the COCOeval table, ``mAP=NN.NNN%`` and the
reference's final line with ``acc=``/``mAP=``; in performance mode the reference's final
line (:func:`.report.reference_line`) and LoadGen's verdict from the summary file.

Exit status: 0; 1 if samples failed (or the accuracy log had no detection to evaluate);
2 for bad input; 130 after Ctrl-C. On Ctrl-C the SUT answers everything left with empty
responses, LoadGen gets :data:`DRAIN_SECONDS` to finish, harness.json is written with status
"interrupted", and if LoadGen still runs the process ends with ``os._exit(130)`` (its logs
are kept as far as written).

``OUT/harness.json`` (format 1; not written for bad input, which stops before ``OUT`` is
created)::

    format               1
    harness_version      this package's __version__
    status               "ok" | "failed" (samples failed, no detection to evaluate, LoadGen
                         error) | "interrupted"
    exit_code            the process's exit status
    scenario, mode       e.g. "Offline", "PerformanceOnly" | "AccuracyOnly"
    model_name           LoadGen's model name for the configuration files (retinanet)
    model, dataset, output                     the paths given
    loadgen_version, onnxruntime_version, numpy_version, python_version
    duration_s           wall-clock seconds of the whole command
    settings             scenario, mode, model_name; conf_files (the FromConfig calls in
                         order: role "mlperf"|"user", path or null for an empty temporary
                         user conf, applies_builtin_mlperf_conf); audit_conf (path or null);
                         overrides (what the options and short-run rules set); values
                         (TestSettings read back after everything: durations, query counts,
                         performance_sample_count_override, QPS, latencies, percentiles,
                         samples per query, seeds); notes (estimates used, caps);
                         qsl_performance_sample_count (given to ConstructQSL)
    session              workers, intra_op_threads, inter_op_threads, sessions, cpu_count,
                         provider, graph_optimization_level, execution_mode,
                         warmup_latencies_s (the five warm-up predictions), calibration
                         ({qps, predictions, seconds} of :func:`.sut.calibrate`, or null when
                         not needed), estimated_qps
    counts               dataset_images, samples (after --count), warmup, issued, answered,
                         succeeded, failed, drained (empty answers after Ctrl-C)
    errors               count, first (message), samples (failed QSL indices, first 1000)
    summary              line (the reference's final line), qps, mean, time, queries,
                         percentiles {"50.0": s, ...}, acc (percent or null), mAP (percent
                         or null)
    loadgen              from mlperf_log_summary.txt (null if absent): result (VALID |
                         INVALID), scenario, mode, samples_per_second, latency_ns {min, max,
                         mean, p50.00, ...}, parameters, fields (every other key : value)
    accuracy             accuracy mode: mAP (fraction), line, stats (the 12 COCOeval stats),
                         images, detections, images_without_detections, log_entries; or
                         {"mAP": null, "error": ...}; null in performance mode
    logs                 the LoadGen log files present in OUT
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import __version__
from .accuracy import NoDetections, evaluate
from .backend import Backend, load_backend, ort_module, thread_plan
from .dataset import PreprocessedDataset, open_dataset
from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, BadInput
from .report import parse_summary, reference_line
from .settings import (
    Estimates,
    Options,
    build_settings,
    check_readable,
    conf_plan,
    loadgen_version,
    performance_sample_count,
)
from .sut import SUT, Progress, calibrate, warm_up

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
DRAIN_SECONDS = 3.0
LOG_FILES = (
    "mlperf_log_summary.txt",
    "mlperf_log_detail.txt",
    "mlperf_log_accuracy.json",
    "mlperf_log_trace.json",
)


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m mlpkg_harness", description="MLPerf Inference RetinaNet (ONNX Runtime)."
    )
    p.add_argument("--scenario", choices=SCENARIOS, default="Offline")
    p.add_argument("--model", required=True, type=Path, help="the ONNX model")
    p.add_argument("--dataset", required=True, type=Path, help="preprocessed dataset dir")
    p.add_argument("--output", type=Path, default=Path("output"), help="LoadGen logs here")
    p.add_argument("--accuracy", action="store_true", help="AccuracyOnly mode")
    p.add_argument("--count", type=_positive(int), help="use the first N images")
    p.add_argument("--time", type=_positive(float), help="min and max duration (s)")
    p.add_argument("--qps", type=_positive(float), help="target/expected QPS")
    p.add_argument("--max-latency", type=_positive(float), help="target latency (s)")
    p.add_argument("--threads", type=_positive(int), help="worker threads (default: CPUs)")
    p.add_argument("--samples-per-query", type=_positive(int), help="MultiStream")
    p.add_argument("--performance-sample-count", type=_positive(int))
    p.add_argument("--user-conf", type=Path, help="LoadGen user.conf")
    p.add_argument("--audit-conf", type=Path, help="LoadGen audit.config (compliance)")
    p.add_argument(
        "--mlperf-conf",
        type=Path,
        help="mlperf.conf to load (LoadGen < 4.1.7: instead of the bundled retinanet rules; "
        "later: after LoadGen's built-in copy)",
    )
    p.add_argument("--model-name", default="retinanet", help="model name in conf files")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p.parse_args(argv)


def _versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    return {
        "loadgen_version": loadgen_version(),
        "onnxruntime_version": str(getattr(ort_module(), "__version__", "unknown")),
        "numpy_version": version("numpy"),
        "python_version": platform.python_version(),
    }


class Run:
    """One benchmark run: its inputs, the state gathered so far, and harness.json."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.time()
        self.output: Path = args.output
        self.output_ready = False
        self.doc: dict[str, Any] = {
            "format": 1,
            "harness_version": __version__,
            "status": "failed",
            "exit_code": None,
            "scenario": args.scenario,
            "mode": "AccuracyOnly" if args.accuracy else "PerformanceOnly",
            "model_name": args.model_name,
            "model": str(args.model),
            "dataset": str(args.dataset),
            "output": str(args.output),
            "settings": None,
            "session": None,
            "counts": None,
            "errors": {"count": 0, "first": None, "samples": []},
            "summary": None,
            "loadgen": None,
            "accuracy": None,
            "logs": [],
        }
        self.sut: SUT | None = None
        self.dataset: PreprocessedDataset | None = None

    # -- preparation -----------------------------------------------------------------------

    def check_inputs(self) -> None:
        """Cheap checks first: configuration files, then the dataset, then the model."""
        a = self.args
        for path, what in (
            (a.mlperf_conf, "LoadGen mlperf configuration file"),
            (a.user_conf, "LoadGen user configuration file"),
            (a.audit_conf, "LoadGen audit configuration file"),
        ):
            if path is not None:
                check_readable(path, what)
        self.dataset = open_dataset(a.dataset, a.count)
        if not a.model.is_file():
            raise BadInput(f"model file {a.model} does not exist.")

    def prepare_output(self) -> None:
        try:
            self.output.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(
                f"cannot create output directory {self.output} ({e.strerror})."
            ) from None
        self.output_ready = True

    # -- harness.json ------------------------------------------------------------------------

    def write_json(self, status: str, exit_code: int) -> None:
        if not self.output_ready:
            return
        self.doc.update(
            status=status, exit_code=exit_code, duration_s=round(time.time() - self.started, 3)
        )
        if self.sut is not None:
            st = self.sut.stats
            self.doc["counts"] = {**(self.doc["counts"] or {}), **st.as_dict()}
            with st.lock:
                self.doc["errors"] = {
                    "count": st.errors,
                    "first": st.first_error,
                    "samples": list(st.error_samples),
                }
        self.doc["logs"] = [n for n in LOG_FILES if (self.output / n).exists()]
        tmp = self.output / "harness.json.tmp"
        tmp.write_text(json.dumps(self.doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.output / "harness.json")


def _start_loadgen(
    lg: Any, sut_h: Any, qsl_h: Any, settings: Any, log_settings: Any, audit: str
) -> tuple[threading.Event, list[BaseException]]:
    """Run LoadGen's test in a daemon thread; the event is set when it returns."""
    failures: list[BaseException] = []
    done = threading.Event()

    def target() -> None:
        try:
            lg.StartTestWithLogSettings(sut_h, qsl_h, settings, log_settings, audit)
        except BaseException as e:  # reported by the main thread
            failures.append(e)
        finally:
            done.set()

    threading.Thread(target=target, name="loadgen", daemon=True).start()
    return done, failures


def _wait(done: threading.Event, sut: SUT) -> bool:
    """Wait for LoadGen in a way that sees Ctrl-C; True if interrupted. After Ctrl-C the
    SUT drains and LoadGen gets DRAIN_SECONDS to finish (a second Ctrl-C stops waiting).

    Waits on an Event, not ``Thread.join``: in Python 3.11 a KeyboardInterrupt inside
    ``join`` releases the running thread's state lock and marks it stopped (bpo-45274), so
    ``is_alive()`` would then wrongly say False and LoadGen's objects would be destroyed
    under it."""
    try:
        while not done.wait(0.2):
            pass
        return False
    except KeyboardInterrupt:
        sut.drain()
    deadline = time.monotonic() + DRAIN_SECONDS
    with contextlib.suppress(KeyboardInterrupt):
        while not done.is_set() and time.monotonic() < deadline:
            done.wait(0.1)
    return True


def _log_settings(lg: Any, output: Path) -> Any:
    out = lg.LogOutputSettings()
    out.outdir = str(output)
    out.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = out
    log_settings.enable_trace = False
    return log_settings


def _settings(run: Run, lg: Any, backend: Backend, latencies: list[float]) -> Any:
    a, ds = run.args, run.dataset
    assert ds is not None
    opts = Options(
        a.scenario,
        a.accuracy,
        ds.count if a.count else None,
        a.time,
        a.qps,
        a.max_latency,
        a.samples_per_query,
        a.performance_sample_count,
        ds.count,
    )
    if a.count and a.count > ds.count:
        opts.notes.append(f"--count {a.count} reduced to the {ds.count} images available")
    calibration = None
    if a.scenario in ("Offline", "Server") and a.qps is None:
        calibration = calibrate(backend, ds)
    estimated = None if calibration is None else calibration["qps"]
    steps = conf_plan(run.doc["loadgen_version"], a.mlperf_conf, a.user_conf)
    mean = sum(latencies[1:]) / max(1, len(latencies) - 1) if len(latencies) > 1 else None
    estimates = Estimates(estimated, mean, backend.plan.workers)
    settings, record = build_settings(lg, opts, a.model_name, steps, estimates)
    record["audit_conf"] = None if a.audit_conf is None else str(a.audit_conf)
    record["qsl_performance_sample_count"] = performance_sample_count(
        ds.count, a.performance_sample_count
    )
    run.doc["settings"] = record
    run.doc["session"] = {
        **backend.plan.as_dict(),
        "warmup_latencies_s": latencies,
        "calibration": calibration,
        "estimated_qps": estimated,
    }
    return settings


def execute(run: Run) -> int:
    """Run the benchmark; returns the exit status (or ends the process after Ctrl-C)."""
    a = run.args
    run.check_inputs()
    ds = run.dataset
    assert ds is not None
    lg = importlib.import_module("mlperf_loadgen")
    run.doc.update(_versions())
    backend = load_backend(a.model, thread_plan(a.scenario, a.threads))
    latencies = warm_up(backend, ds)
    settings = _settings(run, lg, backend, latencies)
    run.prepare_output()
    run.doc["counts"] = {"dataset_images": ds.total_images, "samples": ds.count, "warmup": 5}
    progress: Progress | None = None
    sut = run.sut = SUT(
        lg,
        backend,
        ds,
        a.scenario,
        a.accuracy,
        warn=lambda m: progress.message(m) if progress else print(m),
    )
    progress = Progress(sut, a.quiet)
    sut_h = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
    qsl_h = lg.ConstructQSL(
        ds.count, run.doc["settings"]["qsl_performance_sample_count"], ds.load, ds.unload
    )
    sut.start()
    progress.start()
    audit = "" if a.audit_conf is None else str(a.audit_conf.resolve())
    done, failures = _start_loadgen(
        lg, sut_h, qsl_h, settings, _log_settings(lg, run.output), audit
    )
    interrupted = _wait(done, sut)
    ended = time.time()
    progress.close()
    if not done.is_set():  # interrupted and LoadGen cannot end: keep what exists, leave
        run.doc["loadgen"] = parse_summary(run.output / "mlperf_log_summary.txt")
        run.write_json("interrupted", EXIT_INTERRUPTED)
        print(
            f"interrupted: LoadGen did not finish; its logs so far and harness.json are in "
            f"{run.output}",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(EXIT_INTERRUPTED)
    sut.stop(timeout=10)
    lg.DestroyQSL(qsl_h)
    lg.DestroySUT(sut_h)
    return finish(run, sut, ended, interrupted, failures)


def finish(
    run: Run, sut: SUT, ended: float, interrupted: bool, failures: list[BaseException]
) -> int:
    """After LoadGen: summary, accuracy, the printed lines, harness.json; the exit code."""
    a, ds = run.args, run.dataset
    assert ds is not None
    run.doc["loadgen"] = summary = parse_summary(run.output / "mlperf_log_summary.txt")
    failed = bool(failures) or summary is None
    map_fraction: float | None = None
    if a.accuracy and not interrupted:
        try:
            log = run.output / "mlperf_log_accuracy.json"
            result = evaluate(log, ds.root, chatter=False, annotations=ds.annotations)
            run.doc["accuracy"], map_fraction = result.as_dict(), result.map
            print(result.line)
        except (NoDetections, BadInput) as e:
            run.doc["accuracy"] = {"mAP": None, "error": str(e)}
            print(f"error: {e}", file=sys.stderr)
            failed = True
    with sut.stats.lock:
        latencies = list(sut.stats.latencies)
        errors = sut.stats.errors
    acc = sut.hits.percent(len(latencies)) if a.accuracy else None
    line, figures = reference_line(a.scenario, latencies, ended - ds.last_loaded, acc, map_fraction)
    run.doc["summary"] = {"line": line, **figures}
    if interrupted:
        run.write_json("interrupted", EXIT_INTERRUPTED)
        print(f"interrupted: LoadGen's logs and harness.json are in {run.output}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(line)
    if summary is not None and not a.accuracy:
        rate = summary["samples_per_second"]
        per_s = "" if rate is None else f", {rate:.2f} samples/s"
        print(f"LoadGen result: {summary['result']} ({a.scenario}{per_s})")
    for failure in failures:
        print(f"error: LoadGen failed: {type(failure).__name__}: {failure}", file=sys.stderr)
    if errors:
        print(
            f"error: {errors} sample(s) failed (see {run.output / 'harness.json'})", file=sys.stderr
        )
    code = EXIT_FAILED if errors or failed else EXIT_OK
    run.write_json("ok" if code == EXIT_OK else "failed", code)
    return code


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module doc)."""
    run = Run(parse_args(argv))
    try:
        return execute(run)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        run.write_json("interrupted", EXIT_INTERRUPTED)
        print("interrupted before the test started", file=sys.stderr, flush=True)
        if threading.active_count() > 1:  # e.g. warm-up threads inside ONNX Runtime
            sys.stdout.flush()
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
