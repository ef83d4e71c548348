"""The canonical archive format of a store path, version 1, and its sha256.

An archive serialises a file tree with only what makes it reproducible: sorted entries,
file contents, the executable bit and symlink targets. No timestamps, owners or other
modes. Its sha256 is the store path's content hash (recorded in the database, compared by
``verify`` and by lockfiles).

Byte layout (all integers unsigned 64-bit little-endian)::

    archive   := MAGIC VERSION(u32 LE) node
    node      := b"R" exec(1 byte: 0|1) size(u64) contents
               | b"S" len(u64) target
               | b"D" count(u64) { namelen(u64) name node }*count   (names sorted as bytes)

The root may be a regular file, a symlink or a directory. ``MAGIC`` and the version make
the format self-describing; a reader refuses versions it does not know.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mlpkg.errors import FormatVersionError, StoreError

if TYPE_CHECKING:
    from hashlib import _Hash

MAGIC = b"mlpkg-archive\x00"
VERSION = 1
_U64 = struct.Struct("<Q")
_CHUNK = 1 << 20
_THREADED = 64 * 1024  # pieces from this size on are hashed twice at once (two threads)
_SMALL = 64 * 1024  # files under this size are read in one piece

Sink = Callable[[bytes | memoryview], object]
_GROUP = 8  # forbidden strings sharing a prefix this long are searched for by it first


def _shared(a: bytes, b: bytes) -> bytes:
    """The longest common prefix of ``a`` and ``b`` (byte by byte)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


class _Needles:
    """The forbidden strings, searched group by group: those sharing a prefix of
    :data:`_GROUP` bytes or more (the store and the build directory, under one home) are
    looked for by that prefix, one pass over the data for the group, and in full only
    where it occurs."""

    def __init__(self, forbid: Sequence[bytes]) -> None:
        groups: list[tuple[bytes, list[bytes]]] = []
        for f in sorted({f for f in forbid if f}):  # sorted: long shared prefixes adjoin
            if groups and len(p := _shared(groups[-1][0], f)) >= _GROUP:
                groups[-1] = (p, [*groups[-1][1], f])
            else:
                groups.append((f, [f]))
        self.groups = groups

    def within(self, data: bytes | bytearray, end: int | None = None) -> bool:
        """Whether a forbidden string is in ``data[:end]``."""
        end = len(data) if end is None else end
        for prefix, members in self.groups:
            if data.find(prefix, 0, end) == -1:
                continue
            if len(members) == 1 or any(data.find(m, 0, end) != -1 for m in members):
                return True
        return False


@dataclass
class ManifestEntry:
    """One entry of a tree: ``kind`` is ``f`` (file), ``x`` (executable), ``l`` or ``d``."""

    path: str
    kind: str
    size: int = 0
    digest: str = ""  # sha256 hex for files, the target for symlinks


@dataclass
class ArchiveInfo:
    """What :func:`scan` learnt about a tree."""

    sha256: str  # hex digest of the archive
    size: int  # bytes of the archive
    manifest: list[ManifestEntry] = field(default_factory=list)
    forbidden_in: list[str] = field(default_factory=list)  # entries naming a ``forbid`` string

    @property
    def hash(self) -> str:
        return f"sha256:{self.sha256}"


