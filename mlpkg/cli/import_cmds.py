"""``mlpkg import pypi``: recipes for Python packages from a package index."""

from __future__ import annotations

import re
from pathlib import Path

import click

from mlpkg.cli.context import App, common
from mlpkg.errors import ExternalNotFound, UnknownPackage


def bundled_overrides() -> Path:
    """The overrides shipped with the recipe collection."""
    from mlpkg.recipes.index import bundled_dir

    return bundled_dir() / "_import" / "pypi-overrides.toml"


def _target(app: App, python: str) -> object:
    """The importer's Target for ``python``: a spec of the package ``python``, or a bare
    version (``3.9``). The machine's probed interpreter when it matches; else CPython of a
    ``python`` recipe that builds it from source (its version), described without running
    it; else, for a version, CPython of that version as it would be built here."""
    from mlpkg.importer import Target
    from mlpkg.resolver.spec import parse_spec

    spec = parse_spec(f"python@{python}" if python[:1].isdigit() else python)
    name, candidates, missing = spec.name, [], None
    try:
        name = app.provider.canonical_name(spec.name)
        candidates = list(app.provider.candidates(name))
    except UnknownPackage:
        pass
    except ExternalNotFound as exc:  # the machine's python: said if nothing else fits
        missing = exc
    for cand in candidates:
        detected = cand.detected
        if detected is not None and detected.tags and spec.matches(cand.version):
            info = detected.info
            return Target.for_interpreter(str(info["version"]), detected.tags, info["markers"])
    for cand in sorted(candidates, key=lambda c: c.version, reverse=True):
        built = cand.detected is None and cand.recipe.kind == "build" and name == "python"
        if built and spec.matches(cand.version):
            return Target.for_built_cpython(str(cand.version))
    version = str(spec.version) if spec.version is not None else ""
    if name == "python" and re.fullmatch(r"3\.\d+(\.\d+)?", version):
        return Target.for_built_cpython(version)
    raise missing or ExternalNotFound(f"No Python interpreter matches '{python}'.", package=python)


@click.group("import")
def import_group() -> None:
    """Write recipes from another package ecosystem."""


@import_group.command("pypi")
@click.argument("requirements", nargs=-1, required=True)
@click.option(
    "--into",
    type=click.Path(file_okay=False, path_type=Path),
    help="Recipe directory to write (default: $MLPKG_HOME/recipes, searched by default).",
)
@click.option("--index-url", help="The package index (default: the one pip is configured with).")
@click.option(
    "--python",
    "pythons",
    multiple=True,
    default=("python",),
    show_default=True,
    help="An interpreter the wheels must fit (repeatable: one recipe per release lists a "
    "wheel for each): a spec of the python package (python@3.9) or a version (3.9).",
)
@click.option(
    "--overrides",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A TOML file of facts the metadata gets wrong (extra requirements, aliases); "
    "default: the bundled recipes/_import/pypi-overrides.toml.",
)
@common
def pypi_cmd(app: App, requirements: tuple[str, ...], into: Path | None, index_url: str | None,
             pythons: tuple[str, ...], overrides: Path | None) -> None:  # fmt: skip
    """Write wheel recipes for REQUIREMENTS (e.g. onnxruntime==1.17.3) and everything they
    depend on, choosing for each the wheel that fits the interpreter (or, with several
    --python, each interpreter: a release chosen for more than one lists their wheels as
    [[wheel.files]])."""
    from mlpkg.importer import Overrides, import_packages, index_url_from_environment
    from mlpkg.store.http import new_client

    targets = [_target(app, python) for python in pythons]
    into = into or app.home / "recipes"
    into.mkdir(parents=True, exist_ok=True)
    with new_client(timeout=60) as c:
        written = import_packages(
            list(requirements), targets,  # type: ignore[arg-type]
            index_url=index_url or index_url_from_environment(), client=c, into=into,
            overrides=Overrides.load(overrides or bundled_overrides()), on_progress=app.debug,
        )  # fmt: skip
    if app.json:
        app.emit({"into": str(into), "written": [str(p) for p in written]})
        return
    for path in written:
        app.out(str(path))
    app.info(f"{len(written)} recipe files written to {into}.")


COMMANDS = [import_group]
