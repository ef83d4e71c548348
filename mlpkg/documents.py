"""Reading documents from disk safely, for every component: JSON and TOML no deeper than
:data:`MAX_DEPTH`, and validation with pydantic models into one sentence naming the file
and the field.

``json`` and ``tomllib`` recurse once (or more) per level of nesting, so a document nested
a few thousand levels deep (``[[[[...]]]]``, 10 kB of text) raises ``RecursionError``, and a
TOML file of deep dotted keys (``[a.a.a.a....]``) parses into a value that every later
recursive step (``json.dumps``, a merge) fails on. :func:`load_json` and :func:`load_toml`
refuse such documents before parsing, by a scan of the text that skips strings and
comments (and, for TOML, a walk of the parsed value), with one :class:`~mlpkg.errors.BadInput`
sentence naming the file. No document mlpkg writes comes near the limit (a lockfile nests
about eight levels).

Syntax errors pass through unchanged (``json.JSONDecodeError``, a ``ValueError``, and
``tomllib.TOMLDecodeError``), so that each reader words them for its own format.

This module imports pydantic only when :func:`validate` is called: the plan cache reads
JSON on the fast path of a warm ``mlpkg build``.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable
from itertools import accumulate
from typing import TYPE_CHECKING, Any, TypeVar

from mlpkg.errors import BadInput

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")

MAX_DEPTH = 64  # levels of arrays and tables/objects, the outermost one counting as 1

# What holds no nesting: JSON strings; TOML strings (the multi-line ones first; they may
# end in up to two quotes of their own) and comments. Removed before brackets are counted.
_JSON_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_TOML_STRINGS = re.compile(
    r'"""[^\\"]*(?:(?:\\[\s\S]|"(?!""))[^\\"]*)*"{3,5}'
    r"|'''[^']*(?:'(?!'')[^']*)*'{3,5}"
    r'|"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
    r"|'[^'\n]*'"
    r"|#[^\n]*"
)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _bracket_depth(text: str, skipped: re.Pattern[str]) -> int:
    """The deepest nesting of the brackets of ``text`` outside what ``skipped`` matches."""
    brackets = _NOT_BRACKETS.sub("", skipped.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _value_depth(value: object) -> int:
    """How deeply ``value`` nests lists and dicts (a scalar is 0), without recursion;
    stops counting once past :data:`MAX_DEPTH`."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(what: str, error: type[BadInput]) -> BadInput:
    return error(
        f"{what} is nested more than {MAX_DEPTH} levels deep, which no document of mlpkg "
        "is; it is damaged or made to break readers.",
        file=what,
    )


def load_json(text: str, what: str, error: type[BadInput] = BadInput) -> Any:
    """``json.loads(text)``, after refusing (``error``, naming ``what``, usually the file)
    a document nested more than :data:`MAX_DEPTH` levels deep. Invalid JSON raises
    ``ValueError`` as ``json.loads`` does."""
    if _bracket_depth(text, _JSON_STRINGS) > MAX_DEPTH:
        raise _too_deep(what, error)
    return json.loads(text)


def load_toml(text: str, what: str, error: type[BadInput] = BadInput) -> dict[str, Any]:
    """``tomllib.loads(text)``, after refusing (``error``, naming ``what``) a document whose
    arrays and inline tables, or whose parsed value (dotted keys and table headers
    included), nest more than :data:`MAX_DEPTH` levels deep. Invalid TOML raises
    ``tomllib.TOMLDecodeError``."""
    if _bracket_depth(text, _TOML_STRINGS) > MAX_DEPTH:
        raise _too_deep(what, error)
    data = tomllib.loads(text)
    if _value_depth(data) > MAX_DEPTH:
        raise _too_deep(what, error)
    return data


def printable(text: str) -> str:
    """``text`` with control characters escaped (``a\\nb``): a document's keys and values
    go into one-line error messages."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def field_of(loc: Iterable[int | str]) -> str:
    """The dotted name of a pydantic error location (``node.3.recipe``), control
    characters of keys escaped."""
    return printable(".".join(str(p) for p in loc)) or "(top level)"


def validate(
    model: type[M], data: object, what: str, kind: str, error: type[BadInput] = BadInput
) -> M:
    """``data`` as a ``model``; if it is not one, ``error`` says, in one sentence, that
    ``what`` (the file) is not a valid ``kind`` (e.g. "run record") and names the first
    field at fault and what is wrong with it; ``details`` lists every problem."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = [(field_of(err["loc"]), _message(err)) for err in e.errors()]
        where, msg = problems[0]
        raise error(
            f"{what} is not a valid {kind}: field {where}: {msg}.",
            details=[f"{what}: field {f}: {m}" for f, m in problems] if len(problems) > 1 else (),
            file=what,
            field=where,
        ) from None


def _message(err: Any) -> str:
    """Pydantic's message, without the names of mlpkg's model classes."""
    if err["type"] == "model_type":
        return "Input should be a valid dictionary"
    return printable(str(err["msg"]).removeprefix("Value error, "))
