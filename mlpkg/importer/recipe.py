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
* :func:`render_release` writes an :class:`~mlpkg.importer.release.ImportedRelease` (what
  :func:`release_of` makes of a node, or several interpreters' releases combined): the form
  above for one interpreter and one file; else ``python = "python@3.9,3.11"``, no
  ``[source]``, ``[wheel]`` with ``requires_python`` only, and one ``[[wheel.files]]``
  entry a file (``filename``, ``urls``, ``sha256`` or ``md5``), in the order of the first
  interpreter each serves.

:func:`existing_recipe` reads the recipe already there (for
:func:`~mlpkg.importer.release.merge_existing`, which decides what it keeps);
:func:`write_recipe` writes ``<into>/<name>/<version>.toml`` atomically. A fresh file gets
:func:`render`'s text as it is. Over an existing file it writes :func:`reimport`'s merge, and
leaves the file alone (returning False) when that merge is the file's text unchanged:

* Below the ``HAND_WRITTEN`` marker line, the file is kept byte for byte (variants, say).
* Above it, the file is edited in place through ``tomlkit``: only the generated keys are
  set to :func:`render`'s values (``GENERATED``: ``name``, ``version``, ``summary``,
  ``kind``, ``aliases`` at the top; every key of ``[inputs]``; ``urls``, ``sha256``, ``md5``
  of ``[source]``; ``filename``, ``requires_python``, ``files`` of ``[wheel]``), and a
  generated key the new render leaves out is removed (a ``[source]`` left empty goes too:
  a one-file recipe becomes a ``[[wheel.files]]`` one in place). A ``[[wheel.files]]``
  entry whose file name the old list has keeps its comments and other keys, its
  ``filename``, ``urls``, ``sha256``, ``md5`` updated. A key whose value is unchanged
  keeps its line as it is; a changed one keeps its trailing comment. A new key goes where
  :func:`render` puts it, relative to the generated keys of its table. Everything else
  (comments, blank lines, other keys, other tables such as ``[env]``) stays as written.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Collection, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from packaging.requirements import Requirement
from packaging.specifiers import Specifier, SpecifierSet
from tomlkit import TOMLDocument, aot, nl
from tomlkit import parse as parse_toml
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Table, Whitespace

from mlpkg.errors import BadInput, MlpkgError
from mlpkg.importer.release import ImportedRelease, WheelEntry, python_spec
from mlpkg.importer.resolve import Node, base_requirements, extra_requirements
from mlpkg.importer.target import Target
from mlpkg.recipes.index import canonical
from mlpkg.recipes.model import RESERVED_INPUT_KEYS
from mlpkg.resolver.spec import parse_spec
from mlpkg.store.fs import write_atomic

__all__ = [
    "existing_recipe",
    "input_key",
    "reimport",
    "release_of",
    "render",
    "render_release",
    "spec_text",
    "write_recipe",
]

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


def release_of(
    node: Node, nodes: Mapping[str, Node], target: Target, aliases: Sequence[str]
) -> ImportedRelease:
    """``node`` chosen for ``target``, as a one-interpreter release."""
    release, file = node.release, node.release.file
    inputs = recipe_inputs(node, nodes, target)
    del inputs["python"]
    python = target.python_version
    url = _without_userinfo(file.url)
    entry = WheelEntry(file.filename, (url,), file.sha256, file.md5, frozenset([python]))
    return ImportedRelease(
        name=release.name,
        version=release.version_text,
        summary=node.metadata.summary,
        aliases=tuple(aliases),
        inputs=inputs,
        pythons=(python,),
        files=(entry,),
        requires_python=file.requires_python or node.metadata.requires_python,
    )


def _hash_line(entry: WheelEntry) -> str:
    if entry.sha256:
        return f"sha256 = {_quote(entry.sha256)}"
    return f"md5 = {_quote(entry.md5 or '')}"


