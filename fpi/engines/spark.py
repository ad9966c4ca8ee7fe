"""The Spark engine: the same pipeline, one partition of whole sessions per task.

A JSON Lines file (trace format v1, or records of another shape through a mapping that names the
session by one field) is read by Spark itself: its lines are keyed by session, shuffled so every
session lands whole in one partition, and each partition is read by fpi's own reader. Any other
input (CSV, Parquet, OpenTelemetry spans, a mapping that computes the session) is read whole by the
readers on the driver and handed to Spark as trace format v1. Either way the steps that need the
whole input are the local engines' (`fpi.engines.whole_input`): the stage check, duplicate turn ids
across sessions, the `--on-error` policy, the quantile sample (fitted once on the driver) and the
predictor, chosen for the whole run. So Spark and the local engines give the same records. The
model travels to executors as its files (`SparkContext.addFile`), the rules, the mapping and the
quantile tables as JSON; nothing is pickled.

    from fpi.engines import spark as fpi_spark
    records = fpi_spark.classify(spark.read.text("traces.jsonl"))    # a column `value` of JSON lines
    explained = fpi_spark.classify(lines, explain_top_k=3, on_error="skip", on_rejected=quarantine)

Needs the `spark` extra (`pip install "fpi-voice[spark]"`, pyspark 4)."""

from __future__ import annotations

import atexit
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from fpi.contract.errors import TraceError, UsageError
from fpi.contract.records import SCHEMA, possible_of
from fpi.contract.trace_format import DUPLICATE, LABELS
from fpi.engines.choice import DEFAULT_MASTER
from fpi.engines.plan import Plan, Run
from fpi.engines.whole_input import SAMPLE_SLACK, QuantileSample, hear, read_whole, settle, smallest
from fpi.pipeline.quantiles import SAMPLE_TURNS
from fpi.io.checks import FIRST_TURN, NO_STAGE, StageCheck, duplicates_rejected, fields_of_lines
from fpi.io.coverage import Coverage, counts_found, of_counts
from fpi.io.quarantine import bad_records_error
from fpi.io.read_result import LoadResult, RejectedRecord
from fpi.io.sniff import detect_format, file_head, is_gzip, refuse_other_formats, refuse_records, whole_turn_lines
from fpi.io.mapping import as_mapping
from fpi.io.traces import canonical_turns
from fpi.pipeline.features import SAMPLE_COLUMNS
from fpi.pipeline.quantiles import Reference

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from fpi.io.mapping import Mapping
    from fpi.pipeline.classify import Pipeline
    from fpi.pipeline.model import FailurePointModel

LINE = "line"  # the 1-based line of each record in the input, carried through so output keeps input order
_AT = "_at"  # where a line sits in the input (`_line_numbers`), read with the line: Spark numbers lines in one pass
_PART, _ROWS = "_part", "_rows"  # an input partition, and how many of its lines a task saw up to the last it holds
RECORD_BATCH = 10_000  # rows a task hands Spark at a time: the JVM holds a batch of each task, not a partition
_PER_PART = 1 << 33  # Spark's monotonically_increasing_id: the input partition times this, plus the row within it
_PROBLEM, _CODE, _FIELD, _WHAT, _RAW = "_problem", "_code", "_field", "_what", "_raw"
_FIRST = "_first"  # a duplicate's first use, where it sits in the input: its reason names it by line, the driver's to say
_READ, _TURNS, _STAGELESS, _LABELED = "_read", "_turns", "_stageless", "_labeled"
_ORDER = "_order"  # a sampled row's turn_id hash as a signed number that sorts the same: Spark has no unsigned one
_CUT = "_cut"  # on a task's counts row, when it offered fewer sample rows than it had: the last one's _ORDER
_FOUND = "_found"  # through a mapping: how many turns had each stage and field (`fpi.io.coverage.counts_found`), as JSON
# What the inspection brings back per partition: the rows quantile tables are fitted on, bad records (a row per
# problem: its message, and the field, code, reason and line text the quarantine keeps), a row counting the
# records read, the turns accepted, those with no stage and those with a gold label (and, through a mapping, _FOUND),
# and a row per input partition whose lines it holds (_PART, _ROWS), by which the driver numbers every line.
_INSPECTED = pa.schema([*[(name, pa.string() if kind == pl.String else pa.float64()) for name, kind in SAMPLE_COLUMNS.items()],
                        (_AT, pa.int64()), (_PROBLEM, pa.string()), (_CODE, pa.string()), (_FIELD, pa.string()),
                        (_WHAT, pa.string()), (_RAW, pa.string()), (_READ, pa.int64()), (_TURNS, pa.int64()),
                        (_STAGELESS, pa.int64()), (_LABELED, pa.int64()), (_FOUND, pa.string()), (_PART, pa.int64()),
                        (_ROWS, pa.int64()), (_FIRST, pa.int64()), (_ORDER, pa.int64()), (_CUT, pa.int64())])
