"""Fuzzing the spec parser (issue 15): arbitrary text, and text made of the pieces a spec
is made of (names, ``@``, ``+``, operators, version parts, ranges, commas, wildcards).

Property: :func:`~mlpkg.resolver.spec.parse_spec` gives a spec that prints back to one
that parses equal and matches versions without an error, or raises
:class:`~mlpkg.errors.BadInput` with one sentence naming the spec; never another
exception. Profiles: tests/fuzz_support.py."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from packaging.version import Version

from mlpkg.errors import BadInput
from mlpkg.resolver.spec import VersionConstraint, parse_spec
from tests.fuzz_support import PROFILES, fuzz

VERSIONS = [Version(v) for v in ("0", "1.0", "4.0.1", "1.17rc1", "2!1.0", "1.0.post1", "1.0+cu1")]


def check_spec(text: str) -> None:
    try:
        spec = parse_spec(text)
    except BadInput as e:
        assert e.message.startswith("Invalid spec"), e.message
        assert "\n" not in e.message.strip("\n"), e.message
        return
    again = parse_spec(str(spec))
    assert again == spec
    for v in VERSIONS:
        assert spec.matches(v) == again.matches(v)


def check_constraint(text: str) -> None:
    try:
        constraint = VersionConstraint(text)
    except BadInput as e:
        assert e.message.startswith("Invalid version constraint"), e.message
        return
    for v in VERSIONS:
        constraint.matches(v)


_PIECE = st.sampled_from(
    ["a", "Zz", "0", "1", "4.0", ".", "-", "_", "@", "+", ",", ":", "*", ".*", "==", "===",
     "!=", ">=", "<", "~=", "!", "rc1", "post", "dev", "+cu118", " ", "\t", "\x00", "é", "٣",
     "99999999999999999999999999", "1!2", "@@", "++", "v1"]
)  # fmt: skip
_SPECLIKE = st.lists(_PIECE, max_size=10).map("".join)


@pytest.mark.parametrize("profile", PROFILES)
def test_arbitrary_text(profile: str) -> None:
    fuzz(profile, st.text(max_size=40), check_spec)


@pytest.mark.parametrize("profile", PROFILES)
def test_text_made_of_spec_pieces(profile: str) -> None:
    fuzz(profile, _SPECLIKE, check_spec)


@pytest.mark.parametrize("profile", PROFILES)
def test_version_constraints(profile: str) -> None:
    fuzz(profile, _SPECLIKE | st.text(max_size=20), check_constraint)
