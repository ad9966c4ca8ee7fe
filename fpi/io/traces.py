"""Read trace logs into one typed polars frame, and say exactly what was wrong
with every line that could not be read.

Clean files take a fast path: polars splits the lines, Arrow's JSON reader decodes
them against the schema with strict types, and vectorised polars expressions check
them. Only lines that fail there are parsed again in Python, to name the field and
the reason."""

from __future__ import annotations

import base64
import gzip
import zlib
import hashlib
import io
import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json

from fpi.contract.errors import Problem, TraceError
from fpi.io.mapping import Mapping, apply_mapping, load_mapping
from fpi.io.otlp import is_otlp
from fpi.contract.atomic_files import atomic_write_bytes
from fpi.contract.records import is_classified
from fpi.io.raw_records import read_any
from fpi.contract.trace_format import (
    DUPLICATE,
    EVENT_STAGES,
    MISSING,
    MIXED,
    NOT_A_RECORD,
    RELATED,
    STAGES,
    TURN_FIELD_NAMES,
    TURN_FIELDS,
    TURN_SCHEMA,
    WRONG_VALUE,
    Field,
    FieldProblem,
    clean_turn_expr,
    turn_dtype,
    validate_turn,
)

OnError = Literal["fail", "skip"]

_SMALLEST_CHUNK = 32


@dataclass(frozen=True)
class RejectedRecord:
    """One input record that was not accepted, with every reason found."""

    source: str
    line: int
    problems: tuple[FieldProblem, ...]  # (field, code, message)
    raw: str | bytes

    def found(self) -> list[Problem]:
        return [Problem(self.source, self.line, code, f"{path}: {what}" if path else what) for path, code, what in self.problems]

    def messages(self) -> list[str]:
        return [str(problem) for problem in self.found()]

    def to_json(self) -> dict:
        record: dict = {"source": self.source, "line": self.line,
                        "errors": [{"field": p, "code": c, "message": m} for p, c, m in self.problems]}
        if isinstance(self.raw, bytes):
            record["raw_base64"] = base64.b64encode(self.raw).decode("ascii")
        else:
            record["raw"] = self.raw
        return record


@dataclass
class LoadResult:
    """Accepted turns (in input order) and the records that were not accepted."""

    turns: pl.DataFrame
    rejected: list[RejectedRecord] = field(default_factory=list)
    read: int = 0
    source: str = ""
    form: str = "turn"
    otlp: bytes | None = None  # the spans as read, for writing them back with verdicts

    @property
    def accepted(self) -> int:
        return self.read - len(self.rejected)

    def summary(self, rejected_as: str = "quarantined") -> str:
        unit = "event lines" if self.form == "stage" else "turns"
        text = f"{self.source}: read {self.read}, accepted {self.accepted}, {rejected_as} {len(self.rejected)} {unit}"
        if self.form == "stage":
            text += f" ({self.turns.height} turns)"
        return text

    def problems(self) -> list[str]:
        return [m for r in self.rejected for m in r.messages()]


Source = str | Path | bytes | pl.DataFrame | Any  # Any: a pandas DataFrame or an Arrow table


