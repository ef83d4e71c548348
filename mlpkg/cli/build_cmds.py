"""Commands that resolve specs: build, install, show, search.

``build`` and ``install`` first ask the plan cache: when it holds the specs' plan and
every path in it is valid, there is nothing to do and no recipe is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mlpkg.cli.context import App, F, common
from mlpkg.errors import BadInput
from mlpkg.store.path import StorePath


def print_plan(app: App, doc: dict[str, Any]) -> None:
    groups = {
        "substitute": "will be substituted",
        "fetch": "will be fetched",
        "link": "will be linked",
        "install": "will be installed",
        "build": "will be built",
    }
    for action, words in groups.items():
        nodes = [n for n in doc["nodes"] if n["action"] == action]
        if nodes:
            app.out(f"these {len(nodes)} paths {words}:")
            for n in nodes:
                network = "  (network = true: reaches the network)" if n.get("network") else ""
                via = f"  (from {n['substituter']})" if n.get("substituter") else ""
                app.out(f"  {app.store.dir / n['path']}{network}{via}")
    skipped = doc["counts"].get("skip", 0)
    if skipped:
        app.out(f"{skipped} paths are not needed: only builds that a cache replaces use them.")
    app.out(f"{doc['counts']['valid']} of {len(doc['nodes'])} paths are valid already.")
    print_python_choice(app, doc.get("python"))


def print_python_choice(app: App, why: dict[str, Any] | None) -> None:
    """The closure's interpreter, why it was chosen, and what excluded the others."""
    if not why:
        return
    made = "built from source" if why["built"] else "this machine's"
    app.out(f"python {why['chosen']} ({made}): {why['reason']}.")
    for version, because in why["excluded"].items():
        app.out(f"  not python {version}: {'; '.join(because) or 'preferred less'}")


def realise(
    app: App, specs: tuple[str, ...], dry_run: bool, lock: LockOptions | None = None
) -> dict[str, Any]:
    """``--lock FILE`` or SPECS, realised by the session (unless ``dry_run``): the plan."""
    if lock is not None and lock.file is not None:
        if specs:
            raise BadInput("Give specs or --lock FILE, not both.")
        return app.realise_lock(lock.file, lock.allow_external_drift, dry_run)
    return app.realise(specs, dry_run)


def _emit_result(app: App, doc: dict[str, Any], dry_run: bool, roots: dict[str, str]) -> None:
    paths = [str(app.store.dir / r) for r in doc["roots"]]
    if app.json:
        app.emit({"plan": doc, "dry_run": dry_run, "paths": paths, "roots": roots})
    elif dry_run:
        print_plan(app, doc)
    else:
        for p in paths:
            app.out(p)


@dataclass
class LockOptions:
    file: Path | None
    allow_external_drift: bool


def lock_options(func: F) -> F:
    func = click.option(
        "--allow-external-drift",
        is_flag=True,
        help="With --lock: accept external tools of other versions.",
    )(func)
    return click.option(
        "--lock",
        "lock_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Realise exactly the plan of this lockfile.",
    )(func)


def run_check(app: App, specs: tuple[str, ...], rounds: int) -> None:
    """``build --check``: rebuild the (valid) roots and compare their bytes."""
    from mlpkg.resolver.check import check
    from mlpkg.resolver.realise import Reporter

    plan = app.plan(specs)
    results = []
    for root in plan.roots:
        drv = plan.node(root).drv
        app.info(f"checking {root} ({rounds} round{'s' if rounds > 1 else ''})")
        results.append(check(drv, app.store, app.reporter() if app.verbose else Reporter(), rounds))
    if app.json:
        app.emit([r.to_json() for r in results])
    for r in results:
        rounds_text = f"{r.rounds} round{'s' if r.rounds > 1 else ''}"
        app.out(f"{app.store.dir / r.path}: reproducible ({rounds_text}, {r.recorded})")


