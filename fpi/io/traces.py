"""Read trace logs into one typed polars frame, and say exactly what was wrong with every record
that could not be read: trace format v1 as JSON Lines (`trace_lines`, per-stage events in
`stage_events`) or typed tables (`trace_tables`), and records of any other shape through a mapping
(`raw_records`, `mapping`, `otlp`). Every reader ends in the same checks (`checks`)."""

from __future__ import annotations

import hashlib
import stat
import sys
from pathlib import Path
from typing import Any

import polars as pl

from fpi.contract.errors import TraceError
from fpi.contract.trace_format import NOT_A_RECORD, STAGES, json_lines
from fpi.io.checks import StageCheck, validate_rows
from fpi.io.coverage import Coverage, measure
from fpi.io.otlp import read_spans
from fpi.io.mapping import Mapping, apply_mapping, as_mapping
from fpi.io.quarantine import OnError, apply_on_error
from fpi.io.raw_records import read_any
from fpi.io.read_result import LoadResult, RejectedRecord
from fpi.io.sniff import gunzipped, is_parquet, refuse_other_formats, refuse_records
from fpi.io.trace_lines import read_jsonl
from fpi.io.trace_tables import as_frame, read_parquet, read_table

Source = str | Path | bytes | pl.DataFrame | Any  # Any: a pandas DataFrame or an Arrow table


def read_traces(source: Source, *, name: str | None = None, mapping: Mapping | dict | str | Path | None = None,
                strict: bool = False) -> LoadResult:
    """Read traces without raising on bad records: a file (JSONL, gzipped JSONL, Parquet; `-` is
    stdin), its bytes, or a frame a notebook already has (polars or pandas DataFrame, Arrow table),
    checked by the same rules. With a `mapping` (a shipped mapping's name, a file, or a loaded
    `Mapping`), records of another shape are read too: other field names, CSV/TSV, OpenTelemetry
    spans. Input that is not traces at all (classified records, CSV or spans without a mapping, logs
    whose fields trace format v1 does not name) is one clear error, never a silent wrong answer. Read
    through a mapping, the result says what it found (`coverage`); `strict`: a declared stage no turn has
    is an error."""
    mapping = as_mapping(mapping)
    result = _read(source, name, mapping)
    stages = StageCheck()
    stages.add(result.turns)
    stages.check(result.source, mapping)
    if mapping is not None:
        result.coverage = _coverage(result, mapping)
        result.coverage.check(result.source, strict)
    return result


def _coverage(result: LoadResult, mapping: Mapping) -> Coverage:
    """What the mapping found; where a declared stage is missing, with the span names the input has."""
    found = measure(result.turns, mapping)
    if found.warnings and result.otlp is not None:
        names = sorted({span.name for span in read_spans(result.otlp, result.source)[0]})
        found = measure(result.turns, mapping, names)
    return found


def _read(source: Source, name: str | None, mapping: Mapping | None) -> LoadResult:
    frame = as_frame(source)
    if frame is not None:
        label = name or f"<{type(source).__name__}>"
        if frame.height == 0:
            raise TraceError([f"{label}: no rows: expected at least one turn"])
        if mapping is not None:
            rows = frame.with_row_index("line", offset=1).cast({"line": pl.UInt32})
            rows = rows.with_columns(raw=pl.struct(pl.all().exclude("line")).struct.json_encode())
            return _read_mapped(rows, [], label, mapping)
        _refuse_unmapped(frame, label)
        return read_table(frame, label)
    if not isinstance(source, str | Path | bytes):
        raise TraceError([f"{type(source).__name__}: not traces: expected a path, bytes, or a polars or pandas "
                          "DataFrame or Arrow table"])
    data, label = _read_source(source, name)
    data = gunzipped(data, label)
    if mapping is not None:
        refuse_records(data, label)
        result = _read_shaped(data, label, mapping, whole=True)
        result.otlp = data if result.form == "otlp" else None
        return result
    if is_parquet(data):
        return read_parquet(data, label)
    refuse_other_formats(data, label)
    return read_jsonl(data, label)


def _refuse_unmapped(frame: pl.DataFrame, label: str) -> None:
    """A frame with none of trace format v1's stages nor its ids is another shape: one message, as the CLI
    gives, not an error per row."""
    if any(stage in frame.columns for stage in (*STAGES, "feedback")) or {"turn_id", "session_id", "turn_index"} <= set(frame.columns):
        return
    columns = ", ".join(frame.columns[:20]) + (" ..." if frame.width > 20 else "")
    raise TraceError([f"{label}: not trace format v1 (no turn ids, none of the stages {', '.join(STAGES)}; columns: {columns}); "
                      "it needs a mapping: load_traces(frame, mapping=...) with a file, a dict or YAML text "
                      "(docs/mapping.md; `fpi map infer` drafts one)"])


