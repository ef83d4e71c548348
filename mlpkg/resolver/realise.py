"""Acting on a plan: fetch, link and build the paths it lists, in dependency order.

Each node becomes a *maker* (a function that writes the path's content at a temporary
location), given by the builder of its kind (:mod:`mlpkg.build`);
:meth:`mlpkg.store.Store.realise` does the rest (lock, hash, read-only, rename, register).
Makers are built from a :class:`Derivation` alone, so ``verify --repair`` can remake a
path from the record in the database, without the recipe collection.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from mlpkg.build import BuildContext, builder_for
from mlpkg.errors import BuildError, CacheError, CacheUnavailable, FetchError, MlpkgError
from mlpkg.resolver.derivation import Derivation
from mlpkg.resolver.plan import Plan, PlanNode, action_of
from mlpkg.store import sandbox
from mlpkg.store.archive import ArchiveInfo
from mlpkg.store.path import StorePath
from mlpkg.store.store import Maker, Making, PathInfo, Store

if TYPE_CHECKING:  # the binary caches are imported only by a session that uses them
    from mlpkg.cache.substitute import Offer, Substituters


class Reporter:
    """What realisation tells the user; the CLI subclasses it. Defaults say nothing."""

    echo: IO[str] | None = None  # where build logs are copied live (``-v``)

    def start(self, node: PlanNode, index: int, total: int) -> None: ...

    def progress(self, node: PlanNode, done: int, total: int | None) -> None: ...

    def finish(self, node: PlanNode, info: PathInfo) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


def realise_plan(
    plan: Plan,
    store: Store,
    reporter: Reporter | None = None,
    expected: Mapping[StorePath, str] | None = None,
    *,
    keep_going: bool = False,
    substitution: Substitution | None = None,
) -> list[PathInfo]:
    """Make every path of ``plan`` valid; return the infos of its roots.

    ``expected`` maps paths to the archive hash they must have (from a lockfile): a path
    whose content differs is not registered, and CheckError names both hashes.

    With ``substitution`` (what :func:`schedule` found), the paths it offers are taken
    from their caches; one whose substitution fails is taken from the next cache that has
    it, else made as if no cache had it (its skipped inputs made first), with a note.

    With ``keep_going``, a path that cannot be fetched or built does not stop the paths
    that do not depend on it (as ``make -k``); afterwards one error names every failure,
    with the hint of each (so an offline user learns every missing file at once).
    """
    realiser = _Realiser(plan, store, reporter or Reporter(), expected or {}, substitution)
    store.protect(n.path for n in plan.nodes)
    # Validity is read again once the paths are protected: a collection that ran between
    # planning and now may have deleted some of them.
    valid = store.valid_among(n.path for n in plan.nodes)
    pending = [n for n in plan.nodes if n.path not in valid and n.action != "skip"]
    failed: dict[StorePath, MlpkgError] = {}
    with _Pool(realiser, keep_going, failed) as pool:
        waiting = list(enumerate(pending, 1))
        while waiting:
            waiting = pool.start_ready(waiting, len(pending))
            if not waiting:
                break
            i, node = waiting[0]
            if pool.threadable(node) and pool.busy():
                pool.wait_one()  # an input of the first waiting path may be in flight
                continue
            pool.drain()
            waiting.pop(0)
            if failed and (set(node.drv.inputs.values()) & failed.keys()):
                failed[node.path] = _SKIPPED
                continue
            realiser.reporter.start(node, i, len(pending))
            try:
                info = realiser.make(node)
            except (FetchError, BuildError) as e:
                if not keep_going:
                    raise
                failed[node.path] = e
                continue
            realiser.reporter.finish(node, info)
    if failed:
        raise _combined([e for e in failed.values() if e is not _SKIPPED])
    infos = [store.info(root) for root in plan.roots]
    return [i for i in infos if i is not None]


@dataclass
class Substitution:
    """What the substituters offer for a plan (:func:`schedule`)."""

    substituters: Substituters
    offers: dict[StorePath, Offer]
    expected: Mapping[StorePath, str]


def schedule(
    plan: Plan, substituters: Substituters, expected: Mapping[StorePath, str] | None = None
) -> Substitution:
    """Ask ``substituters`` for the plan's pending paths (externals are always made here)
    and mark the plan: ``substitute`` for a path some cache offers, ``skip`` for a path
    nothing needs any more (only the build of a substituted path needed it). A substituted
    path needs its references; a path made here needs all its inputs."""
    expected = expected or {}
    wanted = [n.path for n in plan.nodes if n.action != "valid" and n.drv.kind != "external"]
    offers = substituters.query(wanted, expected) if wanted else {}
    by_path = {n.path: n for n in plan.nodes}
    for path, given in list(offers.items()):
        # What the plan needs follows the entry's references: they must be the derivation's.
        if sorted(given.entry.references) != sorted(runtime_references(by_path[path].drv)):
            substituters.warn(
                f"The cache {given.substituter.url} has {path} with other references than "
                "its derivation names; it is not used."
            )
            del offers[path]
    needed: set[StorePath] = set()
    stack = list(plan.roots)
    while stack:
        path = stack.pop()
        if path in needed:
            continue
        needed.add(path)
        node = by_path[path]
        if node.action == "valid":
            continue
        offer = offers.get(path)
        if offer is not None:
            node.action, node.via = "substitute", offer.substituter.url
            stack += [r for r in offer.entry.references if r in by_path]
        else:
            stack += list(node.drv.inputs.values())
    for node in plan.nodes:
        if node.path not in needed:
            node.action = "skip"
    return Substitution(substituters, offers, expected)


@dataclass
class _Realiser:
    plan: Plan
    store: Store
    reporter: Reporter
    expected: Mapping[StorePath, str]
    substitution: Substitution | None

    def make(self, node: PlanNode) -> PathInfo:
        """Make ``node`` valid: from a cache when one offers it, else by its builder. What
        either needs and is not valid yet (inputs skipped because a cache had the path
        that needed them) is made first."""
        sub = self.substitution
        offer = sub.offers.get(node.path) if sub is not None else None
        while sub is not None and offer is not None:
            if not offer.substituter.down:  # a cache that went down since it was asked
                self._needs(node, runtime_references(node.drv))
                try:
                    return self._substitute(sub, node, offer)
                except CacheError as e:
                    if isinstance(e, CacheUnavailable):
                        sub.substituters.mark_down(offer.substituter, e)
                    else:
                        sub.substituters.warn(e.message)
            after = offer.substituter
            offer = sub.substituters.query([node.path], sub.expected, after=after).get(node.path)
        if sub is not None and node.path in sub.offers:
            sub.substituters.warn(f"No cache could give {node.path}; it is made here instead.")
            node.action = action_of(node.drv.kind)
        self._needs(node, node.drv.inputs.values())
        return realise_derivation(
            node.drv, self.store, self.reporter, node, self.expected.get(node.path)
        )

    def _needs(self, node: PlanNode, paths: Iterable[StorePath]) -> None:
        """Make those of ``paths`` (inputs of ``node``) that are not valid: inputs that
        were skipped because a cache had what needed them, until it failed to give it."""
        for path in paths:
            if not self.store.is_valid(path):
                inp = self.plan.node(path)
                if inp.action == "skip":
                    offered = self.substitution is not None and path in self.substitution.offers
                    inp.action = "substitute" if offered else action_of(inp.drv.kind)
                self.reporter.note(f"{inp.action} {inp.path}, an input of {node.path}")
                self.make(inp)

    def _substitute(self, sub: Substitution, node: PlanNode, offer: Offer) -> PathInfo:
        drv = node.drv
        return sub.substituters.substitute(
            self.store,
            offer,
            kind=drv.kind,
            recipe_hash=drv.recipe_hash,
            deriver=drv.to_json(),
            references=runtime_references(drv),
            relocatable=is_relocatable(drv.kind),
            progress=_ByteProgress(self.reporter, node, offer.entry.data_size),
        )


def jobs() -> int:
    """Threads that make paths at once: the usable cores, at least 2."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(2, cores)


