"""Experiment records: one directory per ``mlpkg sweep``, under
``$MLPKG_HOME/experiments/<experiment-id>``, holding ``experiment.json`` (format
:data:`EXPERIMENT_FORMAT`)::

    format, id, app (the spec swept), created, updated, status (planned | running | ok |
    failed | interrupted), mlpkg_pid, matrix {with: {NAME: [SPEC, ...]}, arg: {OPTION:
    [VALUE, ...]}, repeat, args (the app's fixed options), jobs}, points [...]

A *point* is one run of the matrix: a *cell* (one value of every ``--with`` and ``--arg``
dimension) and a repeat number. Each point records::

    index, cell {"with.NAME": SPEC, "arg.OPTION": VALUE}, repeat, overrides {NAME: SPEC},
    args (what the run is given: the fixed options, then --OPTION VALUE of the cell),
    app_path (the store path its closure roots in, once planned), run (its run id, once
    started), status (pending | ok | failed | bad-input | interrupted | not-built), error
    (one line), timings {plan_s, run_s, overhead_s}

The run itself is an ordinary run (``runs/<run-id>``, :mod:`mlpkg.env.runs`); the
experiment only points at it. ``experiment.json`` is rewritten atomically after every
point, so an interrupted sweep leaves a record that ``mlpkg sweep --resume`` continues.

Experiment ids are ``exp-`` and a run-id-like stamp (``exp-<UTC time>-<app>-<random>``),
so that they sort by time and never look like a run id. Reading validates the document
(pydantic): another format is one :class:`~mlpkg.errors.FormatVersionError`, anything
malformed one :class:`~mlpkg.errors.BadInput`, each naming the file.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpkg.documents import load_json, validate
from mlpkg.env import runs
from mlpkg.errors import BadInput, FormatVersionError, MlpkgError

if TYPE_CHECKING:
    from pydantic import BaseModel

EXPERIMENT_FORMAT = 1
EXPERIMENT_FILE = "experiment.json"
ID_PREFIX = "exp-"
CELL_KEY = r"^(with|arg)\.[A-Za-z0-9][A-Za-z0-9._-]*$"  # with.NAME or arg.OPTION


def experiments_dir(home: Path) -> Path:
    return home / "experiments"


def new_experiment_id(app_name: str) -> str:
    return ID_PREFIX + runs.new_run_id(app_name)


@dataclass
class Point:
    """One run of the matrix (see the module docstring)."""

    index: int
    cell: dict[str, str]
    repeat: int
    overrides: dict[str, str]
    args: list[str]
    app_path: str | None = None
    run: str | None = None
    status: str = "pending"
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The cell as a user reads it: ``onnxruntime=onnxruntime@1.17.3 threads=2``."""
        return cell_label(self.cell)


def cell_label(cell: dict[str, str]) -> str:  # keys: CELL_KEY
    """``NAME=SPEC ... OPTION=VALUE ...``: the inputs first, then the options (each in
    name order: experiment.json keeps its keys sorted)."""
    keys = sorted(cell, key=lambda k: (not k.startswith("with."), k))
    return " ".join(f"{k.split('.', 1)[1]}={cell[k]}" for k in keys) or "(one cell)"


@dataclass
class Experiment:
    """An experiment record; :meth:`save` writes it (atomically) into :attr:`dir`."""

    id: str
    dir: Path
    app: str
    matrix: dict[str, Any]
    points: list[Point]
    created: float = field(default_factory=time.time)
    updated: float | None = None
    status: str = "planned"
    mlpkg_pid: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": EXPERIMENT_FORMAT, "id": self.id, "app": self.app,
            "created": self.created, "updated": self.updated, "status": self.status,
            "mlpkg_pid": self.mlpkg_pid, "matrix": self.matrix,
            "points": [asdict(p) for p in self.points],
        }  # fmt: skip

    def save(self) -> None:
        self.updated = time.time()
        self.dir.mkdir(parents=True, exist_ok=True)
        runs.write_json(self.dir / EXPERIMENT_FILE, self.to_json())

    def cells(self) -> list[list[Point]]:
        """The points grouped by cell, in matrix order (the repeats of each together)."""
        grouped: dict[tuple[tuple[str, str], ...], list[Point]] = {}
        for point in self.points:
            grouped.setdefault(tuple(point.cell.items()), []).append(point)
        return list(grouped.values())


