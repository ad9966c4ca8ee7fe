"""The failure-point classifier: LightGBM multiclass over the six labels.

Saved as LightGBM's own text model plus JSON metadata, so loading a model
someone sent you runs no code from it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import metadata, resources
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl

from fpi.errors import ModelError, UsageError
from fpi.metrics import evaluate
from fpi.features import CATEGORICAL, FEATURE_NAMES, build_features
from fpi.output import atomic_write_bytes
from fpi.schema import LABELS

MODEL_FORMAT = 1
BOOSTER_FILE = "booster.txt"
METADATA_FILE = "model.json"


def default_model_dir() -> Path:
    return Path(str(resources.files("fpi").joinpath("models", "default")))


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _as_features(turns_or_features: pl.DataFrame) -> pl.DataFrame:
    if "wake_missing" in turns_or_features.columns:
        return turns_or_features
    return build_features(turns_or_features)


def session_split(sessions: pl.Series, valid_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows; every turn of a session falls on the same side."""
    unique = np.sort(sessions.unique().to_numpy())
    rng = np.random.default_rng(seed)
    n_valid = int(round(len(unique) * valid_fraction))
    valid_sessions = unique[rng.permutation(len(unique))[:n_valid]]
    return np.isin(sessions.to_numpy(), valid_sessions)


