"""Nothing lost: an output that is an input, or another output, is refused before anything is
read or written; a model folder is replaced only on purpose, and as a whole."""

import pytest

from conftest import run_cli, turn, write_jsonl


def _traces_with_a_bad_line(tmp_path):
    rows = [turn(turn_id=f"t{i}", turn_index=i) for i in range(5)] + [turn(turn_id="bad", turn_index=9, label="?")]
    return write_jsonl(tmp_path / "t.jsonl", rows)


def test_quarantine_onto_the_input_is_refused_and_the_input_kept(tmp_path):
    traces = _traces_with_a_bad_line(tmp_path)
    before = traces.read_bytes()
    result = run_cli("classify", traces, "--on-error", "skip", "--quarantine", traces, "-o", tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "is also an input" in result.stderr
    assert traces.read_bytes() == before and not (tmp_path / "out.jsonl").exists()
    same = tmp_path / "same.jsonl"
    result = run_cli("classify", traces, "--on-error", "skip", "--quarantine", same, "-o", same)
    assert result.exit_code == 2 and "two outputs" in result.stderr and not same.exists()


def test_every_writing_command_guards_its_outputs(fixture_traces, tmp_path):
    copy = tmp_path / "t.jsonl"
    copy.write_bytes(fixture_traces.read_bytes())
    for command in (("report", copy, "--format", "json", "-o", copy), ("eval", copy, "--save-metrics", copy),
                    ("sample", copy, "-n", "5", "-o", tmp_path / "t.jsonl"), ("classify", copy, "-o", copy)):
        result = run_cli(*command)
        assert result.exit_code == 2 and "is also an input" in result.stderr, command
    assert copy.read_bytes() == fixture_traces.read_bytes()


@pytest.mark.slow
def test_train_writes_only_a_new_folder_or_a_model_with_force(fixture_traces, tmp_path):
    traces = tmp_path / "traces.jsonl"  # enough labels to train on, few enough to train fast
    traces.write_text("".join(fixture_traces.read_text().splitlines(keepends=True)[:400]))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    result = run_cli("train", traces, "-o", a_file)
    assert result.exit_code == 2 and "is a file" in result.stderr and a_file.read_text() == "keep me"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "data.csv").write_text("x")
    assert run_cli("train", traces, "-o", busy).exit_code == 2 and (busy / "data.csv").exists()
    model = tmp_path / "model"
    assert run_cli("train", traces, "-o", model).exit_code == 0
    first = (model / "booster.txt").read_bytes()
    again = run_cli("train", traces, "-o", model, "--seed", "5")
    assert again.exit_code == 2 and "--force" in again.stderr and (model / "booster.txt").read_bytes() == first
    assert run_cli("train", traces, "-o", model, "--seed", "5", "--force").exit_code == 0
    assert (model / "booster.txt").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "model", "notes.txt", "traces.jsonl"]  # no staging folders left