class _Pool:
    """Makes the plan's threadable paths (a maker with ``prepare()``, see
    :func:`begin_derivation`: wheels) in worker threads, while this thread, which owns the
    store, takes each path's lock before its job starts and renames and registers the
    results as they end (in plan order among those that have ended). A path starts only
    when its inputs are valid and no cache offers it, so a path is registered after its
    inputs; paths that wait for an input let later ones start first. The first failure
    (unless ``keep_going``) stops new work: the running jobs end, every job's temporary
    content is removed and its lock released, and the error is raised as a serial
    realisation would raise it."""

    def __init__(
        self, realiser: _Realiser, keep_going: bool, failed: dict[StorePath, MlpkgError]
    ) -> None:
        self.realiser, self.keep_going, self.failed = realiser, keep_going, failed
        self.size = jobs()
        self.executor: ThreadPoolExecutor | None = None
        self.flight: list[tuple[PlanNode, Job, Future[None]]] = []
        self.reporter = _Locked(realiser.reporter)
        self.valid: set[StorePath] = set()  # paths known to be valid

    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.drain()
        finally:
            self._stop()

    def threadable(self, node: PlanNode) -> bool:
        """Whether ``node`` is made by a worker (when its inputs are valid)."""
        sub = self.realiser.substitution
        if node.action != action_of(node.drv.kind) or (sub is not None and node.path in sub.offers):
            return False
        return bool(getattr(builder_for(node.drv.kind, node.drv.name), "threadable", False))

    def busy(self) -> bool:
        return bool(self.flight)

    def start_ready(
        self, waiting: list[tuple[int, PlanNode]], total: int
    ) -> list[tuple[int, PlanNode]]:
        """Start, in plan order, every threadable path of ``waiting`` (index in the plan,
        node) whose inputs are valid, while fewer than twice :attr:`size` jobs are in
        flight; commit the jobs that have ended. Return the paths still waiting."""
        self._collect(block=False)
        left = []
        for i, node in waiting:
            if len(self.flight) < 2 * self.size and self._ready(node):
                self._start(node, i, total)
            else:
                left.append((i, node))
        return left

    def _ready(self, node: PlanNode) -> bool:
        if not self.threadable(node):
            return False
        inputs = set(node.drv.inputs.values())
        if inputs & self.failed.keys():
            return False
        unknown = inputs - self.valid
        if unknown:  # validity only grows while the plan's paths are protected
            self.valid |= self.realiser.store.valid_among(unknown)
        return inputs <= self.valid

    def _start(self, node: PlanNode, index: int, total: int) -> None:
        r = self.realiser
        r.reporter.start(node, index, total)
        job = begin_derivation(node.drv, r.store, self.reporter, node, r.expected.get(node.path))
        if isinstance(job, PathInfo):
            r.reporter.finish(node, job)
            return
        if not job.threadable:  # cannot happen for a threadable builder; be safe
            self._finish(node, job, None)
            return
        if self.executor is None:
            self.executor = ThreadPoolExecutor(self.size, thread_name_prefix="mlpkg-realise")
        self.flight.append((node, job, self.executor.submit(job.run)))

    def drain(self) -> None:
        """Commit every job in flight (in plan order)."""
        while self.flight:
            self._collect(block=True)

    def wait_one(self) -> None:
        """Wait until a job in flight ends; commit those that have ended."""
        wait([f for _, _, f in self.flight], return_when=FIRST_COMPLETED)
        self._collect(block=False)

    def _collect(self, block: bool) -> None:
        """Commit the jobs that have ended (in plan order); with ``block``, the first
        in flight at least."""
        for entry in list(self.flight):
            if entry[2].done() or block:
                self.flight.remove(entry)
                self._finish(*entry)
                block = False

    def _finish(self, node: PlanNode, job: Job, future: Future[None] | None) -> None:
        try:
            if future is None:
                job.run()
            else:
                future.result()
            info = self.realiser.store.commit(job.making)
        except (FetchError, BuildError) as e:
            if not self.keep_going:
                raise
            self.failed[node.path] = e
            return
        finally:
            job.making.abandon()
        self.realiser.reporter.finish(node, info)

    def _stop(self) -> None:
        """Cancel what has not started, wait for what runs, and undo every job left."""
        for _, _, future in self.flight:
            future.cancel()
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        while self.flight:
            self.flight.pop(0)[1].making.abandon()


