"""The closure diff of two locks: which packages differ, and why each rebuilt one did.

Two runs compared are only comparable as far as their closures agree. A lock (format 1,
:mod:`mlpkg.resolver.lockfile`; ``result.json`` keeps it as its ``lock`` table) pins every
node by its store path, and a path hashes the node's recipe and the paths of its inputs.
So one changed version makes every node above it get a new path, though their own
versions stay the same. :func:`closure_diff` tells the two apart:

* ``version_changed``: a package whose version differs (``onnxruntime 1.22.1 -> 1.17.3``);
* ``rebuilt``: same name and version, another path; ``because`` gives one fragment per
  direct input whose path changed (``numpy 2.4.6 -> 1.26.4``, ``pycocotools rebuilt``,
  ``input X added``/``removed``) or ``its recipe changed``; ``chain`` gives, like
  ``why-depends``, the shortest path of names from the node down to each root cause (a
  version change, a recipe change, an input added or removed), at most :data:`MAX_CHAINS`;
* ``added`` / ``removed``: nodes of one side only.

A lock may hold several nodes of one name (one per resolution scope). Nodes are paired
name by name: identical paths first, then equal versions, then nodes a name has only one
of on each side, then the inputs of paired nodes under the same key, then the rest in lock
order. A node still unpaired is set against the node its parents' counterparts use under
the same key (the app's runtime ``numpy 2.4.6 -> 1.26.4`` while a dataset's build keeps
2.4.6), and only when there is none is it added or removed. Malformed locks (an input that
is no node, a cycle) give a diff, never an error or a hang.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_CHAINS = 5  # chains given per rebuilt node
_HASH_LEN = 32


@dataclass(frozen=True)
class _Node:
    path: str
    name: str
    version: str
    inputs: Mapping[str, str]
    recipe: Any


@dataclass
class _Lock:
    """One side: its nodes in lock order, by path, and who uses each (parent path, key)."""

    nodes: list[_Node]
    platform: str
    by_path: dict[str, _Node] = field(default_factory=dict)
    parents: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Step:
    """What one paired node's change comes from: a root cause (``cause``) or an input that
    was rebuilt itself (``next``, to follow)."""

    text: str
    tail: tuple[str, ...]  # names this step adds to a chain
    cause: tuple[str, ...] | None = None
    next: tuple[_Node, _Node] | None = None


def _read(doc: Mapping[str, Any]) -> _Lock:
    """The nodes of a lock table; entries that are not tables are skipped, missing fields
    read as empty, so that a malformed lock still gives a diff."""
    raw = doc.get("node")
    nodes = []
    for n in raw if isinstance(raw, list) else []:
        if not isinstance(n, Mapping):
            continue
        inputs = n.get("inputs")
        inputs = {str(k): str(v) for k, v in inputs.items()} if isinstance(inputs, Mapping) else {}
        path = str(n.get("path", ""))
        name, version = str(n.get("name", _label(path))), str(n.get("version", ""))
        nodes.append(_Node(path, name, version, inputs, n.get("recipe")))
    lock = _Lock([], str(doc.get("platform", "")))
    for node in nodes:
        if node.path in lock.by_path:  # a path listed twice: the first counts
            continue
        lock.nodes.append(node)
        lock.by_path[node.path] = node
        for key, dep in sorted(node.inputs.items()):
            lock.parents.setdefault(dep, []).append((node.path, key))
    return lock


def _label(path: str) -> str:
    """A store path name without its hash: ``numpy-2.4.6``."""
    return path[_HASH_LEN + 1 :] if len(path) > _HASH_LEN and path[_HASH_LEN] == "-" else path


class _Pairing:
    """Base nodes paired one to one with other nodes (see the module docstring)."""

    def __init__(self, base: _Lock, other: _Lock) -> None:
        self.base, self.other = base, other
        self.b2o: dict[str, str] = {}
        self.o2b: dict[str, str] = {}

    def pair(self, b: _Node, o: _Node) -> None:
        self.b2o[b.path], self.o2b[o.path] = o.path, b.path

    def free(self, lock: _Lock, taken: dict[str, str]) -> dict[str, list[_Node]]:
        """The unpaired nodes of ``lock`` by name, in lock order."""
        found: dict[str, list[_Node]] = {}
        for n in lock.nodes:
            if n.path not in taken:
                found.setdefault(n.name, []).append(n)
        return found

    def by_name(self, match: str) -> None:
        """Pair free nodes of the same name: ``path`` identical, ``version`` equal,
        ``unique`` (one free node on each side) or ``order`` (the rest, in lock order)."""
        fb, fo = self.free(self.base, self.b2o), self.free(self.other, self.o2b)
        for name in sorted(fb.keys() & fo.keys()):
            bs, os_ = fb[name], fo[name]
            if match == "unique" and (len(bs) != 1 or len(os_) != 1):
                continue
            for b in bs:
                for o in os_:
                    if o.path in self.o2b or b.path in self.b2o:
                        continue
                    if match in ("unique", "order") or getattr(b, match) == getattr(o, match):
                        self.pair(b, o)

    def propagate(self) -> None:
        """Pair the free inputs that paired nodes use under the same key and name."""
        work = deque(sorted(self.b2o.items()))
        while work:
            bp, op = work.popleft()
            b, o = self.base.by_path[bp], self.other.by_path[op]
            for key in sorted(b.inputs.keys() & o.inputs.keys()):
                xb = self.base.by_path.get(b.inputs[key])
                xo = self.other.by_path.get(o.inputs[key])
                if not xb or not xo or xb.name != xo.name:
                    continue
                if xb.path not in self.b2o and xo.path not in self.o2b:
                    self.pair(xb, xo)
                    work.append((xb.path, xo.path))


def _counterpart(node: _Node, own: _Lock, far: _Lock, partner: Mapping[str, str]) -> _Node | None:
    """The node of ``far`` that the counterparts of ``node``'s parents use under the same
    key, when it has ``node``'s name and another path; None when there is none."""
    for parent, key in sorted(own.parents.get(node.path, [])):
        twin = far.by_path.get(partner.get(parent, ""))
        found = far.by_path.get(twin.inputs.get(key, "")) if twin else None
        if found and found.name == node.name and found.path != node.path:
            return found
    return None


