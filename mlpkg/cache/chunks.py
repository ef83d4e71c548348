"""A store path cut into content-defined chunks, and a chunk compressed into an object.

:func:`cut` walks a tree in archive order (:mod:`mlpkg.store.archive`) and returns its
:class:`~mlpkg.cache.format.Listing` with, for every chunk, where its bytes are
(:class:`Chunks`). Files of ``small_file`` bytes or more are cut one by one, so a file
is stored the same way whatever path holds it; smaller files are concatenated into the
pack stream, cut as one (:class:`~mlpkg.cache.format.Chunking`). Only the chunk digests
are kept in memory; :meth:`Chunks.compressed` reads one chunk again when it is uploaded.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from pyfastcdc import FastCDC

from mlpkg.cache.format import CHUNKING, ZSTD_LEVEL, ChunkRef, Entry, Listing
from mlpkg.errors import StoreError

Segment = tuple[Path, int, int]  # (file, offset in the file, length)


def _chunker() -> FastCDC:
    c = CHUNKING
    return FastCDC(
        c.avg_size,
        min_size=c.min_size,
        max_size=c.max_size,
        normalized_chunking=c.normalization,  # type: ignore[arg-type]
        seed=c.seed,
    )


@dataclass
class Chunks:
    """Where each chunk of a listing is: its segments of files in the tree."""

    where: dict[str, list[Segment]] = field(default_factory=dict)

    def read(self, digest: str) -> bytes:
        parts = []
        for file, offset, length in self.where[digest]:
            with open(file, "rb") as f:
                f.seek(offset)
                data = f.read(length)
            if len(data) != length:
                raise StoreError(f"'{file}' changed while it was being pushed.")
            parts.append(data)
        return b"".join(parts)

    def compressed(self, digest: str) -> bytes:
        """The object of chunk ``digest``: its bytes, read again and checked, as one zstd
        frame (with the content size in its header)."""
        data = self.read(digest)
        if hashlib.sha256(data).hexdigest() != digest:
            raise StoreError(f"A file changed while it was being pushed (chunk {digest}).")
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


class _PackReader:
    """The small files of a tree, concatenated, as a stream with ``readinto``; it records
    which file segments each offset range came from."""

    def __init__(self, files: list[tuple[Path, int]]) -> None:
        self.files = files
        self.index = 0
        self.offset_in_file = 0
        self.position = 0
        self.segments: list[tuple[int, Path, int, int]] = []  # (stream offset, file, off, len)

    def readinto(self, buf: memoryview) -> int:
        filled = 0
        while filled < len(buf) and self.index < len(self.files):
            file, size = self.files[self.index]
            want = min(len(buf) - filled, size - self.offset_in_file)
            with open(file, "rb") as f:
                f.seek(self.offset_in_file)
                n = f.readinto(buf[filled : filled + want])
            if n != want:
                raise StoreError(f"'{file}' changed size while it was being pushed.")
            self.segments.append((self.position, file, self.offset_in_file, n))
            filled += n
            self.position += n
            self.offset_in_file += n
            if self.offset_in_file == size:
                self.index += 1
                self.offset_in_file = 0
        return filled

    def segments_of(self, start: int, length: int) -> list[Segment]:
        out: list[Segment] = []
        end = start + length
        for pos, file, off, n in self.segments:
            lo, hi = max(pos, start), min(pos + n, end)
            if lo < hi:
                out.append((file, off + (lo - pos), hi - lo))
        return out


def _walk(root: Path, rel: str = "") -> Iterator[tuple[Path, str, os.stat_result]]:
    """Every entry of a tree in archive order (names sorted as bytes, parents first)."""
    st = os.lstat(root)
    yield root, rel, st
    if stat.S_ISDIR(st.st_mode):
        for raw in sorted(os.fsencode(n) for n in os.listdir(root)):
            name = os.fsdecode(raw)
            yield from _walk(root / name, f"{rel}/{name}" if rel else name)


def cut(root: Path) -> tuple[Listing, Chunks]:
    """The listing of the tree at ``root`` and where its chunks are."""
    chunker = _chunker()
    chunks = Chunks()
    entries: list[Entry] = []
    small: list[tuple[Path, int]] = []
    for path, rel, st in _walk(root):
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            entries.append(Entry(rel, "d"))
        elif stat.S_ISLNK(mode):
            entries.append(Entry(rel, "l", target=os.readlink(path)))
        elif stat.S_ISREG(mode):
            kind = "x" if mode & stat.S_IXUSR else "f"
            if st.st_size < CHUNKING.small_file:
                entries.append(Entry(rel, kind, st.st_size, None))
                if st.st_size:
                    small.append((path, st.st_size))
            else:
                refs = _cut_file(chunker, path, chunks)
                if sum(n for _, n in refs) != st.st_size:
                    raise StoreError(f"'{path}' changed size while it was being pushed.")
                entries.append(Entry(rel, kind, st.st_size, refs))
        else:
            raise StoreError(f"'{path}' is not a regular file, directory or symlink.")
    return Listing(entries, _cut_pack(chunker, small, chunks)), chunks


def _cut_file(chunker: FastCDC, path: Path, chunks: Chunks) -> list[ChunkRef]:
    refs: list[ChunkRef] = []
    for c in chunker.cut_file(path):
        digest = hashlib.sha256(c.data).hexdigest()
        chunks.where.setdefault(digest, [(path, c.offset, c.length)])
        refs.append((digest, c.length))
    return refs


def _cut_pack(chunker: FastCDC, small: list[tuple[Path, int]], chunks: Chunks) -> list[ChunkRef]:
    reader = _PackReader(small)
    refs: list[ChunkRef] = []
    for c in chunker.cut_stream(reader):
        digest = hashlib.sha256(c.data).hexdigest()
        if digest not in chunks.where:
            chunks.where[digest] = reader.segments_of(c.offset, c.length)
        refs.append((digest, c.length))
        # Segments before this chunk's end are no longer needed for later chunks.
        end = c.offset + c.length
        reader.segments = [s for s in reader.segments if s[0] + s[3] > end]
    return refs