def read_part(data: bytes, label: str, mapping: Mapping | None = None, first_line: int = 1) -> LoadResult:
    """One part of a JSON Lines input (a streamed chunk, a Spark partition), or a whole input of another
    shape through `mapping`, with every check but those that need the whole input: duplicates across
    parts and whether most turns carry some stage (`fpi.io.checks.StageCheck`) are the engine's."""
    return read_jsonl(data, label, first_line) if mapping is None else _read_shaped(data, label, mapping, whole=False)


def _read_shaped(data: bytes, label: str, mapping: Mapping, *, whole: bool) -> LoadResult:
    """Records of another shape (`fpi.io.raw_records`) through a mapping; a whole input must hold one."""
    rows, bad, form = read_any(data, label, mapping)
    if whole and rows.height == 0 and not bad:
        raise TraceError([f"{label}: empty file: expected at least one record"])
    result = _read_mapped(rows, bad, label, mapping)
    result.form = form
    return result


def _read_mapped(rows: pl.DataFrame, bad: list[tuple[int, str, str]], label: str, mapping: Mapping) -> LoadResult:
    """Rows of another shape through a mapping, then the same checks as native traces."""
    turns, unconverted = apply_mapping(mapping, rows, label)
    rejected = [RejectedRecord(label, number, (("", NOT_A_RECORD, message),), raw) for number, raw, message in bad]
    if unconverted:
        failing = turns.filter(pl.col("line").is_in(list(unconverted)))
        rejected += [RejectedRecord(label, number, tuple(unconverted[number]), raw)
                     for number, raw in failing.select("line", "raw").iter_rows()]
        turns = turns.filter(~pl.col("line").is_in(list(unconverted)))
    result = validate_rows(turns, label, from_text=False)
    result.rejected = sorted(rejected + result.rejected, key=lambda r: r.line)
    result.read = rows.height + len(bad)
    return result


def load_traces(source: Source, *, on_error: OnError | str = "fail", quarantine: str | Path | None = None,
                name: str | None = None, mapping: Mapping | dict | str | Path | None = None) -> pl.DataFrame:
    """Typed turns of a trace file or frame (see `read_traces`). `on_error="fail"` raises TraceError naming every bad
    line; `"skip"` keeps the valid turns and writes the bad lines to `quarantine`."""
    return read_accepting(source, on_error=on_error, quarantine=quarantine, name=name, mapping=mapping).turns


def read_accepting(source: Source, *, on_error: OnError | str = "fail", quarantine: str | Path | None = None,
                   name: str | None = None, mapping: Mapping | dict | str | Path | None = None, strict: bool = False) -> LoadResult:
    """`read_traces` under the `--on-error` policy (`fpi.io.quarantine`): bad records raise, or go to `quarantine`
    (noted in the result) while the valid turns go on."""
    result = read_traces(source, name=name, mapping=mapping, strict=strict)
    result.quarantine = apply_on_error(result.source, result.rejected, on_error, quarantine)
    return result


def turns_fingerprint(turns: pl.DataFrame) -> str:
    """Identifies a set of turns by the content of their trace fields, whatever file form they
    came in (JSONL, Parquet, per-stage events) and whatever extra fields they carry."""
    return hashlib.sha256(canonical_turns(turns)).hexdigest()


def canonical_turns(turns: pl.DataFrame) -> bytes:
    """The turns' trace fields as JSON Lines, what `turns_fingerprint` hashes: a file's turns hashed
    chunk by chunk in order give the same digest."""
    return json_lines(turns).encode("utf-8")


def _read_source(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, name or "<bytes>"
    if str(source) == "-":
        return sys.stdin.buffer.read(), name or "<stdin>"
    path = Path(source)
    try:
        if not stat.S_ISREG(path.stat().st_mode) and not path.is_dir():
            raise TraceError([f"{source}: not a regular file (a device, FIFO or socket); to read a stream, pipe it to `-`"])
        return path.read_bytes(), name or str(source)
    except FileNotFoundError as exc:
        raise TraceError([f"{source}: no such file"]) from exc
    except IsADirectoryError as exc:
        raise TraceError([f"{source}: is a directory, expected a trace file"]) from exc
    except OSError as exc:
        raise TraceError([f"{source}: cannot be read ({exc.strerror})"]) from exc


__all__ = ["LoadResult", "RejectedRecord", "load_traces", "read_accepting", "read_part", "read_traces", "turns_fingerprint"]
