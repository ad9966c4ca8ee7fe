"""Learning from a team's own logs: a few hundred labels, chosen among ways of using them by
cross-validation on those labels, and fitting a model to unlabeled logs (`fpi train`, `fpi adapt`).

With few labels no way of learning wins everywhere: continuing from the shipped model helps on logs
like its training data and hurts on logs unlike it (on a real telephone system's logs, 0.51 macro-F1
against 0.71 from scratch at 250 labels); weak labels help where users react to failures. So `train`
fits each candidate on the same session-grouped folds of the team's own labels and keeps the one that
scores best there, and says which and how well, with the spread over folds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from fpi.contract.errors import UsageError
from fpi.learning.methods import Method
from fpi.learning.weak_labels import WEAK_WEIGHT, WeakLabels, weak_labels
from fpi.pipeline.features import build_features
from fpi.pipeline.log_profile import SHIFT_LIMIT, shift
from fpi.pipeline.model import FailurePointModel
from fpi.pipeline.model_fitting import features_by_assistant

METHODS: tuple[str, ...] = ("scratch", "continue", "weak")

DESCRIBED = {"scratch": "trained from scratch", "continue": "continued from {base}",
             "weak": "from scratch with weak labels from {base}"}
MIN_LABELS = 20  # fewer gold labels cannot be cross-validated into anything worth saving
MIN_SESSIONS = 2
MIN_PER_LABEL = 3  # turns of a label: fewer cannot be learned, and two labels need this many to be told apart
TIE = 0.005  # a candidate must beat the simpler one by more than this (macro-F1) to be preferred


@dataclass(frozen=True)
class Candidate:
    """One way of learning from the labels, and its macro-F1 on each held-out fold."""

    method: str
    description: str
    fold_scores: tuple[float, ...]
    model: FailurePointModel | None = field(default=None, repr=False, compare=False)

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_scores)) if self.fold_scores else float("nan")

    @property
    def spread(self) -> float:
        return float(np.std(self.fold_scores)) if len(self.fold_scores) > 1 else float("nan")

    def score(self) -> str:
        return f"{self.mean:.3f}" + (f" ± {self.spread:.3f}" if len(self.fold_scores) > 1 else "")


@dataclass(frozen=True)
class Training:
    """A fitted model, what it learned from (gold labels per label, weak labels), and how it was chosen."""

    model: FailurePointModel
    gold: dict[str, int]
    weak: WeakLabels | None
    chosen: Candidate | None = None
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)
    note: str = ""  # a way of learning not tried, and why

    def summary(self) -> str:
        """'trained from scratch: macro-F1 0.71 ± 0.05 over 5 folds of 250 labels (continued from the shipped
        model 0.51 ± 0.06)': the choice, on what it rests, and what it was chosen over."""
        if self.chosen is None:
            return "no gold labels, so no validation"
        labels = sum(self.gold.values())
        folds = len(self.chosen.fold_scores)
        where = f"over {folds} folds of {labels} labels"
        others = [f"{c.description} {c.score()}" for c in self.candidates if c is not self.chosen]
        rare = ", ".join(f"{label} {n}" for label, n in self.gold.items() if 0 < n < MIN_PER_LABEL)
        notes = [self.note] if self.note else []
        notes += [f"too few labeled turns to learn well: {rare} (`fpi sample` finds more)"] if rare else []
        return (f"{self.chosen.description}: macro-F1 {self.chosen.score()} {where}"
                + (f" (chosen over: {'; '.join(others)})" if others else "") + "".join(f"; {n}" for n in notes))


def _weak(features: pl.DataFrame, labeller: FailurePointModel, weight: float) -> WeakLabels:
    return weak_labels(features, labeller.predict_proba(features), labeller.classes_, weight=weight)


def _gold(turns: pl.DataFrame) -> pl.Series:
    gold = turns["label"] if "label" in turns.columns else pl.Series("label", [None] * turns.height, dtype=pl.String)
    labeled = int(gold.is_not_null().sum())
    if labeled == 0:
        raise UsageError("training needs gold labels: no turn has a `label` (to learn from unlabeled logs alone, "
                         "use `fpi adapt`; to choose turns worth labeling, `fpi sample`)")
    sessions = turns.filter(gold.is_not_null())["session_id"].n_unique()
    if labeled < MIN_LABELS or sessions < MIN_SESSIONS:
        raise UsageError(f"training needs at least {MIN_LABELS} labeled turns in {MIN_SESSIONS} or more sessions, to "
                         f"cross-validate what it learns; these traces have {labeled} in {sessions} "
                         "(`fpi sample -n 250` picks turns worth labeling)")
    counts = dict(gold.drop_nulls().value_counts().iter_rows())
    if sum(n >= MIN_PER_LABEL for n in counts.values()) < 2:
        shown = ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))
        raise UsageError(f"training needs gold labels of two or more failure points with at least {MIN_PER_LABEL} turns "
                         f"each, to cross-validate what it learns; these traces have {shown} "
                         "(`fpi sample -n 250` picks turns worth labeling)")
    return gold


