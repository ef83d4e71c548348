"""experiment.json (mlpkg.experiments.record): written and read back, refused when of
another format or malformed (naming the file), and found by id, prefix or exp-latest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlpkg.errors import BadInput, FormatVersionError
from mlpkg.experiments import record
from mlpkg.experiments.matrix import parse_matrix
from mlpkg.experiments.record import Experiment, Point


def _experiment(home: Path, exp_id: str | None = None) -> Experiment:
    m = parse_matrix([("data", "data@1.0,data@2.0")], ["flag=a,b"], 2, ["--sleep", "0"])
    exp_id = exp_id or record.new_experiment_id("toyapp")
    matrix = {**m.to_json(), "jobs": 1}
    return Experiment(exp_id, record.experiments_dir(home) / exp_id, "toyapp", matrix, m.points())


def _write(directory: Path, doc: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / record.EXPERIMENT_FILE
    file.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return file


def test_new_ids_start_with_exp_and_name_the_app() -> None:
    a, b = record.new_experiment_id("toyapp"), record.new_experiment_id("toyapp")
    assert a.startswith("exp-") and "-toyapp-" in a and a != b


def test_an_experiment_round_trips(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    exp.points[0].app_path = "abc-toyapp-1.0"
    exp.points[0].run = "20260101T000000.000Z-toyapp-aaaaaa"
    exp.points[0].status = "ok"
    exp.points[0].timings = {"plan_s": 0.1, "run_s": 0.3, "overhead_s": 0.05}
    exp.points[1].status, exp.points[1].error = "failed", "error: toyapp exits 3 on purpose"
    exp.status, exp.mlpkg_pid = "running", 1234
    exp.save()
    assert exp.updated is not None
    assert sorted(os.listdir(exp.dir)) == [record.EXPERIMENT_FILE]  # written atomically
    doc = json.loads((exp.dir / record.EXPERIMENT_FILE).read_text())
    assert doc["format"] == record.EXPERIMENT_FORMAT == 1
    assert doc["matrix"]["with"] == {"data": ["data@1.0", "data@2.0"]}
    assert doc["points"][0]["cell"] == {"with.data": "data@1.0", "arg.flag": "a"}

    back = record.read_experiment(exp.dir)
    assert back == exp
    assert back.to_json() == exp.to_json()
    assert back.points[0].label == "data=data@1.0 flag=a"
    assert back.matrix["jobs"] == 1 and back.matrix["repeat"] == 2


def test_cells_group_the_repeats_in_matrix_order(tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    cells = exp.cells()
    assert len(cells) == 4
    assert [[p.index for p in c] for c in cells] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert [c[0].label for c in cells] == [
        "data=data@1.0 flag=a",
        "data=data@1.0 flag=b",
        "data=data@2.0 flag=a",
        "data=data@2.0 flag=b",
    ]


@pytest.mark.parametrize("fmt", [2, 0, None, "1"])
def test_another_format_is_refused_naming_the_file_and_format(tmp_path: Path, fmt: Any) -> None:
    exp = _experiment(tmp_path)
    doc = exp.to_json()
    doc["format"] = fmt
    file = _write(exp.dir, doc)
    with pytest.raises(FormatVersionError) as e:
        record.read_experiment(exp.dir)
    assert str(file) in e.value.message and e.value.file == str(file)
    assert f"has experiment format {fmt};" in e.value.message
    assert "this mlpkg reads format 1" in e.value.message
    assert e.value.exit_code == 2


def _malformed(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DROP = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["id"], 3, "id"),
        (["app"], _DROP, "app"),
        (["created"], "yesterday", "created"),
        (["points"], {"0": {}}, "points"),
        (["points", 1, "index"], "one", "points.1.index"),
        (["points", 0, "cell"], {"arg.flag": 1}, "points.0.cell.arg.flag"),
        (["points", 0, "args"], "--flag a", "points.0.args"),
        (["points", 0, "status"], _DROP, "points.0.status"),
        (["points", 0, "surprise"], 1, "points.0.surprise"),
        (["points", 0, "timings"], {"run_s": "fast"}, "points.0.timings.run_s"),
        (["matrix", "repeat"], "twice", "matrix.repeat"),
        (["matrix", "with"], {"data": "data@1.0"}, "matrix.with.data"),
    ],
)
def test_wrong_field_types_are_bad_input_naming_the_file_and_field(
    tmp_path: Path, path: list[Any], value: Any, field: str
) -> None:
    exp = _experiment(tmp_path)
    file = _write(exp.dir, _malformed(exp.to_json(), path, value))
    with pytest.raises(BadInput) as e:
        record.read_experiment(exp.dir)
    assert not isinstance(e.value, FormatVersionError)
    assert e.value.message.startswith(f"{file} is not a valid experiment record (format 1)")
    assert e.value.field == field and e.value.file == str(file)


@pytest.mark.parametrize("text", ["", "{", '{"format": 1,', "not json", "[" * 500 + "]" * 500])
def test_malformed_json_is_bad_input_naming_the_file(tmp_path: Path, text: str) -> None:
    file = _write(tmp_path / "exp-x", text)
    with pytest.raises(BadInput) as e:
        record.read_experiment(tmp_path / "exp-x")
    assert str(file) in e.value.message and e.value.file == str(file)
    assert "\n" not in e.value.message


def test_a_missing_or_unreadable_record_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as e:
        record.read_experiment(tmp_path / "exp-gone")
    assert str(tmp_path / "exp-gone" / record.EXPERIMENT_FILE) in e.value.message
    _write(tmp_path / "exp-bin", "")
    (tmp_path / "exp-bin" / record.EXPERIMENT_FILE).write_bytes(b"\xff\xfe{")
    with pytest.raises(BadInput, match="is unreadable"):
        record.read_experiment(tmp_path / "exp-bin")


IDS = [
    "exp-20260101T000000.000Z-toyapp-aaaaaa",
    "exp-20260101T000000.000Z-toyapp-aaaaaab",
    "exp-20260102T120000.000Z-toyapp-bbbbbb",
    "exp-20260103T120000.000Z-other-cccccc",
]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    for exp_id in IDS:
        _experiment(tmp_path, exp_id).save()
    (record.experiments_dir(tmp_path) / "notes.txt").write_text("not an experiment")
    return tmp_path


def test_experiment_ids_are_sorted_and_only_experiments(home: Path, tmp_path: Path) -> None:
    assert record.experiment_ids(home) == IDS
    assert record.experiment_ids(tmp_path / "empty") == []


@pytest.mark.parametrize(
    ("ref", "found"),
    [
        (IDS[2], IDS[2]),
        ("exp-20260102", IDS[2]),
        ("exp-20260103T", IDS[3]),
        (IDS[0], IDS[0]),  # an exact id wins over the longer id it is a prefix of
        ("exp-latest", IDS[3]),
    ],
)
def test_find_experiment_by_id_prefix_or_latest(home: Path, ref: str, found: str) -> None:
    exp = record.find_experiment(home, ref)
    assert exp.id == found
    assert exp.dir == (record.experiments_dir(home) / found).resolve()


def test_an_ambiguous_prefix_is_bad_input(home: Path) -> None:
    with pytest.raises(BadInput) as e:
        record.find_experiment(home, "exp-20260101")
    assert "There are 2 experiments with the id 'exp-20260101'" in e.value.message
    assert e.value.hint and "mlpkg sweep" in e.value.hint


@pytest.mark.parametrize("ref", ["exp-nosuch", "exp-2025", "notes.txt", "20260101"])
def test_an_unknown_experiment_is_bad_input(home: Path, ref: str) -> None:
    with pytest.raises(BadInput) as e:
        record.find_experiment(home, ref)
    assert f"There is no experiment with the id {ref!r}" in e.value.message
    assert str(record.experiments_dir(home)) in e.value.message


def test_exp_latest_of_no_experiment_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="There is no experiment with the id 'exp-latest'"):
        record.find_experiment(tmp_path, "exp-latest")


def test_a_found_record_of_another_format_is_refused(home: Path) -> None:
    directory = record.experiments_dir(home) / IDS[3]
    doc = json.loads((directory / record.EXPERIMENT_FILE).read_text())
    _write(directory, {**doc, "format": 2})
    with pytest.raises(FormatVersionError, match="experiment format 2"):
        record.find_experiment(home, "exp-latest")


def test_the_lock_refuses_a_second_sweep_of_one_experiment(tmp_path: Path) -> None:
    """An flock: held by another process, it is refused with the recorded pid; released
    when that process dies, however it dies."""
    exp = _experiment(tmp_path)
    exp.mlpkg_pid = 4242
    code = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)"
    )
    exp.dir.mkdir(parents=True)
    child = subprocess.Popen([sys.executable, "-c", code, str(exp.dir / ".lock")],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        refused = pytest.raises(BadInput, match=r"being run by another mlpkg \(process 4242\)")
        with refused, record.lock(exp):
            pass
    finally:
        child.kill()
        child.wait()
    with record.lock(exp), pytest.raises(BadInput), record.lock(exp):
        pass  # the holder is gone: the lock is free, and held by the first `lock` now


@pytest.mark.parametrize(
    ("field", "value"),
    [("run", "../../elsewhere"), ("run", "/etc"), ("cell", {"x": "1"}),
     ("cell", {"with.": "1"})],
)  # fmt: skip
def test_a_point_naming_another_directory_or_an_odd_cell_is_refused(
    tmp_path: Path, field: str, value: Any
) -> None:
    exp = _experiment(tmp_path)
    doc = exp.to_json()
    doc["points"][0][field] = value
    file = _write(exp.dir, doc)
    with pytest.raises(BadInput, match=str(file)):
        record.read_experiment(exp.dir)


def test_a_point_defaults_to_pending() -> None:
    p = Point(index=0, cell={}, repeat=0, overrides={}, args=[])
    assert (p.status, p.run, p.app_path, p.error, p.timings) == ("pending", None, None, None, {})
    assert p.label == "(one cell)"
