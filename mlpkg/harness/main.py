"""The RetinaNet benchmark command: LoadGen + ONNX Runtime on a preprocessed dataset.

Usage::

    python -m mlpkg_harness --model retinanet.onnx --dataset PREPROCESSED --output OUT
        [--scenario {SingleStream,MultiStream,Server,Offline}]
        [--accuracy | --mode {accuracy,performance}] [--count N]
        [--time S] [--qps Q] [--max-latency S] [--threads N] [--samples-per-query N]
        [--performance-sample-count N] [--user-conf F] [--audit-conf F] [--mlperf-conf F]
        [--model-name retinanet] [--quiet]

Steps: check the inputs (:class:`.errors.BadInput`: one sentence naming the file, exit 2,
before LoadGen starts), open the ONNX Runtime session(s) (:mod:`.backend`; thread choice
from :func:`.backend.thread_plan`), five warm-up predictions, TestSettings
(:mod:`.settings`: configuration files, then the options; documented short-run rules), then
LoadGen in a separate thread with the SUT of :mod:`.sut` and the QSL of :mod:`.dataset`,
its logs in ``--output`` (mlperf_log_summary.txt, _detail.txt, _accuracy.json,
_trace.json; an Offline ``--time`` test shorter than asked is run again with a larger query,
the short one's logs kept in ``attempt-N/``: :mod:`.duration`). Afterwards: in accuracy
mode the COCOeval table, ``mAP=NN.NNN%`` and the reference's final line with
``acc=``/``mAP=``; in performance mode the reference's final line
(:func:`.report.reference_line`) and LoadGen's verdict from the summary file.

Exit status: 0; 1 if samples failed, LoadGen failed or (performance mode) wrote no result,
or the accuracy log had no detection to evaluate; 2 for bad input; 128 + the signal's number
after SIGINT (Ctrl-C: 130), SIGTERM (143) or SIGHUP (129). The three signals are handled
alike (:func:`.stop.install_signal_handlers`, at the start of :func:`main`: also when the process
started with SIGINT ignored, as a job started with ``&`` from a script or under ``nohup``
does): the SUT answers everything left with empty responses, LoadGen gets
:data:`.sut.DRAIN_SECONDS` to finish (a second signal stops that wait), harness.json is written
with status "interrupted", and if LoadGen still runs the process ends with ``os._exit``
(its logs are kept as far as written). LoadGen offers no way to stop a test early: Offline
ends once its one query is answered (drained; a query of hundreds of thousands of samples
takes longer than the wait), but in Server, SingleStream and MultiStream LoadGen keeps
issuing queries until its duration and query count are reached, so after an interrupt the
process usually leaves before LoadGen ends: mlperf_log_summary.txt may then be empty and
mlperf_log_accuracy.json incomplete. Whatever LoadGen did write is recorded,
but the figures of an interrupted run are not measurements: harness.json says so in
``note``, and no ``LoadGen result`` line (nor the reference's line) is printed.

Output: harness.json is written before the final lines are printed, and a reader of stdout
or stderr that is gone (closed pipe, terminal hung up) does not stop the command
(:func:`.report.say`).

``OUT/harness.json`` (format 1; not written for bad input, which stops before ``OUT`` is
created; a change of its keys or of their types must bump ``format``: the test suite
compares a fresh file with a golden one)::

    format               1
    harness_version      this package's __version__
    status               "ok" | "failed" (samples failed, no detection to evaluate, LoadGen
                         error, no LoadGen result in performance mode) | "interrupted"
    exit_code            the process's exit status
    signal               "SIGINT" | "SIGTERM" | "SIGHUP" for an interrupted run, else null
    note                 null, or why the figures below are not measurements (interrupted)
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
                         samples per query, seeds); notes (estimates used, caps,
                         short Offline --time tests re-run: :mod:`.duration`);
                         attempts (the LoadGen tests run: [{attempt, offline_expected_qps,
                         samples, seconds, min_duration_met}], one entry unless a short
                         Offline --time test was re-run; [] where the rule does not apply);
                         qsl_performance_sample_count (given to ConstructQSL)
    session              workers, intra_op_threads, inter_op_threads, sessions, cpu_count,
                         provider, graph_optimization_level, execution_mode,
                         warmup_latencies_s (the five warm-up predictions), calibration
                         ({qps, predictions, seconds} of :func:`.sut.calibrate`; null when
                         not needed: --qps, Offline accuracy mode, SingleStream, MultiStream),
                         estimated_qps (the calibrated rate, or null), first_query_qps (the
                         expected QPS the first test was sized from: Offline's
                         OFFLINE_MARGIN x the calibrated rate; else estimated_qps)
    counts               dataset_images, samples (after --count), warmup, issued, answered,
                         succeeded, failed, drained (empty answers after Ctrl-C)
    errors               count, first (message), samples (failed QSL indices, first 1000)
    summary              line (the reference's final line), qps, mean, time, queries,
                         percentiles {"50.0": s, ...}, acc (percent or null), mAP (percent
                         or null)
    loadgen              from mlperf_log_summary.txt (null if absent or without a result, as
                         in accuracy mode or an unfinished test): result (VALID |
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
import io
import json
import os
import platform
import signal
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, duration
from .accuracy import NoDetections, evaluate
from .backend import Backend, load_backend, ort_module, thread_plan
from .dataset import PreprocessedDataset, open_dataset
from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput
from .report import flush_streams, parse_summary, reference_line, say
from .settings import (
    Estimates,
    Options,
    build_settings,
    check_readable,
    conf_plan,
    loadgen_version,
    performance_sample_count,
)
from .stop import INTERRUPTED_NOTE, install_signal_handlers, interrupt_code, interrupted_by
from .sut import SUT, Progress, calibrate, start_loadgen, wait_for_loadgen, warm_up

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
LOG_FILES = (
    "mlperf_log_summary.txt",
    "mlperf_log_detail.txt",
    "mlperf_log_accuracy.json",
    "mlperf_log_trace.json",
)
MODES = ("accuracy", "performance")  # --mode, as CM and MLCFlow spell it


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, exactly as spelt: no prefix of an option is taken for it (``--qp 5``
    is an error, not ``--qps 5``). ``--mode accuracy|performance`` (CM's and MLCFlow's
    spelling) and ``--accuracy`` are one setting: on return ``accuracy`` is a bool and
    ``mode`` is ``"accuracy"`` or ``"performance"``; contradicting them is an error (exit 2)."""
    p = argparse.ArgumentParser(
        prog="python -m mlpkg_harness",
        description="MLPerf Inference RetinaNet (ONNX Runtime).",
        allow_abbrev=False,
    )
    p.add_argument("--scenario", choices=SCENARIOS, default="Offline")
    p.add_argument("--model", required=True, type=Path, help="the ONNX model")
    p.add_argument("--dataset", required=True, type=Path, help="preprocessed dataset dir")
    p.add_argument("--output", type=Path, default=Path("output"), help="LoadGen logs here")
    p.add_argument(
        "--accuracy", action="store_true", help="AccuracyOnly mode (same as --mode accuracy)"
    )
    p.add_argument("--mode", choices=MODES, help="CM's spelling: accuracy or performance (default)")
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
    args = p.parse_args(argv)
    if args.accuracy and args.mode == "performance":
        p.error("--accuracy contradicts --mode performance; give one of them")
    args.accuracy = args.accuracy or args.mode == "accuracy"
    args.mode = "accuracy" if args.accuracy else "performance"
    return args


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
            "signal": None,
            "note": None,
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

    def write_interrupted(self, note: str = INTERRUPTED_NOTE) -> int:
        """harness.json of an interrupted run (see the module doc); returns the exit code."""
        name = interrupted_by().name
        self.doc.update(signal=name, note=note.format(signal=name))
        code = interrupt_code()
        self.write_json("interrupted", code)
        return code


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
    # The estimate sizes Offline's one query (not in accuracy mode: all samples in one query)
    # and paces Server's queries (also in accuracy mode: at mlperf.conf's 1 QPS otherwise).
    if a.qps is None and (a.scenario == "Server" or (a.scenario == "Offline" and not a.accuracy)):
        calibration = calibrate(backend, ds)
    calibrated = None if calibration is None else calibration["qps"]
    estimated, basis = calibrated, ""
    if estimated and a.scenario == "Offline":  # a generous first query (duration.py)
        basis = f"{duration.OFFLINE_MARGIN} x the warm-up's rate {estimated:.3f}"
        estimated *= duration.OFFLINE_MARGIN
    steps = conf_plan(run.doc["loadgen_version"], a.mlperf_conf, a.user_conf)
    mean = sum(latencies[1:]) / max(1, len(latencies) - 1) if len(latencies) > 1 else None
    estimates = Estimates(estimated, mean, backend.plan.workers, basis)
    settings, record = build_settings(lg, opts, a.model_name, steps, estimates)
    record["audit_conf"] = None if a.audit_conf is None else str(a.audit_conf)
    record["qsl_performance_sample_count"] = performance_sample_count(
        ds.count, a.performance_sample_count
    )
    record["attempts"] = []
    run.doc["settings"] = record
    run.doc["session"] = {
        **backend.plan.as_dict(),
        "warmup_latencies_s": latencies,
        "calibration": calibration,
        "estimated_qps": calibrated,
        "first_query_qps": estimated,
    }
    return settings


