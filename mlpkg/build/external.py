"""Recipe kind ``external``: links to a tool found on this machine.

Detection (running the recipe's ``detect`` command, locating its executables) happens
while resolving (:mod:`mlpkg.resolver.external`); the derivation records what was found,
and the path holds ``bin/`` symlinks to those locations. The links name the host's tools,
so the content is not relocatable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mlpkg.build import BuildContext, Builder, register
from mlpkg.errors import BuildError

if TYPE_CHECKING:
    from mlpkg.resolver.derivation import Derivation
    from mlpkg.store.store import Maker


class External(Builder):
    kind = "external"
    action = "link"
    relocatable = False  # its links name the host's tools

    def maker(self, drv: Derivation, ctx: BuildContext) -> Maker:
        return lambda tmp: _link_external(drv, tmp)


def _link_external(drv: Derivation, tmp: Path) -> None:
    assert drv.detected is not None
    (tmp / "bin").mkdir(parents=True)
    for exe, location in sorted(drv.detected.locations.items()):
        if not os.path.exists(location):
            raise BuildError(f"{drv.name}: '{location}' no longer exists.", package=drv.name)
        os.symlink(location, tmp / "bin" / exe)


register(External())