def _pairs(base: _Lock, other: _Lock) -> tuple[list[tuple[_Node, _Node]], list[_Node], list[_Node]]:
    """The paired nodes whose paths differ, the removed nodes and the added ones."""
    p = _Pairing(base, other)
    for match in ("path", "version", "unique"):
        p.by_name(match)
    p.propagate()
    p.by_name("order")
    changed = [(base.by_path[b], other.by_path[o]) for b, o in p.b2o.items() if b != o]
    removed, added = [], []
    for nodes in p.free(base, p.b2o).values():
        for b in nodes:
            twin = _counterpart(b, base, other, p.b2o)
            changed += [(b, twin)] if twin else []
            removed += [] if twin else [b]
    for nodes in p.free(other, p.o2b).values():
        for o in nodes:
            twin = _counterpart(o, other, base, p.o2b)
            changed += [(twin, o)] if twin else []
            added += [] if twin else [o]
    return changed, removed, added


def _input_step(
    base: _Lock, other: _Lock, owner: str, key: str, bp: str | None, op: str | None
) -> _Step:
    """How input ``key`` of ``owner`` changed from path ``bp`` to ``op`` (None: absent)."""
    xb, xo = base.by_path.get(bp or ""), other.by_path.get(op or "")
    if bp is None or op is None:
        word, x, path = ("added", xo, op) if bp is None else ("removed", xb, bp)
        return _Step(f"input {key} {word}", (x.name if x else key,), (word, owner, key, str(path)))
    if xb is None or xo is None:  # not a node of its lock
        return _Step(f"{key} {_label(bp)} -> {_label(op)}", (key,), ("path", bp, op))
    if xb.name == xo.name and xb.version == xo.version:
        return _Step(f"{xo.name} rebuilt", (xo.name,), next=(xb, xo))
    new = xo.version if xb.name == xo.name else f"{xo.name} {xo.version}"
    cause = ("version", xb.name, xb.version, xo.name, xo.version)
    return _Step(f"{xb.name} {xb.version} -> {new}", (xo.name,), cause)


def _steps(base: _Lock, other: _Lock, b: _Node, o: _Node) -> list[_Step]:
    """Why ``b`` and ``o`` (same name, other paths) differ: one step per input key whose
    path changed, in key order, then the node's own change when there is one."""
    keys = sorted(
        k for k in b.inputs.keys() | o.inputs.keys() if b.inputs.get(k) != o.inputs.get(k)
    )
    steps = [_input_step(base, other, b.name, k, b.inputs.get(k), o.inputs.get(k)) for k in keys]
    own = _own_change(base, other, b, o, inputs_changed=bool(steps))
    return steps + ([_Step(own, (), ("own", b.path, o.path))] if own else [])