def execute(run: Run) -> int:
    """Run the benchmark; returns the exit status (or ends the process after an interrupt
    that LoadGen does not follow)."""
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
    duration.clear_attempts(run.output)  # an earlier run's, in a reused --output
    run.doc["counts"] = {"dataset_images": ds.total_images, "samples": ds.count, "warmup": 5}
    progress: Progress | None = None
    sut = run.sut = SUT(
        lg,
        backend,
        ds,
        a.scenario,
        a.accuracy,
        warn=lambda m: progress.message(m) if progress else say(m, err=True),
    )
    progress = Progress(sut, a.quiet)
    sut_h = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
    qsl_h = lg.ConstructQSL(
        ds.count, run.doc["settings"]["qsl_performance_sample_count"], ds.load, ds.unload
    )
    sut.start()
    progress.start()
    audit = "" if a.audit_conf is None else str(a.audit_conf.resolve())
    outcome: dict[str, Any] = {}

    def test() -> bool:
        done, failures = start_loadgen(
            lg, sut_h, qsl_h, settings, _log_settings(lg, run.output), audit
        )
        outcome.update(done=done, failures=failures, interrupted=wait_for_loadgen(done, sut))
        return bool(outcome["interrupted"] or failures)

    if duration.applies(a.scenario, a.accuracy, a.time, a.audit_conf is not None):
        assert a.time is not None
        record = run.doc["settings"]
        duration.run_tests(
            test,
            settings,
            a.time,
            run.output,
            LOG_FILES,
            record["notes"],
            sut.reset,
            failed=lambda: sut.stats.failed(),
            attempts=record["attempts"],
        )
        _record_qps(run, settings)
    else:
        test()
    done, failures, interrupted = outcome["done"], outcome["failures"], outcome["interrupted"]
    ended = time.time()
    progress.close()
    if not done.is_set():  # interrupted and LoadGen cannot end: keep what exists, leave
        _abandon(run)
    sut.stop(timeout=10)
    lg.DestroyQSL(qsl_h)
    lg.DestroySUT(sut_h)
    return finish(run, sut, ended, interrupted, failures)


