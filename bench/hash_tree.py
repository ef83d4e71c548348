"""Benchmark: archive hashing of a large tree against ``openssl dgst -sha256``.

What it measures: :func:`mlpkg.store.archive.scan` over a generated tree of ``--size-mib``
MiB (default 1024) in a few thousand files (64 KiB…4 MiB files plus ~3,000 small ones, in
nested directories), in this process. Three variants are timed: ``scan(path)`` (the archive
hash alone), ``scan(path, manifest=True)`` (what store registration does: the archive hash
plus one sha256 per file) and, for information, ``scan(path, manifest=True, forbid=...)``
(what registering a *build* output does: it also searches every file for the store root
and the build directory).

Peer: ``find DIR -type f -print0 | xargs -0 openssl dgst -sha256 > /dev/null`` over the
same tree, in the same run (a subprocess, timed around it): SHA-256 at the speed of the
machine's OpenSSL (SHA-NI where the CPU has it), the same library ``hashlib`` uses. (Until
issue 15 the peer was coreutils ``sha256sum``, several times slower here.)

Rows (:mod:`rows`): the archive hash, ``scan(path)``, against the peer (target ≤ 1.3 ×);
and the manifest scan that registration does, which hashes every byte twice (the archive
and the file's own sha256, in two threads), against the same peer, for information. The
``forbid`` variant is reported in the document only.

The page cache is warmed with one untimed pass of each, then each is timed ``--repeat``
times (default 3), interleaved, and the medians are compared. The tree is deleted at the end.

``--quick``: a 64 MiB tree, one timed run (a smoke pass; rows have ``passed`` None).

Run: ``python bench/hash_tree.py [--size-mib 1024] [--repeat 3] [--quick] [--json]`` with the
interpreter of the environment mlpkg is installed in (its real path, not a pyenv shim).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rows import row

from mlpkg.store.archive import scan

TARGET = 1.3
SEED = 20240601
POOL = 8 << 20  # seeded random bytes generated once; files are slices of it (<= 4 MiB)
SMALL_FILES = 3000  # fewer in a tree under 64 MiB
PEER_NAME = "openssl dgst -sha256"
PEER_CMD = "find {dir} -type f -print0 | xargs -0 openssl dgst -sha256 > /dev/null"
QUICK_MIB = 64


def make_tree(root: Path, size: int) -> tuple[int, int]:
    """Write a deterministic tree of about ``size`` bytes; return (files, bytes)."""
    rng = random.Random(SEED)
    pool = rng.randbytes(POOL)
    small = min(SMALL_FILES, size // (16 << 10))
    sizes = [rng.randrange(0, 8192) for _ in range(small)]
    budget = size - sum(sizes)
    while budget > 0:  # log-uniform between 64 KiB and 4 MiB
        n = min(budget, int(2 ** rng.uniform(16, 22)))
        sizes.append(n)
        budget -= n
    rng.shuffle(sizes)
    for i, n in enumerate(sizes):
        d = root / f"a{i % 7}" / f"b{(i // 7) % 11}" / f"c{(i // 77) % 5}"
        d.mkdir(parents=True, exist_ok=True)
        start = rng.randrange(0, POOL - n + 1)
        path = d / f"f{i:05d}.bin"
        path.write_bytes(pool[start : start + n])
        if i % 50 == 0:
            path.chmod(0o755)
    return len(sizes), sum(sizes)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(tree: Path, forbid: list[bytes], repeat: int) -> dict[str, list[float]]:
    """Time the peer and the three scans of ``tree``, interleaved, after one warm pass."""
    peer = PEER_CMD.format(dir=str(tree))

    def run_peer() -> None:
        subprocess.run(["/bin/sh", "-c", peer], check=True)

    variants: dict[str, Callable[[], object]] = {
        "openssl (peer)": run_peer,
        "scan": lambda: scan(tree),
        "scan manifest": lambda: scan(tree, manifest=True),
        "scan manifest+forbid": lambda: scan(tree, manifest=True, forbid=forbid),
    }
    for fn in variants.values():  # warm the page cache (and the code paths)
        fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeat):
        for key, fn in variants.items():
            samples[key].append(timed(fn))
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_MIB} MiB, one run")
    ap.add_argument("--json", action="store_true", help="print a JSON document")
    ap.add_argument("--dir", type=Path, default=None, help="where to make the temp tree")
    args = ap.parse_args()
    if args.quick:
        args.size_mib, args.repeat = min(args.size_mib, QUICK_MIB), 1

    tmp = Path(tempfile.mkdtemp(prefix="mlpkg-bench-hash-", dir=args.dir))
    try:
        tree = tmp / "tree"
        tree.mkdir()
        t0 = time.perf_counter()
        files, total = make_tree(tree, args.size_mib << 20)
        gen_s = time.perf_counter() - t0
        forbid = [os.fsencode(str(tmp / d)) for d in ("store", "builds")]  # as Store._check
        samples = measure(tree, forbid, args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in samples.items()}
    peer_s = med["openssl (peer)"]
    ratios = {k: v / peer_s for k, v in med.items()}
    mib = total / (1 << 20)
    size = f"{mib:.0f} MiB tree of {files:,} files"
    rows = [
        row(f"archive hash of a {size}", mlpkg=med["scan"], unit="s", runs=args.repeat,
            peer=peer_s, peer_name=PEER_NAME, ratio=ratios["scan"], target=f"≤ {TARGET} ×",
            passed=ratios["scan"] <= TARGET, quick=args.quick),
        row(f"archive hash + per-file sha256 manifest (registration) of a {size}",
            mlpkg=med["scan manifest"], unit="s", runs=args.repeat, peer=peer_s,
            peer_name=PEER_NAME, ratio=ratios["scan manifest"], quick=args.quick),
    ]  # fmt: skip
    doc: dict[str, Any] = {
        "benchmark": "hash_tree",
        "files": files,
        "bytes": total,
        "generate_s": gen_s,
        "repeat": args.repeat,
        "quick": args.quick,
        "peer": PEER_CMD.format(dir="DIR"),
        "median_s": med,
        "samples_s": samples,
        "ratio_to_peer": ratios,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"tree: {files} files, {mib:.0f} MiB (generated in {gen_s:.1f} s)")
    print(f"{'variant':<22} {'median s':>9} {'MiB/s':>8} {'x peer':>7}")
    for key, s in med.items():
        print(f"{key:<22} {s:>9.3f} {mib / s:>8.0f} {ratios[key]:>7.2f}")
    first = rows[0]
    verdict = {True: "PASS", False: "FAIL", None: "QUICK"}[first["passed"]]
    print(f"{verdict}: scan is {first['ratio']:.2f} x {PEER_NAME} (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
