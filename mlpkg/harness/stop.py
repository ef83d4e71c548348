"""Stopping the harness cleanly: SIGINT, SIGTERM and SIGHUP are handled alike.

:func:`install_signal_handlers` (called at the start of :func:`.main.main`) makes each of
them raise KeyboardInterrupt in the main thread, also when the process started with SIGINT
ignored; :func:`interrupted_by` and :func:`interrupt_code` say afterwards which signal came
first and the exit status it gives (128 + its number; Ctrl-C: 130).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
INTERRUPTED_NOTE = (
    "interrupted by {signal}: the test did not run to its end (samples left were answered "
    "empty); the figures under summary and loadgen describe what was done until then and are "
    "not measurements"
)
_caught: list[int] = []  # the stop signals received, in order


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Any stop signal: remember it and stop the main thread as Ctrl-C does."""
    _caught.append(signum)
    raise KeyboardInterrupt


def install_signal_handlers() -> dict[int, Any]:
    """Make SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread (whatever
    the process inherited: a job started with ``&`` from a script starts with SIGINT
    ignored); returns the previous handlers (nothing outside the main thread)."""
    _caught.clear()
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}


def interrupted_by() -> signal.Signals:
    """The first stop signal received (SIGINT when none was recorded)."""
    return signal.Signals(_caught[0] if _caught else signal.SIGINT)


def interrupt_code() -> int:
    """The exit status after an interrupt: 128 + the signal's number (Ctrl-C: 130)."""
    return 128 + int(interrupted_by())
