"""``mlpkg runs report REF... -o FILE``: the comparison of runs and experiments as one
self-contained HTML page (mlpkg.experiments.report).

The references are those of ``mlpkg runs compare`` (:func:`mlpkg.experiments.select.select`:
run ids or prefixes, ``latest``, experiment ids, ``exp-latest``, run or experiment
directories); the page is rendered from the same comparison document
(:func:`mlpkg.experiments.compare.compare`) and written atomically: FILE holds the old
page or the new one, never part of one. The path written is printed on stdout (in
``--json`` mode, ``{"report": PATH}``). A report of failed runs is still a report: the
exit status is 0 once the page is written; bad references and records of a newer format
are refused before anything is written (exit 2), as by ``runs compare``; so is a FILE
that cannot be written (its directory read-only, ``/proc``), with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlpkg.cli.context import App, common
from mlpkg.errors import BadInput
from mlpkg.store.fs import write_atomic

if TYPE_CHECKING:
    from mlpkg.experiments.select import Group


@click.command("report")
@click.argument("refs", nargs=-1, required=True, metavar="RUN|EXP...")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML file to write (replaced if it exists).",
)
@click.option("--title", help="The page's title (default: the experiment, or a count).")
@common
def runs_report_cmd(app: App, refs: tuple[str, ...], output: Path, title: str | None) -> None:
    """Write an HTML report comparing runs and experiments: the figures with their spread,
    plots, verdicts, what differs (settings, machine, the closure), failures, and each
    run's command line to reproduce it. The page needs no network to be viewed."""
    from mlpkg.experiments.compare import compare
    from mlpkg.experiments.report import render
    from mlpkg.experiments.select import select

    if output.is_dir():
        raise BadInput(f"{output} is a directory; give the HTML file to write.", field="--output")
    if not output.parent.is_dir():
        raise BadInput(f"{output.parent} is not a directory.", field="--output")
    groups = select(app.home, list(refs))
    doc = compare(groups)
    page = render(doc, title, machine=_machine(groups))
    try:
        write_atomic(output, page)
    except OSError as e:
        raise BadInput(f"Cannot write {output}: {e.strerror or e}.", field="--output") from None
    app.out(str(output))
    if app.json:
        app.emit({"report": str(output)})


def _machine(groups: list[Group]) -> dict[str, Any] | None:
    """The machine table of the first group with a run (one whose closure did not build
    has none): its first ok run's, else its first run's; the header's machine (the
    document holds only what differs between groups)."""
    for group in groups:
        records = [r for r in group.records if r.status == "ok"] or list(group.records)
        if records:
            machine = records[0].result.get("machine")
            return machine if isinstance(machine, dict) else None
    return None
