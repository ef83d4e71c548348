"""Shared pieces of the binary cache benchmarks (bench/cache_*.py, issue 13).

Not a benchmark itself: generated datasets made valid as store paths, a local nginx cache
(tests/cache_servers.py's :class:`NginxServer`, WebDAV PUT on 127.0.0.1), push and
substitution through mlpkg's own API, timing helpers and the table and verdict lines.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from mlpkg.cache.keys import SecretKey, TrustedKeys  # noqa: E402
from mlpkg.cache.push import PushReport, push  # noqa: E402
from mlpkg.cache.substitute import Substituters  # noqa: E402
from mlpkg.cache.transport import open_transport  # noqa: E402
from mlpkg.resolver.realise import is_relocatable  # noqa: E402
from mlpkg.store.path import StorePath  # noqa: E402
from mlpkg.store.store import PathInfo, Store  # noqa: E402
from tests.cache_servers import NginxServer  # noqa: E402

MB = 1e6
MIB = 1 << 20
GIB = 1 << 30

# -- generated data -------------------------------------------------------------------------

# Pre-processed images: uint8 pixels normalised to float32 (ImageNet-like mean and std), so
# every file holds at most 256 distinct values: partly compressible, as real ones are.
_LUT = ((np.arange(256, dtype=np.float32) / 255 - 0.45) / 0.225).astype(np.float32)


def image_array(seed: int, height: int = 800, width: int = 800) -> np.ndarray:
    """A ``height x width x 3`` float32 "pre-processed image": 8x8 blocks of random
    colour with a little per-pixel noise (zstd -3 makes it about 0.43 of its size)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.int16)
    up = np.repeat(np.repeat(low, 8, axis=0), 8, axis=1)[:height, :width]
    noise = rng.integers(-6, 7, (height, width, 3), dtype=np.int16)
    image: np.ndarray = _LUT[np.clip(up + noise, 0, 255).astype(np.uint8)]
    return image


def small_shape(nbytes: int) -> tuple[int, int]:
    """An ``h x w`` (x 3 float32) image of about ``nbytes`` bytes."""
    side = max(8, int((nbytes / 12) ** 0.5))
    return side, side


def write_images(root: Path, count: int, shape: tuple[int, int], seeds: list[int]) -> int:
    """``count`` .npy images of ``shape`` under ``root`` (100 per sub-directory), image
    ``i`` generated from ``seeds[i]``; returns the bytes written."""
    total = 0
    for i in range(count):
        d = root / f"part-{i // 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"img-{i:05d}.npy"
        np.save(f, image_array(seeds[i], *shape))
        total += f.stat().st_size
    return total


def tree_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


# -- store paths ----------------------------------------------------------------------------


def add_tree(store: Store, name: str, make: Callable[[Path], object]) -> PathInfo:
    """A valid store path ``<hash>-name`` whose content ``make(dir)`` writes; the hash is
    derived from ``name`` (give each different content a different name)."""
    fp = f"mlpkg-bench-cache;{name}".encode()
    path = StorePath.from_fingerprint(fp, name)
    recipe_hash = "sha256:" + hashlib.sha256(fp).hexdigest()

    def maker(tmp: Path) -> None:
        tmp.mkdir()
        make(tmp)

    return store.realise(
        path,
        maker,
        kind="build",
        recipe_hash=recipe_hash,
        deriver={"bench": name},
        relocatable=True,
    )


def push_paths(store: Store, url: str, paths: list[StorePath], key: SecretKey | None) -> PushReport:
    with open_transport(url) as transport:
        return push(store, transport, paths, key)


def substitute_paths(
    store: Store, url: str, paths: list[StorePath], keys: TrustedKeys
) -> list[PathInfo]:
    """Make ``paths`` (in closure order: references first) valid in ``store`` from the
    cache at ``url``, as ``mlpkg build --substituter`` does: one client for the cache, the
    info files asked for all at once, then each path in turn (signature check, restore,
    archive hash check), relocatable as its kind's builder says."""
    warnings: list[str] = []
    subs = Substituters([url], keys, store.home, warnings.append, negative_ttl=0)
    try:
        offers = subs.query(paths)
        out = []
        for path in paths:
            offer = offers.get(path)
            if offer is None:
                raise SystemExit(f"the cache {url} did not offer {path}: {warnings}")
            e = offer.entry
            out.append(
                subs.substitute(
                    store,
                    offer,
                    kind=e.kind,
                    recipe_hash=e.recipe_hash,
                    deriver=e.deriver,
                    references=e.references,
                    relocatable=is_relocatable(e.kind),
                )
            )
        return out
    finally:
        subs.close()


def substitute_path(store: Store, url: str, path: StorePath, keys: TrustedKeys) -> PathInfo:
    """:func:`substitute_paths` of one path."""
    return substitute_paths(store, url, [path], keys)[0]


def new_key(name: str = "bench-cache") -> tuple[SecretKey, TrustedKeys]:
    key = SecretKey.generate(name)
    return key, TrustedKeys([key.public()])


# -- servers and tools ------------------------------------------------------------------------


@contextlib.contextmanager
def nginx(prefix: Path) -> Iterator[NginxServer]:
    """nginx with WebDAV PUT on 127.0.0.1, serving ``prefix/root``."""
    server = NginxServer(prefix)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def path_run_options(doc: str) -> tuple[argparse.Namespace, int, int]:
    """The options of a benchmark over one generated path: its arguments, the path size in
    bytes (--size-mib, default 1024 MiB; 64 with --quick) and the runs of each (--repeat,
    default 3; 2 with --quick)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB, 2 runs")
    parser.add_argument("--size-mib", type=int, help="path size (default 1024; quick 64)")
    parser.add_argument("--repeat", type=int, help="runs of each (default 3; quick 2)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = (args.size_mib or (64 if args.quick else 1024)) * MIB
    return args, size, args.repeat or (2 if args.quick else 3)


def need_tool(name: str, package: str | None = None) -> str:
    """The path of a command-line tool, installed with apt-get when missing (as root)."""
    found = shutil.which(name)
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", package or name], check=False)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed and apt-get could not install it")
    return found


def drop_tree(path: Path) -> None:
    """Remove a tree, read-only store content included."""
    if not path.exists():
        return
    for d, _dirs, _files in os.walk(path):
        os.chmod(d, 0o755)
    shutil.rmtree(path)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def sh(cmd: str) -> float:
    """Seconds a shell command took (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def row(name: str, values: list[float], unit: str, fmt: str = ".3f") -> str:
    """``name  median  min  max unit`` for a table."""
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{name:<44}{med:>10{fmt}}{lo:>10{fmt}}{hi:>10{fmt}}  {unit}"


def header() -> str:
    return f"{'':<44}{'median':>10}{'min':>10}{'max':>10}"


def verdict(target: str, ok: bool, measured: str) -> str:
    return f"target {target}: {'PASS' if ok else 'FAIL'} (measured {measured})"


_LOAD_AT_START = os.getloadavg()


def machine() -> str:
    """CPUs and the load averages when the benchmark started and now (other work on the
    machine skews every figure)."""
    a, b = _LOAD_AT_START, os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, load average at start {a[0]:.2f} {a[1]:.2f} {a[2]:.2f}, "
        f"at end {b[0]:.2f} {b[1]:.2f} {b[2]:.2f}"
    )
