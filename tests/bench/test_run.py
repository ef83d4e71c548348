"""bench/run.py: the one table of every benchmark, from small real scripts in tmp_path."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run = _load()

# A script that reports through the real bench/rows.py, as the benchmarks do: a timed row
# (its ratio taken from argv so that a test picks pass or fail) and an information row.
ROWS_SCRIPT = f"""
import json, sys
sys.path.insert(0, {str(REPO / "bench")!r})
from rows import row
quick = "--quick" in sys.argv
ratio = float(sys.argv[sys.argv.index("--ratio") + 1]) if "--ratio" in sys.argv else 0.5
rows = [
    row("warm thing", mlpkg=ratio, peer=1.0, peer_name="peer | tool", unit="s",
        ratio=ratio, target="≤ 1.0 ×", passed=ratio <= 1.0, runs=5, quick=quick),
    row("rate for information", mlpkg=1234.5, peer=2000.0, unit="MB/s", ratio=0.61725,
        runs=5),
]
print(json.dumps({{"benchmark": "x", "argv": sys.argv[1:], "rows": rows}}))
"""


def script(directory: Path, name: str, body: str) -> Any:
    (directory / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def bench(name: str, *args: str, timeout: float = 30) -> Any:
    return run.Bench(name, timeout, timeout, args=args)


def table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, benches: list[Any], *argv: str
) -> tuple[int, str]:
    code = run.main(list(argv), benches=benches, directory=tmp_path)
    return code, capsys.readouterr().out


def rows_of(out: str) -> list[list[str]]:
    """The Markdown table's body rows, as lists of cells."""
    lines = [ln for ln in out.splitlines() if ln.startswith("| ") and "---" not in ln]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[1:]]


def test_table_from_documents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script(tmp_path, "good", ROWS_SCRIPT)
    script(tmp_path, "slow", ROWS_SCRIPT)
    benches = [bench("good"), bench("slow", "--ratio", "1.3")]
    code, out = table(capsys, tmp_path, benches)
    header = out.splitlines()[0]
    assert f"{os.cpu_count()} cores" in header
    assert run.cpu_model() in header
    assert f"Python {sys.version.split()[0]}" in header.replace("CPython", "Python")
    assert "| benchmark | what | mlpkg | peer | ratio | target | result | runs |" in out
    assert rows_of(out) == [
        ["`good`", "warm thing", "0.500 s", "1.00 s (peer \\| tool)", "0.500 ×", "≤ 1.0 ×",
         "pass", "5"],
        ["`good`", "rate for information", "1,234 MB/s", "2,000 MB/s", "0.617 ×", "—",
         "info", "5"],
        ["`slow`", "warm thing", "1.30 s", "1.00 s (peer \\| tool)", "1.30 ×", "≤ 1.0 ×",
         "FAIL", "5"],
        ["`slow`", "rate for information", "1,234 MB/s", "2,000 MB/s", "0.617 ×", "—",
         "info", "5"],
    ]  # fmt: skip
    assert "overall: FAIL" in out
    assert code == 1  # a row with a target failed
    assert table(capsys, tmp_path, benches[:1])[0] == 0
    assert table(capsys, tmp_path, benches, "--only", "good")[0] == 0


