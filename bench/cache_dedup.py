"""Benchmark: what a second version of a dataset uploads to a binary cache (issue 13).

What it measures: a generated dataset of ``--size-mib`` MiB (default 1024) is made a store
path (version 1) and pushed (:func:`mlpkg.cache.push.push`, in this process) to an empty
``file://`` cache; then ``--changed`` (default 2 %) of its files, chosen at random, are
generated again with other content (version 2, another store path) and pushed to the same
cache. Figure: the compressed bytes the second push uploads (objects and listing) over
those of the first.

Variants, each reported (each dataset is about ``--size-mib``):

* ``images``: pre-processed images, 800x800x3 float32 ``.npy`` (7.7 MB each, ~140 files);
* ``small``: 100 KB float32 ``.npy`` files (~10,700): above the format's ``small_file``
  threshold (16 KiB), so each is cut on its own;
* ``packed``: 32 KB ``.npy`` files (~33,000): also above it since the threshold went from
  64 KiB to 16 KiB (at 64 KiB they were concatenated into the pack stream, and a 2%
  change uploaded 60% again; Chunking in mlpkg/cache/format.py).

With ``--quick`` the sizes are 64 MiB, with images of 200x200x3 (about the same file
counts for the first variant), and only ``images`` runs unless ``--variants`` is given.

Peer, in the same run: a Nix-style cache, which stores each path as one compressed archive,
uploads the whole archive of version 2 again: its figure is the zstd (level 3, as mlpkg's
objects) compressed size of the archive (:func:`mlpkg.store.archive.write`) of version 2,
shown beside that of version 1 and beside mlpkg's first push.

Target: second push ≤ 5 % of the first push's bytes (judged on ``images``; every variant
is printed with its own verdict line).

Run: ``python bench/cache_dedup.py [--quick] [--size-mib 1024] [--variants images,small,
packed] [--json]`` from the repository root with the interpreter mlpkg is installed in.
With ``--json`` the document's ``rows`` follow bench/rows.py: one per variant (each with
the target, as each has its verdict line), and the Nix-style upload of ``images`` beside
mlpkg's second push (for information); ``--quick`` rows have no verdict.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, cast

import zstandard
from cache_common import (
    MIB,
    add_tree,
    drop_tree,
    machine,
    new_key,
    push_paths,
    small_shape,
    timed,
    verdict,
    write_images,
)
from rows import row

from mlpkg.store import archive
from mlpkg.store.store import Store

TARGET = 0.05
SEED = 20260601
VARIANTS = {
    # name: the (height, width) of its float32 x 3 images
    "images": (800, 800),
    "small": small_shape(100_000),
    "packed": small_shape(32_000),
}


class _Count:
    """A sink that counts what is written to it."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def nix_compressed(path: Path) -> int:
    """Bytes of the zstd -3 compressed archive of ``path`` (a Nix-style cache's upload)."""
    count = _Count()
    cctx = zstandard.ZstdCompressor(level=3, threads=-1)
    with cctx.stream_writer(cast(IO[bytes], count), closefd=False) as w:
        archive.write(path, w)
    return count.n


