"""Spec parsing and version matching (mlpkg.resolver.spec)."""

from __future__ import annotations

import pytest
from packaging.version import Version

from mlpkg.errors import BadInput
from mlpkg.resolver.spec import (
    Spec,
    VersionConstraint,
    canonicalize,
    parse_spec,
    parse_version,
)

GOOD_SPECS = [
    ("loadgen", "loadgen", None, ()),
    ("loadgen@4.0", "loadgen", "4.0", ()),
    ("onnxruntime@>=1.17,<1.20", "onnxruntime", ">=1.17,<1.20", ()),
    ("retinanet-offline+synthetic", "retinanet-offline", None, ("synthetic",)),
    ("numpy@==1.26.4", "numpy", "==1.26.4", ()),
    ("Py_Torch.Lib@1.2:1.4+cuda+fp16", "Py_Torch.Lib", "1.2:1.4", ("cuda", "fp16")),
    ("x@1.2,1.4:1.6", "x", "1.2,1.4:1.6", ()),
    ("x@:1.4", "x", ":1.4", ()),
    ("x@1.2:", "x", "1.2:", ()),
    ("x@~=1.17", "x", "~=1.17", ()),
    ("x@!=1.18", "x", "!=1.18", ()),
    ("x@<2", "x", "<2", ()),
    ("x@1!2.0", "x", "1!2.0", ()),
    ("  padded@1.0  ", "padded", "1.0", ()),
    ("9lives", "9lives", None, ()),
]


@pytest.mark.parametrize(("text", "name", "version", "variants"), GOOD_SPECS)
def test_parse_good(text: str, name: str, version: str | None, variants: tuple[str, ...]) -> None:
    spec = parse_spec(text)
    assert spec.name == name
    assert (None if spec.version is None else spec.version.text) == version
    assert spec.variants == variants


@pytest.mark.parametrize("text", [t for t, *_ in GOOD_SPECS])
def test_str_round_trips(text: str) -> None:
    spec = parse_spec(text)
    assert str(spec) == text.strip()
    assert parse_spec(str(spec)) == spec


