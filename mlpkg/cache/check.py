"""Checking a binary cache: ``mlpkg cache verify`` (``mlpkg cache gc`` is
:mod:`mlpkg.cache.collect`, which reads info files and listings with the functions here).

:func:`verify` reads a cache as a substituter would, but everything of it, and reports what
is broken instead of stopping at the first fault:

* ``cache-info.json`` must be there, in a format version this mlpkg reads (else the cache
  is refused as a whole: CacheError, or FormatVersionError);
* every file under ``info/`` must parse (:class:`~mlpkg.cache.format.PathEntry`), be named
  for its path, carry a signature by a trusted key (unless the cache is marked trusted),
  and have an info file for each of its references;
* each entry's listing object must exist, have the compressed size the entry gives, and
  decode to a valid :class:`~mlpkg.cache.format.Listing` whose chunks add up to
  ``data_size``;
* every object a listing names must exist, with a plausible compressed size (not empty,
  not more than zstd's bound for its length);
* object contents: every listing is always downloaded and checked against its name; of the
  chunk objects, a deterministic sample (:data:`SAMPLE`, evenly spread over the sorted
  digests) or, with ``full``, all of them are streamed, decompressed and hashed.

Presence and sizes come from one listing of ``objects/`` (:meth:`Transport.list`), which
costs one request per thousand objects on S3 instead of one per object.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TypeVar, cast

import zstandard

from mlpkg.cache.format import (
    CACHE_INFO_KEY,
    CacheInfo,
    Listing,
    PathEntry,
    info_key,
    object_key,
)
from mlpkg.cache.keys import TrustedKeys
from mlpkg.cache.restore import decode_listing, read_order
from mlpkg.cache.transport import CHUNK, Transport
from mlpkg.errors import CacheError, CacheUnavailable, FormatVersionError

SAMPLE = 32
"""Chunk objects whose content :func:`verify` checks by default (listings always are)."""
WORKERS = 16
"""Concurrent requests of one verify or gc."""

OBJECT_RE = re.compile(r"objects/([0-9a-f]{2})/([0-9a-f]{64})")
INFO_RE = re.compile(r"info/[^/]+\.json")
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True, order=True)
class Problem:
    """One broken thing: ``path`` is a store path name (``<hash>-<name>``), or the key of a
    file that names no valid path; ``object`` the digest of the object at fault, if any."""

    path: str
    object: str | None
    problem: str

    def line(self) -> str:
        """``PATH: object DIGEST: PROBLEM`` (without the object part when there is none)."""
        where = f"{self.path}: object {self.object}" if self.object else self.path
        return f"{where}: {self.problem}"

    def to_json(self) -> dict[str, str | None]:
        return {"path": self.path, "object": self.object, "problem": self.problem}


@dataclass
class VerifyReport:
    """What :func:`verify` found. ``paths``: info files read; ``objects_checked``: objects
    whose content was downloaded and hashed (listings included)."""

    cache: str
    full: bool
    paths: int = 0
    objects: int = 0  # distinct chunk objects the listings name
    objects_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "cache": self.cache,
            "full": self.full,
            "paths": self.paths,
            "objects": self.objects,
            "objects_checked": self.objects_checked,
            "problems": [p.to_json() for p in sorted(self.problems)],
        }


def pmap(fn: Callable[[_T], _R], items: Iterable[_T], workers: int) -> list[_R]:
    """``[fn(x) for x in items]``, ``workers`` at a time; the first exception is raised."""
    todo = list(items)
    if len(todo) <= 1 or workers <= 1:
        return [fn(x) for x in todo]
    with ThreadPoolExecutor(min(workers, len(todo)), thread_name_prefix="mlpkg-check") as pool:
        return list(pool.map(fn, todo))


def read_cache_info(transport: Transport) -> CacheInfo:
    """The cache's ``cache-info.json``; CacheError when there is none (not a cache, or an
    empty one), FormatVersionError when it is of another format version."""
    raw = transport.get(CACHE_INFO_KEY)
    if raw is None:
        raise CacheError(
            f"The cache {transport.url} has no {CACHE_INFO_KEY}: it is not an mlpkg binary "
            "cache (mlpkg push writes one first).",
            cache=transport.url,
        )
    return CacheInfo.from_bytes(raw, transport.url)


def _reason(exc: CacheError | FormatVersionError, url: str) -> str:
    """The part of a format error that is not the cache's name."""
    text = exc.message.removeprefix(f"The cache {url} ").removeprefix(f"In the cache {url}, ")
    for what in ("malformed", "corrupt"):
        if text.startswith(f"has a {what}") and ": " in text:
            return f"{what}: " + text.split(": ", 1)[1].rstrip(".")
        if f" is {what}: " in text:
            return f"{what}: " + text.split(f" is {what}: ", 1)[1].rstrip(".")
    return text.rstrip(".")


