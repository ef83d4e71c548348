"""Write a chosen release as an mlpkg ``wheel`` recipe (TOML text).

Contract of :func:`render` (one node of a resolution → the recipe text):

* Top level: ``name`` (PEP 503 canonical), ``version`` (as the wheel's file name writes it),
  ``summary`` (METADATA Summary), ``kind = "wheel"``, and ``aliases`` when the overrides give
  some.
* ``[inputs]``: ``python = "python@<major.minor>"``, then one input per requirement whose marker
  holds for the target (overrides included), keyed by :func:`input_key`, valued
  ``name@<specifier>`` or just ``name``. A requirement ``foo[bar]`` adds ``foo`` plus, as
  the requester's own inputs, the requirements foo's extra ``bar`` adds (recursively); two
  requirements on one name merge into one input with both specifiers. A project never lists
  itself. Specifiers that an mlpkg spec cannot express (e.g. a ``+local`` label) are dropped.
* ``[source]``: ``urls`` (the wheel's URL, without user info) and ``sha256`` (or ``md5``
  where the index gives only that). ``[wheel]``: ``filename`` and ``requires_python`` when
  the index or the metadata gives it.

:func:`write_recipe` writes ``<into>/<name>/<version>.toml`` atomically, leaving an existing
identical file alone (it then returns False).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from packaging.requirements import Requirement
from packaging.specifiers import Specifier, SpecifierSet

from mlpkg.errors import BadInput, MlpkgError
from mlpkg.importer.resolve import Node, base_requirements, extra_requirements
from mlpkg.importer.target import Target
from mlpkg.recipes.index import canonical
from mlpkg.recipes.model import RESERVED_INPUT_KEYS
from mlpkg.resolver.spec import parse_spec
from mlpkg.store.fs import write_atomic

__all__ = ["input_key", "render", "spec_text", "write_recipe"]

_OPERATOR_ORDER = ("===", "==", "~=", ">=", ">", "<=", "<", "!=")


def input_key(name: str) -> str:
    """The ``[inputs]`` key of a project: canonical name with ``-`` and ``.`` → ``_``."""
    key = canonical(name).replace("-", "_").replace(".", "_")
    if key[:1].isdigit():
        key = "_" + key
    if key in RESERVED_INPUT_KEYS or key == "python":
        key += "_pkg"
    return key


def _expressible(name: str, spec: Specifier) -> bool:
    try:
        parsed = parse_spec(f"{name}@{spec}")
    except BadInput:
        return False
    return not parsed.variants and str(parsed.version) == str(spec)  # '+' starts a variant


def spec_text(name: str, specifier: SpecifierSet) -> str:
    """``name@>=1,<2`` (lower bounds first), or ``name`` when there is no constraint."""
    kept = [s for s in specifier if _expressible(name, s)]
    kept.sort(key=lambda s: (_OPERATOR_ORDER.index(s.operator), s.version))
    return f"{name}@{','.join(str(s) for s in kept)}" if kept else name


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def recipe_inputs(node: Node, nodes: Mapping[str, Node], target: Target) -> dict[str, str]:
    """The ``[inputs]`` of ``node``'s recipe, ``python`` first, then by key."""
    own = node.release.name
    merged: dict[str, tuple[str, SpecifierSet]] = {}
    seen: set[tuple[str, str]] = set()

    def add(req: Requirement) -> None:
        name = canonical(req.name)
        if name == own:
            return
        old = merged.get(name, (name, SpecifierSet()))[1]
        merged[name] = (name, old & req.specifier)
        expand(name, req.extras)

    def expand(name: str, extras: set[str]) -> None:
        dep = nodes.get(name)
        for extra in sorted(canonical(e) for e in extras):
            if dep is None or (name, extra) in seen:
                continue
            seen.add((name, extra))
            for req in extra_requirements(dep.requirements, target.markers, extra):
                add(req)

    for req in base_requirements(node.requirements, target.markers):
        add(req)
    inputs = {"python": f"python@{target.python_version}"}
    for name, spec in sorted(merged.values(), key=lambda item: input_key(item[0])):
        inputs[input_key(name)] = spec_text(name, spec)
    return inputs


def render(node: Node, nodes: Mapping[str, Node], target: Target, aliases: list[str]) -> str:
    """The recipe text of ``node`` (see the module docstring)."""
    release, file = node.release, node.release.file
    requires_python = file.requires_python or node.metadata.requires_python
    lines = [
        "# Imported from a Python package index by `mlpkg import pypi`.",
        f"name = {_quote(release.name)}",
        f"version = {_quote(release.version_text)}",
        f"summary = {_quote(node.metadata.summary)}",
        'kind = "wheel"',
    ]
    if aliases:
        lines.append(f"aliases = [{', '.join(_quote(a) for a in aliases)}]")
    lines += ["", "[inputs]"]
    lines += [
        f"{key} = {_quote(value)}" for key, value in recipe_inputs(node, nodes, target).items()
    ]
    lines += ["", "[source]", f"urls = [{_quote(_without_userinfo(file.url))}]"]
    if file.sha256:
        lines.append(f"sha256 = {_quote(file.sha256)}")
    else:
        lines.append(f"md5 = {_quote(file.md5 or '')}")
    lines += ["", "[wheel]", f"filename = {_quote(file.filename)}"]
    if requires_python:
        lines.append(f"requires_python = {_quote(requires_python)}")
    return "\n".join(lines) + "\n"


HAND_WRITTEN = "# --- hand-written below: kept when re-importing ---\n"


def hand_written_tail(old: str) -> str:
    """What a maintainer added below the ``HAND_WRITTEN`` marker of an existing recipe
    (variants, say); re-importing keeps it."""
    cut = old.find(HAND_WRITTEN)
    return "" if cut < 0 else "\n" + old[cut:]


def write_recipe(into: Path, name: str, version: str, text: str) -> tuple[Path, bool]:
    """Write ``text`` to ``<into>/<name>/<version>.toml``; (path, whether it was written)."""
    path = into / name / f"{version}.toml"
    try:
        if path.is_file():
            old = path.read_text(encoding="utf-8")
            text += hand_written_tail(old)
            if old == text:
                return path, False
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as exc:
        raise MlpkgError(
            f"Cannot write the recipe {path}: {exc.strerror or exc}.", file=str(path)
        ) from exc
    return path, True
