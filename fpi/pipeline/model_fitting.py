"""How a `FailurePointModel` is fitted: early stopping on a session-grouped held-out split with many
gold labels, session-grouped cross-validation with few, a few gentle rounds with weak labels only,
and, from a model given as `init`, boosting continued from its trees."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from fpi.contract.errors import UsageError
from fpi.contract.metrics import evaluate
from fpi.contract.trace_format import LABELS
from fpi.pipeline.features import CATEGORICAL, FEATURE_NAMES, build_features, frequent_categories
from fpi.pipeline.log_profile import training_distributions
from fpi.pipeline.quantiles import Reference

if TYPE_CHECKING:
    import lightgbm as lgb

    from fpi.pipeline.model import FailurePointModel

CV_BELOW = 5_000  # fewer labels than this: rounds by cross-validation, not one held-out split
CV_FOLDS = 5
MANY_LABELS = 50_000  # from here on, the shipped model's own parameters
SELF_TRAINING_ROUNDS = 3  # more drifted further from the truth on simulated assistants (docs/learning.md)
MIN_CATEGORY_TURNS = 300  # rarer categories (another assistant's intent names) are unknown to the model, as at inference


def features_by_assistant(turns: pl.DataFrame) -> pl.DataFrame:
    """Features of training turns, each assistant's relative to its own turns (an `assistant`
    column names them; without one, all turns are one assistant), in input order."""
    if "assistant" not in turns.columns or turns["assistant"].n_unique() == 1:
        return build_features(turns)
    indexed = turns.with_row_index("_order")
    parts = [build_features(group.drop("_order")).with_columns(group["_order"])
             for _, group in indexed.group_by("assistant", maintain_order=True)]
    return pl.concat(parts).sort("_order").drop("_order")


def session_folds(sessions: pl.Series, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each row; every turn of a session falls in the same fold."""
    unique = sessions.unique().sort()
    shuffled = unique.gather(np.random.default_rng(seed).permutation(len(unique)))
    return sessions.replace_strict(shuffled, np.arange(len(unique)) % folds, return_dtype=pl.Int64).to_numpy()