def _own_change(
    base: _Lock, other: _Lock, b: _Node, o: _Node, *, inputs_changed: bool
) -> str | None:
    """The node's own part in its new path: ``its recipe changed`` when the embedded
    recipes differ, or when nothing else explains the new path (the recipe's sources or
    a detected tool differ); ``the platform changed`` when only the locks' platforms do."""
    if b.recipe != o.recipe:
        return "its recipe changed"
    if inputs_changed:
        return None
    if base.platform != other.platform:
        return f"the platform changed ({base.platform} -> {other.platform})"
    return "its recipe changed"


def _chains(base: _Lock, other: _Lock, b: _Node, o: _Node) -> list[list[str]]:
    """The shortest chain of names from ``b``/``o`` to each distinct root cause (breadth
    first over rebuilt inputs, each pair once, so cycles end), at most MAX_CHAINS."""
    found: dict[tuple[str, ...], list[str]] = {}
    seen = {(b.path, o.path)}
    work: deque[tuple[_Node, _Node, list[str]]] = deque([(b, o, [b.name])])
    while work and len(found) < MAX_CHAINS:
        nb, no, chain = work.popleft()
        for step in _steps(base, other, nb, no):
            if step.cause is not None:
                found.setdefault(step.cause, chain + list(step.tail))
            elif step.next is not None and (step.next[0].path, step.next[1].path) not in seen:
                seen.add((step.next[0].path, step.next[1].path))
                work.append((*step.next, chain + list(step.tail)))
    return list(found.values())[:MAX_CHAINS]


def _entry(node: _Node) -> dict[str, Any]:
    return {"name": node.name, "version": node.version, "path": node.path}


def _sorted(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        entries,
        key=lambda e: (
            e["name"],
            str(e.get("version", e.get("from"))),
            str(e.get("path", e.get("to_path"))),
        ),
    )


def closure_diff(base: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """The closure diff of two lock tables (format 1, as ``tomllib`` reads ``mlpkg.lock``):
    ``{"version_changed": [{name, from, to, from_path, to_path}], "rebuilt": [{name,
    version, from_path, to_path, because, chain}], "added": [{name, version, path}],
    "removed": [...]}``, each list sorted by name. Identical locks give four empty lists.
    Never raises on a malformed table; see the module docstring."""
    lb, lo = _read(base), _read(other)
    changed, removed, added = _pairs(lb, lo)
    versions, rebuilt = [], []
    for b, o in changed:
        if b.version != o.version:
            versions.append(
                {
                    "name": b.name,
                    "from": b.version,
                    "to": o.version,
                    "from_path": b.path,
                    "to_path": o.path,
                }
            )
        else:
            rebuilt.append(
                {
                    "name": b.name,
                    "version": b.version,
                    "from_path": b.path,
                    "to_path": o.path,
                    "because": [s.text for s in _steps(lb, lo, b, o)],
                    "chain": _chains(lb, lo, b, o),
                }
            )
    return {
        "version_changed": _sorted(versions),
        "rebuilt": _sorted(rebuilt),
        "added": _sorted(_entry(n) for n in added),
        "removed": _sorted(_entry(n) for n in removed),
    }


def format_diff(diff: Mapping[str, Any]) -> list[str]:
    """Terminal lines of a :func:`closure_diff`: ``  onnxruntime 1.22.1 -> 1.17.3``, then
    ``  pycocotools 2.0.11 rebuilt: numpy 2.4.6 -> 1.26.4`` with, under it, the chains
    that say more than its causes (those of more than two names, at most
    :data:`MAX_CHAINS`: ``    via retinanet-offline -> pycocotools -> numpy``),
    ``  + name version``, ``  - name version``; ``["  (same closure)"]`` when nothing
    differs."""
    lines = [f"  {e['name']} {e['from']} -> {e['to']}" for e in diff.get("version_changed", [])]
    for e in diff.get("rebuilt", []):
        because = ", ".join(e.get("because", [])) or "its path changed"
        lines.append(f"  {e['name']} {e['version']} rebuilt: {because}")
        lines += ["    via " + " -> ".join(str(n) for n in c) for c in _long_chains(e)]
    lines += [f"  + {e['name']} {e['version']}" for e in diff.get("added", [])]
    lines += [f"  - {e['name']} {e['version']}" for e in diff.get("removed", [])]
    return lines or ["  (same closure)"]


def _long_chains(entry: Mapping[str, Any]) -> list[list[Any]]:
    """The chains of a rebuilt entry of more than two names (a chain of two, the node and
    a direct cause, says what ``because`` does), at most :data:`MAX_CHAINS`."""
    chains = entry.get("chain")
    found = (
        [c for c in chains if isinstance(c, list) and len(c) > 2]
        if isinstance(chains, list)
        else []
    )
    return found[:MAX_CHAINS]
