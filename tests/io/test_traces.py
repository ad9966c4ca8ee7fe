import gzip
import json
import math

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fpi import TraceError, load_traces, read_traces, simulate
from fpi.contract.trace_format import NOT_A_RECORD, TURN_FIELD_NAMES, TURN_FIELDS, validate_turn
from fpi.simulation.simulator import stage_events
from fpi.testing import any_json, as_loaded, objects, sessions
from conftest import FIXTURES, run_cli, turn, write_jsonl

BAD_CASES = sorted(p.name.removesuffix(".jsonl") for p in (FIXTURES / "bad").glob("*.jsonl"))


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_fixture_gives_its_messages_and_exit_code(name, monkeypatch):
    monkeypatch.chdir(FIXTURES.parent)
    expected = json.loads((FIXTURES / "bad" / f"{name}.expected.json").read_text())
    result = run_cli("validate", f"fixtures/bad/{name}.jsonl")
    assert result.exit_code == expected["exit_code"] == 2
    for message in expected["messages"]:
        assert message in result.stderr
    assert expected["messages"], "every bad fixture names at least one problem"


DOCUMENT_CASES = sorted(p.name.removesuffix(".expected.json") for p in (FIXTURES / "bad" / "documents").glob("*.expected.json"))


@pytest.mark.parametrize("name", DOCUMENT_CASES)
def test_bad_document_gives_its_messages_and_exit_code(name, monkeypatch):
    """Rules, gate policies, mappings and mapped records: each kind of bad document names file:line."""
    monkeypatch.chdir(FIXTURES.parent)
    expected = json.loads((FIXTURES / "bad" / "documents" / f"{name}.expected.json").read_text())
    result = run_cli(*expected["command"])
    assert result.exit_code == expected["exit_code"] == 2
    assert expected["messages"] and all(message in result.stderr for message in expected["messages"])


@pytest.mark.parametrize("name", [n for n in BAD_CASES if n not in ("empty", "blank_lines_only", "csv_export", "other_field_names",
                                                                    "spans_without_mapping")])
def test_skip_policy_keeps_valid_turns_and_quarantines_the_rest(name, tmp_path):
    source = FIXTURES / "bad" / f"{name}.jsonl"
    quarantine = tmp_path / "q.jsonl"
    result = run_cli("validate", source, "--on-error", "skip", "--quarantine", quarantine)
    assert result.exit_code == 3
    loaded = read_traces(source)
    records = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert len(records) == len(loaded.rejected) >= 1
    assert loaded.read == loaded.accepted + len(loaded.rejected)
    assert f"read {loaded.read}, accepted {loaded.accepted}, quarantined {len(loaded.rejected)}" in result.stderr
    raw_lines = source.read_bytes().split(b"\n")
    for record in records:
        kept = record["raw"].encode() if "raw" in record else __import__("base64").b64decode(record["raw_base64"])
        assert kept in raw_lines or b"\n" in kept  # unchanged (per-stage turns keep all their event lines)
        assert record["errors"] and record["source"].endswith(f"{name}.jsonl")


def test_fail_policy_raises_with_every_problem():
    with pytest.raises(TraceError) as info:
        load_traces(FIXTURES / "bad" / "out_of_range.jsonl")
    assert "out_of_range.jsonl:2: nlu.confidence: expected a number in [0, 1], got 1.7" in str(info.value)


