"""Reliability (cross-cutting): many real ``mlpkg`` processes on one store at once
(issue 15).

- Eight processes, started together through a barrier file, realise overlapping closures
  (a shared download, a shared base build, two middle builds, four tops each asked for by
  two processes): every path is built (and downloaded) exactly once, counted by what the
  build script prints (each process's ``-v`` output, which a build cannot keep from its
  builder) and by the server's request log; every process exits 0; the store verifies.
- ``gc`` in a loop while other processes install into profiles, build and run an app whose
  closure nothing roots: every command succeeds, and every path they used is still valid
  afterwards (invariant 6).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tests.cli_support import CliResult, python_bin
from tests.recipe_text import build_toml, fetch_toml
from tests.toy_app import Home, write_recipes

if TYPE_CHECKING:
    from tests.conftest import LoopbackServer, MlpkgCli


def counted(name: str, body: str = 'mkdir "$out"\n') -> str:
    """A build script that announces itself (counted in the builders' -v output), takes a
    moment (so the processes really overlap), then runs ``body``."""
    return f'echo "BUILD-RAN {name}"\nsleep 0.3\n{body}'


def start_at_barrier(cli: MlpkgCli, barrier: Path, *args: str) -> subprocess.Popen[str]:
    """``python -m mlpkg ARGS`` that waits for ``barrier`` to exist before it starts."""
    argv = ["sh", "-c", 'b="$1"; shift; while [ ! -e "$b" ]; do sleep 0.005; done; exec "$@"',
            "sh", str(barrier), *cli.argv(*args)]  # fmt: skip
    proc = subprocess.Popen(argv, env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)  # fmt: skip
    cli.procs.append(proc)
    return proc


def test_eight_processes_realising_overlapping_closures_build_each_path_once(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes], http_server: LoopbackServer
) -> None:
    data = tarball({"data.txt": "shared source\n"}, top="src-1.0")
    http_server.route("/src.tar.gz", body=data)
    sha = hashlib.sha256(data).hexdigest()
    add = mlpkg_cli.recipes.add
    add("src", "1.0", fetch_toml("src", "1.0", [http_server.url("/src.tar.gz")], sha))
    add("base", "1.0", build_toml("base", "1.0", counted("base",
        'mkdir "$out"; cp "$src/data.txt" "$out/"\n'), {"src": "src@1.0"}))  # fmt: skip
    for mid in ("left", "right"):
        add(mid, "1.0", build_toml(mid, "1.0", counted(mid), {"b": "base@1.0"}))
    for k in range(4):
        side = "left" if k % 2 else "right"
        inputs = {"m": f"{side}@1.0", "b": "base@1.0"} | ({"o": "left@1.0"} if k == 3 else {})
        add(f"top{k}", "1.0", build_toml(f"top{k}", "1.0", counted(f"top{k}"), inputs))
    expected = {f"top{k}": mlpkg_cli.path_of(f"top{k}") for k in range(4)}

    barrier = mlpkg_cli.home.parent / "go"
    specs = [f"top{i % 4}" for i in range(8)]  # each top asked for by two processes
    procs = [start_at_barrier(mlpkg_cli, barrier, "build", "-v", s) for s in specs]
    time.sleep(0.2)  # every shell is waiting
    barrier.touch()
    results = [mlpkg_cli.finish(p, timeout=120) for p in procs]

    for spec, r in zip(specs, results, strict=True):
        assert r.code == 0, str(r)
        assert r.out.strip() == str(expected[spec]), str(r)
    stderr = "".join(r.err for r in results)
    for name in ("base", "left", "right", "top0", "top1", "top2", "top3"):
        assert stderr.count(f"BUILD-RAN {name}\n") == 1, (name, stderr)
    assert len(http_server.requests_for("/src.tar.gz")) == 1  # downloaded once
    names = {mlpkg_cli.path_of(s).name for s in ("src", "base", "left", "right")}
    assert mlpkg_cli.valid_paths() == sorted(names | {p.name for p in expected.values()})
    r = mlpkg_cli.run("verify", "--check-contents", "--json").ok()
    assert r.json()["ok"] and r.json()["problems"] == [], r.out
    assert not [e for e in mlpkg_cli.store_entries() if e.startswith(".")]


# -- gc racing installs, builds and runs ------------------------------------------------------


class Loop(threading.Thread):
    """Runs commands one after another in a thread (each a real subprocess) and keeps
    every result; ``commands(i)`` gives the i-th command, None to stop."""

    def __init__(self, home: Home, commands: Callable[[int], tuple[str, ...] | None]) -> None:
        super().__init__(daemon=True)
        self.home, self.commands = home, commands
        self.results: list[CliResult] = []

    def run(self) -> None:
        i = 0
        while (args := self.commands(i)) is not None:
            self.results.append(self.home.sub(*args, timeout=120))
            i += 1


def test_gc_in_a_loop_never_deletes_what_installs_builds_and_runs_use(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    write_recipes(recipes)  # toyapp and its data, rooted by nothing

    def add(name: str, text: str) -> None:
        (recipes / name).mkdir(parents=True, exist_ok=True)
        (recipes / name / "1.0.toml").write_text(text)

    add("base", build_toml("base", "1.0", 'sleep 0.2\nmkdir "$out"; echo base > "$out/v"\n'))
    for k in range(3):
        script = f'sleep 0.2\nmkdir "$out"; cat "$b/v" > "$out/v"; echo w{k} >> "$out/v"\n'
        add(f"w{k}", build_toml(f"w{k}", "1.0", script, {"b": "base@1.0"}))
    # A path nothing uses nor roots: the first gc deletes it, whatever the timing (so the
    # collector is known to have deleted something while the others ran).
    add("orphan", build_toml("orphan", "1.0", 'mkdir "$out"; echo orphan > "$out/v"\n'))
    home = Home(tmp_path / "home", recipes, python_bin(tmp_path / "bin"))
    try:
        home("build", "toyapp").ok()  # realised once, then left to the collector
        orphan = home("show", "--json", "orphan").ok().json()["path"]
        home("build", "orphan").ok()
        assert Path(orphan).is_dir()
        done = threading.Event()
        rounds = 4
        installs = Loop(home, lambda i: ("install", "--profile", f"p{i}", f"w{i % 3}")
                        if i < rounds else None)  # fmt: skip
        builds = Loop(home, lambda i: ("build", f"w{(i + 1) % 3}") if i < rounds else None)
        runs = Loop(home, lambda i: ("run", "toyapp") if i < rounds else None)
        workers = [installs, builds, runs]
        collector = Loop(home, lambda i: None if done.is_set() else ("gc", "--json"))
        collector.start()
        for w in workers:
            w.start()
        for w in workers:
            w.join(300)
        done.set()
        collector.join(120)

        failed = [str(r) for loop in [*workers, collector] for r in loop.results if r.code]
        assert not failed, "\n".join(failed)
        deleted = [d for r in collector.results for d in json.loads(r.out)["deleted"]]
        assert len(collector.results) >= 3, "gc ran fewer than 3 times"
        assert Path(orphan).name in deleted, f"gc did not delete the unrooted {orphan}: {deleted}"
        assert not Path(orphan).exists()
        for r in runs.results:
            assert "toyapp: data 42" in r.out and "toyapp: done" in r.out, str(r)
        # What the installs put into profiles is still there and intact.
        for i, r in enumerate(installs.results):
            roots = json.loads(home.sub("profile", "list", "--json").ok().out)
            assert any(row["profile"] == f"p{i}" and row["specs"] for row in roots), roots
            assert r.out.split(), str(r)
            for line in r.out.split():
                assert Path(line).is_dir(), f"{line} of {r.args} was deleted"
        verified = home.sub("verify", "--check-contents", "--json")
        assert verified.code == 0 and json.loads(verified.out)["problems"] == [], str(verified)
        # Nothing was deleted from under a command: the profiles' paths are all valid.
        home.sub("gc").ok()
        for k in range(3):
            path = Path(home("show", "--json", f"w{k}").ok().json()["path"])
            assert (path / "v").read_text() == f"base\nw{k}\n"
    finally:
        home.close()
