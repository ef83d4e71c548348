"""The HTML report of a comparison document (mlpkg.experiments.report, .plots) and the
``mlpkg runs report`` command (mlpkg.cli.report_cmds)."""

from __future__ import annotations

import html
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from mlpkg.cli.context import App
from mlpkg.cli.report_cmds import _machine, runs_report_cmd
from mlpkg.errors import BadInput
from mlpkg.experiments import plots
from mlpkg.experiments.compare import compare
from mlpkg.experiments.report import render
from tests.experiments import report_docs as docs
from tests.experiments.records import DATA, ORT_NEW, ORT_OLD, group, perf

NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


def assert_self_contained(page: str) -> None:
    """Nothing to fetch: no script, no external stylesheet, image, font or frame; the only
    URLs are the SVG and XLink namespace names (identifiers, never fetched)."""
    assert "<script" not in page.lower()
    assert "<link" not in page.lower() and "<img" not in page.lower()
    assert "<iframe" not in page.lower() and "@import" not in page
    assert all(u.startswith("#") for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", page))
    assert set(re.findall(r"https?://[^\"'\s<>)]*", page)) <= NAMESPACES
    for ref in re.findall(r"\b(?:href|src)\s*=\s*[\"']([^\"']*)", page):
        assert ref.startswith("#"), ref  # only references inside the page (SVG markers)
    assert "//" not in "".join(re.findall(r"\bsrc\s*=\s*[\"'][^\"']*", page))


def svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.S)


def test_a_sweep_report_holds_the_table_plots_diff_failures_and_commands() -> None:
    page = render(docs.sweep_doc(), made=0)
    assert_self_contained(page)
    assert (
        page.startswith("<!DOCTYPE html>") and "<title>Experiment exp-20261129-ort</title>" in page
    )
    assert "1970-01-01 00:00:00 UTC" in page
    # the table: medians, min–max, runs ok, LoadGen counts
    for text in (
        "38.7",
        "38.2–39.1",
        "45.2",
        "44.9–45.6",
        "40.35",
        "3/3",
        "2/3",
        "VALID 3",
        "VALID 2",
    ):
        assert text in page, text
    # the verdicts, with better / worse
    assert '<b class="ok">higher: better</b> ×1.168' in page  # samples/s
    assert '<b class="bad">higher: worse</b> ×1.168' in page  # p90 latency
    assert '×1.047 <span class="dim">within spread</span>' in page
    # throughput and latency plotted (as text in the SVGs), no mAP plot
    figures = svgs(page)
    assert len(figures) == 2
    assert 'id="plot-throughput"' in page and 'id="plot-latency"' in page
    assert "plot-accuracy" not in page
    for median in ("38.7 (n=3)", "45.2 (n=3)", "40.35 (n=2)"):
        assert median in figures[0], median
    assert "p99 (ms)" in figures[1]
    assert plots.BLUE in figures[0]
    # settings that differ, the closure diff
    assert "offline_expected_qps" in page and "45.3" in page
    assert '<td><code class="id">with onnxruntime</code></td><td>onnxruntime@1.17.3</td>' in page
    assert "<b>onnxruntime</b> 1.17.3 → <b>1.20.1</b>" in page
    assert "because onnxruntime 1.17.3 -&gt; 1.22.1" in page
    assert "retinanet-offline → mlpkg-harness → onnxruntime" in page
    assert "added <b>flatbuffers</b> 25.2.10" in page and "removed <b>coloredlogs</b>" in page
    # the failure and its error line, in red; each run's command line
    assert f'<div class="error">{html.escape(docs.BAD_ALLOC)}</div>' in page
    assert '<li class="bad">#3 onnxruntime=onnxruntime@1.22.1 threads=2: run' in page
    assert page.count("mlpkg run --lock /home/u/.mlpkg/runs/run-") == 9
    assert "python3 -m mlpkg_harness --scenario Offline" in page


def test_the_page_is_deterministic() -> None:
    assert render(docs.sweep_doc(), made=0) == render(docs.sweep_doc(), made=0)


def test_one_group_of_one_run() -> None:
    page = render(docs.one_group_doc(), title="One run", made=0)
    assert_self_contained(page)
    assert "<h1>One run</h1>" in page and "57.2" in page
    assert len(svgs(page)) == 2  # throughput and latency, no spread to show
    assert "Verdicts" not in page and '<td class="n">1 run</td>' in page
    assert "Every run succeeded; nothing is pending." in page
    assert "No closure differs from that of the base." in page


