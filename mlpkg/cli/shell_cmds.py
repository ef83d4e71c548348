"""``mlpkg env`` and ``mlpkg shell``: a closure's environment, printed or entered."""

from __future__ import annotations

import os
import shlex
import subprocess

import click

from mlpkg.cli.context import App, common
from mlpkg.env.activation import Activation, activation
from mlpkg.errors import BadInput
from mlpkg.store.path import StorePath


def activate(app: App, specs: tuple[str, ...], pure: bool, profile: str | None) -> Activation:
    """The activation of SPECS, or (without specs) of a profile's current generation."""
    if specs and profile:
        raise BadInput("Give specs or --profile, not both.")
    if specs:
        doc = app.realise(specs)
        roots = [StorePath.parse(r) for r in doc["roots"]]
    else:
        from mlpkg.env.profiles import Profile

        hint = "Give specs, e.g. `mlpkg shell hello`, or install some first."
        roots = Profile(app.store, profile or "default").require_current(hint).roots
    app.store.protect(app.store.closure(roots))
    return activation(app.store, roots, os.environ, pure=pure)


@click.command("env")
@click.argument("specs", nargs=-1)
@click.option("--fish", is_flag=True, help="Print fish syntax instead of bash/zsh.")
@click.option("--pure", is_flag=True, help="Leave out the caller's PATH entries.")
@click.option("--profile", help="A profile's current generation (default: 'default').")
@common
def env_cmd(app: App, specs: tuple[str, ...], fish: bool, pure: bool, profile: str | None) -> None:
    """Print the commands that activate the closure of SPECS: eval "$(mlpkg env hello)"."""
    act = activate(app, specs, pure, profile)
    if app.json:
        app.emit({"set": act.env, "unset": act.unset, "view": str(act.view) if act.view else None})
        return
    for name in act.unset:
        app.out(f"set -e {name};" if fish else f"unset {name}")
    for name, value in sorted(act.env.items()):
        if fish:
            app.out(f"set -gx {name} {shlex.quote(value)};")
        else:
            app.out(f"export {name}={shlex.quote(value)}")


@click.command("shell", context_settings={"ignore_unknown_options": True})
@click.argument("specs", nargs=-1)
@click.option("--pure", is_flag=True, help="Leave out the caller's PATH entries.")
@click.option("--profile", help="A profile's current generation (default: 'default').")
@common
def shell_cmd(app: App, specs: tuple[str, ...], pure: bool, profile: str | None) -> None:
    """Run a command (after --) or an interactive shell in the closure of SPECS:
    mlpkg shell hello -- hello"""
    ctx = click.get_current_context()
    command = list(ctx.meta.get("mlpkg.command", []))
    act = activate(app, specs, pure, profile)
    if not command:
        command = [os.environ.get("SHELL", "/bin/bash")]
    env = act.apply(os.environ)
    try:
        code = subprocess.call(command, env=env)
    except FileNotFoundError:
        raise BadInput(f"'{command[0]}' is not a command in the closure's environment.") from None
    except PermissionError:
        raise BadInput(f"'{command[0]}' is not an executable program.") from None
    ctx.exit(128 - code if code < 0 else code)  # killed by signal N: 128+N, as shells say


COMMANDS = [env_cmd, shell_cmd]