def _record_qps(run: Run, settings: Any) -> None:
    """The expected QPS of the recorded test (grown when a short test was re-run)."""
    qps = float(settings.offline_expected_qps)
    record = run.doc["settings"]
    if record["values"].get("offline_expected_qps") != qps:
        record["values"]["offline_expected_qps"] = qps
        record["overrides"]["offline_expected_qps"] = qps


def _abandon(run: Run) -> NoReturn:
    """After an interrupt, LoadGen still runs (it cannot be stopped): record what its logs
    hold so far and end the process."""
    run.doc["loadgen"] = parse_summary(run.output / "mlperf_log_summary.txt")
    code = run.write_interrupted()
    say(f"interrupted: LoadGen did not finish; its logs so far and harness.json are in "
        f"{run.output}", err=True)  # fmt: skip
    flush_streams()
    os._exit(code)


def _evaluate(run: Run, report: list[str], problems: list[str]) -> float | None:
    """Accuracy mode: the mAP of LoadGen's accuracy log (fraction; None on failure). What
    pycocotools prints is kept in ``report``, printed after harness.json is written."""
    ds = run.dataset
    assert ds is not None
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            log = run.output / "mlperf_log_accuracy.json"
            result = evaluate(log, ds.root, chatter=False, annotations=ds.annotations)
    except (NoDetections, BadInput) as e:
        run.doc["accuracy"] = {"mAP": None, "error": str(e)}
        problems.append(str(e))
        return None
    finally:
        report.extend(buf.getvalue().splitlines())
    run.doc["accuracy"] = result.as_dict()
    report.append(result.line)
    return result.map