def test_every_run_failed() -> None:
    page = render(docs.all_failed_doc(), made=0)
    assert_self_contained(page)
    assert svgs(page) == [] and "No group has a figure to plot." in page
    assert "0/2" in page
    assert page.count(html.escape(docs.BAD_ALLOC)) == 2
    assert "no wheel of onnxruntime 1.12.1 for Python 3.11" in page
    assert "1 point(s) pending" in page


def test_a_group_without_figures_beside_others_is_marked_in_the_plots() -> None:
    doc = docs.sweep_doc()
    failed = docs.all_failed_doc()["groups"][0]
    doc["groups"].append(failed)
    page = render(doc, made=0)
    figures = svgs(page)
    assert len(figures) == 2 and all("no result" in f for f in figures)
    assert "#4 onnxruntime=onnxruntime@1.12.1" in figures[0]


def test_accuracy_only_runs_plot_map_alone() -> None:
    page = render(docs.accuracy_doc(), made=0)
    assert_self_contained(page)
    assert len(svgs(page)) == 1 and 'id="plot-accuracy"' in page
    assert "37.57 (n=1)" in page and "37.55" in page
    assert plots.GREEN in svgs(page)[0]


def test_text_from_the_records_is_escaped() -> None:
    page = render(docs.hostile_doc(), title=docs.HOSTILE, made=0)
    assert_self_contained(page)  # no <script> anywhere, in the HTML or the SVGs
    escaped = html.escape(docs.HOSTILE)
    assert f"<h1>{escaped}</h1>" in page
    assert f"error: {escaped}" in page and f"problem {escaped}" in page
    assert f"'/x/{escaped}'" in html.unescape(page).replace(docs.HOSTILE, escaped)
    assert "$x$" in svgs(page)[0]  # shown as it is, not as mathtext


def test_a_malformed_document_gives_a_page_not_an_error() -> None:
    odd: dict[str, Any] = {"format": 1, "groups": [{"label": 3, "runs": [None, {"status": 1}],
                           "figures": {"samples_per_second": {"median": "x"}}}],
                           "verdicts": [{"figure": "mAP", "base": 9, "ratio": "?"}],
                           "closure": [{"rebuilt": [{"chain": "x"}]}]}  # fmt: skip
    page = render(odd, made=0)
    assert_self_contained(page)
    assert "<h2>Results</h2>" in page
    # stats with odd parts: a min above the median, no max, values not a list, NaN
    odd["groups"][0]["figures"] = {
        "samples_per_second": {"n": 2, "median": 5.0, "min": 7.0, "values": "x"},
        "latency_ms": {"p50": {"median": float("nan")}, "p90": None, "p99": 3},
        "mAP": {"median": True},
    }
    page = render(odd, made=0)
    assert len(svgs(page)) == 1 and "5 (n=2)" in page
    assert render({}, made=0).startswith("<!DOCTYPE html>")


def test_a_report_of_real_records_made_by_compare() -> None:
    machine = json.loads((DATA / f"{ORT_NEW}.result.json").read_text())["machine"]
    page = render(docs.real_doc(), machine=machine, made=0)
    assert_self_contained(page)
    assert "vm, Intel(R) Xeon(R) Processor, 2 CPUs, 24 GiB, Linux 6.18.44" in page
    assert "<b>onnxruntime</b> 1.17.3 → <b>1.22.1</b>" in page
    assert "numpy 1.26.4, onnxruntime 1.17.3" in page  # the versions that tell groups apart
    assert "57.2 (n=3)" in svgs(page)[0] and "40.6 (n=3)" in svgs(page)[0]
    assert html.unescape(page).count("mlpkg run --lock '/runs/onnxruntime=onnxruntime@") == 9


# -- the command ---------------------------------------------------------------------------


def _home_with_runs(tmp_path: Path) -> tuple[Path, list[str]]:
    """A home whose runs/ holds the two real records (onnxruntime 1.17.3, 1.22.1), and
    their run ids in that order."""
    home, ids = tmp_path / "home", []
    for name in (ORT_OLD, ORT_NEW):
        result = json.loads((DATA / f"{name}.result.json").read_text())
        run_dir = home / "runs" / result["id"]
        run_dir.mkdir(parents=True)
        shutil.copy(DATA / f"{name}.result.json", run_dir / "result.json")
        ids.append(result["id"])
    return home, ids


