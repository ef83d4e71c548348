"""Run records that are not what format 1 says (wrong field types, 100,000-deep JSON,
truncated): ``mlpkg runs show`` of one is one sentence naming its result.json (exit 2);
``mlpkg runs list`` warns once per bad record, naming its file, and lists the others."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mlpkg.env import runs

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "run-v1"
GOOD = "20261128T150000.000Z-toyapp-0a1b2c"
BAD = "20261128T160000.000Z-toyapp-ffffff"
DEEP = "[" * 100_000 + "]" * 100_000
DROP = "<drop this key>"

BAD_RECORDS: dict[str, Any] = {
    "started is text": {"started": "yesterday"},
    "mAP is text": {"accuracy": {"mAP": "high"}},
    "accuracy is a list": {"accuracy": [0.5]},
    "lock is a list": {"lock": []},
    "lock nodes are a number": {"lock": {"node": 3}},
    "summary line is a table": {"summary": {"line": {"a": 1}}},
    "loadgen is text": {"loadgen": "VALID"},
    "args are a table": {"args": {"a": 1}},
    "status is a number": {"status": 0},
    "id is missing": {"id": DROP},
}


def _record(home: Path, name: str, change: dict[str, Any] | None = None, text: str = "") -> Path:
    """A copy of the golden run under ``home/runs/name``, with ``change`` applied (the value
    :data:`DROP` removes the key), or with ``text`` as its result.json."""
    run_dir = home / "runs" / name
    shutil.copytree(GOLDEN, run_dir)
    file = run_dir / "result.json"
    if change is not None:
        doc = json.loads(file.read_text())
        doc.update(change)
        file.write_text(json.dumps({k: v for k, v in doc.items() if v != DROP}))
    else:
        file.write_text(text)
    return file


def _check(mlpkg_cli: Any, bad: Path) -> None:
    shown = mlpkg_cli.run("runs", "show", BAD)
    assert shown.code == 2, shown
    lines = shown.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad} "), shown
    assert "internal error" not in shown.err
    for args in (["runs", "list"], ["runs", "list", "--json"]):
        listed = mlpkg_cli.run(*args).ok()
        warnings = [ln for ln in listed.err.splitlines() if ln.startswith("warning:")]
        assert len(warnings) == 1 and str(bad) in warnings[0], listed
        assert GOOD in listed.out and BAD not in listed.out, listed
    assert mlpkg_cli.run("runs", "show", GOOD).ok().out.startswith(f"run       {GOOD}")


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_a_record_of_wrong_types(mlpkg_cli: Any, case: str) -> None:
    _record(mlpkg_cli.home, GOOD, {})
    _check(mlpkg_cli, _record(mlpkg_cli.home, BAD, BAD_RECORDS[case]))


@pytest.mark.parametrize(
    "text", [DEEP, '{"format": 1, "lock": ' + DEEP + "}", "", '{"format": 1, "id": "x", "sta']
)
def test_a_deep_empty_or_truncated_record(mlpkg_cli: Any, text: str) -> None:
    _record(mlpkg_cli.home, GOOD, {})
    _check(mlpkg_cli, _record(mlpkg_cli.home, BAD, text=text))


def test_the_golden_record_still_shows(mlpkg_cli: Any) -> None:
    _record(mlpkg_cli.home, GOOD, {})
    out = mlpkg_cli.run("runs", "show", GOOD).ok().out
    assert "mAP=50.000%" in out and "status    ok (exit 0)" in out
    (listed,) = mlpkg_cli.run("runs", "list", "--json").ok().json()
    assert listed["headline"] == "mAP=50.000%" and listed["status"] == "ok"


def test_a_null_lock_shows(mlpkg_cli: Any) -> None:
    """A record of a run that could not start has no lock table: shown, not a crash."""
    _record(mlpkg_cli.home, GOOD, {"lock": None})
    assert "closure   0 paths" in mlpkg_cli.run("runs", "show", GOOD).ok().out


def test_headline_ignores_latencies_that_are_not_numbers() -> None:
    result = {"status": "ok", "loadgen": {"result": "VALID", "latency_ns": {"p99.00": "n/a"}}}
    assert runs.headline(result) == "VALID"


@pytest.mark.parametrize(
    "text",
    [
        DEEP,
        json.dumps({"format": 1, "accuracy": {"mAP": "high"}}),
        json.dumps({"format": 1, "loadgen": []}),
        json.dumps({"format": 1, "summary": {"line": 1}}),
    ],
)
def test_a_bad_app_report_is_left_out(tmp_path: Path, text: str) -> None:
    (tmp_path / "harness.json").write_text(text)
    assert runs.read_app_report(tmp_path) is None
