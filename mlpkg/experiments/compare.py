"""The comparison document (format 1, docs/experiments.md) of groups of runs, and its
rendering for a terminal.

:func:`compare` takes the :class:`~mlpkg.experiments.select.Group` s given on the command
line, the first being the base, and returns the document ``mlpkg runs compare --json``
prints and the HTML report renders:

* ``groups``: each with its runs (status, ``error:`` line, figures, the command line that
  replays it exactly: ``mlpkg run --lock <run dir>``), its problems and pending points,
  the statistics of its figures over its runs with status ok
  (:func:`mlpkg.experiments.figures.group_figures`) and the versions of its first ok run;
* ``verdicts``: each group after the base against the base, per figure of
  :data:`~mlpkg.experiments.figures.FIGURES` both sides have
  (:func:`~mlpkg.experiments.figures.verdict`); the base is the first group with a
  figure (usually the first group; not one whose closure did not build, so that it has
  no run, or whose runs all failed), and each verdict names it (``base``, an index);
* ``apps``: whether the runs are of the same app, with a note when not (allowed: their
  figures are compared as they are);
* ``settings`` and ``machine``: the keys whose values differ between the groups (the
  settings as LoadGen read them back, ``settings.values``, flattened with dots; the
  machine of ``result.machine``), with the values per group as text (None for a group
  without that key); a group is represented by its first ok run, else its first run, and
  a group with neither, or whose run has no such table, takes no part;
* ``closure``: the closure diff (:func:`mlpkg.experiments.closure.closure_diff`) of each
  distinct closure (by app path) against the base's: the first group whose run has a
  lock, named by each diff (``base``).

Nothing here reads files or raises for odd figures: the document is made of the records
as they were read, except that a float that is not finite (NaN, an overflowing ratio) is
None, so that the document is strict JSON. :func:`format_text` renders the document as
lines of text, the records' text escaped (:func:`mlpkg.store.verify.show_name`: control
characters, escape sequences and newlines shown as ``\\x1b``, ``\\n``).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlpkg.experiments import figures as fig
from mlpkg.store.verify import show_name

if TYPE_CHECKING:
    from mlpkg.env.runs import RunRecord
    from mlpkg.experiments.select import Group

FORMAT = 1
APPS_NOTE = "the runs are of different apps: {}; their figures are compared as they are"


def compare(groups: Sequence[Group]) -> dict[str, Any]:
    """The comparison document of ``groups`` (see the module docstring)."""
    docs = [_group_doc(g) for g in groups]
    reps = [_representative(g) for g in groups]
    doc: dict[str, Any] = {
        "format": FORMAT,
        "groups": docs,
        "verdicts": _verdicts(docs),
        "apps": _apps(groups),
        "arguments": {"differ": _differ([_arguments(r) for r in reps])},
        "settings": {"differ": _differ([_settings(r) for r in reps])},
        "machine": {"differ": _differ([_machine(r) for r in reps])},
        "closure": _closures(reps),
    }
    strict: dict[str, Any] = _finite(doc)
    return strict


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite (a record's NaN, say) made None, so
    that the document is strict JSON: figures that are not finite are not figures."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _representative(group: Group) -> RunRecord | None:
    """The run that stands for a group: its first ok run, else its first run."""
    ok = [r for r in group.records if r.status == "ok"]
    return (ok or group.records)[0] if group.records else None


def _run_doc(record: RunRecord) -> dict[str, Any]:
    res = record.result
    command = res.get("command")
    return {
        "id": record.id,
        "status": record.status,
        "error": res.get("error"),
        "dir": str(record.dir),
        "reproduce": f"mlpkg run --lock {shlex.quote(str(record.dir))}",
        "command": command if isinstance(command, list) else [],
        "figures": fig.run_figures(res),
    }


def _group_doc(group: Group) -> dict[str, Any]:
    runs = [_run_doc(r) for r in group.records]
    rep = _representative(group)
    res = rep.result if rep is not None else {}
    versions = res.get("versions")
    return {
        "label": group.label,
        "experiment": group.experiment,
        "cell": dict(group.cell),
        "app": ", ".join(_distinct(r.result.get("app") for r in group.records)),
        "scenario": res.get("scenario"),
        "mode": res.get("mode"),
        "runs": runs,
        "problems": list(group.problems),
        "pending": group.pending,
        "figures": fig.group_figures([r["figures"] for r in runs if r["status"] == "ok"]),
        "versions": dict(versions) if isinstance(versions, dict) else {},
    }


def _distinct(values: Any) -> list[str]:
    seen: list[str] = []
    for value in values:
        if isinstance(value, str) and value not in seen:
            seen.append(value)
    return seen


def _verdicts(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each group after the base against the base: the first group with a figure (one
    whose runs all failed, or that has none, is passed over)."""
    has = [any(fig.figure_of(d["figures"], n) for n in fig.FIGURES) for d in docs]
    if True not in has:
        return []
    base = has.index(True)
    verdicts = []
    for other in range(base + 1, len(docs)):
        for name in fig.FIGURES:
            found = fig.verdict(
                fig.figure_of(docs[base]["figures"], name),
                fig.figure_of(docs[other]["figures"], name),
            )
            if found is not None:
                verdicts.append({"figure": name, "base": base, "other": other, **found})
    return verdicts


