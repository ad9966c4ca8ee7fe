"""Text for people at a terminal: a console on stderr for messages, progress and tables about a run,
one on stdout for results, and what a drawing prints, as text. rich is imported when first needed, so
the command line stays light until a command runs."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterable
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from fpi.presentation.display_tables import DisplayTable


# Control characters a terminal would act on (escape sequences, bells, backspaces, C1 codes) and
# bidirectional overrides that reorder what is shown; newlines and tabs lay text out and stay.
_UNPRINTABLE = {code: f"\\x{code:02x}" for code in [*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0)]}
_UNPRINTABLE.update({code: f"\\u{code:04x}" for code in [*range(0x202a, 0x202f), *range(0x2066, 0x206a)]})


def printable(text: str) -> str:
    """`text` with what a terminal would act on written out as escapes (`\\x1b`), so data read from
    logs can change no colour, title or cursor of the user's terminal."""
    return text.translate(_UNPRINTABLE)


@cache
def _console_class() -> type[Console]:
    """rich's Console, showing every piece of text through `printable` (rich's own styles still colour)."""
    from rich.console import Console
    from rich.segment import Segment

    class DataConsole(Console):
        def _render_buffer(self, buffer: Iterable[Segment]) -> str:
            return super()._render_buffer(segment if segment.control else Segment(printable(segment.text), segment.style)
                                          for segment in buffer)
    return DataConsole


@cache
def stderr_console() -> Console:
    """One console for everything fpi says on stderr, so a line said while a bar is live goes above the
    bar instead of splitting it (it writes to whatever sys.stderr is at the time)."""
    return _console_class()(stderr=True, soft_wrap=True)


def stdout_console() -> Console:
    """Results on stdout: the terminal's width (or $COLUMNS), else wide enough not to fold when piped."""
    console = _console_class()
    return console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else console(width=200)


def rendered(draw: Callable[[Console], None]) -> str:
    """What `draw` prints on stdout's console, as text: its width, and its colours when stdout is a terminal."""
    like = stdout_console()
    buffer = io.StringIO()
    draw(_console_class()(file=buffer, width=like.width, force_terminal=like.is_terminal, color_system="auto" if like.color_system else None))
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
