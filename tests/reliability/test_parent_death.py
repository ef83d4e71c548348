"""Reliability (cross-cutting): a child mlpkg starts (a sandboxed build, an app) must not
outlive mlpkg, even when mlpkg is killed between the fork and the moment the child asks
for its parent-death signal (found by the kill campaign: a bubblewrap builder left running,
its parent gone, after mlpkg alone was killed at that moment; issue 15).

The race is made certain here: the child waits, between fork and exec, until its parent
has been killed with SIGKILL, and only then runs mlpkg's pre-exec hook.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PARENT = r"""
import functools, os, signal, subprocess, sys, time
from mlpkg.store import sandbox

pidfile, go = sys.argv[1], sys.argv[2]
hook = functools.partial(sandbox.set_parent_death_signal, int(signal.SIGKILL), os.getpid())

def pre():
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(pidfile + ".tmp", pidfile)
    while not os.path.exists(go):  # mlpkg (this script) is killed meanwhile
        time.sleep(0.005)
    hook()

subprocess.Popen(["sleep", "60"], preexec_fn=pre)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_child_whose_parent_died_before_its_death_signal_was_set_dies(tmp_path: Path) -> None:
    pidfile, go = tmp_path / "child.pid", tmp_path / "go"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(pidfile), str(go)],
                              cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    child = 0
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists():
            assert parent.poll() is None and time.monotonic() < deadline, "no child started"
            time.sleep(0.01)
        child = int(pidfile.read_text())
        parent.kill()
        parent.wait(10)
        go.touch()  # now the child sets its parent-death signal, its parent already dead
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(child), f"the child {child} outlived its killed parent"
    finally:
        with contextlib.suppress(ProcessLookupError):
            if child and alive(child):
                os.kill(child, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
