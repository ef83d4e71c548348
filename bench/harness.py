"""Benchmark: the RetinaNet harness's Offline throughput against a bare ONNX Runtime loop.

What it measures: ``python -m mlpkg.harness --scenario Offline`` (performance mode) on a
model and a preprocessed dataset, for ``--time`` seconds over the first ``--count`` samples;
its rate is LoadGen's "Samples per second" from ``mlperf_log_summary.txt``.

Peer, in the same run: a bare loop over the same preprocessed samples (held in memory) with
the same ONNX Runtime sessions (the harness's own ``backend.load_backend`` and
``thread_plan("Offline", --threads)``: same session options, same worker threads, same
intra-op threads): every worker calls ``session.run`` on its share of the samples for
``--time`` seconds after a warm-up; rate = predictions / seconds.

The two alternate, ``--repeat`` times each (bare loop first), and the medians are compared;
each harness run gets ``--qps`` = the preceding bare loop's rate, so that its single Offline
query lasts about ``--time`` (the harness's own warm-up estimate is rougher).

Target: harness >= 0.95 x bare loop (LoadGen, queueing and post-processing cost <= 5 %).

Run: ``python bench/harness.py [--model M.onnx --dataset PREPROCESSED] [--time 10]
[--count 64] [--threads N] [--json] [--quick]`` from the repository root. Without
``--model`` and ``--dataset`` the synthetic pair is made in a temporary directory
(:mod:`mlpkg.harness.synth_model`, and ``--count`` images of
:mod:`mlpkg.harness.synth_dataset` through the harness's pre-processing). ``--json``
prints one document with bench/rows.py's ``rows``; ``--quick`` is its smoke pass (16
samples, 1 s, one measurement of each; ``passed`` None).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import rows  # noqa: E402

from mlpkg.harness.backend import load_backend, thread_plan  # noqa: E402
from mlpkg.harness.dataset import open_dataset  # noqa: E402
from mlpkg.harness.report import parse_summary  # noqa: E402

TARGET = 0.95


def time_harness(args: argparse.Namespace, work: Path, qps: float) -> dict[str, Any]:
    """One Offline performance run of the harness; its LoadGen figures."""
    out = Path(tempfile.mkdtemp(prefix="harness-out-", dir=work))
    argv = [
        sys.executable,
        "-m",
        "mlpkg.harness",
        "--scenario",
        "Offline",
        "--quiet",
        "--model",
        str(args.model),
        "--dataset",
        str(args.dataset),
        "--output",
        str(out),
        "--time",
        str(args.time),
        "--count",
        str(args.count),
        "--qps",
        f"{qps:.6g}",
    ]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    subprocess.run(argv, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    summary = parse_summary(out / "mlperf_log_summary.txt")
    if summary is None or summary["samples_per_second"] is None:
        raise SystemExit(f"no samples per second in {out / 'mlperf_log_summary.txt'}")
    doc = json.loads((out / "harness.json").read_text())
    return {
        "samples_per_second": float(summary["samples_per_second"]),
        "result": summary["result"],
        "qps_given": qps,
        "workers": doc["session"]["workers"],
    }


class BareLoop:
    """The bare ONNX Runtime loop (see the module doc); sessions and samples made once."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.plan = thread_plan("Offline", args.threads)
        self.backend = load_backend(args.model, self.plan)
        ds = open_dataset(args.dataset, args.count)
        self.samples = [ds.read(i) for i in range(ds.count)]
        self.seconds = args.time

    def run(self) -> dict[str, Any]:
        """One timed measurement: predictions / seconds over all workers."""
        workers, samples, names = self.plan.workers, self.samples, ["boxes", "scores", "labels"]
        counts = [0] * workers
        barrier = threading.Barrier(workers + 1)

        def loop(w: int) -> None:
            session = self.backend.sessions[w % len(self.backend.sessions)]
            for k in range(5):  # warm-up
                session.run(names, {"images": samples[(w + k) % len(samples)]})
            barrier.wait()
            barrier.wait()
            deadline = time.perf_counter() + self.seconds
            k = w
            while time.perf_counter() < deadline:
                session.run(names, {"images": samples[k % len(samples)]})
                counts[w] += 1
                k += workers

        threads = [threading.Thread(target=loop, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        barrier.wait()  # all warmed up
        start = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        return {
            "samples_per_second": sum(counts) / seconds,
            "predictions": sum(counts),
            "seconds": seconds,
        }


def synthetic_pair(work: Path, count: int) -> tuple[Path, Path]:
    """The synthetic model and ``count`` pre-processed synthetic images, made in ``work``."""
    from mlpkg.harness import preprocess, synth_dataset, synth_model

    model = work / "synthetic.onnx"
    model.write_bytes(synth_model.model_bytes())
    synth_dataset.write_dataset(work / "raw", count)
    if preprocess.main([str(work / "raw"), str(work / "prep"), "--quiet"]) != 0:
        raise SystemExit("pre-processing the synthetic images failed")
    return model, work / "prep"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="default: the synthetic model")
    parser.add_argument("--dataset", type=Path, help="preprocessed (default: synthetic)")
    parser.add_argument("--time", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--count", type=int, default=64, help="samples used (first N)")
    parser.add_argument("--threads", type=int, help="worker threads (default: CPUs)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke pass (see module doc)")
    args = parser.parse_args()
    if args.quick:
        args.count, args.time, args.repeat = min(args.count, 16), 1.0, 1
    if (args.model is None) != (args.dataset is None):
        parser.error("give both --model and --dataset, or neither (the synthetic pair)")
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "harness": []}
    with tempfile.TemporaryDirectory(prefix="mlpkg-bench-harness-") as tmp:
        if args.model is None:
            args.model, args.dataset = synthetic_pair(Path(tmp), args.count)
        bare_loop = BareLoop(args)
        for _ in range(args.repeat):
            runs["bare"].append(bare_loop.run())
            qps = runs["bare"][-1]["samples_per_second"]
            runs["harness"].append(time_harness(args, Path(tmp), qps))
    medians = {k: statistics.median(r["samples_per_second"] for r in v) for k, v in runs.items()}
    ratio = medians["harness"] / medians["bare"]
    row = rows.row(
        "harness Offline (LoadGen, SUT, post-processing) on the synthetic model",
        mlpkg=medians["harness"],
        unit="samples/s",
        peer=medians["bare"],
        peer_name="bare ORT loop, same sessions",
        ratio=ratio,
        target=f"≥ {TARGET} ×",
        passed=ratio >= TARGET,
        runs=args.repeat,
        quick=args.quick,
    )
    doc = {
        "benchmark": "harness",
        "model": str(args.model),
        "dataset": str(args.dataset),
        "time": args.time,
        "count": args.count,
        "session": bare_loop.plan.as_dict(),
        "runs": runs,
        "medians": medians,
        "ratio": ratio,
        "target": TARGET,
        "pass": ratio >= TARGET,
        "rows": [row],
    }
    if args.quick:
        doc["pass"] = None
    ok = bool(doc["pass"]) or args.quick
    if args.json:  # the verdict is in the rows: the measurement was made (bench/rows.py)
        print(json.dumps(doc, indent=2))
        return 0
    s = bare_loop.plan
    print(
        f"workers {s.workers}, intra-op threads {s.intra_op_threads}, sessions "
        f"{s.sessions}, {args.count} samples, {args.time:g} s x {args.repeat} each"
    )
    results = ", ".join(str(r["result"]) for r in runs["harness"])
    print(
        f"{'harness (LoadGen Offline)':<28}{medians['harness']:>12.2f} samples/s"
        f"  (median; LoadGen: {results})"
    )
    print(f"{'bare ONNX Runtime loop':<28}{medians['bare']:>12.2f} samples/s  (median)")
    verdict = "quick, no verdict" if args.quick else "PASS" if doc["pass"] else "FAIL"
    print(f"{verdict}: harness is {ratio:.3f} x the bare loop (target >= {TARGET})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
