"""Run records for the experiments tests: the two real retinanet records in data/
(onnxruntime 1.22.1, and 1.17.3 with --threads 1), and variants of them with chosen
figures, as :class:`~mlpkg.env.runs.RunRecord` s and
:class:`~mlpkg.experiments.select.Group` s."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from mlpkg.env.runs import RunRecord
from mlpkg.experiments.select import Group

DATA = Path(__file__).resolve().parent / "data"
ORT_NEW = "ort-1.22.1"  # onnxruntime 1.22.1, numpy 2.4.6, 40.59 samples/s
ORT_OLD = "ort-1.17.3"  # onnxruntime 1.17.3, numpy 1.26.4, --threads 1


@cache
def _sample(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / f"{name}.result.json").read_text())
    return doc


def sample(name: str = ORT_NEW) -> dict[str, Any]:
    """A fresh copy of a real result.json."""
    return copy.deepcopy(_sample(name))


def perf(rate: float | None, name: str = ORT_NEW, **changes: Any) -> dict[str, Any]:
    """A real record whose throughput is ``rate`` (latency and other fields as recorded),
    with ``changes`` at its top level."""
    res = sample(name)
    res["loadgen"]["samples_per_second"] = rate
    res.update(changes)
    return res


def record(result: dict[str, Any], run_id: str | None = None) -> RunRecord:
    run_id = run_id or str(result.get("id", "run"))
    return RunRecord(run_id, Path("/runs") / run_id, result)


def group(label: str, *results: dict[str, Any], **kwargs: Any) -> Group:
    records = [record(r, f"{label}-{i}") for i, r in enumerate(results)]
    return Group(label, kwargs.pop("experiment", None), kwargs.pop("cell", {}), records, **kwargs)
