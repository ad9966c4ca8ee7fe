"""Scores of predicted failure points against gold labels, and the same for a
human annotator, so a model can be read as a percentage of human performance."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from fpi.schema import LABELS


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
    confusion = np.bincount(g * k + p, minlength=k * k).reshape(k, k)
    true_positive = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_count > 0, true_positive / predicted_count, 0.0)
        recall = np.where(support > 0, true_positive / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support > 0) | (predicted_count > 0)
    return {
        "turns": int(len(g)),
        "accuracy": round(float((g == p).mean()) if len(g) else 0.0, 6),
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


def defect_rates(failure_points: Sequence[str], labels: Sequence[str] = LABELS) -> dict:
    """Share of all turns whose failure point is each component, and of all non-correct turns."""
    total = len(failure_points)
    seen = Counter(failure_points)
    counts = {label: seen[label] for label in labels}
    share = (lambda n: round(n / total, 6)) if total else (lambda n: 0.0)
    components = [label for label in labels if label != "correct"]
    return {
        "turns": total,
        "overall": share(sum(counts[c] for c in components)),
        "per_component": {c: share(counts[c]) for c in components},
        "counts": counts,
    }


METRICS_FORMAT = 1


def metrics_snapshot(*, source: str, data_fingerprint: str, model_fingerprint: str, rules: dict,
                     predicted: Sequence[str], gold: Sequence[str] | None) -> dict:
    """What `fpi eval --save-metrics` writes and `fpi gate --baseline` reads: scores, defect rates,
    and fingerprints of the data, model and rules they were measured with."""
    snapshot = {
        "format": "fpi-metrics", "format_version": METRICS_FORMAT,
        "source": source, "data_fingerprint": data_fingerprint, "model_fingerprint": model_fingerprint, "rules": rules,
        "turns": len(predicted),
        "defect_rates": {"predicted": defect_rates(predicted)},
    }
    if gold is not None:
        snapshot["metrics"] = evaluate(gold, predicted)
        snapshot["defect_rates"]["gold"] = defect_rates(gold)
    return snapshot
