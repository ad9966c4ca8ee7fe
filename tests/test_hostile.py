"""Hostile input: no crash, no abort, no hang; every failure a clear error with its exit code."""

import json
import re
import shutil

import pytest

from conftest import FIXTURES, run_cli, turn, write_jsonl
from fpi import read_traces
from fpi.pipeline.conditions import MAX_DEPTH, ConditionError, parse
from fpi.contract.errors import ModelError
from fpi.pipeline.model import FailurePointModel
from fpi.pipeline.model_folder import default_model_dir
from fpi.contract.yaml_documents import read_yaml


def test_json_nested_deep_inside_a_field_is_a_bad_line(tmp_path):
    deep = '{"turn_id": "a", "session_id": "s", "turn_index": 0, "asr": ' + "[" * 50_000 + "]" * 50_000 + "}\n"
    path = tmp_path / "deep.jsonl"
    path.write_text(deep + json.dumps(turn(turn_id="b", turn_index=1)) + "\n")
    result = read_traces(path)
    assert result.accepted == 1 and "nested too deep" in result.problems()[0] and ":1:" in result.problems()[0]


@pytest.mark.parametrize(("text", "expected"), [
    ("a: &a [1, 2]\nb: [*a, *a]\n", ":2: not valid YAML: aliases (*name) are not allowed"),
    ("model:\n  accuracy: 0.9\nmodel:\n  macro_f1: 0.8\n", ":3: not valid YAML: duplicate key 'model', first on line 1"),
    ("rules: " + "[" * 200 + "]" * 200 + "\n", "nested deeper than 50 levels"),
])
def test_yaml_refuses_aliases_duplicates_and_deep_nesting(tmp_path, text, expected):
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    document, problems = read_yaml(path)
    assert document is None and expected in str(problems[0])


