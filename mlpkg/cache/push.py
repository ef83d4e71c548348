"""Pushing closures to a binary cache.

Contract (what a reader may rely on, whenever a push stops):

* Objects are written before the listing that names them, and a path's listing before its
  info file: an info file never names a missing object.
* A path's info file is written only after the info files of all its references: whenever
  an info file exists, its references' info files exist.
* Every write is atomic for readers (:class:`~mlpkg.cache.transport.Transport`), so an
  interrupted push leaves at most objects no info file names (``mlpkg cache gc`` removes
  them), and the next push completes it, skipping what is there.
* Paths whose info file exists are skipped; objects that exist are not uploaded again,
  whichever path they came from (:data:`JOBS` uploads run at once).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from mlpkg.cache.chunks import Chunks, cut
from mlpkg.cache.format import (
    CACHE_INFO_KEY,
    ZSTD_LEVEL,
    CacheInfo,
    Listing,
    PathEntry,
    info_key,
    object_key,
)
from mlpkg.cache.keys import SecretKey
from mlpkg.cache.transport import Transport
from mlpkg.errors import CacheError
from mlpkg.store.path import StorePath
from mlpkg.store.store import PathInfo, Store

JOBS = 8


@dataclass
class PushReport:
    """What a push did, for ``--json`` and the summary line."""

    cache: str
    pushed: list[StorePath] = field(default_factory=list)
    present: list[StorePath] = field(default_factory=list)  # info file already there
    objects_uploaded: int = 0
    bytes_uploaded: int = 0  # compressed bytes written (objects and listings)
    objects_present: int = 0
    bytes_read: int = 0  # archive bytes of the pushed paths

    def to_json(self) -> dict[str, object]:
        return {
            "cache": self.cache,
            "pushed": [str(p) for p in self.pushed],
            "present": [str(p) for p in self.present],
            "objects_uploaded": self.objects_uploaded,
            "bytes_uploaded": self.bytes_uploaded,
            "objects_present": self.objects_present,
            "archive_bytes": self.bytes_read,
        }


Progress = Callable[[str, int], None]  # (what, bytes) after each upload


class _Uploader:
    """Uploads objects once each, however many paths name them."""

    def __init__(self, transport: Transport, pool: ThreadPoolExecutor, report: PushReport):
        self.transport = transport
        self.pool = pool
        self.report = report
        self.lock = threading.Lock()
        self.known: set[str] = set()  # digests present in the cache
        self.running: dict[str, Future[None]] = {}

    def objects(self, listing: Listing, chunks: Chunks, progress: Progress) -> list[Future[None]]:
        digests = [d for d, _ in listing.objects()]
        with self.lock:
            unknown = [d for d in digests if d not in self.known and d not in self.running]
        if unknown:
            keys = {object_key(d): d for d in unknown}
            present = {keys[k] for k in self.transport.has(list(keys))}
            with self.lock:  # another path may have found some of them meanwhile
                self.report.objects_present += len(present - self.known)
                self.known |= present
        futures = []
        with self.lock:
            for d in digests:
                if d in self.known:
                    continue
                if d not in self.running:
                    self.running[d] = self.pool.submit(self._one, d, chunks, progress)
                futures.append(self.running[d])
        return futures

    def _one(self, digest: str, chunks: Chunks, progress: Progress) -> None:
        data = chunks.compressed(digest)
        self.transport.put(object_key(digest), data)
        with self.lock:
            self.known.add(digest)
            self.report.objects_uploaded += 1
            self.report.bytes_uploaded += len(data)
        progress("object", len(data))


def ensure_cache_info(transport: Transport, priority: int | None = None) -> CacheInfo:
    """The cache's ``cache-info.json``, written first when the cache is new (an empty
    directory or prefix); a cache in another format version is refused."""
    raw = transport.get(CACHE_INFO_KEY)
    if raw is not None:
        return CacheInfo.from_bytes(raw, transport.url)
    info = CacheInfo() if priority is None else CacheInfo(priority=priority)
    transport.put(CACHE_INFO_KEY, info.to_bytes())
    return info


def push(
    store: Store,
    transport: Transport,
    roots: Iterable[StorePath],
    key: SecretKey | None,
    *,
    progress: Progress | None = None,
    jobs: int = JOBS,
) -> PushReport:
    """Upload the closures of ``roots`` (valid paths) to the cache, signing each info
    file with ``key`` (unsigned without one). See the module docstring for the order."""
    progress = progress or (lambda what, n: None)
    report = PushReport(transport.url)
    ensure_cache_info(transport)
    closure = store.closure_order(list(roots))
    store.protect(closure)  # a collection running meanwhile keeps them
    have = transport.has([info_key(p) for p in closure])
    todo = [p for p in closure if info_key(p) not in have]
    report.present = [p for p in closure if info_key(p) in have]
    # Two pools: a path's staging waits for its objects, which must not queue behind it.
    with (
        ThreadPoolExecutor(jobs, thread_name_prefix="mlpkg-upload") as uploads,
        ThreadPoolExecutor(max(1, jobs // 2), thread_name_prefix="mlpkg-stage") as stages,
    ):
        uploader = _Uploader(transport, uploads, report)
        # Data of every path first (in parallel), then info files in closure order.
        staged = [
            (p, stages.submit(_stage, _info(store, p), store.real_path(p), uploader, progress))
            for p in todo
        ]
        for path, staging in staged:
            entry = staging.result()
            if key is not None:
                entry.signatures = [key.sign(entry.fingerprint())]
            transport.put(info_key(path), entry.to_bytes())
            report.pushed.append(path)
            report.bytes_read += entry.archive_size
            progress("info", 0)
    return report


def _info(store: Store, path: StorePath) -> PathInfo:
    info = store.info(path)
    if info is None:
        raise CacheError(f"{path} is not valid in this store, so it cannot be pushed.")
    return info


def _stage(info: PathInfo, real: Path, uploader: _Uploader, progress: Progress) -> PathEntry:
    """Upload a path's objects and listing; its info file, unsigned and not written.
    Runs in a thread: the store (whose database belongs to one thread) is not used."""
    path, transport = info.path, uploader.transport
    listing, chunks = cut(real)
    for upload in uploader.objects(listing, chunks, progress):
        upload.result()
    raw = listing.to_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    if not transport.has([object_key(digest)]):
        transport.put(object_key(digest), compressed)
        with uploader.lock:  # stages run in several threads
            uploader.report.bytes_uploaded += len(compressed)
    return PathEntry(
        path=path,
        archive_hash=info.archive_hash,
        archive_size=info.size,
        references=list(info.references),
        recipe_hash=info.recipe_hash,
        kind=info.kind,
        deriver=dict(info.deriver),
        listing=digest,
        listing_size=len(compressed),
        data_size=sum(n for _, n in listing.objects()),
    )
