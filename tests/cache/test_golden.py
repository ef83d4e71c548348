"""Cache format version 1 does not drift: a fixed tree gives these exact listing, info
file and cache-info bytes (tests/golden/cache-v1/). A change here is a format change
(docs/caches.md): it needs a new version, since it would change objects and lose
deduplication against what caches hold. Regenerate only then, with MLPKG_REGOLDEN=1."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from mlpkg.cache.chunks import cut
from mlpkg.cache.format import CacheInfo, PathEntry
from mlpkg.cache.keys import SecretKey
from mlpkg.store import archive
from mlpkg.store.path import StorePath

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "cache-v1"


def _tree(root: Path) -> None:
    rng = random.Random(13)
    (root / "lib" / "pkg").mkdir(parents=True)
    (root / "bin").mkdir()
    for i in range(12):  # small files: the pack stream
        (root / "lib" / "pkg" / f"m{i:02}.py").write_bytes(rng.randbytes(rng.randrange(1, 9000)))
    (root / "lib" / "pkg" / "mid.bin").write_bytes(rng.randbytes(40_000))  # alone (>= 16 KiB)
    (root / "lib" / "weights.bin").write_bytes(rng.randbytes(3_000_000))  # several chunks
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o755)
    os.symlink("../lib/weights.bin", root / "bin" / "weights")


def _documents(tmp: Path) -> dict[str, bytes]:
    root = tmp / "tree"
    root.mkdir()
    _tree(root)
    listing, _ = cut(root)
    raw = listing.to_bytes()
    scanned = archive.scan(root)
    entry = PathEntry(
        path=StorePath.parse("0123456789abcdfghijklmnpqrsvwxyz-golden-1.0"),
        archive_hash=scanned.hash,
        archive_size=scanned.size,
        references=[StorePath.parse("zyxwvsrqpnmlkjihgfdcba9876543210-dep-2.0")],
        recipe_hash="sha256:" + "cd" * 32,
        kind="build",
        deriver={"name": "golden", "version": "1.0"},
        listing=hashlib.sha256(raw).hexdigest(),
        listing_size=123,
        data_size=sum(n for _, n in listing.objects()),
    )
    entry.signatures = [SecretKey("golden-1", bytes(range(32))).sign(entry.fingerprint())]
    return {
        "listing.json": raw,
        "info.json": entry.to_bytes(),
        "cache-info.json": CacheInfo().to_bytes(),
    }


def test_format_v1_bytes_are_the_golden_ones(tmp_path: Path) -> None:
    docs = _documents(tmp_path)
    if os.environ.get("MLPKG_REGOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, data in docs.items():
            (GOLDEN / name).write_bytes(data)
        pytest.skip("golden files written")
    for name, data in docs.items():
        assert data == (GOLDEN / name).read_bytes(), f"{name} drifted from format version 1"


def test_golden_documents_still_parse() -> None:
    entry = PathEntry.from_bytes((GOLDEN / "info.json").read_bytes(), "golden")
    assert str(entry.path).endswith("-golden-1.0") and entry.signatures
    assert CacheInfo.from_bytes((GOLDEN / "cache-info.json").read_bytes(), "golden").priority == 50
