"""The failure-point classifier: LightGBM multiclass over the six labels.

Saved as LightGBM's own text model plus JSON metadata, so loading a model
someone sent you runs no code from it."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from fpi.contract.distribution import version
from fpi.contract.errors import ModelError, UsageError
from fpi.contract.metrics import evaluate
from fpi.pipeline.features import CATEGORICAL, FEATURE_NAMES, build_features
from fpi.pipeline.quantiles import Reference
from fpi.pipeline.compiled_trees import NativeTrees, softmax
from fpi.contract.atomic_files import atomic_write_dir
from fpi.contract.trace_format import LABELS, STAGES

MODEL_FORMAT = 1
BOOSTER_FILE = "booster.txt"
CV_BELOW = 5_000  # fewer labels than this: rounds by cross-validation, not one held-out split
CV_FOLDS = 5
MANY_LABELS = 50_000  # from here on, the shipped model's own parameters
SELF_TRAINING_ROUNDS = 3  # more drifted further from the truth on simulated assistants (docs/learning.md)
MIN_CATEGORY_TURNS = 300  # rarer categories (another assistant's intent names) are unknown to the model, as at inference
METADATA_FILE = "model.json"


def is_model_dir(path: Path) -> bool:
    return (path / METADATA_FILE).is_file() and (path / BOOSTER_FILE).is_file()


def default_model_dir() -> Path:
    return Path(str(resources.files("fpi").joinpath("models", "default")))


def _as_features(turns_or_features: pl.DataFrame, reference: Reference | None = None) -> pl.DataFrame:
    if "wake_missing" in turns_or_features.columns:
        return turns_or_features
    return build_features(turns_or_features, reference=reference)


def features_by_assistant(turns: pl.DataFrame) -> pl.DataFrame:
    """Features of training turns, each assistant's relative to its own turns (an `assistant`
    column names them; without one, all turns are one assistant), in input order."""
    if "assistant" not in turns.columns or turns["assistant"].n_unique() == 1:
        return build_features(turns)
    indexed = turns.with_row_index("_order")
    parts = [build_features(group.drop("_order")).with_columns(group["_order"])
             for _, group in indexed.group_by("assistant", maintain_order=True)]
    return pl.concat(parts).sort("_order").drop("_order")


def impossible(features: pl.DataFrame, classes: list[str]) -> np.ndarray:
    """Which labels a turn cannot have: a stage that did not run on it cannot be where it failed."""
    mask = np.zeros((features.height, len(classes)), dtype=bool)
    for k, label in enumerate(classes):
        if label in STAGES:
            mask[:, k] = (features[f"{label}_missing"] == 1.0).fill_null(False).to_numpy()
    return mask


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


_METADATA_TYPES: dict[str, tuple[type, ...]] = {
    "classes": (list,), "features": (list,), "vocabularies": (dict,), "best_iteration": (int,), "params": (dict,)}


def _metadata_problems(meta: dict) -> list[tuple[str, str]]:
    """What is missing or mistyped in model.json (beyond format and features, checked first)."""
    problems = []
    for key, kinds in _METADATA_TYPES.items():
        value = meta.get(key)
        if key not in meta:
            problems.append((key, "required field is missing; the model folder is damaged, write it again with `fpi train`"))
        elif not isinstance(value, kinds) or isinstance(value, bool):
            problems.append((key, f"expected {'an integer' if kinds == (int,) else kinds[0].__name__}, got {type(value).__name__}"))
    if isinstance(meta.get("best_iteration"), int) and not isinstance(meta.get("best_iteration"), bool) and meta["best_iteration"] < 1:
        problems.append(("best_iteration", f"expected at least 1, got {meta['best_iteration']}"))
    vocabularies = meta.get("vocabularies")
    if isinstance(vocabularies, dict):
        for name in CATEGORICAL:
            values = vocabularies.get(name)
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                problems.append((f"vocabularies.{name}", "expected a list of strings"))
    if "reference" in meta and not isinstance(meta["reference"], dict):
        problems.append(("reference", f"expected an object, got {type(meta['reference']).__name__}"))
    return problems


def _check_booster(text: str, meta: dict, path: Path) -> None:
    """A LightGBM text model that agrees with model.json, checked before LightGBM reads it: LightGBM
    trusts the header's tree sizes, and a truncated file would crash the process, not raise."""
    head, found, rest = text.partition("\nTree=0\n")
    if not found or "end of trees" not in rest or "end of parameters" not in rest:
        raise ModelError(f"{path}: not a complete LightGBM text model (no trees, or cut short before `end of trees`); "
                         "write it again with `fpi train`")
    fields = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    try:
        sizes = [int(size) for size in fields.get("tree_sizes", "").split()]
        classes, features = int(fields.get("num_class", "")), fields.get("feature_names", "").split()
    except ValueError:
        raise ModelError(f"{path}: the LightGBM header is damaged (tree_sizes or num_class not numbers)") from None
    trees = len(("Tree=0\n" + rest[:rest.index("end of trees")]).encode("utf-8"))
    if not sizes or sum(sizes) != trees:
        raise ModelError(f"{path}: the trees take {trees:,} bytes but the header promises {sum(sizes):,}: the file is "
                         "truncated or edited; write it again with `fpi train`")
    if classes != len(meta["classes"]):
        raise ModelError(f"{path}: {classes} classes, but model.json names {len(meta['classes'])}")
    if features != list(meta["features"]):
        raise ModelError(f"{path}: {len(features)} features, not the {len(meta['features'])} model.json names (or in "
                         "another order)")
    if len(sizes) < meta["best_iteration"] * classes:
        raise ModelError(f"{path}: {len(sizes)} trees, fewer than best_iteration {meta['best_iteration']} x {classes} classes")
    for number, tree in enumerate(("Tree=0\n" + rest[:rest.index("end of trees")]).split("\nTree=")):
        problem = _tree_problem(tree, len(features))
        if problem:
            raise ModelError(f"{path}: tree {number} is damaged ({problem}); write the model again with `fpi train`")


