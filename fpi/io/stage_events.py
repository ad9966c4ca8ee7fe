"""The per-stage form of trace format v1: one line per stage event, joined into whole turns, with
each problem named on the event line that holds it."""

from __future__ import annotations

import json

import polars as pl

from fpi.contract.trace_format import DUPLICATE, EVENT_STAGES, MISSING, MIXED, NOT_A_RECORD, RELATED, STAGES, WRONG_VALUE
from fpi.io.checks import strict_json
from fpi.io.read_result import RejectedRecord

MIXED_FORMS = "the first line set the form; write every line in one form (docs/trace-format.md)"


def stage_events_among_turns(turns: pl.DataFrame, label: str) -> tuple[pl.DataFrame, list[RejectedRecord]]:
    """A per-stage event line in a file of whole turns would read as a turn with no stages: say so instead."""
    empty = pl.all_horizontal(pl.col(s).is_null() for s in (*STAGES, "feedback"))
    suspects = turns.filter(empty).filter(pl.col("raw").str.contains('"stage"') & pl.col("raw").str.contains('"data"'))
    events = [(number, raw) for number, raw in suspects.select("line", "raw").iter_rows() if is_stage_form(raw)]
    if not events:
        return turns, []
    rejected = [RejectedRecord(label, number, (("stage", MIXED, f"a per-stage event in a file of whole turns; {MIXED_FORMS}"),), raw)
                for number, raw in events]
    return turns.filter(~pl.col("line").is_in([number for number, _ in events])), rejected


def per_event(rejected: RejectedRecord, stage_lines: dict[str, dict[str, int]]) -> list[RejectedRecord]:
    """A rejected turn joined from event lines, back as one record per line with its own bytes: the line
    at fault with the problems, the turn's other lines pointing at it."""
    if isinstance(rejected.raw, bytes) or "\n" not in rejected.raw:
        return [rejected]
    raws = rejected.raw.split("\n")
    try:
        turn_id = str(strict_json(raws[0]).get("turn_id"))  # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        return [rejected]
    numbers = sorted(n for stage, n in stage_lines.get(turn_id, {}).items() if stage != "first")
    if len(numbers) != len(raws):
        return [rejected]
    at_fault = rejected.line if rejected.line in numbers else numbers[0]
    return [RejectedRecord(rejected.source, n, rejected.problems if n == at_fault else
                           (("", RELATED, f"turn {turn_id!r} has a rejected event on line {at_fault}"),), raw)
            for n, raw in zip(numbers, raws, strict=True)]


def is_stage_form(first_line: str) -> bool:
    try:
        obj = strict_json(first_line)
    except ValueError:
        return False
    return isinstance(obj, dict) and "stage" in obj and "data" in obj and not any(s in obj for s in ("asr", "nlu", "result"))


_ENVELOPE_PROBLEMS = {
    "turn_id": lambda v: None if isinstance(v, str) else "expected a string",
    "session_id": lambda v: None if isinstance(v, str) else "expected a string",
    "turn_index": lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "expected an integer >= 0",
    "stage": lambda v: None if v in EVENT_STAGES else "expected one of " + ", ".join(EVENT_STAGES),
    "data": lambda v: None if v is None or isinstance(v, dict) else "expected an object or null",
}


def join_stage_events(lines: pl.DataFrame, label: str) -> tuple[pl.DataFrame, list[RejectedRecord], dict[str, dict[str, int]]]:
    """Join per-stage event lines into turn-form JSON, one row per turn, keyed by the first event's line."""
    turns: dict[str, dict] = {}
    stage_lines: dict[str, dict[str, int]] = {}
    raws: dict[str, list[tuple[int, str]]] = {}
    rejected: list[RejectedRecord] = []
    poisoned: dict[str, int] = {}
    for number, raw in lines.select("line", "raw").iter_rows():
        try:
            event = strict_json(raw)
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


