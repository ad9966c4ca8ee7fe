"""Labeling sheets: the turns `fpi sample` chose, as rows a person fills in a spreadsheet, and
the filled labels read back onto the traces (`fpi train --labels`, `fpi label merge`)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fpi.contract.spreadsheet_cells import restored

from fpi.contract.errors import TraceError, UsageError
from fpi.contract.trace_format import LABELS, json_lines


def read_sheet(path: str | Path) -> pl.DataFrame:
    """`turn_id` and `label` of every filled row of a sheet (CSV, TSV or JSONL); rows left empty
    are skipped. A label that is not one of LABELS is an error naming file, line and value."""
    label = str(path)
    suffix = Path(path).suffix.lower()
    if Path(path).exists() and not Path(path).is_file():
        raise UsageError(f"{label}: not a regular file; a labeling sheet is a .csv, .tsv or .jsonl file")
    try:
        if suffix in (".csv", ".tsv"):
            sheet = restored(pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema=False))
            first_line = 2  # after the header
        else:
            sheet = pl.read_ndjson(path, schema_overrides={"turn_id": pl.String, "label": pl.String}, infer_schema_length=None)
            first_line = 1
    except FileNotFoundError:
        raise UsageError(f"{label}: no such labeling sheet") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise TraceError([f"{label}: not readable as a labeling sheet ({str(exc).splitlines()[0]})"]) from None
    missing = [c for c in ("turn_id", "label") if c not in sheet.columns]
    if missing:
        raise TraceError([f"{label}: no `{missing[0]}` column; expected the sheet `fpi sample` wrote"])
    sheet = sheet.select("turn_id", pl.col("label").cast(pl.String).str.strip_chars().str.to_lowercase()
                         ).with_row_index("line", offset=first_line)
    filled = sheet.filter(pl.col("label").is_not_null() & (pl.col("label") != ""))
    bad = filled.filter(~pl.col("label").is_in(list(LABELS)))
    if bad.height:
        raise TraceError([f"{label}:{line}: label: expected one of {', '.join(LABELS)} (or empty), got {value!r}"
                          for line, value in bad.select("line", "label").head(20).iter_rows()])
    duplicated = filled.filter(pl.col("turn_id").is_duplicated())
    if duplicated.height:
        line, turn_id = duplicated.select("line", "turn_id").row(0)
        raise TraceError([f"{label}:{line}: turn_id {turn_id!r} is labeled twice"])
    return filled.select("turn_id", "label", "line")


def merge_labels(turns: pl.DataFrame, sheet: pl.DataFrame, source: str) -> pl.DataFrame:
    """The turns with the sheet's labels (over any they had); a sheet turn not in the traces is an error."""
    known = sheet.join(turns.select("turn_id"), on="turn_id", how="anti")
    if known.height:
        line, turn_id = known.select("line", "turn_id").row(0)
        raise TraceError([f"{source}:{line}: turn_id {turn_id!r} is not in the traces ({known.height} such rows)"])
    labels = turns.select("turn_id").join(sheet.select("turn_id", sheet_label="label"), on="turn_id", how="left",
                                          maintain_order="left")
    return turns.with_columns(label=labels["sheet_label"].fill_null(turns["label"]))


def labeled_traces(turns: pl.DataFrame) -> str:
    """Turns as trace-format JSON Lines (the format's fields; labels as they now are)."""
    return json_lines(turns)