def test_billion_laughs_is_refused_at_once(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(97 + i)}: &{chr(97 + i)} [{','.join(['*' + chr(96 + i)] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "rules.yaml"
    path.write_text("\n".join(lines) + "\nrules: *i\n")
    result = run_cli("rules", "lint", path)
    assert result.exit_code == 2 and "aliases" in result.stderr


@pytest.mark.parametrize("condition", [
    " and ".join(["asr.confidence < 0.5"] * 200),
    "not " * (MAX_DEPTH + 5) + "feedback.barge_in",
    "(" * (MAX_DEPTH + 5) + "feedback.barge_in" + ")" * (MAX_DEPTH + 5),
])
def test_conditions_too_long_or_deep_are_condition_errors(condition):
    with pytest.raises(ConditionError):
        parse(condition)


def _damaged_model(tmp_path, edit, *, checksum: bool = False):
    """A copy of the shipped model with `edit` applied; without its booster checksum unless `checksum`
    (as a model written by hand or by an older fpi), so the structural checks are what must catch it."""
    where = tmp_path / "model"
    shutil.copytree(default_model_dir(), where)
    if not checksum:
        meta = json.loads((where / "model.json").read_text())
        meta.pop("booster_sha256", None)
        (where / "model.json").write_text(json.dumps(meta))
    edit(where)
    return where


def _edit_tree_line(where, field: str, edit):
    """Change the first tree's `field=` line in place, keeping the file's length."""
    text = (where / "booster.txt").read_text()
    start = text.index("\nTree=0\n")
    at = text.index(f"\n{field}=", start) + len(field) + 2
    end = text.index("\n", at)
    new = edit(text[at:end])
    assert len(new) == end - at
    (where / "booster.txt").write_text(text[:at] + new + text[end:])


def test_a_booster_changed_after_it_was_written_is_named(tmp_path):
    def flip(where):
        _edit_tree_line(where, "leaf_value", lambda values: values.replace("1", "2", 1))
    with pytest.raises(ModelError, match="changed since model.json was written"):
        FailurePointModel.load(_damaged_model(tmp_path, flip, checksum=True))


def _first(value: str):
    """An edit putting `value` (padded to the same width) in place of the first number of a line."""
    def edit(line: str) -> str:
        first, _, others = line.partition(" ")
        assert len(value) <= len(first) + len(others) + 1
        return (value.rjust(len(first)) + " " + others) if len(value) <= len(first) else value + line[len(value):]
    return edit


@pytest.mark.parametrize("field,edit,expected", [
    ("left_child", _first("0"), "neither a later node nor a leaf"),  # node 0 its own child: a cycle
    ("right_child", lambda v: re.sub(r"(?<= )-\d\d(?= )", "-99", v, count=1), "neither a later node nor a leaf"),  # no such leaf
    ("split_feature", lambda v: re.sub(r"(?<= )\d\d(?= )", "99", v, count=1), "split feature out of range"),
    ("leaf_value", _first("x"), "not a number"),
    ("cat_threshold", lambda v: v[:2] + " " + v[3:], "boundaries do not match"),  # one bitset word more
])
def test_a_tree_edited_to_the_same_length_is_caught_before_lightgbm(tmp_path, field, edit, expected):
    """LightGBM trusts a tree's structure: a child that points back loops forever, one out of range reads
    past the end. Same-length edits pass the header's size check, so each tree is checked."""
    model = _damaged_model(tmp_path, lambda where: _edit_tree_line(where, field, edit))
    with pytest.raises(ModelError, match=expected):
        FailurePointModel.load(model)
    result = run_cli("classify", FIXTURES / "traces.jsonl", "--model", model)
    assert result.exit_code == 2 and "tree 0 is damaged" in result.stderr


def test_a_truncated_booster_is_a_model_error_not_a_crash(tmp_path):
    def truncate(where):
        text = (where / "booster.txt").read_text()
        (where / "booster.txt").write_text(text[: len(text) // 3])
    with pytest.raises(ModelError, match="cut short"):
        FailurePointModel.load(_damaged_model(tmp_path / "a", truncate))

    def shorten_a_tree(where):
        text = (where / "booster.txt").read_text()
        (where / "booster.txt").write_text(text.replace("\nTree=1\n", "\nTree=1\nshrinkage=1\n", 1))
    with pytest.raises(ModelError, match="header promises"):
        FailurePointModel.load(_damaged_model(tmp_path / "b", shorten_a_tree))
    result = run_cli("classify", FIXTURES / "traces.jsonl", "--model", _damaged_model(tmp_path / "c", truncate))
    assert result.exit_code == 2


def test_model_json_with_missing_or_mistyped_keys_names_them(tmp_path):
    def damage(where):
        meta = json.loads((where / "model.json").read_text())
        del meta["vocabularies"]
        meta["best_iteration"] = "many"
        (where / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError) as info:
        FailurePointModel.load(_damaged_model(tmp_path, damage))
    assert "vocabularies: required field is missing" in str(info.value) and "best_iteration: expected an integer, got str" in str(info.value)


def test_a_passing_gate_with_quarantined_input_exits_3(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "traces.jsonl").read_text().splitlines()]
    rows.append(turn(turn_id="bad", label="?"))
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    policy = tmp_path / "policy.yaml"
    policy.write_text("model:\n  accuracy: 0.5\n")
    result = run_cli("gate", path, "--policy", policy, "--on-error", "skip")
    assert result.exit_code == 3 and "gate PASS" in result.stdout


def test_empty_human_field_is_a_usage_error(fixture_traces):
    result = run_cli("eval", fixture_traces, "--human", "")
    assert result.exit_code == 2 and "--human takes the name of a field" in result.stderr


def test_impossible_dates_are_refused_by_both_paths():
    rows = [turn(turn_id="a", timestamp="2026-02-30T10:00:00Z"), turn(turn_id="b", turn_index=1, timestamp="2026-02-28T24:00:00Z"),
            turn(turn_id="c", turn_index=2, timestamp="2024-02-29T23:59:60.5+05:30")]
    result = read_traces("\n".join(json.dumps(r) for r in rows).encode(), name="t.jsonl")
    assert result.accepted == 1
    assert [m.split(":")[1] for m in result.problems()] == ["1", "2"]
    assert "got a string '2026-02-30T10:00:00Z'" in result.problems()[0]


def test_typed_columns_of_the_wrong_type_are_refused_not_coerced(tmp_path):
    import polars as pl

    from fpi import TraceError, load_traces

    for frame, expected in ((pl.DataFrame({"turn_id": ["a"], "session_id": ["s"], "turn_index": ["3"]}), "turn_index: expected an integer, got String"),
                            (pl.DataFrame({"turn_id": ["a"], "session_id": ["s"], "turn_index": [0],
                                           "asr": [{"text": "x", "confidence": True}]}), "asr.confidence: expected a number, got Boolean")):
        frame.write_parquet(tmp_path / "t.parquet")
        with pytest.raises(TraceError, match=expected):
            load_traces(tmp_path / "t.parquet")


def test_nan_and_infinity_in_a_policy_or_rule_name_their_lines(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("model:\n  accuracy: .nan\n  macro_f1: .inf\n")
    document, problems = read_yaml(policy)
    assert document is None
    assert [str(p) for p in problems] == [f"{policy}:2: model/accuracy: nan is not a number; write a number",
                        f"{policy}:3: model/macro_f1: inf is not a number; write a number"]
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - id: a\n    description: d\n    when: asr.confidence < 0.5\n    then: {assign: asr}\n    priority: .nan\n")
    result = run_cli("rules", "lint", rules)
    assert result.exit_code == 2 and ":6: Y003 rules/0/priority: nan is not a number" in result.stderr


def test_damaged_outputs_and_inputs_of_report_and_gate_are_clear_errors(fixture_traces, tmp_path):
    records = tmp_path / "records.jsonl"
    run_cli("classify", fixture_traces, "-o", records)
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_bytes(records.read_bytes()[:2000])
    result = run_cli("report", truncated)
    assert result.exit_code == 2 and f"{truncated}:" in result.stderr and "not readable as classified records" in result.stderr
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1" + b"\0" * 40 + b"PAR1")
    result = run_cli("report", corrupt)
    assert result.exit_code == 2 and "not a readable Parquet file" in result.stderr
    folder = tmp_path / "out"
    folder.mkdir()
    result = run_cli("report", records, "--format", "html", "-o", folder)
    assert result.exit_code == 2 and "is a folder" in result.stderr
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"format": "fpi-metrics", "format_version": 1, "defect_rates": {"predicted": {}}}))
    result = run_cli("gate", fixture_traces, "--policy", FIXTURES / "gate" / "policy.yaml", "--baseline", baseline)
    assert result.exit_code == 2 and "defect_rates.predicted: expected overall and per_component rates" in result.stderr