def test_missing_file_and_directory_are_clear_errors(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        read_traces(tmp_path / "nope.jsonl")
    with pytest.raises(TraceError, match="is a directory"):
        read_traces(tmp_path)


def test_extra_fields_are_kept_untouched(tmp_path):
    row = turn(asr={"text": "hi", "confidence": 0.5, "vendor": {"x": [1, 2]}}, human_label="asr", custom=1)
    path = write_jsonl(tmp_path / "t.jsonl", [row])
    turns = load_traces(path)
    assert json.loads(turns["raw"][0]) == row
    assert turns["asr"][0] == {"text": "hi", "confidence": 0.5, "nbest": None, "eou_probability": None, "ttfb_ms": None}


def test_blank_lines_and_crlf_keep_line_numbers(tmp_path):
    path = tmp_path / "t.jsonl"
    good = json.dumps(turn())
    bad = json.dumps(turn(turn_id="t2", turn_index=1, label="nope"))
    path.write_bytes(f"\r\n{good}\r\n\r\n{bad}\r\n".encode())
    result = read_traces(path)
    assert [r.line for r in result.rejected] == [4]
    assert result.turns["line"].to_list() == [2]


def test_whitespace_lines_are_blank_and_padded_objects_are_turns(tmp_path):
    path = tmp_path / "t.jsonl"
    padded, plain = json.dumps(turn()), json.dumps(turn(turn_id="t2", turn_index=1))
    path.write_bytes(f"\t \u2003\n  {padded}\t\n{plain}\n \nnull\n".encode())
    result = read_traces(path)
    assert result.turns["line"].to_list() == [2, 3]
    assert [(r.line, r.problems[0][1]) for r in result.rejected] == [(5, NOT_A_RECORD)]
    assert result.read == 3


def test_gzip_parquet_and_stdin_read_the_same_turns(tmp_path):
    frame = simulate(300, seed=5)
    jsonl = tmp_path / "t.jsonl"
    frame.write_ndjson(jsonl)
    gz = tmp_path / "t.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    parquet = tmp_path / "t.parquet"
    frame.write_parquet(parquet)
    expected = load_traces(jsonl).select(TURN_FIELD_NAMES)
    assert load_traces(gz).select(TURN_FIELD_NAMES).equals(expected)
    assert load_traces(parquet).select(TURN_FIELD_NAMES).equals(expected)
    result = run_cli("validate", "-", input=jsonl.read_bytes())
    assert result.exit_code == 0 and "read 300, accepted 300, quarantined 0" in result.stderr


def test_parquet_out_of_range_and_nan_are_rejected(tmp_path):
    frame = simulate(20, seed=6).with_row_index("i").with_columns(
        asr=pl.when(pl.col("i") == 3).then(pl.struct(text=pl.lit("x"), confidence=pl.lit(float("nan")),
                                                      nbest=pl.col("asr").struct.field("nbest"))).otherwise(pl.col("asr"))).drop("i")
    path = tmp_path / "t.parquet"
    frame.write_parquet(path)
    result = read_traces(path)
    assert [(r.line, r.problems[0][0]) for r in result.rejected] == [(4, "asr.confidence")]
    assert result.turns.height == 19


def test_stage_form_joins_to_the_same_turns(tmp_path):
    frame = simulate(400, seed=8)
    turn_path, stage_path = tmp_path / "turns.jsonl", tmp_path / "stages.jsonl"
    frame.write_ndjson(turn_path)
    stage_path.write_text("\n".join(stage_events(frame).to_list()) + "\n")
    by_turn = load_traces(turn_path).select(TURN_FIELD_NAMES)
    by_stage = read_traces(stage_path)
    assert by_stage.form == "stage" and not by_stage.rejected
    assert by_stage.turns.select(TURN_FIELD_NAMES).equals(by_turn)


def test_stage_form_conflicting_events_are_rejected_with_their_lines(tmp_path):
    events = [
        {"turn_id": "t1", "session_id": "s1", "turn_index": 0, "stage": "asr", "data": {"text": "a"}},
        {"turn_id": "t1", "session_id": "s1", "turn_index": 0, "stage": "asr", "data": {"text": "b"}},
        {"turn_id": "t2", "session_id": "s1", "turn_index": 1, "stage": "asr", "data": {"text": "c"}},
        {"turn_id": "t2", "session_id": "s9", "turn_index": 1, "stage": "nlu", "data": {"intent": "x"}},
    ]
    result = read_traces(write_jsonl(tmp_path / "e.jsonl", events))
    messages = result.problems()
    assert any(":2: stage: duplicate 'asr' event for turn 't1', first on line 1" in m for m in messages)
    assert any(":4: session_id: expected session 's1'" in m for m in messages)
    assert result.turns.height == 0 and result.read == len(result.rejected) + result.accepted


# ---------------------------------------------------------------- properties

@pytest.mark.slow
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(sessions())
def test_round_trip_of_any_valid_turns(tmp_path_factory, turns):
    path = tmp_path_factory.mktemp("rt") / "t.jsonl"
    write_jsonl(path, turns)
    loaded = load_traces(path).select(TURN_FIELD_NAMES).to_dicts()
    assert loaded == [as_loaded(t) for t in turns]


@pytest.mark.slow
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(objects(TURN_FIELDS), st.sampled_from([f.name for f in TURN_FIELDS] + ["asr.confidence", "nlu.slots", "er.entities", "wake.verified"]), any_json())
@example({"turn_id": "a", "session_id": "s", "turn_index": 0}, "turn_index", True)
@example({"turn_id": "a", "session_id": "s", "turn_index": 0}, "turn_id", 5)
@example({"turn_id": "a", "session_id": "s", "turn_index": 0, "asr": {"text": "x"}}, "asr.confidence", True)
def test_fast_path_accepts_exactly_what_the_validator_accepts(turn_obj, path, value):
    target = turn_obj
    *parents, leaf = path.split(".")
    for p in parents:
        if not isinstance(target.get(p), dict):
            target[p] = {"text": "x"} if p == "asr" else {"intent": "x"} if p == "nlu" else {"entities": []} if p == "er" else {"detected": True}
        target = target[p]
    target[leaf] = value
    line = json.dumps(turn_obj).encode()
    result = read_traces(line, name="p.jsonl")
    valid = validate_turn(json.loads(line)) == []
    assert (result.turns.height == 1) == valid
    assert result.read == 1 == result.accepted + len(result.rejected)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300))
