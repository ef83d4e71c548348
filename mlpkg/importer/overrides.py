"""Hand-maintained facts that a project's metadata gets wrong, applied while importing.

File format (TOML), one table per project (names are compared in PEP 503 canonical form)::

    [onnxruntime]
    aliases = ["ort"]                 # written as the recipe's ``aliases``

    [[onnxruntime.requires]]          # extra requirements for some versions
    versions = "<1.19"                # a PEP 440 specifier set; "" or absent = every version
    add = ["numpy<2", "packaging"]    # PEP 508 requirement strings (markers allowed)

Contract: :meth:`Overrides.load` reads such a file and raises
:class:`~mlpkg.errors.BadInput` naming the file and the field at fault for anything that is
not in this format (unknown keys included). :meth:`Overrides.requirements_for` gives the extra
requirement strings for one version; :meth:`Overrides.aliases_for` the aliases.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from mlpkg.errors import BadInput

__all__ = ["Overrides"]


def _fail(path: Path, where: str, what: str) -> BadInput:
    return BadInput(
        f"{path} is not a valid overrides file: {where}: {what}.", file=str(path), field=where
    )


def _requires(path: Path, name: str, value: Any) -> list[tuple[SpecifierSet, list[str]]]:
    if not isinstance(value, list):
        raise _fail(path, f"{name}.requires", "must be an array of tables ([[...requires]])")
    rules: list[tuple[SpecifierSet, list[str]]] = []
    for i, rule in enumerate(value):
        where = f"{name}.requires[{i}]"
        if not isinstance(rule, dict) or set(rule) - {"versions", "add"}:
            raise _fail(path, where, "must be a table with only 'versions' and 'add'")
        versions, add = rule.get("versions", ""), rule.get("add")
        if not isinstance(versions, str):
            raise _fail(path, f"{where}.versions", "must be a string")
        try:
            spec = SpecifierSet(versions)
        except InvalidSpecifier:
            raise _fail(path, f"{where}.versions", f"{versions!r} is not a specifier set") from None
        if not isinstance(add, list) or not all(isinstance(a, str) for a in add):
            raise _fail(path, f"{where}.add", "must be a list of requirement strings")
        for text in add:
            try:
                Requirement(text)
            except InvalidRequirement as exc:
                raise _fail(
                    path, f"{where}.add", f"{text!r} is not a requirement ({exc})"
                ) from None
        rules.append((spec, list(add)))
    return rules


@dataclass
class Overrides:
    """Extra requirements per version range, and aliases, by canonical project name."""

    extra_requires: dict[str, list[tuple[SpecifierSet, list[str]]]] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Overrides:
        """Read an overrides file (format in the module docstring)."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise BadInput(
                f"Cannot read the overrides file {path}: {exc.strerror or exc}.", file=str(path)
            ) from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadInput(f"{path} is not valid TOML: {exc}.", file=str(path)) from exc
        result = cls()
        for name, table in data.items():
            if not isinstance(table, dict):
                raise _fail(path, name, "must be a table")
            unknown = set(table) - {"aliases", "requires"}
            if unknown:
                raise _fail(path, f"{name}.{sorted(unknown)[0]}", "unknown field")
            key = str(canonicalize_name(name))
            if "requires" in table:
                result.extra_requires.setdefault(key, []).extend(
                    _requires(path, name, table["requires"])
                )
            if "aliases" in table:
                aliases = table["aliases"]
                if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                    raise _fail(path, f"{name}.aliases", "must be a list of names")
                result.aliases.setdefault(key, []).extend(aliases)
        return result

    def requirements_for(self, name: str, version: Version) -> list[str]:
        """The extra requirement strings for ``name`` at ``version``."""
        out: list[str] = []
        for spec, add in self.extra_requires.get(str(canonicalize_name(name)), []):
            if spec.contains(version, prereleases=True):
                out.extend(add)
        return out

    def aliases_for(self, name: str) -> list[str]:
        return list(self.aliases.get(str(canonicalize_name(name)), []))
