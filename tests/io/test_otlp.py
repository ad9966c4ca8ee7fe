"""OpenTelemetry spans written by the real SDK, shaped as Pipecat and LiveKit Agents write them:
read through the shipped mappings, one record per turn span, the same verdicts as the same turns
written natively, and the spans written back with the verdict on each turn span."""

import json

import polars as pl
import pytest
from conftest import run_cli, write_jsonl
from otel_export import _sessions, as_span_information, livekit_export, pipecat_export, span_timestamp

from fpi import classify, load_traces, simulate
from fpi.io.traces import read_traces

TEAM = """\
extends: pipecat
fields:
  asr.confidence: stt:stt.confidence
  nlu.intent:
    first_of: [llm:nlu.intent, tool:tool.function_name]
  nlu.confidence: llm:nlu.confidence
"""


def _turns(n: int, seed: int, profile: str = "default") -> list[dict]:
    frame = simulate(n, seed=seed, profile=profile).select("turn_id", "session_id", "turn_index", "asr", "nlu", "result", "feedback")
    return [json.loads(line) for line in frame.write_ndjson().splitlines()]


TURNS = 1000  # turns of the module's export: enough for several requests, few enough to write quickly


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    folder = tmp_path_factory.mktemp("otel")
    native = [as_span_information(turn) for turn in _turns(TURNS, seed=31, profile="random")]
    for position, turn in enumerate(t for session in _sessions(native).values() for t in session):
        turn["timestamp"] = span_timestamp(position)  # as the mapping reads them from the turn spans' start
    write_jsonl(folder / "native.jsonl", native)
    (folder / "export.otlp.jsonl").write_bytes(pipecat_export(native, team_attributes=True, seed=4, shuffle=True))
    (folder / "plain.otlp.jsonl").write_bytes(pipecat_export(native, seed=4))
    (folder / "team.yaml").write_text(TEAM)
    return folder


@pytest.mark.slow
def test_pipecat_spans_with_team_attributes_give_the_native_verdicts(team):
    out = team / "out.jsonl"
    result = run_cli("classify", team / "export.otlp.jsonl", "--mapping", team / "team.yaml", "-o", out)
    assert result.exit_code == 0, result.stderr
    spans = pl.read_ndjson(out).select("session_id", "turn_index", "failure_point")
    native = classify(team / "native.jsonl").select("session_id", "turn_index", native="failure_point")
    both = native.join(spans, on=["session_id", "turn_index"], how="left")
    assert spans.height == native.height == TURNS
    assert (both["failure_point"] == both["native"]).mean() >= 0.99


@pytest.mark.slow
def test_spans_read_as_the_native_turns(team):
    """Field by field: the spans carry exactly what the native turns say, and the STT's time to first byte, which only
    the spans log (Pipecat's `metrics.ttfb`, in seconds)."""
    spans = load_traces(team / "export.otlp.jsonl", mapping=team / "team.yaml").sort("session_id", "turn_index")
    native = load_traces(team / "native.jsonl").sort("session_id", "turn_index")
    assert spans["asr"].struct.field("ttfb_ms").drop_nulls().unique().to_list() == [210.0]
    spans = spans.with_columns(asr=pl.col("asr").struct.with_fields(ttfb_ms=pl.lit(None, pl.Float64)))
    for column in ("session_id", "turn_index", "asr", "nlu", "feedback"):
        assert spans[column].equals(native[column], null_equal=True), column
    fields = ("status", "action", "response")
    assert spans["result"].struct.unnest().select(fields).equals(native["result"].struct.unnest().select(fields), null_equal=True)


@pytest.mark.slow
def test_plain_pipecat_spans_give_one_record_per_turn_span(team):
    out = team / "plain.jsonl"
    result = run_cli("classify", team / "plain.otlp.jsonl", "--mapping", "pipecat", "-o", out)
    assert result.exit_code == 0
    records = pl.read_ndjson(out)
    assert records.height == TURNS and records["turn_id"].n_unique() == TURNS
    assert set(records["failure_point"]) <= {"asr", "nlu", "result", "correct"}  # no wake, no ER: Pipecat has none


