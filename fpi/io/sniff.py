"""What a file is, told once from its first bytes: gzip, Parquet, zlib or zstd, OpenTelemetry spans,
CSV/TSV, JSON Lines, classified records or traces. Every reader and engine asks here, and input that
is plainly not traces is named in one clear error instead of once per line."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path

import polars as pl

from fpi.contract.errors import TraceError
from fpi.contract.records import RECORD_MARKERS
from fpi.contract.trace_format import STAGES

GZIP = b"\x1f\x8b"
PARQUET = b"PAR1"
BOM = b"\xef\xbb\xbf"
HEAD_BYTES = 1 << 16


def is_gzip(data: bytes) -> bool:
    return data[:2] == GZIP


def is_parquet(data: bytes) -> bool:
    return data[:4] == PARQUET


def looks_compressed(data: bytes) -> bool:
    """zlib or zstd magic: polars' line reader would silently decompress such bytes (or fail on
    corrupt ones), though a trace file is plain or gzip text. Lines starting so are bad JSON anyway."""
    zlib_magic = len(data) >= 2 and data[0] == 0x78 and (data[0] << 8 | data[1]) % 31 == 0
    return zlib_magic or data.startswith(b"\x28\xb5\x2f\xfd")


def is_otlp(data: bytes) -> bool:
    """OTLP/JSON trace requests, recognised by content (the `resourceSpans` key near the start)."""
    head = data[:HEAD_BYTES].lstrip(BOM + b" \t\r\n")
    return head.startswith(b"{") and (b'"resourceSpans"' in head or b'"resource_spans"' in head)


def first_line(data: bytes) -> bytes:
    """The first line that is not blank, stripped."""
    for line in data[:1 << 20].removeprefix(BOM).splitlines():
        if line.strip():
            return line.strip()
    return b""


def detect_format(data: bytes) -> str:
    """jsonl, csv, tsv, parquet or otlp, by content."""
    if is_parquet(data):
        return "parquet"
    if is_otlp(data):
        return "otlp"
    first = first_line(data[:HEAD_BYTES])
    if first.startswith((b"{", b"[")):
        return "jsonl"
    return "tsv" if b"\t" in first else "csv"


def gunzipped(data: bytes, label: str) -> bytes:
    """The content of gzipped bytes (plain bytes as they are); a damaged file is a clear error naming it."""
    if not is_gzip(data):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise TraceError([f"{label}: not a readable gzip file ({exc})"]) from exc


def file_head(path: str | Path, size: int = HEAD_BYTES) -> bytes | None:
    """The first bytes of a file, of its content when gzipped; None when it cannot be read (a damaged
    gzip file, say: the reader that reads it whole names the problem)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(size)
        if is_gzip(head):
            with gzip.open(path, "rb") as handle:
                head = handle.read(size)
    except (OSError, EOFError, zlib.error):
        return None
    return head


def is_classified(source: str | Path | bytes) -> bool:
    """Whether a file (or the bytes of one) holds classified records rather than raw traces: a verdict
    column, and in JSON Lines a first record with a verdict and no stage."""
    path = None if isinstance(source, bytes) else Path(source)
    try:
        if path is not None and path.suffix.lower() == ".csv":
            return "failure_point" in pl.read_csv(path, n_rows=0).columns
        if path is not None:
            with path.open("rb") as handle:
                source = handle.read(4) + handle.readline(1 << 20)
        assert isinstance(source, bytes)
        if is_parquet(source):
            return "failure_point" in pl.read_parquet_schema(io.BytesIO(source) if path is None else path)
    except (pl.exceptions.PolarsError, OSError):
        return False  # unreadable as records: the traces reader says what is wrong with it
    first = source.removeprefix(BOM).lstrip()[:1 << 20].split(b"\n", 1)[0]
    try:
        fields = json.loads(first)
    except (ValueError, RecursionError):
        return False
    return isinstance(fields, dict) and any(m in fields for m in RECORD_MARKERS) and not any(s in fields for s in STAGES)


def refuse_records(data: bytes, label: str) -> None:
    """Classified records where traces are expected: one clear error."""
    if is_classified(data):
        raise TraceError([f"{label}: holds classified records (the output of `fpi classify`), not traces; "
                          "`fpi report` reads records, and the other commands read traces (docs/trace-format.md)"])


def refuse_other_formats(data: bytes, label: str) -> None:
    """Say what a file is when it is plainly not JSON Lines traces, once, instead of once per line."""
    if is_otlp(data):
        raise TraceError([f"{label}: holds OpenTelemetry spans (OTLP/JSON); spans need a mapping that says which spans "
                          "are turns and which attributes are stages: --mapping pipecat, livekit, openinference or "
                          f"your own (docs/mapping.md; `fpi map infer {label}` drafts one)"])
    first = first_line(data)
    if not first or first.startswith(b"{"):
        refuse_records(data, label)
        return
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        return  # binary: its lines are rejected one by one, as bad lines
    if any(ch < " " and ch != "\t" for ch in text):
        return
    separator = b"\t" if b"\t" in first else b"," if b"," in first else None
    if separator is not None and not first.startswith((b"[", b'"')):
        kind = "TSV" if separator == b"\t" else "CSV"
        header = ", ".join(name.decode("utf-8", "replace").strip().strip('"') for name in first.split(separator)[:12])
        raise TraceError([f"{label}: looks like {kind} (header: {header}); {kind} needs a mapping that names its columns: "
                          f"--mapping FILE (docs/mapping.md), drafted by `fpi map infer {label}`"])


def whole_turn_lines(head: bytes) -> bool:
    """JSON Lines whose first record is a whole turn: not per-stage events, not spans."""
    first = first_line(head)
    return first.lstrip(b" ").startswith(b"{") and b'"stage"' not in first and b"resourceSpans" not in first
