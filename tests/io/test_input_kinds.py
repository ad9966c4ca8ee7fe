"""Never a silent wrong answer: input that is not traces says what it is, once, and writes nothing;
records are recognised wherever they come from; a bug is exit 70, never the gate's 1."""

import json

import pytest
from typer.testing import CliRunner

from conftest import run_cli, write_jsonl
from fpi.cli import app
from fpi.contract.errors import EXIT_INTERNAL


def test_logs_with_other_field_names_are_refused_naming_the_fields(tmp_path):
    rows = [{"turn_id": f"t{i}", "session_id": "s", "turn_index": i, "asr_text": "lights on", "intent": "on", "status": "ok"}
            for i in range(5)]
    path, out = write_jsonl(tmp_path / "logs.jsonl", rows), tmp_path / "out.jsonl"
    for command in (("classify", path, "-o", out), ("validate", path), ("report", path)):
        result = run_cli(*command)
        assert result.exit_code == 2, command
        assert "none of the stages trace format v1 names" in result.stderr
        assert "asr_text, intent, status" in result.stderr
        assert "--mapping" in result.stderr and "fpi map infer" in result.stderr
    assert not out.exists()


def test_classified_records_given_as_traces_are_named(fixture_traces, tmp_path):
    records = tmp_path / "records.jsonl"
    assert run_cli("classify", fixture_traces, "-o", records).exit_code == 0
    for command in (("classify", records), ("eval", records)):
        result = run_cli(*command)
        assert result.exit_code == 2 and "holds classified records" in result.stderr
    stdin = run_cli("classify", "-", input=records.read_bytes())
    assert stdin.exit_code == 2 and "<stdin>: holds classified records" in stdin.stderr


def test_csv_gets_one_clear_message(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("turn_id,session_id,asr_text\n" + "".join(f"t{i},s,hello\n" for i in range(2000)))
    result = run_cli("validate", path)
    assert result.exit_code == 2
    assert result.stderr.count("looks like CSV") == 1 and "header: turn_id, session_id, asr_text" in result.stderr
    assert "needs a mapping" in result.stderr and "--mapping" in result.stderr


@pytest.mark.slow
def test_report_reads_records_from_stdin_as_by_file_name(fixture_traces, tmp_path):
    records = tmp_path / "records.jsonl"
    run_cli("classify", fixture_traces, "-o", records)
    by_name = json.loads(run_cli("report", records, "--format", "json").stdout)
    by_stdin = json.loads(run_cli("report", "-", "--format", "json", input=records.read_bytes()).stdout)
    by_name.pop("source"), by_stdin.pop("source")
    assert by_name == by_stdin
    traces_by_stdin = run_cli("report", "-", "--format", "json", input=fixture_traces.read_bytes())
    assert traces_by_stdin.exit_code == 0 and json.loads(traces_by_stdin.stdout)["turns"] == 2000


def test_an_unexpected_error_is_exit_70_with_one_line(fixture_traces, monkeypatch):
    import fpi.io.traces

    def broken(*args, **kwargs):
        raise RuntimeError("something fpi did not expect")

    monkeypatch.setattr(fpi.io.traces, "read_traces", broken)
    result = CliRunner().invoke(app, ["validate", str(fixture_traces)])
    assert result.exit_code == EXIT_INTERNAL
    assert "internal error: RuntimeError: something fpi did not expect (run with --debug for the traceback)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_frames_a_notebook_has_are_read_with_the_same_rules(fixture_traces):
    import pandas as pd
    import polars as pl

    import fpi

    from_file = fpi.classify(fpi.load_traces(fixture_traces)).drop("timestamp")
    frame = pl.read_ndjson(fixture_traces, infer_schema_length=None)
    for source in (frame, frame.to_pandas(), frame.to_arrow()):
        records = fpi.classify(source).drop("timestamp")
        assert records.equals(from_file), type(source)
    bad = pd.DataFrame([{"turn_id": "a", "session_id": "s", "turn_index": 0},
                        {"turn_id": "b", "session_id": "s", "turn_index": -1}])
    result = fpi.read_traces(bad, name="notebook")
    assert result.accepted == 1 and result.problems() == ["notebook:2: turn_index: expected an integer >= 0 and <= 2^53 - 1, got -1.0"]
    with pytest.raises(fpi.TraceError, match="not traces"):
        fpi.load_traces(42)
