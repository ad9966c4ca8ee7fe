"""Why the model named a failure point: TreeSHAP contributions per feature, in
the model's log-odds for each class.

`fpi.pipeline.treeshap` computes the same values as LightGBM's `pred_contrib` and shap's
TreeExplainer (tests hold all three equal) about ten times faster; LightGBM's own
TreeSHAP explains the models it cannot take. shap itself draws the plots. Explaining
still costs more than predicting, so only the turns asked for are explained, and
`classify --explain` computes each turn's contributions to its own class only."""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from fpi.contract.errors import UsageError
from fpi.pipeline.features import CATEGORICAL, DESCRIPTIONS
from fpi.pipeline.model import FailurePointModel
from fpi.pipeline.compiled_trees import softmax
from fpi.pipeline.model_text import tree_blocks
from fpi.contract.atomic_files import atomic_write, atomic_write_bytes
from fpi.contract.records import EXPLANATION_DTYPE

if TYPE_CHECKING:
    import lightgbm as lgb

    from fpi.pipeline.treeshap import TreeShap

PROGRESS_ROWS = 2_000  # turns explained between two progress updates (some 10-20k turns a second, one class)
TOP_K = 3  # features per explanation, unless asked for more or fewer
SUMMARY_TURNS = 2000  # turns a global summary explains
_CLASS_BOOSTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TREE_SHAP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ShapValues:
    """Contributions `values[row, feature, class]` and `expected[class]`; their sum is the raw score."""

    values: np.ndarray
    expected: np.ndarray
    feature_names: list[str]
    classes: list[str]


def tree_shap(model: FailurePointModel) -> TreeShap:
    """The model's TreeSHAP kernel, built once per model (numba is imported only when explaining)."""
    from fpi.pipeline.treeshap import TreeShap

    if model not in _TREE_SHAP:
        _TREE_SHAP[model] = TreeShap(model._fitted(), model._trees(), threads=model.num_threads)
    return _TREE_SHAP[model]


def shap_values(model: FailurePointModel, X: np.ndarray,
                on_progress: Callable[[int], None] | None = None) -> ShapValues:
    """TreeSHAP values of every row of the model matrix `X`, for every class, in chunks."""
    n_features, n_classes = X.shape[1], len(model.classes_)
    values = np.empty((X.shape[0], n_features, n_classes))
    expected = np.zeros(n_classes)
    for start in range(0, X.shape[0], PROGRESS_ROWS):
        chunk = X[start:start + PROGRESS_ROWS]
        for k in range(n_classes):
            values[start:start + len(chunk), :, k], expected[k] = class_contributions(model, chunk, k)
        if on_progress is not None:
            on_progress(len(chunk))
    if X.shape[0] == 0:
        expected = np.array([class_contributions(model, X[:1], k)[1] for k in range(n_classes)])
    return ShapValues(values, expected, list(model.feature_names_), list(model.classes_))


def _display_values(features: pl.DataFrame, feature_names: list[str], rows: np.ndarray, columns: np.ndarray) -> list[str | None]:
    """The values at (rows[i], feature_names[columns[i]]) as short strings for people: numbers to 4 decimals,
    categories as they are. Only these cells are formatted: the features of a kind end to end, one gather each."""
    categorical = np.array([name in CATEGORICAL for name in feature_names])
    among_kind = np.zeros(len(feature_names), dtype=np.int64)  # a feature's place among the features of its kind
    shown = np.full(len(rows), None, dtype=object)
    for kind in (False, True):
        among_kind[categorical == kind] = np.arange(int((categorical == kind).sum()))
        cells = categorical[columns] == kind
        if cells.any():
            values = pl.concat([features[name] for name, c in zip(feature_names, categorical, strict=True) if c == kind])
            values = values.gather(among_kind[columns[cells]] * features.height + rows[cells])
            shown[cells] = (values if kind else values.round(4).cast(pl.String)).to_numpy()
    return shown.tolist()


