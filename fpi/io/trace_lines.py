"""JSON Lines of trace format v1, in whole turns or per-stage events: split into lines (each named by
its number in the file), decoded by Arrow's JSON reader against the format's schema with strict types,
and checked by vectorised expressions. Only lines that fail there are parsed again in Python, to name
the field and the reason. A part of a file (a streamed chunk) is read the same way."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json

from fpi.contract.errors import TraceError
from fpi.contract.trace_format import NOT_A_RECORD, turn_dtype
from fpi.io.checks import problems_of_text, rejection, validate_rows
from fpi.io.read_result import LoadResult, RejectedRecord, empty_turns
from fpi.io.sniff import BOM, looks_compressed
from fpi.io.stage_events import is_stage_form, join_stage_events, per_event, stage_events_among_turns

SMALLEST_CHUNK = 32  # lines: a failing chunk of no more is decoded line by line

def split_lines(data: bytes, label: str, first_line: int = 1) -> tuple[pl.DataFrame, list[RejectedRecord], bytes | None]:
    """Frame of (line number, text) for non-blank lines; lines that are not UTF-8 are rejected.
    Also `data` itself when it holds exactly those lines, so it can be decoded in place."""
    if data.startswith(BOM):
        data = data[3:]
    rejected: list[RejectedRecord] = []
    try:
        if looks_compressed(data):
            raise ValueError("polars would decompress it; split it as the text it claims to be")
        lines = pl.read_lines(data, name="raw") if data else pl.DataFrame({"raw": []}, schema={"raw": pl.String})
    except (pl.exceptions.ComputeError, ValueError):
        texts = []
        for number, raw in enumerate(data.split(b"\n"), start=first_line):
            try:
                texts.append(raw.decode("utf-8").removesuffix("\r"))
            except UnicodeDecodeError as exc:
                rejected.append(RejectedRecord(label, number, (("", NOT_A_RECORD, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"),), raw))
                texts.append("")
        lines = pl.DataFrame({"raw": texts}, schema={"raw": pl.String})
    every_line = lines.height
    lines = lines.with_row_index("line", offset=first_line)
    blank = ~pl.col("raw").str.contains(r"\S")  # what strip_chars() would empty, without a copy of every line
    if lines.select(blank.any()).item():
        lines = lines.filter(~blank)
    intact = not rejected and lines.height == every_line
    return lines, rejected, data if intact else None


def read_jsonl(data: bytes, label: str, first_line: int = 1) -> LoadResult:
    """JSON Lines; `first_line` is the number of `data`'s first line in its file (a streamed chunk's)."""
    lines, rejected, intact = split_lines(data, label, first_line)
    del data
    read = lines.height + len(rejected)
    if read == 0:
        raise TraceError([f"{label}: empty file: expected one JSON object per line (trace format v1)"])
    if lines.height == 0:
        return LoadResult(turns=empty_turns(), rejected=rejected, read=read, source=label)
    if is_stage_form(lines["raw"][0]):
        turns, stage_rejected, turn_lines = join_stage_events(lines, label)
        result = _decode_turns(turns, label, turn_lines)
        event_lines = [event for r in result.rejected for event in per_event(r, turn_lines)]
        result.rejected = sorted(rejected + stage_rejected + event_lines, key=lambda r: r.line)
        result.read, result.form = read, "stage"
        return result
    result = _decode_turns(lines.with_columns(json=pl.col("raw")), label, None, intact)
    result.turns, events = stage_events_among_turns(result.turns, label)
    result.rejected = sorted(rejected + result.rejected + events, key=lambda r: r.line)
    result.read = read
    return result


def _arrow_type(dtype: Any) -> pa.DataType:
    if isinstance(dtype, pl.Struct):
        return pa.struct([pa.field(f.name, _arrow_type(f.dtype)) for f in dtype.fields])
    if isinstance(dtype, pl.List):
        return pa.list_(_arrow_type(dtype.inner))
    return {pl.String: pa.string(), pl.Float64: pa.float64(), pl.Boolean: pa.bool_(), pl.Int64: pa.int64()}[dtype.base_type()]


@lru_cache(maxsize=1)
def _arrow_schema() -> pa.Schema:
    return pa.schema([pa.field(f.name, _arrow_type(f.dtype)) for f in turn_dtype(decode=True).fields])


def _arrow_decode(text: bytes | memoryview, rows: int, longest_line: int) -> pl.DataFrame:
    """Decode JSON Lines with Arrow's reader: strict types (no `true` read as 1.0), fast and lean.
    Raises when anything in `text` does not fit the schema or the row count is off."""
    table = pa_json.read_json(
        pa.BufferReader(text),
        read_options=pa_json.ReadOptions(block_size=max(1 << 24, 2 * longest_line + 2)),
        parse_options=pa_json.ParseOptions(explicit_schema=_arrow_schema(), unexpected_field_behavior="ignore"))
    if table.num_rows != rows:
        raise ValueError(f"expected {rows} rows, decoded {table.num_rows}")
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _decode_chunks(lines: pl.DataFrame, longest_line: int, text: bytes | memoryview | None = None
                   ) -> tuple[list[pl.DataFrame], list[pl.DataFrame]]:
    """Decode a chunk of lines; a chunk that fails is halved until the failing lines are isolated."""
    try:
        body = text if text is not None else "\n".join(lines["json"].to_list()).encode("utf-8")
        return [pl.concat([lines, _arrow_decode(body, lines.height, longest_line)], how="horizontal")], []
    except (pa.ArrowException, ValueError):
        if lines.height == 1:
            return [], [lines]
    if lines.height <= SMALLEST_CHUNK:
        singles = [_decode_chunks(lines.slice(i, 1), longest_line) for i in range(lines.height)]
        return [g for good, _ in singles for g in good], [b for _, bad in singles for b in bad]
    half = lines.height // 2
    good_a, bad_a = _decode_chunks(lines.slice(0, half), longest_line)
    good_b, bad_b = _decode_chunks(lines.slice(half), longest_line)
    return good_a + good_b, bad_a + bad_b


def _decode_turns(lines: pl.DataFrame, label: str, stage_lines: dict[str, dict[str, int]] | None,
                  text: bytes | memoryview | None = None) -> LoadResult:
    """`lines` has line, raw (kept as is) and json (the text to decode); `text`, when given, is
    exactly those json lines as one buffer, so a clean file is decoded without a copy."""
    # Only lines that look like one object go to Arrow (a bare `null` line crashes its reader).
    # Most files hold nothing else, which the unstripped lines tell without copying them.
    line_json = pl.col("json")
    if lines.select((line_json.str.starts_with("{") & line_json.str.ends_with("}")).all()).item():
        objects, others = lines, lines.clear()
    else:
        stripped = line_json.str.strip_chars()
        looks_like_object = stripped.str.starts_with("{") & stripped.str.ends_with("}")
        objects, others = lines.filter(looks_like_object), lines.filter(~looks_like_object)
    longest = lines["json"].str.len_bytes().max() or 0
    assert isinstance(longest, int)
    good, bad = _decode_chunks(objects, longest, text if others.height == 0 else None)
    rejected: list[RejectedRecord] = []
    for chunk in [others, *bad]:
        for number, raw, json_text in chunk.select("line", "raw", "json").iter_rows():
            problems = problems_of_text(json_text) or [("", NOT_A_RECORD, "could not be read as trace format v1")]
            rejected.append(rejection(label, number, raw, problems, json_text, stage_lines))

    schema = {"line": pl.UInt32, "raw": pl.String, "json": pl.String, **turn_dtype(decode=True).to_schema()}
    decoded = pl.concat(good) if good else pl.DataFrame(schema=schema)
    turns = decoded.sort("line") if len(good) > 1 else decoded
    turns = turns.rename({"json": "joined"}) if stage_lines is not None else turns.drop("json")
    result = validate_rows(turns, label, from_text=stage_lines is None, stage_lines=stage_lines)
    if stage_lines is not None:  # accepted turns keep the joined turn, so extra fields stay reachable
        result.turns = result.turns.with_columns(raw=pl.col("joined")).drop("joined")
    result.rejected += rejected
    result.read = lines.height
    return result

