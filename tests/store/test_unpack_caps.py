"""Tests of the size caps on unpacking (mlpkg.store.unpack_caps): archive bombs."""

from __future__ import annotations

import dataclasses
import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

import mlpkg.store.unpack as unpack_module
from mlpkg.errors import FetchError
from mlpkg.store.unpack import unpack
from tests.store.unpack_support import d, f, hard, make

MB = 1_000_000
BOMB = 50 * MB  # what each bomb expands to: past the defaults' ratio cap, small on disk


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, read a chunk at a time (no bomb is ever held in memory)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def zip_bomb(path: Path, size: int = BOMB, name: str = "bomb.bin") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as out:
            src = _Zeros(size)
            while chunk := src.read(1 << 20):
                out.write(chunk)
    return path


def tar_gz_bomb(path: Path, size: int = BOMB, name: str = "bomb.bin") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(name)
        info.size = size
        tf.addfile(info, _Zeros(size))
    return path


def sparse_tar_bomb(path: Path, size: int = BOMB, name: str = "bomb.bin") -> Path:
    """A GNU sparse member (type ``S``) storing one 512-byte block and declaring ``size``:
    written by hand, as tarfile reads these but cannot write them. Gzipped: ~100 bytes."""
    info = tarfile.TarInfo(name)
    info.size = 512  # the data stored in the archive
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[386:398] = b"%011o\x00" % (size - 512)  # one chunk: its offset in the file...
    header[398:410] = b"%011o\x00" % 512  # ...and its length
    header[483:495] = b"%011o\x00" % size  # the size the member expands to
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header[:512])
    path.write_bytes(gzip.compress(bytes(header) + b"x" * 512 + bytes(1024)))
    return path


BOMBS = {"zip": zip_bomb, "tar.gz": tar_gz_bomb, "sparse": sparse_tar_bomb}


