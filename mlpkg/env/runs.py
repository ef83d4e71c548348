"""Run records: one directory per ``mlpkg run``, under ``$MLPKG_HOME/runs/<run-id>``.

A run directory holds what the app wrote (for the MLPerf harness: LoadGen's log files and
``harness.json``), the app's standard output (``stdout.txt``), the lock of the closure it
ran in (``mlpkg.lock``) and ``result.json``, which unifies everything (format
:data:`RESULT_FORMAT`)::

    format, id, status (running | ok | failed | bad-input | interrupted), exit_code,
    app (the spec asked for), app_path, command, args, started, finished, duration_s,
    output (the directory), lock (the lock document, as a table), machine, and, from the
    app's own report when it writes one (``harness.json``): scenario, mode, settings,
    summary, loadgen, accuracy, errors, session, versions.

``result.json`` is written when the run starts (status ``running``), so a run killed
outright is still listed, and rewritten atomically when it ends. A run given
``--output DIR`` elsewhere is recorded by a symbolic link ``runs/<run-id>`` to it.

Reading a record validates it (:class:`ResultDoc`, pydantic; :mod:`mlpkg.documents`
refuses JSON nested too deep; the models are made in
:func:`_report_model` and :func:`_result_model`): a record that is not format 1 as described is one
:class:`~mlpkg.errors.BadInput` naming its file and field, never a crash later on.
Only the fields something reads are typed; others pass through as they are.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpkg.documents import load_json, validate
from mlpkg.errors import BadInput, FormatVersionError, MlpkgError, StoreError
from mlpkg.store.fs import write_atomic

if TYPE_CHECKING:
    from pydantic import BaseModel

RESULT_FORMAT = 1
RESULT_FILE = "result.json"
APP_REPORT = "harness.json"
# The parts of the app's report that result.json carries at its top level.
REPORT_KEYS = ("scenario", "mode", "model_name", "settings", "summary", "loadgen", "accuracy",
               "errors", "session", "counts")  # fmt: skip


# What new_run_id makes: a run id never names another directory (records are data).
RUN_ID = r"^\d{8}T\d{6}\.\d{3}Z-[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{6}$"


def runs_dir(home: Path) -> Path:
    return home / "runs"


def new_run_id(app_name: str, now: float | None = None) -> str:
    """``<UTC time to the millisecond>-<app>-<random>``: sorts by start time, unique
    without coordination."""
    seconds, millis = divmod(int((time.time() if now is None else now) * 1000), 1000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{millis:03d}Z"
    return f"{stamp}-{app_name}-{secrets.token_hex(3)}"


def machine() -> dict[str, Any]:
    """What the run ran on: enough to compare two results, nothing secret."""
    info: dict[str, Any] = {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_bytes"] = pages * size
    except (OSError, ValueError):
        pass
    with contextlib.suppress(AttributeError, OSError):
        info["affinity"] = len(os.sched_getaffinity(0))
    return info


def write_json(file: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` atomically (a reader never sees half a file)."""
    write_atomic(file, json.dumps(doc, indent=2, sort_keys=True) + "\n")


APP_REPORT_FORMAT = 1


@functools.cache
def _report_model() -> type[BaseModel]:
    """The pydantic model of the app report's fields that result.json carries
    (:data:`REPORT_KEYS`; other keys pass through unchecked). The models are made on first
    use: the CLI imports this module at start, and pydantic takes a tenth of a second to
    import."""
    from pydantic import BaseModel, ConfigDict, Field

    class _Open(BaseModel):
        """A table whose other keys pass through unchecked."""

        model_config = ConfigDict(extra="allow")

    class _Accuracy(_Open):
        mAP: float | None = None

    class _LoadGen(_Open):
        result: str | None = None
        samples_per_second: float | None = None
        latency_ns: dict[str, Any] = Field(default_factory=dict)

    class _Summary(_Open):
        line: str | None = None

    class _Report(_Open):
        status: str | None = None
        scenario: str | None = None
        mode: str | None = None
        model_name: str | None = None
        settings: dict[str, Any] | None = None
        summary: _Summary | None = None
        loadgen: _LoadGen | None = None
        accuracy: _Accuracy | None = None
        errors: dict[str, Any] | None = None
        session: dict[str, Any] | None = None
        counts: dict[str, Any] | None = None
        format: int | None = None

    return _Report


@functools.cache
def _result_model() -> type[BaseModel]:
    """The pydantic model of ``result.json``, format 1 (see the module docstring)."""
    from pydantic import BaseModel, ConfigDict, Field

    report: Any = _report_model()

    class _Lock(BaseModel):
        model_config = ConfigDict(extra="allow")
        node: list[dict[str, Any]] = Field(default_factory=list)

    class ResultDoc(report):  # type: ignore[misc]
        format: int
        id: str
        status: str
        exit_code: int | None = None
        app: str | None = None
        app_path: str | None = None
        command: list[str] = Field(default_factory=list)
        args: list[str] = Field(default_factory=list)
        overrides: dict[str, str] = Field(default_factory=dict)
        lockfile: str | None = None
        started: float | None = None
        finished: float | None = None
        duration_s: float | None = None
        output: str | None = None
        error: str | None = None
        pid: int | None = None
        mlpkg_pid: int | None = None
        machine: dict[str, Any] = Field(default_factory=dict)
        lock: _Lock | None = None
        versions: dict[str, Any] = Field(default_factory=dict)

    model: type[BaseModel] = ResultDoc
    return model


