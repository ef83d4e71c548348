"""The plots of a report (:mod:`mlpkg.experiments.report`): matplotlib figures of the
groups of a comparison document (format 1, docs/experiments.md), as inline SVG.

Each function takes the document's ``groups`` and returns one ``<svg>`` element (text
that can be put straight into an HTML page: no XML declaration, no DOCTYPE), or ``None``
when no group has the figure it plots:

* :func:`throughput_svg`: samples/s by group, the median as a bar, the min–max as an
  error bar, each repeat as a dot, the median written beside the bar;
* :func:`latency_svg`: the medians of the p50, p90 and p99 latencies (ms) by group,
  each with its min–max;
* :func:`map_svg`: mAP (a percentage) by group, drawn like throughput.

A group without the figure (all its runs failed, or an accuracy run in a throughput plot)
keeps its row, marked "no result". Groups are drawn top to bottom in document order and
named ``#1``, ``#2``… as in the report's table, then their label.

The output is deterministic for a given document and matplotlib version: figures are
:class:`matplotlib.figure.Figure` objects (no pyplot, no global state, no GUI backend),
saved with no metadata (no date) and a fixed hash salt per plot (the salt also keeps the
ids of the SVGs of one page apart). Text stays text (``svg.fonttype: none``), so a
browser's page holds the numbers; ``$`` in labels is escaped so that no label is read as
mathtext, and matplotlib escapes ``<``, ``>``, ``&`` itself.

Figures are records' data: any finite float is drawn without an exception (the x axis
ends by 1e308, where matplotlib's ticks would overflow), and the warnings matplotlib and
NumPy give on such figures are kept in, never printed.
"""

from __future__ import annotations

import contextlib
import io
import math
import textwrap
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mlpkg.experiments.figures import number

