"""Making lockfiles (:class:`~mlpkg.resolver.lockfile.Lockfile`): of a plan, of store
paths as they are (a profile's generation), and of a lock with some packages re-resolved.

The lockfile module is the format (parse, write, trust checks, the plan a lock gives);
this module reads a lock from a file (:func:`read_lock`, :func:`read_trusted_lock`),
decides what goes in a lock (which archive hashes are known, what an MD5-only
download's sha256 is) and how a lock differs from its specs resolved again. ``mlpkg
lock``, ``mlpkg run`` (its run directory's ``mlpkg.lock``) and ``mlpkg profile export``
call these functions; they take the store, a plan or paths, and a provider, never the
command line's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from mlpkg.errors import BadInput, LockError
from mlpkg.recipes.index import RecipeIndex
from mlpkg.resolver.derivation import Derivation
from mlpkg.resolver.lockfile import Lockfile, PinnedProvider, check_trusted, from_plan, parse
from mlpkg.resolver.machine import current_platform
from mlpkg.resolver.plan import Plan, make_plan
from mlpkg.resolver.provider import IndexProvider
from mlpkg.resolver.spec import parse_spec
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store


def read_lock(file: Path) -> Lockfile:
    """Read and check the lockfile ``file`` (LockError naming it when it is not one).

    Reading runs nothing; commands that act on a lock check its externals against their
    recipe collection with :func:`read_trusted_lock` (or ``to_plan(..., trusted=)``)."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LockError(f"Cannot read lockfile {file}: {e}.", file=str(file)) from None
    return parse(text, str(file))


def read_trusted_lock(file: Path, trusted: RecipeIndex) -> Lockfile:
    """:func:`read_lock`, refused (LockError, exit 2) when an external of the lock would be
    detected otherwise than the recipe collection ``trusted`` detects it (docs/trust.md)."""
    lock = read_lock(file)
    check_trusted(lock, trusted)
    return lock


def lock_of_plan(
    store: Store,
    specs: Sequence[str],
    plan: Plan,
    *,
    realised: bool,
    previous: Lockfile | None = None,
) -> Lockfile:
    """A lock of ``plan`` (resolved from ``specs``).

    Archive hashes come from ``previous`` for the paths it already pins, else from the store
    when the plan was just ``realised`` (so a lock does not depend on what happens to be
    built), else they are unknown. Externals' archive hashes are never recorded: their
    links name where the tool lives. An MD5-only download's sha256 is what its first fetch
    saw (kept with the store path) or what ``previous`` pinned.
    """
    pinned = {n.path: n for n in previous.nodes} if previous else {}
    drvs, infos = [], {}
    for node in plan.nodes:
        drv, info, old = node.drv, store.info(node.path), pinned.get(node.path)
        src = drv.recipe.source
        if src is not None and not src.sha256:  # MD5 only: pin what the first fetch saw
            facts = info.deriver.get("facts", {}) if info else {}
            sha = facts.get("sha256") if isinstance(facts, dict) else None
            sha = old.drv.source_sha256 if old else sha
            drv = replace(drv, source_sha256=sha if isinstance(sha, str) else None)
        if drv.kind == "external":
            pass
        elif old is not None and old.archive_hash:
            infos[node.path] = (old.archive_hash, old.size)
        elif realised and info is not None:
            infos[node.path] = (info.archive_hash, info.size)
        drvs.append(drv)
    return from_plan(specs, drvs, plan.roots, infos, current_platform())


def lock_of_generation(store: Store, specs: Sequence[str], roots: Sequence[StorePath]) -> Lockfile:
    """The lock of store paths as they are (a profile's generation): every derivation of
    the closure of ``roots`` read back from the store."""
    drvs: list[Derivation] = []
    infos: dict[StorePath, tuple[str, int | None]] = {}
    for path in store.closure_order(roots):
        info = store.info(path)
        assert info is not None
        drv = Derivation.from_json(info.deriver)
        drvs.append(drv)
        if drv.kind != "external":
            infos[path] = (info.archive_hash, info.size)
    return from_plan(specs, drvs, roots, infos, current_platform())


def updated_lock(
    store: Store, provider: IndexProvider, lock: Lockfile, names: Iterable[str], file: str
) -> Lockfile:
    """``lock`` (read from ``file``) with the packages ``names`` re-resolved by
    ``provider``; every other node stays as locked. BadInput when the lock has no such
    package."""
    known = {n.drv.name for n in lock.nodes}
    free = {provider.index.canonical_name(n) if n not in known else n for n in names}
    unknown = sorted(free - known)
    if unknown:
        raise BadInput(f"{file} has no package {unknown[0]}; it locks {', '.join(sorted(known))}.")
    pinned = PinnedProvider(provider, lock, free)
    plan = make_plan(pinned, [parse_spec(s) for s in lock.specs], store)
    return lock_of_plan(store, lock.specs, plan, realised=False, previous=lock)


def lock_changes(lock: Lockfile, plan: Plan) -> list[str]:
    """How ``plan`` (the lock's specs resolved again) differs from ``lock``: a sentence per
    package whose path changed, appeared or went; none when the lock is up to date."""
    locked: dict[str, list[str]] = {}
    fresh: dict[str, list[str]] = {}
    for nodes, paths in ((lock.nodes, locked), (plan.nodes, fresh)):
        for n in nodes:  # a name may have one path per resolution scope
            paths.setdefault(n.drv.name, []).append(str(n.path))
    return [
        f"{name}: the lock has {', '.join(sorted(locked.get(name, []))) or '(nothing)'}, the "
        f"recipes now give {', '.join(sorted(fresh.get(name, []))) or '(nothing)'}"
        for name in sorted(set(locked) | set(fresh))
        if sorted(locked.get(name, [])) != sorted(fresh.get(name, []))
    ]
