"""The binary cache layout, version 1 (docs/caches.md is the user-facing description).

A cache is a tree of plain files that any static file server, bucket or directory holds::

    cache-info.json              what this cache is: format, version, priority, chunking
    info/<hash part>.json        one signed info file per store path
    objects/<2 hex>/<64 hex>     zstd frames, each named by the sha256 of what it decompresses to:
                                 the chunks of file contents, and each path's listing

A path's *listing* (:class:`Listing`) says how its tree is put back together from objects;
its *info file* (:class:`PathEntry`) names the listing and carries what is signed. The
signature covers :func:`fingerprint`: the path, its archive hash and size (the canonical
archive of :mod:`mlpkg.store.archive`) and its references. Objects are checked by their
names, the assembled tree by its archive hash, and the archive hash by the signature, so
nothing that is not signed is trusted.

Every document has ``format`` and ``version``; a reader refuses versions it does not know.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlpkg.errors import BadInput, CacheError, FormatVersionError
from mlpkg.store.path import StorePath

VERSION = 1
CACHE_INFO_KEY = "cache-info.json"
CACHE_FORMAT = "mlpkg-cache"
INFO_FORMAT = "mlpkg-cache-entry"
LISTING_FORMAT = "mlpkg-listing"
DEFAULT_PRIORITY = 50
FINGERPRINT_PREFIX = "mlpkg-cache-1"

_HEX64 = r"^[0-9a-f]{64}$"
_SHA = r"^sha256:[0-9a-f]{64}$"


@dataclass(frozen=True)
class Chunking:
    """How file contents are cut into objects. Fixed per format version: other parameters
    would give other chunks, and deduplication against what a cache holds would be lost.

    FastCDC 2020 (the ``pyfastcdc`` implementation, normalisation level 1, gear seed 0)
    with these sizes. Files smaller than ``small_file`` are not chunked one by one: their
    contents are concatenated in archive order into the path's *pack stream*, which is
    chunked as one; so a tree of many small files costs a few objects, not one each."""

    algorithm: str = "fastcdc-2020"
    min_size: int = 256 * 1024
    avg_size: int = 1024 * 1024
    max_size: int = 4 * 1024 * 1024
    normalization: int = 1
    seed: int = 0
    small_file: int = 16 * 1024

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "min_size": self.min_size,
            "avg_size": self.avg_size,
            "max_size": self.max_size,
            "normalization": self.normalization,
            "seed": self.seed,
            "small_file": self.small_file,
        }


CHUNKING = Chunking()
COMPRESSION = "zstd"
ZSTD_LEVEL = 3
MAX_OBJECT = 16 * 1024 * 1024  # no chunk decompresses to more
MAX_LISTING = 256 * 1024 * 1024  # nor any listing (about 3 million chunks)
MAX_DOCUMENT = 16 * 1024 * 1024  # nor an info file or cache-info.json


def compressed_bound(length: int) -> int:
    """The most bytes a zstd frame of ``length`` content bytes can take (zstd's
    ``ZSTD_COMPRESSBOUND``, with room for the frame header and checksum): a reader refuses
    an object bigger than its content could compress to."""
    small = ((128 << 10) - length) >> 11 if length < 128 << 10 else 0
    return length + (length >> 8) + small + 64


def info_key(path: StorePath) -> str:
    return f"info/{path.hash_part}.json"


def object_key(digest: str) -> str:
    """The key of the object whose content (decompressed) has sha256 ``digest`` (hex)."""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return f"objects/{digest[:2]}/{digest}"


def fingerprint(
    path: StorePath, archive_hash: str, archive_size: int, references: list[StorePath]
) -> bytes:
    """What a signature signs, as UTF-8 with no trailing newline::

        mlpkg-cache-1;<path>;<archive hash>;<archive size>;<references, sorted, comma-joined>

    ``<path>`` and the references are store path base names (``<hash>-<name>``: store
    paths are independent of where a store lives); the archive hash is ``sha256:<hex>``.
    """
    refs = ",".join(sorted(str(r) for r in references))
    return f"{FINGERPRINT_PREFIX};{path};{archive_hash};{archive_size};{refs}".encode()


# -- cache-info.json ------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheInfo:
    """``cache-info.json``: the format version, the priority (lower is asked first), and
    the chunking and compression its objects were made with."""

    priority: int = DEFAULT_PRIORITY
    chunking: Chunking = CHUNKING
    compression: str = COMPRESSION

    def to_bytes(self) -> bytes:
        doc = {
            "format": CACHE_FORMAT,
            "version": VERSION,
            "priority": self.priority,
            "chunking": self.chunking.to_json(),
            "compression": self.compression,
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, cache: str) -> CacheInfo:
        doc = _json_object(data, cache, CACHE_INFO_KEY)
        _check_version(doc, CACHE_FORMAT, cache, CACHE_INFO_KEY)
        priority = doc.get("priority", DEFAULT_PRIORITY)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise CacheError(
                f"The cache {cache} has a {CACHE_INFO_KEY} whose priority is not an integer.",
                cache=cache,
            )
        compression = doc.get("compression")
        if compression != COMPRESSION:
            raise CacheError(
                f"The cache {cache} uses compression {compression!r}; this mlpkg reads "
                f"{COMPRESSION}.",
                cache=cache,
            )
        return cls(priority=priority)


# -- info/<hash>.json -----------------------------------------------------------------------


class _EntryModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str
    version: int
    path: str
    archive_hash: str = Field(pattern=_SHA)
    archive_size: int = Field(ge=0)
    references: list[str]
    recipe_hash: str = Field(pattern=_SHA)
    kind: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    deriver: dict[str, Any]
    listing: str = Field(pattern=_HEX64)
    listing_size: int = Field(ge=0)
    data_size: int = Field(ge=0)
    compression: str
    signatures: list[str]


@dataclass
class PathEntry:
    """One info file: a store path as a cache holds it.

    ``listing`` names the object holding the path's :class:`Listing`, ``listing_size``
    its compressed size, ``data_size`` the content bytes of every object the path needs,
    each counted once (at most what a reader with none of them downloads: objects are
    compressed). There is no single compressed file to hash: every object is named by
    the hash of its content, and the listing, named by its own, names them all. ``deriver`` is
    the derivation the path was made from; it is data, never run: substitution registers
    the derivation of its own plan."""

    path: StorePath
    archive_hash: str
    archive_size: int
    references: list[StorePath]
    recipe_hash: str
    kind: str
    deriver: dict[str, Any]
    listing: str
    listing_size: int
    data_size: int
    signatures: list[str] = field(default_factory=list)

    def fingerprint(self) -> bytes:
        return fingerprint(self.path, self.archive_hash, self.archive_size, self.references)

    def to_bytes(self) -> bytes:
        doc = {
            "format": INFO_FORMAT,
            "version": VERSION,
            "path": str(self.path),
            "archive_hash": self.archive_hash,
            "archive_size": self.archive_size,
            "references": sorted(str(r) for r in self.references),
            "recipe_hash": self.recipe_hash,
            "kind": self.kind,
            "deriver": self.deriver,
            "listing": self.listing,
            "listing_size": self.listing_size,
            "data_size": self.data_size,
            "compression": COMPRESSION,
            "signatures": self.signatures,
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, cache: str, expected: StorePath | None = None) -> PathEntry:
        """Parse an info file; with ``expected``, it must describe that path. Anything
        malformed (a path or reference that is not a store path name, e.g. one with a
        ``/``) raises CacheError naming the cache and the file."""
        key = info_key(expected) if expected else "an info file"
        doc = _json_object(data, cache, key)
        _check_version(doc, INFO_FORMAT, cache, key)
        try:
            m = _EntryModel.model_validate(doc)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise CacheError(
                f"In the cache {cache}, {key} is malformed: {where}: {err['msg']}.", cache=cache
            ) from None
        if m.compression != COMPRESSION:
            raise CacheError(
                f"The cache {cache} has {key} compressed with {m.compression!r}; this mlpkg "
                f"reads {COMPRESSION}.",
                cache=cache,
            )
        try:
            path = StorePath.parse(m.path)
            refs = [StorePath.parse(r) for r in m.references]
        except BadInput as e:
            raise CacheError(
                f"In the cache {cache}, {key} is malformed: {e.message}", cache=cache
            ) from None
        if expected is not None and path != expected:
            raise CacheError(
                f"The cache {cache} answered {key} with an entry for another path, {path}.",
                cache=cache,
            )
        return cls(
            path=path,
            archive_hash=m.archive_hash,
            archive_size=m.archive_size,
            references=refs,
            recipe_hash=m.recipe_hash,
            kind=m.kind,
            deriver=m.deriver,
            listing=m.listing,
            listing_size=m.listing_size,
            data_size=m.data_size,
            signatures=list(m.signatures),
        )


# -- listings -------------------------------------------------------------------------------

ChunkRef = tuple[str, int]  # (sha256 hex of the chunk, its length)


@dataclass
class Entry:
    """One entry of a tree, in archive order (a directory before what it holds, names
    sorted as bytes). ``path`` is relative to the root ("" is the root itself). ``type``
    is ``d``, ``l`` (``target``), ``f`` or ``x`` (a regular file, executable or not, of
    ``size`` bytes: from ``chunks``, or, when ``chunks`` is None, the next ``size`` bytes
    of the pack stream)."""

    path: str
    type: str
    size: int = 0
    chunks: list[ChunkRef] | None = None
    target: str = ""

    def to_json(self) -> list[Any]:
        if self.type == "d":
            return [self.path, "d"]
        if self.type == "l":
            return [self.path, "l", self.target]
        chunks = None if self.chunks is None else [list(c) for c in self.chunks]
        return [self.path, self.type, self.size, chunks]


@dataclass
class Listing:
    """How to put a path's tree back together: its entries and its pack stream's chunks."""

    entries: list[Entry]
    pack: list[ChunkRef]

    def to_bytes(self) -> bytes:
        doc = {
            "format": LISTING_FORMAT,
            "version": VERSION,
            "entries": [e.to_json() for e in self.entries],
            "pack": [list(c) for c in self.pack],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def objects(self) -> list[ChunkRef]:
        """Every chunk this listing needs, in the order a restore reads them, repeats
        dropped."""
        seen: dict[str, int] = {}
        for e in self.entries:
            for digest, length in e.chunks or ():
                seen.setdefault(digest, length)
        for digest, length in self.pack:
            seen.setdefault(digest, length)
        return list(seen.items())

    @classmethod
    def from_bytes(cls, data: bytes, cache: str, path: StorePath) -> Listing:
        what = f"the listing of {path}"
        doc = _json_object(data, cache, what)
        _check_version(doc, LISTING_FORMAT, cache, what)
        try:
            entries = [_entry(raw) for raw in doc["entries"]]
            pack = [_chunk(c) for c in doc["pack"]]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise CacheError(
                f"The cache {cache} has a malformed listing for {path}: {e}.", cache=cache
            ) from None
        return cls(entries, pack)


def _entry(raw: list[Any]) -> Entry:
    path, kind = raw[0], raw[1]
    if not isinstance(path, str):
        raise ValueError(f"entry path {path!r} is not a string")
    if kind == "d" and len(raw) == 2:
        return Entry(path, "d")
    if kind == "l" and len(raw) == 3 and isinstance(raw[2], str):
        return Entry(path, "l", target=raw[2])
    if kind in ("f", "x") and len(raw) == 4:
        size = raw[2]
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"entry {path!r} has a bad size")
        chunks = None if raw[3] is None else [_chunk(c) for c in raw[3]]
        if chunks is not None and sum(n for _, n in chunks) != size:
            raise ValueError(f"the chunks of {path!r} do not add up to its size")
        return Entry(path, kind, size, chunks)
    raise ValueError(f"entry {raw[:2]!r} is not a directory, symlink or file")


def _chunk(raw: list[Any]) -> ChunkRef:
    digest, length = raw
    object_key(digest)  # validates the digest
    if not isinstance(length, int) or not 0 < length <= MAX_OBJECT:
        raise ValueError(f"chunk {digest} has a bad length {length!r}")
    return digest, length


def _json_object(data: bytes, cache: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"In the cache {cache}, {what} is malformed: {e}.", cache=cache) from None
    if not isinstance(doc, dict):
        raise CacheError(
            f"In the cache {cache}, {what} is malformed: not a JSON object.", cache=cache
        )
    return doc


def _check_version(doc: dict[str, Any], fmt: str, cache: str, what: str) -> None:
    if doc.get("format") != fmt:
        raise CacheError(f"In the cache {cache}, {what} is not an {fmt} document.", cache=cache)
    if doc.get("version") != VERSION:
        raise FormatVersionError(
            f"The cache {cache} has {what} in format version {doc.get('version')}; this mlpkg "
            f"reads version {VERSION}."
        )