BLUE = "#1f77b4"  # matplotlib's first series colour: throughput
ORANGE = "#ff7f0e"
GREEN = "#2ca02c"
RED = "#d62728"
PERCENTILES = (("p50", BLUE), ("p90", ORANGE), ("p99", GREEN))
_WIDTH_IN = 10.0
# The x axis ends by 1e308 at the latest: a record may hold figures up to the largest
# float (~1.8e308), and past 1e308 matplotlib's ticks overflow (OverflowError). Larger
# figures run off the plot's right edge.
_AXIS_END = 1e308
# No date (deterministic output) and no Dublin Core block (its URIs look like links).
_NO_METADATA = ("Date", "Format", "Type", "Creator")
_RC: dict[Any, Any] = {  # matplotlib types the keys as a Literal of every rcParam
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

Group = Mapping[str, Any]


def stats(group: Group, *path: str) -> Mapping[str, Any] | None:
    """The stats object (``n``, ``median``, ``min``, ``max``, ``values``) at ``path`` in
    the group's ``figures``, or None when missing or without a median."""
    node: Any = group.get("figures") or {}
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    if isinstance(node, Mapping) and math.isfinite(_f(node.get("median"), math.nan)):
        return node
    return None


def _f(value: object, default: float) -> float:
    """``value`` as a finite float, else ``default``."""
    found = number(value)
    return default if found is None else found


def _values(s: Mapping[str, Any]) -> list[float]:
    """The repeats' values of a stats object (the numbers among them)."""
    values = s.get("values")
    found = [_f(v, math.nan) for v in values] if isinstance(values, list) else []
    return [v for v in found if math.isfinite(v)]


def label(index: int, group: Group, width: int = 34) -> str:
    """A group's tick label: ``#N`` and its label, wrapped, with ``$`` escaped."""
    text = f"#{index + 1} {group.get('label') or ''}".strip()
    lines = textwrap.wrap(text, width, break_on_hyphens=False)[:3] or [text]
    return "\n".join(lines).replace("$", r"\$")


@contextlib.contextmanager
def _drawing() -> Iterator[None]:
    """mlpkg's style, and matplotlib's and NumPy's warnings kept in (figures from records
    at the ends of the float range make them warn; they must not reach stderr)."""
    with warnings.catch_warnings(), matplotlib.rc_context(_RC), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def throughput_svg(groups: Sequence[Group]) -> str | None:
    """Samples/s by group with the spread; None when no group has samples/s."""
    with _drawing():
        return _spread_plot(groups, ("samples_per_second",), "samples/s", BLUE, "throughput")


def map_svg(groups: Sequence[Group]) -> str | None:
    """mAP by group with the spread; None when no group has an mAP."""
    with _drawing():
        return _spread_plot(groups, ("mAP",), "mAP (%)", GREEN, "map")


def latency_svg(groups: Sequence[Group]) -> str | None:
    """p50/p90/p99 latency medians (ms) by group, each with its min–max; None when no
    group has a latency."""
    if not any(stats(g, "latency_ms", p) for g in groups for p, _ in PERCENTILES):
        return None
    with _drawing():
        return _latency_plot(groups)


def _latency_plot(groups: Sequence[Group]) -> str:
    fig, ax = _figure(len(groups), per_group=0.75)
    xmax = 0.0
    height = 0.8 / len(PERCENTILES)
    for k, (pct, colour) in enumerate(PERCENTILES):
        rows = [(i, stats(g, "latency_ms", pct)) for i, g in enumerate(groups)]
        present = [(i, s) for i, s in rows if s is not None]
        ys = [i - 0.4 + height * (k + 0.5) for i, _ in present]
        med = [float(s["median"]) for _, s in present]
        ax.barh(ys, med, height=height * 0.9, color=colour, label=f"{pct} (ms)")
        _error_bars(ax, ys, present)
        xmax = max([xmax, *(_top(s) for _, s in present)])
        for y, m in zip(ys, med, strict=True):
            ax.annotate(fmt(m), (m, y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7)  # fmt: skip
    _missing(ax, groups, lambda g: any(stats(g, "latency_ms", p) for p, _ in PERCENTILES))
    _finish(ax, groups, "latency (ms): bar = median, whiskers = min–max of the repeats", xmax)
    ax.legend(loc="lower right", frameon=False, fontsize=8)
    return _svg(fig, "latency")


def _spread_plot(
    groups: Sequence[Group], path: tuple[str, ...], unit: str, colour: str, salt: str
) -> str | None:
    rows = [(i, stats(g, *path)) for i, g in enumerate(groups)]
    present = [(i, s) for i, s in rows if s is not None]
    if not present:
        return None
    fig, ax = _figure(len(groups))
    ys = [float(i) for i, _ in present]
    med = [float(s["median"]) for _, s in present]
    ax.barh(ys, med, height=0.6, color=colour, alpha=0.35, edgecolor=colour, label="median")
    _error_bars(ax, ys, present)
    for y, (_, s) in zip(ys, present, strict=True):
        values = _values(s)
        ax.scatter(values, _jitter(y, len(values)), s=20, color=colour, zorder=5,
                   edgecolors="white", linewidths=0.5)  # fmt: skip
        ax.annotate(f"{fmt(float(s['median']))} (n={s.get('n', len(values))})", (_top(s), y),
                    xytext=(6, 0), textcoords="offset points", va="center")  # fmt: skip
    _missing(ax, groups, lambda g: stats(g, *path) is not None)
    xmax = max(_top(s) for _, s in present)
    _finish(ax, groups, f"{unit}: bar = median, whiskers = min–max, dots = repeats", xmax)
    return _svg(fig, salt)


def _figure(n: int, per_group: float = 0.55) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(_WIDTH_IN, 1.3 + per_group * max(n, 1)), layout="constrained")
    return fig, fig.add_subplot()


def _jitter(y: float, n: int) -> list[float]:
    """Rows for ``n`` repeat dots around ``y``, spread evenly over the bar's height so
    that equal values stay visible (deterministic, unlike random jitter)."""
    if n <= 1:
        return [y] * n
    return [y - 0.2 + 0.4 * k / (n - 1) for k in range(n)]


def _top(s: Mapping[str, Any]) -> float:
    """The right end of a group's row: its max, or its largest repeat."""
    median = float(s["median"])
    return max(median, _f(s.get("max"), median), *_values(s))


def _error_bars(
    ax: Axes, ys: Sequence[float], present: Sequence[tuple[int, Mapping[str, Any]]]
) -> None:
    med = [float(s["median"]) for _, s in present]
    lo = [max(0.0, m - _f(s.get("min"), m)) for m, (_, s) in zip(med, present, strict=True)]
    hi = [max(0.0, _f(s.get("max"), m) - m) for m, (_, s) in zip(med, present, strict=True)]
    ax.errorbar(med, ys, xerr=[lo, hi], fmt="none", ecolor="#333333", elinewidth=1.2,
                capsize=4, zorder=4)  # fmt: skip


def _missing(ax: Axes, groups: Sequence[Group], has: Any) -> None:
    """Mark the groups without the figure, at the left of their row."""
    for i, g in enumerate(groups):
        if not has(g):
            ax.annotate("no result", (0, i), xytext=(4, 0), textcoords="offset points",
                        va="center", color=RED, style="italic")  # fmt: skip


def _finish(ax: Axes, groups: Sequence[Group], xlabel: str, xmax: float) -> None:
    """Axes, ticks and limits: from 0 to past the largest value, leaving room for the
    numbers written beside the bars (but no further than :data:`_AXIS_END`)."""
    ax.set_yticks(range(len(groups)), [label(i, g) for i, g in enumerate(groups)])
    ax.set_ylim(len(groups) - 0.5, -0.5)  # the first group on top
    ax.set_xlim(0, min(xmax * 1.25, _AXIS_END) if xmax > 0 else 1.0)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def _svg(fig: Figure, salt: str) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"mlpkg-{salt}"}):
        fig.savefig(buf, format="svg", metadata=dict.fromkeys(_NO_METADATA))
    text = buf.getvalue()
    return text[text.index("<svg") :].strip()


def fmt(value: float) -> str:
    """A figure as the report prints it: 4 significant digits, no exponent below 1e6."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.2e}"
