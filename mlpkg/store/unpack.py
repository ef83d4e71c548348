"""Safe unpacking of source archives (design invariant 5).

:func:`detect_format` names an archive's format by its first bytes, never its file name:
``tar.gz``, ``tar.bz2``, ``tar.xz``, ``tar.zst``, ``tar`` or ``zip``; else ``FetchError``.

:func:`unpack` writes an archive into ``dest``, which must not exist and is created as a
directory. Tar is read as a stream, each member checked as it arrives and written here (no
``extractall``). The *whole* archive is refused with ``UnsafeArchive`` (one sentence naming
the label and the member) for: absolute paths; any ``..`` component; a NUL or another control
character (C0, DEL, C1: a newline, an escape; a raw byte 0x80-0x9F that is not UTF-8 counts
as C1) in a name or a symlink's target; symlinks
whose target is absolute or resolves outside the tree (from the link's own directory, through
the archive's other symlinks); hard links whose target is not an earlier regular file member;
devices, FIFOs, sockets and any other type; a path through a symlink or file member (in either
order); duplicate paths. On any error ``dest`` is removed: nothing partial is left.

What is written is normalised: files 0644, or 0755 when any execute bit was set; directories
0755; no setuid, setgid or sticky bits; owners and timestamps are ignored. Directories the
archive does not list are created. Symlinks are created last, so nothing is ever written
through one, and the tree does not depend on the order of members (``./a`` is ``a``).
``strip_components=N`` drops the first ``N`` components like ``tar --strip-components`` (which
counts ``.``): members with ``N`` or fewer are checked, then dropped; a symlink must stay
inside both the archive's tree and the stripped one. If nothing is left, ``FetchError``.
Corrupt or truncated archives give ``FetchError`` too.

Size caps (archive bombs): see :mod:`mlpkg.store.unpack_caps`; :func:`unpack` takes them as
``max_size``, ``max_ratio`` and ``max_files``.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import gzip
import io
import lzma
import os
import stat
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn, Protocol

import zstandard

from mlpkg.errors import FetchError, StoreError, UnsafeArchive
from mlpkg.store.fs import remove_tree
from mlpkg.store.unpack_caps import DEFAULT_MAX_FILES as DEFAULT_MAX_FILES
from mlpkg.store.unpack_caps import DEFAULT_MAX_RATIO as DEFAULT_MAX_RATIO
from mlpkg.store.unpack_caps import DEFAULT_MAX_SIZE as DEFAULT_MAX_SIZE
from mlpkg.store.unpack_caps import RATIO_FLOOR as RATIO_FLOOR
from mlpkg.store.unpack_caps import Budget, show
from mlpkg.store.unpack_caps import Limits as Limits

FORMATS = ("tar.gz", "tar.bz2", "tar.xz", "tar.zst", "tar", "zip")
_MAGIC = (
    (b"\x1f\x8b", "tar.gz"),
    (b"BZh", "tar.bz2"),
    (b"\xfd7zXZ\x00", "tar.xz"),
    (b"\x28\xb5\x2f\xfd", "tar.zst"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty zip: only the end-of-central-directory record
)
_CHUNK = 1 << 20
_MAX_TARGET = 4095  # PATH_MAX - 1: the longest symlink target Linux accepts
_MAX_HOPS = 40  # like Linux's limit on nested symlinks
_WINDOW = 1 << 16  # bytes of the tar stream kept to check the block tarfile stopped at
# What a corrupt, truncated or unreadable archive raises (NotImplementedError: a zip method).
_CORRUPT: tuple[type[Exception], ...] = (tarfile.TarError, zipfile.BadZipFile, OSError)
_CORRUPT += (EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, NotImplementedError)

_SPECIAL = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
_SPECIAL |= {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}
_TAR_SPECIAL = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK}
_TAR_SPECIAL[tarfile.FIFOTYPE] = stat.S_IFIFO

Parts = tuple[str, ...]
Opener = Callable[[], IO[bytes]]
_Members = Generator[tuple["_Member", Opener | None], None, None]


@dataclass(frozen=True)
class _Member:
    """One archive member, whatever the format. ``kind``: file, dir, symlink or hardlink."""

    name: str
    kind: str
    executable: bool = False
    target: str = ""  # a symlink's target, or a hard link's target path in the archive
    special: str | None = None  # why the member is of no allowed type, e.g. "a FIFO"
    size: int = 0  # a file's size as its header declares it


def _control(text: str) -> str | None:
    """The first control character of ``text`` (C0, DEL or C1), escaped, or None. A newline
    or an escape sequence in a file name breaks line-oriented tools and terminals. A raw
    byte 0x80-0x9F that is not part of valid UTF-8 counts too: names are decoded with
    surrogateescape, which makes it U+DC80-U+DC9F (category Cs), and it is written back
    to the file system as that C1 byte; it is shown as the byte (``'\\x9b'``)."""
    for c in text:
        if unicodedata.category(c) == "Cc":
            return repr(c)
        if 0xDC80 <= ord(c) <= 0xDC9F:
            return repr(chr(ord(c) - 0xDC00))
    return None


def _join(parts: Parts) -> str:
    return "/".join(parts) or "."


def _is_tar_header(head: bytes) -> bool:
    """Whether ``head`` starts with a tar header: the ustar magic, or a valid v7 checksum."""
    if len(head) < 512 or not any(head[:512]):
        return False
    if head[257:262] == b"ustar":
        return True
    try:
        recorded = int(head[148:156].strip(b" \x00") or b"x", 8)
    except ValueError:
        return False
    return recorded == sum(head[:148]) + 8 * ord(" ") + sum(head[156:512])


def _detect(path: Path, label: str) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise FetchError(f"Cannot read the archive '{label}': {e.strerror or e}.") from e
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if _is_tar_header(head):
        return "tar"
    raise FetchError(
        f"'{label}' is not a supported archive (its first bytes match none of "
        f"{', '.join(FORMATS)})."
    )


def detect_format(path: Path) -> str:
    """By magic bytes, not file name: one of "tar.gz", "tar.bz2", "tar.xz", "tar.zst",
    "tar", "zip". Raises :class:`FetchError` for anything else."""
    return _detect(path, path.name)


def _escape(link: Parts, target: str, links: dict[Parts, tuple[str, str]]) -> str | None:
    """Why the symlink at ``link`` leaves the tree (or cannot be resolved), or None.

    Resolves like the kernel, from the link's directory, expanding the tree's other symlinks
    (``links``: path -> (target, member name)); components that do not exist count as
    directories, which can only make the check stricter.
    """
    stack = list(link[:-1])
    pending = target.split("/")[::-1]
    hops = 0
    while pending:  # at most _MAX_HOPS expansions of targets up to _MAX_TARGET bytes
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return "resolves outside the tree"
            stack.pop()
            continue
        stack.append(part)
        hit = links.get(tuple(stack))
        if hit is not None:
            hops += 1
            if hops > _MAX_HOPS:
                return "loops or nests too deeply"
            stack.pop()
            pending.extend(hit[0].split("/")[::-1])
    return None


class _Tree:
    """The paths an archive creates, to find conflicts before anything touches the disk."""

    def __init__(self) -> None:
        self.dirs: dict[Parts, str] = {(): ""}  # directory -> the member that first implied it
        self.listed: set[Parts] = set()  # every path a member names
        self.files: set[Parts] = set()
        self.links: dict[Parts, tuple[str, str]] = {}  # symlink -> (target, member name)

    def add(self, path: Parts, kind: str, name: str, target: str = "") -> str | None:
        """Record a member (``kind``: file, dir or symlink); say why it conflicts, or None."""
        for i in range(1, len(path)):
            above = path[:i]
            if above in self.links:
                return f"passes through the symlink '{show(_join(above))}'"
            if above in self.files:
                return f"passes through '{show(_join(above))}', which is not a directory"
        if path in self.listed:
            return f"duplicates the path '{show(_join(path))}' of an earlier member"
        if kind != "dir" and path in self.dirs:
            return f"is a {kind}, but the earlier member '{show(self.dirs[path])}' is inside it"
        self.listed.add(path)
        for i in range(1, len(path) + (kind == "dir")):
            self.dirs.setdefault(path[:i], name)
        if kind == "symlink":
            self.links[path] = (target, name)
        elif kind == "file":
            self.files.add(path)
        return None


class _Unpacker:
    """Checks members one at a time and writes the safe ones under ``dest``."""

    def __init__(self, dest: Path, strip: int, label: str, budget: Budget) -> None:
        self.dest = dest
        self.strip = strip
        self.label = label
        self.budget = budget
        self.sizes: dict[Parts, int] = {}  # written file -> bytes written
        self.archive_tree = _Tree()  # paths as in the archive
        self.out_tree = _Tree()  # paths after strip_components
        self.regular: dict[Parts, Parts | None] = {}  # file member -> where written (or None)
        self.made: set[Parts] = {()}
        self.symlinks: list[tuple[Parts, str]] = []
        self.kept = 0

    def refuse(self, name: str, reason: str) -> NoReturn:
        raise UnsafeArchive(f"Refusing archive '{self.label}': member '{show(name)}' {reason}.")

    def parts(self, name: str, path: str, *, hardlink: bool = False) -> Parts:
        """Split a member path; refuse NUL, absolute paths and ``..``."""
        parts = tuple(p for p in path.split("/") if p not in ("", "."))
        bad = "\x00" in path or path.startswith("/") or ".." in parts
        if bad and hardlink:
            self.refuse(name, f"is a hard link to '{show(path)}', which is outside the tree")
        if "\x00" in path:
            self.refuse(name, "has a NUL byte in its name")
        if (control := _control(path)) is not None:
            what = "is a hard link whose target has" if hardlink else "has"
            self.refuse(name, f"{what} the control character {control}")
        if path.startswith("/"):
            self.refuse(name, "has an absolute path")
        if ".." in parts:
            self.refuse(name, "has a '..' component")
        return parts

    def check_symlink(self, m: _Member) -> None:
        if "\x00" in m.target:
            self.refuse(m.name, "is a symlink whose target has a NUL byte")
        if not m.target:
            self.refuse(m.name, "is a symlink with an empty target")
        if (control := _control(m.target)) is not None:
            self.refuse(m.name, f"is a symlink whose target has the control character {control}")
        if m.target.startswith("/"):
            self.refuse(m.name, f"is a symlink to the absolute path '{show(m.target)}'")
        if len(os.fsencode(m.target)) > _MAX_TARGET:
            self.refuse(m.name, "is a symlink with a target longer than Linux allows")

    def hardlink_source(self, m: _Member, kept: bool) -> Parts | None:
        """Where the hard link's target was written; refuse a target that is not earlier."""
        source = self.parts(m.name, m.target, hardlink=True)
        what = f"is a hard link to '{show(m.target)}', which"
        if source not in self.regular:
            self.refuse(m.name, f"{what} is not an earlier regular file of the archive")
        written = self.regular[source]
        if kept and written is None:
            self.refuse(m.name, f"{what} stripping drops")
        return written

    def stripped(self, name: str) -> Parts | None:
        """The path a member is written to, or None if stripping drops it. Like tar, this
        counts ``.`` components: ``./pkg/a`` less one component is ``pkg/a``."""
        raw = [p for p in name.split("/") if p]
        kept = tuple(p for p in raw[self.strip :] if p != ".")
        return kept if len(raw) > self.strip and kept else None

    def record(self, tree: _Tree, path: Parts, m: _Member) -> None:
        kind = "file" if m.kind == "hardlink" else m.kind
        why = tree.add(path, kind, m.name, m.target)
        if why is not None:
            self.refuse(m.name, why)

    def add(self, m: _Member, content: Opener | None) -> None:
        """Check one member against the rules and earlier members, then write it."""
        parts = self.parts(m.name, m.name)
        if m.special is not None:
            self.refuse(m.name, f"is {m.special}, which is not allowed")
        if not parts and m.kind != "dir":
            self.refuse(m.name, "names the top of the tree but is not a directory")
        if m.kind == "symlink":
            self.check_symlink(m)
        kept = self.stripped(m.name)
        source = self.hardlink_source(m, kept is not None) if m.kind == "hardlink" else None
        self.record(self.archive_tree, parts, m)
        if m.kind in ("file", "hardlink"):
            self.regular[parts] = kept
        if kept is None:
            return
        self.record(self.out_tree, kept, m)
        self.kept += 1
        self.budget.entry(m.name, self.kept)
        if m.kind == "dir":
            self.make_dirs(kept)
        elif m.kind == "symlink":
            self.symlinks.append((kept, m.target))  # created last: nothing is written through
        elif source is not None:
            size = self.sizes.get(source, 0)
            self.budget.check(m.name, size)
            self.make_dirs(kept[:-1])
            os.link(self.path(source), self.path(kept), follow_symlinks=False)
            self.budget.spend(m.name, size)
            self.sizes[kept] = size
        elif content is not None:
            self.budget.check(m.name, m.size)
            self.sizes[kept] = self.write(kept, m.name, content, m.executable)

    def path(self, parts: Parts) -> str:
        return os.path.join(self.dest, *parts)

    def make_dirs(self, parts: Parts) -> None:
        for i in range(1, len(parts) + 1):
            if parts[:i] not in self.made:
                full = self.path(parts[:i])
                os.mkdir(full, 0o755)
                os.chmod(full, 0o755)
                self.made.add(parts[:i])

    def write(self, parts: Parts, name: str, content: Opener, executable: bool) -> int:
        """Write one file, counting its bytes against the budget; return how many."""
        self.make_dirs(parts[:-1])
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path(parts), flags, 0o600)
        written = 0
        with os.fdopen(fd, "wb") as out, content() as src:
            while chunk := src.read(_CHUNK):
                self.budget.spend(name, len(chunk))  # before writing: headers can lie
                out.write(chunk)
                written += len(chunk)
            os.fchmod(out.fileno(), 0o755 if executable else 0o644)
        return written

    def finish(self) -> None:
        """Check every symlink against the whole tree, then create them."""
        for tree in (self.archive_tree, self.out_tree):
            for link in sorted(tree.links):
                target, name = tree.links[link]
                why = _escape(link, target, tree.links)
                if why is not None:
                    self.refuse(name, f"is a symlink to '{show(target)}', which {why}")
        if self.strip and not self.kept:
            raise FetchError(
                f"Stripping {self.strip} leading path component(s) from '{self.label}' "
                "leaves nothing to unpack."
            )
        for link, target in sorted(self.symlinks):
            self.make_dirs(link[:-1])
            os.symlink(target, self.path(link))


