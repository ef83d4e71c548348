"""Benchmark: what ``mlpkg sweep`` itself costs per point, beside the run it makes.

What it measures, in one home whose closure is already realised (a warm-up run first):

* a sweep of ``--points`` points (``--repeat`` of one cell, so every point plans,
  activates and records the same way); from its experiment.json, per point: ``run_s``
  (the app's process, start to exit), ``overhead_s`` (activation, the run directory, the
  lock, result.json and experiment.json) and ``plan_s`` (the point's share of planning);
  and the sweep command's wall time per point;
* the peer, in the same run: as many separate ``mlpkg run`` commands, one after another
  (the way people script sweeps today), each timed from the outside; its per-point cost
  beyond the app is the command's wall time minus the app's time as its result.json
  records it (``duration_s``: the app's start to its end).

It prints the medians and the ratio of the two costs beyond the app (the sweep's: its
wall time less the apps' ``run_s``, per point). The app's own time varies from run to
run far more than the machinery costs, so wall times alone would compare noise. The
sweep is within budget when its machinery per point (plan + overhead) is at most 5 %
of the run itself for the realistic app (``--time 5``), and when it costs no more
beyond the app per point than separate runs (ratio <= 1.0).

Run: ``python bench/sweep_overhead.py [--app toyapp] [--points 10]`` (hermetic: a toy app
that exits at once, which isolates the machinery), or ``python bench/sweep_overhead.py
--app retinanet-offline+synthetic --home DIR --points 6 -- --time 5`` (a home where that
app's closure can be realised; the first run fetches and builds it). ``--quick``: 3
points, no verdict. With ``--json`` the document's ``rows`` follow bench/rows.py: the
machinery's share of the run (a target only for an app other than the toy app, which
exits at once) and the cost beyond the app against separate runs.
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

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from rows import row  # noqa: E402

from tests.toy_app import write_recipes  # noqa: E402

OVERHEAD_TARGET = 0.05
RATIO_TARGET = 1.0


def mlpkg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``mlpkg COMMAND -q ARGS``; its output, or SystemExit with its error."""
    cmd = [sys.executable, "-m", "mlpkg", args[0], "-q", *args[1:]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}")
    return done


def sweep(env: dict[str, str], app: str, points: int, app_args: list[str]) -> dict[str, Any]:
    began = time.monotonic()
    mlpkg(env, "sweep", app, "--repeat", str(points), "--", *app_args)
    wall = time.monotonic() - began
    home = Path(env["MLPKG_HOME"]) / "experiments"
    exp = json.loads((sorted(home.iterdir())[-1] / "experiment.json").read_text())
    timings = [p["timings"] for p in exp["points"]]
    assert all(p["status"] == "ok" for p in exp["points"]), exp["points"]
    return {
        "wall_per_point": wall / points,
        "beyond_app": (wall - sum(t["run_s"] for t in timings)) / points,
        "run_s": statistics.median(t["run_s"] for t in timings),
        "overhead_s": statistics.median(t["overhead_s"] for t in timings),
        "plan_s": statistics.median(t["plan_s"] for t in timings),
    }


def separate(env: dict[str, str], app: str, points: int, app_args: list[str]) -> dict[str, Any]:
    walls, apps = [], []
    for _ in range(points):
        began = time.monotonic()
        out = mlpkg(env, "run", app, "--json", *app_args)
        walls.append(time.monotonic() - began)
        apps.append(float(json.loads(out.stdout)["duration_s"]))
    beyond = statistics.median(w - a for w, a in zip(walls, apps, strict=True))
    return {"wall_per_point": statistics.median(walls), "run_s": statistics.median(apps),
            "beyond_app": beyond}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--app", default="toyapp")
    p.add_argument("--home", type=Path, help="MLPKG_HOME (default: a fresh one)")
    p.add_argument("--points", type=int, help="points of each (default 10; --quick 3)")
    p.add_argument("--quick", action="store_true", help="3 points, no verdict")
    p.add_argument("--json", action="store_true")
    p.add_argument("app_args", nargs="*", help="the app's options (after --)")
    a = p.parse_args()
    points = a.points or (3 if a.quick else 10)
    env = dict(os.environ)
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    env["MLPKG_HOME"] = str(a.home or work / "home")
    if a.app == "toyapp":
        write_recipes(work / "recipes")
        env["MLPKG_RECIPES_PATH"] = str(work / "recipes")
    try:
        mlpkg(env, "run", a.app, *a.app_args)  # warm-up: the closure is realised here
        s = sweep(env, a.app, points, a.app_args)
        r = separate(env, a.app, points, a.app_args)
    finally:  # the temp home's store is read-only: make it writable to remove it
        for d, _dirs, _files in os.walk(work):
            os.chmod(d, 0o755)
        shutil.rmtree(work, ignore_errors=True)
    machinery = s["plan_s"] + s["overhead_s"]
    share = machinery / s["run_s"] if s["run_s"] else float("inf")
    ratio = s["beyond_app"] / r["beyond_app"]
    doc = {"app": a.app, "args": a.app_args, "points": points, "sweep": s, "separate": r,
           "machinery_s": machinery, "machinery_share": share, "ratio": ratio,
           "load": os.getloadavg()}  # fmt: skip
    toy = a.app == "toyapp"
    called = " ".join([a.app, *a.app_args])
    doc["rows"] = [
        row(
            f"`mlpkg sweep`'s machinery per point (planning, activation, records) beside the "
            f"run itself ({called}, {points} points)",
            mlpkg=machinery,
            peer=s["run_s"],
            peer_name="the app's run",
            unit="s",
            ratio=share,
            target="" if toy else f"≤ {OVERHEAD_TARGET:g} ×",
            passed=None if toy else share <= OVERHEAD_TARGET,
            runs=points,
            quick=a.quick,
        ),
        row(
            f"cost beyond the app per point: `mlpkg sweep` against separate `mlpkg run`s "
            f"({called}, {points} points)",
            mlpkg=s["beyond_app"],
            peer=r["beyond_app"],
            peer_name="separate `mlpkg run` commands",
            unit="s",
            ratio=ratio,
            target=f"≤ {RATIO_TARGET:.1f} ×",
            passed=ratio <= RATIO_TARGET,
            runs=points,
            quick=a.quick,
        ),
    ]
    if a.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"app {a.app} {' '.join(a.app_args)}: {points} points; load {doc['load']}")
    print(f"{'':22}{'per point (s)':>14}{'app (s)':>10}{'beyond the app (s)':>20}")
    for name, t in (("mlpkg sweep", s), ("separate mlpkg run", r)):
        print(f"{name:22}{t['wall_per_point']:>14.3f}{t['run_s']:>10.3f}{t['beyond_app']:>20.3f}")
    print(f"sweep machinery per point: plan {s['plan_s']:.4f} s + activation and records "
          f"{s['overhead_s']:.4f} s = {machinery:.4f} s ({share:.1%} of the run)")  # fmt: skip
    verdict = "PASS" if ratio <= RATIO_TARGET else "FAIL"
    print(f"cost beyond the app per point, sweep / separate runs: {ratio:.3f} x (target <= "
          f"{RATIO_TARGET}): {verdict}")  # fmt: skip
    if a.app != "toyapp":
        verdict = "PASS" if share <= OVERHEAD_TARGET else "FAIL"
        print(f"machinery share of the run: {share:.1%} (target <= {OVERHEAD_TARGET:.0%}): "
              f"{verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
