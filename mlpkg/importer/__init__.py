"""Importers: write mlpkg recipes from other package ecosystems.

:mod:`mlpkg.importer.pypi` reads a Python package index (PEP 691/503) and writes ``wheel``
recipes for packages and their whole dependency tree. Like ``store`` and ``recipes``, this
component prints nothing; :mod:`mlpkg.cli` calls it and reports its errors.
"""

from __future__ import annotations

from mlpkg.importer.index import index_url_from_environment
from mlpkg.importer.metadata import read_remote_wheel_metadata
from mlpkg.importer.overrides import Overrides
from mlpkg.importer.pypi import import_packages
from mlpkg.importer.target import Target, probe_interpreter

__all__ = [
    "Overrides",
    "Target",
    "import_packages",
    "index_url_from_environment",
    "probe_interpreter",
    "read_remote_wheel_metadata",
]
