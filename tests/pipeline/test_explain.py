import json

import numpy as np
import polars as pl
import pytest
import shap

from fpi import FailurePointModel, build_features, classify, load_traces
from fpi.pipeline.explain import class_boosters, class_contributions, explain_turn, shap_values, summarize
from fpi.pipeline.rules import load_rules
from conftest import run_cli


@pytest.fixture(scope="module")
def fixture_setup(fixture_traces):
    turns = load_traces(fixture_traces)
    model = FailurePointModel.load()
    features = build_features(turns)
    return turns, model, features, model.matrix(features)


@pytest.mark.slow
def test_local_accuracy_on_every_fixture_turn(fixture_setup):
    _, model, _, X = fixture_setup
    explained = shap_values(model, X)
    raw = model.booster_.predict(X, raw_score=True, num_iteration=model.best_iteration_)
    assert explained.values.shape == (X.shape[0], X.shape[1], 6)
    assert np.abs(explained.values.sum(axis=1) + explained.expected - raw).max() < 1e-6


@pytest.mark.slow
def test_same_values_as_shap_tree_explainer(fixture_setup):
    _, model, _, X = fixture_setup
    ours = shap_values(model, X[:200])
    explainer = shap.TreeExplainer(model.booster_)
    theirs = explainer(X[:200])
    assert theirs.values.shape == (200, X.shape[1], 6)  # rows x features x classes
    assert np.asarray(explainer.expected_value).shape == (6,)  # one expected value per class
    assert np.allclose(theirs.values, ours.values, atol=1e-9)
    assert np.allclose(explainer.expected_value, ours.expected, atol=1e-9)


@pytest.mark.slow
def test_own_class_contributions_are_lightgbms_for_the_shipped_model(fixture_setup):
    _, model, _, X = fixture_setup
    full = shap_values(model, X[:300])
    for k in range(len(model.classes_)):
        contributions, expected = class_contributions(model, X[:300], k)
        theirs = np.asarray(class_boosters(model)[k].predict(X[:300], pred_contrib=True))  # LightGBM's TreeSHAP
        assert np.abs(contributions - theirs[:, :-1]).max() < 1e-9
        assert abs(expected - theirs[0, -1]) < 1e-9
        np.testing.assert_array_equal(contributions, full.values[:, :, k])
    assert class_boosters(model) is class_boosters(model)  # built once per model


