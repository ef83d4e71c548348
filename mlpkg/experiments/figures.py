"""The figures of run records, their statistics over a group of repeats, and verdicts.

:func:`run_figures` reads one run record (``result.json``, :mod:`mlpkg.env.runs`) into
the figures the comparison document shows for a run::

    {"samples_per_second": float | None,          # loadgen.samples_per_second
     "latency_ms": {"p50": ..., "p90": ..., "p99": ...},   # loadgen.latency_ns, in ms
     "mAP": float | None,                         # accuracy.mAP, as a percentage
     "result": str | None}                        # LoadGen's VALID / INVALID

A figure that is missing or not a finite number (a string, a boolean, NaN) is None, never
an error. An interrupted run's figures are not measurements (as in
:func:`mlpkg.env.runs.headline`): they are all None.

:func:`stats` gives the median, minimum and maximum of a group's values (None when it has
none); :func:`verdict` compares two such statistics: "higher" or "lower" only where the
min–max ranges do not overlap, "within spread" where they do, "no spread (1 run)" where
either side is a single run. The ratio is the other median over the base median, None
where that is not finite (figures that are not finite are not figures); the median of
finite figures is always finite (no overflow near the largest float).

:data:`FIGURES` names the figures compared, as the comparison document's verdicts name
them: ``samples_per_second``, ``latency_ms.p50``, ``latency_ms.p90``, ``latency_ms.p99``,
``mAP``. :func:`figure_of` reads one of them from a run's or a group's figures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any

PERCENTILES = {"p50": "p50.00", "p90": "p90.00", "p99": "p99.00"}
FIGURES = ("samples_per_second", "latency_ms.p50", "latency_ms.p90", "latency_ms.p99", "mAP")
# For these, a lower value is the better one (the text says better / worse).
LOWER_IS_BETTER = frozenset({"latency_ms.p50", "latency_ms.p90", "latency_ms.p99"})
HIGHER, LOWER, WITHIN, ONE_RUN = "higher", "lower", "within spread", "no spread (1 run)"


def number(value: object) -> float | None:
    """``value`` as a float when it is a finite number (not a boolean, not an integer
    too large for a float), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:  # JSON has integers of any size: 10**400
        return None
    return result if math.isfinite(result) else None


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def run_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run record (see the module docstring)."""
    figures: dict[str, Any] = {
        "samples_per_second": None,
        "latency_ms": dict.fromkeys(PERCENTILES),
        "mAP": None,
        "result": None,
    }
    if result.get("status") == "interrupted":
        return figures
    loadgen = _table(result.get("loadgen"))
    figures["samples_per_second"] = number(loadgen.get("samples_per_second"))
    latency = _table(loadgen.get("latency_ns"))
    for name, key in PERCENTILES.items():
        ns = number(latency.get(key))
        figures["latency_ms"][name] = None if ns is None else ns / 1e6
    m_ap = number(_table(result.get("accuracy")).get("mAP"))
    figures["mAP"] = None if m_ap is None else m_ap * 100
    verdict = loadgen.get("result")
    figures["result"] = verdict if isinstance(verdict, str) and verdict else None
    return figures


def figure_of(figures: dict[str, Any] | None, name: str) -> Any:
    """The figure ``name`` (one of :data:`FIGURES`, dotted for latency) of a run's or a
    group's figures; None when absent."""
    value: Any = figures
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def stats(values: Iterable[object]) -> dict[str, Any] | None:
    """``{"n", "median", "min", "max", "values"}`` of the numbers among ``values`` (others
    are passed over), or None when there are none."""
    numbers = [x for x in (number(v) for v in values) if x is not None]
    if not numbers:
        return None
    return {
        "n": len(numbers),
        "median": _median(numbers),
        "min": min(numbers),
        "max": max(numbers),
        "values": numbers,
    }


def _median(numbers: list[float]) -> float:
    """The median of finite ``numbers``, finite itself: where the two middle ones are
    near the largest float, their sum overflows (statistics.median gives inf), so their
    halves are added instead."""
    middle = statistics.median(numbers)
    if math.isfinite(middle):
        return middle
    ordered = sorted(numbers)
    k = len(ordered) // 2
    return ordered[k - 1] / 2 + ordered[k] / 2


def verdict(base: dict[str, Any] | None, other: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"ratio", "verdict"}`` of ``other`` against ``base`` (two :func:`stats`), or None
    when either has no values. The ratio is None when the base median is 0, and when the
    ratio is not finite (1e300 / 1e-300): figures that are not finite are not figures."""
    if base is None or other is None:
        return None
    ratio = other["median"] / base["median"] if base["median"] else None
    ratio = ratio if ratio is not None and math.isfinite(ratio) else None
    if base["n"] < 2 or other["n"] < 2:
        word = ONE_RUN
    elif other["min"] > base["max"]:
        word = HIGHER
    elif other["max"] < base["min"]:
        word = LOWER
    else:
        word = WITHIN
    return {"ratio": ratio, "verdict": word}


def group_figures(runs_figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The statistics of a group, given the figures of its runs with status ok: those of
    the comparison document's ``groups[].figures`` (LoadGen's verdicts counted)."""
    counts: dict[str, int] = {}
    for figures in runs_figures:
        if isinstance(word := figures.get("result"), str):
            counts[word] = counts.get(word, 0) + 1
    return {
        "samples_per_second": stats(f.get("samples_per_second") for f in runs_figures),
        "latency_ms": {
            name: stats(figure_of(f, f"latency_ms.{name}") for f in runs_figures)
            for name in PERCENTILES
        },
        "mAP": stats(f.get("mAP") for f in runs_figures),
        "result": counts,
    }