def _invoke(home: Path, *args: str) -> Any:
    return CliRunner().invoke(runs_report_cmd, list(args), obj=App(home=home))


def test_the_command_writes_the_page_and_prints_its_path(tmp_path: Path) -> None:
    home, ids = _home_with_runs(tmp_path)
    out = tmp_path / "report.html"
    result = _invoke(home, *ids, "-o", str(out), "--title", "Two runs")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    page = out.read_text()
    assert "<h1>Two runs</h1>" in page and "onnxruntime</b> 1.17.3 → <b>1.22.1" in page
    assert "vm, Intel(R) Xeon(R) Processor" in page
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    result = _invoke(home, ids[0], "-o", str(out), "--json")
    assert result.exit_code == 0 and json.loads(result.output) == {"report": str(out)}


def test_the_command_refuses_an_output_it_cannot_write(tmp_path: Path) -> None:
    home, _ = _home_with_runs(tmp_path)
    result = _invoke(home, "latest", "-o", str(tmp_path / "missing" / "report.html"))
    assert isinstance(result.exception, BadInput), result.output
    assert "is not a directory" in result.exception.message
    assert not (tmp_path / "missing").exists()
    result = _invoke(home, "latest", "-o", str(tmp_path))
    assert result.exit_code == 2 and "is a directory" in result.output


def test_figures_near_the_largest_float_are_plotted_without_a_warning() -> None:
    """A record is data from others: samples/s of 1.5e308 must neither overflow the plot's
    limits (to inf: matplotlib raises) nor let matplotlib's warnings reach stderr."""
    big, huge = 1.5e308, 1.7976931348623157e308
    doc = docs.doc([
        docs.group_doc("big", [docs.run("a", big, latency=(big, huge, huge)),
                               docs.run("b", huge, latency=(1.0, 2.0, huge))]),
        docs.group_doc("tiny", [docs.run("c", 5e-324, latency=(5e-324, 5e-324, 5e-324))]),
    ])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        page = render(doc, made=0)
    assert len(svgs(page)) == 2
    assert_self_contained(page)


def test_the_command_reports_runs_of_absurd_figures(tmp_path: Path) -> None:
    home, ids = _home_with_runs(tmp_path)
    for run_id, rate in zip(ids, (1.5e308, 1.7976931348623157e308), strict=True):
        file = home / "runs" / run_id / "result.json"
        result = json.loads(file.read_text())
        result["loadgen"]["samples_per_second"] = rate
        file.write_text(json.dumps(result))
    out = tmp_path / "report.html"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = _invoke(home, *ids, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert len(svgs(out.read_text())) == 2


def test_a_file_that_cannot_be_written_is_bad_input_naming_it(tmp_path: Path) -> None:
    home, _ = _home_with_runs(tmp_path)
    result = _invoke(home, "latest", "-o", "/proc/r.html")  # a directory, but not writable
    assert isinstance(result.exception, BadInput), result.output
    assert result.exception.message.startswith("Cannot write /proc/r.html: ")
    assert result.exception.exit_code == 2


def test_a_first_group_without_runs_is_not_the_base() -> None:
    """The first cell's closure did not build: the closure diff and the verdicts are
    against the first group with runs, and the header's machine is that group's."""
    unbuilt = group("ort=9", experiment="exp-1", problems=["point 0 (not-built): error: x"])
    a = group("a", perf(40.0), perf(41.0))
    b = group("b", perf(56.0, ORT_OLD), perf(57.0, ORT_OLD))
    page = render(compare([unbuilt, a, b]), made=0)
    assert "<h3>#3 b against #2 a</h3>" in page
    assert "<tr><td>#3 b</td><td>#2</td>" in page  # the verdicts' row
    machine = _machine([unbuilt, a, b])
    assert machine is not None and machine["hostname"] == "vm"


def test_integers_too_large_for_a_float_give_a_page() -> None:
    doc = docs.sweep_doc()
    doc["groups"][0]["figures"]["samples_per_second"] = {"n": 2, "median": 10**400,
                                                         "min": 1, "max": 10**400,
                                                         "values": [1, 10**400]}  # fmt: skip
    page = render(doc, made=0, machine={"hostname": "vm", "memory_bytes": 10**400})
    assert "Machine: <b>vm</b>" in page and len(svgs(page)) == 2
