"""Commands that resolve specs: build, install, show, search."""

from __future__ import annotations

from typing import Any

import click

from mlpkg.cli.context import App, common
from mlpkg.errors import BadInput
from mlpkg.resolver.plan import Plan
from mlpkg.resolver.realise import realise_plan
from mlpkg.store.db import PathInfo


def print_plan(app: App, plan: Plan) -> None:
    groups = {"fetch": "will be fetched", "link": "will be linked", "build": "will be built"}
    for action, words in groups.items():
        nodes = [n for n in plan.nodes if n.action == action]
        if nodes:
            app.out(f"these {len(nodes)} paths {words}:")
            for n in nodes:
                app.out(f"  {app.store.real_path(n.path)}")
    valid = plan.counts()["valid"]
    app.out(f"{valid} of {len(plan.nodes)} paths are valid already.")


def realise(app: App, specs: tuple[str, ...], dry_run: bool) -> tuple[Plan, list[PathInfo]]:
    if not specs:
        raise BadInput("Give at least one spec, e.g. `mlpkg build hello`.")
    plan = app.plan(specs)
    if dry_run:
        return plan, []
    if not plan.pending():
        return plan, [i for i in map(app.store.info, plan.roots) if i is not None]
    reporter = app.reporter()
    try:
        infos = realise_plan(plan, app.store, reporter)
    finally:
        reporter.close()
    return plan, infos


def _emit_result(app: App, plan: Plan, dry_run: bool, roots: dict[str, str]) -> None:
    if app.json:
        doc: dict[str, Any] = {"plan": plan.to_json(), "dry_run": dry_run}
        doc["paths"] = [str(app.store.real_path(p)) for p in plan.roots]
        doc["roots"] = roots
        app.emit(doc)
    elif dry_run:
        print_plan(app, plan)
    else:
        for p in plan.roots:
            app.out(str(app.store.real_path(p)))


@click.command("build")
@click.argument("specs", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Print the plan (what is valid, fetched, built).")
@click.option("--root", "root_name", help="Register the (first) result as gcroots/NAME.")
@common
def build_cmd(app: App, specs: tuple[str, ...], dry_run: bool, root_name: str | None) -> None:
    """Realise SPECS and print their store paths."""
    plan, _ = realise(app, specs, dry_run)
    roots = {}
    if root_name and not dry_run:
        roots[root_name] = str(app.store.add_root(root_name, plan.roots[0]))
    _emit_result(app, plan, dry_run, roots)


@click.command("install")
@click.argument("specs", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Print the plan without acting.")
@common
def install_cmd(app: App, specs: tuple[str, ...], dry_run: bool) -> None:
    """Realise SPECS and keep them: each becomes a root (gcroots/installed/NAME)."""
    plan, _ = realise(app, specs, dry_run)
    roots: dict[str, str] = {}
    if not dry_run:
        (app.store.gcroots_dir / "installed").mkdir(exist_ok=True)
        for p in plan.roots:
            name = plan.node(p).drv.name
            roots[name] = str(app.store.add_root(f"installed/{name}", p))
    _emit_result(app, plan, dry_run, roots)


@click.command("show")
@click.argument("spec")
@common
def show_cmd(app: App, spec: str) -> None:
    """Show the recipe SPEC resolves to, its inputs and its store path."""
    plan = app.plan([spec])
    node = plan.node(plan.roots[0])
    recipe = node.drv.recipe
    versions = [rf.version for rf in app.index.files(recipe.name)]
    doc: dict[str, Any] = {
        "name": recipe.name,
        "version": node.drv.version,
        "kind": recipe.kind,
        "summary": recipe.summary,
        "aliases": recipe.aliases,
        "versions": versions,
        "path": str(app.store.real_path(node.path)),
        "valid": node.action == "valid",
        "inputs": {k: str(app.store.real_path(v)) for k, v in sorted(node.drv.inputs.items())},
        "recipe_hash": node.drv.recipe_hash,
        "closure": len(plan.nodes),
    }
    if recipe.source is not None:
        doc["urls"] = recipe.source.urls
        doc["sha256"] = recipe.source.sha256
        doc["md5"] = recipe.source.md5
    if app.json:
        app.emit(doc)
        return
    app.out(f"{recipe.name} {node.drv.version} ({recipe.kind})" + (f": {recipe.summary}" if recipe.summary else ""))
    for key in ("aliases", "versions", "path", "valid", "recipe_hash", "closure", "urls", "sha256", "md5"):
        value = doc.get(key)
        if value not in (None, [], ""):
            app.out(f"  {key}: {', '.join(value) if isinstance(value, list) else value}")
    for key, path in doc["inputs"].items():
        app.out(f"  input {key}: {path}")


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
        hay = " ".join([name, *newest.aliases, newest.summary]).lower()
        if needle in hay:
            rows.append({"name": name, "versions": [f.version for f in files],
                         "kind": newest.kind, "aliases": newest.aliases,
                         "summary": newest.summary})  # fmt: skip
    if app.json:
        app.emit(rows)
        return
    if not rows:
        app.info(f"No package matches '{term}'.")
    for row in rows:
        aka = f" (alias {', '.join(row['aliases'])})" if row["aliases"] else ""
        app.out(f"{row['name']} [{', '.join(row['versions'])}]{aka}  {row['summary']}")


COMMANDS = [build_cmd, install_cmd, show_cmd, search_cmd]