class _Writer:
    """Feeds archive bytes to a sink while counting and, optionally, collecting facts."""

    def __init__(self, sink: Sink, manifest: bool, forbid: Sequence[bytes]) -> None:
        self.sink = sink
        self.size = 0
        self.want_manifest = manifest
        self.manifest: list[ManifestEntry] = []
        self.forbid = [f for f in forbid if f]
        self.needles = _Needles(self.forbid)
        self.overlap = max((len(f) for f in self.forbid), default=1) - 1
        self.forbidden_in: list[str] = []
        self.buf = bytearray(_CHUNK)
        self.hasher: ThreadPoolExecutor | None = None

    def put(self, data: bytes | memoryview) -> None:
        self.sink(data)
        self.size += len(data)

    def node(self, path: str, rel: str) -> None:
        # Paths are plain strings here: pathlib's joins cost more than the hashing of a
        # small file.
        st = os.lstat(path)
        mode = st.st_mode
        if stat.S_ISREG(mode):
            self.regular(path, rel, st.st_size, bool(mode & stat.S_IXUSR))
        elif stat.S_ISLNK(mode):
            target = os.readlink(path)
            raw = os.fsencode(target)
            self.put(b"S" + _U64.pack(len(raw)) + raw)
            if any(f in raw for f in self.forbid):
                self.forbidden_in.append(rel)
            if self.want_manifest:
                self.manifest.append(ManifestEntry(rel, "l", len(raw), target))
        elif stat.S_ISDIR(mode):
            names = sorted(os.fsencode(n) for n in os.listdir(path))
            self.put(b"D" + _U64.pack(len(names)))
            if self.want_manifest:
                self.manifest.append(ManifestEntry(rel, "d"))
            for raw in names:
                self.put(_U64.pack(len(raw)) + raw)
                name = os.fsdecode(raw)
                self.node(f"{path}/{name}", f"{rel}/{name}" if rel else name)
        else:
            raise StoreError(f"'{path}' is not a regular file, directory or symlink.")

    def regular(self, path: str, rel: str, size: int, executable: bool) -> None:
        self.put(b"R" + (b"\x01" if executable else b"\x00") + _U64.pack(size))
        file_hash = hashlib.sha256() if self.want_manifest else None
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if size < _SMALL:  # one read (and the byte past the end, to see growth)
                seen, found = self._small(fd, size, file_hash)
            else:
                seen, found = self._pieces(fd, file_hash)
        finally:
            os.close(fd)
        if seen != size:
            raise StoreError(f"'{path}' changed size while it was being archived.")
        if found:
            self.forbidden_in.append(rel)
        self.size += size
        if file_hash is not None:
            kind = "x" if executable else "f"
            self.manifest.append(ManifestEntry(rel, kind, size, file_hash.hexdigest()))

    def _small(self, fd: int, size: int, file_hash: _Hash | None) -> tuple[int, bool]:
        """Feed a file of ``size`` < :data:`_SMALL` bytes; return (bytes read, whether a
        forbidden string is in it)."""
        data = os.read(fd, size + 1)
        while len(data) < size + 1 and (more := os.read(fd, size + 1 - len(data))):
            data += more  # a short read that was not the end
        if file_hash is not None:
            file_hash.update(data)
        self.sink(data)
        return len(data), bool(self.forbid) and self.needles.within(data)

    def _pieces(self, fd: int, file_hash: _Hash | None) -> tuple[int, bool]:
        """Feed a file piece by piece through the reused buffer; as :meth:`_small`."""
        view = memoryview(self.buf)
        seen = 0
        tail = b""
        found = False
        while n := os.readv(fd, [self.buf]):
            chunk = view[:n]
            # The file's own hash runs in a helper thread beside the archive's (hashlib
            # lets go of the GIL): both read the buffer, neither changes it.
            pending = None
            if file_hash is not None and n >= _THREADED:
                pending = self._hasher().submit(file_hash.update, chunk)
            elif file_hash is not None:
                file_hash.update(chunk)
            try:
                self.sink(chunk)
                if self.forbid and not found:
                    found, tail = self._search(n, tail)
            finally:
                if pending is not None:
                    pending.result()
            seen += n
        return seen, found

    def _search(self, n: int, tail: bytes) -> tuple[bool, bytes]:
        """Whether a forbidden string is in the first ``n`` bytes of the buffer, or spans
        from ``tail`` (the end of the previous piece) into them; and the new tail."""
        buf, k = self.buf, self.overlap
        if self.needles.within(buf, n):
            return True, b""
        seam = tail + bytes(buf[: min(k, n)])
        if any(f in seam for f in self.forbid):
            return True, b""
        if not k:
            return False, b""
        return False, bytes(buf[n - k : n]) if n >= k else (tail + bytes(buf[:n]))[-k:]

    def _hasher(self) -> ThreadPoolExecutor:
        """The thread that hashes files while the archive is hashed (started on first use;
        :func:`dump` shuts it down)."""
        if self.hasher is None:
            self.hasher = ThreadPoolExecutor(1, thread_name_prefix="mlpkg-hash")
        return self.hasher


def dump(
    path: Path, sink: Sink, *, manifest: bool = False, forbid: Sequence[bytes] = ()
) -> _Writer:
    """Write the archive of ``path`` to ``sink`` (called with successive byte chunks)."""
    writer = _Writer(sink, manifest, forbid)
    try:
        writer.put(MAGIC + struct.pack("<I", VERSION))
        writer.node(os.fspath(path), "")
    finally:
        if writer.hasher is not None:
            writer.hasher.shutdown()
    return writer


