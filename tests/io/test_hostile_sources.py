"""Sources that used to be read silently wrong: each is now read right, or refused naming its line."""

import json

import polars as pl
import pytest

from conftest import FIXTURES, run_cli
from otel_export import as_span_information, pipecat_export
from fpi import simulate
from fpi.io.traces import read_traces

MAPPING = "fields:\n  turn_id: id\n  session_id: session\n  turn_index: idx\n  asr.text: text\n"


@pytest.fixture(scope="module")
def spans(tmp_path_factory):
    """Six Pipecat turns as OTLP/JSON, one span a line."""
    frame = simulate(6, seed=3).select("turn_id", "session_id", "turn_index", "asr", "nlu", "result", "feedback")
    native = [as_span_information(json.loads(line)) for line in frame.write_ndjson().splitlines()]
    return pipecat_export(native, seed=4, per_line=1).decode().splitlines()


def _edited(tmp_path, lines, old, new):
    at = next(i for i, line in enumerate(lines) if old in line)
    path = tmp_path / "spans.otlp.jsonl"
    path.write_text("\n".join(line.replace(old, new, 1) if i == at else line for i, line in enumerate(lines)) + "\n")
    return path, at + 1


@pytest.mark.parametrize(("old", "new", "said"), [
    ('"doubleValue":0.21', '"doubleValue":1e999', "number 1e999 is out of range for a double"),
    ('"stringValue":"deepgram"', '"stringValue":"\\ud800deepgram"', "an unpaired surrogate"),
    ('"startTimeUnixNano":"', '"startTimeUnixNano":"1000000', "expected Unix nanoseconds (before the year 2262)"),
])
def test_spans_json_cannot_carry_back_are_refused_by_line(spans, tmp_path, old, new, said):
    path, line = _edited(tmp_path, spans, old, new)
    result = run_cli("classify", path, "--mapping", "pipecat", "-o", tmp_path / "out.otlp.jsonl")
    assert result.exit_code == 2 and f"{path}:{line}:" in result.stderr and said in result.stderr
    skipped = run_cli("classify", path, "--mapping", "pipecat", "--on-error", "skip", "-o", tmp_path / "out.otlp.jsonl")
    assert skipped.exit_code == 3
    written = (tmp_path / "out.otlp.jsonl").read_text()
    assert "Infinity" not in written and "NaN" not in written


def test_two_turn_spans_with_one_span_id_in_one_request_are_a_duplicate(spans, tmp_path):
    requests = [json.loads(line) for line in spans]
    every = [span for r in requests for rs in r["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]
    turns = [span for span in every if span["name"] == "turn"]
    old = turns[1]["spanId"]
    for span in every:
        span["spanId"] = turns[0]["spanId"] if span["spanId"] == old else span["spanId"]
        span["parentSpanId"] = turns[0]["spanId"] if span.get("parentSpanId") == old else span.get("parentSpanId")
    path = tmp_path / "one.otlp.json"
    path.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": every}]}]}))
    result = run_cli("classify", path, "--mapping", "pipecat", "-o", tmp_path / "out.otlp.json")
    assert result.exit_code == 2 and f"duplicate turn_id {turns[0]['spanId']!r}" in result.stderr


def test_csv_rows_not_utf8_or_ragged_are_quarantined_as_written(tmp_path):
    (tmp_path / "m.yaml").write_text(MAPPING)
    path = tmp_path / "logs.csv"
    long_cell = "x" * 300_000
    path.write_bytes(b'id,session,idx,text\na1,s1,0,caf\xe9\na2,s1,1,"ok, fine",extra\na3,s1,2,"multi\nline"\n'
                     + f"a4,s1,3,{long_cell}\n".encode())
    result = read_traces(path, mapping=tmp_path / "m.yaml")
    assert result.accepted == 2 and result.turns["asr"].struct.field("text").to_list() == ["multi\nline", long_cell]
    assert result.problems() == [f"{path}:2: text: byte 0xe9 is not UTF-8 text; save the file as UTF-8",
                                 f"{path}:3: expected 4 cells as in the header, got 5"]
    assert [r.raw for r in result.rejected] == ["a1,s1,0,caf\\xe9", 'a2,s1,1,"ok, fine",extra']


def test_map_infer_on_bytes_that_are_no_records_is_an_error(tmp_path):
    binary = tmp_path / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    result = run_cli("map", "infer", binary, "-o", tmp_path / "draft.yaml")
    assert result.exit_code == 2 and str(binary) in result.stderr and not (tmp_path / "draft.yaml").exists()


def test_a_column_named_line_is_read_natively_and_named_through_a_mapping(tmp_path):
    turns = pl.read_ndjson(FIXTURES / "traces.jsonl").head(20)
    turns.with_columns(line=pl.lit(7), raw=pl.lit("x")).write_parquet(tmp_path / "traces.parquet")
    assert read_traces(tmp_path / "traces.parquet").accepted == 20
    (tmp_path / "m.yaml").write_text(MAPPING)
    pl.DataFrame({"id": ["a"], "session": ["s"], "idx": [0], "line": [5]}).write_parquet(tmp_path / "mapped.parquet")
    result = run_cli("validate", tmp_path / "mapped.parquet", "--mapping", tmp_path / "m.yaml")
    assert result.exit_code == 2 and "a field is named `line`" in result.stderr


@pytest.mark.parametrize("index", [2**53, 2**53 + 1, 2**64, 10**30])
def test_turn_indices_json_cannot_hold_apart_are_refused(tmp_path, index):
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps({"turn_id": "a", "session_id": "s", "turn_index": index}) + "\n")
    result = read_traces(path)
    assert result.accepted == 0 and "expected an integer >= 0 and <= 2^53 - 1" in result.problems()[0]


@pytest.mark.parametrize("mapped", [False, True])
def test_an_unpaired_surrogate_in_json_lines_is_a_bad_line(tmp_path, mapped):
    (tmp_path / "m.yaml").write_text(MAPPING)
    path = tmp_path / "logs.jsonl"
    rows = [{"id": "a1", "turn_id": "a1", "session": "s", "session_id": "s", "idx": 0, "turn_index": 0, "text": "ok",
             "asr": {"text": "ok"}},
            {"id": "a2", "turn_id": "a2", "session": "s", "session_id": "s", "idx": 1, "turn_index": 1, "text": "x",
             "asr": {"text": "ok"}}]
    path.write_text("\n".join(json.dumps(r) for r in rows).replace('"text": "x"', '"text": "\\ud800x"') + "\n")
    result = read_traces(path, mapping=tmp_path / "m.yaml" if mapped else None)
    assert result.accepted == 1 and result.problems() == [
        f"{path}:2: malformed JSON: a string holds '\\ud800', an unpaired surrogate, which is not text"]


def test_a_rejected_stage_event_is_named_by_its_field_before_the_lines_of_its_turn(tmp_path):
    path = tmp_path / "events.jsonl"
    assert run_cli("simulate", "-n", "4", "--form", "stage", "-o", path).exit_code == 0
    events = [json.loads(line) for line in path.read_text().splitlines()]
    bad = next(i for i, e in enumerate(events) if e["stage"] == "turn" and i > 5)
    events[bad]["data"]["timestamp"] = "2026-13-45T00:00:00Z"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = run_cli("classify", path, "-o", tmp_path / "out.jsonl")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[1].startswith(f"{path}:{bad + 1}: timestamp: expected an ISO 8601 date-time")
