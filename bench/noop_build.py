"""Benchmark: a no-op ``mlpkg build`` against a no-op ``pip install``.

What it measures: the wall time of ``<venv>/bin/mlpkg build --recipes DIR root`` when the
whole closure (50 ``build`` recipes forming a DAG, generated in a temp dir) is already
valid in a temp ``MLPKG_HOME``: a full process start, the plan cache lookup and the
validity check. mlpkg is installed non-editable (``pip install`` of a copy of the source
tree, so the repository is left untouched) into a fresh venv.

Peer: ``<venv>/bin/pip install six`` with six already installed (a no-op), same venv,
same run, interleaved with the mlpkg runs. (The machine's pip configuration applies to
the peer unchanged.)

Target: median mlpkg time <= 0.25 x median pip time. The script also checks that every
timed mlpkg run was a no-op: the same store path printed each time, and nothing new under
``MLPKG_HOME/logs`` or ``MLPKG_HOME/store``.

Run: ``python bench/noop_build.py [--quick] [--runs 15] [--venv DIR] [--json]``. Creating
the venv takes ~30 s; ``--venv DIR`` creates it at DIR on first use and reuses it (as
installed) afterwards. ``--quick`` (a smoke pass, no verdict): 3 runs of each, and,
without ``--venv``, the virtual environment running the script as it is installed (its
``mlpkg``; the peer is ``pip install six`` where six is installed there, else ``pip
install pip``: a no-op either way) instead of a new one. The document's ``rows`` follow
bench/rows.py.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rows import row

TARGET = 0.25
RECIPES = 50
REPO = Path(__file__).resolve().parent.parent
_SKIP_ANYWHERE = shutil.ignore_patterns(
    ".git", "dist", "*.egg-info", "__pycache__", ".*cache", ".venv", "bench"
)


def SKIP(directory: str, names: list[str]) -> set[str]:
    """What the copy of the tree leaves out; ``build`` only at the top (setuptools' build
    directory): ``mlpkg/build`` is the builders' package."""
    skipped = set(_SKIP_ANYWHERE(directory, names))
    if Path(directory) == REPO and "build" in names:
        skipped.add("build")
    return skipped


RECIPE = """name = "{name}"
version = "1.0"
kind = "build"

[inputs]
{inputs}
[build]
script = 'mkdir -p "$out"; echo {name} > "$out/id"'
"""


def make_venv(venv: Path, work: Path) -> None:
    """Create ``venv`` with mlpkg (non-editable, from a copy of the tree) and six."""
    src = work / "src"
    shutil.copytree(REPO, src, ignore=SKIP)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src), "six"]
    for argv in ([sys.executable, "-m", "venv", str(venv)], pip):
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}")


def make_recipes(root: Path) -> None:
    """50 recipes: node-01..node-49, each needing 1-3 earlier ones, and root over the rest."""
    rng = random.Random(50)
    names = [f"node-{i:02d}" for i in range(RECIPES - 1)]
    needed: set[str] = set()
    deps: dict[str, list[str]] = {names[0]: []}
    for i, name in enumerate(names[1:], 1):
        deps[name] = rng.sample(names[:i], min(i, rng.randint(1, 3)))
        needed.update(deps[name])
    deps["root"] = [n for n in names if n not in needed]
    for name, inputs in deps.items():
        lines = "".join(f'd{j} = "{dep}"\n' for j, dep in enumerate(inputs))
        (root / name).mkdir(parents=True)
        (root / name / "1.0.toml").write_text(RECIPE.format(name=name, inputs=lines))


def listing(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, help="runs of each (default 15; --quick 3)")
    ap.add_argument("--quick", action="store_true", help="3 runs of each, no verdict")
    ap.add_argument("--venv", type=Path, default=None, help="venv to create or reuse")
    ap.add_argument("--json", action="store_true", help="print a JSON document")
    args = ap.parse_args()
    runs = args.runs or (3 if args.quick else 15)

    work = Path(tempfile.mkdtemp(prefix="mlpkg-bench-noop-"))
    try:
        venv = args.venv.absolute() if args.venv else work / "venv"
        peer_pkg = "six"
        own = Path(sys.prefix)
        if args.quick and not args.venv and (own / "bin" / "mlpkg").exists():
            venv = own  # the running environment, as installed: no 30 s of set-up
            try:
                importlib.metadata.version("six")
            except importlib.metadata.PackageNotFoundError:
                peer_pkg = "pip"  # installing six would change the environment
        t0 = time.perf_counter()
        reused = (venv / "bin" / "mlpkg").exists()
        if not reused:
            make_venv(venv, work)
        setup_s = time.perf_counter() - t0
        recipes, home = work / "recipes", work / "home"
        make_recipes(recipes)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLPKG_")}
        env["MLPKG_HOME"] = str(home)
        mlpkg = [str(venv / "bin" / "mlpkg"), "build", "--recipes", str(recipes), "root"]
        pip = [str(venv / "bin" / "pip"), "install", peer_pkg]
        first_s, first_out = timed(mlpkg, env)  # builds all 50 (untimed for the target)
        built = len([p for p in (home / "store").iterdir() if not p.name.startswith(".")])
        _, pip_out = timed(pip, env)
        if "already satisfied" not in pip_out:
            raise SystemExit(f"pip install {peer_pkg} was not a no-op:\n{pip_out}")
        logs, store = listing(home / "logs"), listing(home / "store")
        times: dict[str, list[float]] = {"mlpkg build": [], "pip install": []}
        outputs = set()
        for _ in range(runs):
            elapsed, out = timed(mlpkg, env)
            times["mlpkg build"].append(elapsed)
            outputs.add(out)
            times["pip install"].append(timed(pip, env)[0])
        noop = (
            outputs == {first_out}
            and listing(home / "logs") == logs
            and listing(home / "store") == store
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["mlpkg build"] / med["pip install"]
    ok = noop and ratio <= TARGET
    doc: dict[str, Any] = {
        "benchmark": "noop_build",
        "recipes": RECIPES,
        "paths_in_store": built,
        "runs": runs,
        "venv_reused": reused,
        "setup_s": setup_s,
        "first_build_s": first_s,
        "peer": f"pip install {peer_pkg} (already installed)",
        "median_s": med,
        "samples_s": times,
        "noop_verified": noop,
        "target": f"mlpkg build (no-op) <= {TARGET} x peer",
        "ratio": ratio,
        "pass": ok,
        "rows": [
            row(
                f"warm no-op `mlpkg build` of a valid {built}-path closure"
                + ("" if noop else " (NOT a no-op: a check failed)"),
                mlpkg=med["mlpkg build"],
                peer=med["pip install"],
                peer_name=f"no-op `pip install {peer_pkg}`, same venv",
                unit="s",
                ratio=ratio,
                target=f"≤ {TARGET} ×",
                passed=ok,
                runs=runs,
                quick=args.quick,
            )
        ],
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0 if noop else 1
    how = "reused" if reused else "created"
    print(f"venv {how} in {setup_s:.1f} s; first build of {built} paths: {first_s:.2f} s")
    print(f"{'command':<14} {'median s':>9} {'min s':>7} {'max s':>7}")
    for key, samples in times.items():
        print(f"{key:<14} {med[key]:>9.3f} {min(samples):>7.3f} {max(samples):>7.3f}")
    print(f"no-op verified (same path, no new logs or store entries): {noop}")
    verdict = "PASS" if ok else "FAIL"
    print(f"{verdict}: no-op mlpkg build is {ratio:.3f} x pip install (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