def test_quick_passes_flag_and_judges_no_timing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script(tmp_path, "slow", ROWS_SCRIPT)
    benches = [run.Bench("slow", 30, 30, args=("--ratio", "1.3"), quick_args=("--ratio", "2"))]
    code, out = table(capsys, tmp_path, benches, "--quick", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["passed"] and doc["quick"]
    assert doc["scripts"][0]["document"]["argv"] == ["--json", "--quick", "--ratio", "2"]
    assert [r["passed"] for r in doc["rows"]] == [None, None]
    code, out = table(capsys, tmp_path, benches, "--quick")
    assert code == 0 and [r[6] for r in rows_of(out)] == ["ran", "info"]
    assert "`python bench/run.py --quick`" in out


def test_failing_script_gives_a_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script(tmp_path, "good", ROWS_SCRIPT)
    script(tmp_path, "broken", "import sys\nprint('noise')\nsys.exit('boom: no peer here')\n")
    benches = [bench("broken"), bench("good")]
    for quick in ([], ["--quick"]):
        code, out = table(capsys, tmp_path, benches, *quick)
        assert code == 1
        body = rows_of(out)
        assert body[0][:3] == ["`broken`", "broken: exited with status 1: boom: no peer here", "—"]
        assert body[0][6] == "FAILED"
        assert [r[0] for r in body[1:]] == ["`good`", "`good`"]  # the others still run
        assert "did not give their rows: broken" in out


def test_rows_of_a_script_that_exits_non_zero_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script(tmp_path, "half", ROWS_SCRIPT + "\nsys.exit(3)\n")
    code, out = table(capsys, tmp_path, [bench("half")], "--json")
    doc = json.loads(out)
    assert code == 1 and not doc["passed"]
    assert [r["what"] for r in doc["rows"]] == [
        "warm thing",
        "rate for information",
        "half: exited with status 3",
    ]
    assert doc["scripts"][0]["status"] == "failed"


def test_timing_out_script_is_killed_with_its_children(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "child.pid"
    script(
        tmp_path,
        "hangs",
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(marker)!r}, "w").write(str(child.pid))
        time.sleep(60)
        """,
    )
    script(tmp_path, "good", ROWS_SCRIPT)
    # The timeout leaves a loaded machine time to start Python, spawn the child and write
    # the marker (2 s did not always); it still bounds the run, which is checked.
    began = time.monotonic()
    code, out = table(capsys, tmp_path, [bench("hangs"), bench("good")], "--timeout", "10")
    assert time.monotonic() - began < 30
    assert code == 1
    body = rows_of(out)
    assert body[0][1:2] == ["hangs: timed out after 10 s (killed)"] and body[0][6] == "TIMED OUT"
    assert body[1][6] == "pass"
    assert marker.exists() and marker.read_text(), "the script had not spawned its child in 10 s"
    child = int(marker.read_text())
    for _ in range(50):  # the child was in the script's process group: killed, then reaped
        if not Path(f"/proc/{child}").exists() or "Z" in _state(child):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the script's child {child} outlived the timeout")


def test_sigterm_kills_the_running_script(tmp_path: Path) -> None:
    """The script runs in its own session (no terminal's Ctrl-C reaches it): run.py kills
    it when it is itself stopped."""
    marker = tmp_path / "script.pid"
    script(
        tmp_path,
        "hangs",
        f"""
        import os, time
        open({str(marker)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
        """,
    )
    code = (
        "import importlib.util, sys; from pathlib import Path\n"
        f"spec = importlib.util.spec_from_file_location('r', {str(REPO / 'bench' / 'run.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['r'] = m\n"
        "spec.loader.exec_module(m)\n"
        f"sys.exit(m.main([], benches=[m.Bench('hangs', 60, 60)], directory=Path({str(tmp_path)!r})))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    for _ in range(200):
        if marker.exists() and marker.read_text():
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the script did not start")
    pid = int(marker.read_text())
    proc.terminate()
    assert proc.wait(timeout=20) == 128 + 15
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists() or "Z" in _state(pid):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the script {pid} outlived run.py")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ('print(\'{"benchmark": "x", "median": 1.0}\')', "gave no rows in its document"),
        ("print('{\"rows\": []}')", "gave no rows in its document"),
        ('print(\'{"rows": [{"what": "x"}]}\')', "gave malformed rows"),
        ("print('median 1.0 s')", "printed no JSON document"),
    ],
)
def test_script_without_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, said: str
) -> None:
    script(tmp_path, "plain", body)
    code, out = table(capsys, tmp_path, [bench("plain")], "--quick")
    assert code == 1
    [row] = rows_of(out)
    assert row[1].startswith(f"plain: {said}") and row[6] == "NO ROWS"


def test_missing_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = table(capsys, tmp_path, [bench("harness_real")], "--json")
    doc = json.loads(out)
    assert code == 1
    assert doc["scripts"][0]["status"] == "missing"
    assert doc["rows"][0]["what"] == "harness_real: missing (harness_real.py does not exist)"


def test_numbers() -> None:
    got = [run.number(v) for v in (99.96, 12345.6, 9.996, 0.99951, 0.5, 0.012345, 0.0)]
    assert got == ["100", "12,346", "10.0", "1.00", "0.500", "0.0123", "0.00"]


def test_only_names_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        run.main(["--only", "good,nope"], benches=[bench("good")], directory=tmp_path)
    assert e.value.code == 2
    assert "unknown benchmark(s): nope" in capsys.readouterr().err


def test_every_benchmark_script_is_listed() -> None:
    """A script added to bench/ without a place in run.py's table would be forgotten."""
    helpers = {"run", "rows", "cache_common"}
    scripts = {p.stem for p in (REPO / "bench").glob("*.py")} - helpers - {"__init__"}
    assert scripts <= {b.name for b in run.BENCHES}


def test_command_line(tmp_path: Path) -> None:
    """As CI calls it: a subprocess; a bad option exits 2 without running anything."""
    argv = [sys.executable, str(REPO / "bench" / "run.py"), "--only", "nope", "--quick"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and "known: hash_tree, noop_build" in done.stderr
