"""The ``mlpkg`` command. The only place that prints errors and picks exit codes:
0 success, 1 a build, fetch, check or run failed, 2 bad input (design.md).

Each ``<topic>_cmds.py`` holds the click commands of one topic (their ``COMMANDS``),
parsing options, calling the functions below the CLI and printing; ``context.py`` (the
``App`` every command gets) and ``progress.py`` (the realisation reporters) serve them."""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import traceback

import click

from mlpkg import __version__
from mlpkg.cli.context import App
from mlpkg.errors import MlpkgError

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module of mlpkg.cli, short help as --help shows it); a test keeps it true
    "add-file": ("store_cmds", "Add a local FILE as the fixed-output path a recipe expects "
                 "(for licensed or offline artifacts): afterwards, builds needing NAME@VERSION "
                 "use it..."),
    "build": ("build_cmds", "Realise SPECS (or a lockfile) and print their store paths."),
    "bundle": ("bundle_cmds", "Offline bundles: a closure, its signatures and its lock in one "
               "file."),
    "cache": ("cachegroup_cmds", "Check a binary cache, and remove what no path of it needs."),
    "env": ("shell_cmds", 'Print the commands that activate the closure of SPECS: eval '
            '"$(mlpkg env hello)".'),
    "gc": ("store_cmds", "Delete store paths that no root (gcroots/, profile generations, a "
           "running mlpkg) reaches."),
    "import": ("import_cmds", "Write recipes from another package ecosystem."),
    "install": ("build_cmds", "Realise SPECS (or a lockfile) and add them to a profile (a new "
                "generation; the profile's other packages stay, resolved together with the "
                "new ones)."),
    "key": ("key_cmds", "Signing keys for binary caches, and the keys whose signatures are "
            "trusted."),
    "lock": ("lock_cmds", "Write a lockfile pinning the whole closure of SPECS."),
    "path-info": ("store_cmds", "Show what the store knows of paths (given as paths or specs, "
                  "or --profile P)."),
    "profile": ("profile_cmds", "Profiles: named sets of installed packages, one generation "
                "per change."),
    "push": ("cache_cmds", "Upload the closures of SPECs, PATHs or a lock's roots to a binary "
             "cache."),
    "run": ("run_cmds", "Run the app SPEC (e.g. retinanet-offline+synthetic) in its closure."),
    "runs": ("runs_cmds", "The records of past runs ($MLPKG_HOME/runs)."),
    "search": ("build_cmds", "List packages whose name, alias or summary contains TERM."),
    "shell": ("shell_cmds", "Run a command (after --) or an interactive shell in the closure "
              "of SPECS: mlpkg shell hello -- hello"),
    "show": ("build_cmds", "Show the recipe SPEC resolves to, its inputs and its store path."),
    "sweep": ("sweep_cmds", "Run the app SPEC once per point of a matrix: every combination of "
              "the --with alternatives (NAME=SPEC1,SPEC2) and --arg values "
              "(OPTION=V1,V2),..."),
    "verify": ("store_cmds", "Check the store against its database."),
    "why-depends": ("store_cmds", "Show the chain of references by which PACKAGE depends on "
                    "DEPENDENCY."),
}  # fmt: skip
"""Every command: the module that defines it (in its ``COMMANDS``) and its short help,
so that ``mlpkg --help`` imports no command module and a command imports only its own."""


class LazyGroup(click.Group):
    """A group whose commands are imported only when one of them runs (:data:`COMMANDS`):
    ``mlpkg install`` does not import the modules of ``run``, ``sweep`` or ``import``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"mlpkg.cli.{COMMANDS[cmd_name][0]}")
        found: dict[str, click.Command] = {c.name or "": c for c in module.COMMANDS}
        return found.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands with their short help from :data:`COMMANDS`, laid out as
        :class:`click.Group` lays them out, without importing them."""
        if not COMMANDS:
            return
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [
            (name, click.Command(name, help=text).get_short_help_str(limit))
            for name, (_, text) in sorted(COMMANDS.items())
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlpkg")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """A content-addressed package manager for reproducible ML benchmarking."""
    ctx.ensure_object(App)


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