def run_variant(
    work: Path, name: str, shape: tuple[int, int], size: int, changed: float
) -> dict[str, Any]:
    file_bytes = shape[0] * shape[1] * 3 * 4 + 128
    count = max(1, size // file_bytes)
    rng = random.Random(f"{SEED}-{name}")
    seeds = [SEED + i for i in range(count)]
    picked = sorted(rng.sample(range(count), max(1, round(changed * count))))
    seeds2 = list(seeds)
    for i in picked:
        seeds2[i] = SEED + 10_000_000 + i
    home, cache = work / "home", work / "cache"
    store = Store(home)
    key, _keys = new_key()
    try:
        v1 = add_tree(
            store, f"dedup-{name}-{count}-v1", lambda d: write_images(d, count, shape, seeds)
        )
        v2 = add_tree(
            store, f"dedup-{name}-{count}-v2", lambda d: write_images(d, count, shape, seeds2)
        )
        url = cache.as_uri()
        t1, first = timed(lambda: push_paths(store, url, [v1.path], key))
        t2, second = timed(lambda: push_paths(store, url, [v2.path], key))
        nix1 = nix_compressed(store.real_path(v1.path))
        nix2 = nix_compressed(store.real_path(v2.path))
    finally:
        store.close()
        drop_tree(home)
        drop_tree(cache)
    ratio = second.bytes_uploaded / first.bytes_uploaded
    return {
        "variant": name,
        "files": count,
        "file_bytes": file_bytes,
        "changed_files": len(picked),
        "archive_bytes": v1.size,
        "first_push": first.to_json() | {"seconds": t1},
        "second_push": second.to_json() | {"seconds": t2},
        "first_bytes": first.bytes_uploaded,
        "second_bytes": second.bytes_uploaded,
        "ratio": ratio,
        "nix_v1_bytes": nix1,
        "nix_v2_bytes": nix2,
        "nix_ratio": nix2 / nix1,
        "nix_v2_vs_first_push": nix2 / first.bytes_uploaded,
        "pass": ratio <= TARGET,
    }


def dedup_rows(
    results: list[dict[str, Any]], size: int, changed: float, quick: bool
) -> list[dict[str, Any]]:
    """The table's rows (bench/rows.py): the second push against the first, per variant,
    then the Nix-style whole archive against mlpkg's second push (images, information)."""
    out = []
    for r in results:
        out.append(
            row(
                f"second push after {changed:.0%} of the files changed ({r['variant']}: "
                f"{size / MIB:,.0f} MiB, {r['files']:,} files), against the first push",
                mlpkg=r["second_bytes"] / 1e6,
                peer=r["first_bytes"] / 1e6,
                peer_name="mlpkg's first push",
                unit="MB",
                ratio=r["ratio"],
                target=f"≤ {TARGET:g} ×",
                passed=r["pass"],
                runs=1,
                quick=quick,
            )
        )
    for r in results[:1]:
        out.append(
            row(
                f"the same second push ({r['variant']}) against a Nix-style cache's upload of "
                "the whole new archive",
                mlpkg=r["second_bytes"] / 1e6,
                peer=r["nix_v2_bytes"] / 1e6,
                peer_name="zstd -3 of the whole archive",
                unit="MB",
                ratio=r["second_bytes"] / r["nix_v2_bytes"],
                runs=1,
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB datasets, small images")
    parser.add_argument("--size-mib", type=int, help="dataset size (default 1024; quick 64)")
    parser.add_argument("--changed", type=float, default=0.02, help="fraction of files changed")
    parser.add_argument("--variants", help=f"default {','.join(VARIANTS)} (quick: images)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = (args.size_mib or (64 if args.quick else 1024)) * MIB
    results: list[dict[str, Any]] = []
    variants = args.variants or ("images" if args.quick else ",".join(VARIANTS))
    for name in variants.split(","):
        shape = VARIANTS[name]
        if args.quick and name == "images":
            shape = (200, 200)
        with tempfile.TemporaryDirectory(prefix=f"mlpkg-bench-dedup-{name}-") as tmp:
            results.append(run_variant(Path(tmp), name, shape, size, args.changed))
    if args.json:
        doc = {"benchmark": "cache_dedup", "target": TARGET, "results": results}
        doc["rows"] = dedup_rows(results, size, args.changed, args.quick)
        print(json.dumps(doc))
        return 0
    print(
        f"machine: {machine()}; dataset {size / MIB:.0f} MiB, {args.changed:.0%} of files changed"
    )
    print(
        f"{'variant':<8}{'files':>7}{'file B':>9}{'changed':>8}{'push 1 B':>14}{'push 2 B':>13}"
        f"{'push2/push1':>12}{'nix v1 B':>14}{'nix v2 B':>14}{'nix2/nix1':>10}{'nix2/push1':>11}"
    )
    for r in results:
        print(
            f"{r['variant']:<8}{r['files']:>7}{r['file_bytes']:>9}{r['changed_files']:>8}"
            f"{r['first_bytes']:>14}{r['second_bytes']:>13}{r['ratio']:>12.2%}"
            f"{r['nix_v1_bytes']:>14}{r['nix_v2_bytes']:>14}{r['nix_ratio']:>10.2%}"
            f"{r['nix_v2_vs_first_push']:>11.2%}"
        )
    for r in results:
        f, s = r["first_push"], r["second_push"]
        print(
            f"{r['variant']}: push 1 {f['objects_uploaded']} objects in {f['seconds']:.2f} s; "
            f"push 2 {s['objects_uploaded']} objects uploaded, {s['objects_present']} present, "
            f"in {s['seconds']:.2f} s"
        )
    for r in results:
        print(
            verdict(
                f"second push <= {TARGET:.0%} of the first ({r['variant']})",
                r["pass"],
                f"{r['ratio']:.2%}; Nix-style whole archive {r['nix_ratio']:.2%}",
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
