"""The README's exit-code table, held for every command that reads traces: 2 for input that cannot be
used (nothing written), 3 when some records were quarantined and the rest went on, 0 otherwise."""

import json

import pytest

from conftest import FIXTURES, run_cli

POLICY = "model:\n  macro_f1: 0.1\n"


def _commands(traces, tmp_path):
    """Each command that reads traces, with its outputs; `{out}` is a fresh output path."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return {
        "validate": ["validate", traces],
        "classify": ["classify", traces, "-o", tmp_path / "out.jsonl"],
        "eval": ["eval", traces, "--save-metrics", tmp_path / "out.json"],
        "explain": ["explain", traces, "--turn", "t00001897"],
        "gate": ["gate", traces, "--policy", policy],
        "report": ["report", traces, "--format", "json", "-o", tmp_path / "out.json"],
        "rules check": ["rules", "check", traces],
        "sample": ["sample", traces, "-n", "5", "-o", tmp_path / "out.csv"],
        "adapt": ["adapt", traces, "-o", tmp_path / "model"],
    }


@pytest.fixture(scope="module")
def with_a_bad_line(tmp_path_factory):
    lines = (FIXTURES / "traces.jsonl").read_text().splitlines()[:600]
    path = tmp_path_factory.mktemp("codes") / "traces.jsonl"
    path.write_text("\n".join([*lines[:300], '{"turn_id": "broken",', *lines[300:]]) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("command", ["validate", "classify", "eval", "explain", "gate", "report", "rules check", "sample", "adapt"])
def test_every_reading_command_keeps_the_exit_code_table(command, with_a_bad_line, tmp_path):
    args = _commands(with_a_bad_line, tmp_path)[command]
    outputs = [a for a in args if str(a).startswith(str(tmp_path)) and not str(a).endswith("policy.yaml")]
    refused = run_cli(*args)
    assert refused.exit_code == 2, refused.stderr
    code = "T001 " if command == "validate" else ""  # the lint-like command gives each problem's code (docs/lint.md)
    assert f"{with_a_bad_line}:301: {code}malformed JSON" in refused.stderr
    assert not any(path.exists() for path in outputs), "nothing is written when a command refuses"
    missing = run_cli(*_commands(tmp_path / "no-such.jsonl", tmp_path)[command])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    quarantine = tmp_path / "q.jsonl"
    skipped = run_cli(*args, "--on-error", "skip", "--quarantine", quarantine)
    assert skipped.exit_code == 3, skipped.stderr
    assert [json.loads(line)["line"] for line in quarantine.read_text().splitlines()] == [301]


@pytest.mark.parametrize("command", ["validate", "classify", "eval", "explain", "gate", "report", "rules check", "sample", "adapt"])
def test_input_with_every_record_rejected_is_a_clear_answer_never_a_crash(command, tmp_path):
    traces = tmp_path / "all-bad.jsonl"
    traces.write_text('{}x}\n{\nnull\n{"turn_id": "a"}\n')
    quarantine = tmp_path / "q.jsonl"
    result = run_cli(*_commands(traces, tmp_path)[command], "--on-error", "skip", "--quarantine", quarantine)
    assert result.exit_code in (2, 3), result.stderr  # never an internal error (70)
    assert "internal error" not in result.stderr
    if result.exit_code == 2:
        assert str(traces) in result.stderr
    else:
        assert [json.loads(line)["line"] for line in quarantine.read_text().splitlines()] == [1, 2, 3, 4]
    if command == "classify":
        assert result.exit_code == 3 and (tmp_path / "out.jsonl").read_text() == ""
    if command in ("eval", "rules check"):
        assert "no turns to score: none of the 4 records read was accepted" in result.stderr
