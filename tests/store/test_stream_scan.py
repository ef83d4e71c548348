"""StreamScan: the scan of a tree learnt while it is written equals archive.scan of it.

Substitution trusts it instead of reading the tree again, so it must agree with
:func:`mlpkg.store.archive.scan` on every tree, and refuse any order but the archive's.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from mlpkg.cache.chunks import cut
from mlpkg.cache.format import Entry, Listing
from mlpkg.cache.restore import restore
from mlpkg.errors import CacheError
from mlpkg.store import archive
from mlpkg.store.archive import StreamScan

NEEDLE = b"/the/store/root"


def _tree(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    root.mkdir()
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "big.bin").write_bytes(rng.randbytes(3 * 1024 * 1024 + 17))
    (root / "sub" / "exe").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "sub" / "exe", 0o755)
    (root / "sub" / "empty").write_bytes(b"")
    for i in range(40):
        (root / "sub" / "deeper" / f"m{i:02}.py").write_bytes(rng.randbytes(rng.randrange(1, 9000)))
    # The needle split across the first 1 MiB piece of a big file, and inside a small one.
    straddle = rng.randbytes((1 << 20) - 4) + NEEDLE + rng.randbytes(200_000)
    (root / "straddle.bin").write_bytes(straddle)
    (root / "sub" / "names-root.txt").write_bytes(b"x" + NEEDLE + b"y")
    os.symlink("sub/exe", root / "link")
    os.symlink("/the/store/root/elsewhere", root / "sub" / "abs-link")
    (root / "ümlaut name").write_bytes(b"\xff\x00")


def _restored(src: Path, dest: Path) -> archive.ArchiveInfo:
    listing, chunks = cut(src)
    objects = {d: chunks.compressed(d) for d in chunks.where}
    scan = StreamScan([NEEDLE])
    try:
        restore(Listing.from_bytes(listing.to_bytes(), "mem", None), dest, objects.__getitem__,
                "mem", scan=scan)  # fmt: skip
        return scan.result()
    finally:
        scan.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_stream_scan_equals_the_scan_of_the_written_tree(tmp_path: Path, seed: int) -> None:
    _tree(tmp_path / "src", seed)
    got = _restored(tmp_path / "src", tmp_path / "dest")
    want = archive.scan(tmp_path / "dest", manifest=True, forbid=[NEEDLE])
    assert (got.sha256, got.size) == (want.sha256, want.size)
    assert got.manifest == want.manifest
    assert sorted(got.forbidden_in) == sorted(want.forbidden_in)
    assert {"straddle.bin", "sub/names-root.txt", "sub/abs-link"} <= set(want.forbidden_in)
    assert want.sha256 == archive.scan(tmp_path / "src").sha256


def test_a_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(os.urandom(300_000))
    got = _restored(tmp_path / "src", tmp_path / "dest")
    assert got.sha256 == archive.scan(tmp_path / "dest").sha256


def test_a_listing_out_of_archive_order_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        (src / name).write_bytes(name.encode())
    listing, chunks = cut(src)
    root, *files = listing.entries
    swapped = Listing([root, files[1], files[0], files[2]], listing.pack)
    objects = {d: chunks.compressed(d) for d in chunks.where}
    with pytest.raises(CacheError, match="out of archive order"):
        restore(swapped, tmp_path / "dest", objects.__getitem__, "mem", scan=StreamScan())


def test_a_directory_missing_entries_or_data_past_a_file_is_refused() -> None:
    scan = StreamScan()
    scan.directory("", ["a", "b"])
    scan.file("a", False, 1)
    with pytest.raises(ValueError, match="beyond"):
        scan.data(b"xy")
    scan.data(b"x")
    scan.end_file()
    with pytest.raises(ValueError, match="lacks"):
        scan.result()
    with pytest.raises(ValueError, match="out of archive order"):
        scan.symlink("c", "t")
    assert Entry("", "d").type == "d"


@pytest.mark.parametrize("seed", [3])
def test_archive_size_of_a_listing_is_the_scans(tmp_path: Path, seed: int) -> None:
    from mlpkg.cache.restore import archive_size

    _tree(tmp_path / "src", seed)
    listing, _ = cut(tmp_path / "src")
    assert archive_size(listing) == archive.scan(tmp_path / "src").size
    (tmp_path / "one").write_bytes(b"abc")
    assert archive_size(cut(tmp_path / "one")[0]) == archive.scan(tmp_path / "one").size


def test_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "run").write_bytes(b"#!/bin/sh\n")
    os.chmod(tmp_path / "src" / "run", 0o755)
    old = os.umask(0o177)
    try:
        got = _restored(tmp_path / "src", tmp_path / "dest")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "dest" / "run").st_mode & 0o100
    assert got.sha256 == archive.scan(tmp_path / "dest").sha256
