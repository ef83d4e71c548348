"""Package specs as users type them: ``NAME[@VERSION][+VARIANT...]``.

Contract:

* Names match ``[A-Za-z0-9][A-Za-z0-9._-]*`` and keep their case; :func:`canonicalize` gives
  the form used to compare them (PEP 503: lower case, runs of ``-``, ``_``, ``.`` folded to
  ``-``).
* The version part runs from ``@`` to the first ``+``; every ``+`` starts a variant (so a
  PEP 440 local version label such as ``2.1+cu118`` cannot be written in a spec). The version
  comes before the variants. No whitespace is allowed inside a spec.
* Version constraints (:class:`VersionConstraint`) follow Spack, plus PEP 440:

  - ``4.0`` (no operator) is a Spack prefix match on release segments: 4.0, 4.0.0, 4.0.1,
    4.0.1.2 and 4.0rc1 match; 4.1 and 40.0 do not. A version with a pre, post, dev or local
    part (``1.0rc1``) matches only itself.
  - ``1.2:1.4``, ``1.2:``, ``:1.4`` are Spack ranges, inclusive at both ends with each end
    read as a prefix (1.4.9 lies in ``1.2:1.4``).
  - Without operators a comma means OR: ``1.2,1.4:1.6``.
  - With PEP 440 operators (``==4.0``, ``>=1.17,<1.20``, ``~=1.17``, ``!=1.18``) the text is
    a :class:`packaging.specifiers.SpecifierSet` (comma means AND); pre-releases match only
    when one of its versions is a pre-release. Mixing the two styles is an error.

* Anything invalid raises :class:`mlpkg.errors.BadInput` with one sentence naming the spec and
  what is wrong. ``str(parse_spec(s))`` parses back to an equal :class:`Spec`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from mlpkg.errors import BadInput
from mlpkg.recipes.index import canonical

__all__ = [
    "Spec",
    "VersionConstraint",
    "canonicalize",
    "parse_spec",
    "parse_version",
]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION_TEXT_RE = re.compile(r"[A-Za-z0-9.:,!=<>~*_-]+")
_PEP440_OPERATORS = ("===", "~=", "==", "!=", "<=", ">=", "<", ">")

Matcher = Callable[[Version], bool]


class _Invalid(Exception):
    """Why a piece of a spec is invalid (a clause to follow "Invalid spec 'x': ")."""


# The PEP 503 form of a name: lower case, runs of ``-_.`` folded to one ``-`` (mlpkg's one
# name folding, packaging's canonicalize_name; see mlpkg.recipes.index.canonical).
canonicalize = canonical


def parse_version(text: str) -> Version:
    """``text`` as a PEP 440 version; :class:`BadInput` when it is not one."""
    try:
        return Version(text)
    except InvalidVersion:
        raise BadInput(f"{text!r} is not a valid version.") from None


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise _Invalid(f"{text!r} is not a valid version") from None


def _prefix_match(prefix: Version, version: Version) -> bool:
    """Spack's ``@prefix``: ``version``'s release starts with ``prefix``'s (zero-padded)."""
    if prefix.epoch != version.epoch:
        return False
    if (
        prefix.pre is not None
        or prefix.post is not None
        or prefix.dev is not None
        or prefix.local is not None
    ):
        return version == prefix
    wanted = prefix.release
    release = version.release
    if len(release) < len(wanted):
        release = release + (0,) * (len(wanted) - len(release))
    return release[: len(wanted)] == wanted


def _spack_clause(item: str) -> Matcher:
    """One comma-separated Spack alternative: ``V``, ``A:B``, ``A:``, ``:B`` or ``:``."""
    if ":" not in item:
        exact = _version(item)
        return lambda v: _prefix_match(exact, v)
    lo_text, _, hi_text = item.partition(":")
    if ":" in hi_text:
        raise _Invalid(f"the range {item!r} has more than one ':'")
    lo = _version(lo_text) if lo_text else None
    hi = _version(hi_text) if hi_text else None
    if lo is not None and hi is not None and not (lo <= hi or _prefix_match(hi, lo)):
        raise _Invalid(f"the range {item!r} is empty because {lo} comes after {hi}")

    def match(v: Version) -> bool:
        above = lo is None or v >= lo or _prefix_match(lo, v)
        return above and (hi is None or v <= hi or _prefix_match(hi, v))

    return match


def _mentions_prerelease(version_text: str) -> bool:
    try:
        return Version(version_text.removesuffix(".*")).is_prerelease
    except InvalidVersion:  # the free text of an '===' clause
        return False


