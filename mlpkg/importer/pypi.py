"""``mlpkg import pypi``: write ``wheel`` recipes for packages and their whole dependency tree.

Contract of :func:`import_packages`:

* ``requirements`` are PEP 508 strings (``"onnxruntime==1.17.3"``, ``"numpy"``,
  ``"foo[bar]>=2"``); a root whose marker does not hold for the target is left out.
* The index at ``index_url`` (see :func:`index_url_from_environment`) is read through the
  caller's ``client`` (its proxies and timeouts apply; every request sends
  ``User-Agent: mlpkg/<version>``): PEP 691 JSON, or PEP 503 HTML. Only wheels are used.
* ``target`` is one :class:`Target` or several (one per ``X.Y``; the first given of a
  version wins). One version per project is chosen for each target, in a resolution of
  its own (:mod:`mlpkg.importer.resolve`; project pages and metadata are read once for
  all); metadata
  comes from PEP 658 ``.metadata`` files or from the remote wheel by HTTP range requests
  (:mod:`mlpkg.importer.metadata`), never by downloading whole wheels unless the server
  ignores ``Range``.
* One recipe per release any target chose is written to ``<into>/<name>/<version>.toml``
  (:mod:`mlpkg.importer.recipe`): for one target exactly the one-file recipe a
  one-interpreter import always wrote; a release chosen by several lists the wheel chosen
  for each in ``[[wheel.files]]``, its inputs united
  (:func:`~mlpkg.importer.release.combine`). A recipe already at that path is merged
  (:func:`~mlpkg.importer.release.merge_existing`: its wheels for interpreters not
  imported now are kept) and its hand edits kept; files whose content is already
  identical are left alone.
  The return value lists the files written (created or changed), sorted.
* Errors: :class:`~mlpkg.errors.UnknownPackage` (no such project; a pinned version that does
  not exist or has no wheel for the target, with the nearest usable versions in ``details``),
  :class:`~mlpkg.errors.ResolutionError` (requirements that cannot hold together, naming
  both requirers), :class:`~mlpkg.errors.FetchError` (network or index failures, naming the
  URL), :class:`~mlpkg.errors.BadInput` (a malformed requirement). Nothing is written unless
  the whole tree resolved for every target (a root only some targets can have takes a
  marker: ``"onnxruntime==1.12.1; python_version < '3.11'"``). Nothing is printed:
  progress goes to ``on_progress``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from mlpkg.errors import BadInput
from mlpkg.importer.candidates import IndexSource
from mlpkg.importer.index import DEFAULT_INDEX, index_url_from_environment
from mlpkg.importer.metadata import read_remote_wheel_metadata
from mlpkg.importer.overrides import Overrides
from mlpkg.importer.recipe import existing_recipe, release_of, render_release, write_recipe
from mlpkg.importer.release import ImportedRelease, combine, merge_existing
from mlpkg.importer.resolve import Resolver
from mlpkg.importer.target import Target, probe_interpreter

__all__ = [
    "DEFAULT_INDEX",
    "Overrides",
    "Target",
    "import_packages",
    "index_url_from_environment",
    "probe_interpreter",
    "read_remote_wheel_metadata",
]


def _quiet(message: str) -> None:
    pass


def _distinct(targets: Target | Sequence[Target]) -> list[Target]:
    """The targets, one per ``X.Y`` (the first given wins), in the order given."""
    given = [targets] if isinstance(targets, Target) else list(targets)
    if not given:
        raise BadInput("No interpreter to import for.")
    by_version: dict[str, Target] = {}
    for t in given:
        by_version.setdefault(t.python_version, t)
    return list(by_version.values())


def _releases(
    requirements: Sequence[str],
    targets: Sequence[Target],
    source: IndexSource,
    overrides: Overrides,
    progress: Callable[[str], None],
) -> dict[tuple[str, str], ImportedRelease]:
    """Resolve for each target, then one release per (project, version) any chose."""
    releases: dict[tuple[str, str], ImportedRelease] = {}
    for target in targets:
        if len(targets) > 1:
            progress(f"resolving for Python {target.python_version} ({target.describe()})")
        judged = source.for_target(target)
        nodes = Resolver(judged, target, overrides, progress).resolve(requirements)
        for name, node in nodes.items():
            release = release_of(node, nodes, target, overrides.aliases_for(name))
            key = (name, release.version)
            old = releases.get(key)
            releases[key] = release if old is None else combine(old, release, source.versions)
    return releases


def import_packages(
    requirements: Sequence[str],
    target: Target | Sequence[Target],
    *,
    index_url: str,
    client: httpx.Client,
    into: Path,
    overrides: Overrides | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write recipes for the requirements (PEP 508 strings like 'onnxruntime==1.17.3' or
    'numpy') and their whole dependency tree, for one target interpreter or several;
    return the files written (existing identical files are left alone). See the module
    docstring for the full contract."""
    progress = on_progress or _quiet
    overrides = overrides or Overrides()
    targets = _distinct(target)
    source = IndexSource(client, index_url.rstrip("/"), targets[0], progress)
    releases = _releases(requirements, targets, source, overrides, progress)
    written: list[Path] = []
    for (name, version), release in releases.items():
        old = existing_recipe(into, name, version)
        if old is not None:
            release = merge_existing(release, old, source.versions)
        path, changed = write_recipe(into, name, version, render_release(release))
        progress(f"{name}: {'wrote' if changed else 'unchanged'} {path}")
        if changed:
            written.append(path)
    return sorted(written)
