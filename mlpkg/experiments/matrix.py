"""The matrix of a sweep: what ``--with NAME=SPEC1,SPEC2``, ``--arg OPTION=V1,V2`` and
``--repeat N`` ask for, and the points it makes.

Contract:

* ``--with NAME=S1,S2`` gives the alternatives of one input (an input key or a package,
  as ``mlpkg run --with`` takes it); the option may be repeated for the same NAME, and the
  values add up. A comma inside a version constraint (``numpy@>=1.24,<2``) stays in its
  spec: a new spec starts only at a piece that begins with a letter.
* ``--arg OPTION=V1,V2`` gives the values of one app option; each point passes
  ``--OPTION VALUE`` after the fixed options (``threads`` and ``--threads`` are the same
  option).
* A list that parses to nothing (``--arg threads=``, ``--with onnxruntime=,``), a value
  listed twice, an option given both as ``--arg`` and after ``--``, or ``--repeat`` below
  1 is :class:`~mlpkg.errors.BadInput`, naming the option.
* :meth:`Matrix.cells` is the cartesian product, ``--with`` dimensions first, in the
  order given; :meth:`Matrix.points` runs every cell once per repeat, repeat by repeat
  (cell 1, cell 2, ..., then cell 1 again), so that a drift of the machine during the sweep
  spreads over all cells instead of biasing the last one.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlpkg.errors import BadInput
from mlpkg.experiments.record import Point

_SPEC_START = re.compile(r"[A-Za-z]")
_OPTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Matrix:
    """The dimensions of a sweep (see the module docstring)."""

    with_: dict[str, list[str]] = field(default_factory=dict)
    arg: dict[str, list[str]] = field(default_factory=dict)
    repeat: int = 1
    args: list[str] = field(default_factory=list)  # the app's fixed options

    def to_json(self) -> dict[str, Any]:
        return {"with": self.with_, "arg": self.arg, "repeat": self.repeat, "args": self.args}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Matrix:
        return cls(
            dict(doc.get("with", {})),
            dict(doc.get("arg", {})),
            int(doc.get("repeat", 1)),
            list(doc.get("args", [])),
        )

    def cells(self) -> list[dict[str, str]]:
        """Every combination, as ``{"with.NAME": SPEC, "arg.OPTION": VALUE}``."""
        keys = [f"with.{n}" for n in self.with_] + [f"arg.{o}" for o in self.arg]
        values = [*self.with_.values(), *self.arg.values()]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]

    def points(self) -> list[Point]:
        """One point per cell and repeat, repeat by repeat."""
        cells = self.cells()
        points: list[Point] = []
        for repeat in range(self.repeat):
            for cell in cells:
                points.append(
                    Point(
                        index=len(points),
                        cell=cell,
                        repeat=repeat,
                        overrides=overrides_of(cell),
                        args=self.args_of(cell),
                    )
                )
        return points

    def args_of(self, cell: dict[str, str]) -> list[str]:
        extra = [[f"--{k[4:]}", v] for k, v in cell.items() if k.startswith("arg.")]
        return [*self.args, *itertools.chain.from_iterable(extra)]


def overrides_of(cell: dict[str, str]) -> dict[str, str]:
    return {k[5:]: v for k, v in cell.items() if k.startswith("with.")}


def parse_matrix(
    with_items: Iterable[tuple[str, str]],
    arg_items: Iterable[str],
    repeat: int,
    fixed_args: Sequence[str],
) -> Matrix:
    """The matrix of the command line (BadInput naming the option at fault)."""
    if repeat < 1:
        raise BadInput(f"--repeat {repeat}: give 1 or more runs per cell.", field="--repeat")
    with_: dict[str, list[str]] = {}
    for name, text in with_items:
        _add(with_, name, split_specs(text), f"--with {name}={text}")
    arg: dict[str, list[str]] = {}
    for item in arg_items:
        option, sep, text = item.partition("=")
        option = option.lstrip("-")
        if not sep or not _OPTION.fullmatch(option):
            raise BadInput(f"--arg {item!r} is not OPTION=V1,V2 (e.g. threads=1,2).", field="--arg")
        values = [v.strip() for v in text.split(",") if v.strip()]
        _add(arg, option, values, f"--arg {item}")
        if any(a.split("=", 1)[0] == f"--{option}" for a in fixed_args):
            raise BadInput(
                f"--{option} is both swept (--arg) and fixed (after --); give it once.",
                field="--arg",
            )
    return Matrix(with_, arg, repeat, list(fixed_args))


def _add(table: dict[str, list[str]], key: str, values: list[str], what: str) -> None:
    if not values:
        raise BadInput(
            f"{what} lists no value; give one or more, separated by commas.",
            field=what.split(" ")[0],
        )
    known = table.setdefault(key, [])
    for value in values:
        if value in known:
            raise BadInput(f"{what} lists {value} twice.", field=what.split(" ")[0])
        known.append(value)


def split_specs(text: str) -> list[str]:
    """``a@1.0,b@>=1,<2`` → ``["a@1.0", "b@>=1,<2"]`` (see the module docstring)."""
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if specs and not _SPEC_START.match(piece):
            specs[-1] += "," + piece  # a version constraint's own comma
        else:
            specs.append(piece)
    return specs