def read_app_report(run_dir: Path) -> dict[str, Any] | None:
    """The app's own report (``harness.json``, format 1), or None when it wrote none, a
    bad one (not valid JSON, nested too deep, or with a field of the wrong type), or one of a
    format this mlpkg does not read (its fields are then left out of result.json rather
    than guessed at)."""
    file = run_dir / APP_REPORT
    try:
        doc = load_json(file.read_text(encoding="utf-8"), str(file))
        if not isinstance(doc, dict) or doc.get("format") != APP_REPORT_FORMAT:
            return None
        return validate(_report_model(), doc, str(file), "app report").model_dump(
            exclude_unset=True
        )
    except (OSError, ValueError, BadInput):
        return None


@dataclass(frozen=True)
class RunRecord:
    id: str
    dir: Path
    result: dict[str, Any]

    @property
    def status(self) -> str:
        """The recorded status; ``died`` for a run still marked running whose mlpkg and
        app processes are both gone (mlpkg was killed before it could finish the record)."""
        status = str(self.result.get("status", "unknown"))
        if status == "running" and not any(
            _alive(self.result.get(k)) for k in ("mlpkg_pid", "pid")
        ):
            return "died"
        return status


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or not 0 < pid < 1 << 31:  # a record's pid is data
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_record(entry: Path) -> RunRecord:
    """The record of one run directory, validated (:class:`ResultDoc`; its ``result`` holds
    the values as validated). StoreError if its result.json cannot be read;
    FormatVersionError if it is of another format; BadInput (naming the file, and the
    field where one is at fault) if it is empty, truncated, nested too deep or wrongly
    typed."""
    file = entry / RESULT_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise StoreError(f"The run record {file} is unreadable: {e}.", file=str(file)) from None
    try:
        doc = load_json(text, str(file))
    except ValueError as e:
        what = "empty" if not text.strip() else f"not valid JSON ({e})"
        raise BadInput(
            f"{file} is {what}: a run record cut short (written during a crash?).", file=str(file)
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise FormatVersionError(
            f"{file} has result format {found}; this mlpkg reads format {RESULT_FORMAT}.",
            file=str(file),
        )
    valid = validate(_result_model(), doc, str(file), f"run record (format {RESULT_FORMAT})")
    return RunRecord(entry.name, entry.resolve(), valid.model_dump(exclude_unset=True))


def list_runs(home: Path) -> tuple[list[RunRecord], list[str]]:
    """Every readable, valid run, oldest first, and a sentence (naming the file) for each
    other one: one bad record never hides the others."""
    root = runs_dir(home)
    records: list[RunRecord] = []
    problems: list[str] = []
    if not root.is_dir():
        return records, problems
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        try:
            records.append(read_record(entry))
        except MlpkgError as e:
            problems.append(e.message)
    return records, problems


def matching_ids(names: list[str], ref: str, latest: str) -> list[str]:
    """The ids among ``names`` (sorted, oldest first) that ``ref`` means: the newest for
    the word ``latest``, else the one equal to it, else those it is a prefix of."""
    if ref == latest and names:
        return [names[-1]]
    return [n for n in names if n == ref] or [n for n in names if n.startswith(ref)]


def find_run(home: Path, run_id: str) -> RunRecord:
    """The run whose id is ``run_id`` or starts with it (unambiguously); ``latest`` is
    the newest run."""
    root = runs_dir(home)
    names = sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) \
        if root.is_dir() else []  # fmt: skip
    matches = matching_ids(names, run_id, "latest")
    if len(matches) != 1:
        what = "There is no run" if not matches else f"There are {len(matches)} runs"
        raise BadInput(
            f"{what} with the id {run_id!r} in {root}.",
            hint="`mlpkg runs list` shows the runs.",
            field="ID",
        )
    return read_record(root / matches[0])


def _number(value: object) -> float | None:
    """``value`` as a float; None when it is not a number or an integer too big for one."""
    if not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # a record's integer may have hundreds of digits
        return None


def headline(result: dict[str, Any]) -> str:
    """The figure a list shows for a run: its mAP, or LoadGen's throughput and verdict.
    Figures that are not numbers are passed over (never an error)."""
    accuracy = result.get("accuracy")
    if isinstance(accuracy, dict) and (m_ap := _number(accuracy.get("mAP"))) is not None:
        return f"mAP={m_ap * 100:.3f}%"
    loadgen = result.get("loadgen")
    if result.get("status") == "interrupted":  # its figures are not measurements
        return "(interrupted)"
    if not isinstance(loadgen, dict) or not loadgen.get("result"):
        return ""
    verdict = str(loadgen["result"])
    if (rate := _number(loadgen.get("samples_per_second"))) is not None:
        return f"{rate:.2f} samples/s {verdict}"
    latency = loadgen.get("latency_ns")
    for key in ("p99.00", "p90.00", "mean"):
        if isinstance(latency, dict) and (ns := _number(latency.get(key))) is not None:
            return f"{key} latency {ns / 1e6:.2f} ms {verdict}"
    return verdict
