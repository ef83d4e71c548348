"""A release as a recipe describes it, and how the releases imported for several
interpreters (and an existing recipe of the same version) become one.

Contract:

* :class:`ImportedRelease` is what a ``wheel`` recipe says of one (project, version): its
  summary, aliases, inputs other than ``python``, the interpreters it serves (``"3.9"``,
  ``"3.11"``: its ``python`` input ``python@3.9,3.11``), its wheel files, each with the
  interpreters it serves, and ``requires_python``. :attr:`ImportedRelease.single` says
  whether it is written as today's one-file recipe (``[source]`` and ``wheel.filename``:
  one interpreter, one file) or with ``[[wheel.files]]``.
* :func:`combine` joins the releases two targets chose of the same version: interpreters
  and files united (a file chosen by both, a pure-Python wheel say, is listed once), the
  first one's summary and aliases, inputs united key by key with :func:`wider_input`, and
  :func:`requires_python` of both.
* :func:`wider_input` is how two specs of one input key become one, since a recipe has one
  set of inputs for all its interpreters: equal specs stay; an unconstrained one wins;
  when one's PEP 440 clauses are a subset of the other's, the one with fewer clauses wins
  (``numpy@>=1.21`` over ``numpy@>=1.21,<2``); else, when the index's versions of the
  project are known, the spec admitting a superset of the other's versions; else the
  input is left unconstrained (``numpy``): every target's choice satisfies it. A spec
  that is not PEP 440 (a hand-written Spack range) counts as unconstrained.
* :func:`merge_existing` merges a release into the recipe already at its path (parsed):
  the interpreters the old recipe serves that are not imported now are kept, with the old
  files they take best (by this machine's tags for CPython of that version) and the old
  inputs (united with :func:`wider_input`); the files of the interpreters imported now
  are the new ones. An old recipe that serves no other interpreter is replaced, as a
  one-interpreter import always did.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import Version

__all__ = [
    "ImportedRelease",
    "WheelEntry",
    "combine",
    "merge_existing",
    "python_spec",
    "requires_python",
    "wider_input",
]

Versions = Callable[[str], Sequence[Version] | None]  # the index's versions of a project


def _no_versions(name: str) -> None:
    return None


def _by_version(pythons: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(pythons), key=Version))


@dataclass(frozen=True)
class WheelEntry:
    """One wheel file of a release and the interpreters (``"3.11"``) it serves."""

    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    md5: str | None
    pythons: frozenset[str]


@dataclass(frozen=True)
class ImportedRelease:
    """One (project, version) as its recipe describes it (see the module docstring)."""

    name: str
    version: str
    summary: str
    aliases: tuple[str, ...]
    inputs: dict[str, str]  # key -> spec, without python
    pythons: tuple[str, ...]  # "3.9", "3.11": ascending
    files: tuple[WheelEntry, ...]  # by the first interpreter each serves
    requires_python: str | None

    @property
    def single(self) -> bool:
        """Whether this is a one-interpreter, one-file recipe (``[source]``)."""
        return len(self.pythons) == 1 and len(self.files) == 1


def python_spec(pythons: Sequence[str]) -> str:
    """The ``python`` input: ``python@3.11``, or ``python@3.9,3.11`` (Spack: either)."""
    return f"python@{','.join(_by_version(pythons))}"


def wider_input(a: str, b: str, versions: Versions = _no_versions) -> str:
    """One spec for an input two interpreters gave as ``a`` and ``b`` (module docstring)."""
    if a == b:
        return a
    name_a, _, text_a = a.partition("@")
    name_b, _, text_b = b.partition("@")
    if name_a != name_b:
        return a  # another project under the same key: the first one's
    if not text_a or not text_b:
        return name_a
    try:
        spec_a, spec_b = SpecifierSet(text_a), SpecifierSet(text_b)
    except InvalidSpecifier:
        return name_a
    if set(spec_a) <= set(spec_b):
        return a
    if set(spec_b) <= set(spec_a):
        return b
    known = versions(name_a)
    if known:
        in_a = {v for v in known if spec_a.contains(v, prereleases=True)}
        in_b = {v for v in known if spec_b.contains(v, prereleases=True)}
        if in_a >= in_b:
            return a
        if in_b >= in_a:
            return b
    return name_a


def _united(a: Mapping[str, str], b: Mapping[str, str], versions: Versions) -> dict[str, str]:
    keys = sorted(set(a) | set(b))
    return {
        k: wider_input(a[k], b[k], versions) if k in a and k in b else a.get(k) or b[k]
        for k in keys
    }


def requires_python(values: Iterable[str | None], pythons: Sequence[str]) -> str | None:
    """One Requires-Python for files that gave ``values``: the first one given that admits
    every interpreter of ``pythons`` (else the first one given); None if none is known."""
    known = [v for v in values if v]
    for value in known:
        try:
            spec = SpecifierSet(value)
        except InvalidSpecifier:
            continue
        if all(spec.contains(Version(p), prereleases=True) for p in pythons):
            return value
    return known[0] if known else None


def _files(entries: Iterable[WheelEntry]) -> tuple[WheelEntry, ...]:
    """``entries`` with one entry a file name (their interpreters united), ordered by the
    first interpreter each serves."""
    merged: dict[str, WheelEntry] = {}
    for e in entries:
        old = merged.get(e.filename)
        merged[e.filename] = e if old is None else replace(old, pythons=old.pythons | e.pythons)
    return tuple(sorted(merged.values(), key=lambda e: (min(map(Version, e.pythons)), e.filename)))


def combine(a: ImportedRelease, b: ImportedRelease, versions: Versions) -> ImportedRelease:
    """The release ``a`` and ``b`` (the same version, chosen for different interpreters)
    make together (see the module docstring)."""
    pythons = _by_version([*a.pythons, *b.pythons])
    return replace(
        a,
        inputs=_united(a.inputs, b.inputs, versions),
        pythons=pythons,
        files=_files([*a.files, *b.files]),
        requires_python=requires_python([a.requires_python, b.requires_python], pythons),
    )


def _old_pythons(doc: Mapping[str, Any]) -> list[str]:
    """The interpreters an existing recipe's ``python`` input names (``python@3.9,3.11``);
    none when it is not such a list."""
    inputs = doc.get("inputs")
    text = inputs.get("python") if isinstance(inputs, Mapping) else None
    if not isinstance(text, str) or not text.startswith("python@"):
        return []
    pythons = text[len("python@") :].split(",")
    return pythons if all(re.fullmatch(r"\d+\.\d+", p) for p in pythons) else []


@cache
def _rank(python: str) -> dict[str, int]:
    from mlpkg.importer.target import Target

    return {tag: i for i, tag in enumerate(Target.for_built_cpython(python).tags)}


def _best(filenames: Sequence[str], python: str) -> str | None:
    """The file CPython ``python`` on this machine takes best, or None."""
    rank, best = _rank(python), None
    for filename in filenames:
        try:
            tags = parse_wheel_filename(filename)[3]
        except InvalidWheelFilename:
            continue
        ranks = [rank[str(t)] for t in tags if str(t) in rank]
        if ranks and (best is None or min(ranks) < best[0]):
            best = (min(ranks), filename)
    return None if best is None else best[1]


def _entry(table: Mapping[str, Any], pythons: Iterable[str]) -> WheelEntry:
    return WheelEntry(
        str(table.get("filename", "")),
        tuple(str(u) for u in table.get("urls", ())),
        table.get("sha256"),
        table.get("md5"),
        frozenset(pythons),
    )


def _old_files(doc: Mapping[str, Any], pythons: list[str]) -> list[WheelEntry]:
    """An existing recipe's files, each with the interpreters of ``pythons`` it serves."""
    wheel, source = doc.get("wheel") or {}, doc.get("source") or {}
    if not isinstance(wheel, Mapping) or not isinstance(source, Mapping):
        return []
    if wheel.get("filename"):
        return [_entry({**source, "filename": wheel["filename"]}, pythons)]
    tables = [t for t in wheel.get("files", ()) if isinstance(t, Mapping)]
    names = [str(t.get("filename", "")) for t in tables]
    best = {p: _best(names, p) for p in pythons}
    return [_entry(t, [p for p in pythons if best[p] == t.get("filename")]) for t in tables]


def merge_existing(
    new: ImportedRelease, old: Mapping[str, Any], versions: Versions
) -> ImportedRelease:
    """``new`` merged into the parsed recipe ``old`` of the same version (module
    docstring)."""
    old_pythons = _old_pythons(old)
    kept = [p for p in old_pythons if p not in new.pythons]
    if not kept or old.get("kind") != "wheel":
        return new
    kept_files = [
        replace(f, pythons=f.pythons & set(kept))
        for f in _old_files(old, old_pythons)
        if f.pythons & set(kept)
    ]
    if not kept_files:  # no old file suits an interpreter kept: nothing to keep
        return new
    inputs = old.get("inputs") or {}
    old_inputs = {k: str(v) for k, v in inputs.items() if k != "python"}
    pythons = _by_version([*new.pythons, *(p for f in kept_files for p in f.pythons)])
    wheel = old.get("wheel") or {}
    known = [new.requires_python, wheel.get("requires_python")]
    return replace(
        new,
        inputs=_united(new.inputs, old_inputs, versions),
        pythons=pythons,
        files=_files([*new.files, *kept_files]),
        requires_python=requires_python(known, pythons),
    )
