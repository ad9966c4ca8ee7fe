"""Where an assistant fails: defect rates per component with Wilson intervals, the
intents, reasons and rules behind them, slices (domain, intent, device, locale, day),
a comparison with a baseline run, and the confusion matrix when gold labels exist.

`build_report` returns plain numbers (the JSON output, typed below); the renderers
in `fpi.presentation.report_formats` only format them, so every format agrees. It reads records only
(`fpi.contract.records`) through their tally (`fpi.reports.counts`), never the model."""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import polars as pl

from fpi.contract.errors import UsageError
from fpi.contract.metrics import scores
from fpi.contract.trace_format import COMPONENTS, LABELS
from fpi.io.coverage import Coverage
from fpi.reports.statistics import CONFIDENCE, DIGITS, compare_rates, rate, wilson
from fpi.reports.counts import COUNT, MICRO, SLICES, Tally, slice_key

NONE_VALUE = "(none)"


class Rate(TypedDict):
    rate: float
    ci_low: float
    ci_high: float


class CountedRate(Rate):
    count: int


class Overall(Rate):
    turns: int


class ComponentRow(Overall):
    failure_point: str
    share_of_defects: float | None
    top_intents: list[dict]
    top_domains: list[dict]
    top_reasons: list[dict]
    rules_in: list[dict]
    rules_out: list[dict]


class SliceRow(TypedDict):
    value: str
    turns: int
    small: bool
    rates: dict[str, CountedRate]


class SliceRates(TypedDict):
    field: str
    min_cell: int
    values: list[SliceRow]


class About(TypedDict):
    """What a report was made from and by, for its header: deterministic, so the same records give
    the same page (the date is the latest turn's day unless given)."""

    fpi: str
    models: list[str]  # model_sha of the records (several when runs were mixed; none when not recorded)
    rules: list[str]  # rules_sha of the records ("none" for a run without rules)
    shift: float | None  # the largest shift of the records' runs from their model's training data (None: not recorded)
    input_sha256: str | None
    first_day: str | None
    last_day: str | None
    date: str | None


class Report(TypedDict, total=False):
    """Every number of a report: the JSON output, and what every format renders."""

    about: About
    source: str
    turns: int
    confidence_level: float
    components: list[ComponentRow]
    overall: Overall
    slices: list[SliceRates]
    by_day: SliceRates | None
    baseline: dict
    confusion: dict
    coverage: dict  # raw traces read through a mapping: what it found (`fpi.io.coverage.Coverage.to_json`)


# ------------------------------------------------------------------ the report

def _lists_by_label(frame: pl.DataFrame, label_column: str) -> dict[str, list[dict]]:
    """The rows of an ordered frame as a list of dicts per label (every label present)."""
    out: dict[str, list[dict]] = {label: [] for label in LABELS}
    for row in frame.iter_rows(named=True):
        out[row.pop(label_column)].append(row)
    return out


def _turns() -> pl.Expr:
    return pl.col("turns").sum().alias("turns")


def _top_values(counts: pl.DataFrame, column: str, top: int) -> dict[str, list[dict]]:
    """The most frequent values of `column` among each failure point's turns."""
    top_values = (counts.lazy().filter(pl.col(column).is_not_null())
                  .group_by("failure_point", pl.col(column).alias("value")).agg(_turns())
                  .sort(["failure_point", "turns", "value"], descending=[False, True, False])
                  .group_by("failure_point", maintain_order=True).head(top).collect())
    return _lists_by_label(top_values, "failure_point")


def _top_reasons(reasons: pl.DataFrame, top: int) -> dict[str, list[dict]]:
    """SHAP features that most often stand among a turn's top features, per failure point."""
    ranked = (reasons.lazy().with_columns(mean_contribution=(pl.col("contribution") / pl.col("turns") / MICRO).round(4))
              .select("failure_point", "feature", "name", "turns", "mean_contribution")
              .sort(["failure_point", "turns", "mean_contribution", "feature"], descending=[False, True, True, False])
              .group_by("failure_point", maintain_order=True).head(top).collect())
    return _lists_by_label(ranked, "failure_point")


def _rule_moves(counts: pl.DataFrame) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """Per failure point, the rules that moved turns into it and out of it (from the model's verdict)."""
    moved = counts.lazy().filter(pl.col("rule").is_not_null() & (pl.col("failure_point") != pl.col("model_failure_point")))

    def by(column: str) -> dict[str, list[dict]]:
        rules = moved.group_by(column, "rule").agg(_turns()).sort([column, "turns", "rule"], descending=[False, True, False])
        return _lists_by_label(rules.collect(), column)
    return by("failure_point"), by("model_failure_point")


