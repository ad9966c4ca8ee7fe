"""Which engine runs a plan, chosen one way for every command: Spark when asked for, streamed for a file
larger than a batch, in memory for the rest and whenever the pipeline's batch is wanted whole; and the
run goes to the engine chosen, with the same records whichever it is."""

import gzip

import pytest

from fpi.contract.errors import UsageError
from fpi.engines.choice import Engine, choose, run
from fpi.engines.plan import Plan, sink_for
from fpi.pipeline.classify import Pipeline


@pytest.fixture(scope="module")
def pipeline():
    return Pipeline()


def test_a_file_larger_than_a_batch_streams_and_the_rest_runs_in_memory(fixture_traces, pipeline):
    assert choose(Plan(str(fixture_traces), pipeline, batch_turns=100_000)) == "memory"
    assert choose(Plan(str(fixture_traces), pipeline, batch_turns=1000)) == "streamed"
    assert choose(Plan(str(fixture_traces), pipeline, batch_turns=1000, keep_batch=True)) == "memory"
    assert choose(Plan(fixture_traces.read_bytes(), pipeline, batch_turns=1000)) == "memory"
    assert choose(Plan("-", pipeline, batch_turns=1000)) == "memory"
    assert choose(Plan(str(fixture_traces), pipeline, batch_turns=100_000), Engine.spark) == "spark"


def test_a_damaged_gzip_file_falls_back_to_memory_where_the_reader_names_it(tmp_path, pipeline):
    damaged = tmp_path / "traces.jsonl.gz"
    damaged.write_bytes(gzip.compress(b'{"turn_id": "t"}\n' * 5000)[:200])
    assert choose(Plan(str(damaged), pipeline, batch_turns=1000)) == "memory"


def test_the_run_goes_to_the_engine_chosen_with_the_same_records(fixture_traces, pipeline, tmp_path):
    whole = run(Plan(str(fixture_traces), pipeline, sinks=[sink_for(tmp_path / "whole.jsonl")], batch_turns=100_000))
    parts = run(Plan(str(fixture_traces), pipeline, sinks=[sink_for(tmp_path / "parts.jsonl")], batch_turns=1000))
    assert (whole.engine, parts.engine) == ("memory", "streamed")
    assert (tmp_path / "parts.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert parts.counts == whole.counts and parts.classified == whole.classified == 2000


def test_spark_says_plainly_what_it_cannot_write(fixture_traces, pipeline, tmp_path):
    from fpi.engines import spark

    for sinks in ([sink_for(None)], [sink_for(tmp_path / "records.jsonl")], []):
        with pytest.raises(UsageError, match="give -o NAME.parquet"):
            spark.run(Plan(str(fixture_traces), pipeline, sinks=sinks))
    with pytest.raises(UsageError, match="metrics come from the local engines"):
        spark.run(Plan(str(fixture_traces), pipeline, sinks=[sink_for(tmp_path / "r.parquet")], fingerprint=True))