@example(b"\xff\xfe")
@example(b'{"turn_id": "a", "session_id": "s", "turn_index": 1e400}')
@example(b"\x1f\x8b garbage")
@example(b"PAR1 not parquet")
@example(b"x\x01\x06\x00")  # zlib magic: polars' line reader would try to inflate it
@example(b"\x28\xb5\x2f\xfd zstd magic")
@pytest.mark.slow
def test_any_bytes_give_turns_or_a_clear_error(data):
    try:
        result = read_traces(data, name="fuzz.jsonl")
    except TraceError as exc:
        assert str(exc).startswith("fuzz.jsonl")
        return
    assert result.read == result.accepted + len(result.rejected)
    assert result.turns.height == result.accepted
    for message in result.problems():
        assert message.startswith("fuzz.jsonl:")


def test_zlib_bytes_are_bad_lines_not_silently_inflated():
    import zlib
    result = read_traces(zlib.compress(b'{"turn_id": "a", "session_id": "s", "turn_index": 0}\n'), name="z.jsonl")
    assert result.accepted == 0 and result.read == len(result.rejected) >= 1
    assert result.problems()[0].startswith("z.jsonl:1: ")


def test_floats_survive_the_round_trip_exactly(tmp_path):
    values = [0.1, 1 / 3, 5e-324, 0.9999999999999999, 1.0, 0.0]
    rows = [turn(turn_id=f"t{i}", turn_index=i, asr={"text": "x", "confidence": v}) for i, v in enumerate(values)]
    loaded = load_traces(write_jsonl(tmp_path / "f.jsonl", rows))
    got = loaded["asr"].struct.field("confidence").to_list()
    assert all(math.isclose(a, b, rel_tol=0, abs_tol=0) for a, b in zip(got, values))


def test_fingerprint_is_the_same_for_every_form_and_parquet_keeps_extra_columns(tmp_path):
    from fpi.io.traces import turns_fingerprint
    from fpi.simulation.simulator import write_traces

    frame = simulate(200, seed=3, annotator_noise=0.1)  # human_label: a field beyond the format
    prints = set()
    for name, form in (("a.jsonl", "turn"), ("b.parquet", "turn"), ("c.jsonl", "stage")):
        write_traces(frame, tmp_path / name, form=form)
        turns = load_traces(tmp_path / name)
        assert turns.height == 200
        prints.add(turns_fingerprint(turns))
    assert len(prints) == 1
    assert "human_label" in load_traces(tmp_path / "b.parquet").columns


