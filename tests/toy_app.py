"""A toy app for the ``mlpkg run`` tests: a standard-library Python package
(``toyapp``) in a recipe directory, one small data input, and a ``Home`` that runs mlpkg
against it in process or as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from tests.cli_support import CliResult

TOYAPP_MAIN = '''
"""toyapp: prints lines, writes harness.json into --out, exits with --exit."""
import argparse
import json
import os
import signal
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(prog="toyapp")
    p.add_argument("--out", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--exit", dest="code", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--flag", default=None)
    p.add_argument("--plain", action="store_true", help="no SIGINT handler of its own")
    p.add_argument("--interrupt-exit", type=int, default=130, help="exit status on SIGINT")
    p.add_argument("--accuracy", action="store_true")
    a = p.parse_args()

    def report(status: str) -> None:
        doc = {"format": 1, "status": status, "mode": "AccuracyOnly", "accuracy": {"mAP": 0.5}}
        tmp = os.path.join(a.out, ".harness.json.tmp")
        with open(tmp, "w") as f:  # atomic, as the real harness writes it
            json.dump(doc, f)
        os.replace(tmp, os.path.join(a.out, "harness.json"))

    def interrupted(signum, frame) -> None:
        report("interrupted")
        print("toyapp: interrupted", flush=True)
        sys.exit(a.interrupt_exit)

    if not a.plain:
        signal.signal(signal.SIGINT, interrupted)
    with open(os.path.join(a.data, "value")) as f:
        print(f"toyapp: data {f.read().strip()}")
    print(f"toyapp: flag {a.flag}")
    print(f"toyapp: code in {os.path.dirname(os.path.abspath(__file__))}")
    if a.sleep:
        print("toyapp: ready", flush=True)
        try:
            time.sleep(a.sleep)
        except KeyboardInterrupt:  # --plain: Python's own SIGINT handling
            interrupted(signal.SIGINT, None)
    report("ok" if a.code == 0 else "failed")
    if a.code:
        print(f"error: toyapp exits {a.code} on purpose", file=sys.stderr)
    print("toyapp: done")
    sys.exit(a.code)


main()
'''

DATA_TOML = """
name = "data"
version = "1.0"
kind = "build"
[build]
script = '''mkdir "$out"; echo 42 > "$out/value"'''
"""

TOYAPP_TOML = """
name = "toyapp"
version = "1.0"
summary = "a toy app for the tests"
kind = "app"
[inputs]
python = "python"
data = "data@1.0"
[app]
path = "src/toyapp"
module = "toyapp"
[run]
command = ["python3", "-m", "toyapp", "--out", "${output}", "--data", "${data}"]
"""

BADAPP_TOML = """
name = "badapp"
version = "1.0"
kind = "app"
[inputs]
python = "python"
[run]
command = ["python3", "-c", "print('never')", "${nosuch}"]
"""

NOEXE_TOML = """
name = "noexe"
version = "1.0"
kind = "app"
[run]
command = ["no-such-program-for-mlpkg-tests"]
"""


@dataclass
class Home:
    """One MLPKG_HOME and recipe directory; runs ``mlpkg`` in this process (call) or as a
    subprocess (``sub``, ``popen``)."""

    home: Path
    recipes: Path
    bindir: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def env_overrides(self) -> dict[str, str]:
        overrides = {"MLPKG_HOME": str(self.home), "MLPKG_RECIPES_PATH": str(self.recipes),
                     "PATH": f"{self.bindir}:/usr/local/bin:/usr/bin:/bin"}  # fmt: skip
        if "MLPKG_SANDBOX" in os.environ:
            overrides["MLPKG_SANDBOX"] = os.environ["MLPKG_SANDBOX"]
        return overrides

    def env(self) -> dict[str, str]:
        """A full environment for a subprocess: ours, minus MLPKG_* settings, plus this
        home, its recipes and the private bin directory first on PATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLPKG_")}
        env.update(self.env_overrides())
        return env

    def __call__(self, *args: str) -> CliResult:
        """``mlpkg ARGS`` in this process (fast); the app it starts is still a subprocess."""
        from mlpkg.cli import main

        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MLPKG_")}
        env.update(self.env_overrides())
        code = 0
        with CliRunner().isolation(env=env) as (out, err, _):
            try:
                main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
            stdout, stderr = out.getvalue(), err.getvalue()
        return CliResult(code, stdout.decode(), stderr.decode(), args)

    def sub(self, *args: str, timeout: float = 60) -> CliResult:
        """``python -m mlpkg ARGS`` as a real subprocess."""
        r = subprocess.run([sys.executable, "-m", "mlpkg", *args], env=self.env(),
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)  # fmt: skip
        return CliResult(r.returncode, r.stdout, r.stderr, args)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "mlpkg", *args], env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    def run_ids(self) -> set[str]:
        return set(os.listdir(self.runs)) if self.runs.is_dir() else set()

    def new_run(self, before: set[str]) -> Path:
        """The one run directory entry made since ``before``."""
        made = sorted(self.run_ids() - before)
        assert len(made) == 1, made
        return self.runs / made[0]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


def write_recipes(recipes: Path) -> None:
    for name, text in (
        ("data", DATA_TOML),
        ("toyapp", TOYAPP_TOML),
        ("badapp", BADAPP_TOML),
        ("noexe", NOEXE_TOML),
    ):
        (recipes / name).mkdir(parents=True, exist_ok=True)
        (recipes / name / "1.0.toml").write_text(textwrap.dedent(text).lstrip())
    src = recipes / "toyapp" / "src" / "toyapp"
    src.mkdir(parents=True, exist_ok=True)
    (src / "__init__.py").write_text('"""toyapp."""\n')
    (src / "__main__.py").write_text(TOYAPP_MAIN.lstrip())


def result_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "result.json").read_text())


def app_path(h: Home) -> str:
    return Path(h("show", "--json", "toyapp").ok().json()["path"]).name
