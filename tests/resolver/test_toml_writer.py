"""The deterministic TOML writer behind lockfiles (mlpkg.resolver.toml_writer).

Every document written must read back through ``tomllib`` as exactly the same data, with
keys in a fixed order, so that a lock's bytes depend only on its content."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpkg.resolver.toml_writer import dumps

NASTY_STRINGS = [
    "",
    "plain",
    'a "quoted" word',
    "back\\slash and \\n not a newline",
    "trailing backslash\\",
    "tab\there",
    "control \x00 \x01 \x1b \x1f \x7f chars",
    "\b\f\r",
    "unicode: é ß 中文 \u2028 \U0001f600",
    "'single' quotes and '''three'''",
    '"',
    '""',
    '"""',
    'ends with a quote"',
]

NASTY_MULTILINE = [
    "one\ntwo\n",
    "\nstarts with a newline",
    "\n",
    "\n\n\n",
    "no trailing newline\nend",
    'echo "hi"\nprintf "%s\\n" x\n',
    'ends with a quote\n"',
    'ends with two quotes\n""',
    'has """ inside\nyes',
    '"""\nstarts with three quotes',
    'four """" and five """"" quotes\nx',
    "backslash at end of line\\\nnext",
    "line with crlf\r\nnext\r\n",
    "control \x00\x7f\x1b in\na script",
    "tabs\tand\nunicode é 😀\n",
    "python - <<EOF\nprint('''a''')\nEOF\n",
    'ends with four quotes\n""""',
]


def roundtrip(doc: dict[str, Any]) -> dict[str, Any]:
    text = dumps(doc)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # pragma: no cover - reported with the text
        pytest.fail(f"dumps wrote invalid TOML ({e}):\n{text}")


@pytest.mark.parametrize("value", NASTY_STRINGS + NASTY_MULTILINE)
def test_string_values_round_trip(value: str) -> None:
    doc = {"s": value, "t": {"nested": value}, "arr": [value, value], "tab": [{"v": value}]}
    assert roundtrip(doc) == doc


@pytest.mark.parametrize("value", NASTY_STRINGS + NASTY_MULTILINE)
def test_string_keys_round_trip(value: str) -> None:
    doc = {value: 1, "t": {value: {value: "x"}}}
    assert roundtrip(doc) == doc


def test_multiline_string_ending_in_three_quotes_round_trips() -> None:
    value = 'print("""doc\n"""'
    assert roundtrip({"s": value}) == {"s": value}


def test_multiline_strings_are_written_as_multiline() -> None:
    text = dumps({"script": "mkdir $out\necho hi > $out/x\n"})
    assert '"""\nmkdir $out\necho hi > $out/x\n"""' in text


def test_scalars_and_lists() -> None:
    doc = {
        "t": True,
        "f": False,
        "zero": 0,
        "neg": -42,
        "big": 2**63 - 1,
        "small": -(2**63),
        "empty": [],
        "ints": [1, 2, 3],
        "strs": ["a", "b\nc", ""],
        "mixed_nested": [[1, 2], ["x"]],
    }
    assert roundtrip(doc) == doc


def test_nested_tables_arrays_of_tables_and_empty_tables() -> None:
    doc: dict[str, Any] = {
        "version": 1,
        "empty": {},
        "only_tables": {"a": {"b": {"c": 1}}, "e": {}},
        "node": [
            {"name": "x", "inputs": {}, "recipe": {"build": {"script": "a\nb"}, "kind": "build"}},
            {"name": "y", "inputs": {"dep": "x"}, "sub": [{"k": 1}, {"k": 2, "deep": {}}]},
            {"name": "z", "only": {"t": {}}},
        ],
        "key with spaces": {"dotted.key": {"": "empty key"}},
    }
    assert roundtrip(doc) == doc


def test_none_values_are_left_out() -> None:
    assert roundtrip({"a": 1, "b": None, "t": {"c": None, "d": 2}}) == {"a": 1, "t": {"d": 2}}


def test_key_order_is_sorted_and_independent_of_insertion_order() -> None:
    a = {"zeta": 1, "alpha": {"y": 2, "b": 3}, "mid": [{"q": 1, "c": 2}], "beta": "s"}
    b = {"beta": "s", "mid": [{"c": 2, "q": 1}], "alpha": {"b": 3, "y": 2}, "zeta": 1}
    text = dumps(a)
    assert text == dumps(b)
    assert text.index("beta") < text.index("zeta") < text.index("[alpha]") < text.index("[[mid]]")
    assert text.index("b = 3") < text.index("y = 2")
    assert text.index("c = 2") < text.index("q = 1")
    # Array order is data, not sorted.
    assert roundtrip({"l": ["b", "a"]})["l"] == ["b", "a"]


def test_header_becomes_comments() -> None:
    text = dumps({"a": 1}, "first line\n\nthird line")
    assert text.startswith("# first line\n#\n# third line\n")
    assert tomllib.loads(text) == {"a": 1}
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_unsupported_values_are_refused() -> None:
    with pytest.raises(TypeError):
        dumps({"f": object()})


# -- property -------------------------------------------------------------------------------

KEYS = st.text(max_size=8)
STRINGS = st.text(max_size=30) | st.sampled_from(NASTY_STRINGS + NASTY_MULTILINE)
SCALARS = (
    STRINGS
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.lists(STRINGS, max_size=4)
)


def _tables(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(KEYS, children, max_size=5)


DOCS = st.recursive(
    _tables(SCALARS),
    lambda inner: _tables(SCALARS | inner | st.lists(inner, min_size=1, max_size=3)),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCS)
def test_property_dumps_then_loads_is_identity(doc: dict[str, Any]) -> None:
    if any(v.endswith('"""') for v in _strings(doc) if "\n" in v):
        return  # the known bug above (test_multiline_string_ending_in_three_quotes_round_trips)
    text = dumps(doc)
    assert tomllib.loads(text) == doc, text
    assert dumps(tomllib.loads(text)) == text  # a fixed point: same data, same bytes


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.parametrize("value", [1000.0, 0.5, 1e300, float("inf")])
def test_floats_round_trip(value: float) -> None:
    assert tomllib.loads(dumps({"x": value}))["x"] == value
