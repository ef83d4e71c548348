"""Commands about binary caches: push (and the ``cache`` group; docs/caches.md)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlpkg.cli.context import App, common
from mlpkg.cli.store_cmds import human, resolve_path
from mlpkg.errors import BadInput
from mlpkg.store.path import HASH_CHARS, StorePath

if TYPE_CHECKING:
    from mlpkg.cache.keys import SecretKey


def _is_path(arg: str) -> bool:
    return "/" in arg or (len(arg) > HASH_CHARS and arg[HASH_CHARS] == "-" and "@" not in arg)


def push_roots(app: App, args: tuple[str, ...], lock_file: Path | None) -> list[StorePath]:
    """The store paths to push: paths as given, specs and a lock realised first."""
    roots: list[StorePath] = []
    if lock_file is not None:
        doc = app.realise_lock(lock_file)
        roots += [StorePath.parse(r) for r in doc["roots"]]
    specs = [a for a in args if not _is_path(a)]
    if specs:
        doc = app.realise(specs)
        roots += [StorePath.parse(r) for r in doc["roots"]]
    roots += [resolve_path(app, a) for a in args if _is_path(a)]
    if not roots:
        raise BadInput("Give what to push: SPECs, store PATHs or --lock FILE.")
    return roots


def signing_key(app: App, name: str | None) -> SecretKey | None:
    """The key ``--key`` names, else the config's ``signing-key``; None (with a warning)
    when neither is set."""
    from mlpkg.cache.keys import load_signing_key

    name = name or app.config.signing_key
    if name is None:
        app.warn(
            "no signing key (--key NAME, or signing-key in the config): the info files are "
            "unsigned, and only a substituter marked trusted=true takes them."
        )
        return None
    return load_signing_key(app.home, name)


class _PushProgress:
    """A rich progress line of the bytes uploaded (when stderr is a terminal, without -q)."""

    def __init__(self, app: App, url: str) -> None:
        self.app, self.url = app, url
        self.bar: Any = None
        self.lock = threading.Lock()

    def __enter__(self) -> _PushProgress:
        if self.app.interactive:
            from rich.progress import (
                DownloadColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TransferSpeedColumn,
            )

            columns = (SpinnerColumn(), TextColumn("{task.description}"), DownloadColumn())
            self.bar = Progress(*columns, TransferSpeedColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(f"pushing to {self.url}", total=None)
        return self

    def __call__(self, what: str, n: int) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


@click.command("push")
@click.argument("args", nargs=-1, metavar="SPEC|PATH...")
@click.option("--to", "url", required=True, metavar="URL",
              help="The cache: file://DIR, http(s)://URL (PUT), s3://BUCKET/PREFIX.")  # fmt: skip
@click.option("--lock", "lock_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Push the closure of a lockfile's roots (realised first).")  # fmt: skip
@click.option("--key", "key_name", metavar="NAME|FILE",
              help="The secret key that signs (default: signing-key in the config).")  # fmt: skip
@click.option("--jobs", default=8, show_default=True, help="Uploads at once.")
@common
def push_cmd(
    app: App,
    args: tuple[str, ...],
    url: str,
    lock_file: Path | None,
    key_name: str | None,
    jobs: int,
) -> None:
    """Upload the closures of SPECs, PATHs or a lock's roots to a binary cache."""
    from mlpkg.cache.push import push
    from mlpkg.cache.transport import open_transport

    if jobs < 1:
        raise BadInput("--jobs must be at least 1.")
    key = signing_key(app, key_name)
    roots = push_roots(app, args, lock_file)
    with open_transport(url) as transport, _PushProgress(app, transport.url) as progress:
        report = push(app.store, transport, roots, key, jobs=jobs, progress=progress)
    if app.json:
        app.emit(report.to_json())
        return
    app.out(
        f"pushed {len(report.pushed)} paths to {report.cache} ({len(report.present)} were "
        f"there): {report.objects_uploaded} objects, {human(report.bytes_uploaded)} "
        f"uploaded; {report.objects_present} objects were there already."
    )


COMMANDS = [push_cmd]