def finish(
    run: Run, sut: SUT, ended: float, interrupted: bool, failures: list[BaseException]
) -> int:
    """After LoadGen: summary, accuracy and harness.json, then the printed lines (so that
    harness.json exists whatever becomes of stdout); the exit code."""
    a, ds = run.args, run.dataset
    assert ds is not None
    summary_file = run.output / "mlperf_log_summary.txt"
    run.doc["loadgen"] = summary = parse_summary(summary_file)
    problems = [f"LoadGen failed: {type(f).__name__}: {f}" for f in failures]
    report: list[str] = []
    map_fraction = _evaluate(run, report, problems) if a.accuracy and not interrupted else None
    with sut.stats.lock:
        latencies = list(sut.stats.latencies)
        errors = sut.stats.errors
    acc = sut.hits.percent(len(latencies)) if a.accuracy else None
    line, figures = reference_line(a.scenario, latencies, ended - ds.last_loaded, acc, map_fraction)
    run.doc["summary"] = {"line": line, **figures}
    if interrupted:  # figures kept, marked as no measurement; no result line printed
        code = run.write_interrupted()
        say(f"interrupted: LoadGen's logs and harness.json are in {run.output}", err=True)
        return code
    report.append(line)
    if not a.accuracy and summary is None:
        problems.append(f"LoadGen wrote no result to {summary_file}: the test did not complete")
    elif not a.accuracy and summary is not None:
        rate = summary["samples_per_second"]
        per_s = "" if rate is None else f", {rate:.2f} samples/s"
        report.append(f"LoadGen result: {summary['result']} ({a.scenario}{per_s})")
    if errors:
        problems.append(f"{errors} sample(s) failed (see {run.output / 'harness.json'})")
    code = EXIT_FAILED if problems else EXIT_OK
    run.write_json("ok" if code == EXIT_OK else "failed", code)
    for text in report:
        say(text)
    for problem in problems:
        say(f"error: {problem}", err=True)
    return code


def _interrupted_early(run: Run) -> int:
    """An interrupt outside LoadGen's test (warm-up, calibration, the end)."""
    code = run.write_interrupted(
        "interrupted by {signal} outside LoadGen's test: the figures here, if any, are not "
        "measurements"
    )
    if run.sut is None:
        say("interrupted before the test started", err=True)
    else:
        say(f"interrupted: harness.json is in {run.output}", err=True)
    if threading.active_count() > 1:  # e.g. warm-up threads inside ONNX Runtime
        flush_streams()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module doc)."""
    previous = install_signal_handlers()
    try:
        run = Run(parse_args(argv))
        try:
            return execute(run)
        except BadInput as e:
            say(f"error: {e}", err=True)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            return _interrupted_early(run)
    finally:
        flush_streams()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