def too_big(archive: Path, dest: Path, member: str, cap: str, **kw: object) -> str:
    """Unpack must refuse ``archive`` with one FetchError naming it, ``member`` and ``cap``,
    and leave nothing at ``dest``."""
    with pytest.raises(FetchError) as info:
        unpack(archive, dest, **kw)  # type: ignore[arg-type]
    message = info.value.message
    assert message.startswith(f"Refusing archive '{kw.get('label') or archive.name}': ")
    assert f"member '{member}'" in message
    assert cap in message
    assert "\n" not in message and message.endswith(".")
    assert info.value.hint is not None and "[source]" in info.value.hint
    assert not dest.exists()
    return message


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the file members unpack starts to write."""
    names: list[str] = []
    original = unpack_module._Unpacker.write

    def spy(self: unpack_module._Unpacker, parts: tuple[str, ...], name: str, *a: object) -> int:
        names.append(name)
        return original(self, parts, name, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(unpack_module._Unpacker, "write", spy)
    return names


@pytest.mark.parametrize("kind", BOMBS)
def test_bombs_are_refused_by_the_default_ratio(
    tmp_path: Path, kind: str, writes: list[str]
) -> None:
    archive = BOMBS[kind](tmp_path / f"{kind}.bomb")
    assert archive.stat().st_size < 100_000
    message = too_big(archive, tmp_path / "out", "bomb.bin", "max_unpack_ratio")
    assert "past the cap of 16.0 MiB (max_unpack_ratio: 200 times the archive's " in message
    assert message.endswith(", but at least 16.0 MiB).")
    assert writes == []  # refused from its header, before a byte of it was written


@pytest.mark.parametrize("kind", BOMBS)
def test_bombs_are_refused_by_an_absolute_cap(tmp_path: Path, kind: str) -> None:
    archive = BOMBS[kind](tmp_path / f"{kind}.bomb")
    message = too_big(
        archive,
        tmp_path / "out",
        "bomb.bin",
        "(max_unpacked_size)",
        max_size=10 * MB,
        max_ratio=1e9,
        label="bomb@1.0",
    )
    assert "to 47.7 MiB, past the cap of 9.5 MiB (max_unpacked_size)" in message


def test_sparse_member_unpacks_within_the_caps(tmp_path: Path) -> None:
    archive = sparse_tar_bomb(tmp_path / "sparse.tgz", size=3 * MB)
    unpack(archive, tmp_path / "out")
    data = (tmp_path / "out/bomb.bin").read_bytes()
    assert len(data) == 3 * MB and data[-512:] == b"x" * 512 and not any(data[:-512])


def test_small_compressible_archives_are_below_the_ratio_floor(tmp_path: Path) -> None:
    """The ratio applies only past 16 MiB: 5 MB of zeros from a 5 KB archive is fine."""
    archive = tar_gz_bomb(tmp_path / "zeros.tgz", size=5 * MB)
    assert archive.stat().st_size * 200 < 5 * MB
    unpack(archive, tmp_path / "out")
    assert (tmp_path / "out/bomb.bin").stat().st_size == 5 * MB


def test_raised_caps_let_a_big_archive_through(tmp_path: Path) -> None:
    archive = zip_bomb(tmp_path / "big.zip", size=20 * MB)
    too_big(archive, tmp_path / "out", "bomb.bin", "max_unpack_ratio")
    ratio = 18 * MB // archive.stat().st_size  # a cap of about 18 MB: past the floor
    message = too_big(archive, tmp_path / "out", "bomb.bin", "cap", max_ratio=ratio)
    size = archive.stat().st_size
    assert message.endswith(
        f"(max_unpack_ratio: {ratio} times the archive's {size / 1024:.1f} KiB)."
    )
    unpack(archive, tmp_path / "out", max_ratio=100_000, max_size=30 * MB)
    assert (tmp_path / "out/bomb.bin").stat().st_size == 20 * MB


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_many_members_together_pass_the_cap(tmp_path: Path, fmt: str, writes: list[str]) -> None:
    entries = [f(f"part{i}", bytes(3 * MB)) for i in range(5)]
    archive = make(tmp_path, entries, fmt)
    too_big(archive, tmp_path / "out", "part3", "past the cap of 9.5 MiB", max_size=10 * MB)
    # tar is a stream: the members before the one past the cap were written, then removed;
    # a zip's whole directory is checked before anything is written.
    assert writes == ([] if fmt == "zip" else ["part0", "part1", "part2"])
    unpack(archive, tmp_path / "out", max_size=15 * MB)


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_member_count_cap(tmp_path: Path, fmt: str) -> None:
    archive = make(tmp_path, [d("dir"), *(f(f"dir/{i}", b"x") for i in range(4))], fmt)
    too_big(
        archive, tmp_path / "out", "dir/2", "cap of 3 members (max_unpacked_files)", max_files=3
    )
    unpack(archive, tmp_path / "out", max_files=5)


def test_hard_links_count_their_target_again(tmp_path: Path) -> None:
    entries = [f("big", bytes(2 * MB)), *(hard(f"link{i}", "big") for i in range(10))]
    archive = make(tmp_path, entries, "tar.gz")
    too_big(archive, tmp_path / "out", "link4", "to 11.4 MiB, past the cap", max_size=10 * MB)


def test_a_member_holding_more_than_it_declares_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Declared sizes are not trusted: the bytes written are counted too. (tarfile and
    zipfile stop at a member's declared size; this lies for them, as a lesser reader would.)"""
    real = unpack_module._tar_member

    def lying(info: tarfile.TarInfo) -> object:
        return dataclasses.replace(real(info), size=0)

    monkeypatch.setattr(unpack_module, "_tar_member", lying)
    archive = tar_gz_bomb(tmp_path / "liar.tgz", size=20 * MB)
    message = too_big(archive, tmp_path / "out", "bomb.bin", "max_unpacked_size", max_size=5 * MB)
    assert "holds more than it declares, which takes the unpacked size to 5.0 MiB" in message


def test_zip_whose_declared_size_is_smaller_than_its_data(tmp_path: Path) -> None:
    archive = zip_bomb(tmp_path / "liar.zip", size=20 * MB)
    data = bytearray(archive.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")  # declares 1000 bytes
    archive.write_bytes(bytes(data))
    with pytest.raises(FetchError, match=r"Cannot unpack 'liar\.zip' \(zip\): it is corrupt"):
        unpack(archive, tmp_path / "out", max_size=5 * MB)
    assert not (tmp_path / "out").exists()
