"""Lockfiles, format version 1: the whole plan, with recipes embedded.

A lockfile reproduces a closure without the recipe collection it came from: every node
carries its recipe, its inputs (as store paths), its store path, the sha256 of each
download, the detected version of each external tool, and, where the path was realised,
its archive hash and size. Paths are recomputed from the embedded recipes when a lock is
read, so a hand-edited recipe is caught (the path no longer matches) rather than trusted.

A lock is data, never code (docs/trust.md): it is not signed, so whoever edits a recipe in
it can recompute the path too. Reading a lock runs nothing. Before a lock's plan is made
(:func:`to_plan`), :func:`check_trusted` compares the detection of every external it embeds
with the local recipe collection's recipe of the same name, and refuses the lock when
they differ: the only commands that run on the host are the collection's. It also
refuses (:func:`check_unpack_caps`) a fetch whose unpack caps, which are not hashed, are
raised above the defaults unless the collection raises them as high for that version and
archive: a lock cannot switch off the archive-bomb protection. Everything else a lock
holds is built in the sandbox, fetched and checked against its hash, or (an app's
``[run]`` command) run only when ``mlpkg run`` is asked to run it.

Layout (TOML, keys sorted, nodes sorted by name then path; see docs/lockfile.md)::

    version = 1
    platform = "x86_64-linux"
    specs = ["hello"]
    roots = ["<hash>-hello-1.0"]

    [[node]]
    path = "<hash>-hello-1.0"
    name = "hello"
    version = "1.0"
    kind = "build"
    archive_hash = "sha256:…"      # or "unknown"
    size = 50646                   # bytes of the archive, when known
    detected_version = "12.2.0"    # externals only
    source_sha256 = "…"            # fetches only: what the download hashed to
    [node.inputs]
    six = "<hash>-six-src-1.16.0"
    [node.recipe]                  # the recipe, as in recipes/<name>/<version>.toml
    …
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlpkg.documents import load_toml, printable
from mlpkg.errors import BadInput, CheckError, FormatVersionError, LockError, RecipeError
from mlpkg.recipes.index import RecipeIndex, default_dirs
from mlpkg.recipes.model import Recipe
from mlpkg.resolver.derivation import Derivation, Detected
from mlpkg.resolver.external import Detector, untrusted
from mlpkg.resolver.machine import current_platform
from mlpkg.resolver.plan import Plan, PlanNode, action_of
from mlpkg.resolver.provider import IndexProvider, split_inputs
from mlpkg.resolver.spec import parse_spec
from mlpkg.resolver.toml_writer import dumps
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

LOCK_VERSION = 1
UNKNOWN = "unknown"
HEADER = (
    "mlpkg lockfile: written by `mlpkg lock`, read by `mlpkg build --lock`.\n"
    "It pins every store path of a closure, with its recipe; see docs/lockfile.md."
)


class _NodeModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    name: str
    version: str
    kind: str
    archive_hash: str = Field(pattern=r"^(unknown|sha256:[0-9a-f]{64})$")
    size: int | None = Field(default=None, ge=0)
    detected_version: str | None = None
    detected_info: dict[str, Any] | None = None
    source_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    inputs: dict[str, str] = {}
    recipe: dict[str, Any]


class _LockModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    platform: str
    specs: list[str]
    roots: list[str] = Field(min_length=1)
    node: list[_NodeModel] = Field(min_length=1)


@dataclass
class LockedNode:
    """One pinned store path."""

    drv: Derivation
    archive_hash: str | None = None  # None: not known (the lock was made without --realise)
    size: int | None = None

    @property
    def path(self) -> StorePath:
        return self.drv.path

    def to_doc(self) -> dict[str, Any]:
        d = self.drv
        return {
            "path": str(d.path),
            "name": d.name,
            "version": d.version,
            "kind": d.kind,
            "archive_hash": self.archive_hash or UNKNOWN,
            "size": self.size,
            "detected_version": d.detected.version if d.detected else None,
            "detected_info": d.detected.info if d.detected and d.detected.info else None,
            "source_sha256": d.source_sha256,
            "inputs": {k: str(v) for k, v in sorted(d.inputs.items())},
            "recipe": d.recipe.model_dump(mode="json", exclude_defaults=True),
        }


@dataclass
class Lockfile:
    platform: str
    specs: list[str]
    roots: list[StorePath]
    nodes: list[LockedNode]  # inputs before the nodes that use them
    file: str | None = None  # where it was read from, for messages

    def node(self, path: StorePath) -> LockedNode:
        for n in self.nodes:
            if n.path == path:
                return n
        raise KeyError(str(path))

    def dumps(self) -> str:
        """The lockfile's text: the same lock always gives the same bytes."""
        ordered = sorted(self.nodes, key=lambda n: (n.drv.name, str(n.path)))
        document = {
            "version": LOCK_VERSION,
            "platform": self.platform,
            "specs": list(self.specs),
            "roots": [str(r) for r in self.roots],
            "node": [n.to_doc() for n in ordered],
        }
        return dumps(document, HEADER)


