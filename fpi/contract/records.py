"""The classified-records contract (records-v1): what `fpi classify` writes and
`fpi report`, `eval` and `gate` read. Columns, dtypes and the JSON Schema derive from
one list, so they cannot drift. In CSV, a text cell starting with `= + - @`, a tab or a carriage return is
written with a leading `'` (spreadsheet-safe: `fpi.contract.spreadsheet_cells`) and read back without it. Reading and writing them is `fpi.io.records_files`: a report
needs those two and never the model."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from fpi.contract.trace_format import LABELS, STAGES

EXPLANATION_DTYPE = pl.Struct({
    "decided_by": pl.String, "rule": pl.String,
    "features": pl.List(pl.Struct({"feature": pl.String, "name": pl.String, "value": pl.String, "contribution": pl.Float64})),
})
PROBABILITIES_DTYPE = pl.Struct({label: pl.Float64 for label in LABELS})


@dataclass(frozen=True)
class Column:
    """One column of the records: its polars dtype, JSON Schema and meaning."""

    name: str
    dtype: pl.DataType
    schema: dict
    doc: str
    required: bool = True


def _nullable(schema: dict) -> dict:
    if "enum" in schema:
        return {**schema, "type": [schema["type"], "null"], "enum": [*schema["enum"], None]}
    return {**schema, "type": [schema["type"], "null"]}


_LABEL = {"type": "string", "enum": list(LABELS)}
_TEXT = {"type": "string"}

COLUMNS: tuple[Column, ...] = (
    Column("turn_id", pl.String(), _TEXT, "the turn's id in the traces"),
    Column("session_id", pl.String(), _TEXT, "its session"),
    Column("turn_index", pl.Int64(), {"type": "integer", "minimum": 0}, "its place in the session"),
    Column("failure_point", pl.String(), _LABEL, "the verdict: the rule's where a rule decided, else the model's"),
    Column("model_failure_point", pl.String(), _LABEL, "the model's verdict before rules"),
    Column("confidence", pl.Float64(), {"type": "number", "minimum": 0, "maximum": 1}, "the model's probability of its verdict"),
    Column("probabilities", PROBABILITIES_DTYPE,
           {"type": "object", "additionalProperties": False, "required": list(LABELS),
            "properties": {label: {"type": "number", "minimum": 0, "maximum": 1} for label in LABELS}},
           "the model's probability of each label (rounded to 6 digits)"),
    Column("rule", pl.String(), _nullable(_TEXT), "id of the rule that decided, or null"),
    Column("rules_matched", pl.List(pl.String()), {"type": "array", "items": _TEXT}, "ids of every rule that matched, in run order"),
    Column("recovered_from", pl.List(pl.String()), {"type": "array", "items": {"type": "string", "enum": list(STAGES)}},
           "stages that erred but the system recovered from (turns judged correct)"),
    Column("timestamp", pl.String(), _nullable(_TEXT), "when the turn happened, as in the traces"),
    Column("locale", pl.String(), _nullable(_TEXT), "the turn's locale"),
    Column("device_type", pl.String(), _nullable(_TEXT), "device.type of the turn"),
    Column("domain", pl.String(), _nullable(_TEXT), "nlu.domain of the turn"),
    Column("intent", pl.String(), _nullable(_TEXT), "nlu.intent of the turn"),
    Column("explanation", EXPLANATION_DTYPE, {
        "type": ["object", "null"], "additionalProperties": False, "required": ["decided_by", "rule", "features"],
        "properties": {
            "decided_by": {"type": "string", "enum": ["model", "rule"]},
            "rule": _nullable(_TEXT),
            "features": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["feature", "name", "value", "contribution"],
                "properties": {"feature": _TEXT, "name": _TEXT, "value": _nullable(_TEXT), "contribution": {"type": "number"}}}},
        }}, "with --explain: the deciding rule, or the model's top SHAP features (log-odds)", required=False),
    Column("label", pl.String(), _nullable(_LABEL), "the gold label, when the traces have one", required=False),
    Column("model_sha", pl.String(), _TEXT, "the model that classified the turn: its fingerprint's first 12 hex digits",
           required=False),
    Column("rules_sha", pl.String(), _nullable(_TEXT), "the rule set applied: its fingerprint's first 12 hex digits, or "
           "null when the model ran alone", required=False),
    Column("shift", pl.Float64(), {"type": ["number", "null"], "minimum": 0, "maximum": 1},
           "how far the run's logs sit from the model's training data (0 alike .. 1 unlike in every feature; 0.25 or "
           "more: out of the model's depth), the same on every record of a run; null when the model keeps no "
           "training distributions", required=False),
)
SHA_DIGITS = 12  # of a fingerprint, in records and report headers
OUT_OF_DEPTH = 0.25  # a `shift` from here on: the logs are unlike the model's training data


def out_of_depth_warning(shift: float, detail: str = "") -> str:
    """The one line that says a run's logs were unlike its model's training data, for terminals and report headers."""
    return (f"these logs look unlike the model's training data (shift {shift:.2f}{detail}): verdicts are rough; "
            "label 200 turns with `fpi sample` and `fpi train` to adapt")
COLUMN_NAMES = tuple(c.name for c in COLUMNS)
SCHEMA = pl.Schema({c.name: c.dtype for c in COLUMNS})
CONTEXT = ("timestamp", "locale", "device_type", "domain", "intent")

# Where each turn happened, taken from the traces so reports can slice the records.
CONTEXT_COLUMNS = {
    "timestamp": pl.col("timestamp"),
    "locale": pl.col("locale"),
    "device_type": pl.col("device").struct.field("type"),
    "domain": pl.col("nlu").struct.field("domain"),
    "intent": pl.col("nlu").struct.field("intent"),
}


def records_json_schema() -> dict:
    """JSON Schema (draft 2020-12) of one record as `fpi classify` writes it in JSON Lines."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://fpi.dev/schemas/records-v1.schema.json",
        "title": "fpi classified records v1: one turn's verdict",
        "type": "object",
        "properties": {c.name: {**c.schema, "description": c.doc} for c in COLUMNS},
        "required": [c.name for c in COLUMNS if c.required],
        "additionalProperties": True,
    }


