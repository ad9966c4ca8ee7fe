"""Small LightGBM boosters with every kind of split, and rows that land on every edge of them:
what compiled trees and fpi's TreeSHAP are checked against LightGBM on."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from fpi.pipeline.model_text import TextTree, read_tree, tree_blocks


def booster(missing: str, seed: int) -> lgb.Booster:
    """A small multiclass booster with a many-valued categorical feature (bitset splits), a few-valued one
    (one-hot splits) and numeric features whose missing values are NaN, zero or absent; with NaN, a
    feature whose NaN alone moves the label, so splits part NaN from every number (a threshold of +inf)."""
    rng = np.random.default_rng(seed)
    n = 3000
    X = np.column_stack([rng.normal(size=n), rng.uniform(-2, 2, size=n), rng.integers(0, 40, size=n).astype(float),
                         rng.integers(0, 3, size=n).astype(float), rng.choice([0.0, 1.0, 2.5], size=n)])
    y = ((X[:, 0] > 0).astype(int) + (X[:, 2] % 3 == 0) + (X[:, 4] == 0)) % 3
    if missing == "nan":
        X[rng.random(n) < 0.1, 0] = np.nan
        X[rng.random(n) < 0.1, 2] = np.nan
        absent = rng.random(n) < 0.1
        X[absent, 1] = np.nan
        y[absent] = (y[absent] + 1) % 3
    params = {"objective": "multiclass", "num_class": 3, "num_leaves": 15, "min_data_in_leaf": 5, "verbosity": -1,
              "seed": seed, "deterministic": True, "num_threads": 1, "max_cat_to_onehot": 4,
              "zero_as_missing": missing == "zero"}
    return lgb.train(params, lgb.Dataset(X, y, categorical_feature=[2, 3]), num_boost_round=12)


def trees(booster: lgb.Booster) -> list[TextTree]:
    """The booster's trees as its text gives them (LightGBM's JSON dump writes an infinite threshold as 1e300)."""
    return [read_tree(block) for block in tree_blocks(booster.model_to_string())]


def hostile_rows(booster: lgb.Booster, seed: int) -> np.ndarray:
    """Rows that land on every edge a split has: NaN, infinities, signed zeros, values just around
    zero and exactly at each threshold, negative, fractional, unseen and huge category codes."""
    rng = np.random.default_rng(seed)
    thresholds = [tree.threshold[node] for tree in trees(booster) for node in range(tree.num_leaves - 1)
                  if not tree.categorical(node)]
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-36, -1e-36, 1e-35, 1e300, -1e300, *thresholds,
                      *np.nextafter(thresholds, np.inf)])
    codes = np.array([np.nan, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 39.0, 40.0, 63.0, 64.0, 1e9, 3e9, -3e9, np.inf])
    n = 4000
    return np.column_stack([rng.choice(edges, n), rng.choice(edges, n), rng.choice(codes, n), rng.choice(codes, n),
                            rng.choice(edges, n)])


def unbounded_rows(split_features: list[int], features: int, seed: int) -> np.ndarray:
    """Rows with +inf, -inf or NaN in every split feature (all +inf, all -inf, all NaN, then mixed), 0 elsewhere."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((203, features))
    ends = np.array([np.inf, -np.inf, np.nan])
    rows[:3, split_features] = ends[:, None]
    rows[3:, split_features] = rng.choice(ends, (200, len(split_features)))
    return rows
