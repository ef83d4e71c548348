"""Archives built in memory for the unpack tests (tests/store/test_unpack*.py)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import stat
import tarfile
import warnings
import zipfile
from pathlib import Path

import zstandard

# An entry: (kind, name, payload, mode). kind: f file, d dir, l symlink, h hard link,
# or c/b/p/V for a tar character device, block device, FIFO or unknown type. payload: the
# contents of a file, the target of a link.
Entry = tuple[str, str, bytes | str, int]


def f(name: str, data: bytes = b"", mode: int = 0o644) -> Entry:
    return ("f", name, data, mode)


def d(name: str, mode: int = 0o755) -> Entry:
    return ("d", name, b"", mode)


def sym(name: str, target: str) -> Entry:
    return ("l", name, target, 0o777)


def hard(name: str, target: str) -> Entry:
    return ("h", name, target, 0o644)


def special(kind: str, name: str) -> Entry:
    return (kind, name, b"", 0o644)


_TAR_TYPES = {
    "d": tarfile.DIRTYPE,
    "l": tarfile.SYMTYPE,
    "h": tarfile.LNKTYPE,
    "c": tarfile.CHRTYPE,
    "b": tarfile.BLKTYPE,
    "p": tarfile.FIFOTYPE,
    "V": b"V",
}


def tar_bytes(entries: list[Entry], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for kind, name, payload, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "f":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
                continue
            info.type = _TAR_TYPES[kind]
            if isinstance(payload, str):
                info.linkname = payload
            tf.addfile(info)
    return buf.getvalue()


def compress(data: bytes, fmt: str) -> bytes:
    if fmt == "tar.gz":
        return gzip.compress(data)
    if fmt == "tar.bz2":
        return bz2.compress(data)
    if fmt == "tar.xz":
        return lzma.compress(data)
    if fmt == "tar.zst":
        return zstandard.ZstdCompressor().compress(data)
    assert fmt == "tar"
    return data


_ZIP_TYPES = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK}
_ZIP_TYPES |= {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO, "s": stat.S_IFSOCK}


def zip_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for kind, name, payload, mode in entries:
                info = zipfile.ZipInfo(name + "/" if kind == "d" else name)
                info.external_attr = (_ZIP_TYPES[kind] | mode) << 16
                data = payload.encode() if isinstance(payload, str) else payload
                zf.writestr(info, data)
    return buf.getvalue()


def make(tmp_path: Path, entries: list[Entry], fmt: str = "tar", name: str = "src.bin") -> Path:
    """Write an archive of ``entries`` in ``fmt`` (named ``name``, to show names don't count)."""
    data = zip_bytes(entries) if fmt == "zip" else compress(tar_bytes(entries), fmt)
    path = tmp_path / name
    path.write_bytes(data)
    return path
