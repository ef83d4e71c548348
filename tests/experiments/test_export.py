"""One row per run, CSV or JSON (mlpkg.experiments.export)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from mlpkg.experiments import export
from tests.experiments.records import ORT_OLD, group, perf, sample


def test_a_row_per_run_with_its_figures_versions_and_cell() -> None:
    cell = {"with.onnxruntime": "onnxruntime@1.17.3", "arg.threads": "1"}
    failed = perf(None, ORT_OLD, status="failed", error="error: out of memory")
    g = group(
        "onnxruntime=onnxruntime@1.17.3 threads=1",
        sample(ORT_OLD),
        failed,
        experiment="exp-20261129-abc",
        cell=cell,
    )
    rows = export.rows([group("alone", sample()), g])
    assert [r["run"] for r in rows] == ["alone-0", g.records[0].id, g.records[1].id]
    alone, ok, bad = rows
    assert alone["experiment"] is None and "arg.threads" not in alone
    assert ok["experiment"] == "exp-20261129-abc" and ok["arg.threads"] == "1"
    assert ok["with.onnxruntime"] == "onnxruntime@1.17.3"
    assert ok["app"] == "retinanet-offline+synthetic" and ok["status"] == "ok"
    assert (ok["scenario"], ok["mode"], ok["result"]) == ("Offline", "PerformanceOnly", "VALID")
    assert ok["samples_per_second"] == pytest.approx(57.2, abs=0.1)
    assert ok["latency_p90_ms"] == pytest.approx(5005.05, abs=0.01)
    assert ok["mAP"] is None
    assert (ok["onnxruntime_version"], ok["loadgen_version"], ok["python_version"]) == (
        "1.17.3",
        "5.1.2",
        "3.11.7",
    )
    assert ok["started"] == "2026-11-29T22:18:27.290Z" and ok["duration_s"] == pytest.approx(
        7.0, abs=2
    )
    assert ok["app_path"].endswith("-retinanet-offline-1.0+synthetic") and ok["dir"] == str(
        g.records[0].dir
    )
    assert bad["status"] == "failed" and bad["error"] == "error: out of memory"
    assert bad["samples_per_second"] is None
    json.dumps(rows)


def test_csv_has_fixed_columns_first_then_the_cells_sorted() -> None:
    g1 = group("a", sample(), cell={"with.onnxruntime": "x", "arg.threads": "2"})
    odd = sample()
    odd.update(started="yesterday", versions=None, app=["not", "text"], error=None)
    rows = export.rows([g1, group("b", odd)])
    out = io.StringIO()
    export.to_csv(rows, out)
    table = list(csv.reader(io.StringIO(out.getvalue())))
    header = table[0]
    assert header[: len(export.COLUMNS)] == list(export.COLUMNS)
    assert header[len(export.COLUMNS) :] == ["arg.threads", "with.onnxruntime"]
    assert len(table) == 3
    second = dict(zip(header, table[2], strict=True))
    assert second["started"] == "" and second["onnxruntime_version"] == "" and second["app"] == ""
    assert second["arg.threads"] == "" and second["samples_per_second"] == "40.5893"
    assert export.columns([]) == list(export.COLUMNS)


@pytest.mark.parametrize("started", [1e20, -1e20, 1.7e308, -62135596801.0])
def test_a_start_time_out_of_range_is_no_time(started: float) -> None:
    res = sample()
    res["started"] = started
    (row,) = export.rows([group("g", res)])
    assert row["started"] is None


def test_csv_cells_that_a_spreadsheet_would_read_as_formulas_are_quoted() -> None:
    res = perf(-3.5)
    res.update(error='=HYPERLINK("http://x","y")', app="+app", scenario="-1+1", mode="@SUM(A1)")
    res["versions"] = {"onnxruntime_version": "\t=1", "loadgen_version": "\r=2",
                       "python_version": "3.11"}  # fmt: skip
    g = group("=cmd|' /C calc'!A0", res, cell={"arg.x": "-2"})
    out = io.StringIO()
    export.to_csv(export.rows([g]), out)
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert row["error"] == '\'=HYPERLINK("http://x","y")'
    assert (row["app"], row["scenario"], row["mode"]) == ("'+app", "'-1+1", "'@SUM(A1)")
    assert (row["onnxruntime_version"], row["loadgen_version"]) == ("'\t=1", "'\r=2")
    assert row["group"] == "'=cmd|' /C calc'!A0" and row["arg.x"] == "'-2"
    assert row["python_version"] == "3.11"
    assert row["samples_per_second"] == "-3.5"  # a number stays a number


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_csv_written_to_a_terminal_shows_control_characters_escaped() -> None:
    res = perf(40.0, error="error: \x1b]0;PWNED\x07\nmore")
    table = export.rows([group("g\x1b[2J", res, cell={"arg.\x1b[2J": "1"})])
    out = _Terminal()
    export.to_csv(table, out)
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert row["error"] == "error: \\x1b]0;PWNED\\x07\\nmore" and row["group"] == "g\\x1b[2J"
    assert row["arg.\\x1b[2J"] == "1"
    file = io.StringIO()  # a file keeps the data as it is
    export.to_csv(table, file)
    (row,) = csv.DictReader(io.StringIO(file.getvalue(), newline=""))
    assert row["error"] == "error: \x1b]0;PWNED\x07\nmore"