def read_traces(source: Source, *, name: str | None = None, mapping: Mapping | str | Path | None = None) -> LoadResult:
    """Read traces without raising on bad records: a file (JSONL, gzipped JSONL, Parquet; `-` is
    stdin), its bytes, or a frame a notebook already has (polars or pandas DataFrame, Arrow table),
    checked by the same rules. With a `mapping` (a shipped mapping's name, a file, or a loaded
    `Mapping`), records of another shape are read too: other field names, CSV/TSV, OpenTelemetry
    spans. Input that is not traces at all (classified records, CSV or spans without a mapping, logs
    whose fields trace format v1 does not name) is one clear error, never a silent wrong answer."""
    if mapping is not None and not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping)
    frame = _as_frame(source)
    if frame is not None:
        label = name or f"<{type(source).__name__}>"
        if frame.height == 0:
            raise TraceError([f"{label}: no rows: expected at least one turn"])
        if mapping is not None:
            rows = frame.with_row_index("line", offset=1).cast({"line": pl.UInt32})
            rows = rows.with_columns(raw=pl.struct(pl.all().exclude("line")).struct.json_encode())
            return _no_stages_check(_read_mapped(rows, [], label, mapping), label, mapping)
        return _no_stages_check(_read_table(frame, label), label)
    if not isinstance(source, str | Path | bytes):
        raise TraceError([f"{type(source).__name__}: not traces: expected a path, bytes, or a polars or pandas "
                          "DataFrame or Arrow table"])
    data, label = _read_source(source, name)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise TraceError([f"{label}: not a readable gzip file ({exc})"]) from exc
    if mapping is not None:
        _refuse_records(data, label)
        rows, bad, form = read_any(data, label, mapping)
        if rows.height == 0 and not bad:
            raise TraceError([f"{label}: empty file: expected at least one record"])
        result = _no_stages_check(_read_mapped(rows, bad, label, mapping), label, mapping)
        result.form = form
        result.otlp = data if form == "otlp" else None
        return result
    if data[:4] == b"PAR1":
        return _no_stages_check(_read_parquet(data, label), label)
    _refuse_other_formats(data, label)
    return _no_stages_check(_read_jsonl(data, label), label)


def _read_mapped(rows: pl.DataFrame, bad: list[tuple[int, str, str]], label: str, mapping: Mapping) -> LoadResult:
    """Rows of another shape through a mapping, then the same checks as native traces."""
    turns, unconverted = apply_mapping(mapping, rows, label)
    rejected = [RejectedRecord(label, number, (("", NOT_A_RECORD, message),), raw) for number, raw, message in bad]
    if unconverted:
        failing = turns.filter(pl.col("line").is_in(list(unconverted)))
        rejected += [RejectedRecord(label, number, tuple(unconverted[number]), raw)
                     for number, raw in failing.select("line", "raw").iter_rows()]
        turns = turns.filter(~pl.col("line").is_in(list(unconverted)))
    result = _validate_rows(turns, label, from_text=False)
    result.rejected = sorted(rejected + result.rejected, key=lambda r: r.line)
    result.read = rows.height + len(bad)
    return result


MOSTLY = 0.5


def _first_line(data: bytes) -> bytes:
    for line in data[:1 << 20].removeprefix(b"\xef\xbb\xbf").splitlines():
        if line.strip():
            return line.strip()
    return b""


def _refuse_records(data: bytes, label: str) -> None:
    if is_classified(data):
        raise TraceError([f"{label}: holds classified records (the output of `fpi classify`), not traces; "
                          "`fpi report` reads records, and the other commands read traces (docs/trace-format.md)"])


def _refuse_other_formats(data: bytes, label: str) -> None:
    """Say what a file is when it is plainly not JSON Lines traces, once, instead of once per line."""
    if is_otlp(data):
        raise TraceError([f"{label}: holds OpenTelemetry spans (OTLP/JSON); spans need a mapping that says which spans "
                          "are turns and which attributes are stages: --mapping pipecat, livekit, openinference or "
                          f"your own (docs/mapping.md; `fpi map infer {label}` drafts one)"])
    first = _first_line(data)
    if not first or first.startswith(b"{"):
        _refuse_records(data, label)
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


def _no_stages_check(result: LoadResult, label: str, mapping: Mapping | None = None) -> LoadResult:
    """Refuse input where most turns carry none of the stages but fields the format (or the mapping)
    does not name: its fields are named otherwise, and classifying it would be a confident wrong answer."""
    turns = result.turns
    if turns.height == 0:
        return result
    empty = turns.select(pl.all_horizontal(pl.col(s).is_null() for s in (*STAGES, "feedback")).mean()).item()
    if empty <= MOSTLY:
        return result
    seen = _fields_seen(turns)
    if mapping is None and not set(seen) - set(TURN_FIELD_NAMES):
        return result  # turns that carry only what the format names (ids, context) are valid, if thin
    raise no_stages_error(empty, seen, label, mapping)


