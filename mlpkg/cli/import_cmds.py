"""``mlpkg import pypi``: recipes for Python packages from a package index."""

from __future__ import annotations

from pathlib import Path

import click

from mlpkg.cli.context import App, common
from mlpkg.errors import ExternalNotFound


def bundled_overrides() -> Path:
    """The overrides shipped with the recipe collection."""
    from mlpkg.recipes.index import bundled_dir

    return bundled_dir() / "_import" / "pypi-overrides.toml"


def _target(app: App, python: str) -> object:
    """The importer's Target for the interpreter ``python`` (a spec) resolves to."""
    from mlpkg.importer import Target
    from mlpkg.resolver.spec import parse_spec

    spec = parse_spec(python)
    name = app.provider.canonical_name(spec.name)
    for cand in app.provider.candidates(name):
        detected = cand.detected
        if detected is not None and detected.tags and spec.matches(cand.version):
            info = detected.info
            return Target.for_interpreter(str(info["version"]), detected.tags, info["markers"])
    raise ExternalNotFound(f"No probed Python interpreter matches '{python}'.", package=python)


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
    "python",
    default="python",
    show_default=True,
    help="The interpreter (a spec of a probed external) the wheels must fit.",
)
@click.option(
    "--overrides",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A TOML file of facts the metadata gets wrong (extra requirements, aliases); "
    "default: the bundled recipes/_import/pypi-overrides.toml.",
)
@common
def pypi_cmd(app: App, requirements: tuple[str, ...], into: Path | None, index_url: str | None,
             python: str, overrides: Path | None) -> None:  # fmt: skip
    """Write wheel recipes for REQUIREMENTS (e.g. onnxruntime==1.17.3) and everything they
    depend on, choosing for each the wheel that fits the interpreter."""
    from mlpkg.importer import Overrides, import_packages, index_url_from_environment
    from mlpkg.store.http import new_client

    target = _target(app, python)
    into = into or app.home / "recipes"
    into.mkdir(parents=True, exist_ok=True)
    with new_client(timeout=60) as c:
        written = import_packages(
            list(requirements), target,  # type: ignore[arg-type]
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
