import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpi import FailurePointModel, load_traces, simulate
from fpi.pipeline.classify import Pipeline, classify
from fpi.pipeline.rule_cases import load_cases, run_cases
from fpi.pipeline.rules import RuleError, RuleSet, audit_rules, default_rules_path, lint_rules, load_rules
from conftest import ROOT, run_cli

CASES_FILE = ROOT / "tests" / "rule_cases" / "default.yaml"
CASES = load_cases(CASES_FILE)


@pytest.fixture(scope="module")
def case_results():
    return {r.case.name: r for r in run_cases(CASES, Pipeline())}


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_shipped_rule_cases(name, case_results):
    result = case_results[name]
    assert result.passed, result.message()


def test_every_shipped_rule_has_cases_both_ways():
    ids = {r.id for r in load_rules().rules}
    covered = {c.rule for c in CASES if c.should_fire} & {c.rule for c in CASES if not c.should_fire}
    assert ids == covered


def test_packaged_rules_are_the_repository_rules():
    # one copy: the package's rules folder is a link to the repository's rules/
    assert default_rules_path().resolve() == (ROOT / "rules" / "default.yaml").resolve()


def _write(tmp_path, text: str, name="r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


RULE = """version: 1
rules:
  - id: a
    description: d
    when: {when}
    then: {then}
"""


@pytest.mark.parametrize(("when", "then", "message"), [
    ("asr.confidnce < 0.5", "{recovered: asr}", "r.yaml:5: rule 'a': when, column 1: unknown field 'asr.confidnce'; did you mean asr.confidence"),
    ('result.status == "sucess"', "{recovered: asr}", "r.yaml:5: rule 'a': when, column 18: result.status is never 'sucess'; did you mean 'success'?"),
    ('asr.confidence < "low"', "{recovered: asr}", "r.yaml:5: rule 'a': when, column 16: < compares a number with a string"),
    ("asr.confidence", "{recovered: asr}", "the condition is a number, not true or false"),
    ("asr.confidence < 0.5 and", "{recovered: asr}", "expected a field, a value or '(', found the end of the condition"),
    ("nlu.intent == null", "{recovered: asr}", "null is not a value here; write `x is null`"),
    ("asr.confidence < 0.5", "{recovered: tts}", "r.yaml:6: rules/0/then/recovered: unknown value 'tts'"),
    ("asr.confidence < 0.5", "{recovered: asr, assign: nlu}", "r.yaml:6: rules/0/then: `then` takes exactly one of"),
    ("asr.confidence < 0.5", "{fix: asr}", "unknown effect 'fix'"),
    ("eval('1')", "{recovered: asr}", "column 5: unexpected '('"),
    ("asr.confidence < 0.5 ; drop", "{recovered: asr}", "column 22: unexpected character ';'"),
])
def test_lint_names_file_line_and_mend(tmp_path, when, then, message):
    path = _write(tmp_path, RULE.format(when=when, then=then))
    problems = [str(p) for p in lint_rules([path])[1]]
    assert any(message in p for p in problems), problems
    assert all(p.startswith(str(path)) for p in problems)


def test_unknown_fields_duplicate_ids_and_yaml_errors(tmp_path):
    typo = _write(tmp_path, "rules:\n  - id: a\n    description: d\n    whn: x\n    then: {assign: asr}\n", "typo.yaml")
    problems = [str(p) for p in lint_rules([typo])[1]]
    assert any("typo.yaml:4: rules/0: unknown field 'whn'; did you mean 'when'?" in p for p in problems), problems
    one = _write(tmp_path, RULE.format(when="asr.confidence < 0.5", then="{assign: asr}"), "one.yaml")
    two = _write(tmp_path, RULE.format(when="asr.confidence < 0.4", then="{assign: asr}"), "two.yaml")
    problems = [str(p) for p in lint_rules([one, two])[1]]
    assert problems == [f"{two}:3: rule id 'a' is already used at {one}:3; give each rule its own id"]
    broken = _write(tmp_path, "rules: [\n", "broken.yaml")
    problems = [str(p) for p in lint_rules([broken])[1]]
    assert problems and problems[0].startswith(f"{broken}:") and "not valid YAML" in problems[0]


def test_lint_cli_exit_codes(tmp_path):
    assert run_cli("rules", "lint").exit_code == 0
    bad = _write(tmp_path, RULE.format(when="nope > 1", then="{assign: asr}"))
    result = run_cli("rules", "lint", bad)
    assert result.exit_code == 2 and "unknown field 'nope'" in result.stderr
    assert run_cli("classify", ROOT / "fixtures" / "traces.jsonl", "--rules", bad).exit_code == 2
    assert run_cli("rules", "lint", tmp_path / "missing.yaml").exit_code == 2


def test_order_is_priority_then_file_order(tmp_path):
    text = """rules:
  - {id: low, description: d, when: "asr is not null", then: {assign: asr}}
  - {id: high, description: d, when: "asr is not null", then: {assign: nlu}, priority: 5}
  - {id: later, description: d, when: "asr is not null", then: {assign: er}}
"""
    rules = load_rules([_write(tmp_path, text)])
    assert [r.id for r in rules.rules] == ["high", "low", "later"]
    turns = simulate(50, seed=1)
    records = classify(turns, FailurePointModel.load(), rules)
    with_asr = records.filter(pl.Series(turns["asr"].is_not_null()))
    assert (with_asr["rule"] == "high").all() and (with_asr["failure_point"] == "nlu").all()
    assert with_asr["rules_matched"][0].to_list() == ["high", "low", "later"]


def test_recovered_and_not_defect_semantics(tmp_path):
    text = """rules:
  - {id: r-asr, description: d, when: "asr is not null", then: {recovered: asr}}
  - {id: r-er, description: d, when: "asr is not null", then: {recovered: er}}
  - {id: nd, description: d, when: "asr is null", then: {not_defect: nothing said}}
"""
    turns = simulate(300, seed=2)
    records = classify(turns, FailurePointModel.load(), load_rules([_write(tmp_path, text)]))
    spoken = records.filter(pl.Series(turns["asr"].is_not_null()))
    recoverable = spoken["model_failure_point"].is_in(["asr", "er", "correct"])  # a recovery speaks for its own stage
    assert (spoken.filter(recoverable)["failure_point"] == "correct").all() and (~recoverable).any()
    kept = spoken.filter(~recoverable)
    assert kept["failure_point"].equals(kept["model_failure_point"]) and kept["rule"].is_null().all()
    assert spoken.filter(recoverable)["recovered_from"].to_list()[0] == ["asr", "er"]
    assert (records.filter(pl.Series(turns["asr"].is_null()))["failure_point"] == "correct").all()
    assert records["model_failure_point"].to_list() == classify(turns, FailurePointModel.load(), None)["model_failure_point"].to_list()


def test_missing_values_fail_comparisons_except_not_equal(tmp_path):
    text = """rules:
  - {id: ne, description: d, when: 'feedback.explicit != "negative" and wake.score < 2', then: {assign: wake}}
"""
    rows = [{"turn_id": "a", "session_id": "s", "turn_index": 0, "wake": {"detected": True, "score": 0.5}},
            {"turn_id": "b", "session_id": "s", "turn_index": 1}]
    turns = load_traces("\n".join(json.dumps(r) for r in rows).encode())
    records = classify(turns, FailurePointModel.load(), load_rules([_write(tmp_path, text)]))
    assert records["rule"].to_list() == ["ne", None]


# ------------------------------------------------------------------ properties

_fields = st.sampled_from(["asr.confidence", "nlu.confidence", "er_min_score", "next.asr.confidence", "prev_gap_s",
                           "model.confidence", "model.probability.asr", "wake.score"])
_strings = st.sampled_from([("result.status", ["success", "error", "clarify"]), ("model.failure_point", ["asr", "correct"]),
                            ("next.nlu.intent", ["affirm", "x"]), ("feedback.explicit", ["negative", "positive"])])
_booleans = st.sampled_from(["feedback.barge_in", "next.is_rephrase", "wake.verified", "is_answer_to_clarification"])


def _atom():
    number = st.builds(lambda f, op, v: f"{f} {op} {v}", _fields, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
                       st.floats(0, 1).map(lambda v: round(v, 3)))
    string = st.builds(lambda fv, op, i: f'{fv[0]} {op} "{fv[1][i % len(fv[1])]}"', _strings, st.sampled_from(["==", "!="]), st.integers(0, 5))
    member = st.builds(lambda fv, neg: f'{fv[0]} {"not in" if neg else "in"} [{", ".join(json.dumps(v) for v in fv[1])}]', _strings, st.booleans())
    null = st.builds(lambda f, neg: f"{f} is {'not ' if neg else ''}null", st.one_of(_fields, st.sampled_from(["er", "asr"])), st.booleans())
    return st.one_of(number, string, member, null, _booleans)


_condition = st.recursive(_atom(), lambda inner: st.one_of(
    st.builds(lambda a, b, op: f"({a}) {op} ({b})", inner, inner, st.sampled_from(["and", "or"])),
    inner.map(lambda a: f"not ({a})")), max_leaves=6)
_effect = st.one_of(st.sampled_from(["asr", "nlu", "er"]).map(lambda s: {"recovered": s}),
                    st.sampled_from(["wake", "result", "correct"]).map(lambda s: {"assign": s}),
                    st.just({"not_defect": "reason"}))


class _PlainDumper(yaml.SafeDumper):
    """YAML as a person writes it: shared values written out, not as aliases (which fpi refuses)."""

    def ignore_aliases(self, data):
        return True


@pytest.fixture(scope="module")
def sample():
    turns = simulate(400, seed=31)
    return turns, Pipeline(FailurePointModel.load(), None).run(turns).records


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(_condition, _effect, st.integers(-2, 2)), min_size=1, max_size=5))
def test_any_schema_valid_rule_file_compiles_and_keeps_turns(tmp_path_factory, sample, specs):
    turns, records = sample
    document = {"version": 1, "rules": [{"id": f"r{i}", "description": "generated", "when": when, "then": then, "priority": p}
                                        for i, (when, then, p) in enumerate(specs)]}
    path = tmp_path_factory.mktemp("rules") / "gen.yaml"
    path.write_text(yaml.dump(document, Dumper=_PlainDumper))
    rules, problems = lint_rules([path])
    assert problems == []
    out = Pipeline(FailurePointModel.load(), rules).run(turns).records
    assert out.height == turns.height
    assert out["turn_id"].to_list() == turns["turn_id"].to_list()
    assert out["model_failure_point"].to_list() == records["model_failure_point"].to_list()
    decided = out.filter(pl.col("rule").is_not_null())
    effects = {rule.id: (rule.effect, rule.value) for rule in rules.rules}
    for rule, matched, model in decided.select("rule", "rules_matched", "model_failure_point").iter_rows():
        passed_over = matched[:matched.index(rule)]  # a rule before the deciding one is a recovery of another stage
        assert all(effects[r][0] == "recovered" and model not in (effects[r][1], "correct") for r in passed_over)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_any_condition_text_compiles_or_gives_a_condition_error(text):
    from fpi.pipeline.conditions import Compiler, ConditionError
    from fpi.pipeline.rules import FIELD_TYPES
    try:
        Compiler(FIELD_TYPES).compile(text)
    except ConditionError as exc:
        assert str(exc)


