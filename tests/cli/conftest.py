"""Fixtures of the CLI tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli_support import python_bin
from tests.toy_app import Home, write_recipes


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """A home where toyapp (and its closure) is already realised by one ``mlpkg run``."""
    root = tmp_path_factory.mktemp("run")
    write_recipes(root / "recipes")
    h = Home(root / "home", root / "recipes", python_bin(root / "bin"))
    h.sub("run", "toyapp").ok()
    try:
        yield h
    finally:
        h.close()