class _Locked(Reporter):
    """A reporter that worker threads may share: each call under one lock."""

    def __init__(self, inner: Reporter) -> None:
        self.inner, self.lock, self.echo = inner, threading.Lock(), inner.echo

    def progress(self, node: PlanNode, done: int, total: int | None) -> None:
        with self.lock:
            self.inner.progress(node, done, total)

    def note(self, text: str) -> None:
        with self.lock:
            self.inner.note(text)


class _ByteProgress:
    def __init__(self, reporter: Reporter, node: PlanNode, total: int) -> None:
        self.reporter, self.node, self.total, self.done = reporter, node, total, 0

    def __call__(self, n: int) -> None:
        self.done += n
        self.reporter.progress(self.node, self.done, self.total)


_SKIPPED = MlpkgError("not attempted: an input failed")


def _combined(errors: list[MlpkgError]) -> MlpkgError:
    """One error for several failures: each message as a detail, each hint joined."""
    if len(errors) == 1:
        return errors[0]
    details = []
    for e in errors:
        details += [e.message, *(f"  {d}" for d in e.details)]
    hints = [e.hint for e in errors if e.hint]
    return BuildError(
        f"{len(errors)} paths could not be made; each is named below.",
        details=details,
        hint="\n      ".join(hints) or None,
    )


