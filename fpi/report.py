"""Where an assistant fails: defect rates per component with Wilson intervals, the
intents, reasons and rules behind them, slices (domain, intent, device, locale, day),
a comparison with a baseline run, and the confusion matrix when gold labels exist.

`build_report` returns plain numbers (a dict that is the JSON output); the
renderers in `fpi.report_render` only format them, so every format agrees."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from fpi.classify import CONTEXT_COLUMNS, failure_point_counts
from fpi.errors import TraceError, UsageError
from fpi.evaluate import evaluate
from fpi.explain import EXPLANATION_DTYPE
from fpi.schema import LABELS

COMPONENTS = tuple(label for label in LABELS if label != "correct")
Z95 = 1.959963984540054
CONFIDENCE = 0.95
DIGITS = 6

# --by names: trace field paths and the record columns that hold them.
SLICES = {
    "nlu.domain": "domain", "domain": "domain",
    "nlu.intent": "intent", "intent": "intent",
    "device.type": "device_type", "device_type": "device_type",
    "locale": "locale",
    "day": "day",
}
NONE_VALUE = "(none)"
REQUIRED = ("turn_id", "failure_point")


# ------------------------------------------------------------------ reading

def is_classified(path: str | Path) -> bool:
    """Whether a file holds `fpi classify` records (rather than raw traces)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "failure_point" in pl.read_parquet_schema(path)
    if suffix == ".csv":
        return "failure_point" in pl.read_csv(path, n_rows=0).columns
    with path.open("rb") as handle:
        first = handle.readline()
    return b'"failure_point"' in first and not first.startswith(b"\x1f\x8b")


def read_records(path: str | Path) -> pl.DataFrame:
    """Classified records from JSON Lines, CSV or Parquet, normalised to one set of columns."""
    label = str(path)
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".parquet":
            records = pl.read_parquet(path)
        elif suffix == ".csv":
            records = pl.read_csv(path, infer_schema_length=None, schema_overrides={c: pl.String for c in (
                "rule", "label", "explanation", "timestamp", "locale", "device_type", "domain", "intent",
                "rules_matched", "recovered_from")})
        else:
            records = pl.read_ndjson(path, infer_schema_length=None)
    except FileNotFoundError:
        raise UsageError(f"{label}: no such file") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise TraceError([f"{label}: not readable as classified records ({str(exc).splitlines()[0]})"]) from None
    missing = [c for c in REQUIRED if c not in records.columns]
    if missing:
        raise TraceError([f"{label}: no `{missing[0]}` column; expected the output of `fpi classify`"])
    for column in ("failure_point", "model_failure_point", "label"):
        if column not in records.columns:
            continue
        # a missing label is fine (unlabeled turn); a missing failure point is not
        bad = records.select((~pl.col(column).is_in(list(LABELS))).fill_null(column != "label")).to_series()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            where = f"{label}: row {row + 1}" if suffix == ".parquet" else f"{label}:{row + 2 if suffix == '.csv' else row + 1}"
            raise TraceError([f"{where}: {column}: expected one of {', '.join(LABELS)}, got {records[column][row]!r}"])
    if "model_failure_point" not in records.columns:
        records = records.with_columns(model_failure_point=pl.col("failure_point"))
    if "rule" not in records.columns:
        records = records.with_columns(rule=pl.lit(None, pl.String))
    if "explanation" in records.columns and records.schema["explanation"] == pl.String:
        records = records.with_columns(pl.col("explanation").str.json_decode(EXPLANATION_DTYPE))
    for column in CONTEXT_COLUMNS:
        if column not in records.columns:
            records = records.with_columns(pl.lit(None, pl.String).alias(column))
    return records


# ------------------------------------------------------------------ statistics