def test_rules_check_reports_every_rule(fixture_traces):
    result = run_cli("rules", "check", fixture_traces, "--format", "json")
    assert result.exit_code == 0, result.stderr
    audit = json.loads(result.stdout)
    assert [r["rule"] for r in audit["rules"]] == [r.id for r in load_rules().rules]
    assert all((r["precision"] is None) == (r["decided"] == 0) for r in audit["rules"])
    assert audit["macro_f1_with_rules"] >= audit["macro_f1_model"]
    table = run_cli("rules", "check", fixture_traces)
    assert table.exit_code == 0 and "nlu-clarification-confirmed" in table.stdout
    header = next(line for line in table.stdout.splitlines() if line.lstrip("┃ ").startswith("rule"))
    columns = [cell.strip() for cell in header.strip("┃").split("┃")]
    assert all(set(row) == set(columns) for row in audit["rules"])  # the table's columns are the JSON's keys


def test_check_rules_counts_by_hand(tmp_path):
    turns = simulate(500, seed=4)
    rules = load_rules([_write(tmp_path, 'rules:\n  - {id: all-asr, description: d, when: "asr is not null", then: {assign: asr}}\n')])
    batch = Pipeline(FailurePointModel.load(), rules).run(turns)
    records = batch.verdicts
    audit = audit_rules(batch.matches, rules, records["model_failure_point"], turns["label"]).to_json()
    row = audit["rules"][0]
    spoken = turns["asr"].is_not_null()
    assert row["matched"] == row["decided"] == int(spoken.sum())
    assert row["changed"] == int((spoken & (records["model_failure_point"] != "asr")).sum())
    assert row["precision"] == round(float((turns.filter(spoken)["label"] == "asr").mean()), 6)
    assert audit["rules"][0]["macro_f1_without"] == audit["macro_f1_model"]