def render_release(release: ImportedRelease) -> str:
    """The recipe text of ``release``: ``[source]`` and ``wheel.filename`` for one
    interpreter and one file, else ``[[wheel.files]]`` (see the module docstring)."""
    lines = [
        "# Imported from a Python package index by `mlpkg import pypi`.",
        f"name = {_quote(release.name)}",
        f"version = {_quote(release.version)}",
        f"summary = {_quote(release.summary)}",
        'kind = "wheel"',
    ]
    if release.aliases:
        lines.append(f"aliases = [{', '.join(_quote(a) for a in release.aliases)}]")
    inputs = {"python": python_spec(release.pythons), **release.inputs}
    lines += ["", "[inputs]", *(f"{k} = {_quote(v)}" for k, v in inputs.items())]
    rp = release.requires_python
    requires = [f"requires_python = {_quote(rp)}"] if rp else []
    if release.single:
        file = release.files[0]
        lines += ["", "[source]", f"urls = [{', '.join(_quote(u) for u in file.urls)}]"]
        lines += [_hash_line(file), "", "[wheel]", f"filename = {_quote(file.filename)}"]
        return "\n".join(lines + requires) + "\n"
    lines += ["", "[wheel]", *requires]
    for file in release.files:
        lines += ["", "[[wheel.files]]", f"filename = {_quote(file.filename)}"]
        lines += [f"urls = [{', '.join(_quote(u) for u in file.urls)}]", _hash_line(file)]
    return "\n".join(lines) + "\n"


def render(node: Node, nodes: Mapping[str, Node], target: Target, aliases: list[str]) -> str:
    """The recipe text of ``node`` chosen for ``target`` (see the module docstring)."""
    return render_release(release_of(node, nodes, target, aliases))


HAND_WRITTEN = "# --- hand-written below: kept when re-importing ---\n"

# The keys render writes, by table ("" is the top level); None: every key of the table.
GENERATED: dict[str, tuple[str, ...] | None] = {
    "": ("name", "version", "summary", "kind", "aliases"),
    "inputs": None,
    "source": ("urls", "sha256", "md5"),
    "wheel": ("filename", "requires_python", "files"),
}
FILE_KEYS = ("filename", "urls", "sha256", "md5")  # of each [[wheel.files]] entry


def hand_written_tail(old: str) -> str:
    """What a maintainer added below the ``HAND_WRITTEN`` marker of an existing recipe
    (variants, say), from the marker on; ``""`` without a marker."""
    cut = old.find(HAND_WRITTEN)
    return "" if cut < 0 else old[cut:]


def _plain(value: Any) -> Any:
    """A tomlkit item's plain Python value (a plain value as it is)."""
    return value.unwrap() if hasattr(value, "unwrap") else value


def _update(old: MutableMapping[str, Any], new: Mapping[str, Any], owned: Collection[str]) -> None:
    """Make the ``owned`` keys of the tomlkit table ``old`` those of ``new``, in place: drop
    the ones ``new`` lacks, set the changed ones, and add the missing ones in ``new``'s
    order (the owned keys after the first missing one move below it, unchanged)."""
    for key in [k for k in old if k in owned and k not in new]:
        del old[key]
    keys = list(new)
    first_missing = next((i for i, k in enumerate(keys) if k not in old), len(keys))
    for key in keys[:first_missing]:
        if _plain(old[key]) != _plain(new[key]):
            old[key] = new[key]
    for key in keys[first_missing:]:
        kept = old.pop(key, None)
        same = kept is not None and _plain(kept) == _plain(new[key])
        old[key] = kept if same else new[key]


