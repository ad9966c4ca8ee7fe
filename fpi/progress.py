"""Progress on stderr for people at a terminal; silence for pipes and CI logs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True)


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
