"""Benchmark: end-to-end resolution of a large generated recipe collection.

What it measures: in a fresh process per run (imports are done, and timed apart, before
the clock starts), ``RecipeIndex([dir])`` + ``IndexProvider(index)`` +
:func:`mlpkg.resolver.plan.derive` (resolution, then hashing every node into its store
path: exactly what ``mlpkg build`` does before it asks the store anything). That is:
listing directories, reading and validating every recipe file the resolver loads,
choosing versions, and hashing.

The collection is generated on disk (``<dir>/<name>/<version>.toml``, kind ``build``): a
DAG whose inputs point only to lower-numbered packages, about 30% of packages with 2 or 3
versions (whose newest version has one more input), inputs with version constraints
(``p00017@1``, ``p00017@>=1.0``, ``p00017@1.0:1.1``, ...) so that the resolver has choices,
and one ``root`` recipe that reaches every package. About 5 input edges per recipe.

Peer: the same benchmark on a collection 10 × as large, in the same run. Also printed, for
information: import time, and CPU time (less disturbed by other load than wall time).

Targets: 1,000 recipes (~5,000 edges) resolve in < 1 s (median), and 10,000 recipes
(~50,000 edges) take at most 12 × the 1,000-recipe time (near-linear).

Run: ``python bench/resolve.py [--quick] [--repeat 3] [--json]`` with the interpreter of
the environment mlpkg is installed in (its real path, not a pyenv shim). ``--quick``: 300
and 3,000 recipes, one run each and no warm-up run, no verdict; the document's ``rows``
follow bench/rows.py.
"""

from __future__ import annotations

import argparse
import json
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

TARGET_SMALL_S = 1.0
TARGET_RATIO = 12.0
SIZES = (1_000, 10_000)
QUICK_SIZES = (300, 3_000)
MULTI = ["", "@1", "@>=1.0", "@1.0:", "@:2", "@1.0:1.1"]  # all admit 1.0: no dead ends
SINGLE = ["", "@1.0", "@>=1.0"]
PHASES = ("import_s", "total_s", "cpu_s")


def recipe(name: str, version: str, inputs: dict[str, str]) -> str:
    lines = "".join(f'{k} = "{v}"\n' for k, v in inputs.items())
    script = f'mkdir -p "$out"; echo {name} > "$out/id"'
    return (
        f'name = "{name}"\nversion = "{version}"\nkind = "build"\n\n[inputs]\n{lines}\n'
        f"[build]\nscript = '{script}'\n"
    )


def generate(root: Path, n: int, seed: int = 1) -> tuple[int, int, int]:
    """Write ``n`` recipe files under ``root``; return (packages, files, edges)."""
    rng = random.Random(seed)
    versions: list[list[str]] = []
    files = edges = 0
    referenced: set[int] = set()
    while files < n - 1:
        i = len(versions)
        r = rng.random()
        vs = ["1.0"] if r < 0.7 else ["1.0", "2.0"] if r < 0.85 else ["1.0", "1.1", "2.0"]
        vs = vs[: n - 1 - files]
        versions.append(vs)
        base = sorted(rng.sample(range(i), min(i, rng.randint(2, 7) + (rng.random() < 0.15))))
        referenced.update(base)
        for v in vs:
            deps = list(base)
            if v == vs[-1] and len(vs) > 1 and i > len(base):
                deps.append(rng.choice([j for j in range(i) if j not in base]))
            inputs = {}
            for k, j in enumerate(deps):
                constraint = rng.choice(MULTI if len(versions[j]) > 1 else SINGLE)
                inputs[f"i{k}"] = f"p{j:05d}{constraint}"
            (root / f"p{i:05d}").mkdir(exist_ok=True)
            (root / f"p{i:05d}" / f"{v}.toml").write_text(recipe(f"p{i:05d}", v, inputs))
            files += 1
            edges += len(inputs)
    tops = [j for j in range(len(versions)) if j not in referenced]
    (root / "root").mkdir()
    (root / "root" / "1.0.toml").write_text(
        recipe("root", "1.0", {f"i{k}": f"p{j:05d}" for k, j in enumerate(tops)})
    )
    return len(versions) + 1, files + 1, edges + len(tops)


def child(directory: Path) -> None:
    """One timed run (in a fresh process): print a JSON document of its phases."""
    t0 = time.perf_counter()
    import mlpkg.recipes.loader  # noqa: F401  (pydantic: imported before the clock starts)
    from mlpkg.recipes.index import RecipeIndex
    from mlpkg.resolver.plan import derive
    from mlpkg.resolver.provider import IndexProvider
    from mlpkg.resolver.spec import parse_spec

    t1, c1 = time.perf_counter(), time.process_time()
    provider = IndexProvider(RecipeIndex([directory]))
    # What `mlpkg build` runs before it asks the store anything: resolve, then hash.
    drvs, roots, _python = derive(provider, [parse_spec("root")])
    t3 = time.perf_counter()
    doc: dict[str, Any] = {"import_s": t1 - t0, "total_s": t3 - t1}
    doc["cpu_s"] = time.process_time() - c1
    doc["nodes"], doc["root"] = len(drvs), str(roots[0])
    newest = {d.name: max(c.version for c in provider.candidates(d.name)) for d in drvs}
    doc["older"] = sum(str(newest[d.name]) != d.version for d in drvs)
    print(json.dumps(doc))