_EXTRA = (_PROBLEM, _CODE, _FIELD, _WHAT, _RAW)
_COUNTS = (_READ, _TURNS, _STAGELESS, _LABELED)


def run(plan: Plan, master: str = DEFAULT_MASTER) -> Run:
    """The plan on a Spark session (the active one, else a new one on `master`): its records written as
    a Parquet folder in input order, the one sink Spark writes."""
    output = _parquet_folder(plan)
    with running(master) as spark:
        lines, read = _lines(spark, plan)
        job = _Job(plan.pipeline, plan.label, None if read is not None else as_mapping(plan.reading.mapping))
        try:
            outcome = job.inspect(lines) if read is None else job.inspect(lines, Run.of_read(read, "spark"))
            if read is None:
                settle(outcome, plan.reading)
                if outcome.coverage is not None:
                    outcome.coverage.check(outcome.source, plan.reading.strict)
            records = job.records()
            write_parquet(records, output)
            counted = _collected(records.groupBy(*job.counted_by()).count())
            outcome.count(counted, turns="count")
            outcome.possible = _possible(records, counted)
        finally:
            job.release()
    return outcome


def _possible(written: DataFrame, counted: pl.DataFrame) -> frozenset[str]:
    """The labels some written record could have (`fpi.contract.records.possible_labels`), from each label's highest
    probability and the labels the records name."""
    from pyspark.sql import functions as F

    highest = written.select(*[F.max(F.col("probabilities")[label]).alias(label) for label in LABELS]).first()
    named = {label for column in ("failure_point", "label") if column in counted.columns
             for label in counted[column].drop_nulls().to_list()}
    return possible_of(highest.asDict() if highest is not None else {}, named)


def classify(lines: DataFrame, *, model: str | Path | None = None, rules: list[Path] | None = None, no_rules: bool = False,
             partitions: int | None = None, source: str = "traces", on_error: str = "fail", explain_top_k: int | None = None,
             explain_all: bool = False, on_rejected: Callable[[list[RejectedRecord]], None] | None = None,
             mapping: str | Path | None = None, predictor: str = "auto") -> DataFrame:
    """Records (the records-v1 contract, plus `line`; `explanation` only with `explain_top_k`) for trace lines:
    a DataFrame with a `value` column of JSON lines, in input order (`spark.read.text(path)`), optionally with
    `line` numbers. `on_error="fail"` raises TraceError naming every bad record; `"skip"` leaves them out and
    hands them, with their reasons and text, to `on_rejected`. With a `mapping` (a shipped name or a file) the
    lines are JSON records of another shape (docs/mapping.md), their session named by one field. The records come
    back computed and kept on the executors' disks (the input is read once): `records.unpersist()` frees them."""
    from fpi.pipeline.classify import Pipeline
    from fpi.pipeline.model import FailurePointModel
    from fpi.pipeline.rules import rules_for

    if "value" not in lines.columns:
        raise UsageError("fpi.engines.spark.classify takes trace lines: a DataFrame with a `value` column of JSON text "
                         "(spark.read.text(path)); for a table of structs, select to_json(struct(*)) as value")
    pipeline = Pipeline(FailurePointModel.load(model), rules_for(rules, no_rules),
                        explain_top_k=explain_top_k, explain_all=explain_all, predictor=predictor)
    job = _Job(pipeline, source, _line_mapping(mapping))
    try:
        outcome = job.inspect(lines, partitions=partitions)
        if outcome.rejected and on_error == "fail":
            raise bad_records_error(source, outcome.rejected)
    except BaseException:
        job.release()
        raise
    if outcome.rejected and on_rejected is not None:
        on_rejected(outcome.rejected)
    return job.records()


