"""Benchmark: a cold install of a closure from an nginx binary cache, against pip (issue 13).

What it measures: ``mlpkg build --substituter http://127.0.0.1:P SPEC`` (default
``retinanet-offline+synthetic``; with ``--quick``, ``pycocotools``) into an empty
``MLPKG_HOME`` each run, with ``MLPKG_TRUSTED_KEYS`` set to the cache's key and an empty
download cache: every path of the closure is substituted (the plan is checked: nothing
fetched, nothing built), each archive hash checked.

Set-up (untimed): home A builds SPEC (its recipes download the wheels from the package
index, so this needs the network, or ``--downloads DIR`` holding them from an earlier
run), generates a key and pushes the closure (``mlpkg push --to URL --key``) to nginx
(Debian's, WebDAV PUT, 127.0.0.1: tests/cache_servers.py). Every wheel of the closure
is copied from A's download cache (by the sha256 its derivation records) into a
``--find-links`` directory under its file name.

Peer, in the same run: ``pip install --no-index --find-links DIR name==version…`` (every
wheel of the closure) into a fresh virtual environment made before the clock starts (pip
defaults, so it compiles .pyc files, which mlpkg's store does not hold; ``pip install
--no-compile`` is timed too, for information). The closure of the default SPEC also holds
paths that are not wheels (a 0.49 GB pre-processed dataset, a model, apps): mlpkg
substitutes them too, pip has nothing to install for them. ``mlpkg (wheels only)`` (for
information) substitutes only the wheel paths, from the same cache, in this process.

The runs alternate (mlpkg, pip, pip --no-compile, mlpkg wheels only), ``--repeat`` times
(default 3; quick 1), and the medians are compared.

Target: mlpkg ≤ 0.5 × pip.

Run: ``python bench/cache_install.py [--quick] [--spec SPEC] [--repeat 3]
[--downloads DIR] [--json]`` from the repository root with the interpreter mlpkg is
installed in. Needs nginx. ``--quick``: ``pycocotools``, one run of mlpkg and of pip
(the two runs for information are left out), no verdict. With ``--json`` the document's
``rows`` follow bench/rows.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from cache_common import (
    drop_tree,
    header,
    machine,
    median,
    nginx,
    row,
    substitute_paths,
    timed,
    verdict,
)
from rows import row as table_row

from mlpkg.cache.keys import PublicKey, TrustedKeys
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

TARGET = 0.5
KEY = "bench-cache-install"


def mlpkg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "mlpkg", *args], env=env, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise SystemExit(f"mlpkg {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def wheels(
    store: Store, roots: list[StorePath], downloads: Path, dest: Path
) -> list[dict[str, Any]]:
    """Copy every wheel of the closure of ``roots`` from the download cache into ``dest``
    under its file name; their name, version, file and store path."""
    out = []
    dest.mkdir(parents=True, exist_ok=True)
    for path in store.closure_order(roots):
        info = store.info(path)
        assert info is not None
        if info.kind != "wheel":
            continue
        recipe: dict[str, Any] = cast(dict[str, Any], info.deriver["recipe"])
        facts = cast(dict[str, Any], info.deriver.get("facts") or {})
        sha: str = facts.get("sha256") or recipe["source"]["sha256"]
        sha = sha.removeprefix("sha256:")
        filename = recipe["wheel"]["filename"]
        src = downloads / "sha256" / sha
        if not src.is_file():
            raise SystemExit(f"{filename} ({sha}) is not in the download cache {downloads}")
        shutil.copyfile(src, dest / filename)
        out.append({"name": recipe["name"], "version": recipe["version"], "file": filename,
                    "path": str(path), "bytes": src.stat().st_size})  # fmt: skip
    return out


def time_mlpkg(
    work: Path, url: str, spec: str, public: str, i: int
) -> tuple[float, dict[str, int]]:
    home = work / f"home-b{i}"
    env = {
        **os.environ,
        "MLPKG_HOME": str(home),
        "MLPKG_CACHE_DIR": str(work / f"downloads-b{i}"),  # empty: nothing to fetch from
        "MLPKG_TRUSTED_KEYS": public,
    }
    env.pop("MLPKG_SUBSTITUTERS", None)
    t, r = timed(lambda: mlpkg(env, "build", "--json", "--substituter", url, spec))
    plan = json.loads(r.stdout)["plan"]
    actions: dict[str, int] = {}
    for n in plan["nodes"]:
        actions[n["action"]] = actions.get(n["action"], 0) + 1
    if set(actions) - {"substitute", "skip", "link"}:
        raise SystemExit(f"home B did more than substitute: {actions}")
    drop_tree(home)
    return t, actions


def time_mlpkg_wheels(
    work: Path, url: str, paths: list[StorePath], keys: TrustedKeys, i: int
) -> float:
    """Substitute ``paths`` (the wheels' closure, in order: the interpreter's external path
    too) in this process, one after the other, as mlpkg build does, without its start-up,
    planning and the other paths of the closure."""
    home = work / f"home-w{i}"

    def run() -> None:
        with Store(home) as store:
            substitute_paths(store, url, paths, keys)

    t, _ = timed(run)
    drop_tree(home)
    return t


def time_pip(work: Path, links: Path, reqs: list[str], i: int, *extra: str) -> float:
    venv = work / f"pip-venv-{i}{''.join(extra)}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    argv = [str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(links)]
    t, _ = timed(lambda: subprocess.run([*argv, *extra, *reqs], env=env, check=True))
    shutil.rmtree(venv, ignore_errors=True)
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="spec pycocotools, 1 run")
    parser.add_argument("--spec", help="default retinanet-offline+synthetic (quick: pycocotools)")
    parser.add_argument("--repeat", type=int, help="runs of each (default 3; quick 1)")
    parser.add_argument("--downloads", type=Path, help="home A's download cache (kept)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    spec = args.spec or ("pycocotools" if args.quick else "retinanet-offline+synthetic")
    repeat = args.repeat or (1 if args.quick else 3)
    work = Path(tempfile.mkdtemp(prefix="mlpkg-bench-cache-install-"))
    try:
        home_a = work / "home-a"
        downloads = args.downloads or work / "downloads-a"
        env_a = {**os.environ, "MLPKG_HOME": str(home_a), "MLPKG_CACHE_DIR": str(downloads)}
        env_a.pop("MLPKG_SUBSTITUTERS", None)
        try:
            t_build, r = timed(lambda: mlpkg(env_a, "build", "--json", spec))
        except SystemExit as e:
            raise SystemExit(f"home A could not build {spec} (the package index?): {e}") from None
        roots = [StorePath.parse(Path(p).name) for p in json.loads(r.stdout)["paths"]]
        public = mlpkg(env_a, "key", "generate", "-q", KEY).stdout.strip().splitlines()[0]
        keys = TrustedKeys([PublicKey.parse(public, "bench")])
        with Store(home_a, downloads) as store:
            closure = [str(p) for p in store.closure_order(roots)]
            whls = wheels(store, roots, downloads, work / "wheels")
            wheel_closure = store.closure_order([StorePath.parse(w["path"]) for w in whls])
            infos = [store.info(StorePath.parse(p)) for p in closure]
            closure_bytes = sum(i.size for i in infos if i is not None)
        reqs = [f"{w['name']}=={w['version']}" for w in whls]
        with nginx(work / "nginx") as server:
            url = server.url
            t_push, r = timed(lambda: mlpkg(env_a, "push", "--json", "--to", url, "--key", KEY,
                                            *[str(p) for p in roots]))  # fmt: skip
            pushed = json.loads(r.stdout)
            if not args.quick:  # warm pip's imports (untimed); the wheels were just copied
                time_pip(work, work / "wheels", reqs, -1)
            times: dict[str, list[float]] = {
                "mlpkg build --substituter (closure)": [],
                "pip install --no-index": [],
                "pip install --no-index --no-compile": [],
                "mlpkg, wheel paths only (information)": [],
            }
            actions: dict[str, int] = {}
            for i in range(repeat):
                t, actions = time_mlpkg(work, url, spec, public, i)
                times["mlpkg build --substituter (closure)"].append(t)
                times["pip install --no-index"].append(time_pip(work, work / "wheels", reqs, i))
                if args.quick:
                    continue
                times["pip install --no-index --no-compile"].append(
                    time_pip(work, work / "wheels", reqs, i, "--no-compile")
                )
                times["mlpkg, wheel paths only (information)"].append(
                    time_mlpkg_wheels(work, url, wheel_closure, keys, i)
                )
    finally:
        drop_tree(work)
    med = {k: median(v) for k, v in times.items() if v}
    ratio = med["mlpkg build --substituter (closure)"] / med["pip install --no-index"]
    doc: dict[str, Any] = {
        "benchmark": "cache_install",
        "spec": spec,
        "closure_paths": len(closure),
        "closure_archive_bytes": closure_bytes,
        "wheels": whls,
        "build_a_seconds": t_build,
        "push_seconds": t_push,
        "push": pushed,
        "plan_actions_b": actions,
        "seconds": times,
        "medians": med,
        "ratio": ratio,
        "target": TARGET,
        "pass": ratio <= TARGET,
    }
    doc["rows"] = [
        table_row(
            f"cold install of {spec}'s closure ({len(closure)} paths) from an nginx binary "
            f"cache into an empty home, against `pip install` of its {len(whls)} wheels",
            mlpkg=med["mlpkg build --substituter (closure)"],
            peer=med["pip install --no-index"],
            peer_name="`pip install --no-index --find-links` into a fresh venv",
            unit="s",
            ratio=ratio,
            target=f"≤ {TARGET:g} ×",
            passed=ratio <= TARGET,
            runs=repeat,
            quick=args.quick,
        )
    ]
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"machine: {machine()}; {repeat} runs; spec {spec}")
    print(
        f"closure: {len(closure)} paths, {closure_bytes} archive bytes; home B's plan: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(actions.items()))}"
    )
    print(
        f"{len(whls)} wheels ({sum(w['bytes'] for w in whls)} bytes): "
        + " ".join(w["file"] for w in whls)
    )
    print(
        f"set-up: home A built in {t_build:.1f} s, pushed in {t_push:.1f} s "
        f"({pushed['objects_uploaded']} objects, {pushed['bytes_uploaded']} bytes)"
    )
    print(header())
    for k, v in times.items():
        if v:
            print(row(k, v, "s"))
    mlpkg_s, pip_s = med["mlpkg build --substituter (closure)"], med["pip install --no-index"]
    if not args.quick:
        no_compile = med["pip install --no-index --no-compile"]
        only = med["mlpkg, wheel paths only (information)"]
        print(
            f"mlpkg / pip --no-compile = {mlpkg_s / no_compile:.3f}; wheel paths only / pip = "
            f"{only / pip_s:.3f}; wheel paths only / pip --no-compile = {only / no_compile:.3f}"
            " (information)"
        )
    print(
        verdict(
            f"mlpkg cold install from the cache <= {TARGET} x pip install",
            doc["pass"],
            f"{ratio:.3f}: {med['mlpkg build --substituter (closure)']:.3f} s vs "
            f"{med['pip install --no-index']:.3f} s",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
