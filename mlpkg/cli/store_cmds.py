"""Commands about store paths: path-info, why-depends, verify, gc, add-file."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlpkg.cli.context import App, common
from mlpkg.errors import BadInput, RecipeError, StoreError, VerifyError
from mlpkg.store.gc import collect
from mlpkg.store.path import HASH_CHARS, StorePath
from mlpkg.store.store import PathInfo
from mlpkg.store.verify import Remake, verify

if TYPE_CHECKING:
    from mlpkg.recipes.model import Recipe
    from mlpkg.store.locks import FileLock


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
    graph = app.store.reference_graph()
    parent: dict[StorePath, StorePath | None] = {a: None}
    queue = deque([a])
    while queue and b not in parent:
        p = queue.popleft()
        for r in graph.get(p, []):
            if r not in parent:
                parent[r] = p
                queue.append(r)
    if b not in parent:
        if app.json:
            app.emit({"depends": False, "chain": []})
        else:
            app.out(f"{app.store.real_path(a)} does not depend on {app.store.real_path(b)}.")
        return
    chain: list[StorePath] = []
    node: StorePath | None = b
    while node is not None:
        chain.append(node)
        node = parent[node]
    chain.reverse()
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


def _remaker(app: App) -> Callable[[PathInfo], Remake]:
    """How ``verify --repair`` remakes a path: its kind's builder, as realisation does."""
    from mlpkg.build import BuildContext, builder_for
    from mlpkg.resolver.derivation import Derivation
    from mlpkg.resolver.plan import PlanNode
    from mlpkg.resolver.realise import Reporter

    reporter = Reporter()

    def remake(info: PathInfo) -> Remake:
        drv = Derivation.from_json(info.deriver)
        if drv.path != info.path:
            raise VerifyError(f"The recorded derivation of {info.path} does not hash to it.")
        builder = builder_for(drv.kind, drv.name)
        ctx = BuildContext(app.store, reporter, PlanNode(drv, drv.path, "repair"))
        return Remake(builder.maker(drv, ctx), builder.relocatable)

    return remake


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
    result = verify(
        app.store, check_contents=check_contents or repair, repair=_remaker(app) if repair else None
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


def _stage_file(app: App, file: Path) -> tuple[Path, FileLock, str, str]:
    """Copy ``file`` once into a private temporary file under ``partial/``, hashing while
    copying: (the copy, its lock, sha256, md5). The path is made from the copy, so what is
    registered has exactly the hashes its name was computed from, even if ``file``
    changes meanwhile. The copy is locked (``store.locks.locked_temp``): gc removes it
    only once this process is gone. The caller removes it and releases the lock."""
    from mlpkg.store.fs import copy_file
    from mlpkg.store.locks import locked_temp

    try:
        src = open(file, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as e:
        raise BadInput(f"Cannot read {file}: {e.strerror or e}.", file=str(file)) from None
    where = app.store.partial_dir
    sha, md5 = hashlib.sha256(), hashlib.md5()
    staged, lock = None, None
    try:
        with src:
            staged, lock = locked_temp(where, "add-file")
            with open(staged, "r+b") as out:
                copy_file(src, out, sha, md5)
    except BaseException as e:
        if staged is not None:
            staged.unlink(missing_ok=True)
        if lock is not None:
            lock.release()
        if isinstance(e, OSError):  # a full disk, say: one sentence naming the directory
            raise StoreError(f"Cannot copy {file} into {where}: {e.strerror or e}.") from None
        raise
    return staged, lock, sha.hexdigest(), md5.hexdigest()


def _recipe_for_file(app: App, name: str, version: str, sha: str, md5: str, file: Path) -> Recipe:
    """The fetch recipe name@version if there is one (checked against the file), else a
    flat fixed-output recipe for the file's sha256."""
    from mlpkg.recipes.model import Recipe, Source

    try:
        canonical = app.index.canonical_name(name)
        files = [f for f in app.index.files(canonical) if f.version == version]
    except BadInput:
        files = []
    if not files:
        from pydantic import ValidationError

        try:
            return Recipe(
                name=name,
                version=version,
                kind="fetch",
                source=Source(urls=[file.absolute().as_uri()], sha256=sha),
            )
        except ValidationError as e:
            err = e.errors()[0]
            field = "--name" if err["loc"] and err["loc"][0] == "name" else "--version"
            msg = err["msg"].removeprefix("Value error, ")
            raise BadInput(f"add-file {field}: {msg}.", field=field) from None
    recipe = app.index.load(files[0])
    src = recipe.source
    if recipe.kind != "fetch" or src is None:
        raise RecipeError(
            f"{recipe.spec} is a {recipe.kind} recipe; add-file needs a fetch recipe."
        )
    if (src.sha256 and src.sha256 != sha) or (not src.sha256 and src.md5 != md5):
        want = f"sha256 {src.sha256}" if src.sha256 else f"md5 {src.md5}"
        got = f"sha256 {sha}" if src.sha256 else f"md5 {md5}"
        raise BadInput(
            f"{file} does not match recipe {recipe.spec}: it has {got}, the recipe "
            f"declares {want}.",
            package=recipe.name,
        )
    return recipe


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
    from mlpkg.build.fetch import unpack_local
    from mlpkg.resolver.derivation import Derivation, current_platform

    if file.is_dir():
        _add_directory(app, file, name, version)
        return
    staged, lock, sha, md5 = _stage_file(app, file)
    url = file.absolute().as_uri()
    try:
        recipe = _recipe_for_file(app, name, version, sha, md5, file)
        drv = Derivation(recipe, {}, current_platform())
        info = app.store.info(drv.path)
        if info is None:
            info = app.store.realise(
                drv.path,
                lambda tmp: {**unpack_local(recipe, staged, tmp, sha, str(file)), "url": url},
                kind="fetch",
                recipe_hash=drv.recipe_hash,
                deriver=drv.to_json(),
                relocatable=False,
            )
    finally:
        staged.unlink(missing_ok=True)
        lock.release()
    real = str(app.store.real_path(drv.path))
    if app.json:
        app.emit({**_info_json(app, info, None), "sha256": sha})
    else:
        app.out(real)


def _check_tree(root: Path) -> None:
    """Refuse what a safe unpack refuses (invariant 5): links that are absolute or lead
    out of ``root``, and anything but files, directories and links."""
    import stat

    top = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = os.readlink(path)
                inside = os.path.realpath(path).startswith(top + os.sep)
                if os.path.isabs(target) or not inside:
                    raise BadInput(
                        f"{path} links to {target}, outside the directory being added.",
                        file=str(path),
                    )
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise BadInput(
                    f"{path} is not a file, a directory or a link; it cannot be added.",
                    file=str(path),
                )


def _add_directory(app: App, directory: Path, name: str, version: str) -> None:
    """``add-file DIR``: realise NAME@VERSION, a network build, from a local copy."""
    import shutil

    from mlpkg.build.script import check_expected
    from mlpkg.resolver.realise import runtime_references

    plan = app.plan([f"{name}@=={version}"])
    drv = plan.node(plan.roots[0]).drv
    build = drv.recipe.build
    if drv.kind != "build" or build is None or not build.network:
        raise BadInput(
            f"{drv.recipe.spec} is not a recipe that downloads its content (a build with "
            "network = true); add-file takes a directory only for those.",
            package=drv.name,
        )

    missing = [rel for rel in build.expect if not os.path.lexists(directory / rel)]
    if missing:
        raise BadInput(
            f"{directory} is not a copy of {drv.recipe.spec}: it has no {missing[0]}, which "
            "the recipe expects.",
            file=str(directory),
            package=drv.name,
        )
    _check_tree(directory)
    references = runtime_references(drv)
    if any(plan.node(p).action != "valid" for p in references):  # must be valid first
        from mlpkg.resolver.plan import Plan
        from mlpkg.resolver.realise import realise_plan

        needed = [n for n in plan.nodes if n.path != drv.path]
        reporter = app.reporter()
        try:
            realise_plan(Plan(needed, [n.path for n in needed]), app.store, reporter)
        finally:
            reporter.close()
    if app.store.info(drv.path) is not None:
        app.info(f"{drv.recipe.spec} is valid already; {directory} was not needed")
    else:
        app.info(f"adding {directory} as {drv.recipe.spec}")

    def copy(tmp: Path) -> dict[str, object]:
        check_expected(drv, directory)
        shutil.copytree(directory, tmp, symlinks=True)
        return {"imported": directory.absolute().as_uri()}

    info = app.store.info(drv.path) or app.store.realise(
        drv.path,
        copy,
        kind="build",
        recipe_hash=drv.recipe_hash,
        deriver=drv.to_json(),
        references=references,
    )
    real = str(app.store.real_path(drv.path))
    if app.json:
        app.emit(_info_json(app, info, None))
    else:
        app.out(real)


COMMANDS = [path_info_cmd, why_depends_cmd, verify_cmd, gc_cmd, add_file_cmd]
