"""Tests of mlpkg.store.unpack on archives built here with tarfile, zipfile and zstandard.
The size caps (archive bombs) are tested in test_unpack_caps.py."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard

from mlpkg.errors import FetchError, StoreError, UnsafeArchive
from mlpkg.store.archive import scan
from mlpkg.store.unpack import FORMATS, detect_format, unpack
from tests.store.unpack_support import (
    compress,
    d,
    f,
    hard,
    make,
    special,
    sym,
    tar_bytes,
    zip_bytes,
)

Tree = dict[str, tuple[object, ...]]


def snapshot(root: Path) -> Tree:
    """Every path under ``root``: ("d", mode), ("f", mode, contents) or ("l", target)."""
    out: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("f", stat.S_IMODE(st.st_mode), Path(path).read_bytes())
    return out


def refused(archive: Path, dest: Path, member: str, phrase: str, **kw: object) -> str:
    """Unpack must refuse ``archive`` naming the label and ``member``; ``dest`` is gone."""
    with pytest.raises(UnsafeArchive) as info:
        unpack(archive, dest, **kw)  # type: ignore[arg-type]
    message = info.value.message
    label = kw.get("label") or archive.name
    assert f"archive '{label}'" in message
    assert f"member '{member}'" in message
    assert phrase in message
    assert not dest.exists()
    return message


SAMPLE = [
    d("pkg"),
    f("pkg/README", b"hello\n", 0o600),
    f("pkg/bin/tool", b"#!/bin/sh\necho hi\n", 0o750),
    f("pkg/lib/libx.so.1", b"\x7fELF\x00binary" * 1000),
    sym("pkg/lib/libx.so", "libx.so.1"),
    sym("pkg/bin/libdir", "../lib"),
    sym("pkg/top", "."),
    d("pkg/empty"),
    f("pkg/deep/a/b/c.txt", b"deep"),  # its directories are not listed
]
SAMPLE_TREE: Tree = {
    "pkg": ("d", 0o755),
    "pkg/README": ("f", 0o644, b"hello\n"),
    "pkg/bin": ("d", 0o755),
    "pkg/bin/tool": ("f", 0o755, b"#!/bin/sh\necho hi\n"),
    "pkg/bin/libdir": ("l", "../lib"),
    "pkg/lib": ("d", 0o755),
    "pkg/lib/libx.so.1": ("f", 0o644, b"\x7fELF\x00binary" * 1000),
    "pkg/lib/libx.so": ("l", "libx.so.1"),
    "pkg/top": ("l", "."),
    "pkg/empty": ("d", 0o755),
    "pkg/deep": ("d", 0o755),
    "pkg/deep/a": ("d", 0o755),
    "pkg/deep/a/b": ("d", 0o755),
    "pkg/deep/a/b/c.txt": ("f", 0o644, b"deep"),
}


# -- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_detect_format_by_content_not_name(tmp_path: Path, fmt: str) -> None:
    archive = make(tmp_path, SAMPLE, fmt, name="misleading.zip" if fmt != "zip" else "x.tar")
    assert detect_format(archive) == fmt


def test_detect_old_tar_without_ustar_magic(tmp_path: Path) -> None:
    data = bytearray(tar_bytes([f("a", b"v7")], fmt=tarfile.USTAR_FORMAT))
    data[257:265] = bytes(8)  # a v7 header: no magic, only the checksum identifies it
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\x00 " % sum(data[:512])
    archive = tmp_path / "old"
    archive.write_bytes(bytes(data))
    assert detect_format(archive) == "tar"
    unpack(archive, tmp_path / "out")
    assert snapshot(tmp_path / "out") == {"a": ("f", 0o644, b"v7")}


@pytest.mark.parametrize(
    "content", [b"", b"just some text\n" * 100, b"\x00" * 10240, b"%PDF-1.7\n"]
)
def test_not_an_archive(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "thing.tar.gz"
    path.write_bytes(content)
    with pytest.raises(FetchError, match=r"^'thing\.tar\.gz' is not a supported archive"):
        detect_format(path)
    with pytest.raises(FetchError, match=r"'https://x\.org/t\.tgz' is not a supported archive"):
        unpack(path, tmp_path / "out", label="https://x.org/t.tgz")
    assert not (tmp_path / "out").exists()


def test_missing_archive_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="Cannot read the archive 'nope'"):
        detect_format(tmp_path / "nope")


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    archive = make(tmp_path, SAMPLE, fmt)
    dest = tmp_path / "out"
    unpack(archive, dest)
    assert snapshot(dest) == SAMPLE_TREE
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert (dest / "pkg/bin/libdir/libx.so").read_bytes() == b"\x7fELF\x00binary" * 1000


def test_zstd_with_several_frames(tmp_path: Path) -> None:
    data = tar_bytes(SAMPLE)
    cut = len(data) // 3
    zc = zstandard.ZstdCompressor()
    archive = tmp_path / "multi.tar.zst"
    archive.write_bytes(zc.compress(data[:cut]) + zc.compress(data[cut:]))
    unpack(archive, tmp_path / "out")
    assert snapshot(tmp_path / "out") == SAMPLE_TREE


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_deep_path_is_fine(tmp_path: Path, tar_format: int) -> None:
    name = "/".join(f"level{i:02d}-{'x' * 20}" for i in range(40)) + "/leaf.txt"
    assert len(name) > 1000
    archive = tmp_path / "bomb.tar"
    archive.write_bytes(tar_bytes([f(name, b"leaf", 0o755)], fmt=tar_format))
    unpack(archive, tmp_path / "out")
    assert snapshot(tmp_path / "out")[name] == ("f", 0o755, b"leaf")


def test_corrupt_archives_are_fetch_errors(tmp_path: Path) -> None:
    good = gzip.compress(tar_bytes(SAMPLE))
    cases = {
        "truncated.tgz": good[: len(good) // 2],
        "not-tar-inside.tgz": gzip.compress(b"hello world " * 200),
        "bad.zip": zip_bytes(SAMPLE)[:200],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FetchError, match=f"Cannot unpack '{name}'"):
            unpack(tmp_path / name, tmp_path / "out")
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["tar", "tar.zst", "tar.xz"])
@pytest.mark.parametrize("where", ["in-data", "in-header", "between-members"])
def test_truncated_tar_is_a_fetch_error(tmp_path: Path, fmt: str, where: str) -> None:
    data = tar_bytes([f("a", b"A" * 1000), f("b", b"B" * 1000)])
    # Header of a at 0, its data at 512..1536, header of b at 1536, its data at 2048.
    cut = {"in-data": 1000, "in-header": 1536 + 100, "between-members": 2048 + 1024}[where]
    archive = tmp_path / "cut"
    archive.write_bytes(compress(data[:cut], fmt))
    with pytest.raises(FetchError, match=r"Cannot unpack 'cut'.*truncated"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_encrypted_zip_member_is_a_fetch_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("secret", b"ciphertext")
    data = bytearray(buf.getvalue())
    central = data.index(b"PK\x01\x02")  # zipfile clears the flag on writing: set it after
    data[central + 8] |= 0x1
    (tmp_path / "e.zip").write_bytes(bytes(data))
    with pytest.raises(FetchError, match="member 'secret' is encrypted"):
        unpack(tmp_path / "e.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_modes_are_normalised(tmp_path: Path, fmt: str) -> None:
    entries = [
        d("d", 0o1777),
        d("private", 0o700),
        f("d/suid", b"s", 0o4755),
        f("d/ro", b"r", 0o400),
        f("d/other-x", b"o", 0o601),
        f("d/world", b"w", 0o666),
        f("private/sgid", b"g", 0o2644),
    ]
    old = os.umask(0o077)
    try:
        unpack(make(tmp_path, entries, fmt), tmp_path / "out")
    finally:
        os.umask(old)
    assert snapshot(tmp_path / "out") == {
        "d": ("d", 0o755),
        "private": ("d", 0o755),
        "d/suid": ("f", 0o755, b"s"),
        "d/ro": ("f", 0o644, b"r"),
        "d/other-x": ("f", 0o755, b"o"),
        "d/world": ("f", 0o644, b"w"),
        "private/sgid": ("f", 0o644, b"g"),
    }


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_tree_does_not_depend_on_member_order(tmp_path: Path, fmt: str) -> None:
    entries = [*SAMPLE, d("pkg/deep/a", 0o700)]
    forward = tmp_path / "forward"
    backward = tmp_path / "backward"
    unpack(make(tmp_path, entries, fmt, "a"), forward)
    unpack(make(tmp_path, entries[::-1], fmt, "b"), backward)
    assert snapshot(forward) == snapshot(backward) == SAMPLE_TREE
    assert scan(forward).sha256 == scan(backward).sha256


def test_dot_slash_names_and_root_entry(tmp_path: Path) -> None:
    entries = [d("."), d("./pkg"), f("./pkg/a", b"A"), sym("./pkg/b", "./a")]
    archive = make(tmp_path, entries)
    unpack(archive, tmp_path / "out")
    assert snapshot(tmp_path / "out") == {
        "pkg": ("d", 0o755),
        "pkg/a": ("f", 0o644, b"A"),
        "pkg/b": ("l", "./a"),
    }
    # Like GNU tar, stripping counts "." as a component.
    unpack(archive, tmp_path / "out1", strip_components=1)
    assert snapshot(tmp_path / "out1") == snapshot(tmp_path / "out")
    unpack(archive, tmp_path / "out2", strip_components=2)
    assert snapshot(tmp_path / "out2") == {"a": ("f", 0o644, b"A"), "b": ("l", "./a")}


def test_dest_must_not_exist(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(StoreError, match="already exists"):
        unpack(make(tmp_path, SAMPLE), dest)
    assert (dest / "keep").read_text() == "mine"


# -- hard links ------------------------------------------------------------------------------


def test_hard_link_to_earlier_member(tmp_path: Path) -> None:
    entries = [f("pkg/a", b"data", 0o755), hard("pkg/b", "pkg/a"), hard("pkg/sub/c", "./pkg/b")]
    dest = tmp_path / "out"
    unpack(make(tmp_path, entries), dest)
    assert snapshot(dest) == {
        "pkg": ("d", 0o755),
        "pkg/a": ("f", 0o755, b"data"),
        "pkg/b": ("f", 0o755, b"data"),
        "pkg/sub": ("d", 0o755),
        "pkg/sub/c": ("f", 0o755, b"data"),
    }
    assert os.path.samefile(dest / "pkg/a", dest / "pkg/sub/c")


def test_hard_link_with_strip_components(tmp_path: Path) -> None:
    entries = [f("pkg/a", b"data"), hard("pkg/b", "pkg/a")]
    unpack(make(tmp_path, entries), tmp_path / "out", strip_components=1)
    assert snapshot(tmp_path / "out") == {"a": ("f", 0o644, b"data"), "b": ("f", 0o644, b"data")}


def test_hard_link_to_a_stripped_file_is_refused(tmp_path: Path) -> None:
    archive = make(tmp_path, [f("top", b"x"), hard("pkg/b", "top")])
    refused(archive, tmp_path / "out", "pkg/b", "stripping drops", strip_components=1)


# -- strip_components ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_strip_components(tmp_path: Path, fmt: str) -> None:
    archive = make(tmp_path, [*SAMPLE, f("toplevel-file", b"dropped")], fmt)
    unpack(archive, tmp_path / "one", strip_components=1)
    expected = {k.removeprefix("pkg/"): v for k, v in SAMPLE_TREE.items() if k != "pkg"}
    assert snapshot(tmp_path / "one") == expected
    no_up = [e for e in SAMPLE if e[1] != "pkg/bin/libdir"]  # ../lib would leave the tree
    unpack(make(tmp_path, no_up, fmt, "no-up"), tmp_path / "two", strip_components=2)
    assert snapshot(tmp_path / "two") == {
        "tool": ("f", 0o755, b"#!/bin/sh\necho hi\n"),
        "libx.so.1": ("f", 0o644, b"\x7fELF\x00binary" * 1000),
        "libx.so": ("l", "libx.so.1"),
        "a": ("d", 0o755),
        "a/b": ("d", 0o755),
        "a/b/c.txt": ("f", 0o644, b"deep"),
    }


def test_strip_components_leaving_nothing(tmp_path: Path) -> None:
    archive = make(tmp_path, [d("pkg"), f("pkg/only", b"x")])
    with pytest.raises(FetchError, match=r"Stripping 2 .* from 'my-recipe' leaves nothing"):
        unpack(archive, tmp_path / "out", strip_components=2, label="my-recipe")
    assert not (tmp_path / "out").exists()


def test_strip_components_still_checks_dropped_members(tmp_path: Path) -> None:
    archive = make(tmp_path, [sym("evil", "/etc"), f("pkg/a", b"x")])
    refused(archive, tmp_path / "out", "evil", "absolute path '/etc'", strip_components=1)


def test_symlink_that_escapes_only_after_stripping(tmp_path: Path) -> None:
    entries = [f("pkg/x", b"x"), sym("pkg/sub/l", "../../x")]
    archive = make(tmp_path, entries)
    unpack(archive, tmp_path / "whole")  # inside the archive's own tree
    assert os.readlink(tmp_path / "whole/pkg/sub/l") == "../../x"
    refused(archive, tmp_path / "out", "pkg/sub/l", "resolves outside", strip_components=1)


def test_stripping_that_merges_two_paths(tmp_path: Path) -> None:
    archive = make(tmp_path, [f("a/x", b"1"), f("b/x", b"2")])
    refused(archive, tmp_path / "out", "b/x", "duplicates the path 'x'", strip_components=1)


# -- hostile archives ------------------------------------------------------------------------

HOSTILE_TAR = {
    "absolute": ([f("/etc/evil", b"x")], "/etc/evil", "absolute path"),
    "dotdot": ([f("a/../../evil", b"x")], "a/../../evil", "'..' component"),
    "dotdot-first": ([f("../evil", b"x")], "../evil", "'..' component"),
    "dir-dotdot": ([d("..")], "..", "'..' component"),
    "symlink-absolute": ([sym("l", "/etc/passwd")], "l", "absolute path '/etc/passwd'"),
    "symlink-up": ([sym("sub/l", "../../etc")], "sub/l", "'../../etc', which resolves outside"),
    "symlink-top-up": ([sym("l", "..")], "l", "resolves outside"),
    "symlink-via-symlink": (
        [sym("d/up", ".."), sym("d/esc", "up/..")],
        "d/esc",
        "'up/..', which resolves outside",
    ),
    "symlink-via-later-symlink": (
        [sym("d/esc", "up/../x"), sym("d/up", "..")],
        "d/esc",
        "resolves outside",
    ),
    "symlink-loop": ([sym("a", "b"), sym("b", "a")], "a", "loops"),
    "symlink-empty": ([sym("l", "")], "l", "empty target"),
    "hardlink-missing": ([hard("h", "nowhere")], "h", "not an earlier regular file"),
    "hardlink-later": ([hard("h", "a"), f("a", b"x")], "h", "not an earlier regular file"),
    "hardlink-self": ([hard("h", "h")], "h", "not an earlier regular file"),
    "hardlink-dir": ([d("a"), hard("h", "a")], "h", "not an earlier regular file"),
    "hardlink-symlink": ([sym("s", "x"), hard("h", "s")], "h", "not an earlier regular file"),
    "hardlink-absolute": ([hard("h", "/etc/passwd")], "h", "'/etc/passwd', which is outside"),
    "hardlink-dotdot": ([f("a", b""), hard("h", "../a")], "h", "'../a', which is outside"),
    "char-device": ([special("c", "dev/null")], "dev/null", "a character device"),
    "block-device": ([special("b", "sda")], "sda", "a block device"),
    "fifo": ([special("p", "pipe")], "pipe", "a FIFO"),
    "unknown-type": ([special("V", "vol")], "vol", "unsupported tar type"),
    "through-symlink": (
        [d("sub"), sym("link", "sub"), f("link/x", b"x")],
        "link/x",
        "passes through the symlink 'link'",
    ),
    "through-symlink-before": (
        [f("link/x", b"x"), d("sub"), sym("link", "sub")],
        "link",
        "the earlier member 'link/x' is inside it",
    ),
    "through-file": ([f("a", b""), f("a/b", b"")], "a/b", "'a', which is not a directory"),
    "file-over-dir": ([f("a/b", b""), f("a", b"")], "a", "is a file, but the earlier member"),
    "duplicate-file": ([f("a", b"1"), f("a", b"2")], "a", "duplicates the path 'a'"),
    "duplicate-dot": ([f("a", b"1"), f("./a", b"2")], "./a", "duplicates the path 'a'"),
    "duplicate-dir": ([d("a"), d("a/")], "a", "duplicates the path 'a'"),
    "duplicate-symlink": ([sym("a", "x"), f("a", b"")], "a", "duplicates the path 'a'"),
    "root-not-dir": ([f(".", b"x")], ".", "not a directory"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TAR))
def test_hostile_tar_is_refused(tmp_path: Path, case: str) -> None:
    entries, member, phrase = HOSTILE_TAR[case]
    # Good members first, so that refusing has something to clean up.
    archive = make(tmp_path, [f("zz-ok/file", b"fine"), *entries], "tar.gz")
    refused(archive, tmp_path / "out", member, phrase, label="https://x.org/src.tgz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.bin"]  # nothing escaped


@pytest.mark.parametrize(
    ("pax", "member", "phrase"),
    [
        ({"path": "evil\x00name"}, "evil\\x00name", "has a NUL byte in its name"),
        ({"linkpath": "a\x00b"}, "link", "is a symlink whose target has a NUL byte"),
    ],
)
def test_nul_in_a_tar_member(tmp_path: Path, pax: dict[str, str], member: str, phrase: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("link")
        if "linkpath" in pax:
            info.type = tarfile.SYMTYPE
        info.pax_headers = pax  # tarfile would cut these at the NUL in a plain header
        tf.addfile(info, io.BytesIO(b""))
    (tmp_path / "nul.tar").write_bytes(buf.getvalue())
    refused(tmp_path / "nul.tar", tmp_path / "out", member, phrase)


HOSTILE_ZIP = {
    "absolute": ([f("/etc/evil", b"x")], "/etc/evil", "absolute path"),
    "dotdot": ([f("a/../../evil", b"x")], "a/../../evil", "'..' component"),
    "symlink-absolute": ([sym("l", "/etc")], "l", "absolute path '/etc'"),
    "symlink-up": ([sym("a/l", "../..")], "a/l", "resolves outside"),
    "char-device": ([special("c", "tty")], "tty", "a character device"),
    "block-device": ([special("b", "sda")], "sda", "a block device"),
    "fifo": ([special("p", "fifo")], "fifo", "a FIFO"),
    "socket": ([special("s", "sock")], "sock", "a socket"),
    "through-symlink": ([sym("link", "sub"), f("link/x", b"x")], "link/x", "symlink 'link'"),
    "duplicate": ([f("a", b"1"), f("a", b"2")], "a", "duplicates the path 'a'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ZIP))
def test_hostile_zip_is_refused(tmp_path: Path, case: str) -> None:
    entries, member, phrase = HOSTILE_ZIP[case]
    archive = make(tmp_path, [f("zz-ok/file", b"fine"), *entries], "zip")
    refused(archive, tmp_path / "out", member, phrase)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.bin"]


def test_nul_in_a_zip_name(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("placeholder")
        info.filename = "evil\x00name"  # ZipInfo() itself would cut the name at the NUL
        zf.writestr(info, b"x")
    (tmp_path / "nul.zip").write_bytes(buf.getvalue())
    refused(tmp_path / "nul.zip", tmp_path / "out", "evil\\x00name", "NUL byte in its name")


def test_symlinks_inside_the_tree_are_kept(tmp_path: Path) -> None:
    entries = [
        d("a/b"),
        sym("a/b/root", "../.."),
        sym("a/b/via", "root/a/./b/../b"),
        sym("a/dangling", "missing/file"),
    ]
    unpack(make(tmp_path, entries), tmp_path / "out")
    assert snapshot(tmp_path / "out") == {
        "a": ("d", 0o755),
        "a/b": ("d", 0o755),
        "a/b/root": ("l", "../.."),
        "a/b/via": ("l", "root/a/./b/../b"),
        "a/dangling": ("l", "missing/file"),
    }
