"""mlpkg.cache.chunks, restore and format: a tree cut into objects and put back together,
and what a hostile or broken cache can make of a listing or an object.

Real files, real zstd frames; the objects live in a dict standing for the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tracemalloc
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import zstandard

from mlpkg.cache.chunks import cut
from mlpkg.cache.format import CHUNKING, MAX_OBJECT, Entry, Listing, compressed_bound
from mlpkg.cache.restore import decode, decode_listing, read_order, restore
from mlpkg.cache.reuse import LocalChunks
from mlpkg.errors import CacheError
from mlpkg.store.archive import scan
from mlpkg.store.path import StorePath

CACHE = "file:///the/test/cache"
PATH = StorePath.parse("1b2ndf8yxjbmhynq5ia6x2jy0zckm1q6-tree-1.0")


def noise(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def upload(root: Path) -> tuple[Listing, dict[str, bytes]]:
    """``root`` cut as push cuts it: its listing (through its bytes, as a reader gets it)
    and the objects, by digest."""
    listing, chunks = cut(root)
    objects = {d: chunks.compressed(d) for d, _ in listing.objects()}
    raw = listing.to_bytes()
    return Listing.from_bytes(raw, CACHE, PATH), objects


def round_trip(src: Path, dest: Path) -> Listing:
    listing, objects = upload(src)
    restore(listing, dest, objects.__getitem__, CACHE, workers=3, window=2)
    assert scan(dest).hash == scan(src).hash
    return listing


def write_tree(root: Path, files: Mapping[str, bytes | str]) -> Path:
    """Files (``name*``: executable, ``name@``: a symlink to the str value, ``name/``: an
    empty directory)."""
    root.mkdir()
    for name, content in files.items():
        target = root / name.rstrip("*@/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            target.mkdir()
        elif name.endswith("@"):
            assert isinstance(content, str)
            target.symlink_to(content)
        else:
            target.write_bytes(content.encode() if isinstance(content, str) else content)
            target.chmod(0o755 if name.endswith("*") else 0o644)
    return root


# -- round trips ----------------------------------------------------------------------------


def test_big_files_are_several_chunks_and_come_back(tmp_path: Path) -> None:
    big = noise(1, 9 * 1024 * 1024)
    src = write_tree(tmp_path / "src", {"a/big.bin": big, "b/big2.bin*": noise(2, 300_000)})
    listing = round_trip(src, tmp_path / "dest")
    entry = next(e for e in listing.entries if e.path == "a/big.bin")
    assert entry.chunks is not None and len(entry.chunks) >= 3
    assert all(CHUNKING.min_size <= n <= CHUNKING.max_size for _, n in entry.chunks[:-1])
    assert sum(n for _, n in entry.chunks) == len(big)
    assert listing.pack == []  # no small files
    assert os.access(tmp_path / "dest/b/big2.bin", os.X_OK)


def test_many_small_files_share_a_few_pack_objects(tmp_path: Path) -> None:
    files: dict[str, bytes | str] = {f"pkg/m{i:03}.py": noise(i, 4000) for i in range(400)}
    src = write_tree(tmp_path / "src", files)
    listing, objects = upload(src)
    assert sum(n for _, n in listing.pack) == 400 * 4000
    assert 1 < len(objects) < 10  # 1.6 MB of small files: a few pack chunks, not 400
    assert all(e.chunks is None for e in listing.entries if e.type == "f")
    restore(listing, tmp_path / "dest", objects.__getitem__, CACHE, window=1)
    assert scan(tmp_path / "dest").hash == scan(src).hash


def test_every_kind_of_entry_comes_back(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src",
        {
            "empty": b"",
            "bin/run*": "#!/bin/sh\necho hi\n",
            "bin/empty-exe*": b"",
            "lib/x/y/z/deep.txt": "deep\n",
            "lib/just-under*": noise(3, CHUNKING.small_file - 1),
            "lib/just-at": noise(4, CHUNKING.small_file),
            "link@": "bin/run",
            "dangling@": "../nowhere/at/all",
            "emptydir/": "",
            "zz/emptydir2/": "",
        },
    )
    listing = round_trip(src, tmp_path / "dest")
    dest = tmp_path / "dest"
    assert os.readlink(dest / "dangling") == "../nowhere/at/all"
    assert (dest / "emptydir").is_dir() and not os.listdir(dest / "emptydir")
    assert os.access(dest / "bin/run", os.X_OK) and not os.access(dest / "empty", os.X_OK)
    kinds = {e.path: e.type for e in listing.entries}
    assert kinds["link"] == "l" and kinds["bin/run"] == "x" and kinds["emptydir"] == "d"
    at = next(e for e in listing.entries if e.path == "lib/just-at")
    under = next(e for e in listing.entries if e.path == "lib/just-under")
    assert at.chunks is not None and under.chunks is None


def test_a_single_file_or_symlink_root(tmp_path: Path) -> None:
    file = tmp_path / "one"
    file.write_bytes(noise(5, 100_000))
    round_trip(file, tmp_path / "dest-file")
    link = tmp_path / "l"
    link.symlink_to("one")
    round_trip(link, tmp_path / "dest-link")
    assert os.readlink(tmp_path / "dest-link") == "one"


def test_identical_files_in_two_trees_are_the_same_objects(tmp_path: Path) -> None:
    shared = noise(6, 3 * 1024 * 1024)
    one = write_tree(tmp_path / "one", {"model.onnx": shared, "a.txt": "one\n"})
    two = write_tree(tmp_path / "two", {"x/y/weights.bin": shared, "b.txt": "two\n"})
    l1, _ = upload(one)
    l2, _ = upload(two)
    c1 = next(e.chunks for e in l1.entries if e.path == "model.onnx")
    c2 = next(e.chunks for e in l2.entries if e.path == "x/y/weights.bin")
    assert c1 == c2 and c1
    assert l1.pack != l2.pack  # the small files differ


def test_a_small_change_keeps_most_chunks(tmp_path: Path) -> None:
    data = bytearray(noise(7, 8 * 1024 * 1024))
    one = write_tree(tmp_path / "one", {"d.bin": bytes(data)})
    data[4_000_000:4_000_010] = b"0123456789"
    two = write_tree(tmp_path / "two", {"d.bin": bytes(data)})
    d1 = {d for d, _ in upload(one)[0].objects()}
    d2 = {d for d, _ in upload(two)[0].objects()}
    assert len(d2 - d1) <= 2 and len(d1 & d2) >= len(d1) - 2


# -- hostile listings -----------------------------------------------------------------------


def _objects_of(*contents: bytes) -> tuple[list[tuple[str, int]], dict[str, bytes]]:
    refs = [(hashlib.sha256(c).hexdigest(), len(c)) for c in contents]
    objs = {
        d: zstandard.ZstdCompressor().compress(c) for (d, _), c in zip(refs, contents, strict=True)
    }
    return refs, objs


def _restore_fails(listing: Listing, objects: dict[str, bytes], tmp_path: Path) -> str:
    before = set(os.listdir(tmp_path))
    dest = tmp_path / "dest"
    with pytest.raises(CacheError) as e:
        restore(listing, dest, objects.__getitem__, CACHE)
    assert set(os.listdir(tmp_path)) <= before | {"dest"}
    assert CACHE in e.value.message
    return e.value.message


@pytest.mark.parametrize(
    "entries",
    [
        [["", "d"], ["../x", "f", 3, None]],
        [["", "d"], ["a", "d"], ["a/../../x", "f", 3, None]],
        [["", "d"], ["a", "d"], ["a/..", "d"]],
        [["", "d"], ["l", "l", ".."], ["l/x", "f", 3, None]],
        [["", "d"], ["", "d"], ["x", "f", 3, None]],
        [["", "d"], ["x", "f", 3, None], ["x", "f", 0, None]],
        [["", "d"], ["a", "d"], ["a", "d"], ["a/x", "f", 3, None]],
        [["x", "d"], ["x/y", "f", 3, None]],
        [["", "d"], ["a/x", "f", 3, None]],
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "dir-dotdot",
        "under-symlink",
        "root-twice",
        "file-twice",
        "dir-twice",
        "root-named",
        "no-parent",
    ],
)
def test_a_listing_cannot_write_outside_or_twice(tmp_path: Path, entries: list[object]) -> None:
    refs, objects = _objects_of(b"abc")
    raw = {"format": "mlpkg-listing", "version": 1, "entries": entries, "pack": refs}
    listing = Listing.from_bytes(json.dumps(raw).encode(), CACHE, PATH)
    (tmp_path / "work").mkdir()
    _restore_fails(listing, objects, tmp_path / "work")
    assert not (tmp_path / "x").exists() and not (tmp_path / "work" / "x").exists()


def test_an_absolute_entry_name_stays_inside(tmp_path: Path) -> None:
    """``"/name"`` has the root as its parent; joined naively it would be ``/name``."""
    name = f"mlpkg-test-escape-{uuid.uuid4().hex}"
    refs, objects = _objects_of(b"abc")
    listing = Listing([Entry("", "d"), Entry(f"/{name}", "f", 3, None)], refs)
    try:
        with pytest.raises(CacheError):
            restore(listing, tmp_path / "dest", objects.__getitem__, CACHE)
    finally:
        escaped = Path("/") / name
        if escaped.exists():
            escaped.unlink()
            pytest.fail(f"the listing wrote {escaped}")


@pytest.mark.parametrize(
    "files,pack",
    [([3], [b"ab"]), ([2], [b"abc"]), ([2, 2], [b"ab"]), ([], [b"abc"])],
    ids=["pack-short", "pack-long", "pack-short-later", "pack-unused"],
)
def test_a_pack_that_does_not_add_up_is_refused(
    tmp_path: Path, files: list[int], pack: list[bytes]
) -> None:
    refs, objects = _objects_of(*pack)
    entries = [Entry("", "d")] + [Entry(f"f{i}", "f", n, None) for i, n in enumerate(files)]
    _restore_fails(Listing(entries, refs), objects, tmp_path)


def test_chunks_that_do_not_add_up_to_the_size_are_malformed() -> None:
    digest = hashlib.sha256(b"abc").hexdigest()
    raw = b'{"format":"mlpkg-listing","version":1,"entries":[["","f",4,[["%s",3]]]],"pack":[]}'
    with pytest.raises(CacheError, match="do not add up"):
        Listing.from_bytes(raw % digest.encode(), CACHE, PATH)
    too_big = raw.replace(b",3]", b",%d]" % (MAX_OBJECT + 1)) % digest.encode()
    with pytest.raises(CacheError, match="bad length"):
        Listing.from_bytes(too_big, CACHE, PATH)
    with pytest.raises(CacheError, match="malformed"):
        Listing.from_bytes(b'{"format":"mlpkg-listing","version":1,"entries":[[1,"d"]],'
                           b'"pack":[]}', CACHE, PATH)  # fmt: skip


def test_read_order_follows_the_files(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src",
        {f"a{i:03}": noise(i, 30_000) for i in range(30)} | {"m/big": noise(99, 500_000)},
    )
    listing, _ = upload(src)
    order = read_order(listing)
    assert len(order) >= len(listing.objects())
    assert set(order) == set(listing.objects())


# -- hostile objects ------------------------------------------------------------------------


def _one_file(tmp_path: Path) -> tuple[Listing, dict[str, bytes], str]:
    src = write_tree(tmp_path / "src", {"big": noise(8, 200_000)})
    listing, objects = upload(src)
    (digest,) = objects
    return listing, objects, digest


Corruption = Callable[[bytes], bytes]


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b[:20] + bytes([b[20] ^ 0x01]) + b[21:],
        lambda b: b[: len(b) // 2],
        lambda b: b[:-1] + bytes([b[-1] ^ 0x80]),
        lambda b: zstandard.ZstdCompressor().compress(noise(9, 200_000)),
        lambda b: zstandard.ZstdCompressor().compress(noise(8, 200_000)[:-1] + b"!"),
        lambda b: b"not zstd at all",
        lambda b: b"",
    ],
    ids=[
        "flipped",
        "truncated",
        "flipped-tail",
        "other-content",
        "one-byte-off",
        "garbage",
        "empty",
    ],
)
def test_a_corrupt_object_is_refused_naming_the_cache(tmp_path: Path, corrupt: Corruption) -> None:
    listing, objects, digest = _one_file(tmp_path)
    objects[digest] = corrupt(objects[digest])
    message = _restore_fails(listing, objects, tmp_path)
    assert digest in message


def test_an_object_bigger_than_stated_is_refused_without_inflating_it() -> None:
    """A frame of 64 MiB of zeros (a few KB) named as a 1000-byte chunk: refused, and
    never decompressed whole, whatever its header says."""
    zeros = b"\0" * (64 << 20)
    bombs = [
        zstandard.ZstdCompressor(level=1).compress(zeros),  # content size in the header
        zstandard.ZstdCompressor(level=1, write_content_size=False).compress(zeros),
    ]
    del zeros
    digest = hashlib.sha256(b"\0" * 1000).hexdigest()
    for bomb in bombs:
        tracemalloc.start()
        try:
            with pytest.raises(CacheError, match="corrupt object"):
                decode(bomb, digest, 1000, CACHE)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20, f"decoding held {peak} bytes"


def test_a_listing_bomb_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlpkg.cache.restore as restore_mod

    monkeypatch.setattr(restore_mod, "MAX_LISTING", 1 << 20)
    bomb = zstandard.ZstdCompressor().compress(b"[" * (8 << 20))
    with pytest.raises(CacheError, match="corrupt listing"):
        decode_listing(bomb, "ab" * 32, CACHE)
    good = b'{"format":"mlpkg-listing"}'
    assert (
        decode_listing(
            zstandard.ZstdCompressor().compress(good), hashlib.sha256(good).hexdigest(), CACHE
        )
        == good
    )


def test_a_missing_object_is_a_cache_error(tmp_path: Path) -> None:
    listing, _, digest = _one_file(tmp_path)

    def fetch(d: str) -> bytes:
        raise CacheError(f"The cache {CACHE} lacks the object {d}.", cache=CACHE)

    with pytest.raises(CacheError, match=digest):
        restore(listing, tmp_path / "dest", fetch, CACHE)


@pytest.mark.parametrize("n", [0, 1, 100, 65_535, 131_071, 131_072, 1 << 20, MAX_OBJECT])
def test_no_frame_of_n_bytes_is_bigger_than_the_bound(n: int) -> None:
    data = noise(n, n)
    for level in (1, 3, 19) if n <= 1 << 20 else (1, 3):
        frame = zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data)
        assert len(frame) <= compressed_bound(n)
    assert compressed_bound(n) < n + n // 128 + 1024


def test_unusual_names_come_back(tmp_path: Path) -> None:
    """Any name a Linux tree may hold: spaces, a newline, a backslash, non-ASCII, bytes
    that are not UTF-8, a leading dash or dot."""
    src = tmp_path / "src"
    src.mkdir()
    names = [b"with space", b"new\nline", b"back\\slash", "caf\u00e9".encode(), b"\xff\xfe",
             b"-dash", b".hidden", b"..dots", b"a:b"]  # fmt: skip
    for i, raw in enumerate(names):
        (src / os.fsdecode(raw)).write_bytes(noise(i, 10 + i))
    sub = src / os.fsdecode(b"dir \xe9")
    sub.mkdir()
    (sub / "inner").write_bytes(b"x")
    round_trip(src, tmp_path / "dest")
    assert sorted(os.listdir(os.fsencode(tmp_path / "dest"))) == sorted([*names, b"dir \xe9"])


def test_chunks_held_locally_are_used_only_while_they_hash_right(tmp_path: Path) -> None:
    big = noise(11, 2 * 1024 * 1024)
    src = write_tree(tmp_path / "src", {"w.bin": big, "small": "s\n"})
    listing, objects = upload(src)
    local = LocalChunks(tmp_path / "home")
    local.add(src, listing)
    fetched: list[str] = []

    def fetch(digest: str) -> bytes:
        fetched.append(digest)
        return objects[digest]

    restore(listing, tmp_path / "one", fetch, CACHE, local=local.read)
    assert sorted(fetched) == sorted(d for d, _ in listing.pack)  # only the small files' pack
    (src / "w.bin").write_bytes(big[:-1] + b"!")  # the local copy's last chunk changed
    fetched.clear()
    restore(listing, tmp_path / "two", fetch, CACHE, local=local.read)
    assert scan(tmp_path / "two").hash == scan(tmp_path / "one").hash
    (entry,) = [e for e in listing.entries if e.path == "w.bin"]
    assert entry.chunks is not None and len(entry.chunks) > 1
    assert sorted(fetched) == sorted([entry.chunks[-1][0], *(d for d, _ in listing.pack)])
    (src / "w.bin").unlink()  # gone
    fetched.clear()
    restore(listing, tmp_path / "three", fetch, CACHE, local=local.read)
    assert sorted(fetched) == sorted(objects)