def _field(loc: Sequence[int | str], model: dict[str, Any]) -> str:
    """``node 3 (hello): field recipe.build.script`` style names for validation errors."""
    parts = [printable(str(p)) for p in loc]  # a TOML key may hold a newline
    if len(parts) >= 2 and parts[0] == "node" and parts[1].isdigit():
        i = int(parts[1])
        nodes = model.get("node", [])
        name = nodes[i].get("name", "?") if i < len(nodes) and isinstance(nodes[i], dict) else "?"
        rest = ".".join(parts[2:]) or "(the node)"
        return f"node {i + 1} ({name}): field {rest}"
    return f"field {'.'.join(parts) or '(top level)'}"


def parse(text: str, file: str) -> Lockfile:
    """Read and check a lockfile. Every problem raises LockError naming the file and, where
    it lies in a node, the node and field. Paths are recomputed from the embedded recipes
    and must match (a tampered recipe is named)."""
    try:
        raw = load_toml(text, file, LockError)  # nested too deep: LockError
    except tomllib.TOMLDecodeError as e:
        raise LockError(
            f"{file} is not valid TOML (truncated or hand-edited?): {e}.", file=file
        ) from None
    version = raw.get("version")
    if isinstance(version, int) and version != LOCK_VERSION:
        raise FormatVersionError(
            f"{file} is a lockfile of format version {version}; this mlpkg reads version "
            f"{LOCK_VERSION}.",
            hint="Upgrade mlpkg, or lock again with this one." if version > LOCK_VERSION else None,
            file=file,
        )
    try:
        model = _LockModel.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = _field(first["loc"], raw)
        details = [
            f"{file}: {_field(err['loc'], raw)}: {printable(err['msg'])}" for err in e.errors()
        ]
        raise LockError(
            f"{file} is not a valid lockfile: {where}: {printable(first['msg'])}.",
            details=details,
            file=file,
            field=where,
        ) from None
    return _build(model, file)


def _build(model: _LockModel, file: str) -> Lockfile:
    by_path = {n.path: n for n in model.node}
    made: dict[str, LockedNode] = {}
    order: list[LockedNode] = []
    state: dict[str, int] = {}

    def visit(start: str) -> None:
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            path, done = stack.pop()
            if done:
                made[path] = _node(by_path[path], made, model.platform, file)
                order.append(made[path])
                state[path] = 2
                continue
            if state.get(path) == 2:
                continue
            if state.get(path) == 1:
                raise LockError(
                    f"{file}: the inputs of node {printable(path)} form a cycle.", file=file
                )
            state[path] = 1
            stack.append((path, True))
            node = by_path[path]
            for key, dep in sorted(node.inputs.items()):
                if dep not in by_path:
                    raise LockError(
                        f"{file}: node {printable(node.name)} has input {printable(key)} = "
                        f"{printable(dep)}, which is not a node of the lock.",
                        file=file,
                        field=f"inputs.{key}",
                    )
                if state.get(dep) != 2:
                    stack.append((dep, False))

    for path in sorted(by_path):
        if state.get(path) != 2:
            visit(path)
    for root in model.roots:
        if root not in by_path:
            raise LockError(f"{file}: root {printable(root)} is not a node of the lock.", file=file)
    roots = [StorePath.parse(r) for r in model.roots]
    return Lockfile(model.platform, model.specs, roots, order, file)


