"""What every command needs: where the home is, the store, the recipe index, the output
mode, and the progress reporter. Created per invocation; nothing global.

Heavy modules (pydantic through the recipe model, httpx, rich) are imported only when a
command needs them, so that a warm no-op ``mlpkg build`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mlpkg.recipes.index import RecipeIndex, default_dirs
from mlpkg.resolver import plancache
from mlpkg.resolver.machine import current_platform
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

if TYPE_CHECKING:
    from mlpkg.resolver.plan import Plan
    from mlpkg.resolver.provider import IndexProvider
    from mlpkg.resolver.realise import Reporter

F = TypeVar("F", bound=Callable[..., Any])


def default_home() -> Path:
    env = os.environ.get("MLPKG_HOME")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("mlpkg"))


@dataclass
class App:
    json: bool = False
    verbose: bool = False
    quiet: bool = False
    recipe_dirs: list[Path] = field(default_factory=list)
    home: Path = field(default_factory=default_home)
    overrides: dict[str, str] = field(default_factory=dict)  # --with NAME=SPEC

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

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()

    # -- output ---------------------------------------------------------------------------

    def out(self, text: str = "") -> None:
        """Data for the user, on stdout (suppressed in --json mode)."""
        if not self.json:
            click.echo(text)

    def info(self, text: str) -> None:
        """Chatter on stderr, hidden with -q and in --json mode."""
        if not self.quiet and not self.json:
            click.echo(text, err=True)

    def debug(self, text: str) -> None:
        if self.verbose:
            click.echo(text, err=True)

    def emit(self, data: Any) -> None:
        """The --json document."""
        click.echo(json.dumps(data, indent=2, sort_keys=True))

    @property
    def interactive(self) -> bool:
        return not self.quiet and not self.json and sys.stderr.isatty()

    # -- common steps ---------------------------------------------------------------------

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

    def reporter(self) -> Reporter:
        from mlpkg.cli.progress import RichReporter, TextReporter

        if self.interactive:
            return RichReporter(self)
        return TextReporter(self)


def common(func: F) -> F:
    """The options every command takes: --with, --json, -v, -q, --no-sandbox, --recipes."""

    @click.option(
        "--with",
        "with_overrides",
        multiple=True,
        metavar="NAME=SPEC",
        help="Replace the input NAME (an input key or a package) everywhere.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
    @click.option("-v", "--verbose", is_flag=True, help="Say more; tracebacks on errors.")
    @click.option("-q", "--quiet", is_flag=True, help="Print only results.")
    @click.option(
        "--no-sandbox",
        is_flag=True,
        help="Build and run without a sandbox (the host stays visible; each build log "
        "says so). Same as MLPKG_SANDBOX=none.",
    )
    @click.option(
        "--recipes",
        "recipe_dirs",
        multiple=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="An extra recipe directory, searched first (repeatable).",
    )
    @click.pass_context  # type: ignore[arg-type]
    @wraps(func)
    def wrapper(
        ctx: click.Context,
        with_overrides: tuple[str, ...],
        as_json: bool,
        verbose: bool,
        quiet: bool,
        no_sandbox: bool,
        recipe_dirs: tuple[Path, ...],
        **kwargs: Any,
    ) -> Any:
        app: App = ctx.ensure_object(App)
        if no_sandbox:  # an explicit opt-out, read by the sandbox (and by child mlpkgs)
            os.environ["MLPKG_SANDBOX"] = "none"
        app.json = app.json or as_json
        app.verbose = app.verbose or verbose
        app.quiet = app.quiet or quiet
        app.recipe_dirs = [*app.recipe_dirs, *recipe_dirs]
        for item in with_overrides:
            name, sep, spec = item.partition("=")
            if not sep or not name or not spec:
                raise click.BadParameter(f"'{item}' is not NAME=SPEC.", param_hint="--with")
            app.overrides[name] = spec
        return func(app, **kwargs)

    return wrapper  # type: ignore[return-value]
