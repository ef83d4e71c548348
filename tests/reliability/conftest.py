"""Fixtures of the reliability tests (the shared ones are in tests/conftest.py).

``fault_seed``: the seed of a fault campaign, from ``MLPKG_FAULT_SEED`` or a fixed default;
every assertion message of a campaign names it so that a failure can be replayed with
``MLPKG_FAULT_SEED=<seed> python -m pytest tests/reliability -k <trial>``.

``lab``: one MLPKG_HOME with small recipes (tests/reliability/lab.py) shared by a module's
trials; every process it starts is the leader of its own process group, so that a kill of
the group is a power cut of that command and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

DEFAULT_SEED = 20261130


@pytest.fixture(scope="session")
def fault_seed() -> int:
    """The campaign's seed: ``MLPKG_FAULT_SEED`` (an integer) or :data:`DEFAULT_SEED`."""
    text = os.environ.get("MLPKG_FAULT_SEED", "").strip()
    return int(text) if text else DEFAULT_SEED


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A :class:`tests.reliability.lab.Lab` (home, recipes, a slow loopback server)."""
    from tests.reliability.lab import Lab

    lab = Lab(Path(tmp_path_factory.mktemp("lab")))
    try:
        yield lab
    finally:
        lab.close()
