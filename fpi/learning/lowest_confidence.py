"""The obvious heuristic a model must beat: the stage with the lowest confidence
is the failure point when it falls under a threshold; a result error blames result."""

from __future__ import annotations

import numpy as np
import polars as pl

from fpi.contract.metrics import evaluate

_STAGE_SCORES = {"wake": "wake_score", "asr": "asr_confidence", "nlu": "nlu_confidence", "er": "er_min_score"}


def lowest_confidence(features: pl.DataFrame, threshold: float) -> list[str]:
    """Failure point per turn from confidences alone (features as `build_features` returns)."""
    scores = features.select(
        *[pl.col(column).fill_null(1.0).alias(stage) for stage, column in _STAGE_SCORES.items()],
        result=pl.when(pl.col("result_status").is_in(["error", "fallback"])).then(0.0).otherwise(1.0),
    ).to_numpy()
    stages = np.array([*_STAGE_SCORES, "result"])
    lowest = scores.argmin(axis=1)
    return np.where(scores.min(axis=1) < threshold, stages[lowest], "correct").tolist()


def fit_threshold(features: pl.DataFrame, gold: list[str]) -> float:
    """The threshold with the best macro-F1 on labeled turns (a grid of 0.01)."""
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    scores = [evaluate(gold, lowest_confidence(features, t))["macro_f1"] for t in grid]
    return float(grid[int(np.argmax(scores))])
