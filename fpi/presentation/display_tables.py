"""A table of display strings and how it is drawn: on a terminal (rich, with a narrow layout when it
is wider than the terminal), as Markdown, or as HTML. Cells are text, never markup, in every form."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from rich.box import HEAVY_HEAD, SIMPLE_HEAD
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table as RichTable
from rich.text import Text

from fpi.contract.trace_format import LABELS
from fpi.presentation.terminal import printable

UNBOUNDED = 10_000  # columns: how wide a table would be on a terminal with no edge


@dataclass
class DisplayTable:
    """A titled table of display strings, shared by the terminal, Markdown and HTML."""

    key: str  # components | slice:<field> | baseline | confusion (plots attach by key)
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""
    numeric_columns: tuple[str, ...] = ()  # right-aligned besides the usual numeric names
    styles: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column) -> terminal style
    plain: bool = False  # no header and no borders: a list of labelled lines
    dense: bool = False  # no borders and one space between columns: the most a narrow terminal can hold

    def numeric(self, i: int) -> bool:
        """Whether column i holds numbers (right-aligned in every format)."""
        column = self.columns[i]
        return i > 0 and (column in ("turns", "p", "rate", "baseline", "all defects") or column in LABELS
                          or column in self.numeric_columns or column.startswith(("rate", "change", "share")))

    def add(self, *cells: str, styles: dict[int, str] | None = None) -> None:
        """Append a row; `styles` maps a column to its terminal style (colour, bold)."""
        for column, style in (styles or {}).items():
            self.styles[(len(self.rows), column)] = style
        self.rows.append(list(cells))


def _rich_table(table: DisplayTable) -> RichTable:
    rich_table = RichTable(title=Text(table.title) if table.title else None, title_justify="left",
                           caption=Text(table.note) if table.note else None, caption_justify="left",
                           show_header=not table.plain, box=None if table.plain else SIMPLE_HEAD if table.dense else HEAVY_HEAD,
                           padding=(0, 0) if table.dense else (0, 1), show_edge=not table.dense)
    for i, column in enumerate(table.columns):
        rich_table.add_column(Text(column), justify="right" if table.numeric(i) else "left", overflow="fold",
                              style="bold" if table.plain and i == 0 else None)
    for r, row in enumerate(table.rows):
        rich_table.add_row(*(Text(cell, style=table.styles.get((r, c), "")) for c, cell in enumerate(row)),
                           style="bold" if row and row[0] == "all defects" else None)
    return rich_table


def print_table(table: DisplayTable, console: Console) -> None:
    """A table on a terminal; cells are shown as text, whatever brackets the data holds. A report
    table wider than the terminal is shown in its narrow layout, so no identifier is split."""
    rich_table = _rich_table(table)
    unbounded = console.options.update(width=UNBOUNDED, max_width=UNBOUNDED)
    if Measurement.get(console, unbounded, rich_table).maximum <= console.width:
        console.print(rich_table)
        return
    for narrow_table in narrow(table):
        console.print(_rich_table(narrow_table))


def _short_interval(cell: str) -> str:
    """`3.57% [1.22, 9.98]` as two lines: `3.57%` over `1.2-10.0`."""
    rate, _, interval = cell.partition(" [")
    if not interval:
        return cell
    low, high = (float(bound) for bound in interval.rstrip("]").split(", "))
    return f"{rate}\n{low:.1f}-{high:.1f}"


def narrow(table: DisplayTable) -> list[DisplayTable]:
    """A report table laid out for a narrow terminal: the numbers per failure point, then what
    lies behind each as wrapped lines; slice rates over their intervals, small values starred."""
    if table.key == "components":
        numbers = DisplayTable(table.key, table.title, table.columns[:4], [row[:4] for row in table.rows])
        behind = DisplayTable("behind", "", ["failure point", "behind it"], plain=True, note=table.note)
        for row in table.rows:
            parts = [f"{name}: {cell}" for name, cell in zip(table.columns[4:], row[4:], strict=True) if cell not in ("", "-")]
            if parts:
                behind.add(row[0], "; ".join(parts))
        return [numbers, behind]
    if table.key.startswith("slice:"):
        flag = table.columns.index("flag")
        slim = DisplayTable(table.key, table.title, table.columns[:flag], dense=True,
                     note=table.note.replace("flag `small`", "*") + " Each cell: rate over its 95% interval.")
        for row in table.rows:
            value = row[0] + (" *" if row[flag] == "small" else "")
            slim.add(value, row[1], *(_short_interval(cell) for cell in row[2:flag]))
        return [slim]
    return [table]


def md_escape(text: str) -> str:
    """A Markdown cell: `|` kept in its cell, control characters from data written out (`printable`)."""
    return printable(text).replace("|", "\\|")


def markdown_table(table: DisplayTable) -> list[str]:
    """A table as Markdown lines: its title as a heading, the rows, its note in italics."""
    parts = [f"## {md_escape(table.title)}", "", "| " + " | ".join(map(md_escape, table.columns)) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    parts += ["| " + " | ".join(md_escape(cell) for cell in row) + " |" for row in table.rows]
    if table.note:
        parts += ["", f"_{md_escape(table.note)}_"]
    return [*parts, ""]


def html_table(table: DisplayTable) -> str:
    """The table and its note (the heading is the caller's, so plots can sit between)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        classes = "total" if row[0] == "all defects" else "small" if row[-1] == "small" else ""
        cells = []
        for i, cell in enumerate(row):
            css = cell if table.columns[i] == "verdict" and cell in ("worse", "better") else "num" if table.numeric(i) else ""
            cells.append(f'<td class="{css}">{html.escape(cell)}</td>' if css else f"<td>{html.escape(cell)}</td>")
        body.append((f'<tr class="{classes}">' if classes else "<tr>") + "".join(cells) + "</tr>")
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{note}"
