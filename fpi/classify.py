"""Turns in, one verdict per turn out: the failure point, the model's view, its
confidence, and the rule that decided when one did."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import polars as pl

from fpi.explain import explanations
from fpi.features import build_features
from fpi.model import FailurePointModel
from fpi.rules import RuleSet, apply_rules, load_rules
from fpi.schema import LABELS

PROBABILITY_DIGITS = 6

# Where each turn happened, carried into the records so reports can slice them.
CONTEXT_COLUMNS = {
    "timestamp": pl.col("timestamp"),
    "locale": pl.col("locale"),
    "device_type": pl.col("device").struct.field("type"),
    "domain": pl.col("nlu").struct.field("domain"),
    "intent": pl.col("nlu").struct.field("intent"),
}


def model_records(turns: pl.DataFrame, model: FailurePointModel, features: pl.DataFrame) -> pl.DataFrame:
    """The model's verdict per turn, before rules: ids, `model_failure_point`, `confidence`, `probabilities`."""
    probabilities = np.round(model.predict_proba(features), PROBABILITY_DIGITS)
    predicted = pl.Series("model_failure_point", np.asarray(model.classes_)[probabilities.argmax(axis=1)], dtype=pl.String)
    by_label = pl.DataFrame(probabilities, schema=list(model.classes_), orient="row").select(LABELS)
    return turns.select("turn_id", "session_id", "turn_index").with_columns(
        failure_point=predicted, model_failure_point=predicted,
        confidence=pl.Series(probabilities.max(axis=1)),
        probabilities=by_label.to_struct(),
    )


def classify(turns: pl.DataFrame, model: FailurePointModel | None = None,
             rules: RuleSet | Literal["default"] | None = "default", *,
             features: pl.DataFrame | None = None, explain_top_k: int | None = None,
             explain_all: bool = False, on_explain_progress: Callable[[int], None] | None = None) -> pl.DataFrame:
    """One record per input turn, in input order: ids, `failure_point` (final), `model_failure_point`,
    `confidence`, `probabilities` (one field per label), `rule`, `rules_matched`, `recovered_from`,
    `explanation` with `explain_top_k` (turns not `correct`, or all with `explain_all`), the context
    columns reports slice by (`timestamp, locale, device_type, domain, intent`), and the gold `label`
    when present. `rules=None` runs the model alone."""
    model = model if model is not None else FailurePointModel.load()
    rules = load_rules() if rules == "default" else rules or RuleSet(())
    features = features if features is not None else build_features(turns)
    records = apply_rules(model_records(turns, model, features), turns, features, rules)
    if explain_top_k:
        records = records.with_columns(explanations(records, features, model, top_k=explain_top_k,
                                                    explain_all=explain_all, on_progress=on_explain_progress))
    records = records.with_columns(turns.select(**CONTEXT_COLUMNS))
    if "label" in turns.columns and turns["label"].null_count() < turns.height:
        records = records.with_columns(turns["label"])
    return records


def failure_point_counts(records: pl.DataFrame) -> dict[str, int]:
    """Turns per final failure point, every label listed."""
    counts = dict(records["failure_point"].value_counts().iter_rows())
    return {label: int(counts.get(label, 0)) for label in LABELS}