def _tree_problem(tree: str, features: int) -> str | None:
    """What in one tree would send LightGBM out of bounds or round a cycle (it trusts the file): every
    child is a later node or an existing leaf, every split feature and category index is in range,
    every number parses. None when the tree is sound."""
    fields = dict(line.split("=", 1) for line in tree.splitlines() if "=" in line)
    try:
        leaves = int(fields["num_leaves"])
        values = [float(v) for v in fields["leaf_value"].split()]
        if leaves < 1 or len(values) != leaves or not all(math.isfinite(v) for v in values):
            return "leaf values do not match num_leaves"
        if leaves == 1:
            return None
        nodes = leaves - 1
        columns = {name: [int(v) for v in fields[name].split()] for name in ("split_feature", "decision_type", "left_child", "right_child")}
        thresholds = [float(v) for v in fields["threshold"].split()]
        categories = int(fields.get("num_cat", "0"))
        boundaries = [int(v) for v in fields.get("cat_boundaries", "0").split()] if categories else [0]
        bitsets = len(fields.get("cat_threshold", "").split()) if categories else 0
    except (KeyError, ValueError):
        return "a field is missing or not a number"
    if any(len(column) != nodes for column in columns.values()) or len(thresholds) != nodes:
        return "node lists do not match num_leaves"
    if any(not 0 <= f < features for f in columns["split_feature"]):
        return "a split feature out of range"
    for node, (left, right) in enumerate(zip(columns["left_child"], columns["right_child"], strict=True)):
        for child in (left, right):
            if (child >= 0 and not node < child < nodes) or (child < 0 and not 0 <= ~child < leaves):
                return f"node {node} has child {child}, which is neither a later node nor a leaf"
    if categories:
        if len(boundaries) != categories + 1 or boundaries[0] != 0 or boundaries[-1] != bitsets or boundaries != sorted(boundaries):
            return "categorical boundaries do not match their bitsets"
        for kind, threshold in zip(columns["decision_type"], thresholds, strict=True):
            if kind & 1 and not (threshold.is_integer() and 0 <= threshold < categories):
                return "a categorical split points past its categories"
    return None


