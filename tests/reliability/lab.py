"""The reliability tests' laboratory: one MLPKG_HOME, small recipes and a slow loopback
server, and the operations a fault campaign interrupts (see docs/reliability.md).

Every recipe is small so that one operation takes about a second on two cores:

- ``blob``: a fetch of a 768 KiB tarball from a loopback server that sends it in 48 KiB
  pieces 20 ms apart (the download is in flight for ~0.3 s);
- ``pack``: a fetch of a tarball of 300 small files from a ``file://`` URL (the time is
  in unpacking, hashing and registering);
- ``tree``: a sandboxed build that sleeps 0.5 s (the time is in the build script);
- ``heavy``: a sandboxed build that writes 400 files at once (the time is in
  canonicalising, hashing, the rename and registration);
- ``tool``: a small build, installed into profiles;
- ``junk``: an unrooted build of 200 files that ``gc`` deletes;
- ``toyapp`` (tests/toy_app.py): the app ``mlpkg run`` starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.cli_support import CliResult, python_bin
from tests.conftest import SlowServer, make_tarball
from tests.recipe_text import build_toml, fetch_toml
from tests.toy_app import Home, write_recipes

TREE = 'sleep 0.5\nmkdir "$out"\ncp -r "$t" "$out/t"\necho tree > "$out/name"\n'
HEAVY = 'mkdir -p "$out/d"\ncd "$out/d"\nfor i in $(seq 400); do echo "$i" > "f$i"; done\n'
JUNK = 'mkdir -p "$out/d"\ncd "$out/d"\nfor i in $(seq 200); do echo "$i" > "j$i"; done\n'
TOOL = 'mkdir -p "$out/bin"\nprintf "#!/bin/sh\\necho tool\\n" > "$out/bin/tool"\n'


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Lab(Home):
    """A :class:`tests.toy_app.Home` with the recipes above, a slow server, and processes
    started as leaders of their own process group (``start``)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / "home", root / "recipes", python_bin(root / "bin"))
        self.root = root
        self.server = SlowServer()
        self.groups: list[subprocess.Popen[str]] = []
        self.durations: dict[str, float] = {}
        self.paths: dict[str, Path] = {}
        self.reference: dict[str, str] = {}  # store path name -> archive hash, uninterrupted
        write_recipes(self.recipes)
        rng = _bytes(b"blob", 768 * 1024)
        blob = make_tarball({"data.txt": "blob\n", "blob.bin": rng}, top="blob-1.0")
        url = self.server.route("/blob.tar.gz", blob, chunk=48 * 1024, delay=0.02)
        self.add("blob", fetch_toml("blob", "1.0", [url], sha256(blob)))
        files: dict[str, bytes | str] = {f"f/{i:04d}.txt": f"file {i}\n" for i in range(300)}
        pack = make_tarball(files, top="pack-1.0")
        (root / "pack-1.0.tar.gz").write_bytes(pack)
        uri = (root / "pack-1.0.tar.gz").as_uri()
        self.add("pack", fetch_toml("pack", "1.0", [uri], sha256(pack)))
        self.add("tool", build_toml("tool", "1.0", TOOL))
        self.add("tree", build_toml("tree", "1.0", TREE, {"t": "tool@1.0"}))
        self.add("heavy", build_toml("heavy", "1.0", HEAVY))
        self.add("junk", build_toml("junk", "1.0", JUNK))
        self.home.mkdir(parents=True, exist_ok=True)
        # What every trial finds already there: the toy app's closure and tool, rooted.
        self("build", "--root", "toy", "toyapp").ok()
        self("install", "tool").ok()

    def add(self, name: str, text: str) -> None:
        (self.recipes / name).mkdir(parents=True, exist_ok=True)
        (self.recipes / name / "1.0.toml").write_text(text, encoding="utf-8")

    # -- processes ------------------------------------------------------------------------

    def start(self, *args: str) -> subprocess.Popen[str]:
        """``python -m mlpkg ARGS``, the leader of a new process group (and session)."""
        proc = subprocess.Popen([sys.executable, "-m", "mlpkg", *args], env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True,
                                start_new_session=True)  # fmt: skip
        self.groups.append(proc)
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float = 60) -> CliResult:
        out, err = proc.communicate(timeout=timeout)
        return CliResult(proc.returncode, out, err, tuple(str(a) for a in proc.args[3:]))  # type: ignore[index]

    def close(self) -> None:
        for proc in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.communicate(timeout=10)
        super().close()
        self.server.close()

    # -- the store, read directly ---------------------------------------------------------

    def valid(self) -> dict[str, str]:
        """Store path name -> archive hash of every registered path (read without mlpkg)."""
        db = self.home / "db.sqlite"
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            return dict(conn.execute("SELECT path, archive_hash FROM paths").fetchall())
        finally:
            conn.close()

    def path_of(self, spec: str) -> Path:
        """The store path ``spec`` resolves to (the recipes never change: remembered)."""
        if spec not in self.paths:
            self.paths[spec] = Path(self("show", "--json", spec).ok().json()["path"])
        return self.paths[spec]

    def verify(self) -> dict[str, object]:
        """``mlpkg verify --check-contents --json`` (in this process): its document, with
        the exit code and stderr added."""
        r = self("verify", "--check-contents", "--json")
        doc: dict[str, object] = json.loads(r.out) if r.out.strip() else {}
        return {**doc, "code": r.code, "stderr": r.err}

    def entries(self, sub: str) -> list[str]:
        where = self.home / sub
        return sorted(os.listdir(where)) if where.is_dir() else []


def _bytes(seed: bytes, size: int) -> bytes:
    """``size`` reproducible bytes that do not compress (so the tarball stays big)."""
    out = bytearray()
    block = seed
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process of the group ``pgid`` is left; False after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stragglers(home: Path) -> list[str]:
    """Processes (but this one) whose command line or environment names ``home``: what a
    command working on that home left running (a sandboxed builder, an app), as
    ``pid: command`` lines. The builder of a sandboxed build runs in a session of its own,
    so a kill of mlpkg's process group does not reach it: it must go by itself."""
    needle = os.fsencode(str(home))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in cmdline or needle in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry}: {command}")
    return found


def wait_stragglers_gone(home: Path, timeout: float) -> list[str]:
    """Wait until :func:`stragglers` finds none; those still there after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while (left := stragglers(home)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def holds_flock(pid: int) -> bool:
    """Whether process ``pid`` holds an ``flock`` (``/proc/locks``)."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return False
    return any(
        f.split()[1:2] == ["FLOCK"] and str(pid) in f.split()[3:5] for f in text.splitlines()
    )


def wait_active(lab: Lab, proc: subprocess.Popen[str], timeout: float = 60) -> float | None:
    """Wait until ``proc`` starts working on the store: it has written its temporary roots
    (``temproots/<pid>``: its plan is protected) or holds an flock (the collector's
    ``gc.lock``). Seconds waited; None when it exited first."""
    started = time.monotonic()
    mark = lab.home / "temproots" / str(proc.pid)
    while time.monotonic() - started < timeout:
        if mark.exists() or holds_flock(proc.pid):
            return time.monotonic() - started
        if proc.poll() is not None:
            return None
        time.sleep(0.005)
    return None
