"""How ``verify --repair`` remakes a damaged path: with its kind's builder, from the
derivation recorded when it was made, as realisation would."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mlpkg.errors import VerifyError

if TYPE_CHECKING:
    from mlpkg.store.store import PathInfo, Store
    from mlpkg.store.verify import Remake

__all__ = ["remaker"]


def remaker(store: Store) -> Callable[[PathInfo], Remake]:
    """The function :func:`mlpkg.store.verify.verify` calls to remake a path of ``store``;
    it refuses a recorded derivation that does not hash to its path."""
    from mlpkg.build import BuildContext, builder_for
    from mlpkg.resolver.derivation import Derivation
    from mlpkg.resolver.plan import PlanNode
    from mlpkg.resolver.realise import Reporter
    from mlpkg.store.verify import Remake

    reporter = Reporter()

    def remake(info: PathInfo) -> Remake:
        drv = Derivation.from_json(info.deriver)
        if drv.path != info.path:
            raise VerifyError(f"The recorded derivation of {info.path} does not hash to it.")
        builder = builder_for(drv.kind, drv.name)
        ctx = BuildContext(store, reporter, PlanNode(drv, drv.path, "repair"))
        return Remake(builder.maker(drv, ctx), builder.relocatable)

    return remake
