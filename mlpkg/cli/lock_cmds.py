"""Lockfiles on the command line: ``lock``, ``lock --check``, ``lock --update``, and the
``--lock`` mode of ``build`` and ``install``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def check_lock(app: App, file: Path) -> dict[str, Any]:
    """Is the lock consistent (parse checks it), are its externals detected as the recipes
    detect them (else exit 2), and do the recipes still give it?"""
    from mlpkg.resolver.lockmake import lock_changes, read_trusted_lock

    lock = read_trusted_lock(file, app.index)
    changes = lock_changes(lock, app.plan(lock.specs))
    return {"file": str(file), "consistent": True, "up_to_date": not changes, "changes": changes}


def update_lock(app: App, file: Path, names: tuple[str, ...]) -> Lockfile:
    """Re-resolve ``names`` with the current recipes; keep every other node as locked (a
    lock whose externals the recipes do not trust is refused first)."""
    from mlpkg.resolver.lockmake import read_trusted_lock, updated_lock

    lock = read_trusted_lock(file, app.index)
    return updated_lock(app.store, app.provider, lock, names, str(file))


def realise_lock(app: App, file: Path, allow_drift: bool, dry_run: bool) -> dict[str, Any]:
    """``build --lock``: realise exactly the locked plan and compare every archive hash.
    The lock's externals must be detected as ``app``'s recipe collection detects them."""
    from mlpkg.resolver.lockfile import check_valid_paths, to_plan
    from mlpkg.resolver.lockmake import read_lock
    from mlpkg.resolver.realise import realise_plan

    lock = read_lock(file)
    plan, expected = to_plan(
        lock,
        app.store,
        app.provider.detector,
        allow_external_drift=allow_drift,
        trusted=app.index,
    )
    doc = plan.to_json()
    if dry_run:
        return doc
    check_valid_paths(plan, app.store, expected)
    if plan.pending():
        reporter = app.reporter()
        try:
            realise_plan(plan, app.store, reporter, expected)
        finally:
            reporter.close()
    return doc


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
        result = check_lock(app, check_file)
        if app.json:
            app.emit(result)
        for change in result["changes"]:
            app.out(change)
        if result["changes"]:
            raise CheckError(
                f"{check_file} no longer matches the recipes: {result['changes'][0]}.",
                hint=f"`mlpkg lock --update NAME -o {check_file}` re-resolves one package.",
                reported=app.json,
            )
        app.info(f"{check_file} is consistent and up to date.")
        return
    if update_names:
        lock = update_lock(app, output, update_names)
    else:
        if not specs:
            raise BadInput("Give the specs to lock, e.g. `mlpkg lock hello -o mlpkg.lock`.")
        plan = app.plan(list(specs))
        if realise and plan.pending():
            from mlpkg.resolver.realise import realise_plan

            reporter = app.reporter()
            try:
                realise_plan(plan, app.store, reporter)
            finally:
                reporter.close()
        from mlpkg.resolver.lockmake import lock_of_plan

        lock = lock_of_plan(app.store, list(specs), plan, realised=realise)
    write_lock(app, lock, output)
    if app.json:
        app.emit(
            {"file": str(output), "roots": [str(r) for r in lock.roots], "nodes": len(lock.nodes)}
        )


COMMANDS = [lock_cmd]
