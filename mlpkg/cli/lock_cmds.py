"""Lockfiles on the command line: ``lock``, ``lock --check`` and ``lock --update`` (the
work is :class:`~mlpkg.session.Session`'s; ``build --lock`` is in build_cmds)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlpkg.cli.context import App, common
from mlpkg.errors import BadInput, CheckError, MlpkgError

if TYPE_CHECKING:
    from mlpkg.resolver.lockfile import Lockfile


def write_lock(app: App, lock: Lockfile, output: Path) -> None:
    text = lock.dumps()
    if str(output) == "-":
        click.echo(text, nl=False)
        return
    from mlpkg.store.fs import write_atomic

    try:  # shared: 0644 under the usual umask, durable before the command says it wrote it
        write_atomic(output, text)
    except OSError as e:  # a path that cannot be is bad input; a full disk is a failure
        bad_path = isinstance(e, FileNotFoundError | NotADirectoryError)
        error = BadInput if bad_path else MlpkgError
        raise error(
            f"Cannot write the lockfile {output}: {e.strerror}.", file=str(output)
        ) from None
    unknown = sum(1 for n in lock.nodes if n.archive_hash is None)
    note = f"; {unknown} archive hashes unknown (lock --realise records them)" if unknown else ""
    app.info(f"wrote {output}: {len(lock.nodes)} paths{note}")


@click.command("lock")
@click.argument("specs", nargs=-1)
@click.option(
    "-o",
    "--output",
    type=Path,
    default=Path("mlpkg.lock"),
    show_default=True,
    help="Where to write the lock ('-' for stdout); the file --update rewrites.",
)
@click.option("--realise", is_flag=True, help="Realise first, so every archive hash is known.")
@click.option(
    "--check",
    "check_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Check that FILE is consistent and that the recipes still give it.",
)
@click.option(
    "--update",
    "update_names",
    multiple=True,
    metavar="NAME",
    help="Re-resolve NAME (repeatable), keeping every other locked node.",
)
@common
def lock_cmd(
    app: App,
    specs: tuple[str, ...],
    output: Path,
    realise: bool,
    check_file: Path | None,
    update_names: tuple[str, ...],
) -> None:
    """Write a lockfile pinning the whole closure of SPECS."""
    if str(output) == "-" and app.json:
        raise BadInput("-o - writes the lock to stdout; it cannot share it with --json.")
    if check_file is not None:
        changes = app.lock_changes(check_file)
        if app.json:
            app.emit({"file": str(check_file), "consistent": True, "up_to_date": not changes,
                      "changes": changes})  # fmt: skip
        for change in changes:
            app.out(change)
        if changes:
            raise CheckError(
                f"{check_file} no longer matches the recipes: {changes[0]}.",
                hint=f"`mlpkg lock --update NAME -o {check_file}` re-resolves one package.",
                reported=app.json,
            )
        app.info(f"{check_file} is consistent and up to date.")
        return
    lock = app.update_lock(output, update_names) if update_names else app.lock(specs, realise)
    write_lock(app, lock, output)
    if app.json:
        app.emit(
            {"file": str(output), "roots": [str(r) for r in lock.roots], "nodes": len(lock.nodes)}
        )


COMMANDS = [lock_cmd]