@functools.cache
def _model() -> type[BaseModel]:
    """The pydantic model of experiment.json, format 1."""
    from typing import Annotated

    from pydantic import BaseModel, ConfigDict, Field

    class _Point(BaseModel):
        model_config = ConfigDict(extra="forbid")
        index: int
        cell: dict[Annotated[str, Field(pattern=CELL_KEY)], str]
        repeat: int
        overrides: dict[str, str]
        args: list[str]
        app_path: str | None = None
        run: Annotated[str, Field(pattern=runs.RUN_ID)] | None = None
        status: str
        error: str | None = None
        timings: dict[str, float] = Field(default_factory=dict)

    class _Matrix(BaseModel):
        model_config = ConfigDict(extra="allow")
        with_: dict[str, list[str]] = Field(default_factory=dict, alias="with")
        arg: dict[str, list[str]] = Field(default_factory=dict)
        repeat: int = 1
        args: list[str] = Field(default_factory=list)
        jobs: int = 1

    class ExperimentDoc(BaseModel):
        model_config = ConfigDict(extra="allow")
        format: int
        id: Annotated[str, Field(pattern=f"^{ID_PREFIX}" + runs.RUN_ID[1:])]
        app: str
        created: float
        updated: float | None = None
        status: str
        mlpkg_pid: int | None = None
        matrix: _Matrix
        points: list[_Point]

    return ExperimentDoc


def read_experiment(directory: Path) -> Experiment:
    """The experiment recorded in ``directory`` (see the module docstring for the errors)."""
    file = directory / EXPERIMENT_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"The experiment record {file} is unreadable: {e}.", file=str(file)) \
            from None  # fmt: skip
    try:
        doc = load_json(text, str(file))
    except ValueError as e:
        raise BadInput(f"{file} is not valid JSON ({e}).", file=str(file)) from None
    if not isinstance(doc, dict) or "format" not in doc:
        raise BadInput(f"{file} is not an experiment record (no format field).", file=str(file))
    if doc.get("format") != EXPERIMENT_FORMAT:
        found = doc.get("format")
        raise FormatVersionError(
            f"{file} has experiment format {found}; this mlpkg reads format {EXPERIMENT_FORMAT}.",
            file=str(file),
        )
    valid = validate(_model(), doc, str(file), f"experiment record (format {EXPERIMENT_FORMAT})")
    data = valid.model_dump(by_alias=True)
    points = [Point(**p) for p in data["points"]]
    return Experiment(
        id=data["id"], dir=directory.resolve(), app=data["app"], matrix=data["matrix"],
        points=points, created=data["created"], updated=data["updated"],
        status=data["status"], mlpkg_pid=data["mlpkg_pid"],
    )  # fmt: skip


def experiment_ids(home: Path) -> list[str]:
    root = experiments_dir(home)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.startswith(ID_PREFIX))


def find_experiment(home: Path, ref: str) -> Experiment:
    """The experiment in the directory ``ref`` (one holding experiment.json), or whose id
    is ``ref`` or starts with it (unambiguously); ``exp-latest`` is the newest one.
    BadInput when none or several match."""
    if (Path(ref) / EXPERIMENT_FILE).is_file():
        return read_experiment(Path(ref))
    names = experiment_ids(home)
    root = experiments_dir(home)
    matches = runs.matching_ids(names, ref, f"{ID_PREFIX}latest")
    if len(matches) != 1:
        what = "There is no experiment" if not matches else \
            f"There are {len(matches)} experiments"  # fmt: skip
        raise BadInput(f"{what} with the id {ref!r} in {root}.",
                       hint="`mlpkg sweep` prints the id of the experiment it makes.",
                       field="EXP")  # fmt: skip
    return read_experiment(root / matches[0])


@contextlib.contextmanager
def lock(exp: Experiment) -> Iterator[None]:
    """Hold the experiment's lock (``.lock`` in its directory) while a sweep records it:
    a second ``mlpkg sweep --resume`` of it is refused rather than measuring beside the
    first. The lock goes with the process, however it ends (an ``flock``)."""
    from mlpkg.store.locks import FileLock

    exp.dir.mkdir(parents=True, exist_ok=True)
    held = FileLock(exp.dir / ".lock")
    if not held.acquire(blocking=False):
        held.release()
        raise BadInput(
            f"The experiment {exp.id} is being run by another mlpkg (process "
            f"{exp.mlpkg_pid}); wait for it or stop it first.",
            field="--resume",
        )
    try:
        yield
    finally:
        held.release()


def list_experiments(home: Path) -> tuple[list[Experiment], list[str]]:
    """Every readable experiment, oldest first, and a sentence (naming the file) for each
    other one: one bad record never hides the others."""
    found: list[Experiment] = []
    problems: list[str] = []
    for name in experiment_ids(home):
        try:
            found.append(read_experiment(experiments_dir(home) / name))
        except MlpkgError as e:
            problems.append(e.message)
    return found, problems


def status_of(exp: Experiment) -> str:
    """The recorded status; ``died`` for one still marked running whose lock nobody holds
    (the sweep was killed before it could finish the record: ``--resume`` continues it)."""
    if exp.status != "running":
        return exp.status
    from mlpkg.store.locks import FileLock

    probe = FileLock(exp.dir / ".lock")
    try:
        free = probe.acquire(blocking=False)
    except OSError:
        return exp.status
    finally:
        probe.release()
    return "died" if free else exp.status
