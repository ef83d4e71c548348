"""Progress reporting: rich bars when stderr is a terminal (and not -q), else plain lines."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from mlpkg.cli.context import App
from mlpkg.resolver.plan import PlanNode
from mlpkg.resolver.realise import Reporter
from mlpkg.store.store import PathInfo


class TextReporter(Reporter):
    """One line per path made (stderr), nothing with -q; build logs live with -v."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.echo = sys.stderr if app.verbose else None

    def start(self, node: PlanNode, index: int, total: int) -> None:
        self.app.info(f"[{index}/{total}] {node.action} {node.path}")

    def note(self, text: str) -> None:
        self.app.debug(text)

    def finish(self, node: PlanNode, info: PathInfo) -> None:
        self.app.debug(f"  {info.archive_hash} {info.size} bytes")


class _BytesColumn(DownloadColumn):
    """Bytes done/total, for downloads only (builds have no byte count)."""

    def render(self, task: Task) -> Text:
        return super().render(task) if task.fields.get("bytes") else Text("")


class _SpeedColumn(TransferSpeedColumn):
    def render(self, task: Task) -> Text:
        return super().render(task) if task.fields.get("bytes") else Text("")


class RichReporter(Reporter):
    def __init__(self, app: App) -> None:
        self.app = app
        self.echo = sys.stderr if app.verbose else None
        self.console = Console(stderr=True)
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            _BytesColumn(),
            _SpeedColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.started = False

    def start(self, node: PlanNode, index: int, total: int) -> None:
        if not self.started:
            self.bar.start()
            self.started = True
        label = f"[{index}/{total}] {node.action} {node.drv.name}-{node.drv.version}"
        is_fetch = node.action in ("fetch", "substitute")
        self.tasks[str(node.path)] = self.bar.add_task(label, total=None, bytes=is_fetch)

    def progress(self, node: PlanNode, done: int, total: int | None) -> None:
        task = self.tasks.get(str(node.path))
        if task is not None:
            self.bar.update(task, completed=done, total=total)

    def finish(self, node: PlanNode, info: PathInfo) -> None:
        task = self.tasks.get(str(node.path))
        if task is not None:
            t = self.bar.tasks[task]
            self.bar.update(task, total=t.completed or 1, completed=t.completed or 1)

    def note(self, text: str) -> None:
        if self.app.verbose:
            self.console.print(text)

    def close(self) -> None:
        if self.started:
            self.bar.stop()