def _object_sizes(transport: Transport) -> dict[str, int]:
    """``{digest: compressed size}`` of the objects the cache holds (other files under
    ``objects/`` are ignored: no listing can name them)."""
    sizes: dict[str, int] = {}
    for key, size in transport.list("objects"):
        m = OBJECT_RE.fullmatch(key)
        if m and m.group(2).startswith(m.group(1)):
            sizes[m.group(2)] = size
    return sizes


def _max_compressed(length: int) -> int:
    """zstd's bound on the compressed size of ``length`` bytes (ZSTD_COMPRESSBOUND), with
    room for a frame header and checksum."""
    small = ((128 << 10) - length) >> 11 if length < (128 << 10) else 0
    return length + (length >> 8) + small + 64


class _PiecesReader:
    """A ``read(n)`` view of an iterator of byte pieces (for zstandard's stream reader)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buf = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        while not self._buf:
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._buf = memoryview(piece)
        n = len(self._buf) if n < 0 else n
        out, self._buf = self._buf[:n], self._buf[n:]
        return bytes(out)


def check_object(transport: Transport, digest: str, length: int | None) -> str | None:
    """Stream the object ``digest``, decompress and hash it: None when its content has
    sha256 ``digest`` (and ``length`` bytes, when given), else what is wrong. Never holds
    more than :data:`~mlpkg.cache.transport.CHUNK` decompressed bytes, whatever the frame
    claims. A missing object or a cache that is down raises (CacheError, CacheUnavailable)."""
    h, total = hashlib.sha256(), 0
    limit = length if length is not None else 1 << 62
    try:
        with (
            transport.stream(object_key(digest)) as pieces,
            zstandard.ZstdDecompressor().stream_reader(
                cast("IO[bytes]", _PiecesReader(pieces))
            ) as reader,
        ):
            while piece := reader.read(CHUNK):
                total += len(piece)
                if total > limit:
                    return f"it decompresses to more than the {length} bytes it should hold"
                h.update(piece)
    except zstandard.ZstdError as e:
        return f"it is not a valid zstd frame ({e})"
    if length is not None and total != length:
        return f"it decompresses to {total} bytes instead of {length}"
    if h.hexdigest() != digest:
        return "its content does not match its name (sha256)"
    return None


@dataclass
class EntryRead:
    """One info file as read: the entry (None when malformed), its listing (None when
    unreadable), and the problems found on the way."""

    key: str
    entry: PathEntry | None = None
    listing: Listing | None = None
    problems: list[Problem] = field(default_factory=list)
    fetched: bool = False  # the listing object was downloaded
    unreadable: Problem | None = None  # what it names cannot be known (see _names)

    @property
    def name(self) -> str:
        return str(self.entry.path) if self.entry else self.key


def read_entry(transport: Transport, key: str) -> EntryRead:
    """Fetch and parse the info file ``key`` (nothing more)."""
    read = EntryRead(key)
    if not INFO_RE.fullmatch(key):
        read.problems.append(Problem(key, None, "is not an info file name (info/<hash>.json)"))
        return read
    raw = transport.get(key)
    if raw is None:  # removed while we looked: nothing of it is left to be wrong
        return read
    try:
        read.entry = PathEntry.from_bytes(raw, transport.url)
    except CacheUnavailable:
        raise
    except (CacheError, FormatVersionError) as e:
        read.unreadable = Problem(key, None, _reason(e, transport.url))
        read.problems.append(read.unreadable)
        return read
    if info_key(read.entry.path) != key:
        read.problems.append(
            Problem(read.name, None, f"is described by {key}, not {info_key(read.entry.path)}")
        )
    return read


def read_listing(transport: Transport, read: EntryRead, sizes: dict[str, int] | None) -> EntryRead:
    """Fetch, check and parse the listing of ``read.entry`` (problems into ``read``);
    with ``sizes`` (the objects listed), its presence and size are checked first."""
    entry = read.entry
    assert entry is not None
    digest, name = entry.listing, read.name
    if sizes is not None and digest not in sizes:
        read.problems.append(Problem(name, digest, "its listing object is missing"))
        return read
    if sizes is not None and sizes[digest] != entry.listing_size:
        read.problems.append(
            Problem(
                name,
                digest,
                f"the listing object holds {sizes[digest]} bytes; the info "
                f"file says {entry.listing_size}",
            )
        )
    raw = transport.get(object_key(digest))
    if raw is None:
        read.problems.append(Problem(name, digest, "its listing object is missing"))
        return read
    read.fetched = True
    try:
        listing = Listing.from_bytes(decode_listing(raw, digest, transport.url), transport.url,
                                     entry.path)  # fmt: skip
        read_order(listing)
    except CacheUnavailable:
        raise
    except (CacheError, FormatVersionError) as e:
        read.unreadable = Problem(name, digest, "listing: " + _reason(e, transport.url))
        read.problems.append(read.unreadable)
        return read
    except ValueError as e:
        read.unreadable = Problem(name, digest, f"listing: malformed: {e}")
        read.problems.append(read.unreadable)
        return read
    data_size = sum(n for _, n in listing.objects())
    if data_size != entry.data_size:
        read.problems.append(
            Problem(
                name,
                digest,
                f"the listing's objects hold {data_size} bytes; the info "
                f"file says data_size {entry.data_size}",
            )
        )
    read.listing = listing
    return read


def _entry_problems(read: EntryRead, infos: set[str], keys: TrustedKeys, trusted: bool) -> None:
    """Signature and reference problems of a parsed entry (into ``read``)."""
    entry = read.entry
    assert entry is not None
    if not trusted and keys.verify(entry.fingerprint(), entry.signatures) is None:
        if not entry.signatures:
            problem = "the info file is unsigned"
        else:
            names = sorted({s.partition(":")[0] for s in entry.signatures})
            problem = f"signed by no trusted key (signatures by: {', '.join(names)})"
        read.problems.append(Problem(read.name, None, problem))
    for ref in entry.references:
        if info_key(ref) not in infos:
            read.problems.append(
                Problem(read.name, None, f"references {ref}, which has no info file")
            )


def _needed(reads: Iterable[EntryRead]) -> dict[str, tuple[int, list[str]]]:
    """``{digest: (length, [paths needing it, sorted])}`` over every readable listing."""
    needed: dict[str, tuple[int, list[str]]] = {}
    for read in reads:
        if read.listing is None:
            continue
        for digest, length in read.listing.objects():
            needed.setdefault(digest, (length, []))[1].append(read.name)
    for _, paths in needed.values():
        paths.sort()
    return needed


def _about(paths: list[str], problem: str) -> str:
    others = len(paths) - 1
    return (
        f"{problem} (also needed by {others} other path{'s' * (others != 1)})"
        if others
        else problem
    )


def sample(digests: Iterable[str], n: int) -> list[str]:
    """``n`` of ``digests`` (all of them when there are no more), chosen evenly over their
    sorted order: the same every time for the same cache."""
    ordered = sorted(set(digests))
    if n >= len(ordered):
        return ordered
    return [ordered[i * len(ordered) // n] for i in range(n)]


def _object_problems(
    transport: Transport,
    needed: dict[str, tuple[int, list[str]]],
    sizes: dict[str, int],
    count: int | None,
    report: VerifyReport,
) -> None:
    """Presence, size and (for ``count`` of them, or all when None) content of the chunk
    objects ``needed``; one problem per broken object, naming the first path needing it."""
    present = []
    for digest, (length, paths) in sorted(needed.items()):
        if digest not in sizes:
            report.problems.append(
                Problem(paths[0], digest, _about(paths, "the object is missing"))
            )
        elif not 0 < sizes[digest] <= _max_compressed(length):
            report.problems.append(
                Problem(
                    paths[0],
                    digest,
                    _about(
                        paths,
                        f"the object holds {sizes[digest]} "
                        f"bytes, impossible for a chunk of {length}",
                    ),
                )
            )
        else:
            present.append(digest)
    chosen = present if count is None else sample(present, count)

    def one(digest: str) -> str | None:
        try:
            return check_object(transport, digest, needed[digest][0])
        except CacheUnavailable:
            raise
        except CacheError:
            return "the object is missing"

    for digest, problem in zip(chosen, pmap(one, chosen, WORKERS), strict=True):
        if problem is not None:
            paths = needed[digest][1]
            report.problems.append(Problem(paths[0], digest, _about(paths, problem)))
    report.objects_checked += len(chosen)


def verify(
    transport: Transport,
    keys: TrustedKeys,
    *,
    trusted: bool = False,
    full: bool = False,
    count: int = SAMPLE,
) -> VerifyReport:
    """Check the cache (see the module docstring) and report every problem found; with
    ``full`` every object's content is checked, else listings and ``count`` chunk objects.
    ``trusted``: signatures are not required. Raises only when the cache cannot be read at
    all (CacheError: no ``cache-info.json``, a listing refused, the cache down;
    FormatVersionError: a cache of another version); a broken cache is a report."""
    read_cache_info(transport)
    report = VerifyReport(transport.url, full)
    sizes = _object_sizes(transport)
    info_keys = sorted(k for k, _ in transport.list("info"))
    infos = set(info_keys)
    reads = pmap(lambda k: read_entry(transport, k), info_keys, WORKERS)
    parsed = [r for r in reads if r.entry is not None]
    pmap(lambda r: read_listing(transport, r, sizes), parsed, WORKERS)
    for read in parsed:
        _entry_problems(read, infos, keys, trusted)
    report.paths = len(info_keys)
    report.objects_checked = len({r.entry.listing for r in parsed if r.entry and r.fetched})
    needed = _needed(parsed)
    report.objects = len(needed)
    _object_problems(transport, needed, sizes, None if full else count, report)
    report.problems = sorted([*(p for r in reads for p in r.problems), *report.problems])
    return report
