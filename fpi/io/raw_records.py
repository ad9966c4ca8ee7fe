"""Records of any shape, before a mapping names their fields: JSON Lines, CSV/TSV, Parquet or
OpenTelemetry spans, each read into one frame with the source `line` and the record's `raw` text."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator

import polars as pl

from fpi.contract.errors import TraceError
from fpi.io.checks import refuse_lone_surrogates, refuse_reserved
from fpi.io.mapping import Mapping
from fpi.io.otlp import turn_rows
from fpi.io.sniff import detect_format

BadLine = tuple[int, str, str]  # line, raw text, what is wrong


def read_any(data: bytes, label: str, mapping: Mapping) -> tuple[pl.DataFrame, list[BadLine], str]:
    """The records of `data` as a frame (columns as the source names them), lines that are not
    records, and the format read."""
    form = mapping.format or detect_format(data)
    if form == "parquet":
        table = _parquet(data, label)
        refuse_reserved(table.columns, label)
        return _with_raw(table.with_row_index("line", offset=1)), [], form
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
    number of cells, or bytes that are not UTF-8, is a bad line, named by its line in the file and kept
    as it was written. A cell may be as long as the file."""
    text = data.decode("utf-8-sig", errors="surrogateescape")  # a byte that is not UTF-8 marks its row, not the file
    physical = io.StringIO(text, newline="").readlines()  # the lines as the reader counts them
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    limit = csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    try:
        names, rows, bad = _header(reader, label), [], []
        line = reader.line_num
        for cells in reader:
            start, line = line + 1, reader.line_num
            raw = "".join(physical[start - 1:line]).rstrip("\r\n")
            problem = _row_problem(cells, names) if any(cell.strip() for cell in cells) else None
            if problem:
                bad.append((start, _shown(raw), problem))
            elif any(cell.strip() for cell in cells):
                rows.append((cells, start, raw))
    except csv.Error as exc:
        raise TraceError([f"{label}:{reader.line_num}: not readable as CSV ({exc})"]) from None
    finally:
        csv.field_size_limit(limit)
    schema = {n: pl.String for n in names}
    frame = pl.DataFrame([cells for cells, _, _ in rows], schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    frame = frame.with_columns(pl.all().replace("", None))  # an empty cell is a value that is not there
    return frame.with_columns(line=pl.Series([start for _, start, _ in rows], dtype=pl.UInt32),
                              raw=pl.Series([raw for _, _, raw in rows], dtype=pl.String)), bad


def _header(reader: Iterator[list[str]], label: str) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise TraceError([f"{label}: empty file: expected a header line and one row per turn"]) from None
    names = [name.strip() for name in header]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise TraceError([f"{label}:1: column {twice[0]!r} appears twice in the header"])
    refuse_reserved(names, label)
    if _NOT_UTF8.search("".join(names)):
        raise TraceError([f"{label}:1: the header is not UTF-8 text; save the file as UTF-8"])
    return names


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # where surrogateescape put a byte that is not UTF-8


def _row_problem(cells: list[str], names: list[str]) -> str | None:
    if len(cells) != len(names):
        return f"expected {len(names)} cells as in the header, got {len(cells)}"
    for name, cell in zip(names, cells, strict=True):
        found = _NOT_UTF8.search(cell)
        if found:
            return f"{name}: byte 0x{ord(found.group()) - 0xdc00:02x} is not UTF-8 text; save the file as UTF-8"
    return None


def _shown(raw: str) -> str:
    """A line as the quarantine can keep it: bytes that are not UTF-8 written as \\xNN."""
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _json_lines(data: bytes, label: str) -> tuple[pl.DataFrame, list[BadLine]]:
    """JSON Lines of any shape: nested objects stay structs (a mapping reads them as a.b.c)."""
    objects, lines, raws, bad = [], [], [], []
    text = data.decode("utf-8-sig", errors="surrogateescape")
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        found = _NOT_UTF8.search(line)
        if found:
            bad.append((number, _shown(line), f"byte 0x{ord(found.group()) - 0xdc00:02x} is not UTF-8 text; save the file as UTF-8"))
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant)
            refuse_lone_surrogates(obj, line)
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
    refuse_reserved(frame.columns, label)
    frame = frame.with_columns(line=pl.Series(lines, dtype=pl.UInt32), raw=pl.Series(raws, dtype=pl.String))
    return frame, bad


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


__all__ = ["read_any"]
