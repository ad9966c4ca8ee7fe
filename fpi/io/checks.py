"""The checks every turn passes, whatever it was read from: the trace format's rules as vectorised
expressions (failures explained one by one), one use per turn_id and per place in a session, and, over
the whole input, that most turns carry some stage."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import polars as pl

from fpi.contract.errors import TraceError
from fpi.contract.trace_format import (DUPLICATE, NOT_A_RECORD, STAGES, TURN_FIELD_NAMES, TURN_FIELDS, TURN_SCHEMA,
                                       WRONG_VALUE, FieldProblem, clean_turn_expr, validate_turn)
from fpi.io.mapping import Mapping
from fpi.io.read_result import LoadResult, RejectedRecord

# The earliest line that used a turn's id, and its place (session, index): a later use is a duplicate.
FIRST_TURN = pl.col("line").min().over("turn_id")
FIRST_INDEX = pl.col("line").min().over("session_id", "turn_index")
MOSTLY = 0.5  # more turns than this without any stage: the fields are named otherwise
NO_STAGE = pl.all_horizontal(pl.col(s).is_null() for s in (*STAGES, "feedback"))


RESERVED = ("line", "raw")  # what fpi adds to every record: its line in the source, and its text


def refuse_reserved(columns: list[str], label: str) -> None:
    """A source field named as a column fpi adds would be lost under it: named instead, before any work."""
    taken = [name for name in RESERVED if name in columns]
    if taken:
        raise TraceError([f"{label}: a field is named `{taken[0]}`, which fpi uses for the record's place in the file; "
                          "rename that field (in the data, or in a view of it)"])


def strict_json(text: str) -> object:
    """Standard JSON only (no NaN or Infinity); nesting too deep to parse is a ValueError like any
    other malformed line, never a crash."""
    def reject_constant(name: str) -> float:
        raise ValueError(f"{name} is not valid JSON")
    try:
        document = json.loads(text, parse_constant=reject_constant)
    except RecursionError:
        raise ValueError("nested too deep (more levels than any trace needs)") from None
    refuse_lone_surrogates(document, text)
    return document


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def refuse_lone_surrogates(document: object, text: str) -> None:
    """ValueError when a string of `document` (parsed from `text`) holds half a surrogate pair
    (`\\ud800` alone): that is not text, and nothing downstream can write it."""
    if not _ESCAPED_SURROGATE.search(text):
        return
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"a string holds {exc.object[exc.start:exc.end]!r}, an unpaired surrogate, which is not text") from None


def row_json(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows of a table with `raw` set to the row as one JSON object, what stands for a line's text
    where a record is rejected (every row's would cost more than reading the table)."""
    return rows.with_columns(raw=pl.struct(pl.all().exclude("line", "raw")).struct.json_encode())


def validate_rows(turns: pl.DataFrame, label: str, *, from_text: bool,
                  stage_lines: dict[str, dict[str, int]] | None = None, table: bool = False) -> LoadResult:
    """Check decoded rows with vectorised expressions; explain the failures one by one. `table`: rows of
    a typed table, whose `raw` is written for the rejected ones only (`row_json`)."""
    is_clean = turns.select(clean_turn_expr()).to_series()
    failing = turns.filter(~is_clean)
    if table:
        failing = row_json(failing)
    rejected: list[RejectedRecord] = []
    for row in failing.iter_rows(named=True):
        problems = problems_of_text(row["raw"]) if from_text else []
        if not problems:
            problems = validate_turn({k: row[k] for k in TURN_FIELD_NAMES}) or [("", WRONG_VALUE, "failed validation")]
        rejected.append(rejection(label, row["line"], row["raw"], problems, None, stage_lines, turn_id=row["turn_id"]))
    turns, duplicates = _drop_duplicates(turns.filter(is_clean) if failing.height else turns, label, table)
    rejected += duplicates
    extra = [c for c in turns.columns if c not in TURN_FIELD_NAMES and c not in ("line", "raw")]
    turns = turns.select(*[pl.col(f.name).cast(TURN_SCHEMA[f.name]) for f in TURN_FIELDS], "line", "raw", *extra)
    return LoadResult(turns=turns, rejected=rejected, read=turns.height + len(rejected), source=label)


def problems_of_text(text: str) -> list[FieldProblem]:
    try:
        obj = strict_json(text)
    except ValueError as exc:
        return [("", NOT_A_RECORD, f"malformed JSON: {exc}")]
    return validate_turn(obj)


def rejection(label: str, number: int, raw: str, problems: list[FieldProblem], text: str | None,
              stage_lines: dict[str, dict[str, int]] | None, turn_id: str | None = None) -> RejectedRecord:
    """Name the event line that holds the field when the turn was joined from per-stage events."""
    if stage_lines is not None:
        if turn_id is None and text is not None:
            try:
                turn_id = strict_json(text).get("turn_id")  # type: ignore[attr-defined]
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