def scan(path: Path, *, manifest: bool = False, forbid: Sequence[bytes] = ()) -> ArchiveInfo:
    """Hash the archive of ``path`` without materialising it.

    With ``manifest``, also list every entry with its own sha256 (``verify`` uses it to name
    the file that changed). With ``forbid``, list the files whose bytes, and the symlinks
    whose targets, contain any of those strings (the store root must not appear in store
    content: invariant 3).
    """
    h = hashlib.sha256()
    writer = dump(path, h.update, manifest=manifest, forbid=forbid)
    return ArchiveInfo(h.hexdigest(), writer.size, writer.manifest, writer.forbidden_in)


def write(path: Path, out: BinaryIO) -> ArchiveInfo:
    """Write the archive of ``path`` to a binary file object and return its hash and size."""
    h = hashlib.sha256()

    def sink(data: bytes | memoryview) -> None:
        h.update(data)
        out.write(data)

    writer = dump(path, sink)
    return ArchiveInfo(h.hexdigest(), writer.size)


class _Reader:
    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise StoreError("The archive is truncated.")
        return data

    def u64(self) -> int:
        value: int = _U64.unpack(self.read(8))[0]
        return value

    def node(self, dest: Path) -> None:
        tag = self.read(1)
        if tag == b"R":
            executable = self.read(1) == b"\x01"
            remaining = self.u64()
            with open(dest, "xb") as f:
                while remaining:
                    chunk = self.read(min(remaining, _CHUNK))
                    f.write(chunk)
                    remaining -= len(chunk)
            os.chmod(dest, 0o755 if executable else 0o644)
        elif tag == b"S":
            os.symlink(os.fsdecode(self.read(self.u64())), dest)
        elif tag == b"D":
            os.mkdir(dest)
            previous = b""
            for _ in range(self.u64()):
                raw = self.read(self.u64())
                if raw <= previous or raw in (b".", b"..") or b"/" in raw or b"\x00" in raw:
                    raise StoreError(f"The archive has a bad entry name {raw!r}.")
                previous = raw
                self.node(dest / os.fsdecode(raw))
        else:
            raise StoreError(f"The archive has an unknown node tag {tag!r}.")


def restore(stream: BinaryIO, dest: Path) -> None:
    """Recreate the tree of an archive at ``dest`` (which must not exist)."""
    reader = _Reader(stream)
    magic = reader.read(len(MAGIC))
    if magic != MAGIC:
        raise StoreError("This is not an mlpkg archive.")
    (version,) = struct.unpack("<I", reader.read(4))
    if version != VERSION:
        raise FormatVersionError(
            f"The archive has format version {version}; this mlpkg reads version {VERSION}."
        )
    reader.node(Path(dest))
    if stream.read(1):
        raise StoreError("The archive has trailing data.")


