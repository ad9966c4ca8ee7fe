"""Scores of predicted failure points against gold labels, and the same for a
human annotator, so a model can be read as a percentage of human performance."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from fpi.contract.errors import UsageError
from fpi.contract.small_files import read_small_file
from fpi.contract.trace_format import LABELS


def evaluate(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str] = LABELS) -> dict:
    """Accuracy, macro-F1, per-label precision/recall/F1/support and the confusion matrix.

    Macro-F1 averages over the labels present in gold or predictions, so a label absent
    from both neither helps nor hurts."""
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} labels but predicted has {len(predicted)}")
    index = {label: i for i, label in enumerate(labels)}
    g = np.array([index[x] for x in gold], dtype=np.int64)
    p = np.array([index[x] for x in predicted], dtype=np.int64)
    k = len(labels)
    return scores(np.bincount(g * k + p, minlength=k * k).reshape(k, k), labels)


def scores(confusion: np.ndarray, labels: Sequence[str] = LABELS) -> dict:
    """`evaluate`'s numbers from a confusion matrix (rows gold, columns predicted): a streamed run adds
    its batches' matrices instead of keeping every label."""
    true_positive = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_count > 0, true_positive / predicted_count, 0.0)
        recall = np.where(support > 0, true_positive / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support > 0) | (predicted_count > 0)
    return {
        "turns": int(confusion.sum()),
        "accuracy": round(float(true_positive.sum() / confusion.sum()) if confusion.sum() else 0.0, 6),
        "macro_f1": round(float(f1[present].mean()) if present.any() else 0.0, 6),
        "per_label": {
            label: {"precision": round(float(precision[i]), 6), "recall": round(float(recall[i]), 6),
                    "f1": round(float(f1[i]), 6), "support": int(support[i]), "predicted": int(predicted_count[i])}
            for i, label in enumerate(labels)
        },
        "confusion": {"labels": list(labels), "matrix": confusion.tolist()},
    }


def human_relative(model_metrics: dict, human_metrics: dict) -> float:
    """Model macro-F1 as a percentage of the annotator's (the published FPI measure)."""
    return round(100.0 * model_metrics["macro_f1"] / human_metrics["macro_f1"], 2) if human_metrics["macro_f1"] else float("nan")


def annotator_labels(turns: pl.DataFrame, field: str, source: str) -> list[str]:
    """One annotator's label of every turn, from a field of the traces beside the gold `label`
    (e.g. `human_label`); a usage error naming the first turn that lacks a valid one."""
    if field in turns.columns:  # a table's column (Parquet, a DataFrame)
        labels = turns[field] if turns.schema[field] == pl.String else pl.Series(field, [None] * turns.height, pl.String)
    else:
        labels = turns.select(pl.col("raw").str.json_path_match(f"$.{field}")).to_series()
    bad = labels.is_null() | ~labels.is_in(list(LABELS))
    if bad.any():
        first = turns.filter(bad)["line"][0]
        raise UsageError(f"{source}:{first}: {field}: expected one of {', '.join(LABELS)} on every turn "
                         f"({int(bad.sum())} turns lack it)")
    return labels.to_list()


def score_against_annotator(gold: Sequence[str], predicted: Sequence[str], annotator: Sequence[str]) -> dict:
    """The model's and an annotator's scores against gold, and the model as % of the annotator
    (the published FPI measure): what `fpi eval --human` reports."""
    model, human = evaluate(gold, predicted), evaluate(gold, annotator)
    return {"model": model, "human": human, "model_pct_of_human_macro_f1": human_relative(model, human)}


def defect_rates(failure_points: Sequence[str], labels: Sequence[str] = LABELS) -> dict:
    """Share of all turns whose failure point is each component, and of all non-correct turns."""
    seen = Counter(failure_points)
    return defect_rates_of({label: seen[label] for label in labels}, labels)


def defect_rates_of(counts: dict[str, int], labels: Sequence[str] = LABELS) -> dict:
    """`defect_rates` from the turns counted per failure point."""
    total = sum(counts.values())
    share = (lambda n: round(n / total, 6)) if total else (lambda n: 0.0)
    components = [label for label in labels if label != "correct"]
    return {
        "turns": total,
        "overall": share(sum(counts[c] for c in components)),
        "per_component": {c: share(counts[c]) for c in components},
        "counts": counts,
    }


METRICS_FORMAT = 1
MAX_METRICS_BYTES = 64 * 2**20  # a metrics file is kilobytes; a bound on what reading one may take


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shape_problems(data: dict) -> list[str]:
    """What a metrics file lacks that the gate reads: defect rates, and the scores when present."""
    problems = []
    rates = data.get("defect_rates")
    if not isinstance(rates, dict) or not isinstance(rates.get("predicted"), dict):
        return ["defect_rates.predicted: missing"]
    for source, values in rates.items():
        if not isinstance(values, dict) or not _number(values.get("overall")) or not isinstance(values.get("per_component"), dict) \
                or not all(_number(values["per_component"].get(c)) for c in LABELS if c != "correct"):
            problems.append(f"defect_rates.{source}: expected overall and per_component rates")
    scores = data.get("metrics")
    if scores is not None:
        if not isinstance(scores, dict) or not all(_number(scores.get(k)) for k in ("accuracy", "macro_f1")):
            problems.append("metrics: expected accuracy and macro_f1")
        elif not isinstance(scores.get("per_label"), dict) or not all(
                isinstance(scores["per_label"].get(label), dict)
                and all(_number(scores["per_label"][label].get(k)) for k in ("precision", "recall", "f1", "support"))
                for label in LABELS):
            problems.append("metrics.per_label: expected precision, recall, f1 and support for every label")
    return problems


