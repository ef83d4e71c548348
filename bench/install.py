"""Benchmark: a cold install of the ONNX Runtime + LoadGen + pycocotools closure.

What it measures: ``mlpkg install onnxruntime@1.17.3 loadgen@4.0 pycocotools`` into an
empty store (a fresh ``MLPKG_HOME``), with a warm download cache (``MLPKG_CACHE_DIR``
filled by an untimed run first). That is: probing the interpreter, resolving, verifying
and installing every wheel of the closure into the store (archive hash, manifest,
read-only, durable on disk, registered).

Peer, in the same run: ``uv pip install`` of the same pins (every wheel of mlpkg's
closure, ``name==version``) into a fresh virtual environment created before the clock
starts, from uv's warm cache (one untimed run first). uv is taken from ``PATH``, else
installed with pip into a virtual environment of the bench's temporary directory. For
information, ``pip install`` of the same pins the same way (warm pip cache).

Rows (:mod:`rows`): mlpkg against uv (target ≤ 1.0 ×), and against pip (information).
``--quick``: the closure of ``pycocotools`` alone (numpy and pycocotools), one run.

Run: ``python bench/install.py [--repeat 3] [--quick] [--json]`` with the interpreter
mlpkg is installed in (its real path, not a pyenv shim). Needs the Python package index.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rows import row

Times = dict[str, list[float]]
SPECS = ["onnxruntime@1.17.3", "loadgen@4.0", "pycocotools"]
QUICK_SPECS = ["pycocotools"]
TARGET = 1.0


def run(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def pins(work: Path, specs: list[str]) -> list[str]:
    """name==version for every wheel in mlpkg's closure of ``specs``."""
    env = {**os.environ, "MLPKG_HOME": str(work / "plan-home")}
    out = subprocess.run([sys.executable, "-m", "mlpkg", "build", "--dry-run", "--json", *specs],
                         env=env, check=True, capture_output=True, text=True).stdout  # fmt: skip
    nodes = json.loads(out)["plan"]["nodes"]
    return sorted(f"{n['name']}=={n['version']}" for n in nodes if n["kind"] == "wheel")


def time_mlpkg(work: Path, specs: list[str], cache: Path, i: int) -> float:
    env = {**os.environ, "MLPKG_HOME": str(work / f"home-{i}"), "MLPKG_CACHE_DIR": str(cache)}
    return run([sys.executable, "-m", "mlpkg", "install", "-q", *specs], env)


def time_pip(work: Path, reqs: list[str], i: int) -> float:
    venv = work / f"pip-venv-{i}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return run([str(venv / "bin" / "pip"), "install", "-q", *reqs], env)


def uv_binary(work: Path) -> str | None:
    """uv from ``PATH``, else installed with pip into a venv under ``work``; None if
    neither works."""
    found = shutil.which("uv")
    if found:
        return found
    tools = work / "uv-tools"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tools)], check=True)
        subprocess.run([str(tools / "bin" / "pip"), "install", "-q", "uv"], check=True,
                       capture_output=True)  # fmt: skip
    except subprocess.CalledProcessError:
        return None
    return str(tools / "bin" / "uv")


def time_uv(uv: str, work: Path, reqs: list[str], cache: Path, i: int) -> float:
    venv = work / f"uv-venv-{i}"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    env = {**os.environ, "UV_CACHE_DIR": str(cache)}
    return run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *reqs], env)


def measure(work: Path, specs: list[str], reqs: list[str], uv: str, repeat: int) -> Times:
    """Time mlpkg, uv and pip, interleaved, after one untimed run of each (warm caches)."""
    cache = work / "mlpkg-downloads"
    uv_cache = work / "uv-cache"
    time_mlpkg(work, specs, cache, -1)
    time_uv(uv, work, reqs, uv_cache, -1)
    time_pip(work, reqs, -1)
    times: Times = {"mlpkg install": [], "uv pip install": [], "pip install": []}
    for i in range(repeat):
        times["mlpkg install"].append(time_mlpkg(work, specs, cache, i))
        times["uv pip install"].append(time_uv(uv, work, reqs, uv_cache, i))
        times["pip install"].append(time_pip(work, reqs, i))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="pycocotools alone, one run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    specs = QUICK_SPECS if args.quick else SPECS
    repeat = 1 if args.quick else args.repeat
    work = Path(tempfile.mkdtemp(prefix="mlpkg-bench-install-"))
    try:
        reqs = pins(work, specs)
        uv = uv_binary(work)
        if uv is None:
            print("uv could not be installed (pip install uv failed).", file=sys.stderr)
            return 1
        times = measure(work, specs, reqs, uv, repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    what = f"cold mlpkg install {' '.join(specs)} ({len(reqs)} wheels, warm download cache)"
    vs_uv = med["mlpkg install"] / med["uv pip install"]
    vs_pip = med["mlpkg install"] / med["pip install"]
    rows = [
        row(what, mlpkg=med["mlpkg install"], unit="s", runs=repeat, peer=med["uv pip install"],
            peer_name="uv pip install", ratio=vs_uv, target=f"≤ {TARGET} ×",
            passed=vs_uv <= TARGET, quick=args.quick),
        row(what, mlpkg=med["mlpkg install"], unit="s", runs=repeat, peer=med["pip install"],
            peer_name="pip install", ratio=vs_pip, quick=args.quick),
    ]  # fmt: skip
    doc: dict[str, Any] = {"benchmark": "install", "specs": specs, "pins": reqs, "times": times,
                           "medians": med, "ratio_vs_uv": vs_uv, "ratio_vs_pip": vs_pip,
                           "quick": args.quick, "rows": rows}  # fmt: skip
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"closure: {len(reqs)} wheels: {' '.join(reqs)}")
    print(f"{'command':<16}{'median s':>10}{'min s':>9}{'max s':>9}")
    for name, values in times.items():
        print(f"{name:<16}{med[name]:>10.3f}{min(values):>9.3f}{max(values):>9.3f}")
    print(f"mlpkg / pip: {vs_pip:.2f} (for information)")
    verdict = {True: "PASS", False: "FAIL", None: "QUICK"}[rows[0]["passed"]]
    print(f"{verdict}: cold mlpkg install is {vs_uv:.2f} x uv pip install (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
