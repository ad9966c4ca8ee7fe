"""Mappings: a team's records of another shape (other names, CSV, nested JSON, frames) read as
trace format v1, with file:line errors for the mapping and for the records, and the same verdicts
as the same turns written natively."""

import json

import polars as pl
import pytest
from conftest import run_cli, write_jsonl
from warehouse_export import WAREHOUSE, warehouse_export

from fpi import classify, load_traces, simulate
from fpi.contract.errors import TraceError
from fpi.io.traces import read_traces
from fpi.io.mapping import (
    MappingError,
    load_mapping,
    mapping_json_schema,
    shipped_mappings,
)

def _native(turns: pl.DataFrame) -> pl.DataFrame:
    """The same information in trace format v1."""
    asr, nlu, result = pl.col("asr").struct, pl.col("nlu").struct, pl.col("result").struct
    native = turns.select(
        "session_id", "turn_index", "label",
        turn_id=pl.col("session_id") + "#" + pl.col("turn_index").cast(pl.String),
        timestamp=pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
        asr=pl.when(asr.field("text").is_not_null()).then(pl.struct(
            text=asr.field("text"), confidence=(asr.field("confidence") * 100).round(2) / 100)),
        nlu=pl.when(nlu.field("intent").is_not_null()).then(pl.struct(intent=nlu.field("intent"), confidence=nlu.field("confidence"))),
        result=pl.when(result.field("status").is_not_null()).then(pl.struct(status=result.field("status"), response=result.field("response"))),
        feedback=pl.struct(barge_in=pl.col("feedback").struct.field("barge_in")))
    return native


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    folder = tmp_path_factory.mktemp("warehouse")
    turns = simulate(1500, seed=21, profile="telephone-slot-filling")
    warehouse_export(turns).write_csv(folder / "export.csv")
    write_jsonl(folder / "native.jsonl", [json.loads(line) for line in _native(turns).write_ndjson().splitlines()])
    (folder / "warehouse.yaml").write_text(WAREHOUSE)
    return folder


def test_the_shipped_mapping_schema_is_the_generated_one():
    from conftest import ROOT

    assert json.loads((ROOT / "fpi" / "schemas" / "mapping-v1.schema.json").read_text()) == mapping_json_schema()


def test_csv_through_a_mapping_gives_the_native_turns_and_verdicts(warehouse):
    mapped = load_traces(warehouse / "export.csv", mapping=warehouse / "warehouse.yaml")
    native = load_traces(warehouse / "native.jsonl")
    for column in ("turn_id", "session_id", "turn_index", "timestamp", "asr", "nlu", "result", "feedback", "label"):
        assert mapped[column].equals(native[column], null_equal=True), column
    assert mapped["line"][0] == 2  # the header is line 1
    by_cli = warehouse / "mapped.jsonl"
    assert run_cli("classify", warehouse / "export.csv", "--mapping", warehouse / "warehouse.yaml", "-o", by_cli).exit_code == 0
    records = pl.read_ndjson(by_cli)
    assert records["failure_point"].to_list() == classify(native)["failure_point"].to_list()


def test_frames_and_nested_json_read_through_the_same_mapping(warehouse):
    export = pl.read_csv(warehouse / "export.csv", infer_schema=False)
    from_polars = load_traces(export, mapping=warehouse / "warehouse.yaml")
    from_pandas = load_traces(export.to_pandas(), mapping=warehouse / "warehouse.yaml")
    assert from_polars.drop("raw").equals(from_pandas.drop("raw"))
    nested = [{"call": {"id": "c1", "ts": 1_790_000_000_000 + i}, "stt": {"text": "lights on", "score": 90},
               "nlu": {"top": {"name": "lights_on"}}, "outcome": "ok"} for i in range(3)]
    mapping = warehouse / "nested.yaml"
    mapping.write_text("order: call.ts\nfields:\n  session_id: call.id\n  asr.text: stt.text\n"
                       "  asr.confidence: {from: stt.score, scale: [0, 100]}\n  nlu.intent: nlu.top.name\n"
                       "  result.status: {from: outcome, values: {ok: success}}\n")
    turns = load_traces(write_jsonl(warehouse / "nested.jsonl", nested), mapping=mapping)
    assert turns["turn_index"].to_list() == [0, 1, 2]
    assert turns["turn_id"].to_list() == ["c1#0", "c1#1", "c1#2"]
    assert turns["asr"].struct.field("confidence").to_list() == [0.9, 0.9, 0.9]
    assert turns["result"].struct.field("status").to_list() == ["success"] * 3