def _with_weak_labels(gold: pl.Series, features: pl.DataFrame, labeller: FailurePointModel) -> tuple[pl.Series, pl.Series, WeakLabels]:
    """Gold labels where there are some, weak ones (weighted WEAK_WEIGHT) on the other turns where they agree."""
    weak = _weak(features, labeller, weight=WEAK_WEIGHT)
    use_weak = gold.is_null() & weak.labels.is_not_null()
    labels = pl.select(pl.when(use_weak).then(weak.labels).otherwise(gold)).to_series().alias("label")
    weights = pl.select(pl.when(use_weak).then(weak.weights).otherwise(pl.lit(1.0))).to_series()
    kept = {label: int((use_weak & (weak.labels == label)).sum()) for label in weak.counts}
    return labels, weights, WeakLabels(weak.labels, weak.weights, kept)


def train(turns: pl.DataFrame, *, base: FailurePointModel | None = None, method: Method | str = Method.auto, seed: int = 0,
          valid_fraction: float = 0.15, base_name: str = "the shipped model", threads: int = 2) -> Training:
    """A model from the labeled turns of `turns` (the others still give dialogue context). `method`:
    `scratch`, `continue` (boosting on from `base`, by default the shipped model), `weak` (from scratch,
    with weak labels on unlabeled turns where users' reactions agree with a confident verdict of `base`),
    or `auto`: on logs like the base's training data, continue, unless training from scratch is clearly better
    on the same folds; on logs out of its depth, from scratch. (`weak` is never chosen for you: weak labels from
    a model out of its depth are wrong the same way on every fold, so cross-validation on a few hundred gold
    labels cannot see it; on a real system's logs they scored best in cross-validation and worst on its calls.)"""
    method = Method(method).value
    gold = _gold(turns)
    start = base if base is not None else FailurePointModel.load()
    features = (build_features(turns, reference=start.reference_) if "assistant" not in turns.columns
                else features_by_assistant(turns))
    how_far = shift(features, start.distributions_)[0]
    out_of_depth = how_far is not None and how_far >= SHIFT_LIMIT
    methods = (("scratch",) if out_of_depth else ("continue", "scratch")) if method == "auto" else (method,)
    note = (f"continuing from {base_name} was not tried: these logs sit out of its depth (shift {how_far:.2f})"
            if method == "auto" and out_of_depth else "")
    fitted: list[tuple[Candidate, FailurePointModel, WeakLabels | None]] = []
    for name in methods:
        labels, weights, weak = gold, None, None
        if name == "weak":
            labels, weights, weak = _with_weak_labels(gold, features, start)
        model = FailurePointModel(seed=seed, valid_fraction=valid_fraction, num_threads=threads).fit(
            turns, labels, weights=weights, init=start if name == "continue" else None, features=features, cross_validate=True)
        described = DESCRIBED[name].format(base=base_name)
        fitted.append((Candidate(name, described, tuple(model.fold_scores_), model), model, weak))
    chosen, model, weak = fitted[0]
    for candidate, other, other_weak in fitted[1:]:
        if _clearly_better(candidate, chosen):
            chosen, model, weak = candidate, other, other_weak
    candidates = tuple(c for c, _, _ in fitted)
    model.selection_ = {"method": chosen.method, "candidates": {c.method: [round(s, 6) for s in c.fold_scores] for c in candidates},
                        **({"shift": how_far} if how_far is not None else {})}
    counts = dict(gold.drop_nulls().value_counts().iter_rows())
    return Training(model, {label: int(counts.get(label, 0)) for label in model.classes_}, weak, chosen, candidates, note)


def _clearly_better(challenger: Candidate, incumbent: Candidate) -> bool:
    """Better on the same folds by more than TIE on average, and by more than one standard error of the
    fold-by-fold differences: with a few labels a fold's score moves a lot by chance."""
    differences = np.subtract(challenger.fold_scores, incumbent.fold_scores)
    if len(differences) < 2:
        return bool(differences.size and differences.mean() > TIE)
    return bool(differences.mean() > max(TIE, differences.std(ddof=1) / np.sqrt(len(differences))))


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

