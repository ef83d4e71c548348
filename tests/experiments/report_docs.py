"""Comparison documents (format 1, docs/experiments.md) for the report tests: built by
hand (:func:`doc`, :func:`sweep_doc` and the odd cases), and one made by
:func:`mlpkg.experiments.compare.compare` from the real retinanet records in data/
(:func:`real_doc`)."""

from __future__ import annotations

import statistics
from typing import Any

from mlpkg.experiments.compare import compare
from tests.experiments.records import ORT_NEW, ORT_OLD, group, perf, sample

HOSTILE = "<script>alert(1)</script>"
BAD_ALLOC = "error: the app exited with status 134 (onnxruntime: std::bad_alloc in Run())"


def stat(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"n": len(values), "median": statistics.median(values), "min": min(values),
            "max": max(values), "values": values}  # fmt: skip


def run(run_id: str, rate: float | None = None, *, status: str = "ok", error: str | None = None,
        latency: tuple[float, float, float] | None = None, m_ap: float | None = None,
        result: str | None = "VALID") -> dict[str, Any]:  # fmt: skip
    p50, p90, p99 = latency or (None, None, None)
    return {
        "id": run_id, "status": status, "error": error, "dir": f"/home/u/.mlpkg/runs/{run_id}",
        "reproduce": f"mlpkg run --lock /home/u/.mlpkg/runs/{run_id}",
        "command": ["python3", "-m", "mlpkg_harness", "--scenario", "Offline"],
        "figures": {"samples_per_second": rate, "mAP": m_ap, "result": result,
                    "latency_ms": {"p50": p50, "p90": p90, "p99": p99}},
    }  # fmt: skip