def no_stages_error(empty: float, seen: list[str], label: str, mapping: Mapping | None = None) -> TraceError:
    """Most turns carry no stage: say which fields were seen, and how to read them."""
    if mapping is not None:
        return TraceError([f"{label}: {empty:.0%} of the turns get none of the stages ({', '.join(STAGES)}) through "
                           f"{mapping.source}; the fields seen are: {', '.join(seen[:30]) or 'none'}. Map the stage "
                           "fields (docs/mapping.md), or draft a mapping with `fpi map infer " + label + "`"])
    return TraceError([f"{label}: {empty:.0%} of the turns carry none of the stages trace format v1 names "
                       f"({', '.join(STAGES)}); the fields seen are: {', '.join(seen[:30]) or 'none beyond the ids'}. "
                       "Read them through a mapping (--mapping FILE; docs/mapping.md), drafted by "
                       f"`fpi map infer {label}`, or name them as docs/trace-format.md does"])


def _fields_seen(turns: pl.DataFrame, rows: int = 50) -> list[str]:
    """Top-level field names in the first records, in the order first seen (a table's: its columns
    with a value in them)."""
    head = turns.head(rows)
    if head["raw"].null_count() == head.height:
        return [c for c in head.columns if c not in ("line", "raw") and head[c].null_count() < head.height]
    seen: dict[str, None] = {}
    for raw in turns["raw"].head(rows).to_list():
        try:
            obj = _strict_json(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            seen.update(dict.fromkeys(map(str, obj)))
    return list(seen)


def load_traces(source: Source, *, on_error: OnError = "fail", quarantine: str | Path | None = None,
                name: str | None = None, mapping: Mapping | str | Path | None = None) -> pl.DataFrame:
    """Typed turns of a trace file or frame (see `read_traces`). `on_error="fail"` raises TraceError naming every bad
    line; `"skip"` keeps the valid turns and writes the bad lines to `quarantine`."""
    result = read_traces(source, name=name, mapping=mapping)
    if result.rejected and on_error == "fail":
        raise TraceError(result.problems(), summary=f"{result.source}: {len(result.rejected)} bad records; nothing was written")
    if result.rejected and quarantine is not None:
        write_quarantine(result.rejected, quarantine)
    return result.turns


def turns_fingerprint(turns: pl.DataFrame) -> str:
    """Identifies a set of turns by the content of their trace fields, whatever file form they
    came in (JSONL, Parquet, per-stage events) and whatever extra fields they carry."""
    return hashlib.sha256(canonical_turns(turns)).hexdigest()


def canonical_turns(turns: pl.DataFrame) -> bytes:
    """The turns' trace fields as JSON Lines, what `turns_fingerprint` hashes: a file's turns hashed
    chunk by chunk in order give the same digest."""
    return turns.select(pl.col(name).cast(dtype) for name, dtype in TURN_SCHEMA.items()).write_ndjson().encode("utf-8")


def empty_turns() -> pl.DataFrame:
    """A frame with no turns and the loader's schema."""
    return pl.DataFrame(schema={**TURN_SCHEMA, "line": pl.UInt32, "raw": pl.String})


def write_quarantine(rejected: list[RejectedRecord], path: str | Path) -> None:
    """Each rejected record, unchanged, with its reasons: one JSON object a line."""
    body = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rejected)
    atomic_write_bytes(path, body.encode("utf-8"))


# ------------------------------------------------------------------ sources

