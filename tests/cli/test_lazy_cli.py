"""The CLI imports a command's module only when that command runs (issue 15): the table
``mlpkg.cli.COMMANDS`` (name -> module, short help) must say what the modules say, so
``mlpkg --help`` lists every command as click would, without importing any of them."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import click
import pytest

import mlpkg.cli
from mlpkg.cli import COMMANDS


def real_commands() -> dict[str, tuple[str, click.Command]]:
    found: dict[str, tuple[str, click.Command]] = {}
    for info in pkgutil.iter_modules(mlpkg.cli.__path__):
        if info.name.endswith("_cmds"):
            module = importlib.import_module(f"mlpkg.cli.{info.name}")
            # a module without COMMANDS serves another (report_cmds: `runs report`)
            for command in getattr(module, "COMMANDS", ()):
                assert command.name not in found, f"{command.name} is defined twice"
                found[command.name or ""] = (info.name, command)
    return found


def test_the_table_names_every_command_and_its_module() -> None:
    real = real_commands()
    assert sorted(COMMANDS) == sorted(real)
    for name, (module, _) in COMMANDS.items():
        assert real[name][0] == module, name


@pytest.mark.parametrize("limit", [30, 45, 60, 80, 100, 150])
def test_the_tables_short_help_is_the_commands(limit: int) -> None:
    for name, (_, command) in real_commands().items():
        table = click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)
        assert table == command.get_short_help_str(limit), name


def test_help_lists_every_command_as_an_eager_group_would() -> None:
    eager = click.Group("mlpkg", help=mlpkg.cli.cli.help)
    for _, command in real_commands().values():
        eager.add_command(command)
    lazy_ctx = click.Context(mlpkg.cli.cli, info_name="mlpkg")
    eager_ctx = click.Context(eager, info_name="mlpkg")
    lazy_out = lazy_ctx.make_formatter()
    eager_out = eager_ctx.make_formatter()
    mlpkg.cli.cli.format_commands(lazy_ctx, lazy_out)
    eager.format_commands(eager_ctx, eager_out)
    assert lazy_out.getvalue() == eager_out.getvalue()


def test_a_command_imports_only_its_own_module() -> None:
    code = (
        "import sys, click, mlpkg.cli as c\n"
        "ctx = click.Context(c.cli)\n"
        "assert c.cli.get_command(ctx, 'install').name == 'install'\n"
        "assert c.cli.get_command(ctx, 'nope') is None\n"
        "print(' '.join(sorted(m for m in sys.modules if m.endswith('_cmds'))))\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('matplotlib'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    cmds, plots = out.stdout.split("\n")[:2]
    assert cmds.split() == ["mlpkg.cli.build_cmds"]
    assert plots == ""
