"""Every engine reads what the readers read and gives the same records: the fixtures as trace format v1,
through a mapping (CSV and JSON Lines of another shape) and as OpenTelemetry spans, classified in memory,
streamed in small batches and on Spark."""

import json

import polars as pl
import pytest
from conftest import FIXTURES
from otel_export import as_span_information, pipecat_export
from warehouse_export import WAREHOUSE, warehouse_export

from fpi import load_traces
from fpi.contract.trace_format import LABELS
from fpi.engines import memory, streamed
from fpi.engines.plan import Plan, Reading, sink_for
from fpi.pipeline.classify import Pipeline

TEAM_SPANS = "extends: pipecat\nfields:\n  asr.confidence: stt:stt.confidence\n  nlu.intent:\n    first_of: [llm:nlu.intent, tool:tool.function_name]\n  nlu.confidence: llm:nlu.confidence\n"


def _shapes(folder, native):
    """The turns of `native` in every shape a reader reads: (input, mapping) by name."""
    turns = load_traces(native)
    export = warehouse_export(turns)
    export.write_csv(folder / "export.csv")
    export.write_ndjson(folder / "export.jsonl")
    (folder / "warehouse.yaml").write_text(WAREHOUSE)
    (folder / "warehouse-lines.yaml").write_text(WAREHOUSE.replace("format: csv\n", ""))
    spans = [as_span_information(json.loads(line)) for line in native.read_text().splitlines()]
    (folder / "spans.otlp.jsonl").write_bytes(pipecat_export(spans, team_attributes=True, seed=4, shuffle=True))
    (folder / "team.yaml").write_text(TEAM_SPANS)
    return {"native": (native, None), "csv": (folder / "export.csv", folder / "warehouse.yaml"),
            "lines": (folder / "export.jsonl", folder / "warehouse-lines.yaml"),
            "spans": (folder / "spans.otlp.jsonl", folder / "team.yaml")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The fixtures in every shape a reader reads."""
    return _shapes(tmp_path_factory.mktemp("shapes"), FIXTURES / "traces.jsonl")


@pytest.fixture(scope="module")
def some_sessions(tmp_path_factory):
    """The fixtures' first 200 sessions (some 500 turns, every failure point and rule among their verdicts) in every
    shape: Spark's two partitions each classify sessions of their own, on a quarter of the fixtures' turns."""
    folder = tmp_path_factory.mktemp("some-sessions")
    lines = (FIXTURES / "traces.jsonl").read_text().splitlines()
    sessions = list(dict.fromkeys(json.loads(line)["session_id"] for line in lines))[:200]
    kept = set(sessions)
    (folder / "traces.jsonl").write_text("".join(line + "\n" for line in lines if json.loads(line)["session_id"] in kept))
    return _shapes(folder, folder / "traces.jsonl")


def _records(engine, source, mapping, output, batch_turns=1000, **options):
    """Where the engine wrote the records, and what it says of its run."""
    plan = Plan(str(source), Pipeline(explain_top_k=2), Reading(mapping=mapping), [sink_for(output)], batch_turns=batch_turns)
    run = engine.run(plan, **options)
    assert run.classified == run.turns > 0
    return output, run


def _same_run(one, other, mapped: bool) -> None:
    """Both engines say the same of the input: what a mapping found of it, and the labels its turns could have."""
    assert one.coverage == other.coverage and (one.coverage is not None) == mapped
    assert one.possible == other.possible and "correct" in one.possible


@pytest.mark.parametrize("shape", ["native", pytest.param("csv", marks=pytest.mark.slow),
                                   pytest.param("lines", marks=pytest.mark.slow), "spans"])
@pytest.mark.slow
def test_memory_and_streamed_write_the_same_bytes(inputs, tmp_path, shape):
    source, mapping = inputs[shape]
    whole, in_memory = _records(memory, source, mapping, tmp_path / "memory.jsonl")
    parts, in_parts = _records(streamed, source, mapping, tmp_path / "streamed.jsonl")
    assert parts.read_bytes() == whole.read_bytes()
    _same_run(in_parts, in_memory, mapping is not None)


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["native", "csv", "lines", "spans"])
def test_spark_gives_the_records_of_the_local_engines(spark, some_sessions, tmp_path, shape):
    from fpi.engines import spark as on_spark

    source, mapping = some_sessions[shape]
    whole, in_memory = _records(memory, source, mapping, tmp_path / "memory.parquet")
    folder, on_spark_run = _records(on_spark, source, mapping, tmp_path / "spark.parquet")
    records = pl.read_parquet(whole)
    assert pl.read_parquet(folder / "*.parquet").equals(records)
    _same_run(on_spark_run, in_memory, mapping is not None)  # "lines": Spark reads them itself, and adds up what tasks found
    assert records["failure_point"].n_unique() >= 4 and records["explanation"].null_count() < records.height
    if shape == "native":  # every verdict there is, models' and rules'
        assert set(records["failure_point"]) == set(LABELS) and records["rule"].drop_nulls().n_unique() > 3


def test_streamed_carries_what_the_mapping_found_and_the_stages_the_logs_lack(tmp_path):
    """A mapped read is read whole, then spilled: its coverage and possible labels are those of the memory run."""
    from voice_agent_export import pipecat_calls, voice_calls

    export = tmp_path / "calls.otlp.jsonl"
    export.write_bytes(pipecat_calls(voice_calls(240, seed=3)))
    whole, in_memory = _records(memory, export, "pipecat", tmp_path / "memory.jsonl")
    parts, in_parts = _records(streamed, export, "pipecat", tmp_path / "streamed.jsonl", batch_turns=60)
    assert parts.read_bytes() == whole.read_bytes()
    _same_run(in_parts, in_memory, mapped=True)
    assert in_parts.coverage.turns == 240 and in_parts.coverage.stages == {"asr": 1.0, "nlu": 1.0, "result": 1.0, "feedback": 1.0}
    assert in_parts.possible == {"asr", "nlu", "result", "correct"}