class FailurePointModel:
    """Predicts each turn's failure point from its features; scikit-learn conventions."""

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

    def _params(self) -> dict:
        return {
            "objective": "multiclass", "num_class": len(LABELS), "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction, "feature_fraction_seed": self.seed, "lambda_l2": self.lambda_l2,
            "seed": self.seed, "deterministic": True, "force_col_wise": True, "num_threads": self.num_threads,
            "verbosity": -1, "max_cat_to_onehot": 8, "cat_smooth": 10.0, "metric": "multi_logloss",
        }

    # ------------------------------------------------------------ fitting

    def fit(self, turns: pl.DataFrame, labels: pl.Series | None = None, *,
            on_iteration: Callable[[int, int], None] | None = None) -> FailurePointModel:
        """Fit on loaded turns (or their features plus `session_id`) and their gold labels."""
        if labels is None:
            if "label" not in turns.columns or turns["label"].null_count() == turns.height:
                raise UsageError("training needs gold labels: the traces have no `label` field")
            labels = turns["label"]
        if labels.null_count():
            raise UsageError(f"training needs a gold label on every turn: {labels.null_count()} turns have none")
        features = _as_features(turns)
        self.feature_names_ = list(FEATURE_NAMES)
        self.classes_ = list(LABELS)
        self.vocabularies_ = {name: sorted(v for v in features[name].drop_nulls().unique().to_list()) for name in CATEGORICAL}
        X = self._matrix(features)
        y = labels.replace_strict(self.classes_, list(range(len(self.classes_))), return_dtype=pl.Int32).to_numpy()
        valid = session_split(turns["session_id"], self.valid_fraction, self.seed)
        if valid.all() or not valid.any():
            raise UsageError("too few sessions to hold out a validation set; lower --valid-fraction or add traces")
        counts = np.bincount(y[~valid], minlength=len(self.classes_)).astype(float)
        weights = np.ones(len(y))
        if self.class_weight == "sqrt_balanced":
            class_weight = np.sqrt(counts.sum() / (len(counts) * np.maximum(counts, 1)))
            weights = class_weight[y]
        categorical = [self.feature_names_.index(n) for n in CATEGORICAL]
        train_set = lgb.Dataset(X[~valid], y[~valid], weight=weights[~valid], feature_name=self.feature_names_,
                                categorical_feature=categorical, free_raw_data=True)
        valid_set = lgb.Dataset(X[valid], y[valid], weight=weights[valid], reference=train_set)
        callbacks: list[Callable] = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        if on_iteration is not None:
            callbacks.append(lambda env: on_iteration(env.iteration + 1, env.end_iteration))
        self.booster_ = lgb.train(self._params(), train_set, num_boost_round=self.n_estimators,
                                  valid_sets=[valid_set], valid_names=["valid"], callbacks=callbacks)
        self.best_iteration_ = int(self.booster_.best_iteration or self.n_estimators)
        predicted = np.asarray(self.classes_)[self._proba_matrix(X[valid]).argmax(axis=1)]
        self.validation_metrics_ = evaluate(labels.filter(pl.Series(valid)).to_list(), predicted.tolist())
        digest = hashlib.sha256(X.tobytes())
        digest.update(y.astype(np.int32).tobytes())
        self.data_fingerprint_ = digest.hexdigest()
        self.training_rows_ = {"train": int((~valid).sum()), "valid": int(valid.sum())}
        return self

    # ------------------------------------------------------------ prediction

    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise ModelError("this FailurePointModel is not fitted: call fit() or FailurePointModel.load()")

    def _proba_matrix(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster_.predict(X, num_iteration=self.best_iteration_))

    def matrix(self, turns_or_features: pl.DataFrame) -> np.ndarray:
        """The model's input matrix for these turns (for explanations and benchmarks)."""
        self._check_fitted()
        return self._matrix(_as_features(turns_or_features))

    def predict_proba(self, turns_or_features: pl.DataFrame) -> np.ndarray:
        """Probability of each label (columns in `classes_` order), one row per turn."""
        return self._proba_matrix(self.matrix(turns_or_features))

    def predict(self, turns_or_features: pl.DataFrame) -> list[str]:
        probabilities = self.predict_proba(turns_or_features)
        return np.asarray(self.classes_)[probabilities.argmax(axis=1)].tolist()

    # ------------------------------------------------------------ persistence

    def metadata(self) -> dict:
        self._check_fitted()
        params = {k: v for k, v in vars(self).items() if not k.endswith("_")}
        return {
            "format": "fpi-model", "format_version": MODEL_FORMAT,
            "fpi_version": _version("fpi"), "lightgbm_version": lgb.__version__,
            "classes": self.classes_, "features": self.feature_names_, "categorical": list(CATEGORICAL),
            "vocabularies": self.vocabularies_, "params": params, "best_iteration": self.best_iteration_,
            "training_rows": self.training_rows_, "data_fingerprint": self.data_fingerprint_,
            "validation_metrics": self.validation_metrics_,
        }

    def save(self, directory: str | Path) -> Path:
        """Write booster.txt (LightGBM text) and model.json (metadata) into `directory`."""
        meta = self.metadata()
        out = Path(directory)
        booster = self.booster_.model_to_string(num_iteration=self.best_iteration_)
        atomic_write_bytes(out / BOOSTER_FILE, booster.encode("utf-8"))
        atomic_write_bytes(out / METADATA_FILE, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
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
        model = cls(**{k: v for k, v in meta.get("params", {}).items() if k in cls().__dict__})
        try:
            model.booster_ = lgb.Booster(model_str=booster_path.read_text(encoding="utf-8"))
        except (lgb.basic.LightGBMError, UnicodeDecodeError) as exc:
            raise ModelError(f"{booster_path}: not a readable LightGBM text model ({exc})") from exc
        model.feature_names_ = meta["features"]
        model.classes_ = meta["classes"]
        model.vocabularies_ = meta["vocabularies"]
        model.best_iteration_ = meta["best_iteration"]
        model.validation_metrics_ = meta.get("validation_metrics", {})
        model.data_fingerprint_ = meta.get("data_fingerprint", "")
        model.training_rows_ = meta.get("training_rows", {})
        return model

    def fingerprint(self) -> str:
        """Identifies what the model computes: its trees, classes, features and vocabularies
        (not the versions that wrote or read it)."""
        self._check_fitted()
        digest = hashlib.sha256(self.booster_.model_to_string(num_iteration=self.best_iteration_).encode())
        digest.update(json.dumps([self.classes_, self.feature_names_, self.vocabularies_], sort_keys=True).encode())
        return digest.hexdigest()