def test_a_value_that_does_not_convert_names_the_line_field_and_source(warehouse):
    mapping = warehouse / "warehouse.yaml"
    lines = (warehouse / "export.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")
    row[header.index("asr_score")] = "loud"
    bad = warehouse / "bad.csv"
    bad.write_text("\n".join([lines[0], *lines[1:3], ",".join(row), *lines[4:10], "too,few"]) + "\n")
    result = read_traces(bad, mapping=mapping)
    messages = result.problems()
    assert any(m.startswith(f"{bad}:4: asr.confidence: expected a number, got 'loud' (from asr_score") for m in messages)
    assert any(m.startswith(f"{bad}:11: expected 10 cells as in the header, got 2") for m in messages)
    assert result.read == result.accepted + len(result.rejected) == 10
    out, quarantine = warehouse / "partial.jsonl", warehouse / "q.jsonl"
    cli = run_cli("classify", bad, "--mapping", mapping, "-o", out, "--on-error", "skip", "--quarantine", quarantine)
    assert cli.exit_code == 3 and len(out.read_text().splitlines()) == 8
    assert [json.loads(line)["line"] for line in quarantine.read_text().splitlines()] == [4, 11]


def test_mapping_errors_name_file_line_and_a_fix(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("stages: [asr, nlu]\nfields:\n  session_id: call\n  asr.txt: transcript\n"
                    "  nlu.intent: {from: intent, vaules: {}}\n  result.status: status\n"
                    "  asr.confidence: {from: conf, scale: [1, 1]}\n")
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    problems = caught.value.problems
    assert f"{path}:4: fields: 'asr.txt' is not a trace field; did you mean 'asr.text'?" in problems
    assert f"{path}:5: fields/nlu.intent: unknown key 'vaules'; did you mean 'values'?" in problems
    result = run_cli("map", "check", path)
    assert result.exit_code == 2 and f"{path}:4:" in result.stderr
    path.write_text("stages: [asr, nlu]\nfields:\n  session_id: call\n  result.status: status\n"
                    "  asr.confidence: {from: conf, scale: [1, 1]}\n")
    problems = pytest.raises(MappingError, load_mapping, path).value.problems
    assert problems == [f"{path}:4: fields/result.status: stage 'result' is not in `stages` (asr, nlu); add it or drop the field",
                        f"{path}:5: fields/asr.confidence: scale [1, 1] is empty; give [low, high]"]
    path.write_text("extends: m.yaml\n")
    assert "extends itself" in pytest.raises(MappingError, load_mapping, path).value.problems[0]
    assert "did you mean 'pipecat'" in pytest.raises(MappingError, load_mapping, "pipecatt").value.problems[0]


def test_a_field_the_input_lacks_is_named_with_a_suggestion(warehouse, tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text("fields:\n  session_id: call_id\n  asr.text: transcrpt\n")
    with pytest.raises(TraceError) as caught:
        load_traces(warehouse / "export.csv", mapping=mapping)
    assert "fields/asr.text: 'transcrpt' is not in" in str(caught.value) and "did you mean 'transcript'?" in str(caught.value)


def test_a_mapping_that_yields_no_stages_is_refused(warehouse, tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text("fields:\n  session_id: call_id\n  locale: intent\n")
    result = run_cli("classify", warehouse / "export.csv", "--mapping", mapping, "-o", tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "get none of the stages" in result.stderr and "fpi map infer" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_map_infer_drafts_a_mapping_that_reads_the_export(warehouse, tmp_path):
    draft = tmp_path / "draft.yaml"
    assert run_cli("map", "infer", warehouse / "export.csv", "-o", draft).exit_code == 0
    text = draft.read_text()
    for line in ("session_id: call_id", "asr.text: transcript", "scale: [0, 100]", "nlu.confidence: intent_confidence",
                 '"no_match": fallback', "time: unix_ms", "label: gold"):
        assert line in text, line
    turns = load_traces(warehouse / "export.csv", mapping=draft)
    assert turns.height == 1500 and turns["asr"].struct.field("confidence").max() <= 1


def test_shipped_mappings_are_listed_shown_and_valid():
    assert set(shipped_mappings()) == {"pipecat", "livekit", "openinference"}
    listed = run_cli("map", "list")
    assert listed.exit_code == 0 and all(name in listed.stdout for name in shipped_mappings())
    shown = run_cli("map", "show", "pipecat")
    assert shown.exit_code == 0 and "turn: {name: turn}" in shown.stdout
    for name in shipped_mappings():
        assert load_mapping(name).format == "otlp"


def test_order_sorts_numbers_as_numbers_and_dates_as_text(tmp_path):
    rows = [{"call": "c", "n": n, "when": when, "text": f"say {n}"}
            for n, when in ((10, "2026-01-01T10:00:02Z"), (9, "2026-01-01T10:00:01Z"), (100, "2026-01-01T10:00:03Z"))]
    path = write_jsonl(tmp_path / "logs.jsonl", rows)
    for order, expected in (("n", [1, 0, 2]), ("when", [1, 0, 2])):
        mapping = tmp_path / f"{order}.yaml"
        mapping.write_text(f"order: {order}\nfields:\n  session_id: call\n  asr.text: text\n")
        assert load_traces(path, mapping=mapping)["turn_index"].to_list() == expected, order
    csv = tmp_path / "logs.csv"
    csv.write_text("call,n,text\nc,10,a\nc,9,b\n")
    mapping = tmp_path / "csv.yaml"
    mapping.write_text("order: n\nfields:\n  session_id: call\n  asr.text: text\n")
    assert load_traces(csv, mapping=mapping)["turn_index"].to_list() == [1, 0]


def test_a_time_format_that_cannot_be_used_is_a_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "logs.jsonl", [{"call": "c", "t": "x", "text": "hi"}])
    mapping = tmp_path / "m.yaml"
    mapping.write_text("fields:\n  session_id: call\n  asr.text: text\n  timestamp: {from: t, time: '%Q%Q'}\n")
    result = run_cli("validate", path, "--mapping", mapping)
    assert result.exit_code in (2, 3) and "Traceback" not in result.stderr


def test_a_mapping_goes_through_json_unchanged(warehouse):
    """How the Spark engine sends a mapping to its executors: as JSON, not pickled."""
    from fpi.io.mapping import Mapping

    for mapping in [*(load_mapping(name) for name in shipped_mappings()), load_mapping(warehouse / "warehouse.yaml")]:
        assert Mapping.from_json(json.loads(json.dumps(mapping.to_json()))) == mapping


def test_a_notebook_gives_a_mapping_as_a_dict_or_yaml_text_and_a_frame_without_one_is_one_error():
    frame = pl.DataFrame({"call": ["c1", "c1"], "heard": ["lights on", "lights off"], "status": ["ok", "failed"]})
    with pytest.raises(TraceError) as refused:
        load_traces(frame)
    assert str(refused.value).count("\n") == 0 and "needs a mapping" in str(refused.value) and "heard" in str(refused.value)
    as_dict = {"stages": ["asr", "result"], "fields": {"session_id": "call", "asr.text": "heard",
                                                    "result.status": {"from": "status", "values": {"ok": "success", "failed": "error"}}}}
    as_text = "stages: [asr, result]\nfields:\n  session_id: call\n  asr.text: heard\n" \
              "  result.status: {from: status, values: {ok: success, failed: error}}\n"
    by_dict, by_text = load_traces(frame, mapping=as_dict), load_traces(frame, mapping=as_text)
    assert by_dict.drop("raw").equals(by_text.drop("raw"))
    assert by_dict["result"].struct.field("status").to_list() == ["success", "error"]
    with pytest.raises(MappingError, match=r"<mapping text>:3: fields: 'asr.txt' is not a trace field"):
        load_traces(frame, mapping="stages: [asr]\nfields:\n  asr.txt: heard\n")


def test_a_flat_column_of_resolved_entities_feeds_er(tmp_path):
    calls = tmp_path / "calls.csv"
    calls.write_text("call,heard,entity,status\nc1,call mum,mum,ok\nc1,call bob,,ok\n")
    (tmp_path / "m.yaml").write_text("format: csv\nstages: [asr, er, result]\nfields:\n  session_id: call\n  asr.text: heard\n"
                                     "  er.entities: entity\n  result.status: {from: status, values: {ok: success}}\n")
    assert run_cli("map", "check", tmp_path / "m.yaml").exit_code == 0
    turns = load_traces(calls, mapping=tmp_path / "m.yaml")
    assert turns["er"].to_list() == [{"entities": [{"slot": "entity", "value": "mum", "resolved_id": None, "resolved_value": "mum",
                                                   "score": None, "status": "resolved"}]}, None]
    assert run_cli("validate", calls, "--mapping", tmp_path / "m.yaml").exit_code == 0


ER_STATUS_MAPPING = """\
format: csv
stages: [asr, er, result]
fields:
  session_id: call
  asr.text: heard
  result.status: {from: status, values: {ok: success}}
  er.entities: entity
  er.resolved: found
"""


def test_a_flat_status_column_says_whether_the_entity_resolved(tmp_path):
    """`er.resolved` beside a flat `er.entities` column: one entity per turn, its status from yes/no words or ER's
    own; a status without a value is an entity still (nothing resolved); no status and no value, no ER."""
    calls = tmp_path / "calls.csv"
    calls.write_text("call,heard,entity,found,status\nc1,call mum,mum,true,ok\nc1,call bob,bob,no,ok\nc2,call x,,false,ok\n"
                     "c2,play jazz,,,ok\nc3,call ann,ann,ambiguous,ok\nc3,call ed,ed,0,ok\n")
    (tmp_path / "m.yaml").write_text(ER_STATUS_MAPPING)
    assert run_cli("map", "check", tmp_path / "m.yaml").exit_code == 0
    turns = load_traces(calls, mapping=tmp_path / "m.yaml")

    def entity(value, status):
        return {"entities": [{"slot": "entity", "value": value, "resolved_id": None,
                              "resolved_value": value if status == "resolved" else None, "score": None, "status": status}]}
    assert turns["er"].to_list() == [entity("mum", "resolved"), entity("bob", "unresolved"), entity(None, "unresolved"), None,
                                     entity("ann", "ambiguous"), entity("ed", "unresolved")]
    alone = ER_STATUS_MAPPING.replace("  er.entities: entity\n", "")  # no value column: an entity named after the status column
    (tmp_path / "alone.yaml").write_text(alone)
    statuses = load_traces(calls, mapping=tmp_path / "alone.yaml")["er"].to_list()
    assert [e and [(x["slot"], x["value"], x["status"]) for x in e["entities"]] for e in statuses] == [
        [("found", None, "resolved")], [("found", None, "unresolved")], [("found", None, "unresolved")], None,
        [("found", None, "ambiguous")], [("found", None, "unresolved")]]


def test_map_check_refuses_what_validate_refuses_with_file_and_line(tmp_path):
    """A status word that is neither yes/no nor ER's is the record's problem, by line; `er.resolved` beside a list of
    entities, or a list field read from text, is the mapping's, at the line of the field; `map check LOGS --mapping M`
    and `validate` say the same and exit 2."""
    calls, mapping = tmp_path / "calls.csv", tmp_path / "m.yaml"
    calls.write_text("call,heard,entity,found,status\nc1,call mum,mum,true,ok\nc1,call bob,bob,maybe,ok\n")
    mapping.write_text(ER_STATUS_MAPPING)
    bad_word = (f"{calls}:3: er.resolved: expected true or false, or resolved, ambiguous or unresolved, got 'maybe' "
                f"(from found via {mapping})")
    for command in (("map", "check", calls, "--mapping", mapping), ("validate", calls, "--mapping", mapping)):
        result = run_cli(*command)
        assert result.exit_code == 2 and bad_word in result.stderr.replace(" T003 ", " ")
    lines = tmp_path / "calls.jsonl"
    write_jsonl(lines, [{"call": "c1", "heard": "call mum", "status": "ok", "found": True,
                        "entity": [{"slot": "contact", "value": "mum", "status": "resolved"}]}])
    mapping.write_text(ER_STATUS_MAPPING.replace("format: csv\n", ""))
    for command in (("map", "check", lines, "--mapping", mapping), ("validate", lines, "--mapping", mapping)):
        result = run_cli(*command)
        assert result.exit_code == 2, result.stderr
        assert f"{mapping}:7: fields/er.resolved: goes with a flat er.entities column (one entity per turn), and entity holds a list" \
               in result.stderr
    mapping.write_text(ER_STATUS_MAPPING.replace("format: csv\n", "").replace("  er.resolved: found\n", "  asr.nbest: heard\n"))
    for command in (("map", "check", lines, "--mapping", mapping), ("validate", lines, "--mapping", mapping)):
        result = run_cli(*command)
        assert result.exit_code == 2 and f"{mapping}:7: fields/asr.nbest: heard is String, not a list of objects" in result.stderr
    mapping.write_text(ER_STATUS_MAPPING.replace("  er.entities: entity\n", "  er.entities: {from: entity, fields: {slot: name}}\n"))
    refused = run_cli("map", "check", mapping)  # the mapping alone says it, before any logs
    assert refused.exit_code == 2 and f"{mapping}:8: fields/er.resolved: goes with a flat er.entities column" in refused.stderr


def test_a_field_an_extended_mapping_brings_is_named_at_its_own_line(tmp_path):
    (tmp_path / "base.yaml").write_text("fields:\n  session_id: call\n  asr.text: heard\n  asr.nbest: heard\n")
    (tmp_path / "mine.yaml").write_text("extends: base.yaml\nfields:\n  result.status: {value: success}\n")
    write_jsonl(tmp_path / "calls.jsonl", [{"call": "c1", "heard": "hello"}])
    with pytest.raises(TraceError, match=rf"^{tmp_path / 'base.yaml'}:4: fields/asr.nbest: heard is String"):
        load_traces(tmp_path / "calls.jsonl", mapping=tmp_path / "mine.yaml")