class StreamScan:
    """What :func:`scan` learns of a tree, learnt from whoever writes the tree while it
    writes it, so that the tree need not be read again (substitution: the restorer feeds
    it the bytes it writes).

    Entries come in archive order, each after its parent: :meth:`directory` (with the names
    it will hold), :meth:`symlink`, or :meth:`file` followed by :meth:`data` pieces and
    :meth:`end_file`. Any other order raises ValueError, so that :meth:`result` is exactly
    what :func:`scan` of the written tree gives (hash, size, manifest, ``forbid`` hits).
    """

    def __init__(self, forbid: Sequence[bytes] = ()) -> None:
        self.hash = hashlib.sha256()
        self.size = 0
        self.manifest: list[ManifestEntry] = []
        self.forbidden_in: list[str] = []
        self.forbid = [f for f in forbid if f]
        self.needles = _Needles(self.forbid)
        self.overlap = max((len(f) for f in self.forbid), default=1) - 1
        self.dirs: list[tuple[str, list[bytes], list[int]]] = []  # (rel, names, [next])
        self.started = False
        self.open: tuple[str, str, int] | None = None  # the file being written
        self.remaining = 0
        self.file_hash = hashlib.sha256()
        self.known: str | None = None  # the file's digest, given by the writer
        self.tail = b""
        self.found = False
        self.hasher: ThreadPoolExecutor | None = None
        self._put(MAGIC + struct.pack("<I", VERSION))

    def close(self) -> None:
        """Stop the helper thread (started for big pieces); the scan is unusable after."""
        if self.hasher is not None:
            self.hasher.shutdown()
            self.hasher = None

    def _put(self, data: bytes | memoryview) -> None:
        self.hash.update(data)
        self.size += len(data)

    def _enter(self, rel: str) -> None:
        if self.open is not None:
            raise ValueError(f"{rel!r} begins before the file {self.open[0]!r} ends")
        if not self.started:
            if rel != "":
                raise ValueError(f"the first entry is {rel!r}, not the root")
            self.started = True
            return
        while self.dirs and self.dirs[-1][2][0] == len(self.dirs[-1][1]):
            self.dirs.pop()
        if not self.dirs:
            raise ValueError(f"{rel!r} comes after the tree is complete")
        parent, names, nxt = self.dirs[-1]
        where, _, name = rel.rpartition("/")
        raw = os.fsencode(name)
        if where != parent or raw != names[nxt[0]]:
            raise ValueError(f"{rel!r} is out of archive order")
        nxt[0] += 1
        self._put(_U64.pack(len(raw)) + raw)

    def directory(self, rel: str, names: Sequence[str]) -> None:
        self._enter(rel)
        raw = sorted(os.fsencode(n) for n in names)
        if len(set(raw)) != len(raw):
            raise ValueError(f"the directory {rel!r} holds a name twice")
        self._put(b"D" + _U64.pack(len(raw)))
        self.manifest.append(ManifestEntry(rel, "d"))
        self.dirs.append((rel, raw, [0]))

    def symlink(self, rel: str, target: str) -> None:
        self._enter(rel)
        raw = os.fsencode(target)
        self._put(b"S" + _U64.pack(len(raw)) + raw)
        if any(f in raw for f in self.forbid):
            self.forbidden_in.append(rel)
        self.manifest.append(ManifestEntry(rel, "l", len(raw), target))

    def file(self, rel: str, executable: bool, size: int, digest: str | None = None) -> None:
        """Begin a file. ``digest``, when the writer has it already (the sha256 hex of
        exactly the bytes it will feed, computed by itself), is taken for the manifest
        instead of hashing the file's bytes a second time."""
        self._enter(rel)
        self._put(b"R" + (b"\x01" if executable else b"\x00") + _U64.pack(size))
        self.open = (rel, "x" if executable else "f", size)
        self.remaining = size
        self.known = digest
        self.file_hash = hashlib.sha256()
        self.tail, self.found = b"", False

    def data(self, piece: bytes | memoryview) -> None:
        if self.open is None or len(piece) > self.remaining:
            raise ValueError("file data beyond the file's size")
        buf = piece if isinstance(piece, bytes) else bytes(piece)
        pending = None
        own = self.known is None  # else the writer hashed the file itself
        if own and len(buf) >= _THREADED:  # the file's hash beside the archive's (as _Writer)
            if self.hasher is None:
                self.hasher = ThreadPoolExecutor(1, thread_name_prefix="mlpkg-hash")
            pending = self.hasher.submit(self.file_hash.update, buf)
        elif own:
            self.file_hash.update(buf)
        try:
            self._put(buf)
            if self.forbid and not self.found:
                k = self.overlap
                seam = self.tail + buf[:k]
                self.found = any(f in seam for f in self.forbid) or self.needles.within(buf)
                self.tail = (self.tail + buf[-k:])[-k:] if k else b""
        finally:
            if pending is not None:
                pending.result()
        self.remaining -= len(buf)

    def end_file(self) -> None:
        if self.open is None or self.remaining:
            raise ValueError("a file ends before its size")
        rel, kind, size = self.open
        if self.found:
            self.forbidden_in.append(rel)
        digest = self.known if self.known is not None else self.file_hash.hexdigest()
        self.manifest.append(ManifestEntry(rel, kind, size, digest))
        self.open = None

    def result(self) -> ArchiveInfo:
        """The scan of the tree; ValueError if the tree is not complete."""
        if self.open is not None or not self.started:
            raise ValueError("the tree is not complete")
        if any(nxt[0] != len(names) for _, names, nxt in self.dirs):
            raise ValueError("a directory lacks entries it names")
        return ArchiveInfo(self.hash.hexdigest(), self.size, self.manifest, self.forbidden_in)
