"""A listing and its objects put back together into a tree (the reverse of
:func:`mlpkg.cache.chunks.cut`).

Objects are fetched ahead, a few at a time, by a thread pool; each is decompressed and
checked against its name (the sha256 of its content) in the worker, and written in order by
the caller's thread. At most ``window`` chunks (each at most
:data:`~mlpkg.cache.format.MAX_OBJECT` bytes) are held at once: a path of any size streams
through. The tree is written at a location that must not exist; entry names are checked
so that nothing is written outside it, whatever the listing says.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import zstandard

from mlpkg.cache.format import MAX_LISTING, ChunkRef, Listing
from mlpkg.errors import CacheError

Fetch = Callable[[str], bytes]
"""Returns the compressed object named by a digest (raises CacheError when it cannot)."""
Local = Callable[[str, int], bytes | None]
"""Returns a chunk's content, checked, from somewhere local (None: fetch it)."""


def decode(data: bytes, digest: str, length: int, cache: str) -> bytes:
    """The content of an object, checked: ``length`` bytes whose sha256 is ``digest``.
    A frame whose header states another size is refused before it is decompressed (the
    decompressor would otherwise allocate what the header says, whatever ``length``)."""
    try:
        stated = zstandard.frame_content_size(data)
        if stated not in (-1, length):
            raise CacheError(
                f"The cache {cache} has a corrupt object {digest}: its frame holds {stated} "
                f"bytes, not {length}.",
                cache=cache,
            )
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=length)
    except zstandard.ZstdError as e:
        raise CacheError(
            f"The cache {cache} has a corrupt object {digest}: {e}.", cache=cache
        ) from None
    if len(out) != length or hashlib.sha256(out).hexdigest() != digest:
        raise CacheError(
            f"The cache {cache} has a corrupt object {digest}: its content does not match "
            "its name.",
            cache=cache,
        )
    return out


def decode_listing(data: bytes, digest: str, cache: str) -> bytes:
    """The content of a listing object, checked against its name; at most
    :data:`~mlpkg.cache.format.MAX_LISTING` bytes, whatever its frame header claims."""
    try:
        parts, total = [], 0
        with zstandard.ZstdDecompressor().stream_reader(data) as reader:
            while total <= MAX_LISTING and (piece := reader.read(1 << 20)):
                parts.append(piece)
                total += len(piece)
        out = b"".join(parts)
    except zstandard.ZstdError as e:
        raise CacheError(
            f"The cache {cache} has a corrupt listing {digest}: {e}.", cache=cache
        ) from None
    if len(out) > MAX_LISTING or hashlib.sha256(out).hexdigest() != digest:
        raise CacheError(
            f"The cache {cache} has a corrupt listing {digest}: its content does not match "
            "its name.",
            cache=cache,
        )
    return out


def read_order(listing: Listing) -> list[ChunkRef]:
    """The chunks in the order :func:`restore` consumes them: each file's own chunks where
    the file is, and pack chunks as the small files before them need them."""
    order: list[ChunkRef] = []
    pack = iter(listing.pack)
    available = 0  # pack bytes scheduled but not yet consumed
    for e in listing.entries:
        if e.type not in ("f", "x"):
            continue
        if e.chunks is not None:
            order += e.chunks
            continue
        while available < e.size:
            ref = next(pack, None)
            if ref is None:
                raise ValueError("the pack stream is shorter than its files")
            order.append(ref)
            available += ref[1]
        available -= e.size
    order += list(pack)  # a pack longer than its files is caught by restore
    return order


