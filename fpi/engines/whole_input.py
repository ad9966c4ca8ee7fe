"""The steps that need the whole input, written once for every engine: reading an input whole
through the readers, the `--on-error` policy and the gold-label check on what an engine read in
parts, and the sample the quantile tables are fitted on. Duplicate turn ids are named by
`fpi.io.checks.duplicates_rejected` and the stage check is `fpi.io.checks.StageCheck`, which every
engine feeds; the predictor is chosen by `Pipeline.expect`, heard before the first batch; metrics
come from `Run.metrics`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from fpi.contract.errors import require_scorable
from fpi.engines.plan import Plan, Reading, Run
from fpi.io.quarantine import apply_on_error
from fpi.io.read_result import LoadResult
from fpi.io.traces import read_accepting
from fpi.pipeline.features import reference_rows
from fpi.pipeline.log_profile import HeardScores

if TYPE_CHECKING:
    from fpi.pipeline.classify import Pipeline
from fpi.pipeline.quantiles import SAMPLE_ORDER, SAMPLE_TURNS, TURN_HASH, Reference

SAMPLE_SLACK = 20_000  # sampled turns kept beyond SAMPLE_TURNS, so duplicates found at the end can be taken out


def read_whole(plan: Plan) -> LoadResult:
    """The whole input through the readers, under the plan's `--on-error` policy, with gold labels on
    every turn when the plan requires them."""
    reading = plan.reading
    read = read_accepting(plan.source, on_error=reading.on_error, quarantine=reading.quarantine, name=reading.name,
                          mapping=reading.mapping, strict=reading.strict)
    if reading.labels_required:
        require_scorable(read.source, read.read, read.turns.height, read.turns["label"].null_count())
    return read


def settle(run: Run, reading: Reading) -> None:
    """What an engine that read the input in parts does once every part is read: the rejected records in
    input order under the `--on-error` policy, and the gold-label check."""
    run.rejected.sort(key=lambda r: r.line)
    run.quarantine = apply_on_error(run.source, run.rejected, reading.on_error, reading.quarantine)
    if reading.labels_required:
        require_scorable(run.source, run.read, run.accepted, run.unlabeled)


@dataclass
class QuantileSample:
    """The turns quantile tables are fitted on and the run hears (`Reference.sample`: the smallest turn_id
    hashes), gathered part by part. Only the turns whose hash can still be among the smallest get their reference rows
    computed; SAMPLE_SLACK more than needed are kept, so the sample stays the same when duplicates found
    at the end are taken out. In memory the one batch is the whole input and the pipeline fits its
    tables on it, by the same `Reference.sample`."""

    rows: pl.DataFrame | None = None
    truncated: bool = False

    def add(self, turns: pl.DataFrame) -> None:
        """A part's accepted turns (with `line`)."""
        hashed = turns.with_columns(_hash=TURN_HASH)
        if self.truncated and self.rows is not None:
            hashed = hashed.filter(pl.col("_hash") <= self.rows["_hash"].max())
        self.add_rows(reference_rows(hashed).with_columns(hashed["line"]))

    def add_rows(self, rows: pl.DataFrame) -> None:
        """A part's reference rows (`fpi.pipeline.features.reference_rows`, with `line`), as a Spark task sends them."""
        rows = own_text(rows.with_columns(_hash=TURN_HASH))
        merged = rows if self.rows is None else pl.concat([self.rows, rows])
        if merged.height > SAMPLE_TURNS + SAMPLE_SLACK:
            merged, self.truncated = smallest(merged), True
        self.rows = merged

    def chosen(self, rejected: pl.Series) -> pl.DataFrame | None:
        """The sampled turns' rows, or None when so many were rejected that the sample must be gathered again."""
        rows = self.rows.filter(~pl.col("line").is_in(rejected.implode())) if self.rows is not None else pl.DataFrame()
        if self.truncated and rows.height < SAMPLE_TURNS:
            return None
        return Reference.sample(rows.drop("_hash", "line", strict=False))

    def fit(self, rejected: pl.Series) -> Reference | None:
        """The tables, or None when the sample must be gathered again."""
        chosen = self.chosen(rejected)
        return None if chosen is None else Reference.fit(chosen)


def hear(pipeline: Pipeline, rows: pl.DataFrame, tables: Reference) -> HeardScores | None:
    """The pipeline hears the sampled turns (`sample_rows` of whole sessions), in the order every engine hears
    them, on the run's quantile tables: the logs' shift and prior, and a model they teach (`Pipeline.fit_logs`).
    Returns the sampled turns' raw scores by `line` when the model that heard them classifies, for the batches to reuse."""
    if not rows.height:
        return None
    heard = rows.sort(*SAMPLE_ORDER)
    features = tables.over(pipeline.base.reference_).apply(heard.drop("session_id", "line", "_hash", strict=False))
    known = pipeline.base.raw_scores(pipeline.base.matrix(features))
    pipeline.fit_logs(features, heard["session_id"], known)
    if pipeline.model is not pipeline.base or "line" not in heard.columns:
        return None
    return HeardScores.of(heard["line"].to_numpy(), known)


def smallest(rows: pl.DataFrame, keep: int | None = None) -> pl.DataFrame:
    """The reference rows a sample can still need: the `keep` smallest turn_id hashes (SAMPLE_TURNS + SAMPLE_SLACK)."""
    ordered = rows if "_hash" in rows.columns else rows.with_columns(_hash=TURN_HASH)
    return ordered.sort("_hash", "turn_id").head(SAMPLE_TURNS + SAMPLE_SLACK if keep is None else keep)


def own_text(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with its text copied out: polars' strings are views into the buffers they were decoded
    into, so a few rows kept from each chunk would keep every chunk's text alive."""
    return frame.with_columns(pl.concat_str(pl.col(name), pl.lit("")).alias(name) for name, dtype in frame.schema.items()
                              if dtype == pl.String)