def _session(tmp_path):
    asr = {"text": "play this passito", "confidence": 0.18,
           "nbest": [{"text": "play this passito", "confidence": 0.18}, {"text": "play despacito", "confidence": 0.17}]}
    rows = [
        {"turn_id": "a", "session_id": "s", "turn_index": 0, "timestamp": "2026-10-01T10:00:00Z",
         "wake": {"detected": True, "score": 0.9, "verified": True}, "asr": asr,
         "nlu": {"domain": "music", "intent": "play_music", "confidence": 0.45,
                 "slots": [{"name": "song_name", "value": "this passito", "confidence": 0.3}]},
         "er": {"entities": [{"slot": "song_name", "value": "this passito", "score": 0.1, "status": "unresolved"}]},
         "result": {"status": "fallback", "response": "Sorry.", "latency_ms": 500}},
        {"turn_id": "b", "session_id": "s", "turn_index": 1, "timestamp": "2026-10-01T10:00:03Z",
         "wake": {"detected": True, "score": 0.9, "verified": True},
         "asr": {"text": "play despacito", "confidence": 0.93},
         "nlu": {"domain": "music", "intent": "play_music", "confidence": 0.95,
                 "slots": [{"name": "song_name", "value": "despacito", "confidence": 0.9}]},
         "er": {"entities": [{"slot": "song_name", "value": "despacito", "resolved_id": "s1", "resolved_value": "despacito",
                              "score": 0.95, "status": "resolved"}]},
         "result": {"status": "success", "action": "play_music", "response": "Okay.", "latency_ms": 500}},
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_low_asr_confidence_and_a_rephrase_explain_asr(tmp_path):
    records = classify(load_traces(_session(tmp_path)), FailurePointModel.load(), explain_top_k=3)
    first = records.row(0, named=True)
    assert first["failure_point"] == "asr"
    top = [f["feature"] for f in first["explanation"]["features"]]
    # the ASR evidence, raw or relative to this input's turns
    assert top[0] in ("asr_nbest_margin", "asr_confidence", "asr_nbest_margin_q", "asr_confidence_q")
    assert sum(feature.startswith("asr_") for feature in top) >= 2  # confidence or n-best margin, raw or relative
    contributions = [f["contribution"] for f in first["explanation"]["features"]]
    assert contributions == sorted(contributions, reverse=True) and contributions[0] > 0
    assert records.row(1, named=True)["explanation"] is None  # correct turns are not explained by default


@pytest.mark.slow
def test_rule_decided_turns_name_the_rule(fixture_traces):
    turns = load_traces(fixture_traces)
    records = classify(turns, FailurePointModel.load(), load_rules(), explain_top_k=2, explain_all=True)
    by_rule = records.filter(pl.col("rule").is_not_null())
    assert by_rule.height > 0
    assert (by_rule["explanation"].struct.field("decided_by") == "rule").all()
    assert (by_rule["explanation"].struct.field("rule") == by_rule["rule"]).all()
    by_model = records.filter(pl.col("rule").is_null())
    assert (by_model["explanation"].struct.field("features").list.len() == 2).all()


def test_waterfall_adds_up(fixture_setup):
    turns, model, features, _ = fixture_setup
    explained = explain_turn(turns["turn_id"][5], turns, features, model)
    assert abs(explained.expected + sum(c for _, _, c in explained.contributions) - explained.score) < 1e-6
    assert abs(sum(explained.probabilities.values()) - 1) < 1e-9
    magnitudes = [abs(c) for _, _, c in explained.contributions]
    assert magnitudes == sorted(magnitudes, reverse=True)


@pytest.mark.slow
def test_summary_writes_numbers_and_plots(fixture_setup, tmp_path):
    _, model, features, _ = fixture_setup
    numbers = summarize(features, model, tmp_path, sample=300, seed=1)
    saved = json.loads((tmp_path / "importance.json").read_text())
    assert saved == json.loads(json.dumps(numbers)) and saved["turns_explained"] == 300
    assert set(saved["mean_abs_shap"]) == {"wake", "asr", "nlu", "er", "result", "correct"}
    for label in saved["mean_abs_shap"]:
        values = list(saved["mean_abs_shap"][label].values())
        assert values == sorted(values, reverse=True)
        for kind in ("bar", "beeswarm"):
            assert (tmp_path / f"{label}-{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = summarize(features, model, tmp_path / "again", sample=300, seed=1, plots=False)
    assert again == numbers


@pytest.mark.slow
def test_explain_cli(fixture_traces, tmp_path):
    turn_id = load_traces(fixture_traces)["turn_id"][3]
    result = run_cli("explain", fixture_traces, "--turn", turn_id)
    assert result.exit_code == 0, result.stderr
    assert f"turn {turn_id}" in result.stdout and "expected value" in result.stdout and "score for" in result.stdout
    assert run_cli("explain", fixture_traces, "--turn", "nope").exit_code == 2
    assert run_cli("explain", fixture_traces).exit_code == 2
    result = run_cli("explain", fixture_traces, "--summary", "-o", tmp_path / "s", "--sample", "200")
    assert result.exit_code == 0 and (tmp_path / "s" / "importance.json").exists()


@pytest.mark.slow
def test_classify_explain_cli_and_csv(fixture_traces, tmp_path):
    out = tmp_path / "r.jsonl"
    assert run_cli("classify", fixture_traces, "--explain", "--top-k", "4", "-o", out).exit_code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    explained = [r for r in records if r["explanation"]]
    assert explained and all(r["failure_point"] != "correct" for r in explained)
    assert all(len(r["explanation"]["features"]) == 4 for r in explained if r["explanation"]["decided_by"] == "model")
    assert list(records[0])[-4:] == ["label", "model_sha", "rules_sha", "shift"]
    csv = tmp_path / "r.csv"
    assert run_cli("classify", fixture_traces, "--explain", "-o", csv).exit_code == 0
    frame = pl.read_csv(csv)
    assert frame.height == 2000 and "explanation" in frame.columns
    assert run_cli("classify", fixture_traces, "--explain-all").exit_code == 2


@pytest.mark.slow
def test_explain_turn_writes_json_and_shaps_waterfall(fixture_traces, tmp_path):
    import math

    from conftest import run_cli

    first = json.loads(fixture_traces.read_text().splitlines()[0])["turn_id"]
    result = run_cli("explain", fixture_traces, "--turn", first, "-o", tmp_path, "--format", "json")
    assert result.exit_code == 0
    printed = json.loads(result.stdout)
    written = json.loads((tmp_path / f"{first}.json").read_text())
    assert printed == written and printed["turn_id"] == first
    total = printed["expected_value"] + sum(c["contribution"] for c in printed["contributions"])
    assert math.isclose(total, printed["score"], abs_tol=1e-6)  # the waterfall adds up to the model's score
    assert (tmp_path / f"{first}-waterfall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explanations_take_three_features_unless_told_and_their_options_need_explain():
    from fpi.contract.errors import UsageError
    from fpi.pipeline.explain import TOP_K, explain_options

    assert TOP_K == 3
    assert explain_options(True) == {"explain_top_k": 3, "explain_all": False}
    assert explain_options(True, 5, True) == {"explain_top_k": 5, "explain_all": True}
    assert explain_options(False) == {"explain_top_k": None, "explain_all": False}
    for top_k, explain_all, option in ((2, False, "--top-k"), (None, True, "--explain-all")):
        with pytest.raises(UsageError, match=f"{option} goes with --explain"):
            explain_options(False, top_k, explain_all)
