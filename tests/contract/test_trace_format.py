import json

import jsonschema
import polars as pl

from fpi.contract.trace_format import LABELS, TURN_FIELDS, TURN_SCHEMA, trace_json_schema, validate_turn
from conftest import ROOT


def test_shipped_json_schema_is_the_generated_one():
    shipped = json.loads((ROOT / "fpi" / "schemas" / "trace-v1.schema.json").read_text())
    assert shipped == trace_json_schema()


def test_json_schema_agrees_with_validator_on_fixture_and_bad_turns():
    validator = jsonschema.Draft202012Validator(trace_json_schema())
    lines = (ROOT / "fixtures" / "traces.jsonl").read_text().splitlines()[:200]
    for line in lines:
        obj = json.loads(line)
        assert validate_turn(obj) == []
        assert validator.is_valid(obj)
    bad = json.loads(lines[0])
    bad["asr"]["confidence"] = 2
    assert validate_turn(bad) == [("asr.confidence", "T003", "expected a number in [0, 1], got 2")]
    assert not validator.is_valid(bad)


def test_validator_names_nested_paths_with_indices():
    obj = {"turn_id": "a", "session_id": "s", "turn_index": 0,
           "er": {"entities": [{"slot": "x", "status": "resolved"}, {"slot": "y", "status": "maybe"}]}}
    assert validate_turn(obj) == [("er.entities[1].status", "T003", "expected one of resolved, ambiguous, unresolved, got a string 'maybe'")]


def test_validator_reports_missing_required_and_wrong_root():
    assert validate_turn([]) == [("", "T001", "expected a JSON object for the turn, got an array")]
    problems = {path: (code, message) for path, code, message in validate_turn({"turn_index": True})}
    assert problems["turn_id"][0] == problems["session_id"][0] == "T002"  # missing
    assert problems["turn_index"] == ("T003", "expected an integer >= 0 and <= 2^53 - 1, got a boolean true")


def test_frame_schema_covers_every_field():
    assert list(TURN_SCHEMA) == [f.name for f in TURN_FIELDS]
    assert TURN_SCHEMA["turn_index"] == pl.Int64
    assert LABELS == ("wake", "asr", "nlu", "er", "result", "correct")


def test_members_added_later_are_written_only_where_a_turn_has_them():
    """A turn without the sparse members (eou_probability, ttfb_ms) keeps the line, and so the fingerprint, it had
    before they were added; a turn with one has every member written; cut anywhere, the lines are the same."""
    from fpi import load_traces
    from fpi.contract.trace_format import json_lines
    from fpi.io.traces import canonical_turns

    turns = load_traces(ROOT / "fixtures" / "traces.jsonl").head(40)
    lines = json_lines(turns).splitlines()
    assert not any("eou_probability" in line or "ttfb_ms" in line for line in lines)
    asr = pl.col("asr")
    timed = turns.with_columns(asr=pl.when(pl.int_range(pl.len()) == 3).then(asr.struct.with_fields(eou_probability=pl.lit(0.4)))
                               .otherwise(asr))
    changed = json_lines(timed).splitlines()
    assert [i for i, (a, b) in enumerate(zip(lines, changed, strict=True)) if a != b] == [3]
    assert json.loads(changed[3])["asr"]["eou_probability"] == 0.4 and json.loads(changed[3])["result"]["ttfb_ms"] is None
    assert canonical_turns(timed) == canonical_turns(timed.head(3)) + canonical_turns(timed.slice(3))


def test_a_signal_out_of_range_is_named():
    obj = {"turn_id": "a", "session_id": "s", "turn_index": 0, "asr": {"text": "hi", "eou_probability": 1.5},
           "result": {"status": "success", "ttfb_ms": -3}}
    assert validate_turn(obj) == [("asr.eou_probability", "T003", "expected a number in [0, 1], got 1.5"),
                                  ("result.ttfb_ms", "T003", "expected a number >= 0, got -3")]