def _tar_member(info: tarfile.TarInfo) -> _Member:
    exe = bool(info.mode & 0o111)
    if info.isreg():  # a sparse member too: its size is what it expands to
        return _Member(info.name, "file", exe, size=info.size)
    if info.isdir():
        return _Member(info.name, "dir")
    if info.issym():
        return _Member(info.name, "symlink", target=info.linkname)
    if info.islnk():
        return _Member(info.name, "hardlink", target=info.linkname)
    fmt = _TAR_SPECIAL.get(info.type, 0)
    what = _SPECIAL.get(fmt, f"of unsupported tar type {info.type!r}")
    return _Member(info.name, "other", special=what)


def _tar_content(tf: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    f = tf.extractfile(info)
    if f is None:  # pragma: no cover - only called for regular files
        raise tarfile.ReadError(f"no content for {info.name!r}")
    return f


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...
    def close(self) -> object: ...


class _Counting(io.RawIOBase):
    """Hands on a decompressed stream to tarfile, counting bytes to spot a truncated tar,
    and keeping the last :data:`_WINDOW` bytes to read the block where tarfile stopped."""

    def __init__(self, inner: _Readable) -> None:
        super().__init__()
        self.inner = inner
        self.count = 0
        self.window = bytearray()
        self.start = 0  # the stream offset of window[0]

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        data = self.inner.read(size)
        self.count += len(data)
        self.window += data
        if len(self.window) > 2 * _WINDOW:
            drop = len(self.window) - _WINDOW
            del self.window[:drop]
            self.start += drop
        return data

    def block(self, offset: int) -> bytes | None:
        """The 512 bytes at stream ``offset``, if still in the window."""
        at = offset - self.start
        if at < 0 or at + tarfile.BLOCKSIZE > len(self.window):
            return None
        return bytes(self.window[at : at + tarfile.BLOCKSIZE])


def _decompressed(fmt: str, raw: IO[bytes]) -> _Readable:
    """A stream of the tar inside ``raw``, decompressed a chunk at a time."""
    if fmt == "tar.gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if fmt == "tar.bz2":
        return bz2.BZ2File(raw)
    if fmt == "tar.xz":
        return lzma.LZMAFile(raw)
    if fmt == "tar.zst":
        reader: _Readable = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return reader
    return raw


def _tar_members(archive: Path, fmt: str, label: str) -> _Members:
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(open(archive, "rb"))
        inner = _decompressed(fmt, raw)
        stack.callback(inner.close)
        stream = _Counting(inner)
        tf = stack.enter_context(
            tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape")
        )
        for info in tf:
            opener = functools.partial(_tar_content, tf, info) if info.isreg() else None
            yield _tar_member(info), opener
        # tarfile takes a stream that stops between members, or inside a header, for the end.
        if stream.count < tf.offset + tarfile.BLOCKSIZE:
            raise FetchError(
                f"Cannot unpack '{label}': it is truncated (no end-of-archive marker)."
            )
        # tarfile also ends, silently, at a header that is not valid after the first one.
        end = stream.block(tf.offset)
        if end is None or any(end):
            raise FetchError(
                f"Cannot unpack '{label}': the tar header at byte {tf.offset} is corrupt "
                "(neither a member nor the end-of-archive marker)."
            )
        while stream.read(_CHUNK):  # reach the end, so that gzip, bz2 and xz check their CRC
            pass


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    name = info.orig_filename  # zipfile cuts ``filename`` at a NUL; keep it to refuse it
    mode = info.external_attr >> 16
    fmt = stat.S_IFMT(mode)
    if fmt == stat.S_IFLNK and not name.endswith("/"):
        if info.file_size > _MAX_TARGET:
            return _Member(name, "other", special="a symlink with an over-long target")
        target = zf.read(info).decode("utf-8", "surrogateescape")
        return _Member(name, "symlink", target=target)
    if fmt == stat.S_IFDIR or (name.endswith("/") and fmt in (0, stat.S_IFREG)):
        return _Member(name, "dir")
    if fmt in (0, stat.S_IFREG) and not name.endswith("/"):
        return _Member(name, "file", bool(mode & 0o111), size=info.file_size)
    return _Member(name, "other", special=_SPECIAL.get(fmt, f"of unsupported type {fmt:#o}"))


def _zip_members(archive: Path, label: str, budget: Budget) -> _Members:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        budget.directory((info.orig_filename, info.file_size) for info in infos)
        for info in infos:
            if info.flag_bits & 0x1:
                raise FetchError(
                    f"Cannot unpack '{label}': its member '{show(info.filename)}' is encrypted."
                )
            member = _zip_member(zf, info)
            yield member, functools.partial(zf.open, info) if member.kind == "file" else None


def unpack(
    archive: Path,
    dest: Path,
    *,
    strip_components: int = 0,
    label: str | None = None,
    max_size: int | None = None,
    max_ratio: float | None = None,
    max_files: int | None = None,
) -> None:
    """Unpack `archive` into `dest` (which must not exist; it is created as a directory).
    `label` names the archive in error messages (e.g. the URL or recipe), default the file name.
    `max_size`, `max_ratio` and `max_files` replace the default :class:`Limits` (None keeps
    the default); an archive past one is refused with ``FetchError`` and nothing is left.
    """
    label = label if label is not None else archive.name
    if strip_components < 0:
        raise ValueError(f"strip_components must be >= 0, not {strip_components}")
    limits = Limits(
        DEFAULT_MAX_SIZE if max_size is None else max_size,
        DEFAULT_MAX_RATIO if max_ratio is None else max_ratio,
        DEFAULT_MAX_FILES if max_files is None else max_files,
    )
    fmt = _detect(archive, label)
    if os.path.lexists(dest):
        raise StoreError(f"Cannot unpack '{label}': '{dest}' already exists.")
    budget = Budget(limits, os.path.getsize(archive), label)
    dest.mkdir(parents=True, mode=0o755)
    try:
        os.chmod(dest, 0o755)
        unpacker = _Unpacker(dest, strip_components, label, budget)
        members = (
            _zip_members(archive, label, budget)
            if fmt == "zip"
            else _tar_members(archive, fmt, label)
        )
        with contextlib.closing(members):
            for member, content in members:
                unpacker.add(member, content)
        unpacker.finish()
    except BaseException as e:
        remove_tree(dest)  # refused or failed: leave nothing behind
        if isinstance(e, _CORRUPT):
            raise FetchError(
                f"Cannot unpack '{label}' ({fmt}): it is corrupt, truncated or unreadable ({e})."
            ) from e
        raise
