"""Safe readers (mlpkg/documents.py): documents nested too deep are one BadInput naming the
file, never a RecursionError; strings and comments holding brackets are no nesting; syntax
errors pass through for each reader to word."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
from pydantic import BaseModel

from mlpkg.documents import MAX_DEPTH, load_json, load_toml, validate
from mlpkg.errors import BadInput, LockError


@pytest.mark.parametrize("depth", [5_000, 100_000])
@pytest.mark.parametrize("open_close", [("[", "]"), ('{"a":', "}")])
def test_deep_json_is_bad_input(depth: int, open_close: tuple[str, str]) -> None:
    text = open_close[0] * depth + open_close[1] * depth
    with pytest.raises(BadInput, match=r"^f\.json is nested more than 64 levels deep") as e:
        load_json(text, "f.json")
    assert e.value.file == "f.json"


def test_json_at_the_limit_and_brackets_in_strings() -> None:
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert load_json(ok, "f") is not None
    with pytest.raises(BadInput):
        load_json("[" + ok + "]", "f")
    tricky = {"a": "[[[[" * 100, "b": '\\"{{{{' * 100, "c": [["]]]]"]]}
    assert load_json(json.dumps(tricky), "f") == tricky


def test_invalid_json_passes_through_as_value_error() -> None:
    for text in ("", '{"a": [1, 2', '{"a": "[[[['):
        with pytest.raises(ValueError):
            load_json(text, "f")


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 5_000 + "]" * 5_000,
        "a = " + "{b = " * 5_000 + "1" + "}" * 5_000,
        "[" + ".".join(["k"] * 5_000) + "]\nx = 1\n",
        ".".join(["k"] * 5_000) + " = 1\n",
    ],
)
def test_deep_toml_is_bad_input_of_the_given_kind(text: str) -> None:
    with pytest.raises(LockError, match=r"^mlpkg\.lock is nested more than 64 levels deep"):
        load_toml(text, "mlpkg.lock", LockError)


def test_toml_strings_and_comments_are_no_nesting() -> None:
    deep = "[" * 200
    text = (
        f"a = \"{deep}\"\nb = '{deep}'\nc = \"\"\"\n{deep}\n\"\"\"\nd = '''\n{deep}'''\n"
        f'e = "\\"{deep}"  # {deep}\n# {deep}\n[t]\nf = [[1], [2]]\n[[arr]]\ng = {{h = [1]}}\n'
    )
    data = load_toml(text, "f")
    assert data["a"] == deep and data["e"] == '"' + deep and data["arr"] == [{"g": {"h": [1]}}]


def test_invalid_toml_passes_through() -> None:
    with pytest.raises(tomllib.TOMLDecodeError):
        load_toml("a = [1, ", "f")


class _Doc(BaseModel):
    n: int
    items: list[str]


class _Outer(BaseModel):
    inner: _Doc


def test_validate_names_the_file_and_field() -> None:
    assert validate(_Doc, {"n": 1, "items": []}, "f.json", "thing").n == 1
    bad: Any = {"n": "x", "items": [1]}
    with pytest.raises(BadInput) as e:
        validate(_Doc, bad, "f.json", "thing")
    assert e.value.message.startswith("f.json is not a valid thing: field n: ")
    assert e.value.field == "n" and e.value.file == "f.json" and len(e.value.details) == 2
    with pytest.raises(BadInput) as e:
        validate(_Outer, {"inner": 3}, "f.json", "thing")
    assert e.value.message == (
        "f.json is not a valid thing: field inner: Input should be a valid dictionary."
    )
    assert e.value.details == []
    with pytest.raises(BadInput, match=r"field items\.0"):
        validate(_Doc, {"n": 1, "items": [1]}, "f.json", "thing")