def _apps(groups: Sequence[Group]) -> dict[str, Any]:
    apps = _distinct(r.result.get("app") for g in groups for r in g.records)
    same = len(apps) <= 1
    return {
        "same": same,
        "values": apps,
        "note": None if same else APPS_NOTE.format(", ".join(apps)),
    }


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _settings(record: RunRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    settings = record.result.get("settings")
    values = settings.get("values") if isinstance(settings, dict) else None
    return _flatten(values) if isinstance(values, dict) else None


# What the harness's session records that is a measurement, not a setting.
_MEASURED = ("warmup_latencies_s", "calibration", "estimated_qps", "first_query_qps")


def _arguments(record: RunRecord | None) -> dict[str, Any] | None:
    """How the run was asked for: its app options, its --with overrides, and the thread
    plan the app chose from them (the harness's ``session``)."""
    if record is None:
        return None
    res = record.result
    table: dict[str, Any] = {"args": " ".join(str(a) for a in res.get("args") or [])}
    overrides = res.get("overrides")
    if isinstance(overrides, dict):
        table.update({f"with {k}": v for k, v in overrides.items()})
    session = res.get("session")
    if isinstance(session, dict):
        plan = {k: v for k, v in session.items() if k not in _MEASURED}
        table.update(_flatten(plan, "session."))
    return table


def _machine(record: RunRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    machine = record.result.get("machine")
    return _flatten(machine) if isinstance(machine, dict) else {}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _differ(tables: list[dict[str, Any] | None]) -> dict[str, list[str | None]]:
    """The keys whose values are not the same in every table present, with the value of
    each (None for a key a table lacks, and for a table absent)."""
    present = [t for t in tables if t is not None]
    keys = sorted({k for t in present for k in t})
    differ: dict[str, list[str | None]] = {}
    for key in keys:
        if len({_text(t.get(key)) for t in present}) > 1:
            differ[key] = [None if t is None else _text(t.get(key)) for t in tables]
    return differ


def _closure_key(record: RunRecord) -> str:
    app_path = record.result.get("app_path")
    if isinstance(app_path, str) and app_path:
        return app_path
    lock = record.result.get("lock")
    nodes = lock.get("node") if isinstance(lock, dict) else None
    paths = [str(n.get("path")) for n in nodes or [] if isinstance(n, dict)]
    return json.dumps(sorted(paths))


def _lock(record: RunRecord) -> dict[str, Any] | None:
    lock = record.result.get("lock")
    return lock if isinstance(lock, dict) else None


def _closures(reps: list[RunRecord | None]) -> list[dict[str, Any]]:
    """The closure diff of each distinct closure against the base's: the first group
    whose run has a lock (a group with no run, its closure not built, is passed over)."""
    from mlpkg.experiments.closure import closure_diff

    locked = [(i, r, lock) for i, r in enumerate(reps) if r and (lock := _lock(r)) is not None]
    if not locked:
        return []
    (base, base_rep, base_lock), *others = locked
    seen = {_closure_key(base_rep)}
    diffs = []
    for index, rep, lock in others:
        if _closure_key(rep) in seen:
            continue
        seen.add(_closure_key(rep))
        diffs.append({"base": base, "other": index, **closure_diff(base_lock, lock)})
    return diffs


# -- the text rendering ----------------------------------------------------------------------

FIGURE_NAMES = {"samples_per_second": "samples/s", "latency_ms.p50": "p50 latency",
                "latency_ms.p90": "p90 latency", "latency_ms.p99": "p99 latency",
                "mAP": "mAP"}  # fmt: skip


def format_text(doc: dict[str, Any]) -> list[str]:
    """The comparison document as lines for a terminal: the table of groups, the verdicts,
    the apps, settings and machine that differ, failures and problems, pending points and
    the closure diffs."""
    groups = doc["groups"]
    lines = _verdict_lines(doc)
    if doc["apps"]["note"]:
        lines.append(f"note: {doc['apps']['note']}")
    lines += _differ_lines("arguments that differ", doc.get("arguments", {"differ": {}}))
    lines += _differ_lines("settings that differ (as LoadGen read them back)", doc["settings"])
    lines += _differ_lines("machine differs", doc["machine"])
    lines += _failure_lines(groups)
    lines += _closure_lines(doc)
    # Records are data from others: their text reaches the terminal escaped (no escape
    # sequence, no newline of their own); the table escapes its cells, for its widths.
    return _table(groups) + [show_name(line) for line in lines]


def _stat_text(stats: dict[str, Any] | None, unit: str = "") -> str:
    if stats is None:
        return "-"
    if stats["n"] == 1:
        return f"{stats['median']:.2f}{unit}"
    return f"{stats['median']:.2f}{unit} [{stats['min']:.2f}–{stats['max']:.2f}]"


def _table(groups: list[dict[str, Any]]) -> list[str]:
    rows = [("group", "runs", "samples/s", "p90 ms", "mAP", "LoadGen")]
    for g in groups:
        figures = g["figures"]
        ok = sum(1 for r in g["runs"] if r["status"] == "ok")
        verdicts = " ".join(f"{k} {n}" for k, n in sorted(figures["result"].items())) or "-"
        rate, p90 = figures["samples_per_second"], figures["latency_ms"]["p90"]
        rows.append((show_name(g["label"]), f"{ok}/{len(g['runs'])}", _stat_text(rate),
                     _stat_text(p90), _stat_text(figures["mAP"], "%"),
                     show_name(verdicts)))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _verdict_lines(doc: dict[str, Any]) -> list[str]:
    groups = doc["groups"]
    lines = []
    single = False
    for v in doc["verdicts"]:
        single = single or v["verdict"] == fig.ONE_RUN
        if v["verdict"] not in (fig.HIGHER, fig.LOWER):
            continue
        better = (v["verdict"] == fig.LOWER) == (v["figure"] in fig.LOWER_IS_BETTER)
        how = f"{v['ratio']:.2f}x" if v["ratio"] is not None else v["verdict"] + " than"
        word = "better" if better else "worse"
        base = "the first" if v["base"] == 0 else (
            f"{groups[v['base']]['label']} (the first group with figures)")  # fmt: skip
        lines.append(f"{FIGURE_NAMES[v['figure']]}: {groups[v['other']]['label']} is {how} "
                     f"{base}, {word} (ranges do not overlap)")  # fmt: skip
    if single:
        lines.append("no verdict where a side has one run (repeat runs for a spread: "
                     "mlpkg sweep --repeat N)")  # fmt: skip
    return lines


def _differ_lines(title: str, section: dict[str, Any]) -> list[str]:
    if not section["differ"]:
        return []
    lines = [f"{title}:"]
    for key, values in section["differ"].items():
        lines.append(f"  {key}: " + " | ".join("-" if v is None else v for v in values))
    return lines


def _failure_lines(groups: list[dict[str, Any]]) -> list[str]:
    lines = []
    for g in groups:
        for r in g["runs"]:
            if r["status"] != "ok":
                lines.append(
                    f"run {r['id']} {r['status']}" + (f": {r['error']}" if r["error"] else "")
                )
        lines += [f"{g['label']}: {problem}" for problem in g["problems"]]
        if g["pending"]:
            lines.append(
                f"{g['label']}: {g['pending']} point(s) not run yet (mlpkg sweep --resume)"
            )
    return lines


def _closure_lines(doc: dict[str, Any]) -> list[str]:
    from mlpkg.experiments.closure import format_diff

    groups = doc["groups"]
    lines = []
    for diff in doc["closure"]:
        lines.append(
            f"closure: {groups[diff['other']]['label']} vs {groups[diff['base']]['label']}"
        )
        parts = {k: diff[k] for k in ("version_changed", "rebuilt", "added", "removed")}
        lines += format_diff(parts)
    return lines
