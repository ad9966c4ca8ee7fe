"""Progress on stderr for people at a terminal; silence for pipes and CI logs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.console import RenderableType
from rich.text import Text

from fpi.presentation.terminal import stderr_console


class Steps:
    """A bar over named steps (or iterations); a no-op when stderr is not a terminal."""

    def __init__(self, progress: Progress | None, total: int, description: str):
        self._progress = progress
        self._task = progress.add_task(description, total=total) if progress else None

    def advance(self, description: str | None = None, steps: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=steps, description=description)

    def update(self, completed: int, total: int | None = None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, total=total or None)


@contextmanager
def steps(total: int, description: str, *, enabled: bool | None = None) -> Iterator[Steps]:
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show:
        yield Steps(None, total, description)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr_console(), transient=True) as progress:
        yield Steps(progress, total, description)


class RateColumn(ProgressColumn):
    """Turns a second, once there is a rate to show."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} turns/s" if task.speed else "", style="progress.data.speed")


class KnownBarColumn(ProgressColumn):
    """A bar only once the total is known: a count read so far is no share of anything."""

    def __init__(self) -> None:
        super().__init__()
        self._bar = BarColumn()

    def render(self, task: Task) -> RenderableType:
        return Text("") if task.total is None else self._bar.render(task)


class CountColumn(ProgressColumn):
    """`done/total`, or `done so far` while the total is unknown."""

    def render(self, task: Task) -> Text:
        text = f"{int(task.completed):,} so far" if task.total is None else f"{int(task.completed):,}/{int(task.total):,}"
        return Text(text, style="progress.download")


TurnsProgress = Callable[[str, int, "int | None"], None]


def announce(what: str, *, enabled: bool | None = None) -> None:
    """The first line at a terminal, before the model loads: what is being read (nothing in pipes and CI)."""
    if sys.stderr.isatty() if enabled is None else enabled:
        stderr_console().print(f"reading {what} …", highlight=False, soft_wrap=True)


@contextmanager
def turns_progress(*, enabled: bool | None = None) -> Iterator[TurnsProgress]:
    """A bar that counts turns, phase by phase (reading, classifying, writing), with rate and time left;
    a phase's bar and timer stop when the next phase starts; it clears itself when done. Silent when
    stderr is not a terminal."""
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show:
        yield lambda phase, done, total: None
        return
    columns = (TextColumn("{task.description:<12}"), KnownBarColumn(), CountColumn(), RateColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=stderr_console(), transient=True) as progress:
        yield Phases(progress)


class Phases:
    """One task per phase; when a phase starts, the one before is over: its count becomes its total (a bar
    that ends) and its timer stops."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase not in self.tasks:
            for earlier in self.tasks.values():
                ended = int(self.progress.tasks[earlier].completed) or 1
                self.progress.update(earlier, total=ended, completed=ended)
                self.progress.stop_task(earlier)
            self.tasks[phase] = self.progress.add_task(phase, total=total)
        self.progress.update(self.tasks[phase], completed=done, total=total)