def session_split(sessions: pl.Series, valid_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows; every turn of a session falls on the same side."""
    unique = np.sort(sessions.unique().to_numpy())
    rng = np.random.default_rng(seed)
    n_valid = int(round(len(unique) * valid_fraction))
    valid_sessions = unique[rng.permutation(len(unique))[:n_valid]]
    return np.isin(sessions.to_numpy(), valid_sessions)


def _params(model: FailurePointModel, labeled: int) -> dict:
    """LightGBM's parameters; with few labels, small shallow trees and strong regularisation."""
    params = {
        "objective": "multiclass", "num_class": len(LABELS), "learning_rate": model.learning_rate,
        "num_leaves": model.num_leaves, "min_data_in_leaf": model.min_child_samples,
        "feature_fraction": model.feature_fraction, "feature_fraction_seed": model.seed, "lambda_l2": model.lambda_l2,
        "seed": model.seed, "deterministic": True, "force_col_wise": True, "num_threads": model.num_threads,
        "verbosity": -1, "max_cat_to_onehot": 8, "cat_smooth": 10.0, "metric": "multi_logloss",
    }
    if labeled < CV_BELOW:  # one thread: as fast on so few rows, and no waiting on a busy machine's other core
        params.update(learning_rate=min(model.learning_rate, 0.05), num_leaves=min(model.num_leaves, 7), num_threads=1,
                      min_data_in_leaf=max(5, labeled // 50), lambda_l2=max(model.lambda_l2, 10.0),
                      min_data_per_group=5, cat_smooth=20.0)
    elif labeled < MANY_LABELS:  # one assistant's labeled logs: finer steps than the large default
        params.update(learning_rate=min(model.learning_rate, 0.05), num_leaves=min(model.num_leaves, 31),
                      min_data_in_leaf=min(model.min_child_samples, 20), lambda_l2=max(model.lambda_l2, 5.0))
    return params


def fit(model: FailurePointModel, turns: pl.DataFrame, labels: pl.Series | None = None, *, weights: pl.Series | None = None,
        init: FailurePointModel | None = None, features: pl.DataFrame | None = None, rounds: int | None = None,
        cross_validate: bool = False, on_iteration: Callable[[int, int], None] | None = None) -> FailurePointModel:
    """Fit on loaded turns and their labels. Turns without a label still give their neighbours'
    dialogue context; `weights` scales each labeled turn (weak labels count less). With `init`,
    boosting continues from that model's trees (its features, classes and vocabularies).
    With fewer than CV_BELOW labels (or with `cross_validate`), the number of rounds comes from session-grouped
    cross-validation, else from one held-out split; `rounds` sets it instead, for labels that are not a truth
    to validate on.
    `features` are the turns' features when the caller has built them already."""
    model.native_ = None  # compiled trees belong to the booster they were compiled from
    if labels is None:
        if "label" not in turns.columns or turns["label"].null_count() == turns.height:
            raise UsageError("training needs gold labels: the traces have no `label` field")
        labels = turns["label"]
    labeled = labels.is_not_null().to_numpy()
    if not labeled.any():
        raise UsageError("training needs labels: no turn has one")
    if features is None:
        features = turns if "wake_missing" in turns.columns else features_by_assistant(turns)
    model.reference_ = Reference.fit(features).global_only()  # the fallback for sources an input has too few of
    model.distributions_ = training_distributions(features)  # what the shift of other logs is measured against
    if init is not None:
        init._check_fitted()
        model.feature_names_, model.classes_, model.vocabularies_ = list(init.feature_names_), list(init.classes_), init.vocabularies_
    else:
        model.feature_names_, model.classes_ = list(FEATURE_NAMES), list(LABELS)
        model.vocabularies_ = frequent_categories(features, list(CATEGORICAL), MIN_CATEGORY_TURNS)
    features = features.filter(pl.Series(labeled))
    labels = labels.filter(pl.Series(labeled))
    X = model._matrix(features)
    y = labels.replace_strict(model.classes_, list(range(len(model.classes_))), return_dtype=pl.Int32).to_numpy()
    scale = np.ones(len(y)) if weights is None else weights.filter(pl.Series(labeled)).fill_null(1.0).to_numpy()
    sessions = turns["session_id"].filter(pl.Series(labeled))
    model.init_rounds_ = init.best_iteration_ if init is not None else 0
    gold = scale >= 1.0  # weak labels (weight below 1) train, never validate
    if rounds is not None:  # labels that are not a truth to validate on (a teacher's): a set number of rounds
        _final(model, X, y, scale, _params(model, len(y)), rounds, init, on_iteration)
        model.validation_metrics_, model.fold_scores_ = {}, []
        model.training_rows_ = {"train": len(y), "valid": 0}
    elif not gold.any():
        _self_trained(model, X, y, scale, init, on_iteration)
        model.training_rows_ = {"train": len(y), "valid": 0}
    elif gold.all() and len(y) >= CV_BELOW and not cross_validate:
        valid = _holdout(model, X, y, scale, sessions, features, labels, init, on_iteration)
        model.training_rows_ = {"train": int((~valid).sum()), "valid": int(valid.sum())}
    else:
        _cross_validated(model, X, y, scale, gold, sessions, features, labels, init, on_iteration)
        model.training_rows_ = {"train": len(y), "valid": 0}
    digest = hashlib.sha256(X.tobytes())
    digest.update(y.astype(np.int32).tobytes())
    digest.update(scale.astype(np.float64).tobytes())
    model.data_fingerprint_ = digest.hexdigest()
    model.labels_used_ = {"turns": len(y), "by_label": {label: int((y == k).sum()) for k, label in enumerate(model.classes_)}}
    weighted = np.bincount(y, weights=_weights(model, y, scale), minlength=len(model.classes_))
    model.trained_prior_ = {label: round(float(w / weighted.sum()), 6) for label, w in zip(model.classes_, weighted, strict=True)}
    return model


def _class_weights(model: FailurePointModel, counts: np.ndarray) -> np.ndarray:
    """Weight of each class: sqrt of its inverse share, so rare failure points are not ignored."""
    if model.class_weight != "sqrt_balanced":
        return np.ones(len(counts))
    return np.sqrt(counts.sum() / (len(counts) * np.maximum(counts, 1)))


def _weights(model: FailurePointModel, y: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return _class_weights(model, np.bincount(y, weights=scale, minlength=len(model.classes_)))[y] * scale


def _dataset(model: FailurePointModel, X: np.ndarray, y: np.ndarray, weights: np.ndarray, reference: lgb.Dataset | None = None) -> lgb.Dataset:
    import lightgbm as lgb

    categorical = [k for k, name in enumerate(model.feature_names_) if name in CATEGORICAL]
    return lgb.Dataset(X, y, weight=weights, feature_name=model.feature_names_, categorical_feature=categorical,
                       free_raw_data=False, reference=reference)


def _holdout(model: FailurePointModel, X: np.ndarray, y: np.ndarray, scale: np.ndarray, sessions: pl.Series, features: pl.DataFrame,
             labels: pl.Series, init: FailurePointModel | None, on_iteration: Callable[[int, int], None] | None) -> np.ndarray:
    """Many labels: early stopping on a session-grouped validation split."""
    import lightgbm as lgb

    valid = session_split(sessions, model.valid_fraction, model.seed)
    if valid.all() or not valid.any():
        raise UsageError("too few sessions to hold out a validation set; lower --valid-fraction or add traces")
    weights = _class_weights(model, np.bincount(y[~valid], weights=scale[~valid], minlength=len(model.classes_)))[y] * scale
    train_set = _dataset(model, X[~valid], y[~valid], weights[~valid])
    valid_set = _dataset(model, X[valid], y[valid], weights[valid], reference=train_set)
    callbacks: list[Callable] = [lgb.early_stopping(model.early_stopping_rounds, verbose=False)]
    if on_iteration is not None:
        callbacks.append(lambda env: on_iteration(env.iteration + 1, env.end_iteration))
    model.booster_ = lgb.train(_params(model, len(y)), train_set, num_boost_round=model.n_estimators, valid_sets=[valid_set],
                              valid_names=["valid"], callbacks=callbacks, init_model=init.booster_ if init else None)
    model.best_iteration_ = int(model.booster_.best_iteration or model.booster_.current_iteration())
    chosen = pl.Series(valid)
    predicted = np.asarray(model.classes_)[model._possible(model._proba_matrix(X[valid]), features.filter(chosen)).argmax(axis=1)]
    model.validation_metrics_ = evaluate(labels.filter(chosen).to_list(), predicted.tolist())
    model.fold_scores_ = [model.validation_metrics_["macro_f1"]]
    return valid


def _cross_validated(model: FailurePointModel, X: np.ndarray, y: np.ndarray, scale: np.ndarray, gold: np.ndarray, sessions: pl.Series,
                     features: pl.DataFrame, labels: pl.Series, init: FailurePointModel | None,
                     on_iteration: Callable[[int, int], None] | None) -> None:
    """Few gold labels: rounds chosen by session-grouped k-fold cross-validation over the gold
    labels (weak ones only ever train; out-of-fold predictions give the validation metrics),
    then one model on every label."""
    import lightgbm as lgb

    fold = np.full(len(y), -1)
    fold[gold] = session_folds(sessions.filter(pl.Series(gold)), CV_FOLDS, model.seed)
    params = _params(model, int(gold.sum()))
    best, out_of_fold = [], np.zeros((len(y), len(model.classes_)))
    for k in range(CV_FOLDS):
        held = fold == k
        if not held.any() or held.sum() == gold.sum():
            continue
        train_set = _dataset(model, X[~held], y[~held], _weights(model, y[~held], scale[~held]))
        valid_set = _dataset(model, X[held], y[held], _weights(model, y[held], scale[held]), reference=train_set)
        booster = lgb.train(params, train_set, num_boost_round=model.n_estimators, valid_sets=[valid_set],
                            callbacks=[lgb.early_stopping(model.early_stopping_rounds, verbose=False)],
                            init_model=init.booster_ if init else None)
        rounds = int(booster.best_iteration or booster.current_iteration())
        best.append(rounds - model.init_rounds_)
        out_of_fold[held] = booster.predict(X[held], num_iteration=rounds)
    _final(model, X, y, scale, params, max(0, int(np.median(best))) if best else 1, init, on_iteration)
    chosen = pl.Series(gold)
    predicted = np.asarray(model.classes_)[model._possible(out_of_fold[gold], features.filter(chosen)).argmax(axis=1)]
    truth, held_in = labels.filter(chosen).to_numpy(), fold[gold]
    model.validation_metrics_ = evaluate(truth.tolist(), predicted.tolist())
    model.fold_scores_ = [evaluate(truth[held_in == k].tolist(), predicted[held_in == k].tolist())["macro_f1"]
                          for k in range(CV_FOLDS) if (held_in == k).any()]


def _self_trained(model: FailurePointModel, X: np.ndarray, y: np.ndarray, scale: np.ndarray, init: FailurePointModel | None,
                  on_iteration: Callable[[int, int], None] | None) -> None:
    """Weak labels only: nothing to validate on, so a few gentle rounds (see `fpi adapt`)."""
    _final(model, X, y, scale, _params(model, len(y)) | {"learning_rate": 0.05}, SELF_TRAINING_ROUNDS, init, on_iteration)
    model.validation_metrics_ = {}
    model.fold_scores_ = []


def _final(model: FailurePointModel, X: np.ndarray, y: np.ndarray, scale: np.ndarray, params: dict, rounds: int,
           init: FailurePointModel | None, on_iteration: Callable[[int, int], None] | None) -> None:
    import lightgbm as lgb

    if rounds == 0 and init is not None:  # the labels say: do not change the model
        model.booster_, model.best_iteration_ = init.booster_, init.best_iteration_
        return
    callbacks: list[Callable] = [] if on_iteration is None else [lambda env: on_iteration(env.iteration + 1, env.end_iteration)]
    model.booster_ = lgb.train(params, _dataset(model, X, y, _weights(model, y, scale)), num_boost_round=max(rounds, 1),
                              callbacks=callbacks, init_model=init.booster_ if init else None)
    model.best_iteration_ = model.booster_.current_iteration()