@dataclass(frozen=True)
class Metrics:
    """The metrics file: what `fpi eval --save-metrics` writes and `fpi gate --baseline` reads.
    Scores (with gold labels), defect rates, and fingerprints of the data, model and rules they
    were measured with; no timestamps, so a rerun writes the same bytes."""

    source: str
    data_fingerprint: str
    model_fingerprint: str
    rules: dict  # {"ids": [...], "fingerprint": "..."}
    turns: int
    defect_rates: dict  # {"predicted": defect_rates(...), "gold": ... when labeled}
    metrics: dict | None = None  # evaluate(gold, predicted) when every turn has a gold label

    @classmethod
    def measure(cls, *, source: str, data_fingerprint: str, model_fingerprint: str, rules: dict,
                predicted: Sequence[str], gold: Sequence[str] | None) -> Metrics:
        seen = Counter(predicted)
        confusion = None
        if gold is not None:
            index = {label: i for i, label in enumerate(LABELS)}
            pairs = np.array([index[g] * len(LABELS) + index[p] for g, p in zip(gold, predicted, strict=True)], dtype=np.int64)
            confusion = np.bincount(pairs, minlength=len(LABELS) ** 2).reshape(len(LABELS), len(LABELS))
        return cls.of_counts(source=source, data_fingerprint=data_fingerprint, model_fingerprint=model_fingerprint,
                             rules=rules, predicted={label: seen[label] for label in LABELS}, confusion=confusion)

    @classmethod
    def of_counts(cls, *, source: str, data_fingerprint: str, model_fingerprint: str, rules: dict,
                  predicted: dict[str, int], confusion: np.ndarray | None) -> Metrics:
        """From turns counted per predicted failure point and, with gold labels, the confusion matrix
        (rows gold): what a streamed run keeps instead of every turn's labels."""
        rates = {"predicted": defect_rates_of(predicted)}
        if confusion is not None:
            rates["gold"] = defect_rates_of(dict(zip(LABELS, (int(n) for n in confusion.sum(axis=1)), strict=True)))
        return cls(source=source, data_fingerprint=data_fingerprint, model_fingerprint=model_fingerprint, rules=rules,
                   turns=sum(predicted.values()), defect_rates=rates,
                   metrics=scores(confusion) if confusion is not None else None)

    def to_json(self) -> dict:
        out = {"format": "fpi-metrics", "format_version": METRICS_FORMAT, "source": self.source,
               "data_fingerprint": self.data_fingerprint, "model_fingerprint": self.model_fingerprint,
               "rules": self.rules, "turns": self.turns, "defect_rates": self.defect_rates}
        if self.metrics is not None:
            out["metrics"] = self.metrics
        return out

    def to_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: object, label: str) -> Metrics:
        """A metrics file's content; `label` names the file in every error."""
        if not isinstance(data, dict) or data.get("format") != "fpi-metrics":
            raise UsageError(f"{label}: not an fpi metrics file (expected \"format\": \"fpi-metrics\"); "
                             "write one with `fpi eval LABELED --save-metrics FILE`")
        if data.get("format_version") != METRICS_FORMAT:
            raise UsageError(f"{label}: metrics format {data.get('format_version')} is not supported (expected {METRICS_FORMAT}); "
                             "save the baseline again with this fpi")
        problems = _shape_problems(data)
        if problems:
            raise UsageError(f"{label}: " + "; ".join(problems) + " (a metrics file is written by `fpi eval --save-metrics`; "
                             "save it again)")
        return cls(source=str(data.get("source")), data_fingerprint=str(data.get("data_fingerprint")),
                   model_fingerprint=str(data.get("model_fingerprint")), rules=data.get("rules") or {},
                   turns=data.get("turns", 0), defect_rates=data.get("defect_rates") or {}, metrics=data.get("metrics"))

    @classmethod
    def read(cls, path: str | Path) -> Metrics:
        label = str(path)
        try:
            data = json.loads(read_small_file(Path(path), MAX_METRICS_BYTES).decode("utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{label}: no such baseline file; write one with `fpi eval LABELED --save-metrics {label}`") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"{label}: not a readable JSON metrics file ({getattr(exc, 'strerror', None) or exc})") from None
        return cls.from_json(data, label)


def misclassified(turns: pl.DataFrame, records: pl.DataFrame) -> pl.DataFrame:
    """The turns whose verdict is not their gold label, for a person to read: ids, gold and predicted
    failure point, confidence, the deciding rule, top reasons, and what ASR heard and NLU decided."""
    reasons = pl.col("explanation").struct.field("features").list.eval(
        pl.element().struct.field("name") + " = " + pl.element().struct.field("value")).list.join("; ")
    return (records.with_columns(asr_text=turns["asr"].struct.field("text"), nlu_intent=turns["nlu"].struct.field("intent"))
            .filter(pl.col("label") != pl.col("failure_point"))
            .select("turn_id", "session_id", "turn_index", gold="label", predicted="failure_point",
                    confidence="confidence", rule="rule", reasons=reasons, asr_text="asr_text", nlu_intent="nlu_intent"))