@dataclass
class _Job:
    """One input on Spark: its lines keyed by session and shuffled once, kept on disk while they are
    inspected (bad records, counts, the quantile sample) and classified with what the inspection fitted, then
    released; the records are kept in turn for what reads them next."""

    pipeline: Pipeline
    source: str
    mapping: Mapping | None
    by_session: Any = None
    classified: Any = None
    reference: str = ""
    labeled: bool = False
    expected: int = 0
    starts: list[int] = field(default_factory=list)  # the line before each input partition's first (`_line_numbers`)
    reused: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema={_AT: pl.Int64, LINE: pl.Int64}))

    def inspect(self, lines: DataFrame, outcome: Run | None = None, partitions: int | None = None) -> Run:
        """Read every partition once: what was read and rejected (duplicate turn ids across sessions
        included), the whole-input stage check, and the quantile tables fitted on the driver."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        session_key, turn_key = _keys(self.mapping)
        at = F.col(LINE) - 1 if LINE in lines.columns else F.monotonically_increasing_id()
        keyed = lines.select("value", at.alias(_AT), session_key.alias("_session"),
                             (turn_key if turn_key is not None else F.lit(None).cast("string")).alias("_turn"))
        spark = lines.sparkSession
        shuffled = keyed.repartition(partitions or spark.sparkContext.defaultParallelism, "_session")
        self.by_session = shuffled.persist(StorageLevel.DISK_ONLY)  # on local disk: the JVM's memory is for the tasks
        found = self._inspected(self.by_session.select("value", _AT))
        self.starts = _starts(found)
        found = _numbered(found, self.starts)
        counts = found.select(pl.col(_COUNTS).sum())
        read, turns, stageless, labeled = (int(counts[name].item() or 0) for name in _COUNTS)
        if not read and outcome is None:
            raise TraceError([f"{self.source}: empty file: expected one JSON object per line (trace format v1)"])
        self._check_stages(lines, turns, stageless)
        rejected = _rejected(found.filter(pl.col(_PROBLEM).is_not_null()), self.source)
        if turn_key is not None:
            rejected = self._reused_across_sessions(rejected)
        if outcome is None:
            outcome = Run(self.source, "spark", read=read, rejected=rejected, turns=turns - self.reused.height,
                          unlabeled=turns - labeled, coverage=self._coverage(found, turns))
        self.labeled, self.expected = labeled > 0, outcome.turns
        self.pipeline.expect(self.expected)  # the sample is heard with the predictor the run's size chooses
        self.reference = json.dumps(self._fitted(found).to_json())
        return outcome

    def _inspected(self, lines: DataFrame) -> pl.DataFrame:
        """What the tasks found in `lines`, on the driver, through a shuffle Spark sizes. Of their sample rows each task
        offers its share of the whole input's sample and some to spare (`_offer`), not a whole sample: a thousand
        partitions would bring a thousand samples. When a task cut its offer below what the sample may need, the
        tasks are asked again for whole samples."""
        from pyspark.sql import functions as F

        def found(offer: int) -> pl.DataFrame:
            inspected = lines.mapInArrow(_inspect(self.source, self._mapping_json(), offer), _spark_schema(_INSPECTED))
            return _collected(inspected.repartition(F.col(_AT)))

        offer = _offer(lines.rdd.getNumPartitions())
        shares = found(offer)
        return (shares if _whole_sample(shares, offer) else found(_offer(1))).drop(_ORDER, _CUT)

    def _mapping_json(self) -> str | None:
        return json.dumps(self.mapping.to_json()) if self.mapping is not None else None

    def _coverage(self, found: pl.DataFrame, turns: int) -> Coverage | None:
        """What the mapping found, from each partition's counts: as the readers measure it on the whole input."""
        if self.mapping is None:
            return None
        counts: dict[str, int] = {}
        for part in found[_FOUND].drop_nulls().to_list():
            for name, count in json.loads(part).items():
                counts[name] = counts.get(name, 0) + count
        return of_counts(turns, counts, self.mapping)

    def _check_stages(self, lines: DataFrame, turns: int, stageless: int) -> None:
        """The stage check on the whole input's counts; the fields of its first lines name what was seen."""
        stages = StageCheck()
        stages.add_counts(turns, stageless)
        if stages.suspect:
            first = [row.value for row in lines.select("value").take(200)]
            stages.seen = fields_of_lines([line for line in first if line and line.strip()][:50])
        stages.check(self.source, self.mapping)

    def _fitted(self, found: pl.DataFrame) -> Reference:
        """The quantile tables on the sample every engine fits them on, gathered again without the duplicates
        when too many sampled turns were among them; the pipeline hears the sample."""
        rejected = self.reused[LINE]
        sample = QuantileSample()
        sample.add_rows(found.filter(pl.col("turn_id").is_not_null()).select(*SAMPLE_COLUMNS, LINE))
        chosen = sample.chosen(rejected)
        if chosen is None:
            again = _numbered(self._inspected(self._kept()), self.starts)
            sample = QuantileSample()
            sample.add_rows(again.filter(pl.col("turn_id").is_not_null()).select(*SAMPLE_COLUMNS, LINE))
            chosen = sample.chosen(rejected)
        assert chosen is not None
        fitted = Reference.fit(chosen)
        hear(self.pipeline, chosen, fitted)  # a task's partition holds whole sessions: its rows saw their neighbours
        return fitted

    def _reused_across_sessions(self, rejected: list[RejectedRecord]) -> list[RejectedRecord]:
        """A turn_id used in more than one session: each task sees one session's use only, so the driver names the
        later uses as the readers do (first use: the earliest line that is otherwise a valid turn). Only the ids
        are shuffled, from the kept lines."""
        from pyspark.sql import functions as F

        ids = self.by_session.where("_turn is not null").select(F.col("_turn").alias("turn_id"), "_session", _AT)
        spread = (ids.groupBy("turn_id").agg(F.min("_session").alias("_one"), F.max("_session").alias("_other"))
                  .where("_one != _other").select("turn_id"))
        uses = _collected(ids.join(F.broadcast(spread), "turn_id").select("turn_id", _AT))
        uses = uses.with_columns(_line_numbers(uses[_AT], self.starts))
        invalid = [r.line for r in rejected if any(code != DUPLICATE for _, code, _ in r.problems)]
        later = (uses.filter(~pl.col(LINE).is_in(invalid)).with_columns(first_turn=FIRST_TURN)
                 .filter(pl.col(LINE) != pl.col("first_turn")).sort(LINE))
        if not later.height:
            return rejected
        self.reused = later.select(_AT, LINE)
        text = _collected(self.by_session.where(F.col(_AT).isin(self.reused[_AT].to_list())).select(_AT, "value"))
        named = duplicates_rejected(later.join(text, on=_AT, how="left").select(
            LINE, "turn_id", "first_turn", raw="value", session_id=pl.lit(""), turn_index=pl.lit(0), first_index=pl.lit(0)),
            self.source)
        reused = set(self.reused[LINE].to_list())
        kept = [r for r in rejected if r.line not in reused or any(code != DUPLICATE for _, code, _ in r.problems)]
        return sorted(kept + named, key=lambda r: r.line)

    def _kept(self) -> DataFrame:
        """The kept lines to classify: every line but the later uses of a turn_id reused across sessions."""
        from pyspark.sql import functions as F

        lines = self.by_session.select("value", _AT)
        return lines.where(~F.col(_AT).isin(self.reused[_AT].to_list())) if self.reused.height else lines

    def records(self) -> DataFrame:
        """The records, partition by partition, with the driver's quantile tables: computed once and kept on disk for
        what reads them (a write in input order samples them first, then sorts them), the lines released."""
        from pyspark import StorageLevel

        pipeline = self.pipeline
        model = _shipped_model(pipeline.base)
        adapted = _shipped_model(pipeline.model) if pipeline.model is not pipeline.base else None
        schema = records_arrow(pipeline.explain_top_k is not None, self.labeled)
        task = _Task(self.source, model, json.dumps(pipeline.rules.to_json()), self.reference, pipeline.explain_top_k,
                     pipeline.explain_all, self._mapping_json(), self.labeled, pipeline.predictor.value, self.expected,
                     json.dumps(pipeline.profile.to_json()) if pipeline.profile is not None else None, adapted,
                     tuple(self.starts))
        self.classified = self._kept().mapInArrow(task, _spark_schema(schema)).persist(StorageLevel.DISK_ONLY)
        self.classified.count()
        self.by_session.unpersist()
        return self.classified

    def release(self) -> None:
        """Free what the job kept: the lines, when the records were not made, and the records."""
        for kept in (self.by_session, self.classified):
            if kept is not None:
                kept.unpersist()

    def counted_by(self) -> list[str]:
        """The columns the written records are counted by: the failure point, and the gold label when there is one."""
        return ["failure_point", "label"] if self.labeled else ["failure_point"]


