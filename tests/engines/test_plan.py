"""A run says the same thing whichever engine made it: counts, the confusion of labeled turns, the
metrics file; sinks are started on the input, fed in input order, and leave nothing when a run fails."""

import pytest

from fpi.contract.metrics import Metrics
from fpi.engines import memory
from fpi.engines.plan import Plan, Reading, Run, Sinks, sink_for
from fpi.io.otlp import SpanVerdicts
from fpi.io.records_files import RecordsFile
from fpi.io.traces import read_traces, turns_fingerprint
from fpi.pipeline.classify import Pipeline


def test_a_runs_metrics_are_the_metrics_of_its_records(fixture_traces):
    pipeline = Pipeline()
    outcome = memory.run(Plan(str(fixture_traces), pipeline, Reading(labels_required=True), fingerprint=True, keep_batch=True))
    assert outcome.batch is not None and outcome.scored == 2000
    turns, records = outcome.batch.turns, outcome.batch.records
    expected = Metrics.measure(source=str(fixture_traces), data_fingerprint=turns_fingerprint(turns),
                               model_fingerprint=pipeline.model.fingerprint(), rules=pipeline.rules.identity(),
                               predicted=records["failure_point"].to_list(), gold=turns["label"].to_list())
    assert outcome.metrics(pipeline) == expected
    assert outcome.scores() == expected.metrics


def test_counts_add_up_batch_by_batch_and_from_counted_rows(fixture_traces):
    records = Pipeline().run(read_traces(fixture_traces).turns).records
    whole, halves, counted = (Run("x", "memory") for _ in range(3))
    whole.count(records)
    halves.count(records.head(700))
    halves.count(records.tail(1300))
    counted.count(records.group_by("failure_point", "label").len("n"), turns="n")
    assert whole.counts == halves.counts == counted.counts
    assert (whole.confusion == halves.confusion).all() and (whole.confusion == counted.confusion).all()
    assert whole.confusion.sum() == 2000 and whole.classified == 2000


def test_sinks_are_named_by_the_output(tmp_path):
    assert isinstance(sink_for(tmp_path / "x.otlp.json"), SpanVerdicts)
    assert isinstance(sink_for(tmp_path / "x.parquet"), RecordsFile) and isinstance(sink_for(None), RecordsFile)


def test_a_failed_run_leaves_no_output_and_the_old_one_stays(fixture_traces, tmp_path):
    out = tmp_path / "records.jsonl"
    out.write_text("old\n")
    records = Pipeline().run(read_traces(fixture_traces).turns).records
    with pytest.raises(RuntimeError), Sinks([RecordsFile(out)], None) as sinks:
        sinks.write(records.head(10))
        raise RuntimeError("the run fails half way")
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]