@click.command("build")
@click.argument("specs", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Print the plan (what is valid, fetched, built).")
@click.option("--root", "root_name", help="Register the (first) result as gcroots/NAME.")
@click.option(
    "--check",
    "check_",
    is_flag=True,
    help="Rebuild valid paths and compare the bytes (names the first difference).",
)
@click.option("--rounds", type=click.IntRange(1), default=1, help="With --check: rebuilds.")
@lock_options
@common
def build_cmd(
    app: App,
    specs: tuple[str, ...],
    dry_run: bool,
    root_name: str | None,
    check_: bool,
    rounds: int,
    lock_file: Path | None,
    allow_external_drift: bool,
) -> None:
    """Realise SPECS (or a lockfile) and print their store paths."""
    if check_:
        if lock_file is not None or dry_run:
            raise BadInput(
                "--check rebuilds valid paths of SPECS; it takes no --lock or --dry-run."
            )
        run_check(app, specs, rounds)
        return
    doc = realise(app, specs, dry_run, LockOptions(lock_file, allow_external_drift))
    roots = {}
    if root_name and not dry_run:
        roots[root_name] = str(app.store.add_root(root_name, StorePath.parse(doc["roots"][0])))
    _emit_result(app, doc, dry_run, roots)


@click.command("install")
@click.argument("specs", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Print the plan without acting.")
@click.option(
    "--profile",
    "profile_name",
    default="default",
    show_default=True,
    help="The profile that gets a new generation.",
)
@lock_options
@common
def install_cmd(app: App, specs: tuple[str, ...], dry_run: bool, profile_name: str,
                lock_file: Path | None, allow_external_drift: bool) -> None:  # fmt: skip
    """Realise SPECS (or a lockfile) and add them to a profile (a new generation; the
    profile's other packages stay, resolved together with the new ones)."""
    from mlpkg.env.profiles import Profile

    profile = Profile(app.store, profile_name)
    options = LockOptions(lock_file, allow_external_drift)
    if dry_run:
        _emit_result(app, realise(app, specs, True, options), True, {})
        return
    with profile.locked():
        current = profile.current()
        if lock_file is not None:
            doc = realise(app, specs, False, options)
            from mlpkg.resolver.lockmake import read_lock

            wanted = read_lock(lock_file).specs
        else:
            wanted = app.merge_specs(current.specs if current else [], specs)
            doc = realise(app, tuple(wanted), False)
        gen = profile.add_generation(wanted, [StorePath.parse(r) for r in doc["roots"]])
    app.info(f"profile {profile.name}: generation {gen.number} ({', '.join(gen.specs)})")
    _emit_result(app, doc, False, {"profile": profile.name, "generation": str(gen.number)})


def _overrides_applied(app: App, plan: Any) -> dict[str, list[str]]:
    """Where each ``--with`` replaced an input, among the nodes of ``plan``."""
    overrides = app.provider.overrides
    if overrides is None:
        return {}
    chosen = {f"{n.drv.name}@{n.drv.version}" for n in plan.nodes}
    return {
        name: sorted({p for p in places if p.split(" ")[0] in chosen})
        for name, places in overrides.applied.items()
    }


@click.command("show")
@click.argument("spec")
@common
def show_cmd(app: App, spec: str) -> None:
    """Show the recipe SPEC resolves to, its inputs and its store path."""
    plan = app.plan([spec])
    node = plan.node(plan.roots[0])
    recipe = node.drv.recipe
    doc: dict[str, Any] = {
        "name": recipe.name,
        "version": node.drv.version,
        "kind": recipe.kind,
        "summary": recipe.summary,
        "aliases": recipe.aliases,
        "versions": [rf.version for rf in app.index.files(recipe.name)],
        "variants": recipe.selected or sorted(recipe.variants),
        "path": str(app.store.real_path(node.path)),
        "valid": node.action == "valid",
        "inputs": {k: str(app.store.real_path(v)) for k, v in sorted(node.drv.inputs.items())},
        "recipe_hash": node.drv.recipe_hash,
        "closure": len(plan.nodes),
        "overrides": _overrides_applied(app, plan),
        "python": plan.python,
    }
    if recipe.source is not None:
        doc.update(urls=recipe.source.urls, sha256=recipe.source.sha256, md5=recipe.source.md5)
    if recipe.build is not None and recipe.build.network:
        doc["network"] = "needed: this build downloads what no checksum pins in advance"
    if recipe.app is not None:
        doc["source"] = f"{recipe.app.located} ({recipe.app.digest})"
    if recipe.run is not None:
        doc["run"] = " ".join(recipe.run.command)
    if app.json:
        app.emit(doc)
        return
    summary = f": {recipe.summary}" if recipe.summary else ""
    app.out(f"{recipe.name} {node.drv.version} ({recipe.kind}){summary}")
    keys = (
        "aliases",
        "versions",
        "variants",
        "path",
        "valid",
        "recipe_hash",
        "closure",
        "urls",
        "sha256",
        "md5",
        "network",
        "source",
        "run",
    )
    for key in keys:
        value = doc.get(key)
        if value not in (None, [], ""):
            app.out(f"  {key}: {', '.join(value) if isinstance(value, list) else value}")
    for key, path in doc["inputs"].items():
        app.out(f"  input {key}: {path}")
    for name, places in doc["overrides"].items():
        app.out(f"  --with {name}={app.overrides.get(name, '')} applied to: {', '.join(places)}")
    print_python_choice(app, plan.python)


@click.command("search")
@click.argument("term", required=False, default="")
@common
def search_cmd(app: App, term: str) -> None:
    """List packages whose name, alias or summary contains TERM."""
    needle = term.lower()
    rows = []
    for name in app.index.names():
        files = app.index.files(name)
        if not files:
            continue
        newest = app.index.load(files[0])
        if needle in " ".join([name, *newest.aliases, newest.summary]).lower():
            rows.append(
                {
                    "name": name,
                    "versions": [f.version for f in files],
                    "kind": newest.kind,
                    "aliases": newest.aliases,
                    "summary": newest.summary,
                }
            )
    if app.json:
        app.emit(rows)
        return
    if not rows:
        app.info(f"No package matches '{term}'.")
    for row in rows:
        aka = f" (alias {', '.join(row['aliases'])})" if row["aliases"] else ""
        app.out(f"{row['name']} [{', '.join(row['versions'])}]{aka}  {row['summary']}")


COMMANDS = [build_cmd, install_cmd, show_cmd, search_cmd]
