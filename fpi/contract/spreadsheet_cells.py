"""CSV that people open in a spreadsheet: a text cell starting with `= + - @`, a tab or a carriage
return is read there as a formula (OWASP's "CSV injection"), so fpi writes it with a leading `'`,
which spreadsheets show as text. A cell that already starts with `'` before such a character gets
one more, so reading strips exactly one and gives back what was written (records and label sheets
round-trip)."""

from __future__ import annotations

import re

import polars as pl

_WRITTEN = r"^'*[=+\-@\t\r]"  # what gets one more `'` when written
_READ = r"^'+[=+\-@\t\r]"  # what had one added, read back


def neutralised(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with every text cell a spreadsheet would run as a formula made plain text."""
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    return frame.with_columns(pl.when(pl.col(name).str.contains(_WRITTEN)).then("'" + pl.col(name)).otherwise(pl.col(name))
                              .alias(name) for name in text)


def restored(frame: pl.DataFrame) -> pl.DataFrame:
    """The text `neutralised` was given, from the CSV it wrote."""
    text = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    return frame.with_columns(pl.when(pl.col(name).str.contains(_READ)).then(pl.col(name).str.slice(1)).otherwise(pl.col(name))
                              .alias(name) for name in text)


def neutral_cell(value: object) -> object:
    """One cell as `neutralised` writes it (for the report's few rows, written by the csv module)."""
    return "'" + value if isinstance(value, str) and re.match(_WRITTEN, value) else value
