"""Weak labels from implicit feedback: what users did next, where it agrees with a confident
model, labels turns nobody annotated.

The system this project follows learned from all traffic this way: a rephrase, a barge-in,
a "no", an abandoned session or an error status says something failed; a clean continuation
says it did not. Neither says *where* it failed. So a turn gets a weak label only when the
model is confident of a failure point and the user's reaction agrees that something failed,
or the model is confident it is `correct` and the user carried on cleanly. What this cannot
learn: failures users do not react to, and which stage failed when the model does not know."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from fpi.contract.trace_format import LABELS

FAILURE_CONFIDENCE = 0.7  # the model's probability of a failure point, for a weak failure label
CORRECT_CONFIDENCE = 0.9  # ... of `correct`, for a weak correct label
WEAK_WEIGHT = 0.05  # a weak label counts this much of a gold one: more drowned the gold labels on simulated assistants
REPHRASE_SIMILARITY = 0.6
REPHRASE_MAX_GAP_S = 30.0

c = pl.col


def _flag(name: str) -> pl.Expr:
    return (c(name) == 1.0).fill_null(False)


def signals(features: pl.DataFrame) -> pl.DataFrame:
    """Per turn: `something_failed` (a reaction or status that says so) and `clean` (the user went
    on to something else with no sign of trouble), from the dialogue features."""
    rephrased = ((c("next_text_similarity") >= REPHRASE_SIMILARITY)
                 & (c("next_gap_s").is_null() | (c("next_gap_s") <= REPHRASE_MAX_GAP_S))).fill_null(False)
    last = c("next_text_similarity").is_null() & c("next_gap_s").is_null()
    bad_status = c("result_status").is_in(["error", "fallback"]).fill_null(False)
    failed = rephrased | _flag("next_correction") | _flag("barge_in") | _flag("explicit_negative") | bad_status | (
        last & bad_status)
    clean = (~last & ~rephrased & ~_flag("next_correction") & ~_flag("barge_in") & ~_flag("explicit_negative")
             & ~bad_status & ~_flag("next_barge_in") & (c("result_status") != "clarify").fill_null(True))
    return features.select(something_failed=failed, clean=clean)


@dataclass(frozen=True)
class WeakLabels:
    """A label (or null) and a weight per turn, and how many of each label were given."""

    labels: pl.Series
    weights: pl.Series
    counts: dict[str, int]

    def summary(self) -> str:
        given = sum(self.counts.values())
        return f"{given} weak labels (" + ", ".join(f"{label} {n}" for label, n in self.counts.items()) + ")"


def weak_labels(features: pl.DataFrame, probabilities: np.ndarray, classes: list[str], *,
                weight: float = WEAK_WEIGHT) -> WeakLabels:
    """Weak labels where the model's confident verdict and the user's reaction agree."""
    best = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    predicted = np.asarray(classes)[best]
    reactions = signals(features)
    failed, clean = reactions["something_failed"].to_numpy(), reactions["clean"].to_numpy()
    is_correct = predicted == "correct"
    agree = np.where(is_correct, clean & (confidence >= CORRECT_CONFIDENCE), failed & (confidence >= FAILURE_CONFIDENCE))
    labels = pl.select(pl.when(pl.Series(agree)).then(pl.Series(predicted, dtype=pl.String))).to_series().alias("label")
    counts = {label: int(((predicted == label) & agree).sum()) for label in LABELS}
    return WeakLabels(labels, pl.Series("weight", np.where(agree, weight, np.nan)).fill_nan(None), counts)