def _read_source(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, name or "<bytes>"
    if str(source) == "-":
        return sys.stdin.buffer.read(), name or "<stdin>"
    path = Path(source)
    try:
        return path.read_bytes(), name or str(source)
    except FileNotFoundError as exc:
        raise TraceError([f"{source}: no such file"]) from exc
    except IsADirectoryError as exc:
        raise TraceError([f"{source}: is a directory, expected a trace file"]) from exc
    except OSError as exc:
        raise TraceError([f"{source}: cannot be read ({exc.strerror})"]) from exc


def _looks_compressed(data: bytes) -> bool:
    """zlib or zstd magic: polars' line reader would silently decompress such bytes (or fail on
    corrupt ones), though a trace file is plain or gzip text. Lines starting so are bad JSON anyway."""
    zlib = len(data) >= 2 and data[0] == 0x78 and (data[0] << 8 | data[1]) % 31 == 0
    return zlib or data.startswith(b"\x28\xb5\x2f\xfd")


def _split_lines(data: bytes, label: str, first_line: int = 1) -> tuple[pl.DataFrame, list[RejectedRecord], bytes | None]:
    """Frame of (line number, text) for non-blank lines; lines that are not UTF-8 are rejected.
    Also `data` itself when it holds exactly those lines, so it can be decoded in place."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    rejected: list[RejectedRecord] = []
    try:
        if _looks_compressed(data):
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


def _read_jsonl(data: bytes, label: str, first_line: int = 1) -> LoadResult:
    """JSON Lines; `first_line` is the number of `data`'s first line in its file (a streamed chunk's)."""
    lines, rejected, intact = _split_lines(data, label, first_line)
    del data
    read = lines.height + len(rejected)
    if read == 0:
        raise TraceError([f"{label}: empty file: expected one JSON object per line (trace format v1)"])
    if lines.height == 0:
        return LoadResult(turns=empty_turns(), rejected=rejected, read=read, source=label)
    if _is_stage_form(lines["raw"][0]):
        turns, stage_rejected, turn_lines = _join_stage_events(lines, label)
        result = _decode_turns(turns, label, turn_lines)
        per_event = [event for r in result.rejected for event in _per_event(r, turn_lines)]
        result.rejected = sorted(rejected + stage_rejected + per_event, key=lambda r: r.line)
        result.read, result.form = read, "stage"
        return result
    result = _decode_turns(lines.with_columns(json=pl.col("raw")), label, None, intact)
    result.turns, events = _stage_events_among_turns(result.turns, label)
    result.rejected = sorted(rejected + result.rejected + events, key=lambda r: r.line)
    result.read = read
    return result


MIXED_FORMS = "the first line set the form; write every line in one form (docs/trace-format.md)"


def _stage_events_among_turns(turns: pl.DataFrame, label: str) -> tuple[pl.DataFrame, list[RejectedRecord]]:
    """A per-stage event line in a file of whole turns would read as a turn with no stages: say so instead."""
    empty = pl.all_horizontal(pl.col(s).is_null() for s in (*STAGES, "feedback"))
    suspects = turns.filter(empty).filter(pl.col("raw").str.contains('"stage"') & pl.col("raw").str.contains('"data"'))
    events = [(number, raw) for number, raw in suspects.select("line", "raw").iter_rows() if _is_stage_form(raw)]
    if not events:
        return turns, []
    rejected = [RejectedRecord(label, number, (("stage", MIXED, f"a per-stage event in a file of whole turns; {MIXED_FORMS}"),), raw)
                for number, raw in events]
    return turns.filter(~pl.col("line").is_in([number for number, _ in events])), rejected


def _per_event(rejected: RejectedRecord, stage_lines: dict[str, dict[str, int]]) -> list[RejectedRecord]:
    """A rejected turn joined from event lines, back as one record per line with its own bytes: the line
    at fault with the problems, the turn's other lines pointing at it."""
    if isinstance(rejected.raw, bytes) or "\n" not in rejected.raw:
        return [rejected]
    raws = rejected.raw.split("\n")
    try:
        turn_id = str(_strict_json(raws[0]).get("turn_id"))  # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        return [rejected]
    numbers = sorted(n for stage, n in stage_lines.get(turn_id, {}).items() if stage != "first")
    if len(numbers) != len(raws):
        return [rejected]
    at_fault = rejected.line if rejected.line in numbers else numbers[0]
    return [RejectedRecord(rejected.source, n, rejected.problems if n == at_fault else
                           (("", RELATED, f"turn {turn_id!r} has a rejected event on line {at_fault}"),), raw)
            for n, raw in zip(numbers, raws, strict=True)]


