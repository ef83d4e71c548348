"""A corpus of hostile archives (issue 15), each built here in every format that can hold
it (tar, tar.gz, zip), each refused with one sentence naming the archive and the member,
with nothing written: no ``dest``, no debris beside it.

This extends tests/store/test_unpack.py (traversal, absolute names, symlinks and hard links
out, devices, FIFOs, duplicates, in tar.gz and zip) and tests/store/test_unpack_caps.py
(zip, tar.gz and sparse-tar bombs) with what they lack: the same attacks hidden in PAX and
GNU long-name headers, symlink chains written through, hard links through a symlink,
control characters in names and targets, lying size fields in tar headers and zip
directories, a zip whose local header names another file than its directory. Then two
of them through the real path: served over HTTP as a recipe's fetch with the right sha256,
``mlpkg build`` exits 1 and the store is unchanged. Names that differ only by case or
Unicode normalisation, and setuid/setgid/sticky modes, are not refused (see
:func:`test_case_and_normalisation_twins_are_distinct_files`, docs/trust.md)."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import tarfile
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mlpkg.errors import FetchError, MlpkgError, UnsafeArchive
from mlpkg.store.unpack import unpack
from tests.recipe_text import fetch_toml
from tests.store.test_unpack_caps import zip_bomb
from tests.store.unpack_support import Entry, compress, d, f, hard, sym, tar_bytes, zip_bytes

if TYPE_CHECKING:
    from tests.conftest import LoopbackServer, MlpkgCli

OK = f("zz-ok/file", b"fine")  # a good member, so that refusing has something to remove


def _pax(name: str, pax: dict[str, str], kind: bytes = tarfile.REGTYPE, data: bytes = b"") -> bytes:
    """A PAX tar whose one member's ustar fields say ``name`` and whose PAX header
    overrides them with ``pax`` (tarfile obeys the PAX header)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(_info(OK[1], OK[2]), io.BytesIO(OK[2]))  # type: ignore[arg-type]
        info = _info(name, data)
        info.type = kind
        info.pax_headers = pax
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _info(name: str, data: bytes | str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data) if isinstance(data, bytes) else 0
    return info


def _lying_tar_size(declared: int) -> bytes:
    """A tar whose member declares ``declared`` bytes (base-256 when over the octal field)
    but holds 10, then ends."""
    header = bytearray(_info("big.bin", b"").tobuf(tarfile.GNU_FORMAT))
    header[124:136] = b"\x80" + declared.to_bytes(11, "big")  # GNU base-256 size
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header[:512])
    first = tar_bytes([OK])[:1024]  # the good member's header and its one block of data
    return first + bytes(header) + b"0123456789".ljust(512, b"\x00")


def _corrupt_second_header() -> bytes:
    """Two members, the second one's header checksum broken."""
    data = bytearray(tar_bytes([OK, f("second", b"y")]))
    data[1024 + 148 : 1024 + 150] = b"zz"
    return bytes(data)


def _zip_patched(entries: list[Entry], patch: Callable[[bytearray], None]) -> bytes:
    data = bytearray(zip_bytes(entries))
    patch(data)
    return bytes(data)


def _central_size(data: bytearray) -> None:
    """Declare 4 GiB uncompressed for the last member in the central directory."""
    at = data.rfind(b"PK\x01\x02")
    data[at + 24 : at + 28] = struct.pack("<I", 0xFFFFFFF0)


def _local_name(data: bytearray) -> None:
    """Rename the last member in its local header only (the directory still says ok)."""
    at = data.rfind(b"PK\x03\x04")
    (n,) = struct.unpack("<H", data[at + 26 : at + 28])
    data[at + 30 : at + 30 + n] = b"../e"[:n].ljust(n, b"/")


# name: (formats -> archive bytes, error type, member named in the sentence, phrase)
Build = Callable[[str], bytes]


def _entries(*entries: Entry) -> Build:
    def build(fmt: str) -> bytes:
        return (
            zip_bytes([OK, *entries]) if fmt == "zip" else compress(tar_bytes([OK, *entries]), fmt)
        )

    return build


