"""``mlpkg bundle``: a closure in one file for a machine without network (create, import;
:mod:`mlpkg.cache.bundle`, docs/caches.md "Bundles")."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

import click

from mlpkg.cli.cache_cmds import signing_key
from mlpkg.cli.context import App, common
from mlpkg.cli.store_cmds import human
from mlpkg.errors import BadInput, MlpkgError
from mlpkg.store.path import StorePath


@click.group("bundle")
def bundle() -> None:
    """Offline bundles: a closure, its signatures and its lock in one file."""


@bundle.command("create")
@click.argument("specs", nargs=-1)
@click.option("--lock", "lock_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Bundle the closure of this lockfile (realised first).")  # fmt: skip
@click.option("-o", "--output", required=True, type=Path, help="The bundle file to write.")
@click.option("--key", "key_name", metavar="NAME|FILE",
              help="The secret key that signs (default: signing-key in the config).")  # fmt: skip
@click.option("--allow-external-drift", is_flag=True,
              help="With --lock: accept external tools of other versions.")  # fmt: skip
@common
def create_cmd(
    app: App,
    specs: tuple[str, ...],
    lock_file: Path | None,
    output: Path,
    key_name: str | None,
    allow_external_drift: bool,
) -> None:
    """Write SPECs' closure (or a lock's) with its lock into one bundle file."""
    from mlpkg.cache.bundle import complete_lock, create_bundle

    if bool(specs) == (lock_file is not None):
        raise BadInput("Give SPECs or --lock FILE (one of them) to bundle.")
    key = signing_key(app, key_name)
    if lock_file is not None:
        from mlpkg.resolver.lockmake import read_lock

        _no_overrides(app)
        lock_bytes = _read(lock_file, "lockfile")
        lock = read_lock(lock_file)
        app.realise_lock(lock_file, allow_external_drift)
        complete_lock(app, lock, allow_external_drift)
    else:
        lock = app.lock(specs, realise=True)
        if complete_lock(app, lock):  # build-time inputs a cache let us skip
            lock = app.lock(specs, realise=True)  # now with their archive hashes
        lock_bytes = lock.dumps().encode()
    report = create_bundle(app, output, lock, lock_bytes, key)
    if app.json:
        app.emit(report.to_json())
        return
    signed = f"signed by {report.signed_by}" if report.signed_by else "unsigned"
    app.out(
        f"wrote {output}: {len(report.paths)} paths, {human(report.size)} ({signed}); "
        f"import it with `mlpkg bundle import {output}`."
    )


def _no_overrides(app: App) -> None:
    if app.overrides:
        raise BadInput("--with changes a resolution; a lock is not resolved again.")


def _read(file: Path, what: str) -> bytes:
    try:
        return file.read_bytes()
    except OSError as e:
        raise BadInput(f"Cannot read the {what} {file}: {e.strerror}.", file=str(file)) from None


def _open(file: str) -> IO[bytes]:
    if file == "-":
        return sys.stdin.buffer
    try:
        return open(file, "rb")
    except OSError as e:
        raise BadInput(f"Cannot read the bundle {file}: {e.strerror}.", file=file) from None


@bundle.command("import")
@click.argument("file", metavar="FILE")
@click.option("-o", "--lock-out", "lock_out", type=Path,
              help="Also write the lock here (it is kept in $MLPKG_HOME/bundles).")  # fmt: skip
@click.option("--trust", is_flag=True,
              help="Trust this file: import paths that no trusted key signed.")  # fmt: skip
@click.option("--allow-external-drift", is_flag=True,
              help="Accept external tools of other versions than the lock's.")  # fmt: skip
@common
def import_cmd(
    app: App, file: str, lock_out: Path | None, trust: bool, allow_external_drift: bool
) -> None:
    """Make every path of the bundle FILE ('-': stdin) valid, after checking signatures
    and hashes; then `mlpkg run --lock LOCK` works without network."""
    from mlpkg.cache.bundle_import import import_bundle, keep_lock

    def progress(status: str, path: StorePath) -> None:
        words = {"imported": "imported", "valid": "valid already", "made": "made here"}
        app.info(f"{words.get(status, status)}: {app.store.real_path(path)}")

    _no_overrides(app)
    name = "stdin" if file == "-" else file
    f = _open(file)
    try:
        report = import_bundle(
            app, f, name, trust=trust, allow_drift=allow_external_drift, progress=progress
        )
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    lock_file, root = keep_lock(app, report)
    if lock_out is not None:
        _write_lock(lock_out, report.lock_text)
    where = lock_out or lock_file
    for path in report.not_in_bundle:
        app.warn(f"{path} of the lock is not in the bundle; `--lock` commands would make it.")
    if app.json:
        app.emit(
            {
                "bundle": name,
                "imported": [str(p) for p in report.imported],
                "valid_already": [str(p) for p in report.valid_already],
                "made_here": [str(p) for p in report.made],
                "lock": str(where),
                "root": str(root),
            }
        )
        return
    app.info(
        f"imported {len(report.imported)} paths from {name} ({len(report.valid_already)} "
        f"were valid already); gc root {root}."
    )
    app.out(f"lock: {where}")


def _write_lock(output: Path, text: str) -> None:
    from mlpkg.store.fs import write_atomic

    try:
        write_atomic(output, text)
    except OSError as e:
        bad_path = isinstance(e, FileNotFoundError | NotADirectoryError)
        error = BadInput if bad_path else MlpkgError
        raise error(
            f"Cannot write the lockfile {output}: {e.strerror}.", file=str(output)
        ) from None


COMMANDS = [bundle]