def wilson(count: np.ndarray | float, n: np.ndarray | float, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion: sound at rates near 0 and small n, unlike p ± z·se."""
    count, n = np.asarray(count, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n > 0, count / n, 0.0)
        denominator = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
        low = np.where((n > 0) & (count > 0), centre - half, 0.0)  # exact at the ends, not 1e-18
        high = np.where((n > 0) & (count < n), centre + half, 1.0)
    return np.clip(low, 0, 1), np.clip(high, 0, 1)


def compare_rates(count: int, n: int, base_count: int, base_n: int, alpha: float) -> dict:
    """Change of a rate against a baseline: Newcombe's interval for the difference (from the
    two Wilson intervals) and the two-proportion z-test with a pooled variance."""
    p, q = count / n if n else 0.0, base_count / base_n if base_n else 0.0
    (low, high), (base_low, base_high) = (tuple(map(float, wilson(count, n))), tuple(map(float, wilson(base_count, base_n))))
    change = p - q
    pooled = (count + base_count) / (n + base_n) if n + base_n else 0.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / base_n)) if n and base_n else 0.0
    z = change / se if se else 0.0
    p_value = math.erfc(abs(z) / math.sqrt(2)) if se else 1.0
    significant = p_value < alpha
    return {
        "rate": round(p, DIGITS), "baseline_rate": round(q, DIGITS), "change": round(change, DIGITS),
        "change_ci_low": round(change - math.sqrt((p - low) ** 2 + (base_high - q) ** 2), DIGITS),
        "change_ci_high": round(change + math.sqrt((high - p) ** 2 + (q - base_low) ** 2), DIGITS),
        "z": round(z, 4), "p_value": round(p_value, DIGITS), "significant": bool(significant),
        "verdict": ("worse" if change > 0 else "better") if significant else "no significant change",
    }


def _rate(count: int, n: int) -> dict:
    low, high = wilson(count, n)
    return {"count": int(count), "rate": round(count / n, DIGITS) if n else 0.0,
            "ci_low": round(float(low), DIGITS), "ci_high": round(float(high), DIGITS)}


# ------------------------------------------------------------------ the report

def _slice_column(field: str) -> pl.Expr:
    if field == "day":
        return pl.col("timestamp").str.slice(0, 10)
    return pl.col(SLICES.get(field, field))


def _lists_by_label(frame: pl.DataFrame, label_column: str) -> dict[str, list[dict]]:
    """The rows of an ordered frame as a list of dicts per label (every label present)."""
    out: dict[str, list[dict]] = {label: [] for label in LABELS}
    for row in frame.iter_rows(named=True):
        out[row.pop(label_column)].append(row)
    return out


def _top_values(records: pl.DataFrame, column: str, top: int) -> dict[str, list[dict]]:
    """The most frequent values of `column` among each failure point's turns."""
    counts = (records.lazy().filter(pl.col(column).is_not_null())
              .group_by("failure_point", pl.col(column).alias("value")).agg(turns=pl.len())
              .sort(["failure_point", "turns", "value"], descending=[False, True, False])
              .group_by("failure_point", maintain_order=True).head(top).collect())
    return _lists_by_label(counts, "failure_point")


def _top_reasons(records: pl.DataFrame, top: int) -> dict[str, list[dict]]:
    """SHAP features that most often stand among a turn's top features, per failure point."""
    if "explanation" not in records.columns:
        return _lists_by_label(pl.DataFrame(schema={"failure_point": pl.String}), "failure_point")
    reasons = (records.lazy().select("failure_point", pl.col("explanation").struct.field("features"))
               .explode("features").drop_nulls("features").unnest("features")
               .group_by("failure_point", "feature", "name")
               .agg(turns=pl.len(), mean_contribution=pl.col("contribution").mean())
               .sort(["failure_point", "turns", "mean_contribution", "feature"], descending=[False, True, True, False])
               .group_by("failure_point", maintain_order=True).head(top)
               .with_columns(pl.col("mean_contribution").round(4)).collect())
    return _lists_by_label(reasons, "failure_point")


def _rule_moves(records: pl.DataFrame) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """Per failure point, the rules that moved turns into it and out of it (from the model's verdict)."""
    moved = (records.lazy().filter(pl.col("rule").is_not_null() & (pl.col("failure_point") != pl.col("model_failure_point")))
             .select("rule", "failure_point", "model_failure_point"))

    def by(column: str) -> dict[str, list[dict]]:
        counts = moved.group_by(column, "rule").agg(turns=pl.len()).sort([column, "turns", "rule"], descending=[False, True, False])
        return _lists_by_label(counts.collect(), column)
    return by("failure_point"), by("model_failure_point")


def component_table(records: pl.DataFrame, top: int = 3) -> dict:
    """One row per failure point (and one for all defects): turns, rate with its interval,
    share of defects, top intents and domains, top SHAP reasons, rules in and out."""
    n = records.height
    counts = failure_point_counts(records)
    defects = sum(counts[c] for c in COMPONENTS)
    intents, domains = _top_values(records, "intent", top), _top_values(records, "domain", top)
    reasons = _top_reasons(records, top)
    rules_in, rules_out = _rule_moves(records)
    rows = []
    for label in LABELS:
        rows.append({"failure_point": label, "turns": counts[label], **_rate(counts[label], n),
                     "share_of_defects": (round(counts[label] / defects, DIGITS) if defects else 0.0) if label != "correct" else None,
                     "top_intents": intents[label], "top_domains": domains[label], "top_reasons": reasons[label],
                     "rules_in": rules_in[label], "rules_out": rules_out[label]})
        rows[-1].pop("count")
    overall = {"turns": defects, **_rate(defects, n)}
    overall.pop("count")
    return {"components": rows, "overall": overall}


