"""``mlpkg import pypi``: write ``wheel`` recipes for packages and their whole dependency tree.

Contract of :func:`import_packages`:

* ``requirements`` are PEP 508 strings (``"onnxruntime==1.17.3"``, ``"numpy"``,
  ``"foo[bar]>=2"``); a root whose marker does not hold for the target is left out.
* The index at ``index_url`` (see :func:`index_url_from_environment`) is read through the
  caller's ``client`` (its proxies and timeouts apply; every request sends
  ``User-Agent: mlpkg/<version>``): PEP 691 JSON, or PEP 503 HTML. Only wheels are used.
* One version per project is chosen for ``target`` (:mod:`mlpkg.importer.resolve`); metadata
  comes from PEP 658 ``.metadata`` files or from the remote wheel by HTTP range requests
  (:mod:`mlpkg.importer.metadata`), never by downloading whole wheels unless the server
  ignores ``Range``.
* One recipe per chosen release is written to ``<into>/<name>/<version>.toml``
  (:mod:`mlpkg.importer.recipe`); files whose content is already identical are left alone.
  The return value lists the files written (created or changed), sorted.
* Errors: :class:`~mlpkg.errors.UnknownPackage` (no such project; a pinned version that does
  not exist or has no wheel for the target, with the nearest usable versions in ``details``),
  :class:`~mlpkg.errors.ResolutionError` (requirements that cannot hold together, naming
  both requirers), :class:`~mlpkg.errors.FetchError` (network or index failures, naming the
  URL), :class:`~mlpkg.errors.BadInput` (a malformed requirement). Nothing is written unless
  the whole tree resolved. Nothing is printed: progress goes to ``on_progress``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from mlpkg.importer.candidates import IndexSource
from mlpkg.importer.index import DEFAULT_INDEX, index_url_from_environment
from mlpkg.importer.metadata import read_remote_wheel_metadata
from mlpkg.importer.overrides import Overrides
from mlpkg.importer.recipe import render, write_recipe
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


def import_packages(
    requirements: Sequence[str],
    target: Target,
    *,
    index_url: str,
    client: httpx.Client,
    into: Path,
    overrides: Overrides | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write recipes for the requirements (PEP 508 strings like 'onnxruntime==1.17.3' or
    'numpy') and their whole dependency tree; return the files written (existing identical
    files are left alone). See the module docstring for the full contract."""
    progress = on_progress or _quiet
    overrides = overrides or Overrides()
    source = IndexSource(client, index_url.rstrip("/"), target, progress)
    nodes = Resolver(source, target, overrides, progress).resolve(requirements)
    written: list[Path] = []
    for name, node in nodes.items():
        text = render(node, nodes, target, overrides.aliases_for(name))
        path, changed = write_recipe(into, name, node.release.version_text, text)
        progress(f"{name}: {'wrote' if changed else 'unchanged'} {path}")
        if changed:
            written.append(path)
    return sorted(written)