def _is_stage_form(first_line: str) -> bool:
    try:
        obj = _strict_json(first_line)
    except ValueError:
        return False
    return isinstance(obj, dict) and "stage" in obj and "data" in obj and not any(s in obj for s in ("asr", "nlu", "result"))


# ------------------------------------------------------------------ decoding

def _strict_json(text: str) -> object:
    """Standard JSON only (no NaN or Infinity); nesting too deep to parse is a ValueError like any
    other malformed line, never a crash."""
    def reject_constant(name: str) -> float:
        raise ValueError(f"{name} is not valid JSON")
    try:
        return json.loads(text, parse_constant=reject_constant)
    except RecursionError:
        raise ValueError("nested too deep (more levels than any trace needs)") from None


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
    if lines.height <= _SMALLEST_CHUNK:
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
            problems = _problems_of_text(json_text) or [("", NOT_A_RECORD, "could not be read as trace format v1")]
            rejected.append(_rejection(label, number, raw, problems, json_text, stage_lines))

    schema = {"line": pl.UInt32, "raw": pl.String, "json": pl.String, **turn_dtype(decode=True).to_schema()}
    decoded = pl.concat(good) if good else pl.DataFrame(schema=schema)
    turns = decoded.sort("line") if len(good) > 1 else decoded
    turns = turns.rename({"json": "joined"}) if stage_lines is not None else turns.drop("json")
    result = _validate_rows(turns, label, from_text=stage_lines is None, stage_lines=stage_lines)
    if stage_lines is not None:  # accepted turns keep the joined turn, so extra fields stay reachable
        result.turns = result.turns.with_columns(raw=pl.col("joined")).drop("joined")
    result.rejected += rejected
    result.read = lines.height
    return result


def _validate_rows(turns: pl.DataFrame, label: str, *, from_text: bool,
                   stage_lines: dict[str, dict[str, int]] | None = None, table: bool = False) -> LoadResult:
    """Check decoded rows with vectorised expressions; explain the failures one by one. `table`: rows of
    a typed table, whose `raw` is written for the rejected ones only (`row_json`)."""
    is_clean = turns.select(clean_turn_expr()).to_series()
    failing = turns.filter(~is_clean)
    if table:
        failing = row_json(failing)
    rejected: list[RejectedRecord] = []
    for row in failing.iter_rows(named=True):
        problems = _problems_of_text(row["raw"]) if from_text else []
        if not problems:
            problems = validate_turn({k: row[k] for k in TURN_FIELD_NAMES}) or [("", WRONG_VALUE, "failed validation")]
        rejected.append(_rejection(label, row["line"], row["raw"], problems, None, stage_lines, turn_id=row["turn_id"]))
    turns, duplicates = _drop_duplicates(turns.filter(is_clean) if failing.height else turns, label, table)
    rejected += duplicates
    extra = [c for c in turns.columns if c not in TURN_FIELD_NAMES and c not in ("line", "raw")]
    turns = turns.select(*[pl.col(f.name).cast(TURN_SCHEMA[f.name]) for f in TURN_FIELDS], "line", "raw", *extra)
    return LoadResult(turns=turns, rejected=rejected, read=turns.height + len(rejected), source=label)


def _problems_of_text(text: str) -> list[FieldProblem]:
    try:
        obj = _strict_json(text)
    except ValueError as exc:
        return [("", NOT_A_RECORD, f"malformed JSON: {exc}")]
    return validate_turn(obj)


def _rejection(label: str, number: int, raw: str, problems: list[FieldProblem], text: str | None,
               stage_lines: dict[str, dict[str, int]] | None, turn_id: str | None = None) -> RejectedRecord:
    """Name the event line that holds the field when the turn was joined from per-stage events."""
    if stage_lines is not None:
        if turn_id is None and text is not None:
            try:
                turn_id = _strict_json(text).get("turn_id")  # type: ignore[attr-defined]
            except (ValueError, AttributeError):
                turn_id = None
        events = stage_lines.get(turn_id or "", {})
        stage = problems[0][0].split(".")[0].split("[")[0]
        number = events.get(stage, events.get("turn", number))
    return RejectedRecord(label, number, tuple(problems), raw)


