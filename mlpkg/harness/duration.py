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
   test again in the same process with the expected QPS grown from the rate measured:
   ``max(qps x MIN_GROWTH, SHORTFALL_MARGIN x samples / lasted)``, where ``samples`` is
   the size of the query LoadGen issued (which ``--count N`` or a user.conf
   ``min_query_count`` may have floored above ``1.1 x S x qps``) and ``lasted`` the
   test's length as LoadGen measured it (its maximum latency: Offline's one query is
   issued at the start); ``qps x MIN_GROWTH`` when either is unknown. At most
   :data:`MAX_ATTEMPTS` tests; each short one's LoadGen logs are kept in ``attempt-N/`` of
   the output directory (those of an earlier run in the same directory are removed first:
   :func:`clear_attempts`) and described in the settings' notes and ``attempts``. The
   recorded test (logs, figures, verdict) is the last one, which lasted at least ``S``
   unless every attempt was short (then LoadGen's INVALID stands, and a note says so).

A test is not re-run when samples failed in it (a failing sample is answered at once,
so the test is short for that reason; the failures are the run's result), nor when the
next query would be no larger than this one (LoadGen's query is
``max(min_query_count, 1.1 x S x qps)``: :func:`query_size`).

Runs without ``--time`` (mlperf.conf's ten minutes, a submission) are never re-run: the
official rules size those from the user's target QPS.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import parse_summary

OFFLINE_MARGIN = 1.25  # the warm-up's estimate x this sizes the first query
MAX_ATTEMPTS = 5  # LoadGen tests in one run, the first included
MIN_GROWTH = 2.0  # each re-run's query is at least this much larger
SHORTFALL_MARGIN = 1.5  # on top of the shortfall measured
NS = 1e9
SLACK = 1.1  # LoadGen's Offline query: max(min_query_count, SLACK x duration x qps)
ATTEMPT_DIR = re.compile(r"attempt-[0-9]+")


def applies(scenario: str, accuracy: bool, seconds: float | None, audit: bool = False) -> bool:
    """Whether a short test is re-run: Offline, performance mode, ``--time`` given, no
    audit.config (a compliance test such as TEST01's ``performance_issue_unique`` fixes
    the query's size itself)."""
    return scenario == "Offline" and not accuracy and seconds is not None and not audit


@dataclass(frozen=True)
class Short:
    """A test that missed its minimum duration: how long it lasted (s, LoadGen's maximum
    latency) and how many samples its query had, each None when the summary does not say."""

    lasted: float | None
    samples: int | None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def short_test(summary: dict[str, Any] | None) -> Short | None:
    """The short test's figures, or None if it met its minimum duration (or the summary
    says nothing either way)."""
    if not summary or summary.get("fields", {}).get("Min duration satisfied") != "NO":
        return None
    lasted = _number((summary.get("latency_ns") or {}).get("max"))
    samples = _number((summary.get("parameters") or {}).get("samples_per_query"))
    return Short(
        None if lasted is None or lasted <= 0 else lasted / NS,
        None if samples is None or samples <= 0 else int(samples),
    )


def grown_qps(qps: float, lasted: float | None, samples: int | None) -> float:
    """The expected QPS of the next attempt after a short test of ``samples`` samples that
    lasted ``lasted`` s: SHORTFALL_MARGIN x the rate measured, at least MIN_GROWTH x
    ``qps`` (only that when the rate is unknown)."""
    grown = qps * MIN_GROWTH
    if lasted and samples:
        grown = max(grown, SHORTFALL_MARGIN * samples / lasted)
    return grown


def query_size(qps: float, seconds: float, min_query_count: int) -> int:
    """The size LoadGen gives Offline's one query (as test_settings_internal.cc)."""
    return max(int(min_query_count), int(SLACK * seconds * qps))


def clear_attempts(output: Path) -> None:
    """Remove ``attempt-N/`` directories an earlier run left in ``output`` (so that every
    one there is this run's)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in output.iterdir():
            if ATTEMPT_DIR.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)


def keep_attempt(output: Path, attempt: int, log_files: tuple[str, ...]) -> Path:
    """Move a short test's LoadGen logs into ``output/attempt-N`` (so the next test
    writes fresh ones); returns that directory."""
    kept = output / f"attempt-{attempt}"
    kept.mkdir(exist_ok=True)
    for name in log_files:
        with contextlib.suppress(FileNotFoundError):
            os.replace(output / name, kept / name)
    return kept


def attempt_note(attempt: int, qps: float, short: Short, seconds: float, nxt: float) -> str:
    """The settings note of one short attempt."""
    return (
        f"attempt {attempt}: offline_expected_qps {qps:.3f} gave a test of {_fmt(short)} "
        f"< {seconds:g} s (Min duration satisfied: NO; logs in attempt-{attempt}/); "
        f"re-run with offline_expected_qps {nxt:.3f}"
    )


def _fmt(short: Short) -> str:
    lasted = "an unknown length" if short.lasted is None else f"{short.lasted:.3f} s"
    return lasted if short.samples is None else f"{short.samples} samples in {lasted}"


def run_tests(
    test: Callable[[], bool],
    settings: Any,
    seconds: float,
    output: Path,
    log_files: tuple[str, ...],
    notes: list[str],
    between: Callable[[], None],
    failed: Callable[[], int] = lambda: 0,
    attempts: list[dict[str, Any]] | None = None,
) -> bool:
    """Run ``test`` (one LoadGen test; True when it should not be repeated: interrupted,
    LoadGen failed) until it lasts ``seconds`` or :data:`MAX_ATTEMPTS` tests have run,
    growing ``settings.offline_expected_qps`` in between (module doc); ``between`` resets
    what the SUT counted; ``failed`` says how many samples failed in the test just run (no
    re-run then). Short attempts are noted in ``notes``; every test's qps, samples,
    seconds and whether it met the duration are appended to ``attempts``. Returns
    ``test``'s last answer."""
    record = [] if attempts is None else attempts
    min_count = int(getattr(settings, "min_query_count", 1) or 1)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        qps = float(settings.offline_expected_qps)
        stop = test()
        summary = parse_summary(output / "mlperf_log_summary.txt")
        short = short_test(summary)
        params = (summary or {}).get("parameters", {})
        latency = (summary or {}).get("latency_ns") or {}
        lasted = _number(latency.get("max"))
        samples = _number(params.get("samples_per_query"))
        record.append(
            {
                "attempt": attempt,
                "offline_expected_qps": qps,
                "samples": None if samples is None else int(samples),
                "seconds": None if lasted is None else lasted / NS,
                "min_duration_met": None if summary is None else short is None,
            }
        )
        if stop:
            return True
        if short is None:
            if attempt > 1:
                notes.append(f"attempt {attempt}: the test met its minimum duration (recorded)")
            return False
        errors = failed()
        nxt = grown_qps(qps, short.lasted, short.samples)
        size = short.samples
        grows = size is None or query_size(nxt, seconds, min_count) > size
        if errors or attempt == MAX_ATTEMPTS or not grows:
            if errors:
                why = f"{errors} sample(s) failed, not re-run"
            elif attempt == MAX_ATTEMPTS:
                why = f"{attempt} attempts made"
            else:
                why = f"a re-run's query would not grow (min_query_count {min_count})"
            notes.append(
                f"attempt {attempt}: the test ({_fmt(short)}) was shorter than "
                f"{seconds:g} s; {why}, this one is recorded (INVALID)"
            )
            return False
        keep_attempt(output, attempt, log_files)
        notes.append(attempt_note(attempt, qps, short, seconds, nxt))
        settings.offline_expected_qps = nxt
        between()
    return False
