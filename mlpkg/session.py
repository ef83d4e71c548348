"""A session: the operations every front end calls (the CLI, a sweep, a cluster executor).

A :class:`Session` is one home (its store, its recipe collection, the ``--with``
overrides) and the steps built on them: plan specs (remembering the plan in the plan
cache), realise specs or a lockfile, make and check lockfiles, merge a profile's specs.
It formats nothing and chooses no exit codes; progress goes to the :class:`Reporter` its
:meth:`Session.reporter` makes (silent here; the CLI's shows bars or lines).

Contract:

* Nothing global: each session opens its own store lazily (``store``) and closes it with
  :meth:`close`. Heavy modules (pydantic through the recipe model, httpx) load only when an
  operation needs them, so a warm no-op ``mlpkg build`` stays fast.
* Every error is an :class:`~mlpkg.errors.MlpkgError`; bad input is
  :class:`~mlpkg.errors.BadInput` naming the spec, file or option at fault.
* :meth:`realise`, :meth:`realise_lock` and :meth:`realise_app` plan first and act second;
  with ``dry_run`` they only plan. Each returns the plan (its JSON document or object).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpkg.errors import BadInput
from mlpkg.recipes.index import RecipeIndex, default_dirs
from mlpkg.resolver import plancache
from mlpkg.resolver.machine import current_platform
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

if TYPE_CHECKING:
    from mlpkg.cache.substitute import Substituters
    from mlpkg.config import Config
    from mlpkg.resolver.lockfile import Lockfile
    from mlpkg.resolver.plan import Plan
    from mlpkg.resolver.provider import IndexProvider
    from mlpkg.resolver.realise import Reporter

__all__ = ["Session", "default_home"]


def default_home() -> Path:
    """``$MLPKG_HOME``, else the user's data directory for mlpkg."""
    env = os.environ.get("MLPKG_HOME")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("mlpkg"))