def _arrow_type(dtype: Any) -> pa.DataType:
    """The Arrow type Spark reads for a records column (plain strings and lists, not the large ones)."""
    if isinstance(dtype, pl.Struct):
        return pa.struct([(f.name, _arrow_type(f.dtype)) for f in dtype.fields])
    if isinstance(dtype, pl.List):
        return pa.list_(_arrow_type(dtype.inner))
    return pa.string() if dtype == pl.String else pa.int64() if dtype == pl.Int64 else pa.float64()


def records_arrow(explained: bool, labeled: bool) -> pa.Schema:
    """The records-v1 columns the engine writes (`explanation` when explaining, `label` when the input has
    gold labels), and `line`."""
    names = [name for name in SCHEMA if (explained or name != "explanation") and (labeled or name != "label")]
    return pa.schema([(name, _arrow_type(SCHEMA[name])) for name in names] + [(LINE, pa.int64())])


def _partition_traces(batches: Iterator[pa.RecordBatch]) -> tuple[bytes, pl.Series]:
    """A partition's lines in input order, as the bytes of a JSON Lines file, and where each sits in the input."""
    read = list(batches)
    if not sum(batch.num_rows for batch in read):
        return b"", pl.Series(_AT, [], pl.Int64)
    table = pa.Table.from_batches(read).sort_by(_AT)
    return _text(table.column("value")), pl.Series(_AT, table.column(_AT))


