"""The --on-error policy, written once: `fail` raises with every problem and writes nothing, `skip`
goes on and writes the bad records, unchanged and with their reasons, where it is told."""

import json

import pytest
from conftest import turn, write_jsonl

from fpi.contract.errors import TraceError
from fpi.io.quarantine import OnError, apply_on_error, default_quarantine
from fpi.io.traces import load_traces, read_accepting, read_traces


@pytest.fixture
def bad(tmp_path):
    return write_jsonl(tmp_path / "t.jsonl", [turn(), turn(turn_id="t2", turn_index="one"), turn(turn_id="t3", turn_index=2)])


def test_fail_raises_with_every_problem_and_writes_nothing(bad, tmp_path):
    result = read_traces(bad)
    with pytest.raises(TraceError) as raised:
        apply_on_error(result.source, result.rejected, OnError.fail, tmp_path / "q.jsonl")
    assert str(raised.value).startswith(f"{bad}: 1 bad records; nothing was written (use --on-error skip")
    assert raised.value.problems == result.problems() and not (tmp_path / "q.jsonl").exists()


def test_skip_writes_the_bad_records_where_told_and_says_where(bad, tmp_path):
    result = read_accepting(bad, on_error="skip", quarantine=tmp_path / "q.jsonl")
    assert result.turns.height == 2 and result.quarantine == tmp_path / "q.jsonl" and result.exit_code == 3
    kept = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [(k["line"], k["errors"][0]["field"]) for k in kept] == [(2, "turn_index")]
    assert json.loads(kept[0]["raw"])["turn_id"] == "t2"
    assert load_traces(bad, on_error="skip").height == 2  # no quarantine given: nothing written


def test_no_bad_records_means_no_quarantine(tmp_path):
    clean = write_jsonl(tmp_path / "c.jsonl", [turn()])
    assert apply_on_error(str(clean), [], OnError.fail, tmp_path / "q.jsonl") is None and not (tmp_path / "q.jsonl").exists()


def test_the_default_quarantine_sits_beside_the_input():
    assert str(default_quarantine("logs/t.jsonl")) == "logs/t.jsonl.quarantine.jsonl"
    assert str(default_quarantine("-")) == "stdin.quarantine.jsonl"
    assert str(default_quarantine("t.jsonl", "elsewhere.jsonl")) == "elsewhere.jsonl"
    with pytest.raises(ValueError):
        OnError("ignore")