def test_spans_need_a_mapping_and_say_so(team, tmp_path):
    result = run_cli("classify", team / "plain.otlp.jsonl", "-o", tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "OpenTelemetry spans" in result.stderr and "--mapping pipecat" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_one_request_per_file_and_protobuf_json_read_alike(team):
    lines = (team / "plain.otlp.jsonl").read_bytes().splitlines()
    first = json.loads(lines[0])
    one_file = json.dumps(first, indent=2).encode()
    assert read_traces(one_file, mapping="pipecat").turns.height == read_traces(lines[0] + b"\n", mapping="pipecat").turns.height
    import base64
    for span in first["resourceSpans"][0]["scopeSpans"][0]["spans"]:  # protobuf's own printer: base64 ids
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in span:
                span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    hexed = read_traces(lines[0] + b"\n", mapping="pipecat").turns
    based = read_traces(json.dumps(first).encode(), mapping="pipecat").turns
    assert based["turn_id"].to_list() == hexed["turn_id"].to_list()


@pytest.mark.slow
def test_a_line_that_is_not_a_request_is_quarantined_and_counted(team, tmp_path):
    data = (team / "plain.otlp.jsonl").read_bytes()
    broken = tmp_path / "broken.otlp.jsonl"
    broken.write_bytes(data + b'{"resourceSpans": [\n[1, 2]\n')
    result = read_traces(broken, mapping="pipecat")
    assert [r.line for r in result.rejected] == [len(data.splitlines()) + 1, len(data.splitlines()) + 2]
    assert "malformed JSON" in result.rejected[0].messages()[0]
    assert result.turns.height == TURNS


@pytest.mark.slow
def test_write_back_marks_each_turn_span_and_keeps_every_span(team, tmp_path):
    out = tmp_path / "verdicts.otlp.json"
    result = run_cli("classify", team / "export.otlp.jsonl", "--mapping", team / "team.yaml", "--explain", "-o", out)
    assert result.exit_code == 0 and f"{TURNS} turn spans marked" in result.stderr
    spans_in = [s for line in (team / "export.otlp.jsonl").read_text().splitlines()
                for r in json.loads(line)["resourceSpans"] for ss in r["scopeSpans"] for s in ss["spans"]]
    spans_out = [s for line in out.read_text().splitlines()
                 for r in json.loads(line)["resourceSpans"] for ss in r["scopeSpans"] for s in ss["spans"]]
    assert len(spans_out) == len(spans_in)
    marked = {}
    for span in spans_out:
        attributes = {a["key"]: a["value"] for a in span.get("attributes", [])}
        if "fpi.failure_point" in attributes:
            assert span["name"] == "turn"
            marked[span["spanId"]] = attributes
    assert len(marked) == TURNS
    records = classify(team / "export.otlp.jsonl", mapping=team / "team.yaml", explain_top_k=3)
    for turn_id, failure_point, confidence in records.select("turn_id", "failure_point", "confidence").iter_rows():
        assert marked[turn_id]["fpi.failure_point"] == {"stringValue": failure_point}
        assert marked[turn_id]["fpi.confidence"] == {"doubleValue": confidence}
    # Read back, the marked spans are the same turns.
    again = load_traces(out, mapping=team / "team.yaml")
    assert again.height == TURNS
    refused = run_cli("classify", team / "native.jsonl", "-o", tmp_path / "x.otlp.json")
    assert refused.exit_code == 2 and "only for OpenTelemetry input" in refused.stderr


def test_livekit_spans_read_through_the_shipped_mapping():
    native = [as_span_information(turn) for turn in _turns(400, seed=32)]
    turns = load_traces(livekit_export(native, seed=2), mapping="livekit")  # in span start order
    in_order = [t for session in _sessions(native).values() for t in session]
    expected = load_traces(b"".join(json.dumps(t).encode() + b"\n" for t in in_order))
    assert turns.height == 400
    assert turns["asr"].struct.field("text").equals(expected["asr"].struct.field("text"), null_equal=True)
    assert turns["asr"].struct.field("confidence").equals(expected["asr"].struct.field("confidence"), null_equal=True)
    assert turns["feedback"].equals(expected["feedback"], null_equal=True)
    ran = expected["result"].is_not_null()  # an LLM node that ran and failed nothing reads as success
    assert turns["result"].struct.field("status").filter(ran).equals(expected["result"].struct.field("status").filter(ran))
    tool = expected["result"].struct.field("action")
    intent = turns["nlu"].struct.field("intent")
    assert (intent == tool.fill_null("respond")).filter(expected["nlu"].is_not_null()).all()


def test_openinference_spans_read_one_turn_per_trace():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )
    from opentelemetry.trace import Status, StatusCode, set_span_in_context
    from otel_export import SeededIds, _otlp_json

    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=SeededIds(7))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("openinference")
    for i, (words, tool_fails) in enumerate([("what's the weather", False), ("book a table", True)]):
        root = tracer.start_span("agent", start_time=(i + 1) * 10**9)
        root.set_attribute("openinference.span.kind", "AGENT")
        root.set_attribute("session.id", "chat-1")
        root.set_attribute("input.value", words)
        root.set_attribute("output.value", "Here you go." if not tool_fails else "Sorry.")
        llm = tracer.start_span("ChatCompletion", context=set_span_in_context(root))
        llm.set_attribute("openinference.span.kind", "LLM")
        tool = tracer.start_span("book", context=set_span_in_context(llm))
        tool.set_attribute("openinference.span.kind", "TOOL")
        tool.set_attribute("tool.name", "weather" if not tool_fails else "book_table")
        if tool_fails:
            tool.set_status(Status(StatusCode.ERROR, "no tables"))
        tool.end()
        llm.end()
        root.end(end_time=(i + 1) * 10**9 + 5)
    turns = load_traces(_otlp_json(list(exporter.get_finished_spans()), per_line=100), mapping="openinference")
    assert turns["session_id"].to_list() == ["chat-1", "chat-1"]
    assert turns["turn_index"].to_list() == [0, 1]
    assert turns["asr"].struct.field("text").to_list() == ["what's the weather", "book a table"]
    assert turns["nlu"].struct.field("intent").to_list() == ["weather", "book_table"]
    assert turns["result"].struct.field("status").to_list() == ["success", "error"]


@pytest.mark.slow
def test_spans_go_back_with_verdicts_through_any_engine_that_reads_them_whole(team, tmp_path):
    """Write-back is a sink of the library: in memory and streamed alike, and refused for input that is not spans."""
    from fpi.contract.errors import UsageError
    from fpi.engines import memory, streamed
    from fpi.engines.plan import Plan, Reading
    from fpi.io.otlp import SpanVerdicts
    from fpi.pipeline.classify import Pipeline

    written = {}
    for engine in (memory, streamed):
        sink = SpanVerdicts(tmp_path / f"{engine.__name__}.otlp.json")
        engine.run(Plan(str(team / "plain.otlp.jsonl"), Pipeline(), Reading(mapping="pipecat"), [sink], batch_turns=1000))
        written[engine] = (sink.marked, sink.path.read_bytes())
    assert written[memory] == written[streamed] and written[memory][0] == TURNS
    with pytest.raises(UsageError, match="spans can be written back only for OpenTelemetry input"):
        SpanVerdicts(tmp_path / "x.otlp.json").start(None)