def test_no_rules_flag(fixture_traces):
    result = run_cli("classify", fixture_traces, "--no-rules")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 0 and all(r["rule"] is None and r["failure_point"] == r["model_failure_point"] for r in records)
    assert run_cli("classify", fixture_traces, "--no-rules", "--rules", "rules").exit_code == 2


def test_rule_sets_are_empty_safe():
    turns = simulate(20, seed=1)
    records = classify(turns, FailurePointModel.load(), RuleSet(()))
    assert records["rule"].null_count() == 20


def test_rule_error_is_raised_by_load(tmp_path):
    with pytest.raises(RuleError):
        load_rules([_write(tmp_path, "rules: 5\n")])


def test_rules_test_command_names_the_failing_case(tmp_path):
    cases = _write(tmp_path, """- rule: false-wake-unverified-no-speech
  should_fire:
    - - {wake: {detected: true, score: 0.5, verified: false}, asr: {text: "", confidence: 0.2}, result: {status: none}}
  should_not_fire:
    - - {wake: {detected: true, score: 0.5, verified: false}, asr: {text: "", confidence: 0.2}, result: {status: none}}
""", "cases.yaml")
    result = run_cli("rules", "test", cases)
    assert result.exit_code == 1
    assert f"{cases}:5: false-wake-unverified-no-speech should not fire and fires" in result.stderr
    assert "2 cases, 1 passed, 1 failed" in result.stderr
    assert run_cli("rules", "test", CASES_FILE).exit_code == 0


