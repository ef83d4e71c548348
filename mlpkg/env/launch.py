"""Starting an app's process for ``mlpkg run``: its own session, its output kept, signals
passed on, never orphaned.

The contract of :func:`launch`:

- the program is looked up on the closure's ``PATH`` only (:class:`RunError` otherwise);
- it runs in a new session (the terminal's Ctrl-C reaches mlpkg, which passes SIGINT on
  once), with SIGINT at its default disposition even when mlpkg was started with it
  ignored (``nohup``, ``&`` in a script), and with the parent-death signal set to SIGINT,
  so that an mlpkg killed outright still stops the app cleanly;
- SIGINT, SIGTERM and SIGHUP received by mlpkg are forwarded (when launched from the main
  thread; a caller that launches from other threads, like a sweep's ``--jobs``, forwards
  them itself: Python delivers signals to the main thread only);
- stdout and stderr are copied, as they come (progress bars included), to
  ``stdout.txt``/``stderr.txt`` in the run directory and, when ``show`` (stdout) and
  ``show_stderr`` (stderr), to mlpkg's own;
  a closed terminal stops the copying to it, never the run; a log that cannot be written
  (a full disk) never blocks the app either: the output is read on, and the run ends with
  one error naming the run directory;
- with ``readonly`` (the store), it runs where those directories are read-only mounts and
  it has no capability left, so that not even root can change a store path
  (:func:`mlpkg.store.sandbox.run_isolation`); its pid is the same (nothing stands
  between);
- it returns the exit status (negative for a signal, as :mod:`subprocess` does), the pid,
  the last line of stderr that starts with ``error:`` (the reason of a failure), how long
  the app ran, and the signal mlpkg passed on to it, if any (an app may handle SIGINT and
  exit 1: the caller still knows it was interrupted).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, BinaryIO

from mlpkg.errors import MlpkgError, RunError
from mlpkg.store import sandbox
from mlpkg.store.space import disk_full, is_full

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_KEEP = 4096  # bytes of an unfinished line remembered, from its start (progress bars use \r)


@dataclass
class Exited:
    code: int
    pid: int
    error: str | None
    seconds: float = 0.0  # from the process's start to its exit (and its output's end)
    signalled: int | None = None  # the first signal mlpkg received and passed on, if any


def _start(
    argv: list[str], env: dict[str, str], isolation: str, readonly: Sequence[Path]
) -> subprocess.Popen[bytes]:
    kw: dict[str, object] = dict(
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=functools.partial(
            sandbox.set_parent_death_signal, int(signal.SIGINT), os.getpid()
        ),
    )
    if isolation == "namespace":
        spec = sandbox.readonly_spec(argv, env, readonly, int(signal.SIGINT))
        return sandbox.popen_nsbox(spec, **kw)
    if isolation == "bubblewrap":
        argv = sandbox.bwrap_readonly_argv(argv, readonly)
    return subprocess.Popen(argv, env=env, **kw)  # type: ignore[call-overload, no-any-return]


def _log_lost(run_dir: Path, e: OSError) -> MlpkgError:
    if is_full(e):
        return disk_full(run_dir, "the app's output (stdout.txt, stderr.txt)")
    return RunError(f"The app's output could not be written to {run_dir}: {e.strerror}.")


class _Tee(threading.Thread):
    """Copies one pipe to a file and, while it can, to a stream; remembers error lines."""

    def __init__(self, pipe: IO[bytes], log: BinaryIO, echo: BinaryIO | None) -> None:
        super().__init__(daemon=True)
        self.pipe, self.log, self.echo = pipe, log, echo
        self.error: str | None = None
        self.failure: OSError | None = None  # the first error writing the log
        self._partial = b""

    def run(self) -> None:
        while chunk := os.read(self.pipe.fileno(), 65536):
            if self.failure is None:
                try:
                    self.log.write(chunk)
                    self.log.flush()
                except OSError as e:  # a full disk: read on, or the app blocks forever
                    self.failure = e
            self._remember(chunk)
            if self.echo is not None:
                try:
                    self.echo.write(chunk)
                    self.echo.flush()
                except OSError:  # the terminal went away: keep logging
                    self.echo = None

    def _remember(self, chunk: bytes) -> None:
        *lines, partial = (self._partial + chunk).split(b"\n")
        self._partial = partial[:_KEEP]  # the start says whether it is an error line
        for line in lines:
            text = line.decode("utf-8", "replace").strip()
            if text.startswith("error:") or ": error:" in text:
                self.error = text


def launch(
    argv: list[str],
    env: dict[str, str],
    run_dir: Path,
    show: bool,
    on_start: Callable[[int], None] | None = None,
    readonly: Sequence[Path] = (),
    show_stderr: bool = True,
) -> Exited:
    """Run ``argv`` (see the module docstring) and wait for it; ``on_start`` is told the
    pid as soon as the process exists."""
    exe = shutil.which(argv[0], path=env.get("PATH"))
    if exe is None:
        raise RunError(f"The app's command {argv[0]} is not in its closure's PATH.")
    isolation = sandbox.run_isolation() if readonly else "none"
    with (
        open(run_dir / "stdout.txt", "wb") as out_log,
        open(run_dir / "stderr.txt", "wb") as err_log,
    ):
        # Handlers first: a signal caught here is reset to the default in the child at
        # exec, while an ignored one (nohup, `&` in a script) would stay ignored there.
        started: list[subprocess.Popen[bytes]] = []
        received: list[int] = []

        def forward(signum: int, _frame: FrameType | None) -> None:
            received.append(signum)
            for child in started:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)

        main = threading.current_thread() is threading.main_thread()
        old = {s: signal.signal(s, forward) for s in FORWARDED} if main else {}
        try:
            proc = _start([exe, *argv[1:]], env, isolation, readonly)
        except BaseException:
            for s, handler in old.items():
                signal.signal(s, handler)
            raise
        started.append(proc)
        began = time.monotonic()
        if on_start is not None:
            on_start(proc.pid)
        assert proc.stdout is not None and proc.stderr is not None
        tees = [
            _Tee(proc.stdout, out_log, sys.stdout.buffer if show else None),
            _Tee(proc.stderr, err_log, sys.stderr.buffer if show_stderr else None),
        ]
        try:
            for tee in tees:
                tee.start()
            code = proc.wait()
            for tee in tees:
                tee.join()
            lost = next((t.failure for t in tees if t.failure is not None), None)
            if lost is not None:
                raise _log_lost(run_dir, lost)
            took = time.monotonic() - began
            return Exited(code, proc.pid, tees[1].error, took, received[0] if received else None)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
