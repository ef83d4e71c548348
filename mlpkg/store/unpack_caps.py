"""The size caps on unpacking archives (archive bombs), for :mod:`mlpkg.store.unpack`.

What an archive unpacks to is capped by :class:`Limits`, by default 20 GiB of file content
(``max_size``), 200 bytes per byte of the archive file (``max_ratio``, applied only beyond
16 MiB, so that small archives of very compressible content pass) and 1,000,000 members
(``max_files``). A hard link counts its target's size again (readers of the tree, the archive
hash first, see it twice). The caps are checked against what headers declare *before* a
member is written (a zip's whole central directory before anything is written; a sparse tar
member by the size it expands to), and against the bytes actually written while writing,
since headers can lie. Past a cap, the archive is refused with ``FetchError``, one sentence
naming the label, the member and the cap, and :func:`~mlpkg.store.unpack.unpack` removes its
``dest``. Recipes raise the caps in ``[source]`` (docs/recipes.md).

:class:`Budget` counts what one archive writes and raises that ``FetchError``; :func:`show`
escapes names for the messages of both modules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

from mlpkg.errors import FetchError

DEFAULT_MAX_SIZE = 20 << 30  # 20 GiB of file content
DEFAULT_MAX_RATIO = 200.0  # unpacked bytes per byte of archive
DEFAULT_MAX_FILES = 1_000_000
RATIO_FLOOR = 16 << 20  # below 16 MiB unpacked, the ratio is not applied


@dataclass(frozen=True)
class Limits:
    """Caps on what one archive may unpack to (see the module docstring).

    ``max_size``: bytes of file content; ``max_ratio``: bytes of file content per byte of
    the archive file, applied only beyond :data:`RATIO_FLOOR`; ``max_files``: members written.
    """

    max_size: int = DEFAULT_MAX_SIZE
    max_ratio: float = DEFAULT_MAX_RATIO
    max_files: int = DEFAULT_MAX_FILES


def human(n: float) -> str:
    """A byte count for messages: ``1.5 GiB``, ``512 bytes``."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"


class Budget:
    """What an archive may still write under its :class:`Limits`; refuses what is past them.

    The byte cap is the smaller of ``max_size`` and ``max_ratio`` times the archive's size
    (but never below :data:`RATIO_FLOOR`).
    """

    def __init__(self, limits: Limits, archive_size: int, label: str) -> None:
        by_ratio = max(int(limits.max_ratio * archive_size), RATIO_FLOOR)
        self.cap = min(limits.max_size, by_ratio)
        if by_ratio < limits.max_size:
            floor = f", but at least {human(RATIO_FLOOR)}" if by_ratio == RATIO_FLOOR else ""
            self.which = (
                f"max_unpack_ratio: {limits.max_ratio:g} times the archive's "
                f"{human(archive_size)}{floor}"
            )
        else:
            self.which = "max_unpacked_size"
        self.max_files = limits.max_files
        self.label = label
        self.used = 0  # bytes written (or, for hard links, counted again)
        self.files = 0  # members written

    def refuse(self, name: str, what: str) -> NoReturn:
        raise FetchError(
            f"Refusing archive '{self.label}': member '{show(name)}' {what}.",
            hint="If the archive is trusted and really that big, raise max_unpacked_size, "
            "max_unpack_ratio or max_unpacked_files in the recipe's [source] table.",
        )

    def past(self, name: str, total: int, verb: str = "would take") -> NoReturn:
        self.refuse(
            name,
            f"{verb} the unpacked size to {human(total)}, past the cap of "
            f"{human(self.cap)} ({self.which})",
        )

    def entry(self, name: str, count: int) -> None:
        """Refuse ``name`` if it is member number ``count`` and that is past ``max_files``."""
        if count > self.max_files:
            self.refuse(
                name,
                f"is past the cap of {self.max_files:,} members (max_unpacked_files)",
            )

    def directory(self, members: Iterable[tuple[str, int]]) -> None:
        """Check a whole directory of (name, declared size) members, before writing any."""
        declared = 0
        for count, (name, size) in enumerate(members, 1):
            self.entry(name, count)
            declared += size
            if declared > self.cap:
                self.past(name, declared)

    def check(self, name: str, declared: int) -> None:
        """Refuse a member whose declared size would take the total past the cap."""
        if self.used + declared > self.cap:
            self.past(name, self.used + declared)

    def spend(self, name: str, n: int) -> None:
        """Count ``n`` bytes written for ``name``; refuse when the total passes the cap."""
        self.used += n
        if self.used > self.cap:
            self.past(name, self.used, "holds more than it declares, which takes")


def show(text: str) -> str:
    """``text`` with control characters (and undecodable bytes) escaped, for messages."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
