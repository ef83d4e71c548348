"""Benchmark: the RetinaNet harness on a real-size model against bare ONNX Runtime loops.

Model: :mod:`mlpkg.harness.random_model` (ResNeXt50-32x4d FPN RetinaNet, ~37 M parameters,
~200 G multiply-adds per 800 x 800 image, random weights: the real model's cost without
its download), built once into ``--work``; samples: the synthetic OpenImages-style images
pre-processed by the harness's own pre-processing.

What is measured, in one run, alternating, ``--repeat`` times, each over ``--samples``
samples after an untimed warm-up of every configuration (medians compared):

* **harness**, driven in-process as ``python -m mlpkg.harness`` drives it: its thread plan
  (:func:`~mlpkg.harness.backend.thread_plan`, no ``--threads``), its sessions
  (:func:`~mlpkg.harness.backend.load_backend`), its SUT (queue and worker threads, the
  post-processing into the accuracy payload), its QSL, real LoadGen. Offline: one query of
  ``--samples`` samples, rate = LoadGen's samples per second. SingleStream: ``--samples``
  queries, rate = 1 / LoadGen's mean latency (its "QPS w/ loadgen overhead" has two
  decimals, +-5 % at 0.1/s; it is kept in the runs), p90 of the SUT's latencies by the
  bare loop's formula (also LoadGen's p90, whose index for a few samples differs).
  (The TestSettings are set here, not from mlperf.conf, so that LoadGen asks exactly
  ``--samples`` samples; the five warm-up predictions and the calibration of the command
  are left out: they are not part of the test.)
* **bare ONNX Runtime loops**, the same samples in memory, ``session.run`` only, for each
  candidate setting in :data:`OFFLINE` and :data:`SINGLE` (``--search`` adds
  :data:`SEARCH_OFFLINE` and :data:`SEARCH_SINGLE`): Offline, Python threads taking the
  next sample from a shared counter until ``--samples`` are done, rate = samples / time to
  the last answer; SingleStream, one loop, rate = samples / total time, p90 as LoadGen
  takes it. The best bare rate of each scenario is the peer (the reference's configuration
  below included: it is a bare loop too).
* **the MLPerf reference's configuration** (information): ONNX Runtime's default session
  options (``SessionOptions()`` untouched: intra-op threads = cores, graph optimisation
  all, sequential) with one Python worker thread per core on top sharing the session in
  Offline (the reference's queue runner; this may oversubscribe the cores), and inference
  on LoadGen's thread in SingleStream.

Target: harness >= 0.97 x the best bare loop, Offline and SingleStream (rates).

Run: ``python bench/harness_real.py [--samples 4] [--repeat 3] [--search] [--json]
[--quick] [--work DIR] [--model M.onnx]`` from the repository root (``--work`` keeps the
model, ~150 MB, for the next run; ``--model`` measures another model). Every session
stays loaded for the whole run: about 5 GB of memory by default, 7 GB with ``--search``.
``--quick`` is bench/rows.py's smoke pass: 2 samples, 1 measurement, and the bare loops
use the harness's own sessions (no other session is loaded), so the rows' ``passed`` is
None.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import rows  # noqa: E402

from mlpkg.harness.backend import load_backend, ort_module, thread_plan  # noqa: E402
from mlpkg.harness.dataset import PreprocessedDataset, open_dataset  # noqa: E402
from mlpkg.harness.report import parse_summary  # noqa: E402
from mlpkg.harness.sut import SUT, start_loadgen, wait_for_loadgen  # noqa: E402

TARGET = 0.97
NAMES = ["boxes", "scores", "labels"]


@dataclass(frozen=True)
class Config:
    """One bare-loop setting: Python threads, sessions, and ONNX Runtime session options
    (``None``: ONNX Runtime's default, as the reference leaves it)."""

    name: str
    threads: int  # Python threads calling run (Offline); SingleStream uses one
    sessions: int  # 1: shared by the threads
    intra: int | None
    inter: int | None = None
    parallel: bool | None = None  # ORT_PARALLEL execution mode
    level: str | None = None  # graph optimisation level name; None = default (all)


CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
# the candidates measured in every run (best of each scenario is the peer)
OFFLINE = [
    Config("1 thread, 1 session x intra N", 1, 1, CPUS, 1),
    Config("N threads, N sessions x intra 1", CPUS, CPUS, 1, 1),
    Config("N threads, 1 shared session x intra 1", CPUS, 1, 1, 1),
]
SINGLE = [Config("intra N", 1, 1, CPUS, 1)]
# --search: more of the space (none was better here; docs/harness.md)
SEARCH_OFFLINE = [
    Config("1 thread, intra N, ORT_PARALLEL inter 2", 1, 1, CPUS, 2, True),
    Config("1 thread, intra N, ORT_ENABLE_EXTENDED", 1, 1, CPUS, 1, None, "ORT_ENABLE_EXTENDED"),
    Config("N threads, N sessions x intra 1, ORT_ENABLE_EXTENDED", CPUS, CPUS, 1, 1, None,
           "ORT_ENABLE_EXTENDED"),
]  # fmt: skip
SEARCH_SINGLE = [
    Config("intra N, ORT_PARALLEL inter 2", 1, 1, CPUS, 2, True),
    Config("intra N, ORT_ENABLE_EXTENDED", 1, 1, CPUS, 1, None, "ORT_ENABLE_EXTENDED"),
    Config("intra N, ORT_ENABLE_BASIC", 1, 1, CPUS, 1, None, "ORT_ENABLE_BASIC"),
]
REFERENCE = Config("reference: ORT defaults + 1 Python thread per core", CPUS, 1, None)


def make_sessions(model: Path, cfg: Config) -> list[Any]:
    """The sessions of ``cfg`` (options not named in it are left at ONNX Runtime's)."""
    ort = ort_module()
    ort.set_default_logger_severity(4)
    sessions = []
    for _ in range(cfg.sessions):
        so = ort.SessionOptions()
        if cfg.intra is not None:
            so.intra_op_num_threads = cfg.intra
        if cfg.inter is not None:
            so.inter_op_num_threads = cfg.inter
        if cfg.parallel is not None:
            so.execution_mode = getattr(
                ort.ExecutionMode, "ORT_PARALLEL" if cfg.parallel else "ORT_SEQUENTIAL"
            )
        if cfg.level is not None:
            so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, cfg.level)
        sessions.append(ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"]))
    return sessions


def p90(latencies: list[float]) -> float:
    """LoadGen's percentile: the sorted latency at index floor(0.9 x count)."""
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def bare_offline(sessions: list[Any], threads: int, samples: list[Any], n: int) -> dict[str, Any]:
    """``n`` predictions by ``threads`` threads taking the next sample from a counter."""
    lock, taken, last = threading.Lock(), [0], [0.0]
    barrier = threading.Barrier(threads + 1)

    def loop(w: int) -> None:
        session = sessions[w % len(sessions)]
        barrier.wait()
        while True:
            with lock:
                k = taken[0]
                taken[0] += 1
            if k >= n:
                return
            session.run(NAMES, {"images": samples[k % len(samples)]})
            with lock:
                last[0] = max(last[0], time.perf_counter())

    workers = [threading.Thread(target=loop, args=(w,)) for w in range(threads)]
    for t in workers:
        t.start()
    start = time.perf_counter()
    barrier.wait()
    for t in workers:
        t.join()
    return {"samples_per_second": n / (last[0] - start)}


def bare_single(sessions: list[Any], samples: list[Any], n: int) -> dict[str, Any]:
    """``n`` predictions one after another: rate and p90 latency."""
    latencies = []
    for k in range(n):
        start = time.perf_counter()
        sessions[0].run(NAMES, {"images": samples[k % len(samples)]})
        latencies.append(time.perf_counter() - start)
    return {"samples_per_second": n / sum(latencies), "p90_s": p90(latencies)}


class HarnessUnderTest:
    """The harness's SUT, QSL and sessions for one scenario, made once, tested repeatedly."""

    def __init__(self, model: Path, dataset: PreprocessedDataset, scenario: str, logs: Path):
        lg = importlib.import_module("mlperf_loadgen")
        self.lg, self.scenario, self.logs, self.n = lg, scenario, logs, dataset.count
        self.plan = thread_plan(scenario, None)
        self.backend = load_backend(model, self.plan)
        self.sut = SUT(lg, self.backend, dataset, scenario, False, warn=print)
        self.sut.start()
        self.sut_h = lg.ConstructSUT(self.sut.issue_queries, self.sut.flush_queries)
        self.qsl_h = lg.ConstructQSL(dataset.count, dataset.count, dataset.load, dataset.unload)
        self.tests = 0

    def settings(self, expected_s: float) -> Any:
        lg, s = self.lg, self.lg.TestSettings()
        s.scenario = getattr(lg.TestScenario, self.scenario)
        s.mode = lg.TestMode.PerformanceOnly
        s.min_duration_ms = s.max_duration_ms = 0
        s.min_query_count = s.max_query_count = self.n
        s.performance_sample_count_override = self.n
        s.offline_expected_qps = 1e-3  # the query is min_query_count samples
        s.single_stream_expected_latency_ns = max(1, int(expected_s * 1e9))
        return s

    def run(self, expected_s: float) -> dict[str, Any]:
        self.tests += 1
        out = self.logs / f"harness-{self.scenario}-{self.tests}"
        out.mkdir(parents=True)
        log = self.lg.LogOutputSettings()
        log.outdir, log.copy_summary_to_stdout = str(out), False
        log_settings = self.lg.LogSettings()
        log_settings.log_output = log
        self.sut.reset()
        settings = self.settings(expected_s)
        done, failures = start_loadgen(self.lg, self.sut_h, self.qsl_h, settings, log_settings, "")
        wait_for_loadgen(done, self.sut)
        summary = parse_summary(out / "mlperf_log_summary.txt")
        if failures or summary is None or self.sut.stats.errors:
            raise SystemExit(f"harness test failed: {failures} {out} {self.sut.stats.first_error}")
        figures = {"samples_per_second": float(summary["samples_per_second"])}
        if self.scenario == "SingleStream":  # LoadGen's QPS has two decimals: 0.1 is +-5 %
            figures["samples_per_second"] = 1e9 / float(summary["latency_ns"]["mean"])
            figures["p90_s"] = p90(list(self.sut.stats.latencies))
            figures["loadgen_qps_with_overhead"] = summary["samples_per_second"]
            figures["loadgen_p90_s"] = float(summary["latency_ns"]["p90.00"]) / 1e9
        return figures

    def close(self) -> None:
        self.sut.stop(timeout=10)
        self.lg.DestroyQSL(self.qsl_h)
        self.lg.DestroySUT(self.sut_h)


def prepare(work: Path, count: int, model: Path | None) -> tuple[Path, Path]:
    """The random-weight model (unless ``model`` is given) and ``count`` pre-processed
    synthetic images (made once in ``work``)."""
    from mlpkg.harness import preprocess, random_model, synth_dataset

    model = model or work / "retinanet-random.onnx"
    if not model.exists():
        random_model.build(model)
    prep = work / f"prep-{count}"
    if not (prep / "manifest.json").exists():
        synth_dataset.write_dataset(work / f"raw-{count}", count)
        if preprocess.main([str(work / f"raw-{count}"), str(prep), "--quiet"]) != 0:
            raise SystemExit("pre-processing failed")
    return model, prep


class Bench:
    """The sessions of every configuration (shared where the options are equal) and the
    harness of each scenario, all made and run once before the first measurement."""

    def __init__(self, args: argparse.Namespace, work: Path, logs: Path) -> None:
        model, prep = prepare(work, args.samples, args.model)
        self.dataset = open_dataset(prep, args.samples)
        self.samples = [self.dataset.read(i) for i in range(self.dataset.count)]
        self.n = args.samples
        self.harness = {
            s: HarnessUnderTest(model, self.dataset, s, logs) for s in ("Offline", "SingleStream")
        }
        self.sessions: dict[str, list[Any]] = {}
        if args.quick:  # the harness's own sessions, the only ones loaded
            self.configs = {s: [self._own(s)] for s in self.harness}
        else:
            search = args.search
            self.configs = {
                "Offline": OFFLINE + (SEARCH_OFFLINE if search else []) + [REFERENCE],
                "SingleStream": SINGLE + (SEARCH_SINGLE if search else []) + [REFERENCE],
            }
            self._load(model)
        self.expected_s = self._warm()

    def _warm(self) -> float:
        """Run every session once, untimed (a session's first run costs more); the
        quickest of those runs (SingleStream's expected latency for LoadGen)."""
        every = [s for ss in self.sessions.values() for s in ss]
        every += [s for h in self.harness.values() for s in h.backend.sessions]
        quickest = float("inf")
        for session in {id(s): s for s in every}.values():
            start = time.perf_counter()
            session.run(NAMES, {"images": self.samples[0]})
            quickest = min(quickest, time.perf_counter() - start)
        return quickest

    def _own(self, scenario: str) -> Config:
        plan = self.harness[scenario].plan
        cfg = Config("the harness's own sessions", plan.workers, plan.sessions, None)
        self.sessions[cfg.name] = self.harness[scenario].backend.sessions
        return cfg

    def _load(self, model: Path) -> None:
        cache: dict[tuple[Any, ...], Any] = {}
        for cfg in {c.name: c for cs in self.configs.values() for c in cs}.values():
            key = (cfg.intra, cfg.inter, cfg.parallel, cfg.level)
            for i in range(cfg.sessions):
                if (key, i) not in cache:
                    cache[key, i] = make_sessions(model, cfg)[0]
            self.sessions[cfg.name] = [cache[key, i] for i in range(cfg.sessions)]

    def one_round(self, results: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
        """Every configuration and the harness once, per scenario, starting one later in
        the list each round (the load of a shared machine drifts); a line on stderr for
        each measurement."""
        for sc in ("Offline", "SingleStream"):
            order: list[Config | None] = [*self.configs[sc], None]  # None: the harness
            turn = len(results[sc].get("harness", [])) % len(order)  # a new order each round
            for cfg in order[turn:] + order[:turn]:
                if cfg is None:
                    self._add(results, sc, "harness", self.harness[sc].run(self.expected_s))
                elif sc == "Offline":
                    r = bare_offline(self.sessions[cfg.name], cfg.threads, self.samples, self.n)
                    self._add(results, sc, cfg.name, r)
                else:
                    r = bare_single(self.sessions[cfg.name], self.samples, self.n)
                    self._add(results, sc, cfg.name, r)

    @staticmethod
    def _add(results: dict[str, Any], sc: str, name: str, r: dict[str, Any]) -> None:
        results[sc].setdefault(name, []).append(r)
        print(f"{sc} {name}: {r}", file=sys.stderr, flush=True)

    def close(self) -> None:
        for h in self.harness.values():
            h.close()


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the runs."""
    return {
        k: statistics.median(r[k] for r in runs)
        for k in runs[0]
        if all(r[k] is not None for r in runs)
    }


def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Medians, the best bare loop of each scenario, the ratios and the rows."""
    med = {sc: {name: medians(runs) for name, runs in r.items()} for sc, r in results.items()}
    table: list[dict[str, Any]] = []
    verdicts = {}
    for sc, figures in med.items():
        bare = {k: v for k, v in figures.items() if k != "harness"}  # reference included
        best = max(bare, key=lambda k: bare[k]["samples_per_second"])
        mine, peer = figures["harness"]["samples_per_second"], bare[best]["samples_per_second"]
        ratio = mine / peer
        verdicts[sc] = {"best_bare": best, "ratio": ratio, "pass": ratio >= TARGET}
        common = {"runs": args.repeat, "quick": args.quick}
        table.append(
            rows.row(
                f"harness {sc} on the real-size RetinaNet (random weights), samples/s",
                mlpkg=mine, unit="samples/s", peer=peer, peer_name=f"bare ORT loop ({best})",
                ratio=ratio, target=f"≥ {TARGET} ×", passed=ratio >= TARGET, **common,
            )
        )  # fmt: skip
        if sc == "SingleStream":
            hp, bp = figures["harness"].get("p90_s"), bare[best].get("p90_s")
            if hp is not None and bp is not None:
                table.append(
                    rows.row(
                        "harness SingleStream 90th-percentile latency (information)",
                        mlpkg=hp * 1000, unit="ms", peer=bp * 1000,
                        peer_name=f"bare ORT loop ({best})", ratio=hp / bp, **common,
                    )
                )  # fmt: skip
        if REFERENCE.name in figures:
            ref = figures[REFERENCE.name]["samples_per_second"]
            table.append(
                rows.row(
                    f"harness {sc} against the MLPerf reference's thread configuration "
                    "(information)",
                    mlpkg=mine, unit="samples/s", peer=ref, peer_name=REFERENCE.name,
                    ratio=mine / ref, **common,
                )
            )  # fmt: skip
    return {"medians": med, "verdicts": verdicts, "rows": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=4, help="samples per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each")
    parser.add_argument("--search", action="store_true", help="more bare configurations")
    parser.add_argument("--model", type=Path, help="another model (default: random_model)")
    parser.add_argument("--work", type=Path, help="keep the model here (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke pass: 2 samples, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.repeat, args.search = 2, 1, False
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlpkg-bench-real-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bench = Bench(args, work, Path(tmp))
        results: dict[str, Any] = {"Offline": {}, "SingleStream": {}}
        try:
            for _ in range(args.repeat):
                bench.one_round(results)
        finally:
            bench.close()
    doc = {
        "benchmark": "harness_real",
        "samples": args.samples,
        "repeat": args.repeat,
        "cpus": CPUS,
        "harness_plans": {s: asdict(h.plan) for s, h in bench.harness.items()},
        "configs": {s: [asdict(c) for c in cs] for s, cs in bench.configs.items()},
        "runs": results,
        **summarise(results, args),
        "seconds": time.perf_counter() - started,
    }
    ok = all(v["pass"] for v in doc["verdicts"].values()) or args.quick
    if args.json:  # the verdict is in the rows: the measurement was made (bench/rows.py)
        print(json.dumps(doc, indent=2))
        return 0
    for sc, figures in doc["medians"].items():
        print(f"{sc} ({args.samples} samples x {args.repeat}, medians):")
        for name, f in figures.items():
            p = f.get("p90_s")
            extra = "" if p is None else f", p90 {p * 1000:.0f} ms"
            print(f"  {name:<52}{f['samples_per_second']:>8.3f} samples/s{extra}")
        v = doc["verdicts"][sc]
        verdict = "quick, no verdict" if args.quick else "PASS" if v["pass"] else "FAIL"
        print(f"  {verdict}: harness is {v['ratio']:.3f} x the best bare loop (target >= {TARGET})")
    print(f"({doc['seconds']:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
