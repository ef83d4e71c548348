"""Substituters: binary caches asked for a path before it is fetched or built.

Contract:

* Caches are asked in priority order (lower first: ``?priority=N`` on the URL, else the
  cache's ``cache-info.json``); for many paths at once, each cache is asked for all the
  paths the caches before it did not have, concurrently (:data:`QUERY_JOBS` requests).
* An entry counts only when a trusted key signed its fingerprint
  (:func:`mlpkg.cache.format.fingerprint`), checked before any data is downloaded; a
  cache given with ``?trusted=true`` (``file://`` only) needs no signature. An entry whose
  signature does not count, or whose archive hash differs from the lock's, is reported
  once and passed over.
* A cache that is down (refused, timed out, 5xx) is skipped for the rest of the command,
  with one warning. A path a cache does not have is remembered for
  ``substituter-negative-ttl`` seconds (:data:`NEGATIVE_TTL`), in
  ``$MLPKG_HOME/cache/substituters/``, so that asking again soon costs nothing.
* :meth:`Substituters.substitute` makes a path valid through
  :meth:`mlpkg.store.Store.realise`: the tree is assembled at the store's temporary
  location, every object checked by its name, and the archive hash compared with the
  signed one before the path becomes valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mlpkg.cache.format import (
    CACHE_INFO_KEY,
    MAX_DOCUMENT,
    MAX_LISTING,
    CacheInfo,
    Listing,
    PathEntry,
    compressed_bound,
    info_key,
    object_key,
)
from mlpkg.cache.keys import TrustedKeys
from mlpkg.cache.restore import archive_size, decode_listing, restore
from mlpkg.cache.reuse import LocalChunks
from mlpkg.cache.transport import (
    Transport,
    display_url,
    open_transport,
    read_at_most,
    split_url,
)
from mlpkg.errors import (
    BadInput,
    BuildError,
    CacheError,
    CacheUnavailable,
    CheckError,
    FormatVersionError,
    MlpkgError,
)
from mlpkg.store.archive import ArchiveInfo, StreamScan
from mlpkg.store.fs import write_atomic_bytes
from mlpkg.store.path import StorePath
from mlpkg.store.store import PathInfo, Store

QUERY_JOBS = 16
NEGATIVE_TTL = 300.0

Warn = Callable[[str], None]


@dataclass
class Substituter:
    """One cache, opened on first use."""

    url: str  # as given, without priority/trusted
    transport: Transport
    priority: int
    trusted: bool  # accepts entries without a trusted signature
    down: bool = False

    def get(self, key: str, limit: int) -> bytes:
        """An object's bytes, read in pieces and refused past ``limit`` bytes, so that a
        cache cannot make a reader hold more than an object can be. A connection dropped
        midway is tried once more (the transport retries failures to connect); after
        that the cache is down."""
        for attempt in (1, 2):
            opened = False
            try:
                with self.transport.stream(key) as pieces:
                    opened = True
                    data = read_at_most(pieces, limit)
            except CacheUnavailable:
                if attempt == 2 or not opened:
                    raise
                continue
            if data is None:
                raise CacheError(
                    f"The cache {self.url} has an object {key} of more than {limit} bytes, "
                    "more than its content can compress to.",
                    cache=self.url,
                )
            return data
        raise AssertionError("unreachable")


@dataclass
class Offer:
    """A trusted entry for a path in one cache."""

    substituter: Substituter
    entry: PathEntry


@dataclass
class _Negative:
    """The paths a cache recently did not have (``$MLPKG_HOME/cache/substituters``)."""

    file: Path
    ttl: float
    seen: dict[str, float] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, home: Path, url: str, ttl: float) -> _Negative:
        name = hashlib.sha256(url.encode()).hexdigest()[:32]
        neg = cls(home / "cache" / "substituters" / f"{name}.json", ttl)
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            doc = json.loads(neg.file.read_text())
            if doc.get("version") == 1 and doc.get("url") == url:
                now = time.time()
                neg.seen = {k: float(v) for k, v in doc["missing"].items() if now - float(v) < ttl}
        return neg

    def missing(self, path: StorePath) -> bool:
        return time.time() - self.seen.get(str(path), -1e18) < self.ttl

    def add(self, path: StorePath) -> None:
        self.seen[str(path)] = time.time()
        self.dirty = True

    def save(self, url: str) -> None:
        if not self.dirty or self.ttl <= 0:
            return
        doc = {"version": 1, "url": url, "missing": self.seen}
        with contextlib.suppress(OSError):
            self.file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic_bytes(self.file, json.dumps(doc).encode())


class Substituters:
    """The caches one command asks, in priority order. Close it when done."""

    def __init__(
        self,
        urls: Sequence[str],
        keys: TrustedKeys,
        home: Path,
        warn: Warn,
        negative_ttl: float = NEGATIVE_TTL,
    ) -> None:
        self.urls = list(dict.fromkeys(urls))
        self.keys = keys
        self.home = home
        self.warn = warn
        self.negative_ttl = negative_ttl
        self._opened: list[Substituter] | None = None
        self._negative: dict[str, _Negative] = {}
        self._warned: set[tuple[str, str]] = set()
        self._local = LocalChunks(home)

    def __bool__(self) -> bool:
        return bool(self.urls)

    def close(self) -> None:
        for sub in self._opened or []:
            if sub.url in self._negative:
                self._negative[sub.url].save(sub.url)
            sub.transport.close()

    # -- opening ----------------------------------------------------------------------------

    def caches(self) -> list[Substituter]:
        """The caches that answered, in priority order (opened on the first call)."""
        if self._opened is None:
            opened = [s for s in (self._open(u) for u in self.urls) if s is not None]
            self._opened = sorted(opened, key=lambda s: s.priority)
        return [s for s in self._opened if not s.down]

    def _open(self, given: str) -> Substituter | None:
        bare, params = split_url(given)
        shown = display_url(bare)  # no credentials in messages, plans or files
        trusted = params.get("trusted", "false").lower() in ("1", "true", "yes")
        if trusted and not bare.startswith(("file://", "/")):
            raise BadInput(
                f"The substituter {shown} is marked trusted=true, which only a local "
                "directory (file://) may be."
            )
        priority: int | None = None
        if "priority" in params:
            try:
                priority = int(params["priority"])
            except ValueError:
                raise BadInput(
                    f"The substituter {shown} has a priority that is not an integer."
                ) from None
        transport = open_transport(given)
        url = transport.url
        try:
            raw = transport.get_bounded(CACHE_INFO_KEY, MAX_DOCUMENT)
            if raw is None:
                raise CacheError(
                    f"The cache {url} has no {CACHE_INFO_KEY}: it is not an mlpkg cache.", cache=url
                )
            info = CacheInfo.from_bytes(raw, url)
        except (CacheError, FormatVersionError) as e:  # a newer cache: this mlpkg skips it
            transport.close()
            self._down_warning(url, e)
            return None
        self._negative[url] = _Negative.load(self.home, url, self.negative_ttl)
        return Substituter(url, transport, info.priority if priority is None else priority, trusted)

    def _down_warning(self, url: str, e: MlpkgError) -> None:
        self._warn_once(url, "down", f"{e.message} It is skipped for the rest of this command.")

    def _warn_once(self, url: str, what: str, text: str) -> None:
        if (url, what) not in self._warned:
            self._warned.add((url, what))
            self.warn(text)

    def mark_down(self, sub: Substituter, e: CacheError) -> None:
        sub.down = True
        self._down_warning(sub.url, e)

    # -- asking -----------------------------------------------------------------------------

    def query(
        self,
        paths: Iterable[StorePath],
        expected: Mapping[StorePath, str] | None = None,
        after: Substituter | None = None,
    ) -> dict[StorePath, Offer]:
        """The first trusted offer for each of ``paths`` that some cache has (only caches
        after ``after`` in priority order, when given). ``expected`` maps paths to the
        archive hash a lock pins: an entry with another hash is passed over."""
        remaining = list(dict.fromkeys(paths))
        found: dict[StorePath, Offer] = {}
        caches = self.caches()
        if after is not None:
            # By rank among every cache: ``after`` may be down now, and the caches before
            # it were asked already.
            order = [id(s) for s in self._opened or []]
            rank = order.index(id(after)) if id(after) in order else -1
            caches = [s for s in caches if order.index(id(s)) > rank]
        for sub in caches:
            ask = [p for p in remaining if not self._negative[sub.url].missing(p)]
            for path, entry in self._ask(sub, ask).items():
                if self._acceptable(sub, entry, (expected or {}).get(path)):
                    found[path] = Offer(sub, entry)
            remaining = [p for p in remaining if p not in found]
            if not remaining:
                break
        return found

    def _ask(self, sub: Substituter, paths: list[StorePath]) -> dict[StorePath, PathEntry]:
        if not paths:
            return {}

        def one(path: StorePath) -> tuple[StorePath, bytes | None]:
            return path, sub.transport.get_bounded(info_key(path), MAX_DOCUMENT)

        entries: dict[StorePath, PathEntry] = {}
        try:
            with ThreadPoolExecutor(QUERY_JOBS, thread_name_prefix="mlpkg-query") as pool:
                for path, raw in pool.map(one, paths):
                    if raw is None:
                        self._negative[sub.url].add(path)
                        continue
                    try:
                        entries[path] = PathEntry.from_bytes(raw, sub.url, path)
                    except (CacheError, BadInput) as e:
                        self._warn_once(sub.url, str(path), f"{e.message} Not used for {path}.")
        except CacheError as e:  # down, or refusing (e.g. 401): no use for this command
            self.mark_down(sub, e)
            return {}
        return entries

    def _acceptable(self, sub: Substituter, entry: PathEntry, expected: str | None) -> bool:
        path = entry.path
        if expected is not None and entry.archive_hash != expected:
            self._warn_once(
                sub.url,
                str(path),
                f"The cache {sub.url} has {path} with archive hash {entry.archive_hash}, but "
                f"the lock pins {expected}; it is not used.",
            )
            return False
        if sub.trusted or self.keys.verify(entry.fingerprint(), entry.signatures):
            return True
        signers = sorted({s.partition(":")[0] for s in entry.signatures}) or ["nobody"]
        self._warn_once(
            sub.url,
            str(path),
            f"The cache {sub.url} has {path}, but it is signed by no trusted key (signed by: "
            f"{', '.join(signers)}); it is not used.",
        )
        return False

    # -- substituting -----------------------------------------------------------------------

    def substitute(
        self,
        store: Store,
        offer: Offer,
        *,
        kind: str,
        recipe_hash: str,
        deriver: dict[str, object],
        references: Sequence[StorePath],
        relocatable: bool,
        progress: Callable[[int], None] | None = None,
    ) -> PathInfo:
        """Make ``offer``'s path valid from its cache, registered with the derivation's
        ``kind``, ``recipe_hash`` and ``deriver`` (not the entry's, which nothing signs).
        The references the entry signs must be ``references`` (the derivation's), and
        valid already. Chunks of big files this store holds already are read here
        (:mod:`mlpkg.cache.reuse`), not downloaded. CacheError names the cache and the
        path when the data is missing or corrupt; the store is unchanged."""
        sub, entry = offer.substituter, offer.entry
        if sorted(entry.references) != sorted(references):
            raise CacheError(
                f"The cache {sub.url} has {entry.path} with other references than its "
                "derivation names; it is not used.",
                cache=sub.url,
            )
        self._local.load(store)
        kept: list[bytes] = []  # the listing object, once fetched
        scanned: list[ArchiveInfo] = []  # what the restore learnt while writing
        forbid = store.forbidden_strings(relocatable)
        make = self._maker(offer, kept, progress, forbid, scanned)
        try:
            info = store.realise(
                entry.path,
                make,
                kind=kind,
                recipe_hash=recipe_hash,
                deriver=deriver,
                references=references,
                relocatable=relocatable,
                expected_hash=entry.archive_hash,
                scanned=lambda: scanned[-1],
            )
        except (CacheError, CheckError, BuildError) as e:
            # BuildError: content naming this store's root (not relocatable here).
            cls = CacheUnavailable if isinstance(e, CacheUnavailable) else CacheError
            reason = e.message.removeprefix(f"The cache {sub.url} ")
            reason = reason if reason != e.message else reason[:1].lower() + reason[1:]
            raise cls(
                f"Substituting {entry.path} from {sub.url} failed: {reason}",
                cache=sub.url,
                details=e.details,
            ) from None
        if kept:  # not when another process made it meanwhile
            self._local.keep(store, entry.path, entry.listing, kept[-1])
        return info

    def _maker(
        self,
        offer: Offer,
        kept: list[bytes],
        progress: Callable[[int], None] | None,
        forbid: list[bytes],
        scanned: list[ArchiveInfo],
    ) -> Callable[[Path], None]:
        """What writes ``offer``'s tree at a temporary location (appending the listing
        object it fetched to ``kept``, and the scan of what it wrote to ``scanned``)."""
        sub, entry = offer.substituter, offer.entry

        def make(tmp: Path) -> None:
            limit = min(entry.listing_size, compressed_bound(MAX_LISTING))
            raw = sub.get(object_key(entry.listing), limit)
            kept.append(raw)
            try:
                listing = Listing.from_bytes(
                    decode_listing(raw, entry.listing, sub.url), sub.url, entry.path
                )
            except FormatVersionError as e:  # the listing is not signed: the cache's fault
                raise CacheError(e.message, cache=sub.url) from None
            if archive_size(listing) != entry.archive_size:
                raise CacheError(
                    f"The cache {sub.url} has a listing of {entry.path} that does not add up "
                    f"to its signed archive size of {entry.archive_size} bytes.",
                    cache=sub.url,
                )
            lengths = dict(listing.objects())

            def fetch(digest: str) -> bytes:
                return sub.get(object_key(digest), compressed_bound(lengths[digest]))

            scan = StreamScan(forbid)
            try:
                restore(listing, tmp, fetch, sub.url, progress=progress, local=self._local.read,
                        scan=scan)  # fmt: skip
                scanned.append(scan.result())
            finally:
                scan.close()

        return make


def forget_misses(home: Path) -> int:
    """Forget every remembered miss (``mlpkg cache forget``); the number of caches whose
    misses were forgotten."""
    d = home / "cache" / "substituters"
    n = 0
    for f in d.glob("*.json") if d.is_dir() else ():
        with contextlib.suppress(OSError):
            os.unlink(f)
            n += 1
    return n
