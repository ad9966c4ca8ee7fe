"""Trace format v1 as one spec: the polars dtype, the JSON Schema and the
precise validator all derive from it, so they cannot drift apart."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl

# A problem of one record: (field path, stable code, what was expected and found). The codes (docs/lint.md):
NOT_A_RECORD = "T001"  # not a readable record: malformed JSON, not UTF-8, not an object, a line of another format
MISSING = "T002"  # a required field is missing
WRONG_VALUE = "T003"  # a field of the wrong type, out of range, not among its values, or a value a mapping cannot convert
DUPLICATE = "T004"  # a turn_id, or a session's turn_index, used before
MIXED = "T005"  # whole turns and per-stage events in one file
RELATED = "T006"  # a line rejected because another line of the same turn was
FieldProblem = tuple[str, str, str]

STAGES = ("wake", "asr", "nlu", "er", "result")
LABELS = (*STAGES, "correct")
COMPONENTS = STAGES  # the labels that are defects
RESULT_STATUSES = ("success", "partial", "clarify", "fallback", "unsupported", "error", "none")
ER_STATUSES = ("resolved", "ambiguous", "unresolved")
EXPLICIT_FEEDBACK = ("positive", "negative")

MAX_INDEX = 2**53 - 1  # the largest integer every JSON reader holds exactly, and its neighbour apart (2^53 + 1 reads as 2^53)
# RFC 3339 / ISO 8601 date-time; a missing offset means UTC.
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?$"
_TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN)


@dataclass(frozen=True)
class Field:
    """One field of the trace format; `fields` are an object's members or an array's item members."""

    name: str
    kind: str  # string | integer | number | boolean | object | array
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    fields: tuple[Field, ...] = ()
    doc: str = ""
    sparse: bool = False  # added to v1 after its first release: written only where a turn has it (`json_lines`)


def _score(name: str, doc: str = "") -> Field:
    return Field(name, "number", minimum=0.0, maximum=1.0, doc=doc or "0..1")


TURN_FIELDS: tuple[Field, ...] = (
    Field("turn_id", "string", required=True, doc="unique in a file"),
    Field("session_id", "string", required=True),
    Field("turn_index", "integer", required=True, minimum=0, maximum=MAX_INDEX, doc="order of the turn in its session"),
    Field("timestamp", "string", pattern=TIMESTAMP_PATTERN, doc="ISO 8601 date-time; no offset means UTC"),
    Field("locale", "string"),
    Field("device", "object", fields=(Field("type", "string"), Field("has_screen", "boolean"))),
    Field("wake", "object", fields=(
        Field("detected", "boolean", required=True),
        _score("score"),
        Field("verified", "boolean", doc="second-stage verification; null when the device has none"),
    )),
    Field("asr", "object", fields=(
        Field("text", "string", required=True),
        _score("confidence"),
        Field("nbest", "array", fields=(Field("text", "string", required=True), _score("confidence"))),
        Field("eou_probability", "number", minimum=0.0, maximum=1.0, sparse=True,
              doc="0..1: how sure the turn detector was that the user had finished when it ended their turn"),
        Field("ttfb_ms", "number", minimum=0.0, sparse=True, doc="milliseconds from the audio sent to the STT's first result"),
    )),
    Field("nlu", "object", fields=(
        Field("domain", "string"),
        Field("intent", "string", required=True),
        _score("confidence"),
        Field("slots", "array", fields=(
            Field("name", "string", required=True),
            Field("value", "string", required=True),
            _score("confidence"),
        )),
        Field("nbest", "array", fields=(
            Field("domain", "string"),
            Field("intent", "string", required=True),
            _score("confidence"),
        )),
    )),
    Field("er", "object", fields=(
        Field("entities", "array", required=True, fields=(
            Field("slot", "string", required=True),
            Field("value", "string"),
            Field("resolved_id", "string"),
            Field("resolved_value", "string"),
            _score("score"),
            Field("status", "string", required=True, enum=ER_STATUSES),
        )),
    )),
    Field("result", "object", fields=(
        Field("status", "string", required=True, enum=RESULT_STATUSES),
        Field("action", "string"),
        Field("response", "string"),
        Field("latency_ms", "number", minimum=0.0),
        Field("ttfb_ms", "number", minimum=0.0, sparse=True,
              doc="milliseconds from the request to the LLM's first token (or the reply's first byte)"),
    )),
    Field("feedback", "object", fields=(
        Field("barge_in", "boolean"),
        Field("explicit", "string", enum=EXPLICIT_FEEDBACK),
    )),
    Field("label", "string", enum=LABELS, doc="gold failure point"),
)
TURN_FIELD_NAMES = tuple(f.name for f in TURN_FIELDS)

# Per-stage form: one line per stage event, joined into turns by the loader.
EVENT_STAGES = (*STAGES, "feedback", "turn")


def _dtype(field: Field, *, decode: bool = False) -> pl.DataType:
    if field.kind == "string":
        return pl.String()
    if field.kind == "integer":
        # Decoded as float so that 1.5 is caught rather than truncated; cast after checks.
        return pl.Float64() if decode else pl.Int64()
    if field.kind == "number":
        return pl.Float64()
    if field.kind == "boolean":
        return pl.Boolean()
    inner = pl.Struct({f.name: _dtype(f, decode=decode) for f in field.fields})
    return pl.List(inner) if field.kind == "array" else inner


def turn_dtype(*, decode: bool = False) -> pl.Struct:
    """The struct one JSON line decodes to (`decode=True` reads integers as floats)."""
    return pl.Struct({f.name: _dtype(f, decode=decode) for f in TURN_FIELDS})


TURN_SCHEMA = pl.Schema({f.name: _dtype(f) for f in TURN_FIELDS})
"""Columns of the frame `load_traces` returns, before `line` and `raw`."""


def _dense(field: Field) -> pl.DataType:
    """The dtype of `field` without its sparse members."""
    if field.kind not in ("object", "array"):
        return _dtype(field)
    inner = pl.Struct({f.name: _dense(f) for f in field.fields if not f.sparse})
    return pl.List(inner) if field.kind == "array" else inner


def _sparse_present() -> pl.Expr:
    """True where a turn has a value of a sparse member."""
    found = [pl.col(top.name).struct.field(m.name).is_not_null() for top in TURN_FIELDS if top.kind == "object"
             for m in top.fields if m.sparse]
    return pl.any_horizontal(found)


def json_lines(turns: pl.DataFrame) -> str:
    """Turns (in TURN_SCHEMA's columns, or castable to them) as trace-format JSON Lines, every field written, null or
    not, but the sparse members (added to v1 later), which a line has only when the turn has one of them: a turn
    without them keeps the bytes, and so the fingerprint, it had before they were added."""
    typed = turns.select(pl.col(name).cast(dtype) for name, dtype in TURN_SCHEMA.items())
    dense = typed.select(pl.col(f.name).cast(_dense(f)) for f in TURN_FIELDS).write_ndjson()
    present = typed.select(_sparse_present()).to_series() if typed.height else pl.Series([], dtype=pl.Boolean)
    if not present.any():
        return dense
    full = pl.Series(typed.write_ndjson().splitlines())  # JSON escapes newlines in text: one line per turn
    lines = pl.select(pl.when(present).then(full).otherwise(pl.Series(dense.splitlines()))).to_series()
    return "\n".join(lines.to_list()) + "\n"


def with_every_member(turns: pl.DataFrame) -> pl.DataFrame:
    """`turns` with every member of each stage, those it lacks null: a frame made before members were added (the
    simulator's, one a notebook built) reads as one the loader gives."""
    def lacks_members(field: Field) -> bool:
        dtype = turns.schema.get(field.name)
        return isinstance(dtype, pl.Struct) and bool({m.name for m in field.fields} - {m.name for m in dtype.fields})
    missing = {f.name: _dtype(f) for f in TURN_FIELDS if f.kind == "object" and lacks_members(f)}
    return turns.with_columns(pl.col(name).cast(dtype) for name, dtype in missing.items()) if missing else turns


# ---------------------------------------------------------------- JSON Schema

def _json_schema(field: Field) -> dict:
    if field.kind in ("object", "array"):
        members = {f.name: _json_schema(f) for f in field.fields}
        obj = {"type": ["object", "null"], "properties": members, "additionalProperties": True}
        required = [f.name for f in field.fields if f.required]
        if required:
            obj["required"] = required
        if field.kind == "array":
            obj["type"] = "object"
            out: dict = {"type": ["array", "null"], "items": obj}
        else:
            out = obj
    else:
        out = {"type": [field.kind, "null"]}
        if field.minimum is not None:
            out["minimum"] = field.minimum
        if field.maximum is not None:
            out["maximum"] = field.maximum
        if field.enum:
            out["enum"] = [*field.enum, None]
        if field.pattern:
            out["pattern"] = field.pattern
    if field.required:
        out["type"] = [t for t in out["type"] if t != "null"]
        if "enum" in out:
            out["enum"] = [v for v in out["enum"] if v is not None]
        if len(out["type"]) == 1:
            out["type"] = out["type"][0]
    if field.doc:
        out["description"] = field.doc
    return out


def trace_json_schema() -> dict:
    """JSON Schema (draft 2020-12) of one turn in the trace format."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://fpi.dev/schemas/trace-v1.schema.json",
        "title": "fpi trace format v1: one turn",
        "type": "object",
        "properties": {f.name: _json_schema(f) for f in TURN_FIELDS},
        "required": [f.name for f in TURN_FIELDS if f.required],
        "additionalProperties": True,
    }


# ---------------------------------------------------------- precise validator

_JSON_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
                    int: "a number", float: "a number", type(None): "null"}


def _describe(value: object) -> str:
    kind = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return kind
    text = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    return f"{kind} {text[:40]}"


def _expected(field: Field) -> str:
    if field.enum:
        return "one of " + ", ".join(field.enum)
    if field.kind == "number" and field.maximum is not None:
        return f"a number in [{field.minimum:g}, {field.maximum:g}]"
    if field.kind == "number" and field.minimum is not None:
        return f"a number >= {field.minimum:g}"
    if field.kind == "integer":
        bound = " and <= 2^53 - 1" if field.maximum == MAX_INDEX else ""
        return ("an integer >= 0" if field.minimum == 0 else "an integer") + bound
    if field.pattern == TIMESTAMP_PATTERN:
        return "an ISO 8601 date-time such as 2026-01-31T09:30:00Z"
    return {"string": "a string", "boolean": "true or false", "object": "an object",
            "array": "an array", "number": "a number"}[field.kind]


def _check_value(field: Field, value: Any, path: str, problems: list[FieldProblem]) -> None:
    if value is None:
        if field.required:
            problems.append((path, WRONG_VALUE, f"expected {_expected(field)}, got null"))
        return
    kind = field.kind
    ok = {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value) and float(value).is_integer(),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }[kind]
    if not ok:
        problems.append((path, WRONG_VALUE, f"expected {_expected(field)}, got {_describe(value)}"))
        return
    if kind in ("number", "integer"):
        if (field.minimum is not None and value < field.minimum) or (
                field.maximum is not None and value > field.maximum):
            problems.append((path, WRONG_VALUE, f"expected {_expected(field)}, got {value}"))
    elif field.enum and value not in field.enum:
        problems.append((path, WRONG_VALUE, f"expected {_expected(field)}, got {_describe(value)}"))
    elif field.pattern and not (_TIMESTAMP_RE.match(value) and _is_real_moment(value)):
        problems.append((path, WRONG_VALUE, f"expected {_expected(field)}, got {_describe(value)}"))
    elif kind == "object":
        _check_members(field.fields, value, path, problems)
    elif kind == "array":
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if not isinstance(item, dict):
                problems.append((item_path, WRONG_VALUE, f"expected an object, got {_describe(item)}"))
            else:
                _check_members(field.fields, item, item_path, problems)


def _check_members(fields: tuple[Field, ...], obj: dict, path: str, problems: list[FieldProblem]) -> None:
    for member in fields:
        member_path = f"{path}.{member.name}" if path else member.name
        if member.name not in obj:
            if member.required:
                problems.append((member_path, MISSING, f"required field is missing (expected {_expected(member)})"))
            continue
        _check_value(member, obj[member.name], member_path, problems)


def validate_turn(obj: object) -> list[FieldProblem]:
    """Every problem of one decoded turn, as (field path, code, what was expected and found)."""
    if not isinstance(obj, dict):
        return [("", NOT_A_RECORD, f"expected a JSON object for the turn, got {_describe(obj)}")]
    problems: list[FieldProblem] = []
    _check_members(TURN_FIELDS, obj, "", problems)
    return problems


# ------------------------------------------------------- vectorised fast check

def _is_real_moment(text: str) -> bool:
    """A date that exists on the calendar and a time of day that exists (leap second allowed)."""
    try:
        date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    offset = re.search(r"[+-](\d{2}):(\d{2})$", text)
    return hour <= 23 and minute <= 59 and second <= 60 and (offset is None or (int(offset[1]) <= 23 and int(offset[2]) <= 59))


def _real_moment(value: pl.Expr) -> pl.Expr:
    """The vectorised twin of `_is_real_moment`."""
    def part(start: int) -> pl.Expr:
        return value.str.slice(start, 2).cast(pl.Int32, strict=False)
    offset = value.str.extract(r"[+-](\d{2}):(\d{2})$", 1).cast(pl.Int32, strict=False)
    offset_minutes = value.str.extract(r"[+-]\d{2}:(\d{2})$", 1).cast(pl.Int32, strict=False)
    return (value.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False).is_not_null()
            & (part(11) <= 23) & (part(14) <= 59) & (part(17) <= 60)
            & (offset.is_null() | ((offset <= 23) & (offset_minutes <= 59))))


def _value_ok(field: Field, value: pl.Expr) -> pl.Expr:
    """True where `value` meets `field` (the fast twin of `_check_value`)."""
    if field.kind in ("number", "integer"):
        ok = value.is_finite()
        if field.kind == "integer":
            ok = ok & (value == value.floor())
        if field.minimum is not None:
            ok = ok & (value >= field.minimum)
        if field.maximum is not None:
            ok = ok & (value <= field.maximum)
    elif field.enum:
        ok = value.is_in(list(field.enum))
    elif field.pattern:
        ok = value.str.contains(field.pattern) & _real_moment(value)
    elif field.kind == "object":
        ok = _members_ok(field.fields, value)
    elif field.kind == "array":
        ok = value.list.eval(_members_ok(field.fields, pl.element())).list.all()
    else:
        ok = pl.lit(True)
    if field.required:
        return value.is_not_null() & ok.fill_null(False)
    return value.is_null() | ok.fill_null(True)


def _members_ok(fields: tuple[Field, ...], struct: pl.Expr) -> pl.Expr:
    checks = [_value_ok(f, struct.struct.field(f.name)) for f in fields]
    return pl.all_horizontal(checks) if checks else pl.lit(True)


def clean_turn_expr() -> pl.Expr:
    """True for rows of a frame in TURN_SCHEMA (integers may still be floats) that validate."""
    return pl.all_horizontal([_value_ok(f, pl.col(f.name)) for f in TURN_FIELDS])
