"""Learning from a team's own logs: a few hundred labels, weak labels from implicit feedback,
and continuing from a model that already knows the task (`fpi train --from`, `fpi adapt`)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from fpi.contract.errors import UsageError
from fpi.pipeline.features import build_features
from fpi.pipeline.model import FailurePointModel
from fpi.learning.weak_labels import WEAK_WEIGHT, WeakLabels, weak_labels


@dataclass(frozen=True)
class Training:
    """A fitted model and what it learned from: gold labels per label, and the weak labels."""

    model: FailurePointModel
    gold: dict[str, int]
    weak: WeakLabels | None


def _weak(features: pl.DataFrame, labeller: FailurePointModel, weight: float) -> WeakLabels:
    return weak_labels(features, labeller.predict_proba(features), labeller.classes_, weight=weight)


def train(turns: pl.DataFrame, *, base: FailurePointModel | None = None, unlabeled: bool = False, seed: int = 0,
          valid_fraction: float = 0.15) -> Training:
    """A model from the labeled turns of `turns` (the others still give dialogue context), continued
    from `base` when given; with `unlabeled`, turns without a label get weak labels where implicit
    feedback agrees with a confident verdict of `base` (or of the shipped model)."""
    gold = turns["label"] if "label" in turns.columns else pl.Series("label", [None] * turns.height, dtype=pl.String)
    if gold.null_count() == turns.height:
        raise UsageError("training needs gold labels: no turn has a `label` (to learn from unlabeled logs alone, "
                         "use `fpi adapt`)")
    labels, weights, weak, features = gold, None, None, None
    if unlabeled:
        labeller = base or FailurePointModel.load()
        features = build_features(turns, reference=labeller.reference_)  # built once: weak labels and training
        weak = _weak(features, labeller, weight=WEAK_WEIGHT)
        use_weak = gold.is_null() & weak.labels.is_not_null()
        labels = pl.select(pl.when(use_weak).then(weak.labels).otherwise(gold)).to_series().alias("label")
        weights = pl.select(pl.when(use_weak).then(weak.weights).otherwise(pl.lit(1.0))).to_series()
        kept = {label: int((use_weak & (weak.labels == label)).sum()) for label in weak.counts}
        weak = WeakLabels(weak.labels, weak.weights, kept)
    model = FailurePointModel(seed=seed, valid_fraction=valid_fraction).fit(turns, labels, weights=weights, init=base,
                                                                            features=features)
    counts = dict(gold.drop_nulls().value_counts().iter_rows())
    return Training(model, {label: int(counts.get(label, 0)) for label in model.classes_}, weak)


def adapt(turns: pl.DataFrame, *, base: FailurePointModel, seed: int = 0) -> Training:
    """Fit `base` to unlabeled logs: its fallback quantile tables re-fitted on them, and a few gentle rounds of
    boosting on the turns where implicit feedback agrees with a confident verdict of `base` (self-training)."""
    features = build_features(turns, reference=base.reference_)
    weak = _weak(features, base, weight=WEAK_WEIGHT)
    if weak.labels.null_count() == turns.height:
        raise UsageError("no turn has both a confident verdict and a user reaction that agrees with it; "
                         "adapt needs logs with dialogue context (sessions of several turns)")
    if len({label for label, n in weak.counts.items() if n}) < 2:
        raise UsageError(f"the weak labels hold one label only ({weak.summary()}); adapt needs more varied logs")
    model = FailurePointModel(seed=seed).fit(turns, weak.labels, weights=weak.weights, init=base, features=features)
    return Training(model, {label: 0 for label in model.classes_}, weak)
