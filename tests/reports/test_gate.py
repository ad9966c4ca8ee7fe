"""The regression gate: each kind of check passes and fails on purpose, policies that
break the schema name their line, JUnit and GitHub outputs are well formed, and the
project's own gate (fixtures/gate) holds for the shipped model."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from conftest import FIXTURES, run_cli
from fpi.contract.errors import EXIT_ERROR, EXIT_FAIL, EXIT_OK, UsageError
from fpi.presentation.ci_formats import github_annotations, junit_xml
from fpi.contract.metrics import Metrics
from fpi.reports.gate import PolicyError, load_policy, policy_json_schema, run_gate

GATE = FIXTURES / "gate"

# 100 turns: 70 correct, 20 asr, 10 nlu. The "current" model misses 5 asr turns (-> correct)
# and calls 2 correct turns nlu; the "baseline" model missed only 1 asr turn.
GOLD = ["correct"] * 70 + ["asr"] * 20 + ["nlu"] * 10
CURRENT = ["correct"] * 68 + ["nlu"] * 2 + ["asr"] * 15 + ["correct"] * 5 + ["nlu"] * 10
BASELINE = ["correct"] * 70 + ["asr"] * 19 + ["correct"] + ["nlu"] * 10


def snapshot(predicted, gold=GOLD, **overrides):
    values = dict(source="set.jsonl", data_fingerprint="d" * 64, model_fingerprint="m" * 64,
                  rules={"ids": [], "fingerprint": "r" * 64}, predicted=predicted, gold=gold)
    values.update(overrides)
    return Metrics.measure(**values)


def policy(tmp_path, text: str, name: str = "policy.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_policy(path)


def by_name(result):
    return {c.name: c for c in result.checks}


def test_snapshot_holds_hand_computed_numbers():
    current = snapshot(CURRENT).to_json()
    assert current["metrics"]["accuracy"] == 0.93
    assert current["metrics"]["per_label"]["asr"]["recall"] == 0.75
    assert current["metrics"]["per_label"]["nlu"]["precision"] == round(10 / 12, 6)
    assert current["defect_rates"]["gold"]["overall"] == 0.30
    assert current["defect_rates"]["predicted"]["overall"] == 0.27
    assert current["defect_rates"]["predicted"]["per_component"] == {"wake": 0.0, "asr": 0.15, "nlu": 0.12, "er": 0.0, "result": 0.0}


def test_model_floors_pass_and_fail(tmp_path):
    result = run_gate(policy(tmp_path, "model:\n  accuracy: 0.93\n  macro_f1: 0.95\n"), snapshot(CURRENT))
    checks = by_name(result)
    assert checks["model.accuracy"].status == "pass"  # 0.93 >= 0.93: a floor is inclusive
    assert checks["model.macro_f1"].status == "fail" and checks["model.macro_f1"].policy_line == 3
    assert result.exit_code == EXIT_FAIL and not result.passed


def test_per_label_floors_merge_all_and_skip_small_support(tmp_path):
    text = "min_support: 15\nmodel:\n  per_label:\n    all: {f1: 0.5}\n    asr: {recall: 0.8}\n"
    checks = by_name(run_gate(policy(tmp_path, text), snapshot(CURRENT)))
    assert checks["model.asr.recall"].status == "fail" and checks["model.asr.recall"].value == 0.75
    assert checks["model.asr.f1"].status == "pass"  # `all` applies under asr's own entry
    assert checks["model.asr.recall"].policy_line == 5 and checks["model.asr.f1"].policy_line == 4
    assert checks["model.nlu.f1"].status == "skipped" and "support 10 < min_support 15" in checks["model.nlu.f1"].detail
    assert checks["model.wake.f1"].status == "skipped"  # no gold wake turns at all
    assert "model.asr.precision" not in checks


def test_skipped_checks_do_not_fail_the_gate(tmp_path):
    result = run_gate(policy(tmp_path, "model:\n  per_label:\n    nlu: {f1: 0.99}\n"), snapshot(CURRENT))
    assert [c.status for c in result.checks] == ["skipped"] and result.exit_code == EXIT_OK


def test_defect_rate_ceilings_use_gold_when_labeled_else_predicted(tmp_path):
    text = "defect_rates:\n  overall: 0.28\n  per_component:\n    asr: 0.16\n"
    labeled = by_name(run_gate(policy(tmp_path, text), snapshot(CURRENT)))
    assert labeled["defect_rate.overall"].value == 0.30 and labeled["defect_rate.overall"].status == "fail"
    assert labeled["defect_rate.asr"].value == 0.20 and labeled["defect_rate.asr"].status == "fail"
    unlabeled = by_name(run_gate(policy(tmp_path, text), snapshot(CURRENT, gold=None)))
    assert unlabeled["defect_rate.overall"].value == 0.27 and unlabeled["defect_rate.overall"].status == "pass"
    assert unlabeled["defect_rate.asr"].status == "pass"
    predicted = by_name(run_gate(policy(tmp_path, "defect_rates:\n  source: predicted\n  overall: 0.28\n"), snapshot(CURRENT)))
    assert predicted["defect_rate.overall"].value == 0.27


def test_regression_limits_absolute_and_relative(tmp_path):
    before, now = snapshot(BASELINE), snapshot(CURRENT)
    assert before.metrics["accuracy"] == 0.99
    text = ("min_support: 5\nregression:\n  metrics:\n    accuracy: 0.05\n    macro_f1: {relative: 0.01}\n"
            "    per_label:\n      asr: {recall: {absolute: 0.25}}\n"
            "  defect_rates:\n    overall: {relative: 0.5}\n    per_component:\n      nlu: 0.01\n")
    checks = by_name(run_gate(policy(tmp_path, text), now, before))
    assert checks["regression.accuracy"].status == "fail" and checks["regression.accuracy"].threshold == 0.94  # 0.99 - 0.05
    assert checks["regression.macro_f1"].status == "fail"
    assert checks["regression.macro_f1"].threshold == round(before.metrics["macro_f1"] * 0.99, 6)
    assert checks["regression.asr.recall"].status == "pass" and checks["regression.asr.recall"].threshold == 0.7  # 0.95 - 0.25
    # gold rates: the same labels on both sides, so no rise
    assert checks["regression.defect_rate.overall"].status == "pass"
    predicted = by_name(run_gate(policy(tmp_path, "defect_rates:\n  source: predicted\n" + text.split("\n", 1)[1]), now, before))
    assert predicted["regression.defect_rate.nlu"].status == "fail"  # 0.12 vs 0.10 + 0.01
    assert predicted["regression.defect_rate.nlu"].threshold == 0.11
    assert predicted["regression.defect_rate.overall"].status == "pass"  # 0.27 <= 0.30 * 1.5


def test_regression_needs_a_baseline_and_model_checks_need_labels(tmp_path):
    with pytest.raises(UsageError, match=r"policy.yaml:1: the policy sets regression limits; give --baseline"):
        run_gate(policy(tmp_path, "regression:\n  metrics:\n    accuracy: 0.01\n"), snapshot(CURRENT))
    with pytest.raises(UsageError, match=r"policy.yaml:1: model quality checks need a gold `label` on every turn"):
        run_gate(policy(tmp_path, "model:\n  accuracy: 0.5\n"), snapshot(CURRENT, gold=None))
    with pytest.raises(UsageError, match=r"policy.yaml:2: defect_rates.source is gold"):
        run_gate(policy(tmp_path, "defect_rates:\n  source: gold\n  overall: 0.5\n"), snapshot(CURRENT, gold=None))


@pytest.mark.parametrize(("text", "expected"), [
    ("model:\n  acuracy: 0.9\n", "policy.yaml:2: model: unknown field 'acuracy'; did you mean 'accuracy'?"),
    ("model:\n  macro_f1: 1.5\n", "policy.yaml:2: model/macro_f1: 1.5 is out of range"),
    ("model:\n  per_label:\n    speech: {f1: 0.5}\n", "policy.yaml:3: model/per_label: unknown field 'speech'"),
    ("defect_rates:\n  source: gould\n", "policy.yaml:2: defect_rates/source: unknown value 'gould'; did you mean 'gold'?"),
    ("regression:\n  metrics:\n    macro_f1: {relativ: 0.1}\n", "policy.yaml:3: regression/metrics/macro_f1: {'relativ': 0.1} is not a limit"),
    ("model:\n  accuracy: high\n", "policy.yaml:2: model/accuracy: expected number, got str 'high'"),
    ("model: [0.8\n", "policy.yaml:2: not valid YAML"),
    ("", "policy.yaml:1: empty policy"),
    ("version: 1\nmin_support: 10\n", "policy.yaml:1: the policy sets no checks"),
])
def test_malformed_policy_names_the_line(tmp_path, text, expected):
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert expected in str(caught.value)
    assert caught.value.exit_code == EXIT_ERROR


# Element and attribute names of the common (Jenkins/Ant) JUnit XML schema.
JUNIT_ATTRIBUTES = {
    "testsuites": {"name", "time", "tests", "failures", "disabled", "errors"},
    "testsuite": {"name", "tests", "failures", "errors", "group", "time", "disabled", "skipped", "timestamp", "hostname",
                  "id", "package", "file", "log", "url", "version"},
    "properties": set(),
    "property": {"name", "value"},
    "testcase": {"name", "assertions", "time", "classname", "status", "class", "file", "line"},
    "failure": {"message", "type"},
    "error": {"message", "type"},
    "skipped": {"message"},
}
JUNIT_CHILDREN = {"testsuites": {"testsuite"}, "testsuite": {"properties", "testcase"}, "properties": {"property"},
                  "testcase": {"failure", "skipped", "error"}}


def test_junit_output_fits_the_schema_and_counts_match(tmp_path):
    text = "min_support: 15\nmodel:\n  accuracy: 0.99\n  per_label:\n    all: {f1: 0.5}\ndefect_rates:\n  overall: 0.5\n"
    result = run_gate(policy(tmp_path, text), snapshot(CURRENT))
    root = ET.fromstring(junit_xml(result))
    assert root.tag == "testsuites"
    for element in root.iter():
        assert element.tag in JUNIT_ATTRIBUTES, element.tag
        assert set(element.attrib) <= JUNIT_ATTRIBUTES[element.tag], (element.tag, element.attrib)
        assert {child.tag for child in element} <= JUNIT_CHILDREN.get(element.tag, set()), element.tag
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(result.checks) == int(root.get("tests"))
    assert len(root.findall(".//failure")) == result.count("fail") == int(root.get("failures")) == 1
    assert len(root.findall(".//skipped")) == result.count("skipped") == 4  # wake, nlu, er, result: support < 15
    for suite in root.findall("testsuite"):
        own = suite.findall("testcase")
        assert int(suite.get("tests")) == len(own)
        assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in own)
        assert int(suite.get("skipped")) == sum(c.find("skipped") is not None for c in own)
    failure = root.find(".//failure")
    assert "model.accuracy = 0.9300, must be >= 0.9900" in failure.get("message")
    assert "policy.yaml:3" in failure.text


def test_github_annotations_point_at_the_policy_line(tmp_path):
    result = run_gate(policy(tmp_path, "min_support: 15\nmodel:\n  accuracy: 0.99\n  per_label:\n    nlu: {f1: 0.5}\n"),
                      snapshot(CURRENT))
    lines = github_annotations(result).splitlines()
    assert lines[0].startswith(f"::error file={str(tmp_path / 'policy.yaml').replace(':', '%3A')},line=3,title=fpi gate model.accuracy::")
    assert lines[1].startswith("::warning ") and ",line=5," in lines[1]
    assert lines[-1] == "::notice title=fpi gate::gate FAIL: 2 checks, 0 passed, 1 failed, 1 skipped"


def test_shipped_gate_passes_for_the_shipped_model(tmp_path):
    junit = tmp_path / "gate.xml"
    result = run_cli("gate", GATE / "holdout.jsonl.gz", "--policy", GATE / "policy.yaml", "--baseline", GATE / "baseline.json",
                     "--junit", junit, "--format", "json")
    assert result.exit_code == EXIT_OK, result.stdout
    report = json.loads(result.stdout)
    assert report["passed"] and report["counts"]["fail"] == 0 and report["counts"]["pass"] >= 15
    assert report["context"]["baseline"]["same_data"] and report["context"]["baseline"]["same_rules"]
    assert int(ET.parse(junit).getroot().get("tests")) == len(report["checks"])


def test_a_weaker_model_fails_the_shipped_gate(small_model, tmp_path):
    small_model.save(tmp_path / "weak")
    junit = tmp_path / "gate.xml"
    result = run_cli("gate", GATE / "holdout.jsonl.gz", "--policy", GATE / "policy.yaml", "--baseline", GATE / "baseline.json",
                     "--model", tmp_path / "weak", "--junit", junit, "--format", "github")
    assert result.exit_code == EXIT_FAIL
    assert "::error " in result.stdout and "title=fpi gate regression.macro_f1" in result.stdout
    assert int(ET.parse(junit).getroot().get("failures")) >= 1


def test_gate_cli_errors_exit_2(tmp_path, fixture_traces):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  macro_f1: 2\n", encoding="utf-8")
    result = run_cli("gate", fixture_traces, "--policy", bad)
    assert result.exit_code == EXIT_ERROR and "bad.yaml:2: model/macro_f1" in result.stderr
    assert run_cli("gate", fixture_traces).exit_code == EXIT_ERROR  # --policy is required
    missing = run_cli("gate", fixture_traces, "--policy", GATE / "policy.yaml", "--baseline", tmp_path / "none.json")
    assert missing.exit_code == EXIT_ERROR and "no such baseline file" in missing.stderr


@pytest.mark.slow
def test_eval_save_metrics_writes_a_baseline_the_gate_reads(tmp_path, fixture_traces):
    out = tmp_path / "metrics.json"
    result = run_cli("eval", fixture_traces, "--save-metrics", out, "--format", "json")
    assert result.exit_code == EXIT_OK
    baseline = Metrics.read(out)
    assert baseline.metrics == json.loads(result.stdout)["model"]
    assert len(baseline.model_fingerprint) == len(baseline.data_fingerprint) == 64
    assert baseline.rules["ids"] and baseline.turns == 2000
    again = tmp_path / "again.json"
    run_cli("eval", fixture_traces, "--save-metrics", again)
    assert again.read_bytes() == out.read_bytes()  # deterministic, no timestamps


def test_baseline_that_is_not_a_metrics_file_is_refused(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"accuracy": 0.9}', encoding="utf-8")
    with pytest.raises(UsageError, match="not an fpi metrics file"):
        Metrics.read(path)


def test_shipped_policy_schema_is_the_generated_one():
    from conftest import ROOT

    shipped = json.loads((ROOT / "fpi" / "schemas" / "gate-policy-v1.schema.json").read_text())
    assert shipped == policy_json_schema()


def test_metrics_file_round_trips_through_json():
    metrics = snapshot(CURRENT)
    assert Metrics.from_json(json.loads(metrics.to_text()), "m.json") == metrics
    unlabeled = snapshot(CURRENT, gold=None)
    assert "metrics" not in unlabeled.to_json() and Metrics.from_json(unlabeled.to_json(), "m.json") == unlabeled


def test_a_gate_that_cannot_run_still_writes_junit_and_annotations(tmp_path, fixture_traces):
    import xml.etree.ElementTree as ET

    junit = tmp_path / "junit.xml"
    policy = tmp_path / "policy.yaml"
    policy.write_text("model:\n  macro_f1: 0.5\nregression:\n  metrics:\n    macro_f1: 0.01\n")
    result = run_cli("gate", fixture_traces, "--policy", policy, "--junit", junit, "--format", "github")
    assert result.exit_code == 2
    assert result.stdout.startswith(f"::error file={policy},line=3,title=fpi gate::the policy sets regression limits")
    root = ET.fromstring(junit.read_bytes())
    assert root.get("errors") == "1" and root.find(".//testcase/error") is not None
    assert "give --baseline" in root.find(".//testcase/error").get("message")


def test_gate_summary_is_markdown_for_the_job_summary(tmp_path, fixture_traces):
    policy = tmp_path / "policy.yaml"
    policy.write_text("model:\n  macro_f1: 0.99\n  accuracy: 0.5\n")
    summary = tmp_path / "summary.md"
    result = run_cli("gate", fixture_traces, "--policy", policy, "--summary", summary)
    assert result.exit_code == 1
    text = summary.read_text()
    assert text.startswith("# ❌ fpi gate FAIL")
    assert "| model.macro_f1 |" in text and "| fail |" in text and "| model.accuracy |" in text