def duplicate_problem(turn_id: str, session_id: str, index: float, first_turn: int, first_index: int) -> FieldProblem:
    """Why a turn is a duplicate: its turn_id was used before (on `first_turn`, 0 if not), else its place."""
    if first_turn:
        return "turn_id", DUPLICATE, f"duplicate turn_id {turn_id!r}: expected a unique id, first used on line {first_turn}"
    return "turn_index", DUPLICATE, (f"duplicate turn_index {int(index)} in session {session_id!r}: expected one turn per index, "
                          f"first used on line {first_index}")


def bad_records_error(source: str, rejected: list[RejectedRecord]) -> TraceError:
    """--on-error fail: every problem, and nothing written."""
    return TraceError([m for r in rejected for m in r.messages()],
                      summary=f"{source}: {len(rejected)} bad records; nothing was written "
                              "(use --on-error skip to go on with the valid turns)")


def _drop_duplicates(turns: pl.DataFrame, label: str, table: bool = False) -> tuple[pl.DataFrame, list[RejectedRecord]]:
    first_turn_line = pl.col("line").first().over("turn_id")
    first_index_line = pl.col("line").first().over("session_id", "turn_index")
    firsts = turns.select(first_turn=first_turn_line, first_index=first_index_line)
    is_duplicate = firsts.select((pl.col("first_turn") != turns["line"]) | (pl.col("first_index") != turns["line"])).to_series()
    if not is_duplicate.any():
        return turns, []
    rejected = []
    duplicates = row_json(turns.filter(is_duplicate)) if table else turns.filter(is_duplicate)
    for number, raw, turn_id, session_id, index, first_turn, first_index in pl.concat(
            [duplicates, firsts.filter(is_duplicate)], how="horizontal").select(
            "line", "raw", "turn_id", "session_id", "turn_index", "first_turn", "first_index").iter_rows():
        problem = duplicate_problem(turn_id, session_id, index, first_turn if first_turn != number else 0, first_index)
        rejected.append(RejectedRecord(label, number, (problem,), raw))
    return turns.filter(~is_duplicate), rejected


# ---------------------------------------------------------- per-stage form

_ENVELOPE_PROBLEMS = {
    "turn_id": lambda v: None if isinstance(v, str) else "expected a string",
    "session_id": lambda v: None if isinstance(v, str) else "expected a string",
    "turn_index": lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "expected an integer >= 0",
    "stage": lambda v: None if v in EVENT_STAGES else "expected one of " + ", ".join(EVENT_STAGES),
    "data": lambda v: None if v is None or isinstance(v, dict) else "expected an object or null",
}


