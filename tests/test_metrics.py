import pytest

from fpi import evaluate
from fpi.metrics import human_relative


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