def run_child(directory: Path) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(directory)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the timed run failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, help="runs of each (default 3; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="300 and 3,000 recipes, no verdict")
    ap.add_argument("--json", action="store_true", help="print a JSON document")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    sizes = QUICK_SIZES if args.quick else SIZES
    repeat = args.repeat or (1 if args.quick else 3)

    work = Path(tempfile.mkdtemp(prefix="mlpkg-bench-resolve-"))
    try:
        shape: dict[int, dict[str, Any]] = {}
        for n in sizes:
            (work / str(n)).mkdir()
            packages, files, edges = generate(work / str(n), n)
            shape[n] = {"packages": packages, "recipes": files, "edges": edges}
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
        for n in sizes if not args.quick else ():  # untimed: warms the page cache
            run_child(work / str(n))
        for _ in range(repeat):
            for n in sizes:
                runs[n].append(run_child(work / str(n)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for n in sizes:
        shape[n]["median_s"] = {p: statistics.median(r[p] for r in runs[n]) for p in PHASES}
        shape[n]["samples_s"] = [r["total_s"] for r in runs[n]]
        shape[n]["all_reached"] = all(r["nodes"] == shape[n]["packages"] for r in runs[n])
        shape[n]["deterministic"] = len({r["root"] for r in runs[n]}) == 1
        shape[n]["pinned_below_newest"] = runs[n][0]["older"]
    small, large = (shape[n]["median_s"]["total_s"] for n in sizes)
    ratio = large / small
    cpu_ratio = shape[sizes[1]]["median_s"]["cpu_s"] / shape[sizes[0]]["median_s"]["cpu_s"]
    checks = all(shape[n]["all_reached"] and shape[n]["deterministic"] for n in sizes)
    ok_small, ok_ratio = small < TARGET_SMALL_S, ratio <= TARGET_RATIO
    doc: dict[str, Any] = {
        "benchmark": "resolve",
        "repeat": repeat,
        "sizes": {str(n): shape[n] for n in sizes},
        "small_s": small,
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "checks": checks,
        "target": f"{sizes[0]} recipes < {TARGET_SMALL_S} s; {sizes[1]}/{sizes[0]} <= "
        f"{TARGET_RATIO}",
        "pass": checks and ok_small and ok_ratio,
    }
    small_n, large_n = (shape[n] for n in sizes)
    failed = "" if checks else " (a check failed: not every package resolved, or roots differ)"
    doc["rows"] = [
        row(
            f"resolve and hash {small_n['recipes']:,} generated recipes ({small_n['edges']:,} "
            f"edges) in a fresh process{failed}",
            mlpkg=small,
            unit="s",
            target=f"< {TARGET_SMALL_S:g} s",
            passed=checks and ok_small,
            runs=repeat,
            quick=args.quick,
        ),
        row(
            f"the same for {large_n['recipes']:,} recipes ({large_n['edges']:,} edges), "
            f"against {small_n['recipes']:,} (near-linear){failed}",
            mlpkg=large,
            peer=small,
            peer_name=f"{small_n['recipes']:,} recipes, same run",
            unit="s",
            ratio=ratio,
            target=f"≤ {TARGET_RATIO:g} ×",
            passed=checks and ok_ratio,
            runs=repeat,
            quick=args.quick,
        ),
    ]
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0 if checks else 1
    print(f"{'recipes':>7} {'pkgs':>6} {'edges':>6} " + " ".join(f"{p:>9}" for p in PHASES))
    for n in sizes:
        s, cells = shape[n], " ".join(f"{shape[n]['median_s'][p]:>9.3f}" for p in PHASES)
        print(f"{s['recipes']:>7} {s['packages']:>6} {s['edges']:>6} {cells}")
    below = "/".join(str(shape[n]["pinned_below_newest"]) for n in sizes)
    print(f"packages pinned below their newest version (constraints at work): {below}")
    print(f"checks (every package resolved, same root path each run): {checks}")
    print(
        f"{'PASS' if ok_small else 'FAIL'}: {sizes[0]} recipes in {small:.3f} s "
        f"(target < {TARGET_SMALL_S} s)"
    )
    print(
        f"{'PASS' if ok_ratio else 'FAIL'}: {sizes[1]}/{sizes[0]} time ratio {ratio:.2f} "
        f"(target <= {TARGET_RATIO}; CPU time ratio {cpu_ratio:.2f}, for information)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
