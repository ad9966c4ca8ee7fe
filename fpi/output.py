"""Atomic file output: a reader never sees half a file, and a failed run leaves none."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

from fpi.errors import UsageError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _flat(records: pl.DataFrame) -> pl.DataFrame:
    """CSV cannot hold structs or lists: probabilities become p_<label>, lists of strings `a|b`,
    other nested values JSON text."""
    columns = []
    for name, dtype in records.schema.items():
        if name == "probabilities":
            columns += [pl.col(name).struct.field(f.name).alias(f"p_{f.name}") for f in dtype.fields]
        elif isinstance(dtype, pl.Struct):
            columns.append(pl.col(name).struct.json_encode())
        elif isinstance(dtype, pl.List) and dtype.inner == pl.String:
            columns.append(pl.col(name).list.join("|"))
        elif dtype.is_nested():
            columns.append(pl.struct(pl.col(name)).struct.json_encode().alias(name))
        else:
            columns.append(pl.col(name))
    return records.select(columns)


def write_records(records: pl.DataFrame, path: str | Path | None) -> None:
    """JSON Lines to stdout when `path` is None; else by extension: .jsonl/.json, .csv, .parquet."""
    if path is None or str(path) == "-":
        sys.stdout.buffer.write(records.write_ndjson().encode("utf-8"))
        sys.stdout.flush()
        return
    suffix = Path(path).suffix.lower()
    writers = {
        ".jsonl": lambda tmp: records.write_ndjson(tmp),
        ".ndjson": lambda tmp: records.write_ndjson(tmp),
        ".json": lambda tmp: records.write_ndjson(tmp),
        ".csv": lambda tmp: _flat(records).write_csv(tmp),
        ".parquet": lambda tmp: records.write_parquet(tmp),
    }
    if suffix not in writers:
        raise UsageError(f"{path}: unknown output format {suffix or '(none)'}: expected .jsonl, .csv or .parquet")
    atomic_write(path, writers[suffix])
