"""Classified records in and out, in every format (JSON Lines, CSV, Parquet; stdout): read whole or
batch by batch and normalised to the records-v1 columns (`fpi.contract.records`), written atomically
and byte for byte the same however the records were cut into frames."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl

from fpi.contract.environment_faults import writing
from fpi.contract.interrupts import held
from fpi.contract.atomic_files import AtomicFile
from fpi.contract.errors import TraceError, UsageError
from fpi.contract.spreadsheet_cells import neutralised, restored
from fpi.contract.records import CONTEXT, EXPLANATION_DTYPE
from fpi.contract.trace_format import LABELS
from fpi.io.line_blocks import line_blocks
from fpi.io.read_result import LoadResult
from fpi.io.sniff import is_parquet

_CSV_TEXT_COLUMNS = ("rule", "label", "explanation", *CONTEXT, "rules_matched", "recovered_from")
_REQUIRED_TO_READ = ("turn_id", "failure_point")
RECORD_BYTES = 512  # about one JSON Lines record without explanations, to size a batch's block


def read_records(path: str | Path | bytes, *, name: str | None = None) -> pl.DataFrame:
    """Classified records from JSON Lines, CSV or Parquet (a path, or the bytes of a file such as
    stdin), normalised to one set of columns."""
    if isinstance(path, bytes):
        label = name or "<bytes>"
        suffix = ".parquet" if is_parquet(path) else ".jsonl" if path.lstrip()[:1] == b"{" else ".csv"
        source: str | Path | io.BytesIO = io.BytesIO(path)
    else:
        label, suffix, source = str(path), Path(path).suffix.lower(), path
    try:
        if suffix == ".parquet":
            records = pl.read_parquet(source)
        elif suffix == ".csv":
            records = pl.read_csv(source, infer_schema_length=None, schema_overrides={c: pl.String for c in _CSV_TEXT_COLUMNS})
        else:
            records = pl.read_ndjson(source, infer_schema_length=None)
    except FileNotFoundError:
        raise UsageError(f"{label}: no such file") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        where = _first_bad_line(path if isinstance(path, bytes) else None, source if not isinstance(path, bytes) else None, suffix)
        raise TraceError([f"{label}{where}: not readable as classified records ({str(exc).splitlines()[0]})"]) from None
    return _normalised(records, label, suffix)


def records_batches(path: str | Path, rows: int = 200_000) -> Iterator[pl.DataFrame]:
    """The records of a file in batches of about `rows` (JSON Lines: blocks of whole lines), each checked
    and normalised as `read_records` does, with errors naming lines of the whole file: for inputs
    larger than memory."""
    label, suffix = str(path), Path(path).suffix.lower()
    if not Path(path).is_file():
        raise UsageError(f"{label}: no such file")
    try:
        if suffix in (".parquet", ".csv"):
            scan = (pl.scan_parquet(path) if suffix == ".parquet" else
                    pl.scan_csv(path, infer_schema_length=None, schema_overrides={c: pl.String for c in _CSV_TEXT_COLUMNS}))
            first = 1
            for batch in scan.collect_batches(chunk_size=rows):
                yield _normalised(batch, label, suffix, first)
                first += batch.height
            return
        for first_line, block in line_blocks(path, rows * RECORD_BYTES):
            try:
                batch = _decoded(block)
            except pl.exceptions.PolarsError as exc:
                where = _first_bad_line(block, None, suffix, first_line)
                raise TraceError([f"{label}{where}: not readable as classified records ({str(exc).splitlines()[0]})"]) from None
            yield _normalised(batch, label, suffix, first_line)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise TraceError([f"{label}: not readable as classified records ({str(exc).splitlines()[0]})"]) from None


def _decoded(block: bytes) -> pl.DataFrame:
    """A block of JSON Lines records: by Arrow's reader (twice as fast), else by polars' (it reads
    what Arrow's type inference refuses, and its errors are the ones `read_records` gives)."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    try:
        table = pa_json.read_json(pa.BufferReader(block), read_options=pa_json.ReadOptions(block_size=1 << 24))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pl.read_ndjson(block, infer_schema_length=None)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _normalised(records: pl.DataFrame, label: str, suffix: str, first_row: int = 1) -> pl.DataFrame:
    """Records checked (a failure point and labels of our vocabulary) and given every column a report reads."""
    if suffix == ".csv":
        records = restored(records)
    missing = [c for c in _REQUIRED_TO_READ if c not in records.columns]
    if missing:
        raise TraceError([f"{label}: no `{missing[0]}` column; expected the output of `fpi classify`"])
    for column in ("failure_point", "model_failure_point", "label"):
        if column not in records.columns:
            continue
        # a missing label is fine (unlabeled turn); a missing failure point is not
        bad = records.select((~pl.col(column).is_in(list(LABELS))).fill_null(column != "label")).to_series()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            where = (f"{label}: row {row + first_row}" if suffix == ".parquet"
                     else f"{label}:{row + first_row + 1 if suffix == '.csv' else row + first_row}")
            raise TraceError([f"{where}: {column}: expected one of {', '.join(LABELS)}, got {records[column][row]!r}"])
    if "model_failure_point" not in records.columns:
        records = records.with_columns(model_failure_point=pl.col("failure_point"))
    if "rule" not in records.columns:
        records = records.with_columns(rule=pl.lit(None, pl.String))
    if "explanation" in records.columns and records.schema["explanation"] == pl.String:
        records = records.with_columns(pl.col("explanation").str.json_decode(EXPLANATION_DTYPE))
    return records.with_columns(pl.lit(None, pl.String).alias(c) for c in CONTEXT if c not in records.columns)


def _first_bad_line(data: bytes | None, path: object, suffix: str, first_line: int = 1) -> str:
    """`:N` for the first JSON Lines record that is not a JSON object (a truncated last line, say)."""
    if suffix in (".parquet", ".csv"):
        return ""
    try:
        text = data if data is not None else Path(str(path)).read_bytes()
    except OSError:
        return ""
    for number, line in enumerate(text.splitlines(), start=first_line):
        if not line.strip():
            continue
        try:
            if not isinstance(json.loads(line), dict):
                return f":{number}"
        except (ValueError, RecursionError):
            return f":{number}"
    return ""


# ------------------------------------------------------------------ writing

def _flat(records: pl.DataFrame) -> pl.DataFrame:
    """CSV cannot hold structs or lists: probabilities become p_<label>, lists of strings `a|b`,
    other nested values JSON text."""
    columns = []
    for name, dtype in records.schema.items():
        if name == "probabilities" and isinstance(dtype, pl.Struct):
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


FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
PARQUET_ROW_GROUP = 100_000


class RecordsWriter:
    """Records written frame by frame to an open binary file in one format (jsonl, csv, parquet). The
    bytes do not depend on how the records were cut into frames: CSV has one header, and Parquet row
    groups hold PARQUET_ROW_GROUP records each whatever the frames' sizes, so a streamed run and one in
    memory write the same file."""

    def __init__(self, handle: BinaryIO, form: str):
        self.handle, self.form = handle, form
        self.written = 0
        self._pending: list[pl.DataFrame] = []
        self._parquet: Any = None
        self._schema: Any = None

    def write(self, records: pl.DataFrame) -> None:
        with held():  # polars writes through Python's file: an interrupt there would be a Rust panic
            self._write(records)

    def _write(self, records: pl.DataFrame) -> None:
        if self.form == "jsonl":  # polars writes into the handle: three times faster than through a str
            records.write_ndjson(self.handle)
        elif self.form == "csv":
            neutralised(_flat(records)).write_csv(self.handle, include_header=self.written == 0)
        else:
            self._schema = self._schema or records.head(0).to_arrow().schema
            self._pending.append(records)
            if sum(f.height for f in self._pending) >= PARQUET_ROW_GROUP:
                self._row_groups(final=False)
        self.written += records.height

    def _row_groups(self, final: bool) -> None:
        import pyarrow.parquet as pq

        pending = pl.concat(self._pending) if self._pending else pl.DataFrame()
        whole = pending.height - pending.height % PARQUET_ROW_GROUP if not final else pending.height
        if self._parquet is None and self._schema is not None:
            self._parquet = pq.ParquetWriter(self.handle, self._schema, compression="zstd")
        for start in range(0, whole, PARQUET_ROW_GROUP):
            self._parquet.write_table(pending.slice(start, PARQUET_ROW_GROUP).to_arrow(), row_group_size=PARQUET_ROW_GROUP)
        self._pending = [pending.slice(whole)] if whole < pending.height else []

    def close(self, empty: pl.DataFrame | None = None) -> None:
        """Finish the file; `empty` gives the columns of a Parquet file that got no records."""
        if self.form == "parquet":
            if self._schema is None and empty is not None:
                self._schema = empty.head(0).to_arrow().schema
            self._row_groups(final=True)
            if self._parquet is not None:
                self._parquet.close()


def output_form(path: str | Path | None) -> str:
    return "jsonl" if path is None or str(path) == "-" else FORMATS[Path(path).suffix.lower()]


def check_output_path(path: str | Path | None) -> None:
    """Refuse an output format this module cannot write, before any work is done."""
    if path is not None and str(path) != "-" and Path(path).suffix.lower() not in FORMATS:
        raise UsageError(f"{path}: unknown output format {Path(path).suffix.lower() or '(none)'}: "
                         "expected .jsonl, .csv or .parquet")


class RecordsFile:
    """Where records go: `path` by its extension (.jsonl, .csv, .parquet), written atomically, or JSON
    Lines on stdout for `-` or None; handed records batch by batch in input order (a records sink of
    `fpi.engines.plan`), it writes the same bytes however they were cut."""

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None or str(path) == "-" else Path(path)
        check_output_path(self.path)
        self._file: AtomicFile | None = None
        self._handle: BinaryIO | None = None
        self._writer: RecordsWriter | None = None

    def start(self, read: LoadResult | None) -> None:
        """Records can be written whatever the input was."""

    def write(self, records: pl.DataFrame) -> None:
        with writing(self.path or "stdout"):
            self._opened().write(records)

    def finish(self, empty: pl.DataFrame | None) -> None:
        """Close the file (`empty`: the columns of a Parquet file that got no records) and put it in place."""
        with writing(self.path or "stdout"):
            self._finish(empty)

    def _finish(self, empty: pl.DataFrame | None) -> None:
        self._opened().close(empty)
        if self._file is None:
            sys.stdout.flush()
            return
        assert self._handle is not None
        self._handle.close()
        self._file.commit()

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
        if self._file is not None:
            self._file.discard()

    def _opened(self) -> RecordsWriter:
        if self._writer is None:
            handle: BinaryIO = sys.stdout.buffer
            if self.path is not None:
                self._file = AtomicFile(self.path)
                handle = self._handle = open(self._file.tmp, "wb")
            self._writer = RecordsWriter(handle, output_form(self.path))
        return self._writer


def write_records(records: pl.DataFrame, path: str | Path | None) -> None:
    """JSON Lines to stdout when `path` is None or `-`; else by extension: .jsonl/.json, .csv, .parquet,
    written atomically."""
    sink = RecordsFile(path)
    try:
        sink.write(records)
        sink.finish(records)
    except BaseException:
        sink.discard()
        raise
