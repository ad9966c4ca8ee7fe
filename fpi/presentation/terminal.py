"""Text for people at a terminal: a console on stderr for messages, progress and tables about a run,
one on stdout for results, and what a drawing prints, as text. rich is imported when first needed, so
the command line stays light until a command runs."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from fpi.presentation.display_tables import DisplayTable


@cache
def stderr_console() -> Console:
    """One console for everything fpi says on stderr, so a line said while a bar is live goes above the
    bar instead of splitting it (it writes to whatever sys.stderr is at the time)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def stdout_console() -> Console:
    """Results on stdout: the terminal's width (or $COLUMNS), else wide enough not to fold when piped."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=200)


def rendered(draw: Callable[[Console], None]) -> str:
    """What `draw` prints on stdout's console, as text: its width, and its colours when stdout is a terminal."""
    from rich.console import Console

    like = stdout_console()
    buffer = io.StringIO()
    draw(Console(file=buffer, width=like.width, force_terminal=like.is_terminal, color_system="auto" if like.color_system else None))
    return buffer.getvalue()


def tables_text(tables: list[DisplayTable]) -> str:
    """Tables as they show on stdout."""
    from fpi.presentation.display_tables import print_table

    def draw(console: Console) -> None:
        for table in tables:
            print_table(table, console)
    return rendered(draw)


def lines_text(lines: list[str]) -> str:
    """Lines as they show on stdout: as they are, no markup read into them."""
    def draw(console: Console) -> None:
        for line in lines:
            console.print(line, markup=False, highlight=False)
    return rendered(draw)


def say(text: str) -> None:
    """One line for people on stderr, shown as it is."""
    stderr_console().print(text, markup=False, highlight=False, soft_wrap=True)


def show(tables: list[DisplayTable], *, stderr: bool = False) -> None:
    """Tables on stderr (about the run) or stdout (the result)."""
    from fpi.presentation.display_tables import print_table

    console = stderr_console() if stderr else stdout_console()
    for table in tables:
        print_table(table, console)
