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

import contextlib
import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import zstandard

from mlpkg.cache.format import MAX_LISTING, ChunkRef, Listing
from mlpkg.errors import CacheError
from mlpkg.store.archive import MAGIC, StreamScan
from mlpkg.store.space import is_full

Progress = Callable[[int], None] | None
SYNC_JOBS = 4  # files fsynced at once while a tree is restored
SYNC_AHEAD = 64  # files written but not yet fsynced, at most (each holds a descriptor)

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


def archive_size(listing: Listing) -> int:
    """The size of the canonical archive of the tree ``listing`` describes
    (:mod:`mlpkg.store.archive`): checked against the signed size before anything is
    fetched, so a listing cannot make a substitution write more than was signed for."""
    size = len(MAGIC) + 4
    for e in listing.entries:
        if e.path:
            size += 8 + len(os.fsencode(e.path.rpartition("/")[2]))
        if e.type == "d":
            size += 9
        elif e.type == "l":
            size += 9 + len(os.fsencode(e.target))
        else:
            size += 10 + e.size
    return size


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
) -> Generator[bytes, None, None]:
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
    scan: StreamScan | None = None,
) -> None:
    """Write the tree of ``listing`` at ``dest`` (which must not exist), fetching objects
    with ``fetch`` (chunks ``local`` gives are not fetched). A malformed listing or a
    corrupt object raises CacheError naming ``cache``; what was written is left for the
    caller to remove. With ``scan``, every entry and byte written is fed to it, in
    archive order (a listing in any other order is malformed), so that its result is the
    scan of ``dest`` without reading it again."""
    try:
        chunks = _ahead(read_order(listing), fetch, cache, workers, window, local)
        with contextlib.closing(chunks), _Syncer() as syncer:
            _write(listing, dest, _Stream(chunks), progress, syncer, scan)
    except OSError as e:
        if is_full(e):
            raise  # the store names the full disk
        raise CacheError(
            f"The cache {cache} has a listing whose tree cannot be written here: "
            f"{e.strerror} ({e.filename}).",
            cache=cache,
        ) from None
    except ValueError as e:
        raise CacheError(f"The cache {cache} has a malformed listing: {e}.", cache=cache) from None


class _Syncer:
    """fsyncs files as they are finished, in the background, so that the store's own
    sync of the tree before it becomes valid finds little left to do. Takes over the
    file descriptors it is given (at most :data:`SYNC_AHEAD` open at once)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(SYNC_JOBS, thread_name_prefix="mlpkg-fsync")
        self.slots = threading.BoundedSemaphore(SYNC_AHEAD)

    def add(self, fd: int) -> None:
        self.slots.acquire()
        try:
            self.pool.submit(self._sync, fd)
        except BaseException:
            self.slots.release()
            os.close(fd)
            raise

    def _sync(self, fd: int) -> None:
        try:
            with contextlib.suppress(OSError):  # the store's sync_tree reports failures
                os.fsync(fd)
        finally:
            os.close(fd)
            self.slots.release()

    def __enter__(self) -> _Syncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True)


def _write_file(
    fd: int, pieces: Iterable[bytes | memoryview], progress: Progress, scan: StreamScan | None
) -> None:
    for piece in pieces:
        if scan is not None:
            scan.data(piece)
        view = memoryview(piece)
        while view:
            view = view[os.write(fd, view) :]
        if progress is not None:
            progress(len(piece))


def _write(
    listing: Listing,
    dest: Path,
    stream: _Stream,
    progress: Progress,
    syncer: _Syncer,
    scan: StreamScan | None,
) -> None:
    entries = listing.entries
    if not entries or entries[0].path != "":
        raise ValueError("the first entry is not the root")
    children: dict[str, list[str]] = {}
    for e in entries[1:]:
        parent, _, name = e.path.rpartition("/")
        children.setdefault(parent, []).append(name)
    dirs: set[str] = set()
    seen: set[str] = set()
    for i, e in enumerate(entries):
        if i and e.path == "":
            raise ValueError("the root appears twice")
        target = dest if i == 0 else _child(dest, e.path, dirs, seen)
        if e.type == "d":
            os.mkdir(target)
            dirs.add(e.path)
            if scan is not None:
                scan.directory(e.path, children.get(e.path, []))
        elif e.type == "l":
            os.symlink(e.target, target)
            if scan is not None:
                scan.symlink(e.path, e.target)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(target, flags, 0o600)
            os.fchmod(fd, 0o755 if e.type == "x" else 0o644)  # whatever the umask or ACLs say
            if e.chunks is None:
                pieces: Iterable[bytes | memoryview] = stream.take_pack(e.size)
            else:
                pieces = (stream.chunk() for _ in e.chunks)
            try:
                if scan is not None:
                    scan.file(e.path, e.type == "x", e.size)
                _write_file(fd, pieces, progress, scan)
                if scan is not None:
                    scan.end_file()
            except BaseException:
                os.close(fd)
                raise
            syncer.add(fd)
    if not stream.exhausted():
        raise ValueError("the objects hold more bytes than the files")
