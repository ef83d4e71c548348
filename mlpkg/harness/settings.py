"""LoadGen TestSettings for RetinaNet: configuration files, then command-line overrides.

Configuration files (:func:`conf_plan`, a pure function of the LoadGen version):

* LoadGen < 4.1.7 (e.g. 4.0) has no built-in rules: the official mlperf.conf is loaded
  explicitly with ``FromConfig(mlperf_conf, model, scenario)`` (``--mlperf-conf`` or the
  bundled retinanet subset ``mlperf-retinanet.conf``), then ``--user-conf`` if given.
* LoadGen >= 4.1.7 carries mlperf.conf inside; the *first* ``FromConfig`` call of the
  process applies it before reading the file it was given (later calls, even on new
  TestSettings objects, do not, and LoadGen logs "Multiple conf files are used" for them).
  The version-specific fourth argument (``is_mlperf_conf`` in 4.1, ``conf_type`` in 5.x/6.x,
  with opposite meanings) is never passed. So: one call with ``--user-conf``, or, without
  one, with an empty temporary file, so that the built-in rules still apply. A
  ``--mlperf-conf`` given here is loaded (as an extra, later file) on top of the built-in
  one. Checked by experiment on 6.0.17 and in the 4.1.30 source.
* An unknown version is treated like 4.0 (explicit file): the rules then apply either way.

Overrides applied after the files (recorded in ``harness.json`` ``settings.overrides``):
``--time S``: min and max duration S; ``--count N``: min and max query count N (as the
reference); ``--qps Q``: server_target_qps and offline_expected_qps; ``--max-latency S``:
server_target_latency_ns and the MultiStream and SingleStream expected latencies;
``--samples-per-query``: multi_stream_samples_per_query; ``--performance-sample-count``:
performance_sample_count_override. A performance sample count larger than the QSL (e.g.
mlperf.conf's 64 on an 8-image test set) is capped at the QSL's size: LoadGen cannot use
more distinct samples than there are, and crashes when an audit.config then asks for
``performance_issue_unique``.

Short runs (documented deviations, which make such runs INVALID to LoadGen, as they should
be): with ``--time`` but no ``--count``, min_query_count is lowered to 1, or mlperf.conf's
query minimums (Offline 24576, MultiStream 662) would dominate the duration asked for.
Offline and Server without ``--qps``: when the files leave the expected QPS at mlperf.conf's
placeholder 1.0, the harness uses its throughput estimate, so that the Offline query is sized
to the duration and a Server run is loaded near capacity. The estimate comes from a short
concurrent warm-up (:func:`.sut.calibrate`: all workers predicting at once on distinct
samples) rather than from workers / mean latency of the five sequential warm-up predictions:
those repeat one sample, whose data stays in the CPU caches, and ignore contention between
workers; on a memory-bound model the simple formula overestimated the rate five-fold and an
Offline ``--time 1`` run lasted six seconds. Offline's query is sized from 1.25 x that
estimate, and a test shorter than ``--time`` is re-run with a larger query
(:mod:`.duration`). (Offline accuracy runs measure no estimate:
LoadGen sends all samples in one query there; Server accuracy runs do, as it paces their
queries.) Likewise SingleStream and MultiStream with ``--time`` but no ``--max-latency``:
LoadGen pre-generates duration / expected latency queries and ends the run early ("ran out
of generated queries") when the model is faster than mlperf.conf's expectation (10 ms, 528
ms), so the expected latency is lowered to the warm-up's mean latency (times ceil(samples
per query / workers) for MultiStream) when that is lower.

The values set and read back are recorded by :func:`build_settings` (``settings.values``),
because LoadGen offers no other way to see them before the run; an audit.config is applied
by LoadGen inside ``StartTest`` and shows only in its logs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInput

BUNDLED_CONF = Path(__file__).with_name("mlperf-retinanet.conf")
BUILTIN_CONF_SINCE = (4, 1, 7)
PLACEHOLDER_QPS = 1.0  # mlperf.conf's "*.Offline.target_qps = 1.0" (to be set by user.conf)
NS = 1_000_000_000
RECORDED = (
    "min_duration_ms",
    "max_duration_ms",
    "min_query_count",
    "max_query_count",
    "performance_sample_count_override",
    "offline_expected_qps",
    "server_target_qps",
    "server_target_latency_ns",
    "server_target_latency_percentile",
    "single_stream_expected_latency_ns",
    "single_stream_target_latency_percentile",
    "multi_stream_expected_latency_ns",
    "multi_stream_target_latency_percentile",
    "multi_stream_samples_per_query",
    "qsl_rng_seed",
    "sample_index_rng_seed",
    "schedule_rng_seed",
    "accuracy_log_rng_seed",
    "sample_concatenate_permutation",
)


def loadgen_version() -> str:
    """The installed LoadGen's version from its distribution metadata ("unknown" if none)."""
    for dist in ("mlcommons-loadgen", "mlcommons_loadgen", "mlperf-loadgen"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return "unknown"


def parse_version(version: str) -> tuple[int, ...] | None:
    """``"4.1.30"`` -> (4, 1, 30); None if it does not start with a number."""
    m = re.match(r"(\d+(?:\.\d+)*)", version.strip())
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def has_builtin_conf(version: str) -> bool:
    """Whether this LoadGen version applies its built-in mlperf.conf by itself."""
    v = parse_version(version)
    return v is not None and v >= BUILTIN_CONF_SINCE


@dataclass(frozen=True)
class ConfStep:
    """One ``FromConfig`` call: ``path`` None means an empty temporary user conf."""

    role: str  # "mlperf" | "user"
    path: Path | None
    applies_builtin: bool = False  # LoadGen applies its built-in mlperf.conf first

    def describe(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "path": None if self.path is None else str(self.path),
            "applies_builtin_mlperf_conf": self.applies_builtin,
        }


def conf_plan(version: str, mlperf_conf: Path | None, user_conf: Path | None) -> list[ConfStep]:
    """The ``FromConfig`` calls to make, in order, for LoadGen ``version`` (see module doc)."""
    if not has_builtin_conf(version):
        steps = [ConfStep("mlperf", mlperf_conf or BUNDLED_CONF)]
        return steps + ([ConfStep("user", user_conf)] if user_conf else [])
    files = [ConfStep("mlperf", mlperf_conf)] if mlperf_conf else []
    files += [ConfStep("user", user_conf or None)] if user_conf or not files else []
    first = files[0]
    return [ConfStep(first.role, first.path, True), *files[1:]]


@dataclass
class Options:
    """The command-line values that map onto TestSettings."""

    scenario: str
    accuracy: bool = False
    count: int | None = None
    time: float | None = None
    qps: float | None = None
    max_latency: float | None = None
    samples_per_query: int | None = None
    performance_sample_count: int | None = None
    qsl_samples: int | None = None  # samples in the QSL (caps the performance sample count)
    notes: list[str] = field(default_factory=list)


_NUMBER = re.compile(
    r"[+-]?(0[xX][0-9a-fA-F]+|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf(inity)?|nan)",
    re.IGNORECASE,
)


def conf_syntax_error(text: str) -> int | None:
    """The first line LoadGen's configuration parser rejects (1-based), or None. Mirrors its
    rules: whitespace-separated tokens; a ``#`` token before the value ends the line; the
    second token must be ``=``; every value token must be an integer or a float."""
    for nr, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        for pos, token in enumerate(tokens):
            if pos < 2 and token == "#":
                break
            if (pos == 1 and token != "=") or (pos >= 2 and not _NUMBER.fullmatch(token)):
                return nr
    return None


def check_readable(path: Path, what: str) -> None:
    """BadInput unless ``path`` is a readable text file in LoadGen's configuration syntax."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise BadInput(f"cannot read {what} {path} ({reason}).") from None
    line = conf_syntax_error(text)
    if line is not None:
        raise BadInput(
            f"{what} {path} has a line LoadGen cannot parse (line {line}: "
            "lines must be 'model.scenario.key = number' or comments)."
        )


@contextlib.contextmanager
def _conf_file(step: ConfStep) -> Iterator[str]:
    if step.path is not None:
        yield str(step.path)
        return
    fd, name = tempfile.mkstemp(prefix="harness-user-", suffix=".conf")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("# no user settings: LoadGen applies its built-in mlperf.conf\n")
        yield name
    finally:
        os.unlink(name)


def apply_confs(settings: Any, steps: list[ConfStep], model: str, scenario: str) -> None:
    """Run the ``FromConfig`` calls; BadInput if a file is unreadable or LoadGen rejects it."""
    for step in steps:
        if step.path is not None:
            check_readable(step.path, f"LoadGen {step.role} configuration file")
        with _conf_file(step) as path:
            rc = settings.FromConfig(path, model, scenario)
        if rc != 0:
            raise BadInput(
                f"LoadGen rejected configuration file {path} (error {rc}): every line must "
                "be 'model.scenario.key = number' or a comment."
            )


@dataclass(frozen=True)
class Estimates:
    """What the warm-up measured: ``qps`` (throughput of all workers, or None when not
    measured) and ``latency_s`` (mean single-sample latency)."""

    qps: float | None = None
    latency_s: float | None = None
    workers: int = 1
    qps_basis: str = ""  # how ``qps`` was made from the measurement, for the notes


def _expected_latency(opts: Options, settings: Any, est: Estimates) -> dict[str, Any]:
    """Short SingleStream/MultiStream runs: a lower expected latency from the warm-up, so
    LoadGen pre-generates enough queries for the duration (see module doc)."""
    if opts.time is None or opts.max_latency is not None or not est.latency_s:
        return {}
    if opts.scenario == "SingleStream":
        key, seconds = "single_stream_expected_latency_ns", est.latency_s
    elif opts.scenario == "MultiStream":
        spq = opts.samples_per_query or int(settings.multi_stream_samples_per_query)
        key = "multi_stream_expected_latency_ns"
        seconds = est.latency_s * math.ceil(spq / max(1, est.workers))
    else:
        return {}
    ns = max(1, int(seconds * NS))
    if ns >= getattr(settings, key):
        return {}
    opts.notes.append(f"{key} lowered to the warm-up's estimate for a short run: {ns}")
    return {key: ns}


def _overrides(lg: Any, opts: Options, settings: Any, est: Estimates) -> dict[str, Any]:
    """The values to set after the configuration files."""
    o: dict[str, Any] = _expected_latency(opts, settings, est)
    estimated_qps = est.qps
    if opts.time is not None:
        o["min_duration_ms"] = o["max_duration_ms"] = round(opts.time * 1000)
        if opts.count is None:
            o["min_query_count"] = 1
    if opts.count is not None:
        o["min_query_count"] = o["max_query_count"] = opts.count
    if opts.qps is not None:
        o["server_target_qps"] = o["offline_expected_qps"] = float(opts.qps)
    elif estimated_qps and opts.scenario in ("Offline", "Server"):
        key = "offline_expected_qps" if opts.scenario == "Offline" else "server_target_qps"
        if getattr(settings, key) == PLACEHOLDER_QPS:
            o[key] = float(estimated_qps)
            basis = f" ({est.qps_basis})" if est.qps_basis else ""
            opts.notes.append(f"{key} estimated by the warm-up: {estimated_qps:.3f}{basis}")
    if opts.max_latency is not None:
        ns = round(opts.max_latency * NS)
        o["server_target_latency_ns"] = ns
        o["multi_stream_expected_latency_ns"] = ns
        o["single_stream_expected_latency_ns"] = ns
    if opts.samples_per_query is not None:
        o["multi_stream_samples_per_query"] = opts.samples_per_query
    if opts.performance_sample_count is not None:
        o["performance_sample_count_override"] = opts.performance_sample_count
    psc = o.get("performance_sample_count_override", settings.performance_sample_count_override)
    if opts.qsl_samples and psc > opts.qsl_samples:
        o["performance_sample_count_override"] = opts.qsl_samples
        opts.notes.append(
            f"performance_sample_count_override {psc} capped at the {opts.qsl_samples} samples"
        )
    return o


def _value(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


def build_settings(
    lg: Any,
    opts: Options,
    model: str,
    steps: list[ConfStep],
    estimates: Estimates | None = None,
) -> tuple[Any, dict[str, Any]]:
    """A TestSettings for ``opts`` and the record of what was set (for harness.json)."""
    settings = lg.TestSettings()
    apply_confs(settings, steps, model, opts.scenario)
    settings.scenario = getattr(lg.TestScenario, opts.scenario)
    settings.mode = lg.TestMode.AccuracyOnly if opts.accuracy else lg.TestMode.PerformanceOnly
    overrides = _overrides(lg, opts, settings, estimates or Estimates())
    for key, value in overrides.items():
        setattr(settings, key, value)
    values = {k: _value(getattr(settings, k)) for k in RECORDED if hasattr(settings, k)}
    record = {
        "scenario": opts.scenario,
        "mode": "AccuracyOnly" if opts.accuracy else "PerformanceOnly",
        "model_name": model,
        "conf_files": [s.describe() for s in steps],
        "overrides": overrides,
        "values": values,
        "notes": list(opts.notes),
    }
    return settings, record


def performance_sample_count(count: int, override: int | None) -> int:
    """The QSL's performance sample count: ``override`` or min(count, 500) (reference);
    mlperf.conf's performance_sample_count_override (64 for retinanet) still wins in
    LoadGen unless the command line sets it."""
    return override if override else min(count, 500)
