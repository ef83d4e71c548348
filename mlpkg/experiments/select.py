"""What ``mlpkg runs compare|report|export REF...`` are about: references to runs and
experiments, turned into :class:`Group` s of run records.

A reference is, in this order of trial:

* a path to a run directory (holding ``result.json``) or an experiment directory (holding
  ``experiment.json``);
* an experiment id (they start with ``exp-``), a unique prefix of one, or ``exp-latest``;
* a run id, a unique prefix of one, or ``latest`` (:func:`mlpkg.env.runs.find_run`).

An experiment gives one group per cell of its matrix, in matrix order, holding the runs
of the cell's repeats; a run gives a group of its own. A point that never started a run
(its closure did not build) or whose run directory is gone is a *problem* sentence of its
group, and a point not run yet counts as *pending*: a comparison shows both rather than
hiding them. Errors: :class:`~mlpkg.errors.BadInput` (exit 2) for an unknown or ambiguous
reference and for an experiment with no points; :class:`~mlpkg.errors.FormatVersionError`
for a record of another format, naming its file and the format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlpkg.env import runs
from mlpkg.errors import BadInput, FormatVersionError, MlpkgError
from mlpkg.experiments import record


@dataclass(frozen=True)
class Group:
    """Runs that measure the same thing: the repeats of one sweep cell, or one run given
    alone."""

    label: str
    experiment: str | None
    cell: dict[str, str]
    records: list[runs.RunRecord]
    problems: list[str] = field(default_factory=list)
    pending: int = 0


def select(home: Path, refs: Sequence[str]) -> list[Group]:
    """The groups of ``refs``, in the order given (see the module docstring)."""
    if not refs:
        raise BadInput("Give at least one run or experiment (`mlpkg runs list`).", field="REF")
    groups: list[Group] = []
    for ref in refs:
        groups.extend(_groups_of(home, ref))
    return groups


def all_runs(home: Path) -> tuple[list[Group], list[str]]:
    """Every readable run as a group of its own, and a sentence for each unreadable one."""
    records, problems = runs.list_runs(home)
    return [_single(r) for r in records], problems


def _groups_of(home: Path, ref: str) -> list[Group]:
    path = Path(ref)
    if (path / record.EXPERIMENT_FILE).is_file() or ref.startswith(record.ID_PREFIX):
        return experiment_groups(home, record.find_experiment(home, ref))
    if (path / runs.RESULT_FILE).is_file():
        return [_single(runs.read_record(path))]
    return [_single(runs.find_run(home, ref))]


def _single(r: runs.RunRecord) -> Group:
    return Group(label=r.id, experiment=None, cell={}, records=[r])


def experiment_groups(home: Path, exp: record.Experiment) -> list[Group]:
    """One group per cell of ``exp``, with its runs (those that can be read)."""
    if not exp.points:
        raise BadInput(
            f"The experiment {exp.id} has no points; there is nothing to compare.",
            file=str(exp.dir / record.EXPERIMENT_FILE),
        )
    root = runs.runs_dir(home)
    groups = []
    for points in exp.cells():
        records: list[runs.RunRecord] = []
        problems: list[str] = []
        pending = 0
        for point in points:
            if point.run is None:
                if point.status == "pending":
                    pending += 1
                else:
                    problems.append(f"point {point.index} ({point.status}): {point.error}")
                continue
            try:
                records.append(runs.read_record(root / point.run))
            except FormatVersionError:
                raise  # refused, as for a run given alone: its figures cannot be read
            except MlpkgError as e:
                problems.append(f"point {point.index}, run {point.run}: {e.message}")
        first = points[0]
        groups.append(Group(first.label, exp.id, dict(first.cell), records, problems, pending))
    return groups
