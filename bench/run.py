"""Every benchmark of the project in one table: ``python bench/run.py``.

Each script of :data:`BENCHES` runs in turn as a subprocess (``sys.executable bench/X.py
--json [--quick]``, from the repository root, in its own process group) with a timeout,
and the rows of its document (bench/rows.py) go into one table: what is measured, mlpkg's
median, the peer's median, the ratio, the target, pass or fail, and the runs each median
is of. The table is headed by the date, the machine's cores and CPU model and the Python,
and is Markdown (the README's Performance section is this output).

A script that is missing, exits with a non-zero status, runs past its timeout (its process
group is killed), prints no JSON document or a document without rows gives a row saying
so; the table is printed all the same.

Options: ``--quick`` (a smoke pass, as CI runs it: every script's small sizes and few
runs; the timings are not judged), ``--only NAME[,NAME]`` (some of the scripts, by name;
repeatable), ``--json`` (one JSON document: the header's facts, each script's status and
document, and all the rows), ``--markdown`` (the default), ``--timeout S`` (every script's
timeout, instead of its own).

Exit status: 0 when every script gave its rows and, without ``--quick``, every row with a
target passed; 1 otherwise; 2 for bad options.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


@dataclass(frozen=True)
class Bench:
    """One script: ``<dir>/<name>.py``, its timeouts (full and ``--quick``) and the
    arguments it gets after ``--json`` in a full run and in a quick one."""

    name: str
    timeout_s: float
    quick_timeout_s: float
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()


# In the README's order. The timeouts are ceilings for a loaded 2-core machine, not figures.
BENCHES: tuple[Bench, ...] = (
    Bench("hash_tree", 1200, 120),
    Bench("noop_build", 900, 240),
    Bench("resolve", 600, 60),
    Bench("harness", 900, 180),
    Bench("harness_real", 1800, 300),
    Bench("first_run", 900, 240),
    # The README's sweep row is of the realistic app (its machinery share has a target
    # only there); --quick keeps the hermetic toy app.
    Bench(
        "sweep_overhead",
        900,
        120,
        args=("--app", "retinanet-offline+synthetic", "--points", "6", "--", "--time", "5"),
    ),
    Bench("install", 1200, 240),
    Bench("cache_decompress", 900, 120),
    Bench("cache_dedup", 1200, 180),
    Bench("cache_install", 1200, 240),
    Bench("cache_throughput", 900, 120),
)

ROW_KEYS = ("what", "mlpkg", "peer", "peer_name", "unit", "ratio", "target", "passed", "runs")


def _tail(text: str, lines: int = 1) -> str:
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " / ".join(kept[-lines:])


def error_row(reason: str) -> dict[str, Any]:
    """The row of a script that gave no rows (or failed after giving some)."""
    return {
        "what": reason,
        "mlpkg": None,
        "peer": None,
        "peer_name": "",
        "unit": "",
        "ratio": None,
        "target": "",
        "passed": False,
        "runs": 0,
        "error": True,
    }


def _kill_group(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM the script's process group, SIGKILL it after 5 s; what it had printed."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return "", ""  # a descendant outside the group holds the pipes: give up on them


def run_bench(bench: Bench, directory: Path, quick: bool, timeout: float | None) -> dict[str, Any]:
    """Run one script; its status, seconds, document and rows (error rows included)."""
    script = directory / f"{bench.name}.py"
    limit = timeout or (bench.quick_timeout_s if quick else bench.timeout_s)
    result: dict[str, Any] = {
        "name": bench.name,
        "script": str(script),
        "status": "ok",
        "exit_status": None,
        "seconds": 0.0,
        "timeout_s": limit,
        "document": None,
        "rows": [],
    }
    if not script.is_file():
        result["status"] = "missing"
        result["rows"] = [error_row(f"{bench.name}: missing ({script.name} does not exist)")]
        return result
    argv = [sys.executable, str(script), "--json"]
    argv += ["--quick", *bench.quick_args] if quick else list(bench.args)
    result["argv"] = argv
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        out, err = _kill_group(proc)
    except BaseException:  # Ctrl-C, SIGTERM: the script's own session is out of their reach
        _kill_group(proc)
        raise
    result["seconds"] = time.perf_counter() - start
    result["exit_status"] = proc.returncode
    result["stderr_tail"] = err[-4000:]
    if timed_out:
        result["status"] = "timeout"
        result["rows"] = [error_row(f"{bench.name}: timed out after {limit:g} s (killed)")]
        return result
    rows: list[dict[str, Any]] = []
    problem = ""
    try:
        doc = json.loads(out)
    except json.JSONDecodeError:
        doc = None
        problem = "printed no JSON document"
    if doc is not None:
        result["document"] = doc
        found = doc.get("rows") if isinstance(doc, dict) else None
        if not isinstance(found, list) or not found:
            problem = "gave no rows in its document"
        elif not all(isinstance(r, dict) and all(k in r for k in ROW_KEYS) for r in found):
            problem = f"gave malformed rows (each needs {', '.join(ROW_KEYS)})"
        else:
            rows = found
    if proc.returncode != 0:
        result["status"] = "failed"
        said = _tail(err)
        rows.append(
            error_row(
                f"{bench.name}: exited with status {proc.returncode}"
                + (f": {said}" if said else "")
            )
        )
    elif problem:
        result["status"] = "no rows"
        rows.append(error_row(f"{bench.name}: {problem}"))
    result["rows"] = rows
    return result


# -- the header ------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "cpu": cpu_model(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load_average_at_start": list(os.getloadavg()),
    }


def python_info() -> dict[str, str]:
    return {
        "implementation": platform.python_implementation(),
        "version": platform.python_version(),
        "executable": sys.executable,
    }


# -- the table -------------------------------------------------------------------------------


def number(value: float) -> str:
    """Three significant figures or so, without exponents."""
    size = abs(value)  # the thresholds are where rounding reaches the next decade
    if size >= 99.95:
        return f"{value:,.0f}"
    if size >= 9.995:
        return f"{value:.1f}"
    if size >= 0.9995:
        return f"{value:.2f}"
    return f"{value:#.3g}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _quantity(value: Any, unit: str) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    return f"{number(value)} {unit}".strip()


def result_text(row: dict[str, Any], status: str, quick: bool) -> str:
    if row.get("error"):
        return {"missing": "MISSING", "timeout": "TIMED OUT", "no rows": "NO ROWS"}.get(
            status, "FAILED"
        )
    if not row.get("target"):
        return "info"
    if quick:
        return "ran"
    passed = row.get("passed")
    return "pass" if passed is True else "FAIL" if passed is False else "FAIL (no verdict)"


def row_ok(row: dict[str, Any], quick: bool) -> bool:
    """Whether a row lets the run pass: no error, and (without --quick) its target met."""
    if row.get("error"):
        return False
    return quick or not row.get("target") or row.get("passed") is True


def markdown(doc: dict[str, Any]) -> str:
    m, py = doc["machine"], doc["python"]
    cores = f"{m['cores']} cores" + (
        f" ({m['cores_usable']} usable)" if m["cores_usable"] != m["cores"] else ""
    )
    load = " ".join(f"{x:.2f}" for x in m["load_average_at_start"])
    kind = (
        "a quick pass (`--quick`: small sizes and few runs; timings not judged)"
        if doc["quick"]
        else "each row mlpkg's median against its peer's, measured in the same run"
    )
    lines = [
        f"Measured by `python bench/run.py{' --quick' if doc['quick'] else ''}` on "
        f"{doc['date']}: {cores}, {m['cpu']}; {m['system']}; {py['implementation']} "
        f"{py['version']}; load average at start {load}. {kind[0].upper()}{kind[1:]}; "
        "ratio = mlpkg / peer.",
        "",
        "| benchmark | what | mlpkg | peer | ratio | target | result | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    status = {s["name"]: s["status"] for s in doc["scripts"]}
    for r in doc["rows"]:
        peer = _quantity(r.get("peer"), r.get("unit", ""))
        if r.get("peer_name") and peer != "—":
            peer = f"{peer} ({r['peer_name']})"
        ratio = r.get("ratio")
        cells = [
            f"`{r['script']}`",
            r["what"],
            _quantity(r.get("mlpkg"), r.get("unit", "")),
            peer,
            _quantity(ratio, "×"),
            r.get("target") or "—",
            result_text(r, status.get(r["script"], "ok"), doc["quick"]),
            str(r.get("runs", "")) if not r.get("error") else "—",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    failed = [s["name"] for s in doc["scripts"] if s["status"] != "ok"]
    lines += [
        "",
        f"{len(doc['scripts'])} script{'' if len(doc['scripts']) == 1 else 's'} in "
        f"{doc['seconds']:.0f} s"
        + (f"; did not give their rows: {', '.join(failed)}" if failed else "")
        + f"; overall: {'PASS' if doc['passed'] else 'FAIL'}.",
    ]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def select(benches: Sequence[Bench], only: list[str] | None) -> list[Bench]:
    if not only:
        return list(benches)
    wanted = {n.strip().removesuffix(".py") for arg in only for n in arg.split(",") if n.strip()}
    known = {b.name for b in benches}
    if wanted - known:
        raise ValueError(
            f"unknown benchmark(s): {', '.join(sorted(wanted - known))} "
            f"(known: {', '.join(b.name for b in benches)})"
        )
    return [b for b in benches if b.name in wanted]


def main(
    argv: Sequence[str] | None = None,
    benches: Sequence[Bench] = BENCHES,
    directory: Path = BENCH_DIR,
) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke pass: small sizes, no verdict")
    parser.add_argument("--only", action="append", metavar="NAME[,NAME]", help="these scripts")
    parser.add_argument("--timeout", type=float, help="seconds per script (default: its own)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON document")
    out.add_argument("--markdown", action="store_true", help="print the Markdown table (default)")
    args = parser.parse_args(argv)
    # SIGTERM (a CI job's time limit) unwinds like Ctrl-C, so the running script is killed.
    signal.signal(signal.SIGTERM, lambda sig, _frame: sys.exit(128 + sig))
    try:
        chosen = select(benches, args.only)
    except ValueError as e:
        parser.error(str(e))
    doc: dict[str, Any] = {
        "benchmark": "run",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "python": python_info(),
        "quick": args.quick,
        "scripts": [],
        "rows": [],
    }
    began = time.perf_counter()
    for i, bench in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {bench.name} ...", file=sys.stderr, flush=True)
        result = run_bench(bench, directory, args.quick, args.timeout)
        doc["scripts"].append(result)
        doc["rows"] += [{"script": bench.name, **r} for r in result["rows"]]
        print(
            f"[{i}/{len(chosen)}] {bench.name}: {result['status']}, {len(result['rows'])} "
            f"row(s), {result['seconds']:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        if result["status"] != "ok" and result.get("stderr_tail"):
            print(_tail(result["stderr_tail"], 8), file=sys.stderr, flush=True)
    doc["seconds"] = time.perf_counter() - began
    doc["passed"] = all(s["status"] == "ok" for s in doc["scripts"]) and all(
        row_ok(r, args.quick) for r in doc["rows"]
    )
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(markdown(doc))
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
