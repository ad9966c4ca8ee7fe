"""Scores relative to their own source: each stage's confidence as its quantile among the
turns of the same assistant (and, for NLU, of the same intent).

A raw confidence of 0.3 means "unsure" on one assistant and "as sure as it gets" on
another whose scores are log-probability-like. Its quantile among that assistant's own
turns means the same on both. A `Reference` holds the quantile tables; it is fitted on
the input being classified (all of it, or a sample of 200,000 turns chosen by turn_id, before
any batch), falling back to the model's stored tables for a source with too few values, and
`fpi adapt` re-fits it on a team's logs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

SOURCES = ("wake_score", "asr_confidence", "asr_nbest_margin", "nlu_confidence", "nlu_nbest_margin",
           "nlu_slot_min_confidence", "er_min_score")
BY_INTENT = "nlu_confidence"  # also normalised within each intent with enough turns
FIT_COLUMNS = ("turn_id", *SOURCES, "nlu_intent")  # what `Reference.fit` reads of its sample, and the sample's choice
LEVELS = 101
MIN_VALUES = 200  # fewer values of a source: use the fallback's table
MIN_INTENT_VALUES = 50
SAMPLE_TURNS = 200_000  # the tables rest on at most this many turns: those with the smallest hash of turn_id
TURN_HASH = pl.col("turn_id").hash(seed=0)
SAMPLE_ORDER = (TURN_HASH, "turn_id")  # which turns are sampled first; the order whole-input fits see them in

DESCRIPTIONS = {
    "wake_score_q": "wake score as a quantile among this assistant's turns",
    "asr_confidence_q": "ASR confidence as a quantile among this assistant's turns",
    "asr_nbest_margin_q": "ASR n-best margin as a quantile among this assistant's turns",
    "nlu_confidence_q": "NLU confidence as a quantile among this assistant's turns",
    "nlu_nbest_margin_q": "NLU n-best margin as a quantile among this assistant's turns",
    "nlu_slot_min_confidence_q": "lowest slot confidence as a quantile among this assistant's turns",
    "er_min_score_q": "lowest ER score as a quantile among this assistant's turns",
    "nlu_confidence_intent_q": "NLU confidence as a quantile among the turns of the same intent (else of all turns)",
    "weakest_stage_q": "the lowest of the ASR, NLU and ER quantiles",
}
NAMES = tuple(DESCRIPTIONS)

QuantileTable = tuple[tuple[float, ...], tuple[float, ...]]  # breakpoints and their cumulative share


def _table(values: np.ndarray) -> QuantileTable:
    """The empirical distribution of `values` at LEVELS quantiles; ties share their mean level."""
    levels = np.linspace(0.0, 1.0, LEVELS)
    points = np.quantile(values, levels)
    unique, inverse = np.unique(points, return_inverse=True)
    shares = np.bincount(inverse, weights=levels) / np.bincount(inverse)
    return tuple(round(float(x), 6) for x in unique), tuple(round(float(x), 6) for x in shares)


def _quantiles(values: np.ndarray, table: QuantileTable) -> np.ndarray:
    points, shares = table
    if len(points) == 1:
        return np.where(np.isnan(values), np.nan, np.where(values < points[0], 0.0, np.where(values > points[0], 1.0, 0.5)))
    return np.where(np.isnan(values), np.nan, np.interp(values, points, shares))


@dataclass(frozen=True)
class Reference:
    """Quantile tables per source (and NLU confidence per intent), and how many values made each."""

    tables: dict[str, QuantileTable] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    by_intent: dict[str, QuantileTable] = field(default_factory=dict)

    @classmethod
    def fit(cls, features: pl.DataFrame) -> Reference:
        tables, counts, by_intent = {}, {}, {}
        for name in SOURCES:
            values = features[name].drop_nulls().drop_nans().to_numpy() if name in features.columns else np.array([])
            counts[name] = int(values.size)
            if values.size:
                tables[name] = _table(values)
        if "nlu_intent" in features.columns:
            frame = features.select("nlu_intent", BY_INTENT).drop_nulls()
            for intent, group in frame.group_by("nlu_intent"):
                if group.height >= MIN_INTENT_VALUES:
                    by_intent[str(intent[0])] = _table(group[BY_INTENT].to_numpy())
        return cls(tables, counts, dict(sorted(by_intent.items())))

    @staticmethod
    def sample(features: pl.DataFrame) -> pl.DataFrame:
        """The turns the tables are fitted on: all of them, or the SAMPLE_TURNS with the smallest hash of
        their turn_id. The choice depends on the turns alone, not on their order or on how they are split
        into batches, so a streamed run fits the same tables as one in memory."""
        return features if features.height <= SAMPLE_TURNS else features[Reference.sampled(features)]

    @staticmethod
    def sampled(features: pl.DataFrame) -> pl.Series:
        """The rows of the turns `sample` takes, in SAMPLE_ORDER."""
        return features.select(pl.arg_sort_by(*SAMPLE_ORDER).head(SAMPLE_TURNS)).to_series()

    def global_only(self) -> Reference:
        return Reference(self.tables, self.counts)

    def over(self, fallback: Reference | None) -> Reference:
        """These tables where they rest on enough values, the fallback's elsewhere."""
        if fallback is None:
            return self
        tables = {name: self.tables[name] if self.counts.get(name, 0) >= MIN_VALUES or name not in fallback.tables
                  else fallback.tables[name] for name in {*self.tables, *fallback.tables}}
        return Reference(dict(sorted(tables.items())), self.counts, self.by_intent)

    def apply(self, features: pl.DataFrame) -> pl.DataFrame:
        """`features` with a `<source>_q` column per source, the NLU confidence within its intent, and
        the weakest stage's quantile."""
        columns = {}
        for name in SOURCES:
            values = features[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
            columns[f"{name}_q"] = _quantiles(values, self.tables[name]) if name in self.tables else np.full(values.size, np.nan)
        within = columns[f"{BY_INTENT}_q"].copy()
        if self.by_intent and "nlu_intent" in features.columns:
            intent = features["nlu_intent"].fill_null("")
            names = intent.unique().sort().to_list()
            codes = intent.replace_strict(names, range(len(names)), return_dtype=pl.Int64).to_numpy()  # each row's index in `names`
            order = np.argsort(codes, kind="stable")  # the rows of each intent, found once
            bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
            values = features[BY_INTENT].cast(pl.Float64).fill_null(np.nan).to_numpy()
            for k, intent in enumerate(names):
                if intent in self.by_intent:
                    rows = order[bounds[k]:bounds[k + 1]]
                    within[rows] = _quantiles(values[rows], self.by_intent[intent])
        columns["nlu_confidence_intent_q"] = within
        stages = np.vstack([columns["asr_confidence_q"], columns["nlu_confidence_q"], columns["er_min_score_q"]])
        with np.errstate(invalid="ignore"):
            weakest = np.where(np.isnan(stages).all(axis=0), np.nan, np.nanmin(np.where(np.isnan(stages), np.inf, stages), axis=0))
        columns["weakest_stage_q"] = weakest
        return features.with_columns(pl.Series(name, values, dtype=pl.Float64).fill_nan(None) for name, values in columns.items())

    def to_json(self) -> dict:
        def table(t: QuantileTable) -> dict:
            return {"points": list(t[0]), "shares": list(t[1])}
        return {"tables": {k: table(v) for k, v in self.tables.items()}, "counts": self.counts,
                "by_intent": {k: table(v) for k, v in self.by_intent.items()}}

    @classmethod
    def from_json(cls, data: dict) -> Reference:
        def table(t: dict) -> QuantileTable:
            return tuple(float(x) for x in t["points"]), tuple(float(x) for x in t["shares"])
        return cls({k: table(v) for k, v in data.get("tables", {}).items()}, {k: int(v) for k, v in data.get("counts", {}).items()},
                   {k: table(v) for k, v in data.get("by_intent", {}).items()})