def class_boosters(model: FailurePointModel) -> list[lgb.Booster]:
    """One booster per class holding only that class's trees, so a turn's contributions to its
    own class cost 1/n_classes of LightGBM's multiclass pred_contrib (which computes every class).
    Built from the model's text, once per model."""
    import lightgbm as lgb

    if model in _CLASS_BOOSTERS:
        return _CLASS_BOOSTERS[model]
    text = model.booster_.model_to_string(num_iteration=model.best_iteration_)
    n_classes = len(model.classes_)
    head, blocks = text.partition("\nTree=0\n")[0], tree_blocks(text)
    head = "\n".join(line for line in head.splitlines() if not line.startswith("tree_sizes="))
    head = (head.replace(f"num_class={n_classes}", "num_class=1")
            .replace(f"num_tree_per_iteration={n_classes}", "num_tree_per_iteration=1")
            .replace(f"objective=multiclass num_class:{n_classes}", "objective=regression"))
    boosters = []
    for k in range(n_classes):
        own = "".join(f"Tree={j}\n{block}" for j, block in enumerate(blocks[k::n_classes]))
        boosters.append(lgb.Booster(model_str=f"{head}\n\n{own}end of trees\n"))
    _CLASS_BOOSTERS[model] = boosters
    return boosters


def class_contributions(model: FailurePointModel, X: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """TreeSHAP contributions of each row of `X` to class `k` only, and that class's expected value."""
    kernel = tree_shap(model)
    if kernel.leaves(k) is not None:
        return kernel.contributions(X, k), kernel.expected(k)
    contrib = np.asarray(class_boosters(model)[k].predict(X, pred_contrib=True))
    return contrib[:, :-1], float(contrib[0, -1]) if len(contrib) else 0.0


NOT_LOGGED = "not logged"  # the waterfall's one bar for every feature the turn has no value of


def _logged(features: pl.DataFrame, feature_names: list[str]) -> np.ndarray:
    """Whether each row has a value of each feature: one the logs lack is never given as a reason."""
    return features.select(pl.col(feature_names).is_not_null()).to_numpy()


def top_features(contributions: np.ndarray, features: pl.DataFrame, feature_names: list[str], k: int) -> pl.Series:
    """For each row, the k features with a value that push hardest towards the explained class (largest
    first): the `features` lists of the explanation column."""
    logged = _logged(features, feature_names)
    k = max(0, min(k, int(logged.sum(axis=1).min()) if len(logged) else k))
    order = np.argsort(np.where(logged, -contributions, np.inf), axis=1, kind="stable")[:, :k]
    rows = np.arange(len(order))[:, None]
    names = pl.Series("feature", np.asarray(feature_names)[order].ravel(), dtype=pl.String)
    chosen = pl.DataFrame([
        names, names.replace_strict(DESCRIPTIONS, return_dtype=pl.String).alias("name"),
        pl.Series("value", _display_values(features, feature_names, np.repeat(rows.ravel(), order.shape[1]), order.ravel()),
                  dtype=pl.String),
        pl.Series("contribution", [round(c, 6) for c in contributions[rows, order].ravel().tolist()], dtype=pl.Float64),
    ])  # Python's round, to the nearest 6-decimal number, as the records have always shown it
    per_row = chosen.select(pl.struct(pl.all())).to_series().reshape((len(order), order.shape[1]))
    return per_row.cast(EXPLANATION_DTYPE.to_schema()["features"])


def explain_options(explain: bool, top_k: int | None = None, explain_all: bool = False) -> dict:
    """The `Pipeline` options for `--explain [--top-k K] [--explain-all]`: TOP_K features unless told; the
    two others go with --explain only."""
    if explain_all and not explain:
        raise UsageError("--explain-all goes with --explain")
    if top_k is not None and not explain:
        raise UsageError("--top-k goes with --explain")
    return {"explain_top_k": (top_k or TOP_K) if explain else None, "explain_all": explain_all}


def explanations(records: pl.DataFrame, features: pl.DataFrame, model: FailurePointModel, *, top_k: int = TOP_K,
                 explain_all: bool = False, on_progress: Callable[[int, int], None] | None = None) -> pl.Series:
    """The `explanation` column for classify records: a rule's id where a rule decided, else the model's
    top-k features for the final failure point; null for turns not asked for (by default the `correct` ones).
    `on_progress` hears (turns explained so far, turns to explain) after each chunk."""
    wanted = pl.lit(True) if explain_all else pl.col("failure_point") != "correct"
    by_model = records.select(wanted & pl.col("rule").is_null()).to_series().to_numpy()
    by_rule = records.select(wanted & pl.col("rule").is_not_null()).to_series()
    classes = records["failure_point"].to_numpy()
    schema = {"row": pl.Int64, **EXPLANATION_DTYPE.to_schema()}
    rule_rows = np.flatnonzero(by_rule.to_numpy())
    explained = [pl.DataFrame({"row": rule_rows, "decided_by": ["rule"] * len(rule_rows), "rule": records["rule"].filter(by_rule),
                               "features": [[]] * len(rule_rows)}, schema=schema)]
    done, total = 0, int(by_model.sum())
    for k, label in enumerate(model.classes_):
        rows = np.flatnonzero(by_model & (classes == label))
        for start in range(0, rows.size, PROGRESS_ROWS):
            chunk = rows[start:start + PROGRESS_ROWS]
            chosen = features[chunk]
            contributions, _ = class_contributions(model, model.matrix(chosen), k)
            explained.append(pl.DataFrame({"row": chunk, "decided_by": ["model"] * len(chunk), "rule": [None] * len(chunk),
                                           "features": top_features(contributions, chosen, model.feature_names_, top_k)}, schema=schema))
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, total)
    found = pl.concat(explained)
    column = found.select(pl.struct("decided_by", "rule", "features").cast(EXPLANATION_DTYPE).alias("explanation")).to_series()
    at = np.full(records.height, -1, dtype=np.int64)  # each record's explanation among those found; -1: none (null)
    at[found["row"].to_numpy()] = np.arange(found.height)
    return column.gather(pl.Series(at).set(pl.Series(at < 0), None))


