"""Benchmark: a cold install of the ONNX Runtime + LoadGen + pycocotools closure.

What it measures: ``mlpkg install onnxruntime@1.17.3 loadgen@4.0 pycocotools`` into an
empty store (a fresh ``MLPKG_HOME``), with a warm download cache (``MLPKG_CACHE_DIR``
filled by an untimed run first). That is: probing the interpreter, resolving, verifying
and installing every wheel of the closure into the store.

Peers, in the same run, each from a warm local download cache too (one untimed run
first), each into a fresh virtual environment created before the clock starts:
``pip install`` of the same pins (every wheel of mlpkg's closure, ``name==version``), and
``uv pip install`` of them when uv can be installed here (for information).

Target: mlpkg ≤ 1.0 × pip (median of ``--repeat`` runs, default 3).

Run: ``python bench/install.py [--repeat 3] [--json]`` with the interpreter mlpkg is
installed in (its real path, not a pyenv shim). Needs the Python package index.
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

SPECS = ["onnxruntime@1.17.3", "loadgen@4.0", "pycocotools"]


def run(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def pins(work: Path) -> list[str]:
    """name==version for every wheel in mlpkg's closure of SPECS."""
    env = {**os.environ, "MLPKG_HOME": str(work / "plan-home")}
    out = subprocess.run([sys.executable, "-m", "mlpkg", "build", "--dry-run", "--json", *SPECS],
                         env=env, check=True, capture_output=True, text=True).stdout  # fmt: skip
    nodes = json.loads(out)["plan"]["nodes"]
    return sorted(f"{n['name']}=={n['version']}" for n in nodes if n["kind"] == "wheel")


def time_mlpkg(work: Path, cache: Path, i: int) -> float:
    env = {**os.environ, "MLPKG_HOME": str(work / f"home-{i}"), "MLPKG_CACHE_DIR": str(cache)}
    return run([sys.executable, "-m", "mlpkg", "install", "-q", *SPECS], env)


def time_pip(work: Path, reqs: list[str], i: int) -> float:
    venv = work / f"pip-venv-{i}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return run([str(venv / "bin" / "pip"), "install", "-q", *reqs], env)


def uv_binary(work: Path) -> str | None:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlpkg-bench-install-"))
    try:
        reqs = pins(work)
        cache = work / "mlpkg-downloads"
        uv = uv_binary(work)
        time_mlpkg(work, cache, -1)  # warm the caches (untimed)
        time_pip(work, reqs, -1)
        if uv:
            time_uv(uv, work, reqs, work / "uv-cache", -1)
        times: dict[str, list[float]] = {
            "mlpkg install": [],
            "pip install": [],
            "uv pip install": [],
        }
        for i in range(args.repeat):
            times["mlpkg install"].append(time_mlpkg(work, cache, i))
            times["pip install"].append(time_pip(work, reqs, i))
            if uv:
                times["uv pip install"].append(time_uv(uv, work, reqs, work / "uv-cache", i))
        medians = {k: statistics.median(v) for k, v in times.items() if v}
        ratio = medians["mlpkg install"] / medians["pip install"]
        doc: dict[str, Any] = {"benchmark": "install", "pins": reqs, "times": times,
                               "medians": medians, "ratio_vs_pip": ratio,
                               "target": 1.0, "pass": ratio <= 1.0}  # fmt: skip
        if "uv pip install" in medians:
            doc["ratio_vs_uv"] = medians["mlpkg install"] / medians["uv pip install"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"closure: {len(reqs)} wheels: {' '.join(reqs)}")
    print(f"{'command':<16}{'median s':>10}{'min s':>9}{'max s':>9}")
    for name, values in times.items():
        if values:
            print(
                f"{name:<16}{statistics.median(values):>10.3f}{min(values):>9.3f}{max(values):>9.3f}"
            )
    if "ratio_vs_uv" in doc:
        print(f"mlpkg / uv: {doc['ratio_vs_uv']:.2f} (for information)")
    verdict = "PASS" if doc["pass"] else "FAIL"
    print(f"{verdict}: cold mlpkg install is {ratio:.2f} x pip install (target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
