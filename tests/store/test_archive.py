"""The archive format, version 1: exact bytes (golden file), hashing, round trips."""

from __future__ import annotations

import hashlib
import io
import os
import struct
from pathlib import Path

import pytest

from mlpkg.errors import FormatVersionError, StoreError
from mlpkg.store import archive

GOLDEN = Path(__file__).parent.parent / "golden" / "archive-v1.bin"


def make_tree(root: Path) -> Path:
    """a: file, b: executable, c -> a, d/e: empty file, f/: empty dir."""
    root.mkdir()
    (root / "a").write_bytes(b"hello\n")
    (root / "b").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "b", 0o755)
    os.symlink("a", root / "c")
    (root / "d").mkdir()
    (root / "d" / "e").write_bytes(b"")
    (root / "f").mkdir()
    return root


def spec_bytes() -> bytes:
    """The same tree serialised by hand from the format description in archive.py."""

    def u64(n: int) -> bytes:
        return struct.pack("<Q", n)

    def name(s: bytes) -> bytes:
        return u64(len(s)) + s

    def reg(data: bytes, exe: bool = False) -> bytes:
        return b"R" + (b"\x01" if exe else b"\x00") + u64(len(data)) + data

    out = b"mlpkg-archive\x00" + struct.pack("<I", 1)
    out += b"D" + u64(5)
    out += name(b"a") + reg(b"hello\n")
    out += name(b"b") + reg(b"#!/bin/sh\necho hi\n", exe=True)
    out += name(b"c") + b"S" + u64(1) + b"a"
    out += name(b"d") + b"D" + u64(1) + name(b"e") + reg(b"")
    out += name(b"f") + b"D" + u64(0)
    return out


def test_bytes_match_the_format_description_and_the_golden_file(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    buf = io.BytesIO()
    info = archive.write(tree, buf)
    assert buf.getvalue() == spec_bytes()
    assert buf.getvalue() == GOLDEN.read_bytes()
    assert info.sha256 == hashlib.sha256(GOLDEN.read_bytes()).hexdigest()
    assert info.size == len(GOLDEN.read_bytes())
    assert archive.scan(tree).sha256 == info.sha256


def test_hash_ignores_times_owners_and_non_exec_modes(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a")
    b = make_tree(tmp_path / "b")
    os.utime(b / "a", (0, 0))
    os.chmod(b / "a", 0o600)
    os.chmod(b / "d", 0o700)
    assert archive.scan(a).sha256 == archive.scan(b).sha256


@pytest.mark.parametrize(
    "change",
    [
        lambda t: (t / "a").write_bytes(b"hellO\n"),
        lambda t: os.chmod(t / "a", 0o755),
        lambda t: (os.unlink(t / "c"), os.symlink("b", t / "c")),
        lambda t: (t / "f" / "new").write_bytes(b""),
        lambda t: os.rename(t / "a", t / "a2"),
    ],
    ids=["content", "exec-bit", "symlink-target", "new-file", "rename"],
)
def test_every_meaningful_change_changes_the_hash(tmp_path: Path, change: object) -> None:
    before = archive.scan(make_tree(tmp_path / "t")).sha256
    change(tmp_path / "t")  # type: ignore[operator]
    assert archive.scan(tmp_path / "t").sha256 != before


def test_single_file_root_and_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"x" * 3_000_000)
    buf = io.BytesIO()
    info = archive.write(f, buf)
    archive.restore(io.BytesIO(buf.getvalue()), tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == f.read_bytes()
    assert archive.scan(tmp_path / "back").sha256 == info.sha256


def test_tree_round_trip(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    buf = io.BytesIO()
    archive.write(tree, buf)
    archive.restore(io.BytesIO(buf.getvalue()), tmp_path / "r")
    assert archive.scan(tmp_path / "r").sha256 == archive.scan(tree).sha256
    assert os.readlink(tmp_path / "r" / "c") == "a"
    assert os.access(tmp_path / "r" / "b", os.X_OK)


def test_manifest_names_every_entry_with_its_own_hash(tmp_path: Path) -> None:
    info = archive.scan(make_tree(tmp_path / "t"), manifest=True)
    entries = {e.path: e for e in info.manifest}
    assert set(entries) == {"", "a", "b", "c", "d", "d/e", "f"}
    assert entries["a"].digest == hashlib.sha256(b"hello\n").hexdigest()
    assert entries["b"].kind == "x" and entries["c"].kind == "l" and entries["c"].digest == "a"


def test_forbid_finds_a_string_across_chunk_boundaries(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    needle = b"/some/store/root"
    data = bytearray(b"\0" * (3 << 20))
    cut = (1 << 20) - 5  # the needle straddles the first 1 MiB read
    data[cut : cut + len(needle)] = needle
    (root / "big").write_bytes(bytes(data))
    (root / "clean").write_bytes(b"nothing here")
    info = archive.scan(root, forbid=[b"elsewhere", needle])
    assert info.forbidden_in == ["big"]
    os.symlink("/some/store/root/abc-x/file", root / "link")
    os.symlink("../abc-x/file", root / "relative")
    assert archive.scan(root, forbid=[needle]).forbidden_in == ["big", "link"]


def test_fifo_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    os.mkfifo(root / "pipe")
    with pytest.raises(StoreError, match="not a regular file"):
        archive.scan(root)


def test_restore_refuses_other_versions_and_bad_names(tmp_path: Path) -> None:
    future = b"mlpkg-archive\x00" + struct.pack("<I", 2) + b"D" + struct.pack("<Q", 0)
    with pytest.raises(FormatVersionError, match="version 2"):
        archive.restore(io.BytesIO(future), tmp_path / "x")
    evil = (
        b"mlpkg-archive\x00" + struct.pack("<I", 1) + b"D" + struct.pack("<Q", 1)
        + struct.pack("<Q", 2) + b".." + b"D" + struct.pack("<Q", 0)
    )  # fmt: skip
    with pytest.raises(StoreError, match="bad entry name"):
        archive.restore(io.BytesIO(evil), tmp_path / "y")
    with pytest.raises(StoreError, match="truncated"):
        archive.restore(io.BytesIO(GOLDEN.read_bytes()[:-3]), tmp_path / "z")


def test_forbidden_strings_sharing_a_prefix_are_each_found_and_the_prefix_alone_is_not(
    tmp_path: Path,
) -> None:
    """The store and the build directory share the home as a prefix; scan looks for the
    prefix first (issue 15), which must change nothing of what it reports."""

    home = b"/tmp/some/home/"
    root = tmp_path / "t"
    root.mkdir()
    (root / "prefix-only").write_bytes(b"x" * 100 + home + b"elsewhere")
    (root / "store").write_bytes(b"y" * 100 + home + b"store/abc")
    (root / "builds").write_bytes(bytes(200_000) + home + b"builds" + bytes(1000))
    (root / "seam").write_bytes(b"z" * ((1 << 20) - 5) + home + b"store" + b"q" * 10)
    (root / "fixed").write_bytes(b"/build/out")
    forbid = [home + b"store", home + b"builds", b"/build/out"]
    found = archive.scan(root, forbid=forbid).forbidden_in
    assert found == ["builds", "fixed", "seam", "store"]
    stream = archive.StreamScan(forbid)
    names = sorted(p.name for p in root.iterdir())
    stream.directory("", names)
    for name in names:
        data = (root / name).read_bytes()
        stream.file(name, False, len(data))
        for i in range(0, len(data), 70_000):
            stream.data(data[i : i + 70_000])
        stream.end_file()
    assert stream.result().forbidden_in == found
    stream.close()