def _label_counts(counts: pl.DataFrame) -> dict[str, int]:
    found = dict(counts.group_by("failure_point").agg(_turns()).iter_rows())
    return {label: int(found.get(label, 0)) for label in LABELS}


def component_table(tally: Tally, top: int = 3) -> tuple[list[ComponentRow], Overall]:
    """One row per failure point (and one for all defects): turns, rate with its interval,
    share of defects, top intents and domains, top SHAP reasons, rules in and out."""
    n = tally.turns
    counts = _label_counts(tally.counts)
    defects = sum(counts[c] for c in COMPONENTS)
    intents, domains = _top_values(tally.counts, "intent", top), _top_values(tally.counts, "domain", top)
    reasons = _top_reasons(tally.reasons, top)
    rules_in, rules_out = _rule_moves(tally.counts)
    rows = []
    for label in [label for label in LABELS if label in (tally.possible or LABELS)]:  # never a stage the logs lack
        counted = rate(counts[label], n)
        rows.append(ComponentRow(
            failure_point=label, turns=counts[label], rate=counted["rate"], ci_low=counted["ci_low"], ci_high=counted["ci_high"],
            share_of_defects=(round(counts[label] / defects, DIGITS) if defects else 0.0) if label != "correct" else None,
            top_intents=intents[label], top_domains=domains[label], top_reasons=reasons[label],
            rules_in=rules_in[label], rules_out=rules_out[label]))
    counted = rate(defects, n)
    return rows, Overall(turns=defects, rate=counted["rate"], ci_low=counted["ci_low"], ci_high=counted["ci_high"])


def slice_table(tally: Tally, field: str, min_cell: int) -> SliceRates:
    """Failure point × values of one field: turns per value, and each component's rate with its
    interval; values with fewer than `min_cell` turns are flagged `small`, never dropped.
    Values come most turns first; days in date order."""
    column = slice_key(field)
    if column not in tally.counts.columns:
        known = sorted(set(SLICES) | {c for c in tally.columns})
        raise UsageError(f"--by {field}: not a field of these records; expected one of {', '.join(known)}")
    counts = (tally.counts.lazy().select(pl.col(column).fill_null(NONE_VALUE).alias("value"), "failure_point", "turns")
              .group_by("value", "failure_point").agg(count=pl.col("turns").sum()).collect()
              .pivot(on="failure_point", index="value", values="count"))
    for label in LABELS:
        if label not in counts.columns:
            counts = counts.with_columns(pl.lit(0, COUNT).alias(label))
    counts = (counts.with_columns(pl.col(list(LABELS)).fill_null(0))
              .with_columns(turns=pl.sum_horizontal(list(LABELS))))
    counts = counts.sort("value") if field == "day" else counts.sort(["turns", "value"], descending=[True, False])
    n = counts["turns"].to_numpy()
    columns = {label: counts[label].to_numpy() for label in LABELS}
    columns["defects"] = np.sum([columns[c] for c in COMPONENTS], axis=0)
    intervals = {name: wilson(columns[name], n) for name in (*COMPONENTS, "defects")}
    rows = []
    shown = [c for c in COMPONENTS if c in (tally.possible or COMPONENTS)]  # never a stage the logs lack
    for i, slice_value in enumerate(counts["value"].to_list()):
        rates = {}
        for name in (*shown, "defects"):
            count = int(columns[name][i])
            rates[name] = CountedRate(count=count, rate=round(count / int(n[i]), DIGITS),
                                      ci_low=round(float(intervals[name][0][i]), DIGITS),
                                      ci_high=round(float(intervals[name][1][i]), DIGITS))
        rows.append(SliceRow(value=slice_value, turns=int(n[i]), small=bool(n[i] < min_cell), rates=rates))
    return SliceRates(field=field, min_cell=min_cell, values=rows)


def components_of(table: SliceRates) -> list[str]:
    """The failure points a slice table has rates of: not the stages the logs lack."""
    rates = table["values"][0]["rates"] if table["values"] else {}
    return [c for c in COMPONENTS if c in rates] if rates else list(COMPONENTS)


def baseline_table(tally: Tally, baseline: Tally, alpha: float) -> dict:
    """Each component's rate now against the baseline run: change, interval, test, verdict; no row for a stage
    neither run's logs have."""
    now, before = _label_counts(tally.counts), _label_counts(baseline.counts)
    n, base_n = tally.turns, baseline.turns
    either = tally.possible | baseline.possible
    rows = [{"failure_point": label, "turns": now[label], "baseline_turns": before[label],
             **compare_rates(now[label], n, before[label], base_n, alpha)} for label in COMPONENTS if label in either]
    defects, base_defects = sum(now[c] for c in COMPONENTS), sum(before[c] for c in COMPONENTS)
    overall = {"turns": defects, "baseline_turns": base_defects, **compare_rates(defects, n, base_defects, base_n, alpha)}
    return {"turns": n, "baseline_turns": base_n, "alpha": alpha, "components": rows, "overall": overall}


