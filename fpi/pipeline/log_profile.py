"""How the logs at hand sit against what the model learned from: how far their features lie from
its training data (the shift), and the share of each failure point they seem to hold (their prior).

A model is calibrated to the label mix it was trained on; an assistant that fails twice as often
needs its verdicts moved toward failures. The logs' prior is estimated without labels by EM on the
model's own probabilities (Saerens, Latinne & Decaestecker, 2002), from MIN_TURNS turns or more, held
halfway to the training prior so a class the model cannot tell apart on these logs does not collapse
to nothing. The shift is the
median, over the features the model keeps the training distribution of, of the Kolmogorov-Smirnov
distance between these logs and that distribution: 0 for logs like the training data, 1 for logs
unlike it in every feature. Both are fitted once on the whole input (its sample), before any batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from fpi.contract.records import OUT_OF_DEPTH, out_of_depth_warning

LEVELS = np.linspace(0.0, 1.0, 101)
SHIFT_LIMIT = OUT_OF_DEPTH  # from here on the model is out of its depth (simulated assistants it never saw: 0.02-0.08)
PRIOR_STRENGTH = 0.5  # the training prior's weight in the estimate, as a share of the turns
MIN_TURNS = 500  # fewer turns say too little of the logs' label prior: the training prior stands
EM_ROUNDS = 200
MIN_VALUES = 50  # fewer values of a feature in these logs: it does not count toward the shift
SHIFT_FEATURES = (
    "wake_score", "asr_confidence", "asr_nbest_size", "asr_nbest_margin", "asr_alt_similarity", "asr_word_count",
    "nlu_confidence", "nlu_nbest_size", "nlu_nbest_margin", "nlu_slot_count", "er_entity_count", "er_min_score",
    "result_latency_ms", "result_has_response", "barge_in", "position_in_session", "session_length",
    "next_text_similarity", "next_gap_s",
)


def training_distributions(features: pl.DataFrame) -> dict[str, list[float]]:
    """Each shift feature's distribution in training data, as its values at 101 quantiles."""
    tables = {}
    for name in SHIFT_FEATURES:
        values = features[name].drop_nulls().drop_nans().to_numpy() if name in features.columns else np.array([])
        if values.size >= MIN_VALUES:
            tables[name] = [round(float(v), 6) for v in np.quantile(values, LEVELS)]
    return tables


def _distance(values: np.ndarray, table: list[float]) -> float:
    """Kolmogorov-Smirnov distance between the values and the distribution a quantile table describes."""
    points = np.asarray(table)
    ours = np.sort(values)
    at = np.unique(np.concatenate([points, np.quantile(ours, LEVELS)]))
    theirs = np.interp(at, points, LEVELS, left=0.0, right=1.0)
    if points[0] == points[-1]:  # one value in training: its share at and above it
        theirs = np.where(at < points[0], 0.0, 1.0)
    return float(np.max(np.abs(np.searchsorted(ours, at, side="right") / ours.size - theirs)))


def shift(features: pl.DataFrame, tables: dict[str, list[float]]) -> tuple[float | None, dict[str, float]]:
    """The median distance over the features both sides have, and each feature's distance."""
    distances = {}
    for name, table in tables.items():
        values = features[name].drop_nulls().drop_nans().to_numpy() if name in features.columns else np.array([])
        if values.size >= MIN_VALUES:
            distances[name] = round(_distance(values, table), 4)
    return (round(float(np.median(list(distances.values()))), 4) if distances else None), distances


def estimate_prior(probabilities: np.ndarray, trained: np.ndarray, strength: float = PRIOR_STRENGTH) -> np.ndarray:
    """The label prior of the turns whose probabilities (under training prior `trained`) are given: EM,
    each round's estimate pulled toward `trained` by `strength` turns per turn. Labels no turn can have
    keep a prior of 0."""
    possible = probabilities.sum(axis=0) > 0
    start = np.where(possible, trained, 0.0)
    start = start / start.sum()
    ratio_base = np.where(start > 0, start, 1.0)
    prior, total = start.copy(), len(probabilities)
    for _ in range(EM_ROUNDS):
        posterior = probabilities * (prior / ratio_base)
        posterior /= np.maximum(posterior.sum(axis=1, keepdims=True), 1e-300)
        new = (posterior.sum(axis=0) + strength * total * start) / (total + strength * total)
        if np.abs(new - prior).max() < 1e-7:
            return new
        prior = new
    return prior