def _node(n: _NodeModel, made: dict[str, LockedNode], platform: str, file: str) -> LockedNode:
    where = f"{file}: node {printable(n.name)}"
    try:
        recipe = Recipe.model_validate(n.recipe)
    except ValidationError as e:
        err = e.errors()[0]
        field = printable(".".join(str(p) for p in err["loc"]))
        raise RecipeError(
            f"{where}: field recipe.{field}: {printable(err['msg'])}.",
            file=file,
            field=f"recipe.{field}",
            package=n.name,
        ) from None
    if recipe.kind == "external" and not n.detected_version:
        raise LockError(f"{where}: an external node needs detected_version.", file=file)
    detected = (
        Detected(n.detected_version, {}, n.detected_info or {}) if n.detected_version else None
    )
    inputs = {k: made[v].path for k, v in n.inputs.items()}
    drv = Derivation(recipe, inputs, platform, detected, n.source_sha256)
    try:
        computed = drv.path
    except BadInput as e:  # a detected_version that cannot be part of a store path name
        raise LockError(
            f"{where}: field detected_version {n.detected_version!r} gives no store path "
            f"({e.message.rstrip('.')}).",
            file=file,
            field="detected_version",
            package=n.name,
        ) from None
    if str(computed) != n.path:
        raise LockError(
            f"{where}: its embedded recipe and inputs give store path {computed}, but the lock "
            f"records {n.path}; the lock was edited or corrupted.",
            file=file,
            package=n.name,
        )
    archive = None if n.archive_hash == UNKNOWN else n.archive_hash
    return LockedNode(drv, archive, n.size)


def from_plan(
    specs: Sequence[str],
    drvs: Sequence[Derivation],
    roots: Sequence[StorePath],
    infos: dict[StorePath, tuple[str, int | None]],
    platform: str,
) -> Lockfile:
    """A lock of a plan; ``infos`` gives the archive hash and size of realised paths."""
    nodes = [LockedNode(d, *infos.get(d.path, (None, None))) for d in drvs]
    return Lockfile(platform, list(specs), list(roots), nodes)


def check_trusted(lock: Lockfile, trusted: RecipeIndex) -> None:
    """Refuse ``lock`` (LockError, exit 2) when an external it embeds would be detected
    otherwise than the recipe collection ``trusted`` detects that name (or ``trusted`` has
    no external of that name): one sentence naming the external, the lock's command and
    the trusted one. Then :func:`check_unpack_caps`. Runs nothing; call it before anything
    from the lock is detected or fetched."""
    where = f"{lock.file} is" if lock.file else "The lock is"
    for node in lock.nodes:
        if node.drv.kind != "external":
            continue
        name = node.drv.name
        why = untrusted(node.drv.recipe, _trusted_externals(trusted, node.drv.recipe))
        if why is not None:
            raise LockError(
                f"{where} refused: its {why}.",
                hint="A lockfile is data and none of its commands run (docs/trust.md). Lock "
                "again with your recipes, or, once you have read the command, put a recipe "
                f"with it in a --recipes or MLPKG_RECIPES_PATH directory ({name}/external.toml).",
                file=lock.file,
                field="recipe.external",
                package=name,
            )
    check_unpack_caps(lock, trusted)


_CAPS = ("max_unpacked_size", "max_unpack_ratio", "max_unpacked_files")


def _default_caps() -> dict[str, float]:
    """The unpack caps of a ``[source]`` that sets none (mlpkg.store.unpack)."""
    from mlpkg.store.unpack import DEFAULT_MAX_FILES, DEFAULT_MAX_RATIO, DEFAULT_MAX_SIZE

    return {
        "max_unpacked_size": DEFAULT_MAX_SIZE,
        "max_unpack_ratio": DEFAULT_MAX_RATIO,
        "max_unpacked_files": DEFAULT_MAX_FILES,
    }


def _caps(recipe: Recipe, defaults: dict[str, float]) -> dict[str, float]:
    """The caps ``recipe``'s archive is unpacked under, the defaults filled in."""
    src = recipe.source
    if src is None or not src.unpack:
        return dict(defaults)
    found = {f: getattr(src, f) for f in _CAPS}
    return {f: defaults[f] if v is None else v for f, v in found.items()}


def _cap_text(field: str, value: float, *, unit: bool = True) -> str:
    """A cap for messages: ``200 GiB``, ``2,000,000 members``, ``1000 times the archive's
    size`` (without ``unit``, ``2,000,000`` and ``1000``)."""
    if field == "max_unpacked_size":
        for name, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size:
                return f"{value / size:.4g} {name}"
        return f"{int(value):,} bytes"
    if field == "max_unpacked_files":
        return f"{int(value):,} members" if unit else f"{int(value):,}"
    return f"{value:g} times the archive's size" if unit else f"{value:g}"