ALL = ("tar", "tar.gz", "zip")
TAR = ("tar", "tar.gz")
CORPUS: dict[str, tuple[tuple[str, ...], Build, type[MlpkgError], str, str]] = {
    # traversal hidden in the headers that override a member's name
    "pax-path-dotdot": (
        TAR, lambda fmt: compress(_pax("benign", {"path": "../evil"}, data=b"x"), fmt),
        UnsafeArchive, "../evil", "'..' component",
    ),
    "pax-path-absolute": (
        TAR, lambda fmt: compress(_pax("benign", {"path": "/tmp/mlpkg-evil"}, data=b"x"), fmt),
        UnsafeArchive, "/tmp/mlpkg-evil", "absolute path",
    ),
    "pax-linkpath-out": (
        TAR, lambda fmt: compress(_pax("l", {"linkpath": "/etc/passwd"}, tarfile.SYMTYPE), fmt),
        UnsafeArchive, "l", "absolute path '/etc/passwd'",
    ),
    "pax-hardlink-out": (
        TAR, lambda fmt: compress(_pax("h", {"linkpath": "../../etc/shadow"}, tarfile.LNKTYPE), fmt),
        UnsafeArchive, "h", "which is outside the tree",
    ),
    "gnu-longname-dotdot": (
        TAR, _entries(f("a/" * 60 + "../" * 61 + "evil", b"x")),
        UnsafeArchive, "a/" * 60 + "../" * 61 + "evil", "'..' component",
    ),
    # symlinks: chains, and writing through them
    "symlink-chain-write-through": (
        ALL, _entries(sym("a", "b"), sym("b", "c"), d("c"), f("a/x", b"x")),
        UnsafeArchive, "a/x", "passes through the symlink 'a'",
    ),
    "symlink-to-self-dir-write-through": (
        ALL, _entries(sym("d/l", "."), f("d/l/l/x", b"x")),
        UnsafeArchive, "d/l/l/x", "passes through the symlink 'd/l'",
    ),
    "symlink-chain-out": (
        ALL, _entries(sym("d/a", "b/x"), sym("d/b", "c/.."), sym("d/c", "../e/..")),
        UnsafeArchive, "d/a", "resolves outside the tree",
    ),
    "symlink-dir-then-write-through-parent": (
        ALL, _entries(d("real"), sym("real/up", "../.."), f("real/up/x", b"x")),
        UnsafeArchive, "real/up/x", "passes through the symlink 'real/up'",
    ),
    # hard links
    "hardlink-through-symlink": (
        TAR, _entries(f("d/a", b"x"), sym("l", "d"), hard("h", "l/a")),
        UnsafeArchive, "h", "not an earlier regular file",
    ),
    "hardlink-to-hardlink-out": (
        TAR, _entries(hard("h1", "../x"), hard("h2", "h1")),
        UnsafeArchive, "h1", "outside the tree",
    ),
    # control characters (names and targets)
    "newline-in-name": (
        ALL, _entries(f("evil\nname", b"x")), UnsafeArchive, "evil\\nname", "control character",
    ),
    "escape-in-dir-name": (
        ALL, _entries(f("a\x1b[2J/x", b"x")), UnsafeArchive, "a\\x1b[2J/x", "control character",
    ),
    "carriage-return-in-name": (
        ALL, _entries(f("ok\rfake", b"x")), UnsafeArchive, "ok\\rfake", "control character",
    ),
    "del-in-name": (ALL, _entries(f("a\x7f", b"x")), UnsafeArchive, "a\\x7f", "control character"),
    "c1-csi-in-name": (
        ALL, _entries(f("a\x9b31m", b"x")), UnsafeArchive, "a\\x9b31m", "control character",
    ),
    # a raw C1 byte that is not UTF-8: decoded with surrogateescape to U+DC80-U+DC9F
    # (category Cs, not Cc), which still writes the byte 0x9b (CSI) to the file system
    "raw-c1-byte-in-name": (
        TAR, _entries(f("pkg/a\udc9b31mred", b"x")),
        UnsafeArchive, "pkg/a\\udc9b31mred", "control character '\\x9b'",
    ),
    "raw-c1-byte-0x9f": (
        TAR, _entries(f("y\udc9f", b"x")), UnsafeArchive, "y\\udc9f", "control character '\\x9f'",
    ),
    "raw-c1-byte-0x80-after-a-raw-0xa0": (  # 0xA0 is not C1: the name is refused for 0x80
        TAR, _entries(f("\udca0\udc80x", b"x")),
        UnsafeArchive, "\\udca0\\udc80x", "control character '\\x80'",
    ),
    "raw-c1-byte-in-symlink-target": (
        TAR, _entries(sym("l", "a\udc85b")), UnsafeArchive, "l", "target has the control character",
    ),
    "newline-in-symlink-target": (
        ALL, _entries(sym("l", "a\nb")), UnsafeArchive, "l", "target has the control character",
    ),
    # a corrupt header after a good member: tarfile stops there without an error
    "tar-corrupt-second-header": (
        TAR, lambda fmt: compress(_corrupt_second_header(), fmt),
        FetchError, "", "the tar header at byte 1024 is corrupt",
    ),
    # duplicates the existing tests lack
    "dir-then-file-same-name": (
        ALL, _entries(d("a"), f("a", b"x")), UnsafeArchive, "a", "duplicates the path 'a'",
    ),
    "double-slash-duplicate": (
        TAR, _entries(f("a/b", b"1"), f("a//b", b"2")), UnsafeArchive, "a//b", "duplicates",
    ),
    # lying sizes and headers
    "tar-size-lies-1-TiB": (
        TAR, lambda fmt: compress(_lying_tar_size(1 << 40), fmt),
        FetchError, "big.bin", "past the cap",
    ),
    "tar-size-lies-small": (
        TAR, lambda fmt: compress(_lying_tar_size(4096), fmt),
        FetchError, "", "truncated",
    ),
    "zip-directory-declares-4-GiB": (
        ("zip",), lambda fmt: _zip_patched([OK, f("big.bin", b"x" * 10)], _central_size),
        FetchError, "big.bin", "past the cap",
    ),
    "zip-local-name-differs": (
        ("zip",), lambda fmt: _zip_patched([OK, f("okay", b"x")], _local_name),
        FetchError, "", "corrupt",
    ),
}  # fmt: skip
CASES = [
    pytest.param(name, fmt, id=f"{name}-{fmt}") for name, case in CORPUS.items() for fmt in case[0]
]


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_hostile_archive_is_refused_and_leaves_nothing(tmp_path: Path, name: str, fmt: str) -> None:
    _, build, error, member, phrase = CORPUS[name]
    archive = tmp_path / "src.bin"
    archive.write_bytes(build(fmt))
    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(error) as info:
        unpack(archive, store / "tmp-unpack", label="https://x.org/src")
    message = info.value.message
    assert message.startswith(("Refusing archive 'https://x.org/src'", "Cannot unpack")), message
    assert "\n" not in message and message.endswith("."), message
    if member:
        assert f"member '{member}'" in message, message
    assert phrase in message, message
    assert os.listdir(store) == []  # no dest, no debris
    assert sorted(os.listdir(tmp_path)) == ["src.bin", "store"]
    assert not os.path.lexists("/tmp/mlpkg-evil")


