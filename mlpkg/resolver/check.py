"""Rebuild checks (Nix's ``--check``): make a valid path again and compare the bytes.

The path is made again from its derivation into a private location, hashed, and compared
with the archive hash the store recorded. A difference keeps the second result beside the
first (``$MLPKG_HOME/check/<path>``) and names the first file that differs, from the
per-file manifest recorded at registration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlpkg.errors import BadInput, CheckError
from mlpkg.resolver.derivation import Derivation
from mlpkg.resolver.plan import PlanNode
from mlpkg.resolver.realise import Reporter, maker
from mlpkg.store import archive
from mlpkg.store.fs import canonicalise, remove_tree
from mlpkg.store.store import PathInfo, Store
from mlpkg.store.verify import changed_files


@dataclass
class CheckResult:
    path: str
    rounds: int
    recorded: str
    results: list[str] = field(default_factory=list)

    @property
    def reproducible(self) -> bool:
        return all(r == self.recorded for r in self.results)

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "rounds": self.rounds,
            "recorded": self.recorded,
            "results": self.results,
            "reproducible": self.reproducible,
        }


def check(drv: Derivation, store: Store, reporter: Reporter, rounds: int = 1) -> CheckResult:
    """Rebuild ``drv`` ``rounds`` times; raise CheckError at the first difference.

    Holds the path's lock shared throughout: the garbage collector then leaves its build
    directories (``builds/<hash>-*``) and rounds (``check/.<hash>-*``) alone, while other
    checks of the same path may run beside it.
    """
    store.protect([drv.path, *drv.inputs.values()])
    info = store.info(drv.path)
    if info is None:
        raise BadInput(f"{drv.path} is not valid: build it before checking it.", package=drv.name)
    lock = store.path_lock(drv.path)
    lock.acquire(shared=True)
    try:
        return _rounds(drv, store, reporter, rounds, info)
    finally:
        lock.release()


def _rounds(
    drv: Derivation, store: Store, reporter: Reporter, rounds: int, info: PathInfo
) -> CheckResult:
    result = CheckResult(str(drv.path), rounds, info.archive_hash)
    node = PlanNode(drv, drv.path, "check")
    for round_no in range(1, rounds + 1):
        tmp = store.check_round(drv.path)
        try:
            maker(drv, store, reporter, node)(tmp)
            canonicalise(tmp)
            scanned = archive.scan(tmp, manifest=True)
            result.results.append(scanned.hash)
            if scanned.hash != info.archive_hash:
                kept = store.keep_check(tmp, drv.path)
                files = changed_files(info.manifest, scanned.manifest)
                first = files[0] if files else "(no single file)"
                raise CheckError(
                    f"{drv.name}-{drv.version} is not reproducible: round {round_no} gave "
                    f"{scanned.hash}, the store has {info.archive_hash}; first differing "
                    f"file: {first}.",
                    details=[
                        f"the second result is kept at {kept}",
                        f"files that differ: {', '.join(files[:10]) or '-'}",
                    ],
                    package=drv.name,
                )
        finally:
            remove_tree(tmp)
    return result
