"""Fuzzing mlpkg.store.unpack (issue 15): mutated tar, tar.gz, tar.zst and zip bytes, and
archives of generated members, hostile ones among them.

Property: :func:`unpack` either writes a safe tree (inside ``dest``: only directories,
files of mode 0644/0755 and symlinks that resolve inside it) or raises an
:class:`~mlpkg.errors.MlpkgError` and leaves nothing: no ``dest``, no debris beside it.
Profiles: tests/fuzz_support.py."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import strategies as st

from mlpkg.errors import MlpkgError
from mlpkg.store.unpack import unpack
from tests.fuzz_support import PROFILES, fuzz
from tests.store.unpack_support import (
    Entry,
    compress,
    d,
    f,
    hard,
    special,
    sym,
    tar_bytes,
    zip_bytes,
)

SAMPLE = [
    d("pkg"),
    f("pkg/README", b"hello\n" * 40),
    f("pkg/bin/tool", b"#!/bin/sh\necho hi\n", 0o755),
    sym("pkg/bin/up", "../README"),
    hard("pkg/again", "pkg/README"),
    f("pkg/deep/a/b.txt", bytes(range(256)) * 4),
]
ZIP_SAMPLE = [e for e in SAMPLE if e[0] != "h"]  # zip has no hard links


def assert_safe_tree(dest: Path) -> None:
    """Everything under ``dest`` is a directory, a file of a normal mode, or a symlink
    whose target stays inside ``dest``."""
    real = os.path.realpath(dest)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            if stat.S_ISLNK(st_.st_mode):
                target = os.readlink(path)
                assert not target.startswith("/"), path
                resolved = os.path.realpath(path)
                assert resolved == real or resolved.startswith(real + os.sep), (path, target)
            elif stat.S_ISDIR(st_.st_mode):
                assert stat.S_IMODE(st_.st_mode) == 0o755, path
            else:
                assert stat.S_ISREG(st_.st_mode), path
                assert stat.S_IMODE(st_.st_mode) in (0o644, 0o755), path


def check_unpack(data: bytes, strip: int = 0) -> None:
    """Unpack ``data``: a safe tree, or an MlpkgError with nothing left behind."""
    with tempfile.TemporaryDirectory(prefix="mlpkg-fuzz-") as tmp:
        root = Path(tmp)
        archive = root / "src.bin"
        archive.write_bytes(data)
        dest = root / "store" / "tmp-unpack"
        dest.parent.mkdir()
        try:
            unpack(archive, dest, strip_components=strip, label="fuzz.archive")
        except MlpkgError as e:
            assert e.message.strip() and "\n" not in e.message, e.message
            assert not os.path.lexists(dest), "a refused archive left its dest"
            assert os.listdir(dest.parent) == [], "a refused archive left debris"
            return
        assert_safe_tree(dest)
        assert os.listdir(dest.parent) == ["tmp-unpack"]


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]], cut: int | None) -> bytes:
    """Apply (position, deleted length, inserted bytes) edits, then maybe truncate."""
    buf = bytearray(data)
    for pos, delete, insert in edits:
        at = pos % (len(buf) + 1)
        buf[at : at + delete] = insert
    return bytes(buf[: cut % (len(buf) + 1)] if cut is not None else buf)


_EDITS = st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 16), st.binary(max_size=16)),
    min_size=1,
    max_size=6,
)
_CUT = st.none() | st.integers(0, 1 << 16)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.zst", "zip"])
def test_mutated_archive_bytes(profile: str, fmt: str) -> None:
    """Random edits of the bytes of a valid archive, as downloaded."""
    good = zip_bytes(ZIP_SAMPLE) if fmt == "zip" else compress(tar_bytes(SAMPLE), fmt)
    fuzz(profile, st.tuples(_EDITS, _CUT), lambda e: check_unpack(_mutate(good, *e)))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("fmt", ["tar.gz", "tar.zst"])
def test_mutated_tar_inside_a_valid_compression(profile: str, fmt: str) -> None:
    """Edits of the tar stream itself, then compressed: the tar reader sees the damage
    (random edits of compressed bytes mostly stop at the CRC)."""
    good = tar_bytes(SAMPLE)
    fuzz(profile, st.tuples(_EDITS, _CUT), lambda e: check_unpack(compress(_mutate(good, *e), fmt)))


@pytest.mark.parametrize("profile", PROFILES)
def test_arbitrary_bytes(profile: str) -> None:
    magic = st.sampled_from([b"", b"\x1f\x8b", b"PK\x03\x04", b"PK\x05\x06", b"\x28\xb5\x2f\xfd"])
    fuzz(profile, st.tuples(magic, st.binary(max_size=2048)), lambda t: check_unpack(t[0] + t[1]))


# -- archives of generated members ------------------------------------------------------------

_PART = st.sampled_from(["a", "b", "A", "..", ".", "", "x\ny", "e\u0301", "\u00e9", "\x7f"])
_NAME = st.lists(_PART, min_size=1, max_size=4).map("/".join) | st.sampled_from(["/a", "/"])
_TARGET = _NAME | st.sampled_from(["/etc/passwd", "../..", "a/../../b"])


@st.composite
def _entry(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from("ffddlhcbp"))
    name = draw(_NAME)
    if kind == "f":
        mode = draw(st.sampled_from([0o644, 0o755, 0o4755, 0o2755, 0o1777, 0o000]))
        return f(name, draw(st.binary(max_size=64)), mode)
    if kind == "d":
        return d(name, draw(st.sampled_from([0o755, 0o1777, 0o2700])))
    if kind == "l":
        return sym(name, draw(_TARGET))
    if kind == "h":
        return hard(name, draw(_TARGET))
    return special(kind, name)


_ENTRIES = st.lists(_entry(), min_size=1, max_size=8)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_generated_members(profile: str, fmt: str) -> None:
    """Members named from a hostile alphabet (``..``, ``/``, control characters, case and
    Unicode-normalisation twins), of every type, in any order, with any strip."""

    def check(t: tuple[list[Entry], int]) -> None:
        entries, strip = t
        if fmt == "zip":
            entries = [e for e in entries if e[0] != "h"]  # zip has no hard links
            data = zip_bytes(entries)
        else:
            data = tar_bytes(entries)
        check_unpack(data, strip)

    fuzz(profile, st.tuples(_ENTRIES, st.integers(0, 2)), check)
