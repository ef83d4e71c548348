"""Benchmark: decompression into the store against ``zstd -d`` on the same objects (issue 13).

What it measures: a generated path of ``--size-mib`` MiB (default 1024: 800x800x3 float32
``.npy`` pre-processed images, about 0.43 compressible by zstd -3) is pushed once (untimed)
to a ``file://`` cache on this disk. Then, ``--repeat`` times (default 3), interleaved:

* ``mlpkg substitute``: the path is substituted into an empty store, in this process, as
  ``mlpkg build --substituter`` does for one path (:class:`mlpkg.cache.substitute.
  Substituters`: query and signature check, then :meth:`~mlpkg.store.store.Store.realise`
  with :func:`mlpkg.cache.restore.restore`: objects read, decompressed and checked against
  their sha256 names by 4 threads, files written; then canonicalise, the archive scan
  (hash, manifest, store-root search), compare with the signed hash, fsync, rename,
  register). The target is judged on this.
* ``mlpkg restore only`` (for information): :func:`mlpkg.cache.restore.restore` alone into
  a temporary directory on the same disk (read, decompress, check, write; no scan, no
  fsync).

Peer, in the same run: every object file of the cache concatenated (untimed) into one file
of zstd frames, and ``zstd -d -c FILE > OUT`` with OUT a file on the same disk (no fsync:
``zstd -d … && sync OUT`` is shown too, for information, as the store fsyncs what it
writes), and ``zstd -d -c FILE > /dev/null`` (for information). Page cache warm for all.

Throughput: decompressed bytes / seconds (MB = 10^6 bytes): for mlpkg the path's file
bytes, for zstd the bytes it wrote.

Target: mlpkg substitute ≥ 0.7 × the throughput of ``zstd -d`` to a file (medians).

Run: ``python bench/cache_decompress.py [--quick] [--size-mib 1024] [--repeat 3] [--json]``
from the repository root with the interpreter mlpkg is installed in. Needs ``zstd``
(installed with apt-get when missing). ``--quick``: 64 MiB, 2 runs, no verdict. With
``--json`` the document's ``rows`` follow bench/rows.py.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from cache_common import (
    MB,
    add_tree,
    drop_tree,
    header,
    machine,
    median,
    need_tool,
    new_key,
    path_run_options,
    push_paths,
    row,
    sh,
    substitute_path,
    timed,
    tree_bytes,
    verdict,
    write_images,
)
from rows import row as table_row

from mlpkg.cache.format import Listing, object_key
from mlpkg.cache.restore import decode_listing, restore
from mlpkg.cache.transport import open_transport
from mlpkg.store.store import Store

TARGET = 0.7
SEED = 20260602
SHAPE = (800, 800)


def restore_only(cache: Path, listing_digest: str, path_name: Any, dest: Path) -> None:
    url = cache.as_uri()
    with open_transport(url) as t:
        raw = decode_listing(t.get(object_key(listing_digest)) or b"", listing_digest, url)
        listing = Listing.from_bytes(raw, url, path_name)

        def fetch(digest: str) -> bytes:
            data = t.get(object_key(digest))
            assert data is not None
            return data

        restore(listing, dest, fetch, url)


def main() -> int:
    args, size, repeat = path_run_options(__doc__ or "")
    zstd = need_tool("zstd")
    file_bytes = SHAPE[0] * SHAPE[1] * 12 + 128
    count = max(1, size // file_bytes)
    times: dict[str, list[float]] = {
        "mlpkg substitute": [],
        "mlpkg restore only": [],
        "zstd -d > file": [],
        "zstd -d > file; sync file": [],
        "zstd -d > /dev/null": [],
    }
    with tempfile.TemporaryDirectory(prefix="mlpkg-bench-decompress-", dir=None) as tmp:
        work = Path(tmp)
        cache = work / "cache"
        key, keys = new_key()
        with Store(work / "home-a") as store:
            info = add_tree(
                store,
                f"decompress-{count}",
                lambda d: write_images(d, count, SHAPE, [SEED + i for i in range(count)]),
            )
            report = push_paths(store, cache.as_uri(), [info.path], key)
            data = tree_bytes(store.real_path(info.path))
        drop_tree(work / "home-a")
        entry = json.loads((cache / "info" / f"{info.path.hash_part}.json").read_text())
        objects = sorted(p for p in (cache / "objects").rglob("*") if p.is_file())
        frames = work / "objects.zst"
        with frames.open("wb") as out:
            for p in objects:
                with p.open("rb") as f:
                    shutil.copyfileobj(f, out)
        compressed = frames.stat().st_size
        out_file = work / "zstd-out.bin"
        sh(f"{zstd} -q -d -c {frames} > /dev/null")  # warm
        zstd_out = 0
        for i in range(repeat):
            home = work / f"home-b{i}"
            with Store(home) as store:
                t, _ = timed(
                    functools.partial(substitute_path, store, cache.as_uri(), info.path, keys)
                )
            times["mlpkg substitute"].append(t)
            drop_tree(home)
            dest = work / f"restored-{i}"
            t, _ = timed(functools.partial(restore_only, cache, entry["listing"], info.path, dest))
            times["mlpkg restore only"].append(t)
            drop_tree(dest)
            times["zstd -d > file"].append(sh(f"{zstd} -q -d -c {frames} > {out_file}"))
            zstd_out = out_file.stat().st_size
            out_file.unlink()
            times["zstd -d > file; sync file"].append(
                sh(f"{zstd} -q -d -c {frames} > {out_file} && sync {out_file}")
            )
            out_file.unlink()
            times["zstd -d > /dev/null"].append(sh(f"{zstd} -q -d -c {frames} > /dev/null"))
    nbytes = {k: (data if k.startswith("mlpkg") else zstd_out) for k in times}
    rates = {k: [nbytes[k] / t / MB for t in v] for k, v in times.items()}
    med = {k: median(v) for k, v in rates.items()}
    ratio = med["mlpkg substitute"] / med["zstd -d > file"]
    doc: dict[str, Any] = {
        "benchmark": "cache_decompress",
        "files": count,
        "data_bytes": data,
        "zstd_output_bytes": zstd_out,
        "compressed_bytes": compressed,
        "objects": len(objects),
        "push": report.to_json(),
        "seconds": times,
        "mb_per_s": rates,
        "medians_mb_per_s": med,
        "ratio": ratio,
        "ratio_restore_only": med["mlpkg restore only"] / med["zstd -d > file"],
        "target": TARGET,
        "pass": ratio >= TARGET,
        "rows": [
            table_row(
                f"substitute a {data / MB:,.0f} MB path ({count} .npy images) from a file:// "
                "cache into an empty store, against `zstd -d` of its objects to a file",
                mlpkg=med["mlpkg substitute"],
                peer=med["zstd -d > file"],
                peer_name="`zstd -d -c FRAMES > FILE`",
                unit="MB/s",
                ratio=ratio,
                target=f"≥ {TARGET:g} ×",
                passed=ratio >= TARGET,
                runs=repeat,
                quick=args.quick,
            )
        ],
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"machine: {machine()}; {count} files, {data} bytes of data, {len(objects)} objects, "
        f"{compressed} bytes compressed ({compressed / data:.3f}); {repeat} runs"
    )
    print(header())
    for k, v in rates.items():
        print(row(k, v, "MB/s", ".1f"))
    for k, v in times.items():
        print(row(f"  {k}", v, "s"))
    print(f"mlpkg restore only / zstd -d > file: {doc['ratio_restore_only']:.3f} (information)")
    print(
        verdict(
            f"mlpkg substitute >= {TARGET} x zstd -d > file",
            doc["pass"],
            f"{ratio:.3f}: {med['mlpkg substitute']:.1f} MB/s vs {med['zstd -d > file']:.1f} MB/s",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
