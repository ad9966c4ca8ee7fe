"""Records of any shape, before a mapping names their fields: JSON Lines, CSV/TSV, Parquet or
OpenTelemetry spans, each read into one frame with the source `line` and the record's `raw` text."""

from __future__ import annotations

import csv
import io
import json

import polars as pl

from fpi.contract.errors import TraceError
from fpi.io.mapping import Mapping
from fpi.io.otlp import turn_rows
from fpi.io.sniff import detect_format

BadLine = tuple[int, str, str]  # line, raw text, what is wrong



def read_any(data: bytes, label: str, mapping: Mapping) -> tuple[pl.DataFrame, list[BadLine], str]:
    """The records of `data` as a frame (columns as the source names them), lines that are not
    records, and the format read."""
    form = mapping.format or detect_format(data)
    if form == "parquet":
        return _with_raw(_parquet(data, label).with_row_index("line", offset=1)), [], form
    if form == "otlp":
        frame, bad = turn_rows(data, label, mapping)
        return frame, bad, form
    if form in ("csv", "tsv"):
        frame, bad = _delimited(data, label, "\t" if form == "tsv" else ",")
        return frame, bad, form
    frame, bad = _json_lines(data, label)
    return frame, bad, form


def _with_raw(frame: pl.DataFrame) -> pl.DataFrame:
    frame = frame.cast({"line": pl.UInt32})
    return frame.with_columns(raw=pl.struct(pl.all().exclude("line")).struct.json_encode())


def _parquet(data: bytes, label: str) -> pl.DataFrame:
    try:
        return pl.read_parquet(io.BytesIO(data))
    except pl.exceptions.PolarsError as exc:
        raise TraceError([f"{label}: not a readable Parquet file ({exc})"]) from exc


def _delimited(data: bytes, label: str, separator: str) -> tuple[pl.DataFrame, list[BadLine]]:
    """Every cell as text (the mapping gives the types), an empty cell as null; a row with the wrong
    number of cells is a bad line, named by its line in the file."""
    text = data.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    try:
        header = next(reader)
    except StopIteration:
        raise TraceError([f"{label}: empty file: expected a header line and one row per turn"]) from None
    names = [name.strip() for name in header]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise TraceError([f"{label}:1: column {twice[0]!r} appears twice in the header"])
    rows, lines, raws, bad = [], [], [], []
    line = reader.line_num
    for cells in reader:
        start, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        raw = separator.join(cells)
        if len(cells) != len(names):
            bad.append((start, raw, f"expected {len(names)} cells as in the header, got {len(cells)}"))
            continue
        rows.append(cells)
        lines.append(start)
        raws.append(raw)
    frame = pl.DataFrame(rows, schema={n: pl.String for n in names}, orient="row") if rows else pl.DataFrame(schema={n: pl.String for n in names})
    frame = frame.with_columns(pl.all().replace("", None))  # an empty cell is a value that is not there
    frame = frame.with_columns(line=pl.Series(lines, dtype=pl.UInt32), raw=pl.Series(raws, dtype=pl.String))
    return frame, bad


def _json_lines(data: bytes, label: str) -> tuple[pl.DataFrame, list[BadLine]]:
    """JSON Lines of any shape: nested objects stay structs (a mapping reads them as a.b.c)."""
    objects, lines, raws, bad = [], [], [], []
    text = data.decode("utf-8-sig", errors="replace")
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            bad.append((number, line, f"malformed JSON: {exc}" if not isinstance(exc, RecursionError) else "nested too deep"))
            continue
        if not isinstance(obj, dict):
            bad.append((number, line, "expected a JSON object for the record"))
            continue
        objects.append(obj)
        lines.append(number)
        raws.append(line.removesuffix("\r"))
    if not objects:
        frame = pl.DataFrame()
    else:
        try:
            frame = pl.from_dicts(objects, infer_schema_length=None)
        except (pl.exceptions.PolarsError, TypeError, ValueError):  # a field with several JSON types: read as text
            frame = pl.from_dicts([{k: v if isinstance(v, str) or v is None else json.dumps(v) for k, v in o.items()}
                                   for o in objects], infer_schema_length=None)
    frame = frame.with_columns(line=pl.Series(lines, dtype=pl.UInt32), raw=pl.Series(raws, dtype=pl.String))
    return frame, bad


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


__all__ = ["read_any"]