def test_rules_test_refuses_unknown_rules_and_bad_turns(tmp_path):
    unknown = _write(tmp_path, "- rule: false-wake-unverifed\n  should_fire:\n    - - {}\n", "unknown.yaml")
    result = run_cli("rules", "test", unknown)
    assert result.exit_code == 2 and "did you mean 'false-wake-unverified-no-speech'?" in result.stderr
    bad = _write(tmp_path, "- rule: false-wake-unverified-no-speech\n  should_fire:\n    - - {asr: {text: 3}}\n", "bad.yaml")
    result = run_cli("rules", "test", bad)
    assert result.exit_code == 2 and f"{bad}:3: asr.text: expected a string" in result.stderr


BAD_OF_EVERY_KIND = """rules:
  - id: a
    description: a schema problem and a condition problem in one file
    whn: x
    then: {recovered: asr}
  - id: b
    description: d
    when: asr.confidnce < 0.5
    then: {recovered: tts}
  - id: a
    description: d
    when: result.status == "sucess"
    then: {assign: asr}
"""


def test_lint_reports_every_kind_in_one_pass_sorted_with_codes(tmp_path):
    path = _write(tmp_path, BAD_OF_EVERY_KIND, "z.yaml")
    other = _write(tmp_path, RULE.format(when="asr.confidence < 0.5 and", then="{assign: asr}"), "a.yaml")
    _, problems = lint_rules([path, other])
    assert [(Path(p.file).name, p.line, p.code) for p in problems] == [
        ("a.yaml", 3, "R001"), ("a.yaml", 5, "C001"),  # a.yaml sorts first although given second; its id `a` was z.yaml's
        ("z.yaml", 2, "S002"), ("z.yaml", 4, "S001"), ("z.yaml", 8, "C003"), ("z.yaml", 9, "S003"), ("z.yaml", 10, "R001"),
        ("z.yaml", 12, "C005")]
    text = run_cli("rules", "lint", path, other)
    assert text.exit_code == 2
    assert text.stderr.splitlines()[2] == f"{path}:2: S002 rules/0: 'when' is a required property; add it"
    assert text.stderr.splitlines()[-1] == "8 problems in 2 files"


def test_lint_json_and_github_formats(tmp_path):
    path = _write(tmp_path, BAD_OF_EVERY_KIND)
    as_json = run_cli("rules", "lint", path, "--format", "json")
    assert as_json.exit_code == 2
    document = json.loads(as_json.stdout)
    assert document["summary"] == "6 problems in 1 file"
    assert [set(p) for p in document["problems"]] == [{"file", "line", "code", "message"}] * 6
    assert document["problems"][2] == {"file": str(path), "line": 8, "code": "C003",
                                       "message": document["problems"][2]["message"]}
    github = run_cli("rules", "lint", path, "--format", "github")
    lines = github.stdout.splitlines()
    assert github.exit_code == 2 and len(lines) == 6
    assert lines[0] == f"::error file={path},line=2,title=fpi rules lint S002::rules/0: 'when' is a required property; add it"
    clean = run_cli("rules", "lint", "--format", "json")
    assert clean.exit_code == 0 and json.loads(clean.stdout)["problems"] == []