@pytest.mark.parametrize("fmt", ALL)
def test_case_and_normalisation_twins_are_distinct_files(tmp_path: Path, fmt: str) -> None:
    """Not refused: Linux names are bytes, and real archives (the Linux kernel's sources)
    hold names that differ only by case. Each is written as its own file; none is written
    over another (files are created with O_EXCL, so on a case-insensitive file system the
    second one fails the unpack instead)."""
    nfc, nfd = unicodedata.normalize("NFC", "caf\u00e9"), unicodedata.normalize("NFD", "café")
    entries = [f("README", b"1"), f("readme", b"2"), f(nfc, b"3"), f(nfd, b"4")]
    archive = tmp_path / "src.bin"
    archive.write_bytes(_entries(*entries)(fmt))
    unpack(archive, tmp_path / "out")
    got = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert got == {"README": b"1", "readme": b"2", nfc: b"3", nfd: b"4"}


# -- through the real path: served over HTTP, the right sha256, mlpkg build -------------------


def _control_tar_gz() -> bytes:
    return compress(
        tar_bytes([d("pkg-1.0"), f("pkg-1.0/ok", b"x"), f("pkg-1.0/a\nb", b"x")]), "tar.gz"
    )


@pytest.mark.parametrize("kind", ["zip-bomb", "control-character"])
def test_a_hostile_download_fails_the_build_and_stores_nothing(
    mlpkg_cli: MlpkgCli, http_server: LoopbackServer, tmp_path: Path, kind: str
) -> None:
    if kind == "zip-bomb":
        data, phrase = zip_bomb(tmp_path / "bomb.zip", 40_000_000).read_bytes(), "past the cap"
    else:
        data, phrase = _control_tar_gz(), "member 'pkg-1.0/a\\nb' has the control character"
    http_server.route("/src.archive", body=data)
    sha = hashlib.sha256(data).hexdigest()
    mlpkg_cli.recipes.add(
        "src", "1.0", fetch_toml("src", "1.0", [http_server.url("/src.archive")], sha)
    )
    before = (mlpkg_cli.store_entries(), mlpkg_cli.valid_paths())
    r = mlpkg_cli.run("build", "src")
    assert r.code == 1, r
    errors = [line for line in r.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in r.err, r.err
    assert "Refusing archive" in errors[0] and phrase in errors[0], errors[0]
    assert len(http_server.requests_for("/src.archive")) == 1  # it was downloaded, then refused
    assert (mlpkg_cli.store_entries(), mlpkg_cli.valid_paths()) == before == ([], [])