def check_unpack_caps(lock: Lockfile, trusted: RecipeIndex) -> None:
    """Refuse ``lock`` (LockError, exit 2) when a node's ``[source]`` raises an unpack cap
    (``max_unpacked_size``, ``max_unpack_ratio``, ``max_unpacked_files``) above its default,
    unless the recipe collection ``trusted`` has the same package version, pinning the same
    archive (sha256 and md5) with the lock's variants, whose cap is at least as high.

    The caps are not hashed, so without this a shared lock could switch off the archive
    bomb protection of every path it fetches. Lowered caps are kept as the lock has them.
    The refusal is one sentence naming the lock file, the package and the first such
    field (the details name the others). Runs nothing."""
    where = f"{lock.file} is" if lock.file else "The lock is"
    defaults = _default_caps()
    for node in lock.nodes:
        recipe = node.drv.recipe
        caps = _caps(recipe, defaults)
        raised = [f for f in _CAPS if caps[f] > defaults[f]]
        if not raised:
            continue
        local = _trusted_versions(trusted, recipe)
        same = [r for r in local if _archive(r) == _archive(recipe)]
        allowed = [_caps(r, defaults) for r in same]
        refused = [f for f in raised if not any(a[f] >= caps[f] for a in allowed)]
        if not refused:
            continue
        spec = recipe.name + "".join(f"+{v}" for v in sorted(set(recipe.selected)))
        spec += f" {recipe.version}"
        reasons = []
        for field in refused:
            if not local:
                but = f"the local recipe collection has no recipe {spec}"
            elif not same:
                but = f"the local recipe {spec} pins another archive"
            else:
                best = _cap_text(field, max(a[field] for a in allowed))
                but = f"the local recipe {spec} allows only {best}"
            reasons.append(
                f"its {recipe.kind} {spec} raises [source] {field} to "
                f"{_cap_text(field, caps[field])} (the default is "
                f"{_cap_text(field, defaults[field], unit=False)}), but {but}"
            )
        raise LockError(
            f"{where} refused: {reasons[0]}.",
            details=[f"{lock.file or 'the lock'}: {r}." for r in reasons[1:]],
            hint="The unpack caps guard against archive bombs, so a lockfile cannot raise "
            "them (docs/trust.md). Lock again with your recipes, or, if you trust the "
            "archive, put a recipe with these caps in a --recipes or MLPKG_RECIPES_PATH "
            f"directory ({recipe.name}/{recipe.version}.toml).",
            file=lock.file,
            field=f"recipe.source.{refused[0]}",
            package=recipe.name,
        )


def _archive(recipe: Recipe) -> tuple[str | None, str | None] | None:
    """The hashes pinning ``recipe``'s download."""
    src = recipe.source
    return (src.sha256, src.md5) if src is not None else None


def _trusted_versions(trusted: RecipeIndex, recipe: Recipe) -> list[Recipe]:
    """The recipes ``trusted`` has of ``recipe``'s name, version and kind, with the variants
    the lock's recipe selected applied (a recipe without them is left out)."""
    from mlpkg.recipes.variants import apply

    found = []
    for rf in trusted.files(recipe.name):
        if rf.is_external or rf.version != recipe.version:
            continue
        try:
            local = apply(trusted.load(rf), recipe.selected)
        except BadInput:  # the local recipe lacks a variant the lock selected
            continue
        if local.kind == recipe.kind:
            found.append(local)
    return found


def _trusted_externals(trusted: RecipeIndex, recipe: Recipe) -> list[Recipe]:
    """The external recipes ``trusted`` has under ``recipe``'s name, with the variants the
    lock's recipe selected applied (a version without them is left out)."""
    from mlpkg.recipes.variants import apply

    found = []
    for rf in trusted.files(recipe.name):
        if not rf.is_external:
            continue
        try:
            found.append(apply(trusted.load(rf), recipe.selected))
        except BadInput:  # the local recipe lacks a variant the lock selected
            continue
    return found


def default_trusted(store: Store) -> RecipeIndex:
    """The recipe collection a command without ``--recipes`` uses: MLPKG_RECIPES_PATH,
    ``$MLPKG_HOME/recipes``, then the bundled collection."""
    return RecipeIndex(default_dirs(None, store.home / "recipes"))


