"""Benchmark: push and substitute of a large path to and from nginx, beside curl (issue 13).

What it measures: a generated path of ``--size-mib`` MiB (default 1024: 800x800x3 float32
``.npy`` pre-processed images, about 0.43 compressible by zstd -3) in a store. nginx
(Debian's, WebDAV PUT, 127.0.0.1: tests/cache_servers.py) serves an empty directory.
``--repeat`` times (default 3), interleaved, each run into a new cache prefix:

* ``mlpkg push``: :func:`mlpkg.cache.push.push` of the path to ``http://127.0.0.1:P/runN``
  (in this process, as ``mlpkg push --to`` does: cut with FastCDC, hash, compress with
  zstd -3, PUT 8 at once, listing and signed info file);
* ``mlpkg substitute``: the path substituted from that cache into an empty store (in this
  process, as ``mlpkg build --substituter`` does for one path: signature check, objects
  fetched by 4 threads, decompressed, checked, written, archive hash checked, fsynced).

Peers, in the same run, on the same nginx: ``curl -T FILE`` (HTTP PUT) of one file holding
the path's file bytes concatenated (the same number of bytes), and ``curl -o OUT`` (GET)
of it into a file on the same disk.

Throughput: the path's file bytes / seconds (MB = 10^6 bytes), for all four; mlpkg sends
compressed objects, so its bytes on the wire are fewer (shown).

Target: none fixed; the ratios mlpkg / curl are printed (issue 13 asks for the figures).

Run: ``python bench/cache_throughput.py [--quick] [--size-mib 1024] [--repeat 3] [--json]``
from the repository root with the interpreter mlpkg is installed in. Needs nginx and curl
(curl installed with apt-get when missing). ``--quick``: 64 MiB, 2 runs. With ``--json``
the document's ``rows`` follow bench/rows.py (for information: no target).
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import tempfile
from pathlib import Path

from cache_common import (
    MB,
    add_tree,
    drop_tree,
    header,
    machine,
    median,
    need_tool,
    new_key,
    nginx,
    path_run_options,
    push_paths,
    row,
    sh,
    substitute_path,
    timed,
    tree_bytes,
    write_images,
)
from rows import row as table_row

from mlpkg.store.store import Store

SEED = 20260603
SHAPE = (800, 800)


def main() -> int:
    args, size, repeat = path_run_options(__doc__ or "")
    curl = need_tool("curl")
    file_bytes = SHAPE[0] * SHAPE[1] * 12 + 128
    count = max(1, size // file_bytes)
    times: dict[str, list[float]] = {
        "mlpkg push": [],
        "curl -T (PUT)": [],
        "mlpkg substitute": [],
        "curl -o (GET)": [],
    }
    wire: list[int] = []
    with tempfile.TemporaryDirectory(prefix="mlpkg-bench-throughput-") as tmp:
        work = Path(tmp)
        key, keys = new_key()
        store = Store(work / "home-a")
        info = add_tree(
            store,
            f"throughput-{count}",
            lambda d: write_images(d, count, SHAPE, [SEED + i for i in range(count)]),
        )
        real = store.real_path(info.path)
        data = tree_bytes(real)
        blob = work / "blob.bin"
        with blob.open("wb") as out:
            for f in sorted(real.rglob("*.npy")):
                with f.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        sh(f"cat {blob} {' '.join(str(f) for f in sorted(real.rglob('*.npy')))} > /dev/null")
        with nginx(work / "nginx") as server:
            for i in range(repeat):
                url = f"{server.url}/run{i}"
                t, report = timed(functools.partial(push_paths, store, url, [info.path], key))
                times["mlpkg push"].append(t)
                wire.append(report.bytes_uploaded)
                put = f"{server.url}/curl/run{i}.bin"
                times["curl -T (PUT)"].append(sh(f"{curl} -sS -f -T {blob} {put}"))
                home = work / f"home-b{i}"
                with Store(home) as b:
                    t, _ = timed(functools.partial(substitute_path, b, url, info.path, keys))
                times["mlpkg substitute"].append(t)
                drop_tree(home)
                got = work / "curl-out.bin"
                times["curl -o (GET)"].append(sh(f"{curl} -sS -f -o {got} {put}"))
                if got.stat().st_size != data:
                    raise SystemExit(f"curl got {got.stat().st_size} bytes, not {data}")
                got.unlink()
                drop_tree(server.root / f"run{i}")
                drop_tree(server.root / "curl")
        store.close()
    rates = {k: [data / t / MB for t in v] for k, v in times.items()}
    med = {k: median(v) for k, v in rates.items()}
    push_ratio = med["mlpkg push"] / med["curl -T (PUT)"]
    sub_ratio = med["mlpkg substitute"] / med["curl -o (GET)"]
    doc = {
        "benchmark": "cache_throughput",
        "files": count,
        "data_bytes": data,
        "wire_bytes_push": wire,
        "seconds": times,
        "mb_per_s": rates,
        "medians_mb_per_s": med,
        "push_vs_curl": push_ratio,
        "substitute_vs_curl": sub_ratio,
        "rows": [
            table_row(
                f"push a {data / MB:,.0f} MB path ({count} .npy images) to nginx, against "
                "`curl -T` of its bytes",
                mlpkg=med["mlpkg push"],
                peer=med["curl -T (PUT)"],
                peer_name="`curl -T FILE` (PUT)",
                unit="MB/s",
                ratio=push_ratio,
                runs=repeat,
            ),
            table_row(
                "substitute it from nginx into an empty store, against `curl -o` of its bytes",
                mlpkg=med["mlpkg substitute"],
                peer=med["curl -o (GET)"],
                peer_name="`curl -o FILE` (GET)",
                unit="MB/s",
                ratio=sub_ratio,
                runs=repeat,
            ),
        ],
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    sent = median([float(w) for w in wire])
    print(
        f"machine: {machine()}; {count} files, {data} bytes of data; mlpkg push sent "
        f"{sent:.0f} bytes ({sent / data:.3f}); {repeat} runs"
    )
    print(header())
    for k, v in rates.items():
        print(row(k, v, "MB/s", ".1f"))
    for k, v in times.items():
        print(row(f"  {k}", v, "s"))
    print(
        f"target push MB/s beside curl -T (issue 13 sets no threshold): n/a (measured "
        f"{med['mlpkg push']:.1f} MB/s vs {med['curl -T (PUT)']:.1f} MB/s: {push_ratio:.3f})"
    )
    print(
        f"target substitute MB/s beside curl -o (issue 13 sets no threshold): n/a (measured "
        f"{med['mlpkg substitute']:.1f} MB/s vs {med['curl -o (GET)']:.1f} MB/s: {sub_ratio:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