def slice_table(records: pl.DataFrame, field: str, min_cell: int) -> dict:
    """Failure point × values of one field: turns per value, and each component's rate with its
    interval; values with fewer than `min_cell` turns are flagged `small`, never dropped.
    Values come most turns first; days in date order."""
    if field not in SLICES and field not in records.columns:
        known = sorted(set(SLICES) | {c for c in records.columns if records.schema[c] == pl.String})
        raise UsageError(f"--by {field}: not a field of these records; expected one of {', '.join(known)}")
    value = _slice_column(field).fill_null(NONE_VALUE).cast(pl.String).alias("value")
    counts = (records.lazy().select(value, "failure_point")
              .group_by("value", "failure_point").agg(count=pl.len()).collect()
              .pivot(on="failure_point", index="value", values="count"))
    for label in LABELS:
        if label not in counts.columns:
            counts = counts.with_columns(pl.lit(0, pl.UInt32).alias(label))
    counts = (counts.with_columns(pl.col(list(LABELS)).fill_null(0))
              .with_columns(turns=pl.sum_horizontal(list(LABELS))))
    counts = counts.sort("value") if field == "day" else counts.sort(["turns", "value"], descending=[True, False])
    n = counts["turns"].to_numpy()
    columns = {label: counts[label].to_numpy() for label in LABELS}
    columns["defects"] = sum(columns[c] for c in COMPONENTS)
    intervals = {name: wilson(columns[name], n) for name in (*COMPONENTS, "defects")}
    rows = []
    for i, slice_value in enumerate(counts["value"].to_list()):
        rates = {}
        for name in (*COMPONENTS, "defects"):
            count = int(columns[name][i])
            rates[name] = {"count": count, "rate": round(count / int(n[i]), DIGITS),
                           "ci_low": round(float(intervals[name][0][i]), DIGITS), "ci_high": round(float(intervals[name][1][i]), DIGITS)}
        rows.append({"value": slice_value, "turns": int(n[i]), "small": bool(n[i] < min_cell), "rates": rates})
    return {"field": field, "min_cell": min_cell, "values": rows}


def baseline_table(records: pl.DataFrame, baseline: pl.DataFrame, alpha: float) -> dict:
    """Each component's rate now against the baseline run: change, interval, test, verdict."""
    now, before = failure_point_counts(records), failure_point_counts(baseline)
    n, base_n = records.height, baseline.height
    rows = [{"failure_point": label, "turns": now[label], "baseline_turns": before[label],
             **compare_rates(now[label], n, before[label], base_n, alpha)} for label in COMPONENTS]
    defects, base_defects = sum(now[c] for c in COMPONENTS), sum(before[c] for c in COMPONENTS)
    overall = {"turns": defects, "baseline_turns": base_defects, **compare_rates(defects, n, base_defects, base_n, alpha)}
    return {"turns": n, "baseline_turns": base_n, "alpha": alpha, "components": rows, "overall": overall}


def build_report(records: pl.DataFrame, *, source: str = "", by: list[str] | None = None,
                 baseline: pl.DataFrame | None = None, baseline_source: str = "", min_cell: int = 30,
                 top: int = 3, alpha: float = 0.05) -> dict:
    """Every number of the report, as plain JSON-able values."""
    if records.height == 0:
        raise UsageError(f"{source or 'the records'}: no turns to report on")
    report = {"source": source, "turns": records.height, "confidence_level": CONFIDENCE, **component_table(records, top)}
    report["slices"] = [slice_table(records, field, min_cell) for field in by or []]
    has_days = records["timestamp"].null_count() < records.height
    report["by_day"] = slice_table(records, "day", min_cell) if has_days else None
    if baseline is not None:
        report["baseline"] = {"source": baseline_source, **baseline_table(records, baseline, alpha)}
    labeled = records.filter(pl.col("label").is_not_null()) if "label" in records.columns else records.clear()
    if labeled.height:
        metrics = evaluate(labeled["label"].to_list(), labeled["failure_point"].to_list())
        report["confusion"] = {"turns": labeled.height, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                               **metrics["confusion"]}
    return report
