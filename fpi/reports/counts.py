"""How many turns share each combination of what a report reads: the failure point, the model's
verdict, the rule, the context slices, the day, the gold label and the fingerprints (plus any `--by`
column); and, per failure point, the SHAP reasons with their summed contributions.

A report is computed from a tally, never from the records themselves, so a report on ten million
records needs memory for the distinct combinations only, and a file is tallied batch by batch.
Tallies add up exactly in any order (counts, and contributions in integer millionths), so the same
records give the same report however they were cut into batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from fpi.contract.errors import UsageError
from fpi.contract.records import possible_labels
from fpi.contract.trace_format import LABELS
from fpi.io.records_files import records_batches

# --by names: trace field paths and the record columns that hold them.
SLICES = {
    "nlu.domain": "domain", "domain": "domain",
    "nlu.intent": "intent", "intent": "intent",
    "device.type": "device_type", "device_type": "device_type",
    "locale": "locale",
    "day": "day",
}
KEYS = ("failure_point", "model_failure_point", "rule", "domain", "intent", "device_type", "locale", "day", "label",
        "model_sha", "rules_sha", "shift")
MICRO = 1_000_000  # contributions are recorded to 6 digits: summed as integers, exact in any order
COUNT = pl.UInt64


def slice_key(field: str) -> str:
    """The tally column a `--by` field is counted under."""
    return SLICES.get(field, field)


@dataclass(frozen=True)
class Tally:
    counts: pl.DataFrame  # KEYS, extra `--by` columns, and `turns`
    reasons: pl.DataFrame  # failure_point, feature, name, turns, contribution (sum, in millionths)
    columns: frozenset[str]  # the records' own columns (a fingerprint column that is absent is not "none")
    possible: frozenset[str] = frozenset(LABELS)  # the labels some turn could have (a stage the logs lack: none; no turns: empty)

    @property
    def turns(self) -> int:
        return int(self.counts["turns"].sum())

    @classmethod
    def of(cls, records: pl.DataFrame, by: Iterable[str] = ()) -> Tally:
        """The tally of records (`fpi.contract.records`), with a column for each `--by` field."""
        extra = [field for field in dict.fromkeys(by) if slice_key(field) not in KEYS]
        unknown = [field for field in extra if field not in records.columns]
        if unknown:
            known = sorted(set(SLICES) | {c for c in records.columns if records.schema[c] == pl.String})
            raise UsageError(f"--by {unknown[0]}: not a field of these records; expected one of {', '.join(known)}")

        def text(column: str) -> pl.Expr:
            return (pl.col(column) if column in records.columns else pl.lit(None)).cast(pl.String).alias(column)
        keys = [text(k) for k in KEYS if k != "day"] + [pl.col("timestamp").cast(pl.String).str.slice(0, 10).alias("day")]
        counts = records.lazy().select(*keys, *[text(f) for f in extra]).group_by(pl.all()).agg(turns=pl.len().cast(COUNT))
        return cls(counts.collect(), _reasons(records), frozenset(records.columns), possible_labels(records))

    @classmethod
    def combined(cls, tallies: Iterable[Tally]) -> Tally:
        parts = list(tallies)
        counts = pl.concat([t.counts for t in parts], how="diagonal_relaxed")
        reasons = pl.concat([t.reasons for t in parts])
        keys = [c for c in counts.columns if c != "turns"]
        return cls(counts.group_by(keys).agg(pl.col("turns").sum()),
                   reasons.group_by("failure_point", "feature", "name").agg(pl.col("turns", "contribution").sum()),
                   frozenset().union(*(t.columns for t in parts)), frozenset().union(*(t.possible for t in parts)))

    @classmethod
    def of_file(cls, path: str | Path, by: Iterable[str] = (), *, rows: int = 200_000,
                on_progress: Callable[[int], None] | None = None) -> Tally:
        """The tally of a records file, read `rows` at a time (bounded memory, whatever its size);
        `on_progress` hears the records read so far."""
        tally, read = None, 0
        for batch in records_batches(path, rows):
            part = cls.of(batch, by)
            tally = part if tally is None else cls.combined([tally, part])
            read += batch.height
            if on_progress is not None:
                on_progress(read)
        return tally if tally is not None else cls.empty(by)

    @classmethod
    def empty(cls, by: Iterable[str] = ()) -> Tally:
        """The tally of no records."""
        return cls.of(pl.DataFrame(schema={"failure_point": pl.String, "timestamp": pl.String}), by)

    def canonical(self) -> Tally:
        """Rows sorted, so equal tallies are equal frames."""
        return Tally(self.counts.sort(pl.all(), nulls_last=True), self.reasons.sort(pl.all()), self.columns, self.possible)


class Tallying:
    """Records tallied as an engine hands them over, batch by batch (a records sink of `fpi.engines.plan`):
    a report on raw traces of any size, classified by whichever engine runs, without a records file."""

    def __init__(self, by: Iterable[str] = ()):
        self.by = list(by)
        self.tally: Tally | None = None

    def start(self, read: object) -> None:
        """Any input's records can be tallied."""

    def write(self, records: pl.DataFrame) -> None:
        part = Tally.of(records, self.by)
        self.tally = part if self.tally is None else Tally.combined([self.tally, part])

    def finish(self, empty: pl.DataFrame | None) -> None:
        if self.tally is None:
            self.tally = Tally.of(empty, self.by) if empty is not None else Tally.empty(self.by)

    def discard(self) -> None:
        """Nothing is written."""


def _reasons(records: pl.DataFrame) -> pl.DataFrame:
    empty = pl.DataFrame(schema={"failure_point": pl.String, "feature": pl.String, "name": pl.String,
                                 "turns": COUNT, "contribution": pl.Int64})
    if "explanation" not in records.columns or not isinstance(records.schema["explanation"], pl.Struct):
        return empty
    return (records.lazy().select("failure_point", pl.col("explanation").struct.field("features"))
            .explode("features").drop_nulls("features").unnest("features")
            .group_by("failure_point", "feature", "name")
            .agg(turns=pl.len().cast(COUNT), contribution=(pl.col("contribution") * MICRO).round().cast(pl.Int64).sum())
            .select(empty.columns).collect())


__all__ = ["KEYS", "SLICES", "Tally", "Tallying", "slice_key"]