@dataclass(frozen=True)
class LogProfile:
    """The shift of these logs from the model's training data (None when the model keeps no distributions),
    the features furthest off, and the label prior estimated for these logs against the training one."""

    shift: float | None
    distances: dict[str, float]
    prior: dict[str, float]
    trained_prior: dict[str, float]
    adapted: bool = False  # a model taught by these logs' confidences classifies them (fpi.pipeline.log_adaptation)

    @classmethod
    def fit(cls, features: pl.DataFrame, probabilities: np.ndarray, classes: list[str],
            trained_prior: dict[str, float], tables: dict[str, list[float]]) -> LogProfile:
        """From the features and the model's probabilities of the whole input (or its sample)."""
        how_far, distances = shift(features, tables)
        prior: dict[str, float] = {}
        if trained_prior and len(probabilities) >= MIN_TURNS:
            trained = np.asarray([trained_prior.get(label, 0.0) for label in classes])
            estimate = estimate_prior(probabilities, trained / trained.sum())
            prior = {label: round(float(p), 6) for label, p in zip(classes, estimate, strict=True)}
        return cls(how_far, distances, prior, trained_prior)

    @property
    def out_of_depth(self) -> bool:
        return self.shift is not None and self.shift >= SHIFT_LIMIT

    def adjust(self, probabilities: np.ndarray, classes: list[str]) -> np.ndarray:
        """Probabilities moved from the training prior to these logs' prior (rows renormalised)."""
        if not self.prior:
            return probabilities
        ratio = np.asarray([self.prior[label] / self.trained_prior[label] if self.trained_prior.get(label) else 0.0
                            for label in classes])
        moved = probabilities * ratio
        total = moved.sum(axis=1, keepdims=True)
        return np.divide(moved, total, out=np.asarray(probabilities, dtype=float).copy(), where=total > 0)

    def furthest(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.distances.items(), key=lambda item: (-item[1], item[0]))[:k]

    def message(self) -> str | None:
        """One line for a terminal or a report header when the model is out of its depth on these logs."""
        if self.shift is None or not self.out_of_depth:
            return None
        off = ", ".join(f"{name} {distance:.2f}" for name, distance in self.furthest())
        taught = "; classified by a model taught by their own confidences" if self.adapted else ""
        return out_of_depth_warning(self.shift, f"; furthest: {off}{taught}")

    def to_json(self) -> dict:
        return {"shift": self.shift, "out_of_depth": self.out_of_depth, "adapted": self.adapted,
                "distances": self.distances, "prior": self.prior, "trained_prior": self.trained_prior}

    @classmethod
    def from_json(cls, data: dict) -> LogProfile:
        return cls(data["shift"], data["distances"], data["prior"], data["trained_prior"], data["adapted"])


@dataclass(frozen=True)
class HeardScores:
    """The base model's raw scores of the turns a run heard (its sample), by input line (sorted): a batch
    holding them need not predict them again."""

    lines: np.ndarray
    raw: np.ndarray

    @classmethod
    def of(cls, lines: np.ndarray, raw: np.ndarray) -> HeardScores:
        order = np.argsort(lines, kind="stable")
        return cls(lines[order], raw[order])

    def among(self, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `lines` of the heard turns, their raw scores)."""
        at = np.searchsorted(self.lines, lines).clip(max=max(len(self.lines) - 1, 0))
        found = np.flatnonzero(self.lines[at] == lines) if len(self.lines) else np.empty(0, dtype=np.intp)
        return found, self.raw[at[found]]
