"""Commands about store paths: path-info, why-depends, verify, gc, add-file."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import click

from mlpkg.cli.context import App, common
from mlpkg.errors import BadInput, VerifyError
from mlpkg.store.gc import collect
from mlpkg.store.path import HASH_CHARS, StorePath
from mlpkg.store.store import PathInfo
from mlpkg.store.verify import verify


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def resolve_path(app: App, arg: str) -> StorePath:
    """A store path from a path, a base name, or a spec (resolved to its store path)."""
    looks_like_path = "/" in arg or (
        len(arg) > HASH_CHARS and arg[HASH_CHARS] == "-" and "@" not in arg
    )
    if looks_like_path:
        path = app.store.parse_path(arg)
    else:
        plan = app.plan([arg])
        path = plan.roots[0]
    if not app.store.is_valid(path):
        raise BadInput(f"{path} is not a valid store path (realise it with `mlpkg build`).")
    return path


def _info_json(app: App, info: PathInfo, closure_size: int | None) -> dict[str, Any]:
    doc = info.to_json()
    doc["real_path"] = str(app.store.real_path(info.path))
    if closure_size is not None:
        doc["closure_size"] = closure_size
    return doc


@click.command("path-info")
@click.argument("targets", nargs=-1)
@click.option("--closure", "-r", is_flag=True, help="Include everything the paths reference.")
@click.option("--size", "-S", is_flag=True, help="Show closure sizes.")
@click.option("--profile", help="The paths of a profile's current generation.")
@common
def path_info_cmd(
    app: App, targets: tuple[str, ...], closure: bool, size: bool, profile: str | None
) -> None:
    """Show what the store knows of paths (given as paths or specs, or --profile P)."""
    paths = [resolve_path(app, t) for t in targets]
    if profile is not None:
        from mlpkg.env.profiles import Profile

        paths += Profile(app.store, profile).require_current().roots
    if not paths:
        raise BadInput("Give paths, specs or --profile.")
    shown = sorted(app.store.closure(paths)) if closure else paths
    docs = []
    for p in shown:
        info = app.store.info(p)
        assert info is not None
        csize = None
        if size:
            csize = sum((app.store.info(q) or info).size for q in app.store.closure([p]))
        docs.append(_info_json(app, info, csize))
    if app.json:
        app.emit(docs)
        return
    for d in docs:
        line = f"{d['real_path']}  {human(d['size'])}"
        if size:
            line += f"  closure {human(d['closure_size'])}"
        app.out(line)
        if app.verbose:
            app.out(f"  {d['archive_hash']}  refs: {', '.join(d['references']) or '-'}")


@click.command("why-depends")
@click.argument("package")
@click.argument("dependency")
@common
def why_depends_cmd(app: App, package: str, dependency: str) -> None:
    """Show the chain of references by which PACKAGE depends on DEPENDENCY."""
    from mlpkg.resolver.derivation import Derivation

    a, b = resolve_path(app, package), resolve_path(app, dependency)
    chain = app.store.reference_chain(a, b)
    if not chain:
        if app.json:
            app.emit({"depends": False, "chain": []})
        else:
            app.out(f"{app.store.real_path(a)} does not depend on {app.store.real_path(b)}.")
        return
    if app.json:
        app.emit({"depends": True, "chain": [str(p) for p in chain]})
        return
    app.out(str(app.store.real_path(chain[0])))
    for depth, (prev, p) in enumerate(itertools.pairwise(chain), 1):
        info = app.store.info(prev)
        inputs = Derivation.from_json(info.deriver).inputs if info else {}
        keys = [k for k, v in inputs.items() if v == p]
        via = f" (input {keys[0]})" if keys else ""
        app.out(f"{'  ' * depth}└── {app.store.real_path(p)}{via}")


@click.command("verify")
@click.option(
    "--check-contents",
    is_flag=True,
    help="Re-hash every path and compare; check every entry's mode and owner.",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Fix wrong modes and owners in place; remake paths that are missing or modified.",
)
@common
def verify_cmd(app: App, check_contents: bool, repair: bool) -> None:
    """Check the store against its database."""
    from mlpkg.build.repair import remaker

    result = verify(
        app.store,
        check_contents=check_contents or repair,
        repair=remaker(app.store) if repair else None,
    )
    if app.json:
        app.emit(
            {
                "checked": result.checked,
                "ok": result.ok,
                "problems": [p.to_json() for p in result.problems],
            }
        )
    else:
        for p in result.problems:
            app.out(("repaired: " if p.repaired else "") + p.message)
        app.info(f"checked {result.checked} paths, {len(result.problems)} problems.")
    if not result.ok:
        bad = [p for p in result.problems if not p.repaired and p.kind != "debris"]
        raise VerifyError(
            f"The store has {len(bad)} broken path{'s' if len(bad) != 1 else ''}: {bad[0].message}",
            hint="`mlpkg verify --repair` repairs them.",
        )


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="List what would be deleted.")
@click.option("--downloads", is_flag=True, help="Also empty the download cache.")
@click.option(
    "--delete-older-than",
    "older_than",
    metavar="AGE",
    help="First wipe profile generations older than AGE (30d, 12h, ...).",
)
@common
def gc_cmd(app: App, dry_run: bool, downloads: bool, older_than: str | None) -> None:
    """Delete store paths that no root (gcroots/, profile generations, a running mlpkg)
    reaches."""
    if older_than is not None and not dry_run:
        from mlpkg.env.profiles import Profile, parse_age, profiles

        age = parse_age(older_than)
        for name in profiles(app.store):
            profile = Profile(app.store, name)
            with profile.locked():
                wiped = profile.wipe_history(age)
            if wiped:
                app.info(f"profile {name}: wiped generations {', '.join(map(str, wiped))}")
    # The cache first: on a full disk, the space it frees may be what the database needs.
    cache_freed = app.store.downloads.clear() if downloads and not dry_run else 0
    result = collect(app.store, dry_run=dry_run)
    if app.json:
        app.emit({**result.to_json(), "dry_run": dry_run, "downloads_freed_bytes": cache_freed})
        return
    verb = "would delete" if dry_run else "deleted"
    for entry in result.deleted:
        app.out(f"{verb} {app.store.dir / entry}")
    app.info(
        f"{verb} {len(result.deleted)} entries, {'freeing' if not dry_run else 'to free'} "
        f"{human(result.freed)}; {result.kept} paths kept."
    )
    if downloads and not dry_run:
        app.info(f"emptied the download cache: {human(cache_freed)} freed.")


@click.command("add-file")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="Package name of the fixed-output path.")
@click.option("--version", "version", required=True, help="Its version.")
@common
def add_file_cmd(app: App, file: Path, name: str, version: str) -> None:
    """Add a local FILE as the fixed-output path a recipe expects (for licensed or offline
    artifacts): afterwards, builds needing NAME@VERSION use it without downloading.

    FILE may be a directory for a recipe that downloads its content (``network = true``,
    e.g. a dataset assembled by its upstream procedure): the directory becomes that
    recipe's path, after the paths its recipe expects are checked."""
    from mlpkg.build.addfile import add_directory, add_file

    if file.is_dir():
        info = add_directory(app, file, name, version, app.info)
        doc = _info_json(app, info, None)
    else:
        info, sha = add_file(app, file, name, version)
        doc = {**_info_json(app, info, None), "sha256": sha}
    if app.json:
        app.emit(doc)
    else:
        app.out(doc["real_path"])


COMMANDS = [path_info_cmd, why_depends_cmd, verify_cmd, gc_cmd, add_file_cmd]