def _join_stage_events(lines: pl.DataFrame, label: str) -> tuple[pl.DataFrame, list[RejectedRecord], dict[str, dict[str, int]]]:
    """Join per-stage event lines into turn-form JSON, one row per turn, keyed by the first event's line."""
    turns: dict[str, dict] = {}
    stage_lines: dict[str, dict[str, int]] = {}
    raws: dict[str, list[tuple[int, str]]] = {}
    rejected: list[RejectedRecord] = []
    poisoned: dict[str, int] = {}
    for number, raw in lines.select("line", "raw").iter_rows():
        try:
            event = _strict_json(raw)
        except ValueError as exc:
            rejected.append(RejectedRecord(label, number, (("", NOT_A_RECORD, f"malformed JSON: {exc}"),), raw))
            continue
        if not isinstance(event, dict):
            rejected.append(RejectedRecord(label, number, (("", NOT_A_RECORD, "expected a JSON object for the stage event"),), raw))
            continue
        if "stage" not in event and any(stage in event for stage in (*STAGES, "feedback")):
            rejected.append(RejectedRecord(label, number, (("", MIXED, f"a whole turn in a file of per-stage events; {MIXED_FORMS}"),), raw))
            continue
        problems = [(key, MISSING, f"required field is missing ({check(None)})") if key not in event and key != "data"
                    else (key, WRONG_VALUE, problem) for key, check in _ENVELOPE_PROBLEMS.items()
                    if (problem := check(event.get(key))) and (key in event or key != "data")]
        turn_id = event.get("turn_id") if isinstance(event.get("turn_id"), str) else None
        if not problems and turn_id in turns:
            turn, stage = turns[turn_id], event["stage"]
            if (turn["session_id"], turn["turn_index"]) != (event["session_id"], event["turn_index"]):
                problems.append(("session_id", WRONG_VALUE, f"expected session {turn['session_id']!r} turn_index {turn['turn_index']} "
                                               f"as on line {stage_lines[turn_id]['first']}, got {event['session_id']!r} {event['turn_index']}"))
            elif stage in stage_lines[turn_id]:
                problems.append(("stage", DUPLICATE, f"duplicate {stage!r} event for turn {turn_id!r}, first on line {stage_lines[turn_id][stage]}"))
        if problems:
            rejected.append(RejectedRecord(label, number, tuple(problems), raw))
            if turn_id is not None:
                poisoned.setdefault(turn_id, number)
            continue
        assert turn_id is not None
        turn = turns.setdefault(turn_id, {"turn_id": turn_id, "session_id": event["session_id"], "turn_index": event["turn_index"]})
        lines_of_turn = stage_lines.setdefault(turn_id, {"first": number})
        lines_of_turn[event["stage"]] = number
        raws.setdefault(turn_id, []).append((number, raw))
        if event["stage"] == "turn":
            turn.update({k: v for k, v in (event["data"] or {}).items() if k not in ("turn_id", "session_id", "turn_index")})
        else:
            turn[event["stage"]] = event["data"]
    rows = []
    for turn_id, turn in turns.items():
        if turn_id in poisoned:
            for number, raw in raws[turn_id]:
                rejected.append(RejectedRecord(label, number, (("", RELATED, f"turn {turn_id!r} has a rejected event on line {poisoned[turn_id]}"),), raw))
            continue
        rows.append((stage_lines[turn_id]["first"], "\n".join(r for _, r in raws[turn_id]), json.dumps(turn)))
    frame = pl.DataFrame(rows, schema={"line": pl.UInt32, "raw": pl.String, "json": pl.String}, orient="row")
    return frame, rejected, stage_lines


# ------------------------------------------------------------------ parquet

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


def _as_frame(source: object) -> pl.DataFrame | None:
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


def _read_parquet(data: bytes, label: str) -> LoadResult:
    try:
        table = pl.read_parquet(io.BytesIO(data))
    except pl.exceptions.PolarsError as exc:
        raise TraceError([f"{label}: not a readable Parquet file ({exc})"]) from exc
    if table.height == 0:
        raise TraceError([f"{label}: empty file: expected at least one turn"])
    return _read_table(table, label)


def _read_table(table: pl.DataFrame, label: str, first_row: int = 1) -> LoadResult:
    """Turns of a typed table (Parquet, a DataFrame): columns cast to the format's types, each
    row checked like a JSON line (its number stands for the line)."""
    return _validate_rows(table_rows(table, label, first_row), label, from_text=False, table=True)


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
    extra = [c for c in table.columns if c not in TURN_FIELD_NAMES]
    turns = table.select(*columns, *extra).with_row_index("line", offset=first_row).cast({"line": pl.UInt32})
    return turns.with_columns(raw=pl.lit(None, pl.String))


def row_json(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows of a table with `raw` set to the row as one JSON object, what stands for a line's text
    where a record is rejected (every row's would cost more than reading the table)."""
    return rows.with_columns(raw=pl.struct(pl.all().exclude("line", "raw")).struct.json_encode())


__all__ = ["LoadResult", "RejectedRecord", "load_traces", "read_traces", "write_quarantine"]