def _pep440(text: str) -> Matcher:
    try:
        specifiers = SpecifierSet(text)
    except InvalidSpecifier:
        raise _Invalid(f"{text!r} is not a valid PEP 440 specifier set") from None
    allow_pre = any(_mentions_prerelease(s.version) for s in specifiers)
    if any(s.operator == "===" for s in specifiers):  # compares text: 4.0 differs from 4.0.0
        return lambda v: specifiers.contains(v, prereleases=allow_pre)
    seen: dict[Version, bool] = {}  # SpecifierSet.contains is slow, and versions repeat

    def match(v: Version) -> bool:
        found = seen.get(v)
        if found is None:
            found = seen[v] = specifiers.contains(v, prereleases=allow_pre)
        return found

    return match


@functools.lru_cache(maxsize=4096)
def _compile(text: str) -> Matcher:
    """The match function of a version constraint; :class:`_Invalid` when malformed."""
    if not text:
        raise _Invalid("the version after '@' is empty")
    if not _VERSION_TEXT_RE.fullmatch(text):
        bad = next(char for char in text if not _VERSION_TEXT_RE.fullmatch(char))
        raise _Invalid(f"{bad!r} is not allowed in a version constraint")
    items = text.split(",")
    if any(not item for item in items):
        raise _Invalid(f"the version constraint {text!r} has an empty item between commas")
    with_operator = [item.startswith(_PEP440_OPERATORS) for item in items]
    if any(with_operator):
        if not all(with_operator):
            raise _Invalid(
                f"the version constraint {text!r} mixes PEP 440 operators with Spack versions"
            )
        return _pep440(text)
    clauses = [_spack_clause(item) for item in items]
    if len(clauses) == 1:
        return clauses[0]
    return lambda v: any(clause(v) for clause in clauses)


@dataclass(frozen=True)
class VersionConstraint:
    """The text after ``@`` in a spec; validated on construction (:class:`BadInput`)."""

    text: str
    _match: Matcher = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        try:
            matcher = _compile(self.text)
        except _Invalid as exc:
            raise BadInput(f"Invalid version constraint {self.text!r}: {exc}.") from None
        object.__setattr__(self, "_match", matcher)

    def matches(self, version: Version) -> bool:
        """Whether ``version`` satisfies this constraint."""
        return self._match(version)

    def __str__(self) -> str:
        return self.text


def _check_package_name(name: str) -> None:
    if not name:
        raise _Invalid("the package name is missing")
    if not _NAME_RE.fullmatch(name):
        raise _Invalid(
            f"{name!r} is not a valid package name (letters, digits, '.', '_' and '-', "
            "starting with a letter or digit)"
        )


def _check_variants(variants: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for variant in variants:
        if not variant:
            raise _Invalid("the variant after '+' is empty")
        if "@" in variant:
            raise _Invalid("the version ('@...') must come before the variants ('+...')")
        if not _NAME_RE.fullmatch(variant):
            raise _Invalid(f"{variant!r} is not a valid variant name")
        if variant in seen:
            raise _Invalid(f"the variant {variant!r} is given twice")
        seen.add(variant)


@dataclass(frozen=True)
class Spec:
    """A parsed ``NAME[@VERSION][+VARIANT...]``; the name is kept as given."""

    name: str
    version: VersionConstraint | None = None
    variants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            _check_package_name(self.name)
            _check_variants(self.variants)
        except _Invalid as exc:
            raise BadInput(f"Invalid spec {str(self)!r}: {exc}.", package=self.name) from None

    def matches(self, version: Version) -> bool:
        """Whether ``version`` satisfies this spec's constraint (always, when it has none)."""
        return self.version is None or self.version.matches(version)

    def __str__(self) -> str:
        text = self.name if self.version is None else f"{self.name}@{self.version}"
        return text + "".join(f"+{variant}" for variant in self.variants)


def _parse(text: str) -> Spec:
    if not text:
        raise _Invalid("it is empty")
    if any(char.isspace() for char in text):
        raise _Invalid("it contains whitespace")
    head, plus, variant_text = text.partition("+")
    name, at, version_text = head.partition("@")
    _check_package_name(name)
    variants = tuple(variant_text.split("+")) if plus else ()
    _check_variants(variants)
    version = None
    if at:
        _compile(version_text)  # raises _Invalid with the reason
        version = VersionConstraint(version_text)
    return Spec(name, version, variants)


def parse_spec(text: str) -> Spec:
    """Parse ``NAME[@VERSION][+VARIANT...]``; :class:`BadInput` naming the spec when invalid."""
    stripped = text.strip()
    try:
        return _parse(stripped)
    except _Invalid as exc:
        raise BadInput(f"Invalid spec {stripped!r}: {exc}.") from None