def realise_derivation(
    drv: Derivation,
    store: Store,
    reporter: Reporter,
    node: PlanNode | None = None,
    expected_hash: str | None = None,
) -> PathInfo:
    """Make ``drv``'s path valid with its builder's maker (as :meth:`Store.realise`)."""
    job = begin_derivation(drv, store, reporter, node, expected_hash)
    if isinstance(job, PathInfo):
        return job
    return store.finish(job.making, job.make, job.scanned)


@dataclass
class Job:
    """A path being made (:func:`begin_derivation`): its lock is held. :meth:`run` may run
    in a worker thread when :attr:`threadable`; :meth:`Store.commit` and
    :meth:`~mlpkg.store.store.Making.abandon` then run in the store's thread."""

    making: Making
    make: Maker
    scanned: Callable[[], ArchiveInfo] | None
    threadable: bool

    def run(self) -> None:
        self.making.make(self.make, self.scanned)


def begin_derivation(
    drv: Derivation,
    store: Store,
    reporter: Reporter,
    node: PlanNode | None = None,
    expected_hash: str | None = None,
) -> PathInfo | Job:
    """The path's info if it is valid, else its :class:`Job` (lock taken, see
    :meth:`Store.begin`). A maker that learns the path's scan while it writes (it has
    ``scanning(forbid)``, returning the function that gives the scan:
    :class:`mlpkg.build.wheel.WheelMaker`) is asked for it with the strings the store
    forbids, so that the store does not read the content again. A maker with
    ``prepare()`` reads there what it needs of the store; after it, it uses no database,
    so the job is :attr:`Job.threadable`."""
    path = drv.path
    node = node or PlanNode(drv, path, drv.kind)
    relocatable = is_relocatable(drv.kind)
    forbidden = [sandbox.FIXED_OUT]
    making = store.begin(
        path,
        kind=drv.kind,
        recipe_hash=drv.recipe_hash,
        deriver=drv.to_json(),
        references=runtime_references(drv),
        relocatable=relocatable,
        forbidden=forbidden,
        expected_hash=expected_hash,
    )
    if isinstance(making, PathInfo):
        return making
    try:
        make = maker(drv, store, reporter, node)
        scanning = getattr(make, "scanning", None)
        scanned = scanning(store.forbidden_strings(relocatable, forbidden)) if scanning else None
        prepare = getattr(make, "prepare", None)
        if prepare is not None:
            prepare()
    except BaseException:
        making.abandon()
        raise
    return Job(making, make, scanned, prepare is not None)


def is_relocatable(kind: str) -> bool:
    """Whether paths of recipe kind ``kind`` must be relocatable (invariant 3): checked
    when they are made and when ``verify --repair`` remakes them. Its builder says
    (:mod:`mlpkg.build`)."""
    return builder_for(kind).relocatable


def runtime_references(drv: Derivation) -> list[StorePath]:
    """The inputs a path keeps as references: all, or its build's ``runtime_inputs``."""
    build = drv.recipe.build
    keep = build.runtime_inputs if build is not None else None
    return [p for k, p in sorted(drv.inputs.items()) if keep is None or k in keep]


def maker(drv: Derivation, store: Store, reporter: Reporter, node: PlanNode) -> Maker:
    """The function that writes ``drv``'s content at a temporary location: its kind's
    builder's (:func:`mlpkg.build.builder_for`)."""
    return builder_for(drv.kind, drv.name).maker(drv, BuildContext(store, reporter, node))


__all__ = [
    "Job",
    "Reporter",
    "Substitution",
    "begin_derivation",
    "is_relocatable",
    "maker",
    "realise_derivation",
    "realise_plan",
    "runtime_references",
    "schedule",
]
