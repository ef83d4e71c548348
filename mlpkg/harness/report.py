"""Results: LoadGen's ``mlperf_log_summary.txt`` and the reference's one-line summary.

:func:`parse_summary` reads the summary file into ``result`` (``VALID``/``INVALID``),
``samples_per_second`` (Offline "Samples per second", Server "Completed samples per
second", SingleStream "QPS w/ loadgen overhead"; MultiStream has none: its per-sample
rate is samples per query / mean query latency), the latency statistics in ns, the
"Test Parameters Used", and every other ``key : value`` line under ``fields``.

:func:`reference_line` is the reference ``main.py``'s ``add_results`` line::

    TestScenario.Offline qps=0.89, mean=8.6960, time=11.180, acc=31.661%, mAP=65.417%,
    queries=10, tiles=50.0:8.8280,80.0:9.0455,90.0:9.1450,95.0:9.2375,99.0:9.3114,99.9:9.3281

(one line): ``queries`` = samples answered successfully; ``mean`` and the percentiles
(numpy's linear interpolation) of their latencies in seconds, from the sample's hand-over to
the workers in ``issue_queries`` (the reference's ``Item`` creation: in Offline a sample
waits there until the queue of 4 x workers has room) to the answer; ``time`` = seconds from
LoadGen's last sample load to the end of the test (the reference also counts its mAP
computation in accuracy mode; the harness does not); ``qps = queries / time``. ``acc=``
and ``mAP=`` appear in accuracy mode only (see :class:`.postprocess.LabelHits` for what
``acc`` measures).

:func:`say` prints a line for the command: when the reader of stdout or stderr is gone (a
closed pipe: ``EPIPE``; a terminal hung up: ``EIO``), the line is dropped and the stream is
pointed at ``/dev/null``, so that neither later lines nor the interpreter's final flush
fail; the harness goes on (and writes its harness.json) as if the line had been read.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

PERCENTILES = (50.0, 80.0, 90.0, 95.0, 99.0, 99.9)
_LATENCY = re.compile(r"^(Min|Max|Mean|[\d.]+ percentile) latency \(ns\)$")
_RATE_KEYS = ("Samples per second", "Completed samples per second", "QPS w/ loadgen overhead")


def _number(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _per_sample_rate(samples_per_query: object, mean_ns: object) -> float | None:
    """MultiStream's samples per second, or None unless both figures are finite positive
    numbers (the file is LoadGen's, but a truncated or edited one must not stop the run's
    report: ``Mean latency (ns) : abc``, ``0``, or 400 digits)."""
    numbers = []
    for value in (samples_per_query, mean_ns):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        try:
            number = float(value)
        except OverflowError:
            return None
        if not 0 < number < math.inf:
            return None
        numbers.append(number)
    rate = numbers[0] / (numbers[1] / 1e9)
    return rate if rate < math.inf else None


def parse_summary(path: Path) -> dict[str, Any] | None:
    """The figures of a LoadGen summary file; None if it does not exist or holds no
    ``Result is`` line (empty: the test did not end; accuracy mode: LoadGen writes no
    result there)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields: dict[str, Any] = {}
    latency: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line in ("MLPerf Results Summary", "Additional Stats", "Test Parameters Used"):
            section = line
            continue
        if " : " not in line and not re.search(r"\S:\s", line):
            continue
        key, _, value = line.partition(":") if " : " not in line else line.partition(" : ")
        key, value = key.strip(), value.strip()
        m = _LATENCY.match(key)
        if m:
            name = m.group(1).lower().replace(" percentile", "")
            latency[name if name in ("min", "max", "mean") else f"p{name}"] = _number(value)
        elif section == "Test Parameters Used":
            parameters[key] = _number(value)
        else:
            fields.setdefault(key, _number(value))
    if "Result is" not in fields:
        return None
    rate = next((fields[k] for k in _RATE_KEYS if k in fields), None)
    spq, mean = parameters.get("samples_per_query"), latency.get("mean")
    if rate is None and fields.get("Scenario") == "MultiStream":
        rate = _per_sample_rate(spq, mean)
    return {
        "result": fields.get("Result is"),
        "scenario": fields.get("Scenario"),
        "mode": fields.get("Mode"),
        "samples_per_second": rate if isinstance(rate, (int, float)) else None,
        "latency_ns": latency,
        "parameters": parameters,
        "fields": fields,
    }


def reference_line(
    scenario: str,
    latencies: list[float],
    took: float,
    acc: float | None = None,
    map_fraction: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """The reference's one-line summary and its figures (``acc`` in percent, ``mAP`` as a
    fraction; both None outside accuracy mode)."""
    n = len(latencies)
    values = np.percentile(latencies, PERCENTILES).tolist() if n else [0.0] * len(PERCENTILES)
    mean = float(np.mean(latencies)) if n else 0.0
    qps = n / took if took > 0 else 0.0
    tiles = ",".join(f"{p}:{v:.4f}" for p, v in zip(PERCENTILES, values))
    acc_str = ""
    if acc is not None:
        acc_str = f", acc={acc:.3f}%"
    if map_fraction is not None:
        acc_str += f", mAP={100.0 * map_fraction:.3f}%"
    line = (
        f"TestScenario.{scenario} qps={qps:.2f}, mean={mean:.4f}, time={took:.3f}"
        f"{acc_str}, queries={n}, tiles={tiles}"
    )
    figures = {
        "qps": qps,
        "mean": mean,
        "time": took,
        "queries": n,
        "percentiles": {str(p): v for p, v in zip(PERCENTILES, values)},
        "acc": acc,
        "mAP": None if map_fraction is None else 100.0 * map_fraction,
    }
    return line, figures


def _reader_gone(e: OSError) -> bool:
    return isinstance(e, BrokenPipeError) or e.errno in (errno.EPIPE, errno.EIO)


def _discard(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at /dev/null (its reader is gone); what is still
    buffered goes there too."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    with contextlib.suppress(OSError, ValueError):
        stream.flush()


def say(text: str, err: bool = False) -> None:
    """Print ``text`` on stdout (stderr if ``err``) and flush; a reader that is gone is
    ignored (see the module doc)."""
    stream = sys.stderr if err else sys.stdout
    try:
        print(text, file=stream, flush=True)
    except OSError as e:
        if not _reader_gone(e):
            raise
        _discard(stream)


def flush_streams() -> None:
    """Flush stdout and stderr (before ``os._exit``, and at the end), ignoring a reader
    that is gone."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError as e:
            if not _reader_gone(e):
                raise
            _discard(stream)
