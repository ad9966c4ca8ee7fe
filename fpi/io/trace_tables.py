"""Typed tables of turns (Parquet files, polars or pandas DataFrames, Arrow tables): columns checked
against the format's types, nothing coerced, each row checked like a JSON line (its number stands for
the line)."""

from __future__ import annotations

import io
from typing import Any

import polars as pl
import pyarrow as pa

from fpi.contract.errors import TraceError
from fpi.contract.trace_format import TURN_FIELD_NAMES, TURN_FIELDS, Field, turn_dtype
from fpi.io.checks import RESERVED, validate_rows
from fpi.io.read_result import LoadResult

def _type_problem(dtype: Any, field: Field, path: str) -> str | None:
    """Where a typed column's type does not hold what `field` does (a string turn_index, a boolean
    score), as `path: expected ..., got ...`; None when it does. Nothing is coerced."""
    kind = field.kind
    if dtype == pl.Null:
        return None
    if kind == "string":
        ok = dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)
    elif kind in ("integer", "number"):
        ok = dtype.is_integer() or dtype.is_float()  # floats in an integer column are checked for fractions later
    elif kind == "boolean":
        ok = dtype == pl.Boolean
    elif kind == "object":
        if not isinstance(dtype, pl.Struct):
            ok = False
        else:
            members = {m.name: m.dtype for m in dtype.fields}
            for member in field.fields:
                if member.name in members:
                    problem = _type_problem(members[member.name], member, f"{path}.{member.name}")
                    if problem:
                        return problem
            return None
    else:  # array
        if not isinstance(dtype, pl.List | pl.Array):
            ok = False
        else:
            return _type_problem(dtype.inner, Field(field.name, "object", fields=field.fields), f"{path}[]")
    return None if ok else f"{path}: expected {'an integer' if kind == 'integer' else 'a ' + kind}, got {dtype}"


def as_frame(source: object) -> pl.DataFrame | None:
    """A polars frame of a DataFrame-like source (polars, pandas, Arrow), or None for files and bytes."""
    if isinstance(source, pl.DataFrame):
        return source
    if isinstance(source, pa.Table):
        frame = pl.from_arrow(source)
        assert isinstance(frame, pl.DataFrame)
        return frame
    if type(source).__module__.split(".")[0] == "pandas" and type(source).__name__ == "DataFrame":
        return pl.from_pandas(source)
    return None


def read_parquet(data: bytes, label: str) -> LoadResult:
    try:
        table = pl.read_parquet(io.BytesIO(data))
    except pl.exceptions.PolarsError as exc:
        raise TraceError([f"{label}: not a readable Parquet file ({exc})"]) from exc
    if table.height == 0:
        raise TraceError([f"{label}: empty file: expected at least one turn"])
    return read_table(table, label)


def read_table(table: pl.DataFrame, label: str, first_row: int = 1) -> LoadResult:
    """Turns of a typed table (Parquet, a DataFrame): columns cast to the format's types, each
    row checked like a JSON line (its number stands for the line)."""
    return validate_rows(table_rows(table, label, first_row), label, from_text=False, table=True)


def table_rows(table: pl.DataFrame, label: str, first_row: int = 1) -> pl.DataFrame:
    """A typed table's rows as the loader checks them, numbered from `first_row`, `raw` left null."""
    decode = turn_dtype(decode=True)
    columns = []
    for f in TURN_FIELDS:
        target = decode.to_schema()[f.name]
        if f.name not in table.columns:
            columns.append(pl.lit(None, dtype=target).alias(f.name))
            continue
        wrong = _type_problem(table.schema[f.name], f, f.name)
        if wrong:
            raise TraceError([f"{label}: column {wrong}"])
        columns.append(pl.col(f.name).cast(target))
    extra = [c for c in table.columns if c not in (*TURN_FIELD_NAMES, *RESERVED)]  # `line`, `raw`: this file's, not a copy's
    turns = table.select(*columns, *extra).with_row_index("line", offset=first_row).cast({"line": pl.UInt32})
    return turns.with_columns(raw=pl.lit(None, pl.String))