# ------------------------------------------------------------------ one turn

@dataclass(frozen=True)
class TurnExplanation:
    turn: dict
    probabilities: dict[str, float]
    explained_class: str
    expected: float
    contributions: list[tuple[str, str, float]]  # (feature, value, contribution), largest |contribution| first
    score: float

    def to_json(self, record: dict) -> dict:
        """The turn's verdict and its waterfall as plain data (log-odds of the explained class)."""
        return {"turn_id": self.turn["turn_id"], "session_id": self.turn["session_id"], "turn_index": self.turn["turn_index"],
                "failure_point": record["failure_point"], "model_failure_point": record["model_failure_point"],
                "rule": record["rule"], "label": self.turn.get("label"), "probabilities": self.probabilities,
                "explained_class": self.explained_class, "expected_value": self.expected, "score": self.score,
                "contributions": [{"feature": f, "value": v, "contribution": c} for f, v, c in self.contributions]}


def waterfall_png(explained: TurnExplanation, path: str | Path, max_display: int = 12) -> None:
    """shap's own waterfall plot of one turn, from the class's expected value to its score, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    names, shown, values = zip(*explained.contributions, strict=True) if explained.contributions else ((), (), ())
    explanation = shap.Explanation(values=np.array(values, dtype=float), base_values=explained.expected,
                                   data=np.array(shown, dtype=object), feature_names=list(names),
                                   display_data=np.array(["missing" if v is None else v for v in shown], dtype=object))
    with matplotlib.rc_context({"text.parse_math": False}):  # a `$` in a turn id or value is text, not mathtext
        plt.figure()
        shap.plots.waterfall(explanation, max_display=max_display, show=False)
        plt.title(f"turn {explained.turn['turn_id']}: why {explained.explained_class} (log-odds)")
        atomic_write(path, lambda tmp: plt.savefig(tmp, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None}))
        plt.close("all")


def explain_turn(turn_id: str, turns: pl.DataFrame, features: pl.DataFrame, model: FailurePointModel,
                 explained_class: str | None = None, probabilities: dict[str, float] | None = None) -> TurnExplanation:
    """Waterfall of one turn: from the class's expected value to its raw score (the model's class by default).
    `probabilities`: the turn's as the pipeline gave them (a stage the logs lack ruled out, moved to the logs'
    prior), shown instead of the raw model's. Features the turn has no value of make one bar, `not logged`."""
    matches = np.flatnonzero((turns["turn_id"] == turn_id).to_numpy())
    if matches.size == 0:
        raise UsageError(f"no turn with turn_id {turn_id!r} in the traces")
    row = int(matches[0])
    one = features[row:row + 1]
    X = model.matrix(one)
    raw = model.raw_scores(X)
    shown_probabilities = probabilities or {c: float(p) for c, p in zip(model.classes_, softmax(raw)[0], strict=True)}
    k = model.classes_.index(explained_class) if explained_class else model.classes_.index(
        max(model.classes_, key=lambda c: shown_probabilities.get(c, 0.0)))
    values, expected = class_contributions(model, X, k)
    contributions = values[0]
    names = model.feature_names_
    shown = _display_values(one, names, np.zeros(len(names), dtype=np.int64), np.arange(len(names)))
    logged = _logged(one, names)[0]
    order = np.argsort(-np.abs(contributions), kind="stable")
    bars = [(names[j], shown[j], float(contributions[j])) for j in order if logged[j]]
    if not logged.all():
        bars.append((f"{NOT_LOGGED} ({int((~logged).sum())} features)", None, float(contributions[~logged].sum())))
        bars.sort(key=lambda bar: -abs(bar[2]))
    return TurnExplanation(
        turn=turns.row(row, named=True), probabilities=shown_probabilities,
        explained_class=model.classes_[k], expected=expected, contributions=bars, score=float(raw[0, k]),
    )