class FailurePointModel:
    """Predicts each turn's failure point from its features; scikit-learn conventions."""

    booster_: lgb.Booster
    feature_names_: list[str]
    classes_: list[str]
    vocabularies_: dict[str, list[str]]
    best_iteration_: int
    init_rounds_: int

    def __init__(self, *, n_estimators: int = 600, learning_rate: float = 0.2, num_leaves: int = 63,
                 min_child_samples: int = 50, feature_fraction: float = 0.8, lambda_l2: float = 1.0,
                 class_weight: str | None = "sqrt_balanced", valid_fraction: float = 0.15,
                 early_stopping_rounds: int = 40, seed: int = 0, num_threads: int = 2):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.lambda_l2 = lambda_l2
        self.class_weight = class_weight
        self.valid_fraction = valid_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.num_threads = num_threads
        self.native_: NativeTrees | None = None  # set by compile()

    # ------------------------------------------------------------ encoding

    def _matrix(self, features: pl.DataFrame) -> np.ndarray:
        """Feature matrix in the model's column order; categories by the learned vocabularies."""
        columns = []
        for name in self.feature_names_:
            if name in self.vocabularies_:
                vocabulary = self.vocabularies_[name]
                codes = features[name].replace_strict(vocabulary, list(range(len(vocabulary))), default=None,
                                                      return_dtype=pl.Float64)
                columns.append(codes)
            else:
                columns.append(features[name].cast(pl.Float64))
        frame = pl.DataFrame(columns)
        return frame.to_numpy(allow_copy=True).astype(np.float64, copy=False)

    def _params(self, labeled: int) -> dict:
        """LightGBM's parameters; with few labels, small shallow trees and strong regularisation."""
        params = {
            "objective": "multiclass", "num_class": len(LABELS), "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction, "feature_fraction_seed": self.seed, "lambda_l2": self.lambda_l2,
            "seed": self.seed, "deterministic": True, "force_col_wise": True, "num_threads": self.num_threads,
            "verbosity": -1, "max_cat_to_onehot": 8, "cat_smooth": 10.0, "metric": "multi_logloss",
        }
        if labeled < CV_BELOW:
            params.update(learning_rate=min(self.learning_rate, 0.05), num_leaves=min(self.num_leaves, 7),
                          min_data_in_leaf=max(5, labeled // 50), lambda_l2=max(self.lambda_l2, 10.0),
                          min_data_per_group=5, cat_smooth=20.0)
        elif labeled < MANY_LABELS:  # one assistant's labeled logs: finer steps than the large default
            params.update(learning_rate=min(self.learning_rate, 0.05), num_leaves=min(self.num_leaves, 31),
                          min_data_in_leaf=min(self.min_child_samples, 20), lambda_l2=max(self.lambda_l2, 5.0))
        return params

    # ------------------------------------------------------------ fitting

    def fit(self, turns: pl.DataFrame, labels: pl.Series | None = None, *, weights: pl.Series | None = None,
            init: FailurePointModel | None = None, features: pl.DataFrame | None = None,
            on_iteration: Callable[[int, int], None] | None = None) -> FailurePointModel:
        """Fit on loaded turns and their labels. Turns without a label still give their neighbours'
        dialogue context; `weights` scales each labeled turn (weak labels count less). With `init`,
        boosting continues from that model's trees (its features, classes and vocabularies).
        With fewer than CV_BELOW labels, the number of rounds comes from session-grouped cross-validation.
        `features` are the turns' features when the caller has built them already."""
        self.native_ = None  # compiled trees belong to the booster they were compiled from
        if labels is None:
            if "label" not in turns.columns or turns["label"].null_count() == turns.height:
                raise UsageError("training needs gold labels: the traces have no `label` field")
            labels = turns["label"]
        labeled = labels.is_not_null().to_numpy()
        if not labeled.any():
            raise UsageError("training needs labels: no turn has one")
        if features is None:
            features = turns if "wake_missing" in turns.columns else features_by_assistant(turns)
        self.reference_ = Reference.fit(features).global_only()  # the fallback for sources an input has too few of
        if init is not None:
            init._check_fitted()
            self.feature_names_, self.classes_, self.vocabularies_ = list(init.feature_names_), list(init.classes_), init.vocabularies_
        else:
            self.feature_names_, self.classes_ = list(FEATURE_NAMES), list(LABELS)
            self.vocabularies_ = {name: sorted(features[name].drop_nulls().value_counts()
                                               .filter(pl.col("count") >= MIN_CATEGORY_TURNS)[name].to_list())
                                  for name in CATEGORICAL}
        features = features.filter(pl.Series(labeled))
        labels = labels.filter(pl.Series(labeled))
        X = self._matrix(features)
        y = labels.replace_strict(self.classes_, list(range(len(self.classes_))), return_dtype=pl.Int32).to_numpy()
        scale = np.ones(len(y)) if weights is None else weights.filter(pl.Series(labeled)).fill_null(1.0).to_numpy()
        sessions = turns["session_id"].filter(pl.Series(labeled))
        self.init_rounds_ = init.best_iteration_ if init is not None else 0
        gold = scale >= 1.0  # weak labels (weight below 1) train, never validate
        if not gold.any():
            self._self_trained(X, y, scale, init, on_iteration)
            self.training_rows_ = {"train": len(y), "valid": 0}
        elif gold.all() and len(y) >= CV_BELOW:
            valid = self._holdout(X, y, scale, sessions, features, labels, init, on_iteration)
            self.training_rows_ = {"train": int((~valid).sum()), "valid": int(valid.sum())}
        else:
            self._cross_validated(X, y, scale, gold, sessions, features, labels, init, on_iteration)
            self.training_rows_ = {"train": len(y), "valid": 0}
        digest = hashlib.sha256(X.tobytes())
        digest.update(y.astype(np.int32).tobytes())
        digest.update(scale.astype(np.float64).tobytes())
        self.data_fingerprint_ = digest.hexdigest()
        self.labels_used_ = {"turns": len(y), "by_label": {label: int((y == k).sum()) for k, label in enumerate(self.classes_)}}
        return self

    def _class_weights(self, counts: np.ndarray) -> np.ndarray:
        """Weight of each class: sqrt of its inverse share, so rare failure points are not ignored."""
        if self.class_weight != "sqrt_balanced":
            return np.ones(len(counts))
        return np.sqrt(counts.sum() / (len(counts) * np.maximum(counts, 1)))

    def _weights(self, y: np.ndarray, scale: np.ndarray) -> np.ndarray:
        return self._class_weights(np.bincount(y, weights=scale, minlength=len(self.classes_)))[y] * scale

    def _dataset(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        categorical = [self.feature_names_.index(n) for n in CATEGORICAL]
        return lgb.Dataset(X, y, weight=weights, feature_name=self.feature_names_, categorical_feature=categorical,
                           free_raw_data=False, reference=reference)

    def _holdout(self, X: np.ndarray, y: np.ndarray, scale: np.ndarray, sessions: pl.Series, features: pl.DataFrame,
                 labels: pl.Series, init: FailurePointModel | None, on_iteration: Callable[[int, int], None] | None) -> np.ndarray:
        """Many labels: early stopping on a session-grouped validation split."""
        valid = session_split(sessions, self.valid_fraction, self.seed)
        if valid.all() or not valid.any():
            raise UsageError("too few sessions to hold out a validation set; lower --valid-fraction or add traces")
        weights = self._class_weights(np.bincount(y[~valid], weights=scale[~valid], minlength=len(self.classes_)))[y] * scale
        train_set = self._dataset(X[~valid], y[~valid], weights[~valid])
        valid_set = self._dataset(X[valid], y[valid], weights[valid], reference=train_set)
        callbacks: list[Callable] = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        if on_iteration is not None:
            callbacks.append(lambda env: on_iteration(env.iteration + 1, env.end_iteration))
        self.booster_ = lgb.train(self._params(len(y)), train_set, num_boost_round=self.n_estimators, valid_sets=[valid_set],
                                  valid_names=["valid"], callbacks=callbacks, init_model=init.booster_ if init else None)
        self.best_iteration_ = int(self.booster_.best_iteration or self.booster_.current_iteration())
        chosen = pl.Series(valid)
        predicted = np.asarray(self.classes_)[self._possible(self._proba_matrix(X[valid]), features.filter(chosen)).argmax(axis=1)]
        self.validation_metrics_ = evaluate(labels.filter(chosen).to_list(), predicted.tolist())
        return valid

    def _cross_validated(self, X: np.ndarray, y: np.ndarray, scale: np.ndarray, gold: np.ndarray, sessions: pl.Series,
                         features: pl.DataFrame, labels: pl.Series, init: FailurePointModel | None,
                         on_iteration: Callable[[int, int], None] | None) -> None:
        """Few gold labels: rounds chosen by session-grouped k-fold cross-validation over the gold
        labels (weak ones only ever train; out-of-fold predictions give the validation metrics),
        then one model on every label."""
        fold = np.full(len(y), -1)
        fold[gold] = session_folds(sessions.filter(pl.Series(gold)), CV_FOLDS, self.seed)
        params = self._params(int(gold.sum()))
        best, out_of_fold = [], np.zeros((len(y), len(self.classes_)))
        for k in range(CV_FOLDS):
            held = fold == k
            if not held.any() or held.sum() == gold.sum():
                continue
            train_set = self._dataset(X[~held], y[~held], self._weights(y[~held], scale[~held]))
            valid_set = self._dataset(X[held], y[held], self._weights(y[held], scale[held]), reference=train_set)
            booster = lgb.train(params, train_set, num_boost_round=self.n_estimators, valid_sets=[valid_set],
                                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
                                init_model=init.booster_ if init else None)
            rounds = int(booster.best_iteration or booster.current_iteration())
            best.append(rounds - self.init_rounds_)
            out_of_fold[held] = booster.predict(X[held], num_iteration=rounds)
        self._final(X, y, scale, params, max(0, int(np.median(best))) if best else 1, init, on_iteration)
        chosen = pl.Series(gold)
        predicted = np.asarray(self.classes_)[self._possible(out_of_fold[gold], features.filter(chosen)).argmax(axis=1)]
        self.validation_metrics_ = evaluate(labels.filter(chosen).to_list(), predicted.tolist())

    def _self_trained(self, X: np.ndarray, y: np.ndarray, scale: np.ndarray, init: FailurePointModel | None,
                      on_iteration: Callable[[int, int], None] | None) -> None:
        """Weak labels only: nothing to validate on, so a few gentle rounds (see `fpi adapt`)."""
        self._final(X, y, scale, self._params(len(y)) | {"learning_rate": 0.05}, SELF_TRAINING_ROUNDS, init, on_iteration)
        self.validation_metrics_ = {}

    def _final(self, X: np.ndarray, y: np.ndarray, scale: np.ndarray, params: dict, rounds: int,
               init: FailurePointModel | None, on_iteration: Callable[[int, int], None] | None) -> None:
        if rounds == 0 and init is not None:  # the labels say: do not change the model
            self.booster_, self.best_iteration_ = init.booster_, init.best_iteration_
            return
        callbacks: list[Callable] = [] if on_iteration is None else [lambda env: on_iteration(env.iteration + 1, env.end_iteration)]
        self.booster_ = lgb.train(params, self._dataset(X, y, self._weights(y, scale)), num_boost_round=max(rounds, 1),
                                  callbacks=callbacks, init_model=init.booster_ if init else None)
        self.best_iteration_ = self.booster_.current_iteration()

    # ------------------------------------------------------------ prediction

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise ModelError("this FailurePointModel is not fitted: call fit() or FailurePointModel.load()")

    def _trees(self) -> int:
        """How many trees predict: LightGBM's `num_iteration=best_iteration_`."""
        per_round = self.booster_.num_model_per_iteration()
        return min(self.booster_.num_trees(), self.best_iteration_ * per_round) if self.best_iteration_ > 0 else self.booster_.num_trees()

    def compile(self, *, cache: Path | None = None, threads: int | None = None) -> FailurePointModel:
        """Predict with the trees compiled to native code from now on (`fpi.pipeline.compiled_trees`): compiled once per
        model and machine, then read from the cache; the same raw scores as LightGBM, bit for bit."""
        self._check_fitted()
        self.native_ = NativeTrees.compile(self.booster_, self._trees(), cache=cache, threads=threads or self.num_threads)
        return self

    def raw_scores(self, X: np.ndarray) -> np.ndarray:
        """Each class's raw score (before softmax) for the rows of the model's input matrix."""
        if self.native_ is not None:
            return self.native_.raw_scores(X)
        raw = np.asarray(self.booster_.predict(X, num_iteration=self.best_iteration_, raw_score=True))
        return raw.reshape(len(X), self.booster_.num_model_per_iteration())  # LightGBM gives no rows as one flat array

    def _proba_matrix(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.raw_scores(X))

    def _possible(self, probabilities: np.ndarray, features: pl.DataFrame) -> np.ndarray:
        """Probabilities with the labels a turn cannot have set to 0, renormalised."""
        kept = np.where(impossible(features, self.classes_), 0.0, probabilities)
        total = kept.sum(axis=1, keepdims=True)
        return np.divide(kept, total, out=np.asarray(probabilities, dtype=float).copy(), where=total > 0)

    def matrix(self, turns_or_features: pl.DataFrame) -> np.ndarray:
        """The model's input matrix for these turns (for explanations and benchmarks)."""
        self._check_fitted()
        return self._matrix(_as_features(turns_or_features, self.reference_))

    def predict_proba(self, turns_or_features: pl.DataFrame) -> np.ndarray:
        """Probability of each label (columns in `classes_` order), one row per turn; a label whose
        stage did not run on the turn gets 0."""
        self._check_fitted()
        features = _as_features(turns_or_features, self.reference_)
        return self._possible(self._proba_matrix(self._matrix(features)), features)

    def predict(self, turns_or_features: pl.DataFrame) -> list[str]:
        probabilities = self.predict_proba(turns_or_features)
        return np.asarray(self.classes_)[probabilities.argmax(axis=1)].tolist()

    # ------------------------------------------------------------ persistence

    def metadata(self) -> dict:
        self._check_fitted()
        params = {k: v for k, v in vars(self).items() if not k.endswith("_")}
        return {
            "format": "fpi-model", "format_version": MODEL_FORMAT,
            "fpi_version": version(), "lightgbm_version": lgb.__version__,
            "classes": self.classes_, "features": self.feature_names_, "categorical": list(CATEGORICAL),
            "vocabularies": self.vocabularies_, "params": params, "best_iteration": self.best_iteration_,
            "training_rows": self.training_rows_, "data_fingerprint": self.data_fingerprint_,
            "validation_metrics": self.validation_metrics_, "reference": self.reference_.to_json(),
            "labels_used": self.labels_used_, "continued_from_rounds": self.init_rounds_,
        }

    def save(self, directory: str | Path) -> Path:
        """Write booster.txt (LightGBM text) and model.json (metadata) into `directory`."""
        booster = self.booster_.model_to_string(num_iteration=self.best_iteration_)
        meta = {**self.metadata(), "booster_sha256": hashlib.sha256(booster.encode("utf-8")).hexdigest()}
        out = Path(directory)
        atomic_write_dir(out, {BOOSTER_FILE: booster.encode("utf-8"),
                               METADATA_FILE: (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8")})
        return out

    @classmethod
    def load(cls, directory: str | Path | None = None) -> FailurePointModel:
        """Load a saved model (the packaged default when `directory` is None). Never unpickles."""
        where = Path(directory) if directory is not None else default_model_dir()
        meta_path, booster_path = where / METADATA_FILE, where / BOOSTER_FILE
        if not meta_path.is_file() or not booster_path.is_file():
            raise ModelError(f"{where}: not a model directory: expected {METADATA_FILE} and {BOOSTER_FILE} "
                             "(make one with `fpi train`)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"{meta_path}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != "fpi-model":
            raise ModelError(f"{meta_path}: not an fpi model (expected \"format\": \"fpi-model\")")
        if meta.get("format_version") != MODEL_FORMAT:
            raise ModelError(f"{meta_path}: model format {meta.get('format_version')} is not supported by this fpi "
                             f"(expected {MODEL_FORMAT}); retrain it with `fpi train`")
        if meta.get("features") != list(FEATURE_NAMES) or meta.get("classes") != list(LABELS):
            theirs, ours = set(meta.get("features") or []), set(FEATURE_NAMES)
            detail = "; ".join(part for part in (
                f"unknown to this fpi: {', '.join(sorted(theirs - ours))}" if theirs - ours else "",
                f"missing: {', '.join(sorted(ours - theirs))}" if ours - theirs else "") if part) or "order or classes differ"
            raise ModelError(f"{meta_path}: the model's features do not match this fpi's ({detail}); retrain it with `fpi train`")
        problems = [f"{meta_path}: {where_}: {what}" for where_, what in _metadata_problems(meta)]
        if problems:
            raise ModelError("\n".join(problems))
        model = cls(**{k: v for k, v in meta.get("params", {}).items() if k in cls().__dict__})
        try:
            text = booster_path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ModelError(f"{booster_path}: not a LightGBM text model (not UTF-8 text: {exc})") from exc
        written = meta.get("booster_sha256")
        if written is not None and written != hashlib.sha256(text.encode("utf-8")).hexdigest():
            raise ModelError(f"{booster_path}: changed since model.json was written (its checksum differs); the model "
                             "folder is damaged or mixed from two models: write it again with `fpi train`")
        _check_booster(text, meta, booster_path)
        try:
            model.booster_ = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"{booster_path}: not a readable LightGBM text model ({exc})") from exc
        model.feature_names_ = meta["features"]
        model.classes_ = meta["classes"]
        model.vocabularies_ = meta["vocabularies"]
        model.best_iteration_ = meta["best_iteration"]
        model.validation_metrics_ = meta.get("validation_metrics", {})
        model.data_fingerprint_ = meta.get("data_fingerprint", "")
        model.training_rows_ = meta.get("training_rows", {})
        model.reference_ = Reference.from_json(meta.get("reference") or {})
        model.labels_used_ = meta.get("labels_used", {})
        model.init_rounds_ = int(meta.get("continued_from_rounds", 0))
        return model

    def fingerprint(self) -> str:
        """Identifies what the model computes: its trees, classes, features and vocabularies
        (not the versions that wrote or read it)."""
        self._check_fitted()
        digest = hashlib.sha256(self.booster_.model_to_string(num_iteration=self.best_iteration_).encode())
        digest.update(json.dumps([self.classes_, self.feature_names_, self.vocabularies_, self.reference_.to_json()],
                                 sort_keys=True).encode())
        return digest.hexdigest()