def _text(lines: pa.ChunkedArray) -> bytes:
    """Lines as the bytes of a file, each ended by a newline: joined in Arrow, never as Python strings."""
    import numpy as np
    import pyarrow.compute as pc

    empty, newline = (pa.scalar(text, pa.large_string()) for text in ("", "\n"))  # offsets of 64 bits: a partition may pass 2 GB
    ended = pc.binary_join_element_wise(lines.cast(pa.large_string()), empty, newline).combine_chunks()
    offsets = np.frombuffer(ended.buffers()[1], dtype=np.int64)[ended.offset:ended.offset + len(ended) + 1]
    return ended.buffers()[2][int(offsets[0]):int(offsets[-1])].to_pybytes()


def _read(batches: Iterator[pa.RecordBatch], label: str, mapping: str | None) -> tuple[LoadResult | None, pl.Series]:
    """A partition through fpi's reader, every check but those of the whole input (the driver's); where each
    of its lines sits in the input."""
    from fpi.io.mapping import Mapping
    from fpi.io.traces import read_part

    data, at = _partition_traces(batches)
    if not at.len():
        return None, at
    return read_part(data, label, Mapping.from_json(json.loads(mapping)) if mapping else None), at


def _inspect(label: str, mapping: str | None, offer: int) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Per partition: its counts, how many lines of each input partition it saw, its `offer` sample rows for the
    quantile tables with the smallest hashes (`_offered`), and a row per problem of a bad record."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from fpi.io.mapping import Mapping
        from fpi.pipeline.features import sample_rows

        result, at = _read(batches, label, mapping)
        if result is None:
            return
        turns = result.turns
        offered, cut = _offered(sample_rows(turns).with_columns(at.gather(turns["line"] - 1)), offer) if turns.height else (None, None)
        stageless = int(turns.select(NO_STAGE.sum()).item()) if turns.height else 0
        counted = json.dumps(counts_found(turns, Mapping.from_json(json.loads(mapping)))) if mapping else None
        yield pa.RecordBatch.from_pylist([{_READ: result.read, _TURNS: turns.height, _STAGELESS: stageless, _FOUND: counted,
                                           _LABELED: turns.height - turns["label"].null_count(), _CUT: cut}], schema=_INSPECTED)
        yield from _as_inspected(at.to_frame().group_by((pl.col(_AT) // _PER_PART).alias(_PART))
                                 .agg(((pl.col(_AT) % _PER_PART).max() + 1).alias(_ROWS)))
        if offered is not None:
            yield from _as_inspected(offered)
        problems = [{_AT: at[r.line - 1], _PROBLEM: f"{field}: {what}" if field else what, _CODE: code, _FIELD: field,
                     _WHAT: what, _RAW: r.raw if isinstance(r.raw, str) else r.raw.decode("utf-8", "replace"),
                     _FIRST: at[int(what.rsplit(" ", 1)[1]) - 1] if code == DUPLICATE else None}  # "first used on line N"
                    for r in result.rejected for field, code, what in r.problems]
        if problems:
            yield from _as_inspected(pl.DataFrame(problems, schema={name: pl.Int64 if name in (_AT, _FIRST) else pl.String
                                                                    for name in (_AT, *_EXTRA, _FIRST)}))
    return run


def _offer(parts: int) -> int:
    """Sample rows each task offers when the input is in `parts` partitions: its share of one more than a sample keeps
    (so the driver sees the sample was cut), half again and a hundred to spare; one task offers that many."""
    wanted = SAMPLE_TURNS + SAMPLE_SLACK + 1
    return min(wanted, -(-wanted * 3 // (2 * parts)) + 100)


def _offered(rows: pl.DataFrame, offer: int) -> tuple[pl.DataFrame, int | None]:
    """A task's `offer` sample rows with the smallest hashes, each with its _ORDER, and the last one's _ORDER when
    it left some out."""
    kept = smallest(rows, offer)
    kept = kept.with_columns((pl.col("_hash") ^ pl.lit(1 << 63, pl.UInt64)).reinterpret(signed=True).alias(_ORDER)).drop("_hash")
    return kept, kept[_ORDER][-1] if rows.height > offer else None


def _whole_sample(found: pl.DataFrame, offer: int) -> bool:
    """Whether the tasks offered the whole input's sample and the row after it: each offered that many, or each that
    cut its offer cut it past the hash of the offered row after the sample (so it left out nothing the sample needs)."""
    cuts = found[_CUT].drop_nulls()
    after = SAMPLE_TURNS + SAMPLE_SLACK
    if not cuts.len() or offer > after:
        return True
    orders = found[_ORDER].drop_nulls().sort()
    return orders.len() > after and cuts.min() > orders[after]


def _as_inspected(frame: pl.DataFrame) -> list[pa.RecordBatch]:
    """Rows of one kind in the inspection's schema, the other columns null, a batch at a time."""
    numbers = (_AT, *_COUNTS, _PART, _ROWS, _FIRST, _ORDER, _CUT)
    missing = [pl.lit(None, SAMPLE_COLUMNS.get(name, pl.Int64 if name in numbers else pl.String)).alias(name)
               for name in _INSPECTED.names if name not in frame.columns]
    return frame.with_columns(missing).select(_INSPECTED.names).to_arrow().cast(_INSPECTED).to_batches(max_chunksize=RECORD_BATCH)


def _starts(found: pl.DataFrame) -> list[int]:
    """The line before each input partition's first, from how many lines of it the tasks saw: every line goes
    to one task, so the largest count is the partition's."""
    rows = found.filter(pl.col(_PART).is_not_null()).group_by(_PART).agg(pl.col(_ROWS).max())
    sizes = dict(rows.iter_rows())
    return list(accumulate((sizes.get(part, 0) for part in range(max(sizes, default=-1))), initial=0))


def _numbered(found: pl.DataFrame, starts: list[int]) -> pl.DataFrame:
    """What the tasks found, each row with its input line, and a duplicate's reason naming its first use by input line
    (a task's reader names it by the partition's)."""
    first = _line_numbers(found[_FIRST], starts)
    return found.with_columns(_line_numbers(found[_AT], starts), pl.when(first.is_not_null())
                              .then(pl.col(_WHAT).str.replace(r"\d+$", pl.lit(first.cast(pl.String)))).otherwise(pl.col(_WHAT)))


def _line_numbers(at: pl.Series, starts: list[int] | tuple[int, ...]) -> pl.Series:
    """The input line of each position: Spark numbers rows within each input partition, the partitions in input order
    (lines that came numbered sit in one partition, at their number less one)."""
    return (pl.Series(starts, dtype=pl.Int64).gather(at // _PER_PART) + at % _PER_PART + 1).alias(LINE)


_PIPELINES: dict[tuple, object] = {}  # per Python worker: the pipeline built from what the driver sent


@dataclass(frozen=True)
class _Task:
    """Per partition: fpi's reader, then the pipeline with the driver's quantile tables and predictor choice."""

    label: str
    model: str
    rules: str
    reference: str
    explain_top_k: int | None
    explain_all: bool
    mapping: str | None
    labeled: bool
    predictor: str
    expected: int
    profile: str | None  # what the driver heard of the whole input (`Pipeline.fit_logs`)
    adapted: str | None  # the model taught by the logs, shipped like the model, when one classifies
    starts: tuple[int, ...]  # the line before each input partition's first (`_line_numbers`)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        pipeline = self._pipeline()
        schema = records_arrow(self.explain_top_k is not None, self.labeled)
        result, at = _read(batches, self.label, self.mapping)
        if result is None or result.turns.height == 0:
            return
        records = pipeline.run(result.turns, fitted=Reference.from_json(json.loads(self.reference))).records
        records = records.with_columns(_line_numbers(at.gather(result.turns["line"] - 1), self.starts))
        for name in schema.names:
            if name not in records.columns:
                records = records.with_columns(pl.lit(None, SCHEMA[name]).alias(name))
        yield from records.select(schema.names).to_arrow().cast(schema).to_batches(max_chunksize=RECORD_BATCH)

    def _pipeline(self) -> Pipeline:
        from pyspark import SparkFiles

        from fpi.pipeline.classify import Pipeline
        from fpi.pipeline.log_profile import LogProfile
        from fpi.pipeline.model import FailurePointModel
        from fpi.pipeline.rules import RuleSet

        key = (self.model, self.rules, self.explain_top_k, self.explain_all, self.predictor, self.expected, self.profile,
               self.adapted)
        if key not in _PIPELINES:
            pipeline = Pipeline(FailurePointModel.load(SparkFiles.get(self.model)), RuleSet.from_json(json.loads(self.rules)),
                                explain_top_k=self.explain_top_k, explain_all=self.explain_all, predictor=self.predictor)
            pipeline.expect(self.expected)  # the run's size, as every engine tells it: `auto` chooses for the run
            if self.profile is not None:
                pipeline.adopt(LogProfile.from_json(json.loads(self.profile)),
                               FailurePointModel.load(SparkFiles.get(self.adapted)) if self.adapted else None)
            _PIPELINES[key] = pipeline
        found = _PIPELINES[key]
        assert isinstance(found, Pipeline)
        return found


def _shipped_model(model: FailurePointModel) -> str:
    """A model saved as its files and added to the Spark job; the name a task finds it by."""
    from pyspark import SparkContext

    folder = Path(tempfile.mkdtemp(prefix="fpi-model-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    model.save(folder)
    context = SparkContext.getOrCreate()
    context.addFile(str(folder), recursive=True)
    return folder.name


def _lines(spark: SparkSession, plan: Plan) -> tuple[DataFrame, LoadResult | None]:
    """The input as Spark lines: a JSON Lines file Spark reads itself, or, for any other input, the turns the
    readers read whole on the driver, as trace format v1 lines numbered in input order."""
    path = _line_file(plan)
    if path is not None:
        return spark.read.text(str(path)), None
    read = read_whole(plan)
    text = canonical_turns(read.turns).decode("utf-8").splitlines()
    frame = pl.DataFrame({"value": text, LINE: range(1, len(text) + 1)}, schema={"value": pl.String, LINE: pl.Int64})
    return spark.createDataFrame(frame.to_arrow().cast(pa.schema([("value", pa.string()), (LINE, pa.int64())]))), read


def _line_file(plan: Plan) -> Path | None:
    """The plan's input when Spark reads its lines itself: a JSON Lines file of whole turns, or JSON records of
    another shape through a mapping that names the session by one field. None: the readers read it whole."""
    if not isinstance(plan.source, str | Path) or str(plan.source) == "-" or not Path(plan.source).is_file():
        return None
    path, label = Path(plan.source), plan.label
    head = file_head(path)
    with open(path, "rb") as probe:
        zipped = is_gzip(probe.read(2))
    if head is None or (zipped and not path.name.endswith(".gz")):  # Spark unzips by the name
        return None
    mapping = as_mapping(plan.reading.mapping)
    if mapping is None:
        refuse_other_formats(head, label)
        return path if whole_turn_lines(head) else None
    refuse_records(head, label)
    reads_lines = mapping.format in (None, "jsonl") and mapping.turn is None and detect_format(head) == "jsonl"
    return path if reads_lines and _straight_key(mapping, "session_id") is not None else None


def _line_mapping(mapping: str | Path | None) -> Mapping | None:
    """The mapping, if it reads JSON records one a line by a session named in one field (Spark hands the engine lines)."""
    loaded = as_mapping(mapping)
    if loaded is None:
        return None
    if loaded.format not in (None, "jsonl") or loaded.turn is not None:
        raise UsageError(f"fpi.engines.spark.classify reads JSON lines, and the mapping {loaded.name} reads "
                         f"{loaded.format or 'spans'}: classify such input with `fpi.engines.spark.run`")
    if _straight_key(loaded, "session_id") is None:
        raise UsageError(f"fpi.engines.spark.classify partitions lines by `session_id` read straight from one field; the "
                         f"mapping {loaded.name} computes it: classify such input with `fpi.engines.spark.run`")
    return loaded


def _keys(mapping: Mapping | None) -> tuple[Column, Column | None]:
    """What the JVM reads from each line: its session, which partitions the lines, and its turn_id, by which
    a turn_id reused in another session is found (None: the mapping makes turn_ids, unique per session)."""
    from pyspark.sql import functions as F

    if mapping is None:
        return F.get_json_object("value", "$.session_id"), F.get_json_object("value", "$.turn_id")
    session, turn = _straight_key(mapping, "session_id"), _straight_key(mapping, "turn_id")
    assert session is not None
    return (F.coalesce(*[F.get_json_object("value", path) for path in session]),
            None if turn is None else F.coalesce(*[F.get_json_object("value", path) for path in turn]))


def _straight_key(mapping: Mapping, target: str) -> list[str] | None:
    """The JSON paths of a key's field in the lines, a name with dots whole first, as the mapping reads it; None
    when the mapping does not map it, or computes it (`first_of`, `values`, ...): lines cannot be partitioned by it
    before they are read."""
    spec = mapping.fields.get(target)
    if isinstance(spec, dict) and set(spec) == {"from"}:
        spec = spec["from"]
    if not isinstance(spec, str) or any(c in spec for c in "'[]:"):
        return None
    return ([f"$['{spec}']"] if "." in spec else []) + [f"$.{spec}"]


def _rejected(problems: pl.DataFrame, source: str) -> list[RejectedRecord]:
    """The bad records, one per input line in input order, each with every reason found and its text."""
    return [RejectedRecord(source, line, tuple(zip(group[_FIELD], group[_CODE], group[_WHAT], strict=True)), group[_RAW][0])
            for (line,), group in problems.sort(LINE, maintain_order=True).group_by(LINE, maintain_order=True)]


def _parquet_folder(plan: Plan) -> Path:
    """The one sink Spark writes: records as a Parquet folder; anything else is said plainly."""
    from fpi.io.records_files import RecordsFile

    sink = plan.sinks[0] if len(plan.sinks) == 1 else None
    path = sink.path if isinstance(sink, RecordsFile) else None
    if path is None or path.suffix != ".parquet" or plan.fingerprint or plan.keep_batch:
        raise UsageError("--engine spark writes records as a Parquet folder, and nothing else: give -o NAME.parquet "
                         "(spans, stdout, a report or metrics come from the local engines; docs/scale.md)")
    others = sorted(entry.name for entry in path.iterdir() if not _SPARK_PART.match(entry.name)) if path.is_dir() else []
    if others:
        raise UsageError(f"{path} holds files Spark did not write ({', '.join(others[:5])}); an earlier Parquet folder is "
                         "replaced, any other folder is not: give a new name")
    return path


_SPARK_PART = re.compile(r"^(part-.*|_SUCCESS|_committed_.*|_started_.*|\..*\.crc)$")  # what Spark writes in a Parquet folder


def _collected(frame: DataFrame) -> pl.DataFrame:
    collected = pl.from_arrow(frame.toArrow())
    assert isinstance(collected, pl.DataFrame)
    return collected


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


_LOCAL_MASTER = re.compile(r"local(?:\[(\d+|\*)\])?")  # a local master that names no number of task failures
TASK_TRIES = 4  # how often a task may fail before its job does: Spark's default on a cluster (spark.task.maxFailures)


def tried_again(master: str) -> str:
    """`master`, a local one with TASK_TRIES tries a task (`local[2]` → `local[2,4]`): Spark tries a local task once,
    so one result lost between the block manager and the driver would end a run a cluster finishes."""
    local = _LOCAL_MASTER.fullmatch(master)
    return f"local[{local.group(1) or 1},{TASK_TRIES}]" if local else master


def session(master: str = DEFAULT_MASTER, app: str = "fpi"):
    """A Spark session whose Python workers run this interpreter (so they have fpi and its packages); a local one
    tries a failed task again, as a cluster does (`tried_again`)."""
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master(tried_again(master)).appName(app).config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "2g")  # a local session's one JVM is its executors too
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@contextmanager
def running(master: str = DEFAULT_MASTER):
    """The active session if there is one (a notebook's, a test's), else a new one, stopped at the end."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise UsageError(f"--engine spark needs pyspark: pip install 'fpi-voice[spark]' ({exc})") from exc

    active = SparkSession.getActiveSession()
    spark = active or session(master)
    try:
        yield spark
    finally:
        if active is None:
            spark.stop()


def write_parquet(records: DataFrame, output: Path) -> None:
    """Records in input order as a Parquet folder (Spark's part files), replacing `output` only once the
    new folder is complete."""
    output = output.resolve()
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        records.orderBy(LINE).drop(LINE).write.mode("overwrite").parquet(str(staging))
        if output.exists():
            old = staging.with_name(staging.name + ".old")
            output.rename(old)
            staging.rename(output)
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)  # a file of that name: gone too, no `.old` left beside the output
        else:
            staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
