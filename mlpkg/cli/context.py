"""What every command needs: a :class:`~mlpkg.session.Session` (the home, its store and
recipes, the operations) plus the output mode and the progress display. Created per
invocation; nothing global. Rich is imported only when a command shows progress.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mlpkg.session import Session

if TYPE_CHECKING:
    from mlpkg.resolver.realise import Reporter

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App(Session):
    """A :class:`~mlpkg.session.Session` that prints: the output mode of one invocation."""

    json: bool = False
    verbose: bool = False
    quiet: bool = False
    # Every --with as given, in order (app.overrides keeps the last one per name; a sweep
    # takes several values of one name).
    with_items: list[tuple[str, str]] = field(default_factory=list)

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

    def warn(self, text: str) -> None:
        """A warning on stderr, shown even with -q and --json."""
        click.echo(f"warning: {text}", err=True)

    def emit(self, data: Any) -> None:
        """The --json document."""
        click.echo(json.dumps(data, indent=2, sort_keys=True))

    @property
    def interactive(self) -> bool:
        return not self.quiet and not self.json and sys.stderr.isatty()

    def reporter(self) -> Reporter:
        from mlpkg.cli.progress import RichReporter, TextReporter

        if self.interactive:
            return RichReporter(self)
        return TextReporter(self)


def common(func: F) -> F:
    """The options every command takes: --with, --json, -v, -q, --no-sandbox, --recipes,
    --substituter."""

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
    @click.option(
        "--substituter",
        "substituters",
        multiple=True,
        metavar="URL",
        help="A binary cache to ask before fetching or building (repeatable; before "
        "MLPKG_SUBSTITUTERS and the config's; see docs/caches.md).",
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
        substituters: tuple[str, ...],
        **kwargs: Any,
    ) -> Any:
        app: App = ctx.ensure_object(App)
        if no_sandbox:  # an explicit opt-out, read by the sandbox (and by child mlpkgs)
            os.environ["MLPKG_SANDBOX"] = "none"
        app.json = app.json or as_json
        app.verbose = app.verbose or verbose
        app.quiet = app.quiet or quiet
        app.recipe_dirs = [*app.recipe_dirs, *recipe_dirs]
        app.substituter_urls = [*app.substituter_urls, *substituters]
        for item in with_overrides:
            name, sep, spec = item.partition("=")
            if not sep or not name or not spec:
                raise click.BadParameter(f"'{item}' is not NAME=SPEC.", param_hint="--with")
            app.overrides[name] = spec
            app.with_items.append((name, spec))
        return func(app, **kwargs)

    return wrapper  # type: ignore[return-value]