def test_a_stage_form_turn_with_one_bad_event_is_quarantined_line_by_line(tmp_path):
    events = [{"turn_id": "t1", "session_id": "s", "turn_index": 0, "stage": "asr", "data": {"text": "hi", "confidence": 0.9}},
              {"turn_id": "t1", "session_id": "s", "turn_index": 0, "stage": "nlu", "data": {"intent": 5}},
              {"turn_id": "t1", "session_id": "s", "turn_index": 0, "stage": "result", "data": {"status": "success"}},
              {"turn_id": "t2", "session_id": "s", "turn_index": 1, "stage": "asr", "data": {"text": "ok"}}]
    lines = [json.dumps(e) for e in events]
    result = read_traces(("\n".join(lines) + "\n").encode(), name="events.jsonl")
    assert (result.read, result.accepted, len(result.rejected), result.turns.height) == (4, 1, 3, 1)
    assert [r.raw for r in result.rejected] == lines[:3]
    assert result.problems() == ["events.jsonl:2: nlu.intent: expected a string, got a number 5",  # the line at fault first
                                 "events.jsonl:1: turn 't1' has a rejected event on line 2",
                                 "events.jsonl:3: turn 't1' has a rejected event on line 2"]


def test_validate_reports_every_kind_in_one_pass_with_codes(tmp_path):
    good = turn(asr={"text": "hi", "confidence": 0.9})
    lines = [json.dumps(good), "{not json", json.dumps({"session_id": "s1", "turn_index": 1}),
             json.dumps(turn(turn_id="t3", turn_index=2, asr={"text": "x", "confidence": 2})), json.dumps(good)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run_cli("validate", path, "--format", "json")
    assert result.exit_code == 2
    problems = json.loads(result.stdout)["problems"]
    assert [(p["line"], p["code"]) for p in problems] == [(2, "T001"), (3, "T002"), (4, "T003"), (5, "T004")]
    assert problems[2]["message"] == "asr.confidence: expected a number in [0, 1], got 2"
    github = run_cli("validate", path, "--format", "github")
    assert github.stdout.splitlines()[3].startswith(f"::error file={path},line=5,title=fpi validate T004::turn_id: duplicate")
    text = run_cli("validate", path)
    assert text.exit_code == 2 and text.stderr.splitlines()[0] == f"{path}:2: T001 malformed JSON: " + text.stderr.split(
        "malformed JSON: ")[1].splitlines()[0]
    assert "read 5, accepted 1, rejected 4 turns" in text.stderr and not (tmp_path / "t.jsonl.quarantine.jsonl").exists()
    kept = run_cli("validate", path, "--on-error", "skip", "--format", "json")
    assert kept.exit_code == 3 and len(json.loads(kept.stdout)["problems"]) == 4
    quarantined = [json.loads(line) for line in (tmp_path / "t.jsonl.quarantine.jsonl").read_text().splitlines()]
    assert [r["errors"][0]["code"] for r in quarantined] == ["T001", "T002", "T003", "T004"]


def test_a_table_writes_the_text_of_rejected_rows_only_and_names_its_columns(tmp_path):
    from fpi.contract.metrics import annotator_labels

    frame = simulate(60, seed=4, annotator_noise=0.2)
    bad = frame[5].with_columns(turn_index=pl.lit(-1, pl.Int64), turn_id=pl.lit("bad"))
    path = tmp_path / "t.parquet"
    pl.concat([frame, bad, frame[7]], how="vertical_relaxed").write_parquet(path)
    result = read_traces(path)
    assert [(r.line, r.problems[0][0]) for r in result.rejected] == [(61, "turn_index"), (62, "turn_id")]
    for rejected in result.rejected:  # the row as JSON stands for the line
        row = json.loads(rejected.raw)
        assert (row["turn_id"], row["human_label"]) == (("bad", frame["human_label"][5]) if rejected.line == 61
                                                         else (frame["turn_id"][7], frame["human_label"][7]))
    assert result.turns["raw"].null_count() == result.turns.height == 60
    assert annotator_labels(result.turns, "human_label", str(path)) == frame["human_label"].to_list()
    other = tmp_path / "other.parquet"
    pl.DataFrame({"turn_id": [f"t{i}" for i in range(10)], "session_id": "s", "turn_index": range(10),
                  "utterance": ["hi"] * 10, "intent_name": ["x"] * 10}).write_parquet(other)
    with pytest.raises(TraceError, match="the fields seen are: turn_id, session_id, turn_index, utterance, intent_name"):
        read_traces(other)
