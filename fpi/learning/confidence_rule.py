"""The obvious heuristic a model must beat: each stage that logs a confidence gets a threshold of its
own, and the first stage, in pipeline order, whose confidence falls under it is where the turn failed
(optionally, a result status of error or fallback blames the result). The thresholds are tuned on
labeled turns for macro-F1, so the rule is the best that confidences alone can do with those labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from fpi.contract.metrics import scores
from fpi.contract.trace_format import LABELS

STAGE_SCORES = {"wake": "wake_score", "asr": "asr_confidence", "nlu": "nlu_confidence", "er": "er_min_score"}
GRID = 41  # candidate thresholds per stage: quantiles of its logged confidences
PASSES = 3  # rounds of tuning one stage's threshold with the others held


@dataclass(frozen=True)
class ConfidenceRule:
    """A threshold per stage that logs a confidence, and whether a failed result status blames the result."""

    thresholds: dict[str, float]
    result_status: bool = True

    def predict(self, features: pl.DataFrame) -> list[str]:
        return np.asarray(LABELS)[self._codes(_scores(features), _failed_result(features))].tolist()

    def _codes(self, confidences: dict[str, np.ndarray], failed_result: np.ndarray) -> np.ndarray:
        codes = np.full(len(failed_result), LABELS.index("correct"))
        if self.result_status:
            codes[failed_result] = LABELS.index("result")
        for stage in reversed(list(confidences)):  # the earliest stage under its threshold wins
            if stage in self.thresholds:
                codes = np.where(confidences[stage] < self.thresholds[stage], LABELS.index(stage), codes)
        return codes

    @classmethod
    def fit(cls, features: pl.DataFrame, gold: list[str]) -> ConfidenceRule:
        """Thresholds with the best macro-F1 on these labeled turns: each stage's in turn over GRID quantiles
        of its confidences, the others held, PASSES times; with and without blaming failed result statuses."""
        confidences, failed_result = _scores(features), _failed_result(features)
        truth = np.asarray([LABELS.index(label) for label in gold])
        grids = {stage: np.unique(np.quantile(values[~np.isnan(values)], np.linspace(0, 1, GRID))) if (~np.isnan(values)).any()
                 else np.array([0.0]) for stage, values in confidences.items()}
        grids = {stage: np.append(grid, np.nextafter(grid[-1], np.inf)) for stage, grid in grids.items()}

        def macro_f1(rule: ConfidenceRule) -> float:
            k = len(LABELS)
            confusion = np.bincount(truth * k + rule._codes(confidences, failed_result), minlength=k * k).reshape(k, k)
            return scores(confusion)["macro_f1"]

        best = max((cls._tuned(grids, macro_f1, blame) for blame in (False, True)), key=lambda pair: pair[0])
        return best[1]

    @classmethod
    def _tuned(cls, grids: dict[str, np.ndarray], macro_f1, blame: bool) -> tuple[float, ConfidenceRule]:
        rule = cls({stage: float(grid[0]) for stage, grid in grids.items()}, blame)
        score = macro_f1(rule)
        for _ in range(PASSES):
            for stage, grid in grids.items():
                for value in grid:
                    candidate = cls({**rule.thresholds, stage: float(value)}, blame)
                    candidate_score = macro_f1(candidate)
                    if candidate_score > score:
                        rule, score = candidate, candidate_score
        return score, rule

    def describe(self) -> str:
        parts = [", ".join(f"{stage} < {value:.3g}" for stage, value in self.thresholds.items()) or "no confidences"]
        if self.result_status:
            parts.append("a failed result status blames the result")
        return "; ".join(parts)


def _scores(features: pl.DataFrame) -> dict[str, np.ndarray]:
    """Each stage's logged confidence per turn (NaN where the stage did not run or logs none), in pipeline order."""
    return {stage: features[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
            for stage, column in STAGE_SCORES.items() if features[column].drop_nulls().len()}


def _failed_result(features: pl.DataFrame) -> np.ndarray:
    return features["result_status"].is_in(["error", "fallback"]).fill_null(False).to_numpy()
