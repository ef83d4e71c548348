"""The ``mlpkg`` command. The only place that prints errors and picks exit codes:
0 success, 1 a build, fetch, check or run failed, 2 bad input (design.md)."""

from __future__ import annotations

import json
import sys
import traceback

import click

from mlpkg import __version__
from mlpkg.cli import build, lock, store_cmds
from mlpkg.cli.context import App
from mlpkg.errors import MlpkgError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlpkg")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """A content-addressed package manager for reproducible ML benchmarking."""
    ctx.ensure_object(App)


for command in (*build.COMMANDS, *lock.COMMANDS, *store_cmds.COMMANDS):
    cli.add_command(command)


def _report(app: App, err: MlpkgError) -> None:
    if app.json and not err.reported:
        click.echo(json.dumps(err.to_json(), indent=2, sort_keys=True))
    click.echo(f"error: {err.message}", err=True)
    for line in err.details:
        click.echo(f"  {line}", err=True)
    if err.hint:
        click.echo(f"hint: {err.hint}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    app = App()
    code = 0
    try:
        cli.main(args=argv, prog_name="mlpkg", standalone_mode=False, obj=app)
    except MlpkgError as e:
        if app.verbose:
            traceback.print_exc()
        _report(app, e)
        code = e.exit_code
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        code = 130
    except click.ClickException as e:
        e.show()
        code = e.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = 130
    except Exception as e:  # a bug: say so plainly
        if app.verbose:
            traceback.print_exc()
        click.echo(
            f"error: internal error: {type(e).__name__}: {e} (run with -v for the "
            "traceback, and please report it).",
            err=True,
        )
        code = 1
    finally:
        app.close()
    sys.exit(code)
