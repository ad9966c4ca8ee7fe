import pytest

from fpi import evaluate
from fpi.contract.metrics import human_relative


def test_metrics_on_a_hand_computed_case():
    gold = ["asr", "asr", "nlu", "correct", "correct", "correct"]
    pred = ["asr", "nlu", "nlu", "correct", "correct", "asr"]
    m = evaluate(gold, pred)
    assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    assert m["per_label"]["asr"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2}
    assert m["per_label"]["nlu"]["precision"] == 0.5 and m["per_label"]["nlu"]["recall"] == 1.0
    assert m["per_label"]["correct"]["f1"] == pytest.approx(0.8, abs=1e-6)
    assert m["per_label"]["wake"]["support"] == 0
    # labels absent from gold and predictions do not count in macro-F1
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3, abs=1e-6)
    labels = m["confusion"]["labels"]
    assert m["confusion"]["matrix"][labels.index("correct")][labels.index("asr")] == 1


def test_human_relative_and_length_mismatch():
    assert human_relative({"macro_f1": 0.9}, {"macro_f1": 0.8}) == 112.5
    with pytest.raises(ValueError):
        evaluate(["asr"], [])


def test_scores_are_scikit_learns_on_random_labels():
    import numpy as np
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    from fpi.contract.trace_format import LABELS

    rng = np.random.default_rng(5)
    for size, labels in ((500, list(LABELS)), (40, ["asr", "nlu", "correct"])):
        gold = rng.choice(labels, size).tolist()
        predicted = rng.choice(labels, size).tolist()
        ours = evaluate(gold, predicted)
        present = sorted(set(gold) | set(predicted), key=LABELS.index)
        precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=list(LABELS), zero_division=0)
        assert ours["accuracy"] == round(accuracy_score(gold, predicted), 6)
        assert ours["macro_f1"] == round(f1_score(gold, predicted, labels=present, average="macro", zero_division=0), 6)
        for i, label in enumerate(LABELS):
            row = ours["per_label"][label]
            assert (row["precision"], row["recall"], row["f1"], row["support"]) == (
                round(precision[i], 6), round(recall[i], 6), round(f1[i], 6), support[i])
        assert ours["confusion"]["matrix"] == confusion_matrix(gold, predicted, labels=list(LABELS)).tolist()


@pytest.mark.slow
def test_eval_errors_lists_each_misclassified_turn_with_reasons(fixture_traces, tmp_path):
    import json

    import polars as pl

    from conftest import run_cli

    errors = tmp_path / "errors.jsonl"
    result = run_cli("eval", fixture_traces, "--errors", errors, "--format", "json")
    assert result.exit_code == 0
    scores = json.loads(result.stdout)["model"]
    wrong = pl.read_ndjson(errors)
    assert wrong.height == round(scores["turns"] * (1 - scores["accuracy"]))
    assert (wrong["gold"] != wrong["predicted"]).all()
    assert wrong.columns == ["turn_id", "session_id", "turn_index", "gold", "predicted", "confidence", "rule", "reasons",
                             "asr_text", "nlu_intent"]
    assert (wrong["reasons"].str.len_chars() > 0).mean() > 0.9  # each verdict's top reasons, `correct` ones too
    assert f"{wrong.height} misclassified turns written to {errors}" in result.stderr
