"""Small LightGBM boosters with every kind of split, and rows that land on every edge of them:
what compiled trees and fpi's TreeSHAP are checked against LightGBM on."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np


def booster(missing: str, seed: int) -> lgb.Booster:
    """A small multiclass booster with a many-valued categorical feature (bitset splits), a few-valued one
    (one-hot splits) and numeric features whose missing values are NaN, zero or absent."""
    rng = np.random.default_rng(seed)
    n = 3000
    X = np.column_stack([rng.normal(size=n), rng.uniform(-2, 2, size=n), rng.integers(0, 40, size=n).astype(float),
                         rng.integers(0, 3, size=n).astype(float), rng.choice([0.0, 1.0, 2.5], size=n)])
    y = ((X[:, 0] > 0).astype(int) + (X[:, 2] % 3 == 0) + (X[:, 4] == 0)) % 3
    if missing == "nan":
        X[rng.random(n) < 0.1, 0] = np.nan
        X[rng.random(n) < 0.1, 2] = np.nan
    params = {"objective": "multiclass", "num_class": 3, "num_leaves": 15, "min_data_in_leaf": 5, "verbosity": -1,
              "seed": seed, "deterministic": True, "num_threads": 1, "max_cat_to_onehot": 4,
              "zero_as_missing": missing == "zero"}
    return lgb.train(params, lgb.Dataset(X, y, categorical_feature=[2, 3]), num_boost_round=12)


def hostile_rows(booster: lgb.Booster, seed: int) -> np.ndarray:
    """Rows that land on every edge a split has: NaN, infinities, signed zeros, values just around
    zero and exactly at each threshold, negative, fractional, unseen and huge category codes."""
    rng = np.random.default_rng(seed)
    thresholds = [float(node["threshold"]) for tree in booster.dump_model()["tree_info"]
                  for node in splits(tree["tree_structure"]) if node["decision_type"] == "<="]
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-36, -1e-36, 1e-35, 1e300, -1e300, *thresholds,
                      *np.nextafter(thresholds, np.inf)])
    codes = np.array([np.nan, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 39.0, 40.0, 63.0, 64.0, 1e9, 3e9, -3e9, np.inf])
    n = 4000
    return np.column_stack([rng.choice(edges, n), rng.choice(edges, n), rng.choice(codes, n), rng.choice(codes, n),
                            rng.choice(edges, n)])


def splits(node: dict):
    if "split_index" in node:
        yield node
        yield from splits(node["left_child"])
        yield from splits(node["right_child"])