def duplicates_rejected(duplicates: pl.DataFrame, label: str) -> list[RejectedRecord]:
    """The duplicate turns (`line`, `raw`, `turn_id`, `session_id`, `turn_index`, `first_turn` (the line the id
    was first used on, null when it is not reused) and `first_index`), each rejected with why: one naming for
    every engine."""
    rejected = []
    for number, raw, turn_id, session_id, index, first_turn, first_index in duplicates.select(
            "line", "raw", "turn_id", "session_id", "turn_index", "first_turn", "first_index").iter_rows():
        problem = duplicate_problem(turn_id, session_id, index, first_turn or 0, first_index)
        rejected.append(RejectedRecord(label, number, (problem,), raw))
    return rejected


def _drop_duplicates(turns: pl.DataFrame, label: str, table: bool = False) -> tuple[pl.DataFrame, list[RejectedRecord]]:
    """Every turn after the first with its turn_id or its place in a session, by row: one line can hold
    several turns (spans of one OpenTelemetry request)."""
    row = pl.int_range(pl.len(), dtype=pl.UInt32)
    firsts = turns.select("line", _row=row).select(
        first_turn=pl.when(pl.col("_row") != pl.col("_row").min().over(turns["turn_id"])).then(pl.col("line").min().over(turns["turn_id"])),
        first_index=pl.col("line").min().over(turns["session_id"], turns["turn_index"]),
        reused_place=pl.col("_row") != pl.col("_row").min().over(turns["session_id"], turns["turn_index"]))
    is_duplicate = firsts.select(pl.col("first_turn").is_not_null() | pl.col("reused_place")).to_series()
    if not is_duplicate.any():
        return turns, []
    duplicates = row_json(turns.filter(is_duplicate)) if table else turns.filter(is_duplicate)
    rejected = duplicates_rejected(pl.concat([duplicates, firsts.filter(is_duplicate).drop("reused_place")], how="horizontal"), label)
    return turns.filter(~is_duplicate), rejected


# ------------------------------------------------------------------ the whole input

def fields_seen(turns: pl.DataFrame, rows: int = 50) -> list[str]:
    """Top-level field names in the first records, in the order first seen (a table's: its columns
    with a value in them)."""
    head = turns.head(rows)
    if head["raw"].null_count() == head.height:
        return [c for c in head.columns if c not in ("line", "raw") and head[c].null_count() < head.height]
    return fields_of_lines(head["raw"].to_list())


def fields_of_lines(lines: list[str]) -> list[str]:
    """Top-level field names of JSON lines, in the order first seen."""
    seen: dict[str, None] = {}
    for raw in lines:
        try:
            obj = strict_json(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            seen.update(dict.fromkeys(map(str, obj)))
    return list(seen)


@dataclass
class StageCheck:
    """Whether most accepted turns carry none of the stages but fields the format (or the mapping) does not
    name: their fields are named otherwise, and classifying them would be a confident wrong answer. Counted
    part by part, decided once for the whole input, by every engine."""

    turns: int = 0
    stageless: int = 0
    seen: list[str] | None = field(default=None)  # the fields of the first records, for the message

    def add(self, turns: pl.DataFrame) -> None:
        """Count a part's accepted turns (with `raw`, as read); the first part gives the fields seen."""
        if self.seen is None:
            self.seen = fields_seen(turns) if turns.height else []
        self.add_counts(turns.height, int(turns.select(NO_STAGE.sum()).item()) if turns.height else 0)

    def add_counts(self, turns: int, stageless: int) -> None:
        self.turns += turns
        self.stageless += stageless

    @property
    def suspect(self) -> bool:
        """Most turns carry no stage: the fields seen decide."""
        return self.turns > 0 and self.stageless / self.turns > MOSTLY

    def check(self, label: str, mapping: Mapping | None = None) -> None:
        """Raise when most turns carry no stage but fields the format (or the `mapping` they were read through)
        does not name."""
        if not self.suspect:
            return
        seen = self.seen or []
        if mapping is None and not set(seen) - set(TURN_FIELD_NAMES):
            return  # turns that carry only what the format names (ids, context) are valid, if thin
        raise no_stages_error(self.stageless / self.turns, seen, label, mapping.source if mapping is not None else None)


def no_stages_error(empty: float, seen: list[str], label: str, mapping_source: str | None = None) -> TraceError:
    """Most turns carry no stage: say which fields were seen, and how to read them."""
    if mapping_source is not None:
        return TraceError([f"{label}: {empty:.0%} of the turns get none of the stages ({', '.join(STAGES)}) through "
                           f"{mapping_source}; the fields seen are: {', '.join(seen[:30]) or 'none'}. Map the stage "
                           "fields (docs/mapping.md), or draft a mapping with `fpi map infer " + label + "`"])
    return TraceError([f"{label}: {empty:.0%} of the turns carry none of the stages trace format v1 names "
                       f"({', '.join(STAGES)}); the fields seen are: {', '.join(seen[:30]) or 'none beyond the ids'}. "
                       "Read them through a mapping (--mapping FILE; docs/mapping.md), drafted by "
                       f"`fpi map infer {label}`, or name them as docs/trace-format.md does"])
