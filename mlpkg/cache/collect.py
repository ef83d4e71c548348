"""Collecting a binary cache: ``mlpkg cache gc`` removes objects no info file names.

:func:`gc` removes objects (``objects/…``) that no info file names, directly or through its
listing, and that are older than a grace period: a push uploads objects before the info
file that names them (:mod:`mlpkg.cache.push`), so a young unnamed object may belong to a
push under way. ``cache-info.json`` and ``info/`` are never touched.

Order, for a push running meanwhile: objects are listed (with their modification times)
before info files are read, so an object named by an info file written in between is
seen as named; info files are listed again just before anything is deleted, and what new
ones name is kept. What remains possible: an *old* unnamed object (left by an interrupted
push) that a push under way has just found present and decided not to upload again is
removed before that push writes the info file naming it. So run gc when no push to the
cache runs, or ``mlpkg cache verify`` after it.

Modification times come from :meth:`Transport.list_mtimes
<mlpkg.cache.transport.Transport.list_mtimes>` (:func:`list_times`): file:// stats, s3's
LastModified, the ``mtime`` of nginx's JSON index; they are the cache's clock, so the grace
period also absorbs a difference between its clock and this machine's. Where a transport
cannot give them, only ``grace=0`` is accepted.

On a file:// cache gc also removes the temporaries of puts (``.<name>.<random>.part``,
anywhere in the cache) older than the grace period: a push that crashed left them, and
:meth:`~mlpkg.cache.transport.Transport.list` hides them. A put under way writes to its
temporary, which keeps it young.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from mlpkg.cache.check import (
    OBJECT_RE,
    WORKERS,
    pmap,
    read_cache_info,
    read_entry,
    read_listing,
)
from mlpkg.cache.transport import FileTransport, Transport
from mlpkg.errors import BadInput, CacheError

DEFAULT_GRACE = 3600.0
"""Seconds an unnamed object is kept: a push may be about to name it."""


def list_times(transport: Transport, prefix: str) -> Iterator[tuple[str, int, float | None]]:
    """``(key, size, mtime)`` of the files under ``prefix`` (as :meth:`Transport.list`),
    ``mtime`` in seconds since the epoch, from :meth:`Transport.list_mtimes`; where the
    transport cannot tell (NotImplementedError, when called or while listing), from
    :meth:`Transport.list` with None for every ``mtime``. The whole listing is read before
    the first file is given, so it is all of one kind."""
    listed: list[tuple[str, int, float | None]]
    try:
        listed = list(transport.list_mtimes(prefix))
    except NotImplementedError:
        listed = [(key, size, None) for key, size in transport.list(prefix)]
    return iter(listed)


@dataclass
class GcReport:
    """What :func:`gc` removed (or, with ``dry_run``, would remove) and kept."""

    cache: str
    dry_run: bool
    grace: float
    paths: int = 0  # info files read
    named: int = 0  # objects some info file names (listings included) that exist
    removed: list[tuple[str, int]] = field(default_factory=list)  # (key, size)
    recent: int = 0  # unnamed objects kept: younger than the grace period
    recent_bytes: int = 0
    temporaries: list[tuple[str, int]] = field(default_factory=list)  # of puts (file://)

    @property
    def removed_bytes(self) -> int:
        return sum(size for _, size in self.removed)

    def to_json(self) -> dict[str, object]:
        return {
            "cache": self.cache,
            "dry_run": self.dry_run,
            "grace": self.grace,
            "paths": self.paths,
            "named_objects": self.named,
            "removed": len(self.removed),
            "removed_bytes": self.removed_bytes,
            "removed_keys": sorted(k for k, _ in self.removed),
            "kept_recent": self.recent,
            "kept_recent_bytes": self.recent_bytes,
            "removed_temporaries": sorted(k for k, _ in self.temporaries),
            "removed_temporaries_bytes": sum(size for _, size in self.temporaries),
        }


def _names(transport: Transport, info_keys: Iterable[str]) -> set[str]:
    """The digests the info files ``info_keys`` name: their listings and the listings'
    objects. A gc must not guess: an info file or listing that cannot be read is a
    CacheError naming it (a missing listing names nothing beyond itself)."""
    reads = pmap(lambda k: read_entry(transport, k), list(info_keys), WORKERS)
    parsed = [r for r in reads if r.entry is not None]
    pmap(lambda r: read_listing(transport, r, None), parsed, WORKERS)
    names = {r.entry.listing for r in parsed if r.entry is not None}
    for read in reads:
        if read.unreadable is not None:
            raise CacheError(
                f"The cache {transport.url} cannot be collected: {read.unreadable.line()}; gc "
                "removes only what no info file names, and cannot tell what this one names.",
                cache=transport.url,
                hint=f"`mlpkg cache verify {transport.url}` lists what is broken; remove or "
                "push again the broken paths' info files first.",
            )
        if read.listing is not None:
            names.update(d for d, _ in read.listing.objects())
    return names


def _digest_of(key: str) -> str | None:
    m = OBJECT_RE.fullmatch(key)
    return m.group(2) if m and m.group(2).startswith(m.group(1)) else None


def gc(
    transport: Transport,
    *,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    now: float | None = None,
) -> GcReport:
    """Remove the objects no info file names that are older than ``grace`` seconds (see
    the module docstring for the order that keeps a concurrent push safe), and on a
    file:// cache the temporaries of puts older than that; with ``dry_run``, only report
    them. BadInput when ``grace`` > 0 and the transport cannot tell modification times
    (:func:`list_times`): then only ``grace=0`` is possible, which is safe when no push
    runs. CacheError when the cache is not a cache or an info file or listing cannot be
    read (nothing is removed then)."""
    if grace < 0:
        raise BadInput("--grace must be 0 or more seconds.")
    read_cache_info(transport)
    report = GcReport(transport.url, dry_run, grace)
    objects = list(list_times(transport, "objects"))
    if grace > 0 and any(mtime is None for _, _, mtime in objects):
        raise BadInput(
            f"The cache {transport.url} does not tell when its objects were written, so gc "
            "cannot keep those a push under way has just uploaded.",
            hint="Run it with --grace 0 when no push to this cache is running.",
        )
    temporaries = list(transport.list_temporaries()) if isinstance(transport, FileTransport) else []
    seen = {k for k, _ in transport.list("info")}
    names = _names(transport, seen)
    now = time.time() if now is None else now
    candidates: list[tuple[str, int]] = []
    for key, size, mtime in objects:
        if _digest_of(key) in names:
            report.named += 1
        elif grace > 0 and mtime is not None and now - mtime < grace:
            report.recent += 1
            report.recent_bytes += size
        else:
            candidates.append((key, size))
    report.paths = len(seen)
    report.temporaries = sorted(
        (key, size) for key, size, mtime in temporaries if not (grace > 0 and now - mtime < grace)
    )
    # Info files written since: what they name is kept (a push that finished meanwhile).
    new = {k for k, _ in transport.list("info")} - seen
    if new:
        late = _names(transport, new)
        candidates = [(k, s) for k, s in candidates if _digest_of(k) not in late]
        report.paths += len(new)
    if not dry_run:
        pmap(lambda ks: transport.delete(ks[0]), candidates + report.temporaries, WORKERS)
    report.removed = sorted(candidates)
    return report