def _ahead(
    order: list[ChunkRef],
    fetch: Fetch,
    cache: str,
    workers: int,
    window: int,
    local: Local | None = None,
) -> Iterator[bytes]:
    """The decoded chunks of ``order``, in order, fetched up to ``window`` ahead (taken
    from ``local`` where it has them)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlpkg-fetch") as pool:
        pending: deque[Future[bytes]] = deque()
        todo = iter(order)

        def job(ref: ChunkRef) -> bytes:
            found = local(*ref) if local is not None else None
            return found if found is not None else decode(fetch(ref[0]), ref[0], ref[1], cache)

        try:
            for ref in todo:
                pending.append(pool.submit(job, ref))
                if len(pending) >= window:
                    break
            while pending:
                data = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(job, nxt))
                yield data
        finally:
            for f in pending:
                f.cancel()


class _Stream:
    """The decoded chunks in read order: a file's own chunks are taken whole, small files
    take bytes of the pack stream (whose chunks arrive just before the file that first
    needs them, see :func:`read_order`)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pack = memoryview(b"")

    def chunk(self) -> bytes:
        nxt = next(self.chunks, None)
        if nxt is None:
            raise ValueError("the objects end before the files do")
        return nxt

    def take_pack(self, n: int) -> Iterator[memoryview]:
        while n:
            if not self.pack:
                self.pack = memoryview(self.chunk())
            piece, self.pack = self.pack[:n], self.pack[n:]
            n -= len(piece)
            yield piece

    def exhausted(self) -> bool:
        return not self.pack and next(self.chunks, None) is None


def _child(dest: Path, rel: str, dirs: set[str], seen: set[str]) -> Path:
    """Where entry ``rel`` goes: a new name in a directory the listing made (so never
    outside ``dest``, nor through a symlink)."""
    parent, _, name = rel.rpartition("/")
    if (
        parent not in dirs
        or rel.startswith("/")
        or name in ("", ".", "..")
        or "\x00" in name  # a backslash is an ordinary character in a POSIX name
    ):
        raise ValueError(f"the entry {rel!r} is not inside a directory of the listing")
    if rel in seen:
        raise ValueError(f"the entry {rel!r} appears twice")
    seen.add(rel)
    # Joined name by name: ``dest / "/x"`` would be ``/x``.
    return (dest / parent / name) if parent else dest / name


def restore(
    listing: Listing,
    dest: Path,
    fetch: Fetch,
    cache: str,
    *,
    workers: int = 4,
    window: int = 8,
    progress: Callable[[int], None] | None = None,
    local: Local | None = None,
) -> None:
    """Write the tree of ``listing`` at ``dest`` (which must not exist), fetching objects
    with ``fetch`` (chunks ``local`` gives are not fetched). A malformed listing or a
    corrupt object raises CacheError naming ``cache``; what was written is left for the
    caller to remove."""
    try:
        chunks = _ahead(read_order(listing), fetch, cache, workers, window, local)
        _write(listing, dest, _Stream(chunks), progress)
    except ValueError as e:
        raise CacheError(f"The cache {cache} has a malformed listing: {e}.", cache=cache) from None


def _write(
    listing: Listing, dest: Path, stream: _Stream, progress: Callable[[int], None] | None
) -> None:
    entries = listing.entries
    if not entries or entries[0].path != "":
        raise ValueError("the first entry is not the root")
    dirs: set[str] = set()
    seen: set[str] = set()
    for i, e in enumerate(entries):
        if i and e.path == "":
            raise ValueError("the root appears twice")
        target = dest if i == 0 else _child(dest, e.path, dirs, seen)
        if e.type == "d":
            os.mkdir(target)
            dirs.add(e.path)
        elif e.type == "l":
            os.symlink(e.target, target)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(target, flags, 0o755 if e.type == "x" else 0o644)
            with os.fdopen(fd, "wb") as f:
                if e.chunks is None:
                    pieces: Iterable[bytes | memoryview] = stream.take_pack(e.size)
                else:
                    pieces = (stream.chunk() for _ in e.chunks)
                for piece in pieces:
                    f.write(piece)
                    if progress is not None:
                        progress(len(piece))
    if not stream.exhausted():
        raise ValueError("the objects hold more bytes than the files")