# ------------------------------------------------------------------ summary

def summarize(features: pl.DataFrame, model: FailurePointModel, out_dir: str | Path, *, sample: int = SUMMARY_TURNS,
              seed: int = 0, plots: bool = True, on_progress: Callable[[int], None] | None = None) -> dict:
    """Global importance per failure point (mean |SHAP| over a sample of turns) as JSON and, with
    `plots`, shap's bar and beeswarm PNGs per failure point, written into `out_dir`."""
    chosen = features.sample(min(sample, features.height), seed=seed) if features.height > sample else features
    X = model.matrix(chosen)
    shap = shap_values(model, X, on_progress)
    importance = {
        label: dict(sorted(((name, round(float(v), 6)) for name, v in
                            zip(shap.feature_names, np.abs(shap.values[:, :, k]).mean(axis=0), strict=True)),
                           key=lambda item: -item[1]))
        for k, label in enumerate(shap.classes)
    }
    summary = {"turns_explained": int(X.shape[0]), "sample_seed": seed, "expected_value": dict(zip(shap.classes, map(float, shap.expected), strict=True)),
               "mean_abs_shap": importance}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "importance.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    if plots:
        _plots(shap, X, out)
    return summary


def _plots(shap_result: ShapValues, X: np.ndarray, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    for k, label in enumerate(shap_result.classes):
        explanation = shap.Explanation(values=shap_result.values[:, :, k], base_values=np.full(len(X), shap_result.expected[k]),
                                       data=X, feature_names=shap_result.feature_names)
        for kind, draw in (("bar", shap.plots.bar), ("beeswarm", shap.plots.beeswarm)):
            plt.figure()
            draw(explanation, max_display=15, show=False)
            plt.title(f"{label}: {kind} of SHAP values (log-odds)")
            atomic_write(out / f"{label}-{kind}.png", lambda tmp: plt.savefig(tmp, format="png", dpi=90, bbox_inches="tight",
                                                                           metadata={"Software": None}))
            plt.close("all")