@dataclass
class Session:
    """One home, its recipe collection and the ``--with`` overrides (NAME -> SPEC)."""

    recipe_dirs: list[Path] = field(default_factory=list)
    home: Path = field(default_factory=default_home)
    overrides: dict[str, str] = field(default_factory=dict)
    substituter_urls: list[str] = field(default_factory=list)  # asked before the config's

    @cached_property
    def store(self) -> Store:
        cache = os.environ.get("MLPKG_CACHE_DIR")
        return Store(self.home, Path(cache) if cache else None)

    @cached_property
    def dirs(self) -> list[Path]:
        return default_dirs(self.recipe_dirs, self.home / "recipes")

    @cached_property
    def index(self) -> RecipeIndex:
        return RecipeIndex(self.dirs)

    @cached_property
    def provider(self) -> IndexProvider:
        from mlpkg.resolver.provider import IndexProvider

        return IndexProvider(self.index)

    @cached_property
    def config(self) -> Config:
        from mlpkg.config import load_config

        return load_config(self.home)

    @cached_property
    def substituters(self) -> Substituters:
        """The binary caches asked before anything is fetched or built: ``--substituter``
        URLs, then ``MLPKG_SUBSTITUTERS`` or the config's (docs/caches.md)."""
        from mlpkg.cache.keys import trusted_keys
        from mlpkg.cache.substitute import Substituters

        cfg = self.config
        urls = [*self.substituter_urls, *cfg.substituters]
        return Substituters(
            urls, trusted_keys(cfg), self.home, self.warn, cfg.substituter_negative_ttl
        )

    def close(self) -> None:
        if "substituters" in self.__dict__:
            self.substituters.close()
        if "store" in self.__dict__:
            self.store.close()

    def debug(self, text: str) -> None:
        """A note on what was decided (e.g. that the plan cache answered); a front end
        shows it when asked to say more."""

    def warn(self, text: str) -> None:
        """Something the user should know that does not stop the command (a cache that is
        down, an entry that is not trusted); a front end shows it."""

    def reporter(self) -> Reporter:
        """Where realisation reports progress; a front end overrides this."""
        from mlpkg.resolver.realise import Reporter

        return Reporter()

    # -- planning -------------------------------------------------------------------------

    def plan(self, specs: Sequence[str]) -> Plan:
        """Resolve ``specs`` into a plan, and remember it in the plan cache."""
        from mlpkg.resolver.plan import make_plan
        from mlpkg.resolver.spec import parse_spec

        self.provider.set_overrides({k: parse_spec(v) for k, v in self.overrides.items()})
        plan = make_plan(self.provider, [parse_spec(s) for s in specs], self.store)
        detector = self.provider.detector
        if not detector.volatile:  # a tool found through a shim may change unseen
            key = plancache.cache_key(self._cache_specs(specs), self.dirs, current_platform())
            plancache.save(self.home, key, plan.to_json(), self.index.stamps, detector.stamps)
        return plan

    def _cache_specs(self, specs: Sequence[str]) -> list[str]:
        return [*specs, *(f"--with {k}={v}" for k, v in sorted(self.overrides.items()))]

    def cached_plan(self, specs: Sequence[str]) -> dict[str, Any] | None:
        """The plan document of ``specs`` from the plan cache, if it is still right and
        every path in it is valid; None otherwise."""
        key = plancache.cache_key(self._cache_specs(specs), self.dirs, current_platform())
        doc = plancache.load(self.home, key)
        if doc is None:
            return None
        paths = [StorePath.parse(n["path"]) for n in doc["nodes"]]
        self.store.protect(paths)  # before checking validity: gc may be running
        if len(self.store.valid_among(paths)) != len(set(paths)):
            return None
        for node in doc["nodes"]:
            node["action"] = "valid"
        doc["counts"] = {k: 0 for k in doc["counts"]} | {"valid": len(doc["nodes"])}
        return doc

    def package_of(self, spec: str) -> str:
        """The canonical package name a spec (or a bare name or alias) is about."""
        from mlpkg.resolver.spec import parse_spec

        return self.provider.canonical_name(parse_spec(spec).name)

    def merge_specs(self, old: Sequence[str], new: Sequence[str]) -> list[str]:
        """A profile's specs after asking for ``new``: a new spec replaces the old one of
        the same package; the rest keep their order."""
        replaced = {self.package_of(s) for s in new}
        kept = [s for s in old if self.package_of(s) not in replaced]
        return kept + list(dict.fromkeys(new))

    # -- acting ---------------------------------------------------------------------------

    def act(
        self,
        plan: Plan,
        expected: dict[StorePath, str] | None = None,
        keep_going: bool = False,
        dry_run: bool = False,
    ) -> None:
        """Ask the substituters for the pending paths of ``plan`` (marking what each will
        be: substituted, fetched, built, or skipped), then, unless ``dry_run``, realise
        them (each locked archive hash in ``expected`` checked), reporting to a fresh
        :meth:`reporter`."""
        if not plan.pending():
            return
        from mlpkg.resolver.realise import realise_plan, schedule

        substitution = None
        if self.substituters:
            substitution = schedule(plan, self.substituters, expected)
        if dry_run:
            return
        reporter = self.reporter()
        try:
            realise_plan(
                plan,
                self.store,
                reporter,
                expected,
                keep_going=keep_going,
                substitution=substitution,
            )
        finally:
            reporter.close()

    def realise(self, specs: Sequence[str], dry_run: bool = False) -> dict[str, Any]:
        """Plan ``specs``, then (unless ``dry_run``) realise them; the plan document. The
        plan cache answers first when every path of its plan is valid."""
        if not specs:
            raise BadInput("Give at least one spec, e.g. `mlpkg build hello`.")
        if not dry_run:
            cached = self.cached_plan(specs)
            if cached is not None:
                self.debug("plan cache: every path is valid, nothing to do")
                return cached
        plan = self.plan(specs)
        if not dry_run and not plan.pending():
            self.debug("every path is valid: nothing to do")
        self.act(plan, dry_run=dry_run)
        return plan.to_json()

    def _no_overrides_with_a_lock(self) -> None:
        if self.overrides:
            raise BadInput("--with changes a resolution; a lock is not resolved again.")

    def realise_lock(
        self, file: Path, allow_drift: bool = False, dry_run: bool = False
    ) -> dict[str, Any]:
        """Realise exactly the locked plan of ``file``, comparing every archive hash; the
        plan document. The lock's externals must be detected as this session's recipe
        collection detects them (``allow_drift`` accepts other versions)."""
        from mlpkg.resolver.lockfile import check_valid_paths, to_plan
        from mlpkg.resolver.lockmake import read_lock

        self._no_overrides_with_a_lock()
        lock = read_lock(file)
        detector = self.provider.detector
        plan, expected = to_plan(
            lock, self.store, detector, allow_external_drift=allow_drift, trusted=self.index
        )
        if not dry_run:
            check_valid_paths(plan, self.store, expected)
        self.act(plan, expected, dry_run=dry_run)
        return plan.to_json()

    def realise_app(
        self, spec: str | None, lock_file: Path | None = None, allow_drift: bool = False
    ) -> tuple[Plan, str]:
        """The realised plan of an app (from its spec, or exactly as ``lock_file`` pins it)
        and the spec it was asked as. Every path that can be made is made, so one broken
        input does not hide the others' errors."""
        from mlpkg.env.run import check_app, plan_of_lock

        expected: dict[StorePath, str] = {}
        if lock_file is not None:
            self._no_overrides_with_a_lock()
            from mlpkg.resolver.lockmake import read_lock

            lock = read_lock(lock_file)
            detector = self.provider.detector
            plan, expected, spec = plan_of_lock(
                self.store, lock, lock_file, spec, detector, self.index, allow_drift
            )
        elif spec is None:
            raise BadInput("Give an app to run, e.g. `mlpkg run retinanet-offline+synthetic`.")
        else:
            plan = self.plan([spec])
        check_app(self.store, plan.node(plan.roots[0]).drv)
        self.act(plan, expected, keep_going=True)
        return plan, spec

    # -- lockfiles ------------------------------------------------------------------------

    def lock(self, specs: Sequence[str], realise: bool = False) -> Lockfile:
        """The lockfile of ``specs``' plan; with ``realise``, realised first so that every
        archive hash is known."""
        from mlpkg.resolver.lockmake import lock_of_plan

        if not specs:
            raise BadInput("Give the specs to lock, e.g. `mlpkg lock hello -o mlpkg.lock`.")
        plan = self.plan(list(specs))
        if realise:
            self.act(plan)
        return lock_of_plan(self.store, list(specs), plan, realised=realise)

    def lock_changes(self, file: Path) -> list[str]:
        """How the recipes' plan of the lock's specs differs from the lock (empty: up to
        date). A lock whose externals the recipes do not detect alike is refused."""
        from mlpkg.resolver.lockmake import lock_changes, read_trusted_lock

        lock = read_trusted_lock(file, self.index)
        return lock_changes(lock, self.plan(lock.specs))

    def update_lock(self, file: Path, names: Sequence[str]) -> Lockfile:
        """Re-resolve ``names`` with the current recipes; keep every other node as locked."""
        from mlpkg.resolver.lockmake import read_trusted_lock, updated_lock

        lock = read_trusted_lock(file, self.index)
        return updated_lock(self.store, self.provider, lock, tuple(names), str(file))
