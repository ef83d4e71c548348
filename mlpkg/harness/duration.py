"""Short Offline runs last what they ask: the estimate's margin and the re-run rule.

LoadGen's Offline test issues one query of about ``offline_expected_qps x min_duration x
1.1`` samples and ends when the last one is answered; an expected QPS below the rate the
test then runs at makes it shorter than the duration asked for ("Min duration satisfied:
NO"). No estimate made before the test can rule that out (the machine may be busier
during the warm-up than during the test), so for an Offline performance run with
``--time S`` the harness:

1. sizes the query from :data:`OFFLINE_MARGIN` x the warm-up's throughput estimate (or
   from ``--qps`` / a user.conf value, as given), and
2. when LoadGen's summary says the minimum duration was not met, runs the performance
   test again in the same process with the query grown by the measured shortfall:
   ``qps x max(MIN_GROWTH, SHORTFALL_MARGIN x S / lasted)``, where ``lasted`` is the
   test's length as LoadGen measured it (its maximum latency: Offline's one query is
   issued at the start). At most :data:`MAX_ATTEMPTS` tests; each short one's LoadGen logs
   are kept in ``attempt-N/`` of the output directory and described in the settings'
   notes. The recorded test (logs, figures, verdict) is the last one, which lasted at least
   ``S`` unless every attempt was short (then LoadGen's INVALID stands, and a note says so).

Runs without ``--time`` (mlperf.conf's ten minutes, a submission) are never re-run: the
official rules size those from the user's target QPS.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .report import parse_summary

OFFLINE_MARGIN = 1.25  # the warm-up's estimate x this sizes the first query
MAX_ATTEMPTS = 5  # LoadGen tests in one run, the first included
MIN_GROWTH = 2.0  # each re-run's query is at least this much larger
SHORTFALL_MARGIN = 1.5  # on top of the shortfall measured
NS = 1e9


def applies(scenario: str, accuracy: bool, seconds: float | None, audit: bool = False) -> bool:
    """Whether a short test is re-run: Offline, performance mode, ``--time`` given, no
    audit.config (a compliance test such as TEST01's ``performance_issue_unique`` fixes
    the query's size itself)."""
    return scenario == "Offline" and not accuracy and seconds is not None and not audit


def short_test(summary: dict[str, Any] | None) -> float | None:
    """How long a test that missed its minimum duration lasted (s, LoadGen's maximum
    latency), or None if it met it (or the summary says nothing either way)."""
    if not summary or summary.get("fields", {}).get("Min duration satisfied") != "NO":
        return None
    latency = summary.get("latency_ns") or {}
    lasted = latency.get("max")
    return max(1e-6, float(lasted) / NS) if isinstance(lasted, (int, float)) else 1e-6


def grown_qps(qps: float, lasted: float, seconds: float) -> float:
    """The expected QPS of the next attempt after a test of ``lasted`` s for ``seconds``."""
    return qps * max(MIN_GROWTH, SHORTFALL_MARGIN * seconds / max(lasted, 1e-6))


def keep_attempt(output: Path, attempt: int, log_files: tuple[str, ...]) -> Path:
    """Move a short test's LoadGen logs into ``output/attempt-N`` (so the next test
    writes fresh ones); returns that directory."""
    kept = output / f"attempt-{attempt}"
    kept.mkdir(exist_ok=True)
    for name in log_files:
        with contextlib.suppress(FileNotFoundError):
            os.replace(output / name, kept / name)
    return kept


def attempt_note(attempt: int, qps: float, lasted: float, seconds: float, nxt: float) -> str:
    """The settings note of one short attempt."""
    return (
        f"attempt {attempt}: offline_expected_qps {qps:.3f} gave a test of {lasted:.3f} s "
        f"< {seconds:g} s (Min duration satisfied: NO; logs in attempt-{attempt}/); "
        f"re-run with offline_expected_qps {nxt:.3f}"
    )


def run_tests(
    test: Callable[[], bool],
    settings: Any,
    seconds: float,
    output: Path,
    log_files: tuple[str, ...],
    notes: list[str],
    between: Callable[[], None],
) -> bool:
    """Run ``test`` (one LoadGen test; True when it should not be repeated: interrupted,
    LoadGen failed) until it lasts ``seconds`` or :data:`MAX_ATTEMPTS` tests have run,
    growing ``settings.offline_expected_qps`` in between (module doc); ``between`` resets
    what the SUT counted. Short attempts are noted in ``notes``. Returns ``test``'s last
    answer."""
    size = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        stop = test()
        if stop:
            return True
        summary = parse_summary(output / "mlperf_log_summary.txt")
        lasted = short_test(summary)
        if lasted is None:
            if attempt > 1:
                notes.append(f"attempt {attempt}: the test met its minimum duration (recorded)")
            return False
        last_size, size = size, (summary or {}).get("parameters", {}).get("samples_per_query")
        if attempt == MAX_ATTEMPTS or size == last_size:
            why = "the query did not grow" if size == last_size else f"{attempt} attempts made"
            notes.append(
                f"attempt {attempt}: the test lasted {lasted:.3f} s < {seconds:g} s; "
                f"{why}, this one is recorded (INVALID)"
            )
            return False
        qps = float(settings.offline_expected_qps)
        nxt = grown_qps(qps, lasted, seconds)
        keep_attempt(output, attempt, log_files)
        notes.append(attempt_note(attempt, qps, lasted, seconds, nxt))
        settings.offline_expected_qps = nxt
        between()
    return False