def _is_imported(doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` holds a generated key or table at all (else it is no imported recipe)."""
    return any(k in doc for k in (*(GENERATED[""] or ()), *(t for t in GENERATED if t)))


def _merge(doc: TOMLDocument, new: TOMLDocument) -> str:
    """The text of ``doc`` with the generated keys of the parsed recipe ``new`` (see the
    module docstring)."""
    for table, keys in GENERATED.items():
        target = doc if not table else doc.get(table)
        source = new if not table else new.get(table, {})
        if not isinstance(target, MutableMapping):
            if table in new:  # missing, or not a table: the new one, as rendered
                doc[table] = new[table]
            continue
        wanted = {k: v for k, v in source.items() if keys is None or k in keys}
        if isinstance(wanted.get("files"), AoT):
            wanted["files"] = _files_into(target, wanted["files"])
        _update(target, wanted, list(target) if keys is None else keys)
        if table == "wheel":
            _blank_before_files(target)
        if table and not target and table not in new:  # e.g. [source] of a one-file recipe
            del doc[table]
    return doc.as_string().rstrip("\n") + "\n"


def _files_into(wheel: MutableMapping[str, Any], new: AoT) -> AoT:
    """The ``[[wheel.files]]`` to set in the tomlkit table ``wheel``: its own when they
    are unchanged, else merged (:func:`_merge_files`), each entry followed by one blank
    line."""
    old = wheel.get("files")
    if isinstance(old, AoT) and _plain(old) == _plain(new):
        return old
    merged = _merge_files(old, new) if isinstance(old, AoT) else new
    for entry in merged:
        body = entry.value.body
        while body and isinstance(body[-1][1], Whitespace):
            body.pop()
        entry.add(nl())
        entry.trivia.indent = ""
    return merged


def _blank_before_files(wheel: MutableMapping[str, Any]) -> None:
    """One blank line between the keys of ``[wheel]`` and its ``[[wheel.files]]`` (last)."""
    files = wheel.get("files")
    if not isinstance(wheel, Table) or not isinstance(files, AoT) or not len(files):
        return
    body = wheel.value.body
    before = body[-2][1] if len(body) > 1 else None
    if isinstance(before, Whitespace) and before.s == "\n" and files[0].trivia.indent == "":
        return
    wheel.pop("files")
    while body and isinstance(body[-1][1], Whitespace):
        body.pop()
    wheel.add(nl())
    files[0].trivia.indent = ""
    wheel["files"] = files


def _merge_files(old: AoT, new: AoT) -> AoT:
    """The ``[[wheel.files]]`` of ``new``, each entry whose file name the old list has
    being that old entry with its generated keys updated (its comments and other keys
    kept)."""
    by_name = {str(t.get("filename")): t for t in old}
    merged = aot()
    for entry in new:
        kept = by_name.get(str(entry.get("filename")))
        if kept is not None:
            _update(kept, dict(entry), FILE_KEYS)
        merged.append(kept if kept is not None else entry)
    return merged


def reimport(old: str, fresh: str) -> str:
    """The text of an existing recipe ``old`` re-imported as the rendered text ``fresh``:
    its hand edits kept, its generated keys updated (see the module docstring); ``old``
    itself when nothing generated changed. When the part above the marker holds no
    generated key at all, it is replaced by ``fresh``, as it always was. Raises
    TOMLKitError when that part is not TOML."""
    tail = hand_written_tail(old)
    head = old[: len(old) - len(tail)]
    body = head.rstrip("\n") + "\n"
    doc = parse_toml(body)
    if not _is_imported(doc):
        return fresh + ("\n" + tail if tail else "")
    return _merge(doc, parse_toml(fresh)) + head[len(body) :] + tail


def existing_recipe(into: Path, name: str, version: str) -> dict[str, Any] | None:
    """The recipe at ``<into>/<name>/<version>.toml`` above its hand-written marker,
    parsed; None when there is none or it is not TOML (:func:`write_recipe` says so)."""
    path = into / name / f"{version}.toml"
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text[: len(text) - len(hand_written_tail(text))])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def write_recipe(into: Path, name: str, version: str, text: str) -> tuple[Path, bool]:
    """Write ``text`` to ``<into>/<name>/<version>.toml``, merged with an existing file
    (:func:`reimport`); (path, whether it was written). MlpkgError when the file cannot be
    read or written, or the existing one is not TOML above the marker."""
    path = into / name / f"{version}.toml"
    try:
        if path.is_file():
            old = path.read_text(encoding="utf-8")
            text = reimport(old, text)
            if old == text:
                return path, False
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as exc:
        raise MlpkgError(
            f"Cannot write the recipe {path}: {exc.strerror or exc}.", file=str(path)
        ) from exc
    except TOMLKitError as exc:
        raise MlpkgError(
            f"Cannot re-import over the recipe {path}: it is not valid TOML above the "
            f"hand-written marker ({exc}).",
            hint="Fix the file, or delete it to import it afresh.",
            file=str(path),
        ) from exc
    return path, True