BAD_SPECS = [
    ("", "empty"),
    ("foo@", "version after '@' is empty"),
    ("foo+", "variant after '+' is empty"),
    ("foo@1.0+", "variant after '+' is empty"),
    ("foo++bar", "variant after '+' is empty"),
    ("@1.0", "package name is missing"),
    ("-foo", "not a valid package name"),
    ("fo$o", "not a valid package name"),
    ("foo@1.0$", "'$' is not allowed"),
    ("foo@abc", "'abc' is not a valid version"),
    ("foo@1.0@2", "'@' is not allowed"),
    ("foo bar", "whitespace"),
    ("foo@>= 1.0", "whitespace"),
    ("foo@1.2,,1.4", "empty item"),
    ("foo@1.2,", "empty item"),
    ("foo@>=1.2,1.4", "mixes PEP 440 operators"),
    ("foo@>=1.2:1.4", "not a valid PEP 440 specifier"),
    ("foo@=1.0", "not a valid version"),
    ("foo@1.4:1.2", "is empty"),
    ("foo@1:2:3", "more than one ':'"),
    ("foo+a@1.0", "must come before the variants"),
    ("foo+a+a", "given twice"),
    ("foo+b%d", "not a valid variant name"),
    ("foo@1.*", "not a valid version"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_SPECS)
def test_parse_bad(text: str, reason: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_spec(text)
    message = info.value.message
    assert f"Invalid spec {text.strip()!r}: " in message
    assert reason in message
    assert message.endswith(".")
    assert message.count(". ") == 0  # one sentence


MATCHES = [
    # Spack prefix match on release segments.
    ("4.0", "4.0", True),
    ("4.0", "4.0.0", True),
    ("4.0", "4.0.1", True),
    ("4.0", "4.0.1.2", True),
    ("4.0", "4.01", False),
    ("4.0", "4.1", False),
    ("4.00", "4.0", True),
    ("4.0", "4", True),
    ("4.0", "40.0", False),
    ("4.0", "3.9", False),
    ("4.0", "4.0rc1", True),
    ("4.0", "4.0.1.post2", True),
    ("4.0", "4.0.3.dev1", True),
    ("4", "4.7.1", True),
    ("4", "5.0", False),
    ("4.0", "1!4.0", False),
    ("1.0rc1", "1.0rc1", True),
    ("1.0rc1", "1.0", False),
    # PEP 440 equality.
    ("==4.0", "4.0", True),
    ("==4.0", "4.0.0", True),
    ("==4.0", "4.0.1", False),
    ("==4.0", "4.0.post1", False),
    ("==4.0", "4.0rc1", False),
    ("==1.26.4", "1.26.4", True),
    ("==1.26.4", "1.26.5", False),
    # PEP 440 sets: comma is AND; pre-releases only when mentioned.
    (">=1.17,<1.20", "1.17", True),
    (">=1.17,<1.20", "1.19.9", True),
    (">=1.17,<1.20", "1.20", False),
    (">=1.17,<1.20", "1.16.3", False),
    (">=1.17,<1.20", "1.18rc1", False),
    (">=1.17rc1,<1.20", "1.18rc1", True),
    ("~=1.17", "1.19", True),
    ("~=1.17", "2.0", False),
    ("!=1.18", "1.18", False),
    ("!=1.18", "1.19", True),
    ("!=1.18", "1.19rc1", False),
    ("<2", "1.26.4", True),
    ("<2", "2.0", False),
    ("<2", "2.0rc1", False),
    ("==1.*", "1.9", True),
    ("==1.*", "2.0", False),
    ("===4.0", "4.0", True),
    ("===4.0", "4.0.0", False),
    # Spack ranges: inclusive, both ends read as prefixes.
    ("1.2:1.4", "1.2", True),
    ("1.2:1.4", "1.3.7", True),
    ("1.2:1.4", "1.4", True),
    ("1.2:1.4", "1.4.9", True),
    ("1.2:1.4", "1.4rc1", True),
    ("1.2:1.4", "1.5", False),
    ("1.2:1.4", "1.1.9", False),
    ("1.2:1.4", "1.2rc1", True),
    ("1.2:", "1.2", True),
    ("1.2:", "99", True),
    ("1.2:", "1.1", False),
    (":1.4", "0.1", True),
    (":1.4", "1.4.2", True),
    (":1.4", "1.5", False),
    (":", "123.4", True),
    ("1.4.1:1.4", "1.4.1", True),
    ("1.4.1:1.4", "1.4.0", False),
    # Spack alternatives: comma is OR.
    ("1.2,1.4:1.6", "1.2.3", True),
    ("1.2,1.4:1.6", "1.3", False),
    ("1.2,1.4:1.6", "1.5", True),
    ("1.2,1.4:1.6", "1.6.1", True),
    ("1.2,1.4:1.6", "1.7", False),
]


@pytest.mark.parametrize(("constraint", "version", "expected"), MATCHES)
def test_constraint_matches(constraint: str, version: str, expected: bool) -> None:
    assert VersionConstraint(constraint).matches(Version(version)) is expected
    spec = parse_spec(f"pkg@{constraint}")
    assert spec.matches(Version(version)) is expected


def test_spec_without_version_matches_everything() -> None:
    spec = parse_spec("pkg+variant")
    assert spec.version is None
    assert spec.matches(Version("0.0.1rc1"))
    assert spec.matches(Version("2024.1"))


def test_constraint_str_and_equality() -> None:
    constraint = VersionConstraint(">=1.17,<1.20")
    assert str(constraint) == ">=1.17,<1.20"
    assert constraint == VersionConstraint(">=1.17,<1.20")
    assert constraint != VersionConstraint(">=1.17")
    assert hash(constraint) == hash(VersionConstraint(">=1.17,<1.20"))


def test_constraint_rejects_junk_directly() -> None:
    with pytest.raises(BadInput, match=r"Invalid version constraint 'x\.y'"):
        VersionConstraint("x.y")


def test_spec_constructor_validates() -> None:
    assert str(Spec("a", VersionConstraint("1.0"), ("b",))) == "a@1.0+b"
    with pytest.raises(BadInput, match="not a valid package name"):
        Spec("bad name")
    with pytest.raises(BadInput, match="variant"):
        Spec("ok", None, ("",))


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("NumPy", "numpy"),
        ("retinanet_offline", "retinanet-offline"),
        ("Foo.-_Bar", "foo-bar"),
        ("a__b..c--d", "a-b-c-d"),
        ("plain", "plain"),
    ],
)
def test_canonicalize(name: str, canonical: str) -> None:
    assert canonicalize(name) == canonical


def test_names_keep_case() -> None:
    assert parse_spec("NumPy@1.0").name == "NumPy"


def test_parse_version() -> None:
    assert parse_version("4.00") == Version("4.0")
    assert parse_version("1.26.4") == Version("1.26.4")
    for junk in ["", "abc", "1.0 foo", "1..0"]:
        with pytest.raises(BadInput, match="is not a valid version"):
            parse_version(junk)