def _relink(drv: Derivation, detector: Detector) -> tuple[Derivation, str | None]:
    """The locked external ``drv`` linking this machine's tool (its locked version and
    facts kept), and how this machine's tool differs from the lock's, if it does. Call
    only for a trusted recipe (:func:`check_trusted`): its detection runs here."""
    assert drv.detected is not None
    locked, local = drv.detected, detector(drv.recipe)
    differs = None
    if local.version != locked.version:
        differs = f"{drv.name}: the lock has {locked.version}, this machine has {local.version}"
    elif local.info != locked.info:
        keys = {**local.info, **locked.info}
        changed = sorted(k for k in keys if local.info.get(k) != locked.info.get(k))
        differs = (
            f"{drv.name} {local.version}: this machine's differs from the lock's in "
            f"{', '.join(changed)}"
        )
    detected = Detected(locked.version, local.locations, locked.info, local.tags)
    return replace(drv, detected=detected), differs


def to_plan(
    lock: Lockfile,
    store: Store,
    detector: Detector,
    *,
    allow_external_drift: bool = False,
    trusted: RecipeIndex | None = None,
) -> tuple[Plan, dict[StorePath, str]]:
    """The locked plan for this machine, and the archive hash each path must have.

    First the lock's externals are checked against ``trusted`` (the command's recipe
    collection; by default :func:`default_trusted`) with :func:`check_trusted`, so that no
    command of the lock runs. Then external tools are detected; one whose version differs
    from the lock is refused, naming both versions, unless ``allow_external_drift`` (then
    the locked path names are kept and the local tool is linked). Externals' archive
    hashes are not compared: their links name where the tool lives.
    """
    if lock.platform != current_platform():
        raise LockError(
            f"The lock is for platform {lock.platform}; this machine is {current_platform()}."
        )
    check_trusted(lock, trusted if trusted is not None else default_trusted(store))
    drvs: list[Derivation] = []
    drift: list[str] = []
    for node in lock.nodes:
        drv = node.drv
        if drv.kind == "external":
            drv, differs = _relink(drv, detector)
            drift += [differs] if differs else []
        drvs.append(drv)
    if drift and not allow_external_drift:
        raise LockError(
            f"An external tool differs from the lock: {drift[0]}.",
            details=drift,
            hint="Install the locked version, or pass --allow-external-drift to build anyway.",
        )
    valid = store.valid_among(d.path for d in drvs)
    nodes = [PlanNode(d, d.path, "valid" if d.path in valid else action_of(d.kind)) for d in drvs]
    expected = {
        n.path: n.archive_hash for n in lock.nodes if n.archive_hash and n.drv.kind != "external"
    }
    return Plan(nodes, list(lock.roots)), expected


def check_valid_paths(plan: Plan, store: Store, expected: dict[StorePath, str]) -> None:
    """Compare paths that were valid already with the lock's archive hashes."""
    for node in plan.nodes:
        want = expected.get(node.path)
        info = store.info(node.path)
        if want and info is not None and info.archive_hash != want:
            raise CheckError(
                f"{store.real_path(node.path)} has archive hash {info.archive_hash}, but the "
                f"lock records {want}.",
                hint=f"`mlpkg build --check {node.drv.name}@=={node.drv.version}` rebuilds it and "
                "names the first differing file; `mlpkg verify --check-contents` tells whether "
                "the store copy was modified.",
                package=node.drv.name,
            )


class PinnedCandidate:
    """A locked node offered to the resolver as the only version of its package."""

    def __init__(self, node: LockedNode) -> None:
        self.recipe = node.drv.recipe
        self.detected = node.drv.detected
        self.name = node.drv.name
        self.version = Version(node.drv.version)
        specs = {k: parse_spec(v) for k, v in self.recipe.inputs.items()}
        self.inputs, self.build_inputs = split_inputs(self.recipe, specs)


class PinnedProvider:
    """The recipe collection, except that every locked package not named in ``free`` has
    exactly its locked version, with its embedded recipe (``lock --update``)."""

    def __init__(self, base: IndexProvider, lock: Lockfile, free: set[str]) -> None:
        self.base = base
        # A name may have a node in each resolution scope (a build's tools have their own
        # python): each is offered, and each scope's requirements choose among them.
        self.pins: dict[str, list[PinnedCandidate]] = {}
        for n in lock.nodes:
            if n.drv.name not in free:
                self.pins.setdefault(n.drv.name, []).append(PinnedCandidate(n))

    def canonical_name(self, name: str) -> str:
        if name in self.pins:
            return name
        return self.base.canonical_name(name)

    def candidates(self, name: str) -> Sequence[Any]:
        pinned = self.pins.get(name)
        return pinned if pinned is not None else self.base.candidates(name)
