"""Benchmark: the RetinaNet harness's Offline throughput against a bare ONNX Runtime loop.

What it measures: ``python -m mlpkg.harness --scenario Offline`` (performance mode) on a
model and a preprocessed dataset, for ``--time`` seconds over the first ``--count`` samples;
its rate is LoadGen's "Samples per second" from ``mlperf_log_summary.txt``.

Peer, in the same run: a bare loop over the same preprocessed samples (held in memory) with
the same ONNX Runtime sessions (the harness's own ``backend.load_backend`` and
``thread_plan("Offline", --threads)``: same session options, same worker threads, same
intra-op threads): every worker calls ``session.run`` on its share of the samples for
``--time`` seconds after a warm-up; rate = predictions / seconds.

Target: harness >= 0.95 x bare loop (LoadGen, queueing and post-processing cost <= 5 %).

Run: ``python bench/harness.py --model M.onnx --dataset PREPROCESSED [--time 10]
[--count 64] [--threads N] [--json]`` from the repository root (e.g. on the synthetic
model: ``python -m mlpkg.harness.synth_model`` and the synthetic preprocessed set).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from mlpkg.harness.backend import load_backend, thread_plan  # noqa: E402
from mlpkg.harness.dataset import open_dataset  # noqa: E402
from mlpkg.harness.report import parse_summary  # noqa: E402

TARGET = 0.95


def time_harness(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One Offline performance run of the harness; its LoadGen figures."""
    out = work / "harness-out"
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
        "session": doc["session"],
    }


def time_bare(args: argparse.Namespace) -> dict[str, Any]:
    """The bare ONNX Runtime loop (see the module doc)."""
    plan = thread_plan("Offline", args.threads)
    backend = load_backend(args.model, plan)
    ds = open_dataset(args.dataset, args.count)
    samples = [ds.read(i) for i in range(ds.count)]
    names = ["boxes", "scores", "labels"]
    counts = [0] * plan.workers
    barrier = threading.Barrier(plan.workers + 1)

    def loop(w: int) -> None:
        session = backend.sessions[w % len(backend.sessions)]
        for k in range(5):  # warm-up
            session.run(names, {"images": samples[k % len(samples)]})
        barrier.wait()
        barrier.wait()
        deadline = time.perf_counter() + args.time
        k = w
        while time.perf_counter() < deadline:
            session.run(names, {"images": samples[k % len(samples)]})
            counts[w] += 1
            k += plan.workers

    threads = [threading.Thread(target=loop, args=(w,)) for w in range(plan.workers)]
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
        "session": plan.as_dict(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True, help="preprocessed dataset")
    parser.add_argument("--time", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--count", type=int, default=64, help="samples used (first N)")
    parser.add_argument("--threads", type=int, help="worker threads (default: CPUs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlpkg-bench-harness-") as tmp:
        harness = time_harness(args, Path(tmp))
    bare = time_bare(args)
    ratio = harness["samples_per_second"] / bare["samples_per_second"]
    doc = {
        "benchmark": "harness",
        "model": str(args.model),
        "dataset": str(args.dataset),
        "time": args.time,
        "count": args.count,
        "harness": harness,
        "bare": bare,
        "ratio": ratio,
        "target": TARGET,
        "pass": ratio >= TARGET,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    s = bare["session"]
    print(
        f"workers {s['workers']}, intra-op threads {s['intra_op_threads']}, "
        f"sessions {s['sessions']}, {args.count} samples, {args.time:g} s each"
    )
    print(
        f"{'harness (LoadGen Offline)':<28}{harness['samples_per_second']:>12.2f} samples/s"
        f"  ({harness['result']})"
    )
    print(f"{'bare ONNX Runtime loop':<28}{bare['samples_per_second']:>12.2f} samples/s")
    verdict = "PASS" if doc["pass"] else "FAIL"
    print(f"{verdict}: harness is {ratio:.3f} x the bare loop (target >= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
