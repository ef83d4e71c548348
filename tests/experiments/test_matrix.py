"""The matrix of a sweep (mlpkg.experiments.matrix): what --with, --arg, --repeat and the
fixed options parse to, the cells (cartesian, --with first) and the points (repeat by
repeat)."""

from __future__ import annotations

import pytest

from mlpkg.errors import BadInput
from mlpkg.experiments.matrix import Matrix, overrides_of, parse_matrix, split_specs


def test_split_specs_keeps_a_version_constraint_whole() -> None:
    assert split_specs("onnxruntime@1.17.3,onnxruntime@1.22.1") == [
        "onnxruntime@1.17.3",
        "onnxruntime@1.22.1",
    ]
    assert split_specs("numpy@>=1.24,<2") == ["numpy@>=1.24,<2"]
    assert split_specs("numpy@>=1.24,<2,numpy@1.26.4") == ["numpy@>=1.24,<2", "numpy@1.26.4"]
    assert split_specs("numpy@>=1.24,!=1.25.0,<2") == ["numpy@>=1.24,!=1.25.0,<2"]
    assert split_specs(" a@1 , b@2 ") == ["a@1", "b@2"]
    assert split_specs("a@1,,b@2,") == ["a@1", "b@2"]


@pytest.mark.parametrize("text", ["", ",", " , ,", "  "])
def test_split_specs_of_nothing_is_empty(text: str) -> None:
    assert split_specs(text) == []


def test_cells_are_the_cartesian_product_with_first_in_the_order_given() -> None:
    m = parse_matrix(
        [("onnxruntime", "onnxruntime@1.17.3,onnxruntime@1.22.1")],
        ["threads=1,2", "batch=8"],
        1,
        [],
    )
    assert m.cells() == [
        {"with.onnxruntime": "onnxruntime@1.17.3", "arg.threads": "1", "arg.batch": "8"},
        {"with.onnxruntime": "onnxruntime@1.17.3", "arg.threads": "2", "arg.batch": "8"},
        {"with.onnxruntime": "onnxruntime@1.22.1", "arg.threads": "1", "arg.batch": "8"},
        {"with.onnxruntime": "onnxruntime@1.22.1", "arg.threads": "2", "arg.batch": "8"},
    ]
    # --with dimensions keep the order they were given in, before every --arg one
    m = parse_matrix([("b", "b@1,b@2"), ("a", "a@1")], ["x=1"], 1, [])
    assert [list(c) for c in m.cells()] == [["with.b", "with.a", "arg.x"]] * 2
    assert [c["with.b"] for c in m.cells()] == ["b@1", "b@2"]


def test_points_run_every_cell_repeat_by_repeat() -> None:
    m = parse_matrix([("data", "data@1.0,data@2.0")], ["threads=1,2"], 3, ["--time", "5"])
    points = m.points()
    cells = m.cells()
    assert len(points) == 12
    assert [p.index for p in points] == list(range(12))
    assert [p.repeat for p in points] == [0] * 4 + [1] * 4 + [2] * 4
    assert [p.cell for p in points] == cells * 3
    first = points[0]
    assert first.overrides == {"data": "data@1.0"}
    assert first.args == ["--time", "5", "--threads", "1"]  # the fixed options first
    assert points[3].args == ["--time", "5", "--threads", "2"]
    assert points[3].overrides == {"data": "data@2.0"}
    assert all(p.status == "pending" and p.run is None and p.app_path is None for p in points)
    assert first.label == "data=data@1.0 threads=1"


def test_an_empty_matrix_is_one_cell() -> None:
    m = parse_matrix([], [], 2, ["--flag", "x"])
    assert m.cells() == [{}]
    points = m.points()
    assert [(p.index, p.repeat, p.args) for p in points] == [
        (0, 0, ["--flag", "x"]),
        (1, 1, ["--flag", "x"]),
    ]
    assert points[0].label == "(one cell)"