def about(tally: Tally, input_sha256: str | None = None, date: str | None = None) -> About:
    """The header of a report on these records."""
    from fpi.contract.distribution import version

    def distinct(column: str, null: str) -> list[str]:
        if column not in tally.columns:
            return []
        return sorted(tally.counts[column].fill_null(null).unique().to_list())

    days = tally.counts["day"]
    first_day, last_day = days.min(), days.max()
    assert first_day is None or isinstance(first_day, str)
    assert last_day is None or isinstance(last_day, str)
    shifts = [float(value) for value in distinct("shift", "") if value]
    return About(fpi=version(), models=distinct("model_sha", "none"), rules=distinct("rules_sha", "none"),
                 shift=max(shifts) if shifts else None, input_sha256=input_sha256,
                 first_day=first_day, last_day=last_day, date=date or last_day)


def coverage_lines(report: Report) -> list[str]:
    """What the mapping found, as the report's header says it (the lines `fpi classify` prints, and a warning per
    declared stage found on no turn); none for records, or traces read without a mapping."""
    if "coverage" not in report:
        return []
    found = Coverage.from_json(report["coverage"])
    return found.lines() + [f"warning: {warning}" for warning in found.warnings]


def baseline_verdict(comparison: dict) -> dict:
    """The top line of a comparison: the components that got significantly worse or better, the rest, and all defects."""
    rows = comparison["components"]
    return {"worse": [r["failure_point"] for r in rows if r["verdict"] == "worse"],
            "better": [r["failure_point"] for r in rows if r["verdict"] == "better"],
            "unchanged": [r["failure_point"] for r in rows if not r["significant"]],
            "all_defects": comparison["overall"]["verdict"]}


def _confusion(counts: pl.DataFrame) -> np.ndarray:
    index = {label: i for i, label in enumerate(LABELS)}
    pairs = (counts.lazy().filter(pl.col("label").is_not_null()).group_by("label", "failure_point").agg(_turns())
             .with_columns(pl.col("label", "failure_point").replace_strict(index, return_dtype=pl.Int64)).collect())
    matrix = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    matrix[pairs["label"].to_numpy(), pairs["failure_point"].to_numpy()] = pairs["turns"].to_numpy()
    return matrix


def build_report(records: pl.DataFrame | Tally, *, source: str = "", by: list[str] | None = None,
                 baseline: pl.DataFrame | Tally | None = None, baseline_source: str = "", min_cell: int = 30,
                 top: int = 3, alpha: float = 0.05, input_sha256: str | None = None, date: str | None = None,
                 coverage: Coverage | None = None) -> Report:
    """Every number of the report, as plain JSON-able values, from records or their tally (`fpi.reports.counts`:
    a file of any size tallied batch by batch). `input_sha256` identifies the file the records came
    from; `date` is the report's date (default: the day of the latest turn); `coverage`, what a mapping found
    of raw traces classified for the report, goes in its header."""
    tally = records if isinstance(records, Tally) else Tally.of(records, by or [])
    if tally.turns == 0:
        raise UsageError(f"{source or 'the records'}: no turns to report on")
    components, overall = component_table(tally, top)
    report = Report(about=about(tally, input_sha256, date), source=source, turns=tally.turns, confidence_level=CONFIDENCE,
                    components=components, overall=overall)
    if coverage is not None:
        report["coverage"] = coverage.to_json()
    report["slices"] = [slice_table(tally, field, min_cell) for field in by or []]
    report["by_day"] = slice_table(tally, "day", min_cell) if tally.counts["day"].null_count() < tally.counts.height else None
    if baseline is not None:
        comparison = baseline_table(tally, baseline if isinstance(baseline, Tally) else Tally.of(baseline), alpha)
        report["baseline"] = {"source": baseline_source, **comparison, "verdict": baseline_verdict(comparison)}
    confusion = _confusion(tally.counts)
    if confusion.sum():
        metrics = scores(confusion)
        shown = [i for i, label in enumerate(LABELS) if label in tally.possible]  # a stage the logs lack is no row, no column
        report["confusion"] = {"turns": metrics["turns"], "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                               "labels": [LABELS[i] for i in shown], "matrix": confusion[np.ix_(shown, shown)].tolist()}
    return report
