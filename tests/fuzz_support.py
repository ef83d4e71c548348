"""Hypothesis profiles for the fuzz tests (tests/*/test_*_fuzz.py, issue 15).

Every fuzz test runs under two profiles: ``fast`` in the default suite (a modest number of
examples, derandomized so that CI sees the same inputs on every run) and ``slow``, with many
more random examples, marked ``@pytest.mark.slow`` (opt-in: ``-m slow`` or ``MLPKG_SLOW=1``,
tests/conftest.py). :func:`fuzz` runs one property under one profile::

    @pytest.mark.parametrize("profile", PROFILES)
    def test_x(profile: str) -> None:
        fuzz(profile, st.binary(), check)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,  # no .hypothesis/ directory in the checkout
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
SETTINGS = {
    "fast": settings(max_examples=60, derandomize=True, **_COMMON),
    "slow": settings(max_examples=3000, derandomize=False, **_COMMON),
}
PROFILES = [pytest.param("fast"), pytest.param("slow", marks=pytest.mark.slow)]


def fuzz(profile: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    """Run ``check`` on examples of ``strategy`` under the named profile."""
    settings(SETTINGS[profile])(given(strategy)(check))()


def fuzz_with(
    base: settings, examples: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]
) -> None:
    """:func:`fuzz` with ``examples`` examples instead of the profile's (a slow check)."""
    settings(base, max_examples=examples)(given(strategy)(check))()


# -- structural mutations of TOML and JSON documents ------------------------------------------

DATE = "__fuzz-date__"  # a string that :func:`toml_text` writes as a TOML date-time

LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.sampled_from([0, -1, 1 << 63, -(1 << 63), 2, 10**30, 10**400])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "unknown", "sha256:" + "0" * 64, "1" * 64, DATE, "/etc", "../x"])
    | st.sampled_from(["9" * 400 + "PiB", "1e400", "-1", "nan", "inf", "\x00", "a\nb"])
)
VALUE = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths_of(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``doc`` (dict keys and list indices), ``()`` first."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths_of(v, (*prefix, i))
    return out


def drop_none(value: Any) -> Any:
    """TOML has no null: None removes the key (or list item)."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value if v is not None]
    return value


def mutate(draw: st.DrawFn, doc: Any, rounds: int = 3) -> Any:
    """``doc`` (a fresh copy, changed in place) after 1 to ``rounds`` edits: a value
    replaced by one of any type, a key or item deleted, or a key added to a table."""
    for _ in range(draw(st.integers(1, rounds))):
        paths = paths_of(doc)[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "add" and isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.text(min_size=1, max_size=8))] = draw(VALUE)
        else:
            parent[path[-1]] = draw(VALUE)
    return doc


def toml_text(doc: dict[str, Any], fallback: str) -> str:
    """``doc`` as TOML (mlpkg's writer), :data:`DATE` written as a date-time; ``fallback``
    for a document TOML cannot hold (a list mixing tables and scalars)."""
    from mlpkg.resolver.toml_writer import dumps

    try:
        text = dumps(drop_none(doc))
    except TypeError:
        return fallback
    return text.replace(f'"{DATE}"', "1979-05-27T07:32:00Z")


def edit_text(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` after (position, deleted length, inserted text) edits."""
    for pos, delete, insert in edits:
        at = pos % (len(text) + 1)
        text = text[:at] + insert + text[at + delete :]
    return text


TEXT_EDITS = st.lists(
    st.tuples(st.integers(0, 1 << 14), st.integers(0, 12), st.text(max_size=8)),
    min_size=1,
    max_size=4,
)
