"""Runs as rows, for people who analyse elsewhere: ``mlpkg runs export --csv|--json``.

:func:`rows` gives one row (a flat dict) per run of the groups given, in their order.
Its columns: :data:`COLUMNS` (the experiment, the group's label, the run, its app,
status and ``error:`` line, scenario and mode, its figures as
:func:`mlpkg.experiments.figures.run_figures` reads them — latency in ms, mAP as a
percentage —, LoadGen's verdict, the start as ISO 8601 UTC, the duration, the versions the
app reported, the app's store path and the run directory), then one column per cell value
of a sweep (``with.NAME``, ``arg.NAME``). A value absent is None (an empty CSV field).

:func:`to_csv` writes rows with the csv module, columns in a stable order: those of
:data:`COLUMNS` first, then the others sorted by name. Records are data from others: a
text cell that a spreadsheet would take for a formula gets a leading ``'``, text written
to a terminal is escaped (no escape sequence reaches it), a start time that is no time of
the years 1 to 9999 is None, and a float that is not finite is None (strict JSON).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from mlpkg.experiments import figures as fig
from mlpkg.store.verify import show_name

if TYPE_CHECKING:
    from mlpkg.env.runs import RunRecord
    from mlpkg.experiments.select import Group

COLUMNS = (
    "experiment", "group", "run", "app", "status", "error", "scenario", "mode",
    "samples_per_second", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "mAP",
    "result", "started", "duration_s", "onnxruntime_version", "loadgen_version",
    "python_version", "app_path", "dir",
)  # fmt: skip
VERSIONS = ("onnxruntime_version", "loadgen_version", "python_version")


def rows(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """One row per run of ``groups`` (see the module docstring)."""
    return [_row(g, r) for g in groups for r in g.records]


def _iso(value: object) -> str | None:
    """``value`` (seconds since the epoch) as ISO 8601 UTC; None when it is no number, or
    no time of the years 1 to 9999 (a record is data from others: 1e20 is no time)."""
    seconds = fig.number(value)
    if seconds is None:
        return None
    try:
        when = time.gmtime(seconds)
    except (OverflowError, OSError, ValueError):
        return None
    if not 1 <= when.tm_year <= 9999:
        return None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", when)
    return f"{stamp}.{int(seconds * 1000) % 1000:03d}Z"


def _scalar(value: object) -> Any:
    """A text, a number or a boolean as it is (a float only when finite), else None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if isinstance(value, str | int | bool) else None


def _row(group: Group, record: RunRecord) -> dict[str, Any]:
    res = record.result
    figures = fig.run_figures(res)
    versions = res.get("versions")
    versions = versions if isinstance(versions, dict) else {}
    row: dict[str, Any] = {
        "experiment": group.experiment,
        "group": group.label,
        "run": record.id,
        "app": _scalar(res.get("app")),
        "status": record.status,
        "error": _scalar(res.get("error")),
        "scenario": _scalar(res.get("scenario")),
        "mode": _scalar(res.get("mode")),
        "samples_per_second": figures["samples_per_second"],
        **{f"latency_{p}_ms": figures["latency_ms"][p] for p in fig.PERCENTILES},
        "mAP": figures["mAP"],
        "result": figures["result"],
        "started": _iso(res.get("started")),
        "duration_s": fig.number(res.get("duration_s")),
        **{key: _scalar(versions.get(key)) for key in VERSIONS},
        "app_path": _scalar(res.get("app_path")),
        "dir": str(record.dir),
    }
    row.update(group.cell)
    return row


def columns(table: Sequence[dict[str, Any]]) -> list[str]:
    """The columns of ``table``: :data:`COLUMNS` first, then the others sorted."""
    extra = sorted({k for row in table for k in row} - set(COLUMNS))
    return [*COLUMNS, *extra]


# A text cell starting with one of these is read as a formula by spreadsheets (OWASP's
# "CSV injection"): such a cell gets a leading ' so that it is shown as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object, terminal: bool) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        value = "'" + value
    if isinstance(value, str) and terminal:
        return show_name(value)
    return value


def to_csv(table: Sequence[dict[str, Any]], file: TextIO) -> None:
    """Write ``table`` as CSV (a header, then one line per row, RFC 4180's CRLF line
    ends, so that a CR inside a value is quoted too) to ``file``. A text cell that a
    spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@``, tab, CR first) gets
    a leading ``'``; numbers are written as they are. Written to a terminal, text is
    shown escaped (:func:`mlpkg.store.verify.show_name`: no escape sequence of a record's
    reaches it)."""
    terminal, names = file.isatty(), columns(table)
    writer = csv.DictWriter(file, fieldnames=names, lineterminator="\r\n")
    writer.writerow({name: _cell(name, terminal) for name in names})  # the header
    for row in table:
        writer.writerow({k: _cell(v, terminal) for k, v in row.items()})
