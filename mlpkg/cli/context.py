"""What every command needs: where the home is, the store, the recipe index, the output
mode, and the progress reporter. Created per invocation; nothing global."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from mlpkg.recipes.index import RecipeIndex, default_dirs
from mlpkg.resolver.plan import Plan, PlanNode, make_plan
from mlpkg.resolver.provider import IndexProvider
from mlpkg.resolver.realise import Reporter
from mlpkg.resolver.spec import Spec, parse_spec
from mlpkg.store.db import PathInfo
from mlpkg.store.store import Store

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

    @cached_property
    def store(self) -> Store:
        return Store(self.home)

    @cached_property
    def index(self) -> RecipeIndex:
        return RecipeIndex(default_dirs(self.recipe_dirs))

    @cached_property
    def provider(self) -> IndexProvider:
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

    def specs(self, texts: Sequence[str]) -> list[Spec]:
        return [parse_spec(t) for t in texts]

    def plan(self, texts: Sequence[str]) -> Plan:
        return make_plan(self.provider, self.specs(texts), self.store)

    def reporter(self) -> Reporter:
        if self.interactive:
            from mlpkg.cli.progress import RichReporter

            return RichReporter(self)
        return TextReporter(self)


class TextReporter(Reporter):
    """One line per path made (stderr), nothing with -q; build logs live with -v."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.echo = sys.stderr if app.verbose else None

    def start(self, node: PlanNode, index: int, total: int) -> None:
        self.app.info(f"[{index}/{total}] {node.action} {node.path}")

    def note(self, text: str) -> None:
        self.app.debug(text)

    def finish(self, node: PlanNode, info: PathInfo) -> None:
        self.app.debug(f"  {info.archive_hash} {info.size} bytes")


def common(func: F) -> F:
    """The options every command takes: --json, -v, -q, --recipes."""

    @click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
    @click.option("-v", "--verbose", is_flag=True, help="Say more; tracebacks on errors.")
    @click.option("-q", "--quiet", is_flag=True, help="Print only results.")
    @click.option(
        "--recipes",
        "recipe_dirs",
        multiple=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="An extra recipe directory, searched first (repeatable).",
    )
    @click.pass_context
    @wraps(func)
    def wrapper(
        ctx: click.Context, as_json: bool, verbose: bool, quiet: bool,
        recipe_dirs: tuple[Path, ...], **kwargs: Any,
    ) -> Any:  # fmt: skip
        app: App = ctx.ensure_object(App)
        app.json = app.json or as_json
        app.verbose = app.verbose or verbose
        app.quiet = app.quiet or quiet
        app.recipe_dirs = [*app.recipe_dirs, *recipe_dirs]
        return func(app, **kwargs)

    return wrapper  # type: ignore[return-value]