def group_doc(label: str, runs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    ok = [r["figures"] for r in runs if r["status"] == "ok"]

    def values(*path: str) -> list[float]:
        out = []
        for f in ok:
            v: Any = f
            for p in path:
                v = v[p]
            if v is not None:
                out.append(v)
        return out

    counts: dict[str, int] = {}
    for f in ok:
        if f["result"]:
            counts[f["result"]] = counts.get(f["result"], 0) + 1
    figures = {
        "samples_per_second": stat(values("samples_per_second")),
        "latency_ms": {p: stat(values("latency_ms", p)) for p in ("p50", "p90", "p99")},
        "mAP": stat(values("mAP")), "result": counts,
    }  # fmt: skip
    return {"label": label, "experiment": extra.pop("experiment", "exp-20261129-ort"),
            "cell": {}, "app": "retinanet-offline+synthetic", "scenario": "Offline",
            "mode": "PerformanceOnly", "runs": runs, "problems": [], "pending": 0,
            "figures": figures, "versions": {}, **extra}  # fmt: skip


def doc(groups: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"format": 1, "groups": groups, "verdicts": [],
            "apps": {"same": True, "values": ["retinanet-offline+synthetic"], "note": None},
            "settings": {"differ": {}}, "machine": {"differ": {}}, "closure": [],
            **extra}  # fmt: skip


RATES = {"1.17.3": [38.2, 39.1, 38.7], "1.20.1": [44.9, 45.6, 45.2], "1.22.1": [40.1, 40.6]}


def sweep_doc() -> dict[str, Any]:
    """3 ONNX Runtime versions × 3 repeats; the last version's third run failed; closure
    diffs of the later versions against the first."""
    groups = []
    for v, rates in RATES.items():
        runs = [run(f"run-{v}-{i}", r, latency=(r * 60, r * 110, r * 125))
                for i, r in enumerate(rates)]  # fmt: skip
        if v == "1.22.1":
            runs.append(run(f"run-{v}-2", status="failed", error=BAD_ALLOC, result=None))
        groups.append(group_doc(f"onnxruntime=onnxruntime@{v} threads=2", runs))
    verdicts = [
        {"figure": "samples_per_second", "base": 0, "other": 1, "ratio": 1.168, "verdict": "higher"},
        {"figure": "latency_ms.p90", "base": 0, "other": 1, "ratio": 1.168, "verdict": "higher"},
        {"figure": "samples_per_second", "base": 0, "other": 2, "ratio": 1.047,
         "verdict": "within spread"},
    ]  # fmt: skip
    closure = [_closure_entry(1, "1.20.1"), _closure_entry(2, "1.22.1")]
    settings = {"differ": {"offline_expected_qps": ["38.1", "45.3", "40.2"]}}
    arguments = {"differ": {"with onnxruntime": [f"onnxruntime@{v}" for v in RATES]}}
    return doc(groups, verdicts=verdicts, closure=closure, settings=settings, arguments=arguments)


def _closure_entry(other: int, version: str) -> dict[str, Any]:
    return {
        "base": 0, "other": other,
        "version_changed": [{"name": "onnxruntime", "from": "1.17.3", "to": version,
                             "from_path": "/s/aaa-onnxruntime-1.17.3",
                             "to_path": f"/s/bbb-onnxruntime-{version}"}],
        "rebuilt": [{"name": "retinanet-offline", "version": "1.0", "from_path": "/s/ccc-app",
                     "to_path": "/s/ddd-app", "because": [f"onnxruntime 1.17.3 -> {version}"],
                     "chain": [["retinanet-offline", "mlpkg-harness", "onnxruntime"]]}],
        "added": [{"name": "flatbuffers", "version": "25.2.10", "path": "/s/eee-flatbuffers"}],
        "removed": [{"name": "coloredlogs", "version": "15.0.1", "path": "/s/fff-coloredlogs"}],
    }  # fmt: skip


def one_group_doc() -> dict[str, Any]:
    return doc([group_doc("20261129T221827.290Z-retinanet-offline-eb6a3e",
                          [run("r1", 57.2, latency=(2481.6, 4864.3, 5123.2))],
                          experiment=None)])  # fmt: skip


def all_failed_doc() -> dict[str, Any]:
    failed = [run(f"f{i}", status="failed", error=BAD_ALLOC, result=None) for i in range(2)]
    g = group_doc("onnxruntime=onnxruntime@1.12.1", failed, pending=1,
                  problems=["point 3: its closure did not build: error: no wheel of "
                            "onnxruntime 1.12.1 for Python 3.11"])  # fmt: skip
    return doc([g])


def accuracy_doc() -> dict[str, Any]:
    groups = [
        group_doc(f"onnxruntime=onnxruntime@{v}", [run(f"a-{v}", m_ap=m, result=None)])
        for v, m in (("1.17.3", 37.57), ("1.22.1", 37.55))
    ]
    return doc(groups)


def hostile_doc() -> dict[str, Any]:
    g = group_doc(f"threads={HOSTILE} $x$ & more",
                  [run(f"h-{HOSTILE}", 10.0, latency=(1.0, 2.0, 3.0)),
                   run("h2", status="failed", error=f"error: {HOSTILE}", result=None)],
                  problems=[f"problem {HOSTILE}"])  # fmt: skip
    g["runs"][0]["reproduce"] = f"mlpkg run --lock '/x/{HOSTILE}'"
    return doc([g, group_doc("other", [run("o", 12.0)])],
               apps={"same": False, "values": [HOSTILE], "note": HOSTILE},
               settings={"differ": {HOSTILE: [HOSTILE, "b"]}},
               closure=[{"base": 0, "other": 1, "version_changed": [],
                         "rebuilt": [{"name": HOSTILE, "version": "1", "because": [HOSTILE],
                                      "chain": [[HOSTILE, "x"]]}],
                         "added": [], "removed": []}])  # fmt: skip


def real_doc() -> dict[str, Any]:
    """compare() of the real records: 1.17.3 (threads 1) and 1.22.1, 3 repeats each, and a
    1.22.1 group whose third run failed."""
    old = [perf(r, ORT_OLD) for r in (57.2, 56.1, 58.0)]
    new = [perf(r) for r in (40.6, 41.2, 39.9)]
    failed = sample(ORT_NEW)
    failed.update(status="failed", exit_code=134, error=BAD_ALLOC, loadgen=None)
    return compare([
        group("onnxruntime=onnxruntime@1.17.3 threads=1", *old, experiment="exp-demo"),
        group("onnxruntime=onnxruntime@1.22.1 threads=2", *new, experiment="exp-demo"),
        group("onnxruntime=onnxruntime@1.22.1 threads=4", *new[:2], failed, experiment="exp-demo"),
    ])  # fmt: skip
