"""fpi's TreeSHAP gives LightGBM's `pred_contrib` values, whatever the split, row or thread count."""

from __future__ import annotations

import numpy as np
import pytest

from fpi.pipeline.explain import class_boosters, class_contributions, tree_shap
from fpi import FailurePointModel
from fpi.pipeline.model_text import TextTree, read_tree, tree_blocks
from fpi.pipeline.treeshap import TreeShap, _flatten
from hostile_trees import booster as small_booster, hostile_rows


def _lightgbm(booster, X: np.ndarray, rounds: int) -> np.ndarray:
    """LightGBM's contributions as rows × classes × (features + base value)."""
    contrib = booster.predict(X, pred_contrib=True, num_iteration=rounds)
    return np.asarray(contrib).reshape(len(X), booster.num_model_per_iteration(), booster.num_feature() + 1)


@pytest.mark.parametrize("missing", ["nan", "zero", "none"])
def test_contributions_are_lightgbms_on_hostile_rows(missing):
    booster = small_booster(missing, seed=5)
    X = hostile_rows(booster, seed=6)
    for rounds in (booster.current_iteration(), 5):
        theirs = _lightgbm(booster, X, rounds)
        ours = TreeShap(booster, rounds * 3)
        raw = booster.predict(X, raw_score=True, num_iteration=rounds)
        for k in range(3):
            values = ours.contributions(X, k)
            np.testing.assert_allclose(values, theirs[:, k, :-1], rtol=0, atol=1e-9)
            assert ours.expected(k) == pytest.approx(theirs[0, k, -1], abs=1e-12)
            np.testing.assert_allclose(values.sum(axis=1) + ours.expected(k), raw[:, k], rtol=0, atol=1e-9)


def test_the_same_values_on_any_thread_count_and_memory_order():
    booster = small_booster("nan", seed=11)
    X = hostile_rows(booster, seed=12)[:1001]  # not a whole number of blocks
    one = TreeShap(booster, booster.num_trees(), threads=1).contributions(X, 2)
    two = TreeShap(booster, booster.num_trees(), threads=2)
    np.testing.assert_array_equal(two.contributions(X, 2), one)
    np.testing.assert_array_equal(two.contributions(np.asfortranarray(X), 2), one)
    np.testing.assert_array_equal(two.contributions(X[::2], 2), one[::2])
    assert two.contributions(X[:0], 2).shape == (0, X.shape[1])


def test_a_path_no_training_row_took_is_left_to_lightgbm():
    def stump(leaf_counts: str) -> TextTree:  # x0 <= 0.5 (missing: none, default left): leaf 1.0, else leaf -1.0
        return read_tree("num_leaves=2\nsplit_feature=0\nthreshold=0.5\ndecision_type=2\nleft_child=-1\nright_child=-2\n"
                         f"leaf_value=1 -1\nleaf_count={leaf_counts}\ninternal_count=10\n")
    assert _flatten([stump("10 0")]) is None
    leaves = _flatten([stump("6 4")])
    assert leaves is not None and leaves.expected == pytest.approx(0.6 * 1.0 + 0.4 * -1.0)


def test_explain_falls_back_to_lightgbm_for_trees_the_kernel_cannot_take(small_model, monkeypatch):
    X = hostile_rows(small_booster("none", seed=1), seed=2)[:50]
    X = np.abs(np.nan_to_num(np.resize(X, (50, small_model.booster_.num_feature())), posinf=1.0, neginf=1.0)) % 3
    fast, base = class_contributions(small_model, X, 1)
    monkeypatch.setattr(type(tree_shap(small_model)), "leaves", lambda self, k: None)
    slow, slow_base = class_contributions(small_model, X, 1)
    theirs = np.asarray(class_boosters(small_model)[1].predict(X, pred_contrib=True))
    np.testing.assert_array_equal(slow, theirs[:, :-1])
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)
    assert base == pytest.approx(slow_base, abs=1e-12)


def test_a_split_at_infinity_decides_as_lightgbm_does():
    """The model's text keeps a threshold of +inf (LightGBM's JSON dump writes 1e300): a row at +inf goes left."""
    model = FailurePointModel.load()
    trees = [read_tree(block) for block in tree_blocks(model.booster_.model_to_string())]
    at_infinity = sorted({tree.split_feature[n] for tree in trees for n in range(tree.num_leaves - 1)
                          if not tree.decision_type[n] & 1 and tree.threshold[n] == np.inf})
    assert at_infinity  # the shipped model splits some count features there
    X = np.zeros((2, len(model.feature_names_)))
    X[1, at_infinity] = np.inf
    for k in range(len(model.classes_)):
        theirs = np.asarray(class_boosters(model)[k].predict(X, pred_contrib=True))
        np.testing.assert_allclose(class_contributions(model, X, k)[0], theirs[:, :-1], rtol=0, atol=1e-9)
