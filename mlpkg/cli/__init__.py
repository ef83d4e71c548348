"""The ``mlpkg`` command. The only place that prints errors and picks exit codes:
0 success, 1 a build, fetch, check or run failed, 2 bad input (design.md).

Each ``<topic>_cmds.py`` holds the click commands of one topic (their ``COMMANDS``),
parsing options, calling the functions below the CLI and printing; ``context.py`` (the
``App`` every command gets) and ``progress.py`` (the realisation reporters) serve them."""

from __future__ import annotations

import contextlib
import json
import sys
import traceback

import click

from mlpkg import __version__
from mlpkg.cli import (
    build_cmds,
    bundle_cmds,
    cache_cmds,
    cachegroup_cmds,
    import_cmds,
    key_cmds,
    lock_cmds,
    profile_cmds,
    run_cmds,
    runs_cmds,
    shell_cmds,
    store_cmds,
    sweep_cmds,
)
from mlpkg.cli.context import App
from mlpkg.errors import MlpkgError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlpkg")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """A content-addressed package manager for reproducible ML benchmarking."""
    ctx.ensure_object(App)


for command in (
    *build_cmds.COMMANDS,
    *bundle_cmds.COMMANDS,
    *cache_cmds.COMMANDS,
    *cachegroup_cmds.COMMANDS,
    *import_cmds.COMMANDS,
    *key_cmds.COMMANDS,
    *lock_cmds.COMMANDS,
    *profile_cmds.COMMANDS,
    *run_cmds.COMMANDS,
    *runs_cmds.COMMANDS,
    *shell_cmds.COMMANDS,
    *store_cmds.COMMANDS,
    *sweep_cmds.COMMANDS,
):
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
    args = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in args:  # `mlpkg shell SPEC -- CMD ARGS`: CMD is not ours to parse
        cut = args.index("--")
        args, command = args[:cut], args[cut + 1 :]
    try:
        with cli.make_context("mlpkg", args, obj=app) as ctx:
            ctx.meta["mlpkg.command"] = command
            cli.invoke(ctx)
    except MlpkgError as e:
        if app.verbose:
            traceback.print_exc()
        _report(app, e)
        code = e.exit_code
    except click.exceptions.Exit as e:  # --help, --version, a shell's exit status
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
    except BrokenPipeError:  # `mlpkg search | head`: the reader left, which is no error
        with contextlib.suppress(OSError):
            sys.stderr.close()
        code = 141
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