def in_contract_order(records: pl.DataFrame) -> pl.DataFrame:
    """The contract's columns in its order (optional ones when present), then any others."""
    known = [name for name in COLUMN_NAMES if name in records.columns]
    return records.select(*known, *[c for c in records.columns if c not in COLUMN_NAMES])


def failure_point_counts(records: pl.DataFrame) -> dict[str, int]:
    """Turns per final failure point, every label listed."""
    counts = dict(records["failure_point"].value_counts().iter_rows())
    return {label: int(counts.get(label, 0)) for label in LABELS}


def possible_labels(records: pl.DataFrame) -> frozenset[str]:
    """The labels some record gives a chance (a stage that ran on no turn of the logs gets 0 on every turn), or
    names as its verdict or gold label; `correct` always. Records without probabilities could have any label.
    Reports, summaries and the gate show no row for a stage outside it."""
    if records.height == 0:
        return frozenset()
    if "probabilities" not in records.columns:
        return frozenset(LABELS)
    chances = records.select(pl.col("probabilities").struct.field(label).max().alias(label) for label in LABELS).row(0, named=True)
    named = {label for column in ("failure_point", "label") if column in records.columns
             for label in records[column].drop_nulls().unique().to_list()}
    return possible_of(chances, named)


def possible_of(chances: dict[str, float | None], named: set[str]) -> frozenset[str]:
    """`possible_labels` from each label's highest probability and the labels records name."""
    return frozenset(label for label in LABELS if (chances.get(label) or 0) > 0 or label in named or label == "correct")


RECORD_MARKERS = ("failure_point", "model_failure_point")  # what tells records from traces