@pytest.mark.parametrize("name", ["threads", "--threads", "-threads"])
def test_an_option_may_be_named_with_or_without_dashes(name: str) -> None:
    m = parse_matrix([], [f"{name}=1,2"], 1, [])
    assert m.arg == {"threads": ["1", "2"]}
    assert [p.args for p in m.points()] == [["--threads", "1"], ["--threads", "2"]]


def test_repeated_options_add_up() -> None:
    m = parse_matrix(
        [("ort", "ort@1"), ("ort", "ort@2,ort@3")], ["threads=1", "--threads=2 , 4"], 1, []
    )
    assert m.with_ == {"ort": ["ort@1", "ort@2", "ort@3"]}
    assert m.arg == {"threads": ["1", "2", "4"]}
    assert len(m.cells()) == 9


def test_to_json_and_back() -> None:
    m = parse_matrix([("data", "data@1.0,data@2.0")], ["flag=a,b"], 2, ["--sleep", "1"])
    doc = m.to_json()
    assert doc == {
        "with": {"data": ["data@1.0", "data@2.0"]},
        "arg": {"flag": ["a", "b"]},
        "repeat": 2,
        "args": ["--sleep", "1"],
    }
    back = Matrix.from_json(doc)
    assert back == m
    assert back.points() == m.points()
    assert Matrix.from_json({}) == Matrix()


def test_overrides_of_a_cell() -> None:
    assert overrides_of({"with.data": "data@2.0", "arg.flag": "a"}) == {"data": "data@2.0"}


def _refused(
    with_items: list[tuple[str, str]], arg_items: list[str], repeat: int, fixed: list[str]
) -> BadInput:
    with pytest.raises(BadInput) as e:
        parse_matrix(with_items, arg_items, repeat, fixed)
    assert "\n" not in e.value.message
    return e.value


@pytest.mark.parametrize(
    ("arg", "says"),
    [
        ("threads=", "--arg threads= lists no value"),
        ("threads=,", "--arg threads=, lists no value"),
        ("threads= , ", "lists no value"),
    ],
)
def test_an_arg_list_of_nothing_is_refused(arg: str, says: str) -> None:
    e = _refused([], [arg], 1, [])
    assert says in e.message and e.field == "--arg"


@pytest.mark.parametrize("text", ["", ",", " , "])
def test_a_with_list_of_nothing_is_refused(text: str) -> None:
    e = _refused([("onnxruntime", text)], [], 1, [])
    assert f"--with onnxruntime={text} lists no value" in e.message
    assert e.field == "--with"


@pytest.mark.parametrize("arg", ["threads", "=1,2", "--=1", "thr eads=1", "a/b=1", "-=1"])
def test_an_arg_that_is_not_option_equals_values_is_refused(arg: str) -> None:
    e = _refused([], [arg], 1, [])
    assert "is not OPTION=V1,V2" in e.message and e.field == "--arg"


def test_a_value_listed_twice_is_refused() -> None:
    assert "lists 2 twice" in _refused([], ["threads=1,2,2"], 1, []).message
    assert "lists 1 twice" in _refused([], ["threads=1", "threads=1"], 1, []).message
    e = _refused([("ort", "ort@1,ort@1")], [], 1, [])
    assert "lists ort@1 twice" in e.message and e.field == "--with"


@pytest.mark.parametrize("fixed", [["--threads", "2"], ["--threads=2"], ["--x", "--threads"]])
def test_an_option_both_swept_and_fixed_is_refused(fixed: list[str]) -> None:
    e = _refused([], ["threads=1,2"], 1, fixed)
    assert "--threads is both swept (--arg) and fixed (after --)" in e.message


def test_a_fixed_option_that_only_starts_alike_is_not_the_swept_one() -> None:
    m = parse_matrix([], ["threads=1"], 1, ["--threads-per-core", "2"])
    assert m.points()[0].args == ["--threads-per-core", "2", "--threads", "1"]


@pytest.mark.parametrize("repeat", [0, -1])
def test_repeat_below_one_is_refused(repeat: int) -> None:
    e = _refused([], [], repeat, [])
    assert f"--repeat {repeat}" in e.message and e.field == "--repeat"
